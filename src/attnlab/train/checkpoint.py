"""Complete, pickle-free, atomically written training checkpoints: :func:`save_checkpoint` and :func:`load_checkpoint`.

A checkpoint is a directory of safetensors and JSON files; :mod:`attnlab.train.checkpoint_format` describes the
layout. This module is the public import path: it puts a checkpoint together and takes one apart, and re-exports
the format's names, :func:`write_json_atomic` and the RNG helpers of :mod:`attnlab.train.rng`.

Writing goes to a temporary directory next to the target; every file and the directory are fsynced,
then an existing checkpoint is renamed aside, the new one renamed in and the old one deleted. A crash at
any point leaves either the target or, between the two renames, the complete temporary (or the
renamed-aside) directory, which :func:`load_checkpoint` falls back to. Only one process may write a
given checkpoint directory at a time.

Reading trusts nothing in the directory: ``meta.json`` may list only files inside it (an absolute name, ``..`` or a
symbolic link out is refused before any file is opened); every file is checked against its size and SHA-256; every
JSON part is checked against the shape written here before a value of it is used; and the model that
``config.json`` describes is sized from its fields alone -- against :data:`attnlab.models.build.MAX_PARAMETERS` and
against the tensor shapes in the ``model.safetensors`` header -- before the weights are loaded or a model is
built. Each problem is a one-line :class:`CheckpointError` (exit code 4) naming the file and the field; the checks
are in :mod:`attnlab.train.checkpoint_verify`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from attnlab.core.errors import CheckpointError, one_line, short_repr
from attnlab.train.checkpoint_format import (
    CONFIG_FILE,
    EXTRA_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    _fsync_dir,
    _json_bytes,
    _read_json,
    _read_tensors,
    _stored_values,
    _to_json,
    _write_bytes,
    write_json_atomic,
)
from attnlab.train.checkpoint_verify import (
    _bad,
    _check_extra,
    _check_model_config,
    _check_model_state,
    _check_optimizer,
    _check_state,
    _read_meta,
)
from attnlab.train.rng import capture_rng, restore_rng

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Checkpoint", "capture_rng", "load_checkpoint", "mean_state",
           "replace_config", "restore_rng", "save_checkpoint", "write_json_atomic"]


@dataclass
class Checkpoint:
    """Everything read back from a checkpoint directory.

    Attributes:
        path: the directory actually read (a fallback sibling if the target was lost in a crash).
        step: optimizer steps done when it was saved.
        model_state: parameter/buffer name -> tensor (tied names included).
        optimizer_state: a ``torch.optim.Optimizer.state_dict()``-shaped dict, or ``None`` if none was saved.
        scheduler_state, rng, data_state, config, extra, trainer_state: the JSON parts as saved.
        meta: the contents of ``meta.json``.
    """

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    scheduler_state: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    data_state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    trainer_state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ saving
#
# save_checkpoint writes every file through this module's _write_bytes and renames through _rename: the crash tests
# replace those two names here, so they must stay looked up in this module.

def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Unique CPU-contiguous tensors of ``model.state_dict()`` and ``alias -> stored name`` for tied ones."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"model state entry {name!r} is a {type(value).__name__}, not a tensor")
        if value.numel() > 0:
            key = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                   value.stride(), value.dtype)
            if key in seen:
                aliases[name] = seen[key]
                continue
            seen[key] = name
        tensors[name] = value.detach().cpu().contiguous()
    return tensors, aliases


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param id>.<key>"``) and a JSON-ready rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": _to_json(sd["param_groups"]), "scalar_state": _to_json(scalars),
                     "state_ids": [int(k) for k in sd["state"]]}


def _unwritable(target: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write checkpoint {target}: {exc.strerror or one_line(exc)}")


def save_checkpoint(directory: str | os.PathLike[str], *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler_state: dict[str, Any] | None = None,
                    step: int = 0, rng: dict[str, Any] | None = None, data_state: dict[str, Any] | None = None,
                    config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    """Atomically write (or replace) a checkpoint directory (layout: :mod:`attnlab.train.checkpoint_format`).

    Args:
        directory: the checkpoint directory (e.g. ``runs/x/last``); its parent is created if needed.
        model: its ``state_dict()`` (parameters and buffers) goes to ``model.safetensors``.
        optimizer: its tensors go to ``optimizer.safetensors``, param groups and scalars to ``state.json``.
        scheduler_state, data_state, config, extra, trainer_state: JSON-ready dicts stored as given.
        step: optimizer steps done.
        rng: generator states from :func:`capture_rng`; captured now when ``None``.

    Returns:
        The checkpoint directory. Raises :class:`CheckpointError` if it cannot be written (the previous
        checkpoint, if any, is then left as it was).
    """
    target = Path(directory)
    model_tensors, aliases = _model_tensors(model)
    state: dict[str, Any] = {
        "step": step, "scheduler": scheduler_state or {}, "data": data_state or {},
        "rng": rng if rng is not None else capture_rng(), "trainer": trainer_state or {}, "model_aliases": aliases,
        "optimizer": None,
    }
    opt_tensors: dict[str, torch.Tensor] | None = None
    if optimizer is not None:
        opt_tensors, state["optimizer"] = _optimizer_parts(optimizer)
    try:
        json_parts = {STATE_FILE: _to_json(state), CONFIG_FILE: _to_json(config or {}),
                      EXTRA_FILE: _to_json(extra or {})}
        encoded = {name: _json_bytes(obj) for name, obj in json_parts.items()}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {target}: state is not JSON-ready ({one_line(exc)})") from None

    files = {MODEL_FILE: safetensors.torch.save(model_tensors)}
    if opt_tensors is not None:
        files[OPTIMIZER_FILE] = safetensors.torch.save(opt_tensors)
    files.update(encoded)
    _publish(target, step, files)
    logger.debug("saved checkpoint %s (step %d)", target, step)
    return target


def _publish(target: Path, step: int, files: dict[str, bytes]) -> None:
    """Write ``files`` and their ``meta.json`` to a temporary sibling of ``target``, then swap it in (the
    module docstring's sequence of fsyncs and renames)."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as exc:
        raise _unwritable(target, exc) from None
    old: Path | None = None
    try:
        for name, data in files.items():
            _write_bytes(tmp / name, data)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "step": step, "created": time.time(),
                "torch_version": torch.__version__, "files": {name: len(data) for name, data in files.items()},
                "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
        _write_bytes(tmp / META_FILE, _json_bytes(meta))  # last: a temp dir with meta.json is complete
        _fsync_dir(tmp)
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            _rename(target, old)
        _rename(tmp, target)
        _fsync_dir(parent)
    except BaseException as exc:
        if old is not None and not target.exists():
            try:  # roll back so that the target keeps its previous checkpoint
                _rename(old, target)
            except OSError:
                logger.warning("checkpoint %s: the previous checkpoint remains at %s", target, old)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _unwritable(target, exc) from None
        raise
    _remove_stale(target)


def replace_config(directory: str | os.PathLike[str], edit: Callable[[dict[str, Any]], None]) -> Path:
    """Atomically give the checkpoint in ``directory`` a new ``config.json``: ``edit`` changes a copy of the saved
    configuration in place (e.g. a decoding setting chosen after training); every other file is kept byte for
    byte. The checkpoint is verified first (as by :func:`load_checkpoint`); returns the directory written."""
    ckpt = load_checkpoint(directory)
    config = copy.deepcopy(ckpt.config)
    edit(config)
    try:
        encoded = _json_bytes(_to_json(config))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {ckpt.path}: config is not JSON-ready "
                              f"({one_line(exc)})") from None
    try:
        files = {name: (ckpt.path / name).read_bytes() for name in ckpt.meta["files"]}
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {ckpt.path}: {exc.strerror or one_line(exc)}") from None
    files[CONFIG_FILE] = encoded
    target = Path(directory)
    _publish(target, ckpt.step, files)
    return target


