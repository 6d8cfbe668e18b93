"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints of one run.

Averaging the last few checkpoints of a run (Vaswani et al., 2017, section 6.1; Wu et al., 2021, for the
Transformer-tiny baseline on Multi30k) smooths out the noise of the last updates and usually gains some BLEU
for free. The checkpoints must come from the same model and text pipeline (same model config, tokenizers and
vocabularies, labels); the result is an ordinary inference checkpoint that ``attnlab translate``, ``predict`` and
``evaluate`` read.
Keep the checkpoints to average with ``train.keep_snapshots`` (see :class:`attnlab.train.Trainer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from attnlab.core.errors import CheckpointError
from attnlab.pipeline.load import predictor_from_checkpoint
from attnlab.train.checkpoint import Checkpoint, load_checkpoint, mean_state, save_checkpoint

__all__ = ["average_checkpoints", "mean_state"]


def _check_compatible(ckpts: Sequence[Checkpoint]) -> None:
    """Raise :class:`CheckpointError` unless every checkpoint has the newest one's model and text pipeline."""
    ref = ckpts[-1]
    for ckpt in ckpts[:-1]:
        if ckpt.config.get("model") != ref.config.get("model"):
            raise CheckpointError(f"checkpoint {ckpt.path}: its model config differs from {ref.path}'s; only "
                                  f"checkpoints of the same run can be averaged")
        for key in sorted((set(ckpt.extra) | set(ref.extra)) - {"averaged_from"}):  # tokenizers, vocabularies, labels
            if ckpt.extra.get(key) != ref.extra.get(key):
                raise CheckpointError(f"checkpoint {ckpt.path}: its {key} differs from {ref.path}'s; only "
                                      f"checkpoints of the same run can be averaged")
        if set(ckpt.model_state) != set(ref.model_state):
            extra = sorted(set(ckpt.model_state) ^ set(ref.model_state))[:3]
            raise CheckpointError(f"checkpoint {ckpt.path}: holds other tensors than {ref.path} ({', '.join(extra)})")
        for name, tensor in ckpt.model_state.items():
            if tensor.shape != ref.model_state[name].shape:
                raise CheckpointError(f"checkpoint {ckpt.path}: {name} has shape {tuple(tensor.shape)}, "
                                      f"{ref.path} has {tuple(ref.model_state[name].shape)}")


def average_checkpoints(sources: Sequence[str | Path], out: str | Path) -> list[int]:
    """Write to ``out`` a checkpoint whose weights are the mean of the ``sources``' weights.

    ``sources`` are checkpoint directories of one run (at least two; order does not matter, the one with the
    highest step gives the config, tokenizers and step of the result). The result holds no optimizer state (it
    is for inference) and lists its sources under ``averaged_from`` in ``extra.json``. Returns the steps of
    the averaged checkpoints, oldest first.

    Raises:
        CheckpointError: fewer than two sources, an unreadable one, sources of different models, or an existing
            non-empty ``out``.
    """
    if len(sources) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(sources)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists; averaging never overwrites: remove it or choose another "
                              f"output directory")
    ckpts = sorted((load_checkpoint(s) for s in sources), key=lambda c: c.step)
    _check_compatible(ckpts)
    newest = ckpts[-1]
    model = predictor_from_checkpoint(newest).model  # the model of any task, built from the run's own config
    averaged = mean_state([c.model_state for c in ckpts], list(model.state_dict()))
    model.load_state_dict(averaged, strict=True)
    extra = {**newest.extra, "averaged_from": [{"path": str(c.path), "step": c.step} for c in ckpts]}
    save_checkpoint(out, model=model, step=newest.step, config=newest.config, extra=extra)
    return [c.step for c in ckpts]
