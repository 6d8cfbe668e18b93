"""``decode.tune_length_penalty``: ``attnlab train`` chooses the length penalty on validation and saves it in best/."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_helpers import SMALL_DATA, TINY_SEQ2SEQ, run_cli

from attnlab.core.errors import ConfigError
from attnlab.pipeline import load_translator, score_checkpoint
from attnlab.pipeline.tune import tune_length_penalty
from attnlab.tasks import TestReport as Report
from attnlab.tasks.text_to_text import TranslationTask
from attnlab.train.checkpoint import load_checkpoint

TRAIN = ["train", "--task", "dates", "--model", "seq2seq", "--max-steps", "2", *TINY_SEQ2SEQ, *SMALL_DATA]
WORDS = ["red", "green", "blue", "cat", "dog", "fox", "sun", "moon", "star", "tree", "lake", "hill"]


def _write_corpus(root: Path) -> list[str]:
    """A small word-level corpus (the target is the source reversed) as ``--corpus files`` flags: real text, so
    validation is scored with BLEU, which a briefly trained model gets partly right."""
    rng = random.Random(0)
    flags = ["--corpus", "files", "--set", "data.src_tokenizer=word", "--set", "data.tgt_tokenizer=word"]
    for split, count in (("train", 400), ("valid", 40), ("test", 20)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(count)]
        (root / f"{split}.src").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        (root / f"{split}.tgt").write_text("".join(f"{' '.join(line.split()[::-1])}\n" for line in lines),
                                           encoding="utf-8")
        flags += [f"--{split}-src", str(root / f"{split}.src"), f"--{split}-tgt", str(root / f"{split}.tgt")]
    return flags


def _records(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "length_penalty"]


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("tune")
    out = root / "run"
    res = run_cli(["train", "--model", "seq2seq", *_write_corpus(root), "--max-steps", "150", "--no-progress",
                   "--set", "model.hidden_size=32", "--set", "model.embed_dim=16", "--set", "decode.eval_sentences=10",
                   "--set", "decode.tune_length_penalty=[0, 2.5, 0.5, 10]", "--test-beam", "4", "--out", str(out)])
    assert res.rc == 0, res.err
    return out, res.out


def test_every_candidate_is_scored_on_validation_like_evaluate_scores_it(tuned_run: tuple[Path, str]) -> None:
    out, stdout = tuned_run
    records = _records(out)
    assert [r["length_penalty"] for r in records] == [0.0, 2.5, 0.5, 10.0]
    assert all(r["beam_size"] == 4 and r["sentences"] == 40 for r in records)
    for r in records:  # the oracle: the same checkpoint scored by `evaluate --split valid --length-penalty A`
        _, reports = score_checkpoint(out / "best", beams=[4], split="valid", length_penalty=r["length_penalty"])
        assert r["bleu"] == reports[0].metrics["bleu"]
    scores = [r["bleu"] for r in records]
    assert len(set(scores)) > 1, scores  # the candidates decode differently: the choice means something
    chosen = [r["length_penalty"] for r in records if r["selected"]]
    assert chosen == [records[scores.index(max(scores))]["length_penalty"]]  # the first of the best
    assert load_translator(out / "best").config.decode.length_penalty == chosen[0]
    line = next(line for line in stdout.splitlines() if line.startswith("length penalty chosen on validation"))
    assert "beam 4, bleu" in line and f"-> {chosen[0]:g}" in line
    # The test split is scored after the choice: its beam-3 score is the updated checkpoint's.
    _, reports = score_checkpoint(out / "best", beams=[4])
    test = json.loads((out / "test_results.json").read_text(encoding="utf-8"))
    assert test["beam4"]["bleu"] == reports[0].metrics["bleu"]


def test_the_choice_rewrites_only_the_config_of_best(tuned_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = tuned_run
    before = load_checkpoint(out / "best")
    run = _FakeRun(out, scores={0.0: 1.0, 2.5: 3.0, 0.5: 3.0})
    choice = tune_length_penalty(run, beam_size=4)
    after = load_checkpoint(out / "best")
    assert choice is not None and choice.chosen == 2.5 and choice.beam_size == 4  # ties keep the first listed
    assert after.config["decode"]["length_penalty"] == 2.5
    assert {k: v for k, v in after.config.items() if k != "decode"} == \
        {k: v for k, v in before.config.items() if k != "decode"}
    for name in before.meta["files"]:
        if name != "config.json":
            assert (out / "best" / name).read_bytes() == (before.path / name).read_bytes()
    assert all(before.model_state[k].equal(after.model_state[k]) for k in before.model_state)
    assert after.optimizer_state is not None and after.step == before.step


def test_a_nan_score_never_wins(tuned_run: tuple[Path, str]) -> None:
    out, _ = tuned_run
    choice = tune_length_penalty(_FakeRun(out, scores={1.0: math.nan, 0.7: 0.2}), beam_size=2)
    assert choice is not None and choice.chosen == 0.7


class _Scored(list):
    """Validation examples that carry the score each length penalty gets (read by the patched task score)."""

    def __init__(self, table: dict[float, float]) -> None:
        super().__init__([("a", "b")])
        self.table = table


class _FakeRun:
    """A RunResult stand-in whose validation scores come from a table (alpha -> exact match)."""

    def __init__(self, out: Path, scores: dict[float, float]) -> None:
        self.config = load_translator(out / "best").config.replace("decode", tune_length_penalty=tuple(scores))
        self.train = SimpleNamespace(out_dir=out)
        self.data = SimpleNamespace(valid=_Scored(scores))


@pytest.fixture(autouse=True)
def _scores_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    real = TranslationTask.score

    def score(self, predictor, examples, cfg, *, beams=(1,), baseline_data=None):  # noqa: ANN001, ANN202
        if not isinstance(examples, _Scored):
            return real(self, predictor, examples, cfg, beams=beams, baseline_data=baseline_data)
        value = examples.table[cfg.decode.length_penalty]
        return [Report(f"beam{beams[0]}", {"exact_match": value, "sentences": 1}, "")]

    monkeypatch.setattr(TranslationTask, "score", score)


@pytest.mark.parametrize(("sets", "message"), [
    (["--set", "decode.tune_length_penalty=[1.0]"], "beam search"),  # greedy: beam_size 1, no --test-beam
    (["--set", "decode.tune_length_penalty=[1.0, 11]", "--test-beam", "2"], "tune_length_penalty"),
    (["--set", "decode.tune_length_penalty=[abc]", "--test-beam", "2"], "tune_length_penalty"),
    (["--set", "decode.tune_length_penalty=[true]", "--test-beam", "2"], "tune_length_penalty"),
    (["--set", f"decode.tune_length_penalty=[{', '.join(['1'] * 21)}]", "--test-beam", "2"], "at most 20"),
])
def test_bad_settings_are_refused_before_training(tmp_path: Path, sets: list[str], message: str) -> None:
    out = tmp_path / "run"
    res = run_cli([*TRAIN, *sets, "--out", str(out)])
    assert res.rc == 2, res.err
    errors = res.error_lines()
    assert len(errors) == 1 and message in errors[0] and len(errors[0]) < 300, res.err
    assert not out.exists()  # nothing was trained


def test_a_task_without_beam_search_refuses_it() -> None:
    from attnlab.core.run_config import RunConfig

    with pytest.raises(ConfigError, match="does not decode with beam search"):
        RunConfig.from_dict({"data": {"source": "task", "task": "keywords"}, "decode": {"tune_length_penalty": [1]}})