def _siblings(target: Path, kind: str) -> list[Path]:
    """Leftover temp (``kind="tmp"``) or renamed-aside (``"old"``) directories of ``target``, newest first."""
    try:
        found = [p for p in target.parent.glob(f".{target.name}.{kind}-*") if p.is_dir()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _leftovers(target: Path) -> list[Path]:
    """What an interrupted save of ``target`` may have left: its temp directories, then its renamed-aside ones."""
    return _siblings(target, "tmp") + _siblings(target, "old")


def _remove_stale(target: Path) -> None:
    for path in _leftovers(target):
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- loading

def _resolve(target: Path) -> Path:
    """``target``, or when a crash between the two renames lost it, the newest complete sibling."""
    if target.exists():
        return target
    for candidate in _leftovers(target):
        try:
            _read_meta(candidate)
        except CheckpointError:
            continue
        logger.warning("checkpoint %s is missing; using %s left by an interrupted save", target, candidate)
        return candidate
    return target



def _optimizer_state(tensors: dict[str, torch.Tensor], parts: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): {} for pid in parts.get("state_ids", [])}
    for key, value in tensors.items():
        pid, _, name = key.partition(".")
        if not pid.isdecimal() or not name:
            raise CheckpointError(f"checkpoint {ckpt}: {OPTIMIZER_FILE} holds tensor {short_repr(key)}, expected "
                                  f"'<parameter id>.<name>'; the file is corrupt")
        state.setdefault(int(pid), {})[name] = value
    for pid, values in parts.get("scalar_state", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": parts["param_groups"]}



def _load_optimizer(optimizer: torch.optim.Optimizer, sd: dict[str, Any], ckpt: Path) -> None:
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt}: optimizer state does not fit ({one_line(exc)})") from None


