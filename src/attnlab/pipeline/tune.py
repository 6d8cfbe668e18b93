"""Choose a decoding setting on the validation split after training: ``decode.tune_length_penalty``.

Beam search ranks finished hypotheses by ``score / length_penalty(length, alpha)``; the best ``alpha`` depends on
the model and the data (Wu et al. 2016 tuned it on a development set), so a run can list candidates and
``attnlab train`` scores the selected checkpoint (``best/``, else ``last/``) on the whole validation split at each,
with the beam width the test split is scored with, before the test split is scored. The winner becomes the
checkpoint's ``decode.length_penalty``: the test scores, ``translate`` and ``evaluate`` then use it. Each candidate
is logged to ``metrics.jsonl`` as a ``"length_penalty"`` record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from attnlab.core.errors import ConfigError
from attnlab.core.run_config import RunConfig
from attnlab.pipeline.load import load_predictor, resolve_checkpoint
from attnlab.pipeline.run import RunResult
from attnlab.tasks import get_task
from attnlab.train.checkpoint import replace_config
from attnlab.train.progress import MetricsLog

__all__ = ["PenaltyChoice", "check_tuning", "tune_length_penalty"]

FALLBACK_METRICS = ("bleu", "rougeL", "exact_match")
"""Scores a decoding task reports, in the order one is chosen when ``best_metric`` names none of them."""


@dataclass
class PenaltyChoice:
    """The outcome of :func:`tune_length_penalty`.

    Attributes:
        metric: the validation score compared (higher is better).
        beam_size: the beam width decoded with.
        scores: ``alpha -> score``, in the order tried.
        chosen: the winner (the first listed among equal scores).
        previous: the checkpoint's length penalty before.
        path: the checkpoint scored and updated.
        line: one line for the CLI.
    """

    metric: str
    beam_size: int
    scores: dict[float, float]
    chosen: float
    previous: float
    path: Path
    line: str


def check_tuning(cfg: RunConfig, beam_size: int | None) -> int | None:
    """The beam width the tuning will decode with, or ``None`` when nothing is tuned; refuses greedy decoding
    (the length penalty ranks only beam search's hypotheses), before any training is spent."""
    if not cfg.decode.tune_length_penalty:
        return None
    beam = beam_size if beam_size and beam_size > 1 else cfg.decode.beam_size
    if beam < 2:
        raise ConfigError("decode.tune_length_penalty: the length penalty only ranks beam search hypotheses; set "
                          "decode.beam_size above 1 or pass --test-beam N (N > 1)")
    return beam


def _metric(cfg: RunConfig, reported: dict[str, object]) -> str:
    wanted = cfg.train.best_metric.removeprefix("val_")
    candidates = ((wanted,) if cfg.train.best_mode == "max" else ()) + FALLBACK_METRICS
    for name in candidates:
        if isinstance(reported.get(name), (int, float)):
            return name
    raise ConfigError(f"decode.tune_length_penalty: the validation scores ({', '.join(sorted(reported))}) hold none "
                      f"of {', '.join(candidates)}")


def tune_length_penalty(run: RunResult, *, beam_size: int | None = None) -> PenaltyChoice | None:
    """Score the run's selected checkpoint on the validation split at each ``decode.tune_length_penalty`` and save
    the best as its ``decode.length_penalty``; ``None`` when the list is empty (see the module docstring).

    The score compared is ``train.best_metric`` without its ``val_`` prefix when the task reports it (BLEU,
    ROUGE-L, exact match), else the first of :data:`FALLBACK_METRICS` reported.
    """
    cfg = run.config
    beam = check_tuning(cfg, beam_size)
    if beam is None:
        return None
    if not run.data.valid:
        raise ConfigError("decode.tune_length_penalty: the run's data has no validation split to choose on")
    out_dir = run.train.out_dir
    path = resolve_checkpoint(out_dir)
    predictor = load_predictor(path)
    task = get_task(cfg.task_name)
    base = predictor.config
    metric = ""
    scores: dict[float, float] = {}
    count = 0
    for alpha in dict.fromkeys(float(a) for a in cfg.decode.tune_length_penalty):
        predictor.config = base.replace("decode", length_penalty=alpha)
        report = task.score(predictor, run.data.valid, predictor.config, beams=[beam])[0]
        metric = metric or _metric(cfg, report.metrics)
        value = float(report.metrics[metric])
        scores[alpha] = value
        count = int(report.metrics.get("sentences", report.metrics.get("scenes", 0)))
    predictor.config = base
    ranked = {a: (v if not math.isnan(v) else -math.inf) for a, v in scores.items()}
    chosen = max(ranked, key=lambda a: ranked[a])  # max keeps the first of equal scores
    previous = float(base.decode.length_penalty)
    log = MetricsLog(out_dir / "metrics.jsonl")
    for alpha, value in scores.items():
        log.write({"kind": "length_penalty", "step": predictor.step, "beam_size": beam, "length_penalty": alpha,
                   metric: value, "sentences": count, "selected": alpha == chosen})
    if chosen != previous:
        replace_config(path, lambda saved: saved.setdefault("decode", {}).update(length_penalty=chosen))
    tried = ", ".join(f"{a:g}: {v:.2f}" for a, v in scores.items())
    kept = f"saved in {path}" if chosen != previous else f"already {path}'s setting"
    line = (f"length penalty chosen on validation ({count} examples, beam {beam}, {metric}): {tried} -> {chosen:g} "
            f"({kept})")
    return PenaltyChoice(metric, beam, scores, chosen, previous, path, line)
