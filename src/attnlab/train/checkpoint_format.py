"""The on-disk format of a checkpoint: its file names, JSON that keeps tuples, and reading and writing its files.

A checkpoint is a directory::

    meta.json             format name/version, step, the size and SHA-256 of every other file (written last)
    model.safetensors     model parameters and buffers (tied tensors stored once, see state.json)
    optimizer.safetensors optimizer tensors (AdamW exp_avg, exp_avg_sq, step)
    state.json            optimizer param groups and scalar state, scheduler, step, data position,
                          RNG states (torch, python, numpy), trainer state, tied-tensor aliases
    config.json           the run configuration
    extra.json            tokenizer/vocabulary dicts and anything else JSON-ready

Each file is written fsynced; each read failure is a one-line :class:`CheckpointError` naming the checkpoint and the
file. Checking what the files hold is :mod:`attnlab.train.checkpoint_verify`'s; putting them together atomically is
:mod:`attnlab.train.checkpoint`'s.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from attnlab.core.errors import CheckpointError, one_line, short_repr

FORMAT_NAME = "attnlab-checkpoint"
FORMAT_VERSION = 1
META_FILE = "meta.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
EXTRA_FILE = "extra.json"

__all__ = ["CONFIG_FILE", "EXTRA_FILE", "FORMAT_NAME", "FORMAT_VERSION", "META_FILE", "MODEL_FILE", "OPTIMIZER_FILE",
           "STATE_FILE", "write_json_atomic"]


# ---------------------------------------------------------------------------------------- JSON with tuples

def _to_json(obj: Any) -> Any:
    """Tuples become ``{"__tuple__": [...]}`` so that optimizer param groups (``betas``) restore exactly."""
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_json(v) for v in obj]}
    if isinstance(obj, list):
        return [_to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        raise TypeError("tensors belong in a safetensors file, not in JSON")
    return obj


def _from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(_from_json(v) for v in obj["__tuple__"])
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ writing

def _json_bytes(obj: Any) -> bytes:
    """How every JSON file of a checkpoint is encoded: indented, keys sorted, a final newline."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write one JSON file atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _write_bytes(tmp, _json_bytes(obj))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------------ reading

def _unreadable(path: Path, ckpt: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"checkpoint {ckpt}: cannot read {path.name} ({one_line(exc)})")


def _read_json(path: Path, ckpt: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {ckpt}: missing {path.name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, ckpt, exc) from None
    try:
        return _from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}); the file is truncated or corrupt") from None
    except RecursionError:
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is nested too deeply; the file is corrupt") from None
    except ValueError as exc:  # e.g. a number of over 4,300 digits
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is not valid JSON ({one_line(exc)})") from None


def _read_tensors(path: Path, ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, ckpt, exc) from None
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for broken headers
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is not a valid safetensors file "
                              f"({one_line(exc)})") from None


_MAX_HEADER = 100_000_000  # the limit safetensors itself puts on its JSON header


def _stored_values(path: Path, ckpt: Path) -> int:
    """How many values the tensors of a safetensors file hold, read from its JSON header alone (the data is not
    loaded): an 8-byte little-endian length, then ``{name: {"dtype", "shape", "data_offsets"}, ...}``."""
    def broken(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {ckpt}: {path.name} is not a valid safetensors file ({why})")

    try:
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if not 0 < length <= min(_MAX_HEADER, path.stat().st_size - 8):
                raise broken(f"header length {length}")
            header = json.loads(fh.read(length))
    except OSError as exc:
        raise _unreadable(path, ckpt, exc) from None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, a 5,000-digit number
        raise broken("its header is not JSON") from None
    if not isinstance(header, dict):
        raise broken("its header is not an object")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(_is_int(n) for n in shape):
            raise broken(f"tensor {short_repr(name)} has no shape")
        total += math.prod(shape)
    return total


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