def load_checkpoint(directory: str | os.PathLike[str], model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> Checkpoint:
    """Read a checkpoint directory and restore ``model`` and ``optimizer`` (when given) exactly.

    Every problem (missing directory or file, bad JSON, broken safetensors header, truncated file, a
    foreign or newer format, names or shapes that do not match the model) raises :class:`CheckpointError`
    with a one-line message naming the path; nothing is modified before all checks pass.
    RNG, scheduler, data and trainer states are returned, not applied (see :func:`restore_rng`).
    """
    path = _resolve(Path(directory))
    meta = _read_meta(path)
    state = _check_state(_read_json(path / STATE_FILE, path), path)
    config = _read_json(path / CONFIG_FILE, path)
    if not isinstance(config, dict):
        raise _bad(path, CONFIG_FILE, "", "an object (the run configuration)", config)
    extra = _read_json(path / EXTRA_FILE, path)
    if not isinstance(extra, dict):
        raise _bad(path, EXTRA_FILE, "", "an object", extra)
    if _check_model_config(config, _stored_values(path / MODEL_FILE, path), path):
        _check_extra(extra, path)
    model_state = _read_tensors(path / MODEL_FILE, path)
    for alias, name in state.get("model_aliases", {}).items():
        if name not in model_state:
            raise CheckpointError(f"checkpoint {path}: tied tensor {short_repr(alias)} refers to missing "
                                  f"{short_repr(name)}")
        model_state[alias] = model_state[name]
    opt_state = None
    if state.get("optimizer") is not None:
        if OPTIMIZER_FILE not in meta["files"]:
            raise CheckpointError(f"checkpoint {path}: {META_FILE} lists no {OPTIMIZER_FILE}; the file is corrupt")
        opt_state = _optimizer_state(_read_tensors(path / OPTIMIZER_FILE, path), state["optimizer"], path)
    if model is not None:
        _check_model_state(model, model_state, path)
    if optimizer is not None:
        if opt_state is None:
            raise CheckpointError(f"checkpoint {path}: holds no optimizer state (saved for inference only); "
                                  f"it cannot resume training")
        _check_optimizer(optimizer, opt_state, path)
    if model is not None:
        model.load_state_dict(model_state, strict=True)
    if optimizer is not None and opt_state is not None:
        _load_optimizer(optimizer, opt_state, path)
    return Checkpoint(path=path, step=state["step"], model_state=model_state, optimizer_state=opt_state,
                      scheduler_state=state.get("scheduler", {}), rng=state.get("rng", {}),
                      data_state=state.get("data", {}), config=config, extra=extra,
                      trainer_state=state.get("trainer", {}), meta=meta)


def mean_state(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating tensors ``names`` over ``states`` (summed in float64, cast back).

    Non-floating tensors (integer buffers such as counters) are not averaged: the last state's value is kept.
    """
    out = {}
    for name in names:
        last = states[-1][name]
        if not last.dtype.is_floating_point:
            out[name] = last.clone()
            continue
        total = torch.zeros(last.shape, dtype=torch.float64)
        for state in states:
            total += state[name].to(torch.float64)
        out[name] = (total / len(states)).to(last.dtype)
    return out
