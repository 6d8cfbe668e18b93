"""Load a trained checkpoint of any task for inference: model + text pipeline + run config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.core.run_config import RunConfig
from attnlab.tasks import Classifier, Translator, get_task
from attnlab.train.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["Classifier", "Translator", "load_predictor", "load_translator", "predictor_from_checkpoint",
           "resolve_checkpoint", "run_config_of", "translator_from_checkpoint"]


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a checkpoint; for a run directory, its ``best/`` (else ``last/``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory; train one with `attnlab train --out DIR` "
                              f"and pass DIR/best")
    if not (path / "meta.json").exists():
        for sub in ("best", "last"):
            if (path / sub / "meta.json").exists():
                log.info("using %s", path / sub)
                return path / sub
    return path


def run_config_of(ckpt: Checkpoint) -> RunConfig:
    """The run configuration saved in a checkpoint."""
    try:
        return RunConfig.from_dict({k: v for k, v in ckpt.config.items()
                                    if k in ("task", "data", "model", "train", "decode")})
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {ckpt.path}: its config is not an attnlab run config ({exc})") from None


def predictor_from_checkpoint(ckpt: Checkpoint) -> Any:
    """The task's predictor (:class:`Translator`, :class:`Classifier`) for an already-read checkpoint."""
    config = run_config_of(ckpt)
    return get_task(config.task_name).load(ckpt, config)


def load_predictor(path: str | Path) -> Any:
    """Read a checkpoint written by ``attnlab train`` (a ``best/``/``last/`` directory, or a run directory) and
    return its task's predictor: a :class:`Translator` for translation and summarization, a :class:`Classifier`
    for classification."""
    return predictor_from_checkpoint(load_checkpoint(resolve_checkpoint(path)))


def translator_from_checkpoint(ckpt: Checkpoint) -> Translator:
    """Build the encoder-decoder of an already-read checkpoint from its own config, and load its weights."""
    predictor = predictor_from_checkpoint(ckpt)
    if not isinstance(predictor, Translator):
        task = run_config_of(ckpt).task_name
        raise CheckpointError(f"checkpoint {ckpt.path} holds a {task} model, not an encoder-decoder; use "
                              f"`attnlab predict` or `attnlab evaluate` with it")
    return predictor


def load_translator(path: str | Path) -> Translator:
    """Read an encoder-decoder checkpoint (translation or summarization) for :meth:`Translator.translate`."""
    return translator_from_checkpoint(load_checkpoint(resolve_checkpoint(path)))

