"""Start a fresh run from another run's weights (``train.init_from``, ``train.init_modules``).

The usual case is transfer: a captioner's image stem first trained to classify single Fashion-MNIST items
(``--model vit --set model.stem=conv``; the two models name their stems alike, ``patch_embedding``), as Show,
Attend and Tell started from an ImageNet network. Parameters are matched by name: those under the prefixes in
``init_modules`` (or, with none given, every parameter whose name and shape both match) are copied; the rest
keep their fresh initialization. A prefix that names nothing, or a shape that differs under a named prefix, is a
:class:`~attnlab.core.errors.ConfigError` rather than a silent partial copy. Only fresh runs start this way: a
resumed run continues from its own ``last/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.core.run_config import RunConfig
from attnlab.train.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["init_checkpoint", "initialize_from"]


def init_checkpoint(cfg: RunConfig) -> Checkpoint | None:
    """The checkpoint named by ``train.init_from`` (a run directory gives its ``best/``), or ``None``."""
    if cfg.train.init_from is None:
        return None
    from attnlab.pipeline.load import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(Path(cfg.train.init_from)))


def _selected(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def initialize_from(model: nn.Module, ckpt: Checkpoint, prefixes: list[str]) -> list[str]:
    """Copy ``ckpt``'s tensors into ``model`` in place (see the module docstring); returns the names copied.

    Raises:
        ConfigError: nothing to copy, a prefix that matches no parameter of the model or of the checkpoint, or
            a shape mismatch under a named prefix.
    """
    own = dict(model.state_dict())
    stored = ckpt.model_state
    where = f"train.init_from ({ckpt.path})"
    for prefix in prefixes:
        for side, names in (("the model", own), ("the checkpoint", stored)):
            if not any(_selected(n, [prefix]) for n in names):
                raise ConfigError(f"train.init_modules: {prefix!r} names no parameter of {side}; "
                                  f"{side} has {', '.join(sorted({n.split('.')[0] for n in names}))}")
    copied = []
    for name, tensor in own.items():
        if prefixes and not _selected(name, prefixes):
            continue
        if name not in stored:
            if prefixes:
                raise ConfigError(f"{where}: the checkpoint has no {name!r}, which train.init_modules selects")
            continue
        if stored[name].shape != tensor.shape:
            if prefixes:
                raise ConfigError(f"{where}: {name} is {tuple(stored[name].shape)} in the checkpoint but "
                                  f"{tuple(tensor.shape)} in this model; build the two alike (e.g. the same "
                                  f"d_model, patch_size and stem_blocks)")
            continue
        copied.append(name)
    if not copied:
        raise ConfigError(f"{where}: no parameter of this model has the name and shape of one in the checkpoint")
    with torch.no_grad():
        for name in copied:
            own[name].copy_(stored[name].to(own[name].dtype))
    count = sum(own[n].numel() for n in copied)
    log.info("init_from %s (step %d): copied %d tensors, %.2fM values (%s)", ckpt.path, ckpt.step, len(copied),
             count / 1e6, ", ".join(sorted({n.split('.')[0] for n in copied})))
    return copied
