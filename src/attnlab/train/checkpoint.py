"""Complete, pickle-free, atomically written training checkpoints.

A checkpoint is a directory::

    meta.json             format name/version, step, the size and SHA-256 of every other file (written last)
    model.safetensors     model parameters and buffers (tied tensors stored once, see state.json)
    optimizer.safetensors optimizer tensors (AdamW exp_avg, exp_avg_sq, step)
    state.json            optimizer param groups and scalar state, scheduler, step, data position,
                          RNG states (torch, python, numpy), trainer state, tied-tensor aliases
    config.json           the run configuration
    extra.json            tokenizer/vocabulary dicts and anything else JSON-ready

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
built. Each problem is a one-line :class:`CheckpointError` (exit code 4) naming the file and the field.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from attnlab.core.errors import CheckpointError, ConfigError, one_line, short_repr

logger = logging.getLogger(__name__)

FORMAT_NAME = "attnlab-checkpoint"
FORMAT_VERSION = 1
META_FILE = "meta.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
EXTRA_FILE = "extra.json"

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Checkpoint", "capture_rng", "load_checkpoint", "restore_rng",
           "save_checkpoint", "write_json_atomic"]


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


# ---------------------------------------------------------------------------------------------- RNG states

def capture_rng() -> dict[str, Any]:
    """JSON-ready states of the torch CPU (and initialized CUDA), python ``random`` and numpy global generators."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    cuda: list[str] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return {
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
        "torch_cuda": cuda,
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
        "numpy": {"kind": np_kind, "keys": np_keys.tolist(), "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_cached)},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`; a malformed state raises :class:`CheckpointError`."""
    try:
        torch.set_rng_state(_bytes_tensor(state["torch"]))
        cuda = state.get("torch_cuda") or []
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in cuda])
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
        nps = state["numpy"]
        np.random.set_state((nps["kind"], np.asarray(nps["keys"], dtype=np.uint32), nps["pos"], nps["has_gauss"],
                             nps["cached_gaussian"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"invalid RNG state in checkpoint ({STATE_FILE} rng): {_one_line(exc)}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


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


# ------------------------------------------------------------------------------------------ file helpers

def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json(path: Path, obj: Any) -> None:
    _write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


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
        _write_json(tmp, obj)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _one_line(exc: BaseException) -> str:
    return one_line(exc)


# ------------------------------------------------------------------------------------------------ saving

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


def save_checkpoint(directory: str | os.PathLike[str], *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler_state: dict[str, Any] | None = None,
                    step: int = 0, rng: dict[str, Any] | None = None, data_state: dict[str, Any] | None = None,
                    config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    """Atomically write (or replace) a checkpoint directory; see the module docstring for the layout.

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
    parent = target.parent
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
        encoded = {name: (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")
                   for name, obj in json_parts.items()}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {target}: state is not JSON-ready ({_one_line(exc)})") from None

    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {target}: {exc.strerror or _one_line(exc)}") from None
    old: Path | None = None
    try:
        files = {MODEL_FILE: safetensors.torch.save(model_tensors)}
        if opt_tensors is not None:
            files[OPTIMIZER_FILE] = safetensors.torch.save(opt_tensors)
        files.update(encoded)
        for name, data in files.items():
            _write_bytes(tmp / name, data)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "step": step, "created": time.time(),
                "torch_version": torch.__version__, "files": {name: len(data) for name, data in files.items()},
                "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
        _write_json(tmp / META_FILE, meta)  # last: a temp dir with meta.json is complete
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
            raise CheckpointError(f"cannot write checkpoint {target}: {exc.strerror or _one_line(exc)}") from None
        raise
    _remove_stale(target)
    logger.debug("saved checkpoint %s (step %d)", target, step)
    return target


def _siblings(target: Path, kind: str) -> list[Path]:
    """Leftover temp (``kind="tmp"``) or renamed-aside (``"old"``) directories of ``target``, newest first."""
    try:
        found = [p for p in target.parent.glob(f".{target.name}.{kind}-*") if p.is_dir()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _remove_stale(target: Path) -> None:
    for path in _siblings(target, "tmp") + _siblings(target, "old"):
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- loading

def _read_json(path: Path, ckpt: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {ckpt}: missing {path.name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt}: cannot read {path.name} ({_one_line(exc)})") from None
    try:
        return _from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}); the file is truncated or corrupt") from None
    except RecursionError:
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is nested too deeply; the file is corrupt") from None
    except ValueError as exc:  # e.g. a number of over 4,300 digits
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is not valid JSON ({_one_line(exc)})") from None


def _read_tensors(path: Path, ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {ckpt}: cannot read {path.name} ({_one_line(exc)})") from None
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for broken headers
        raise CheckpointError(f"checkpoint {ckpt}: {path.name} is not a valid safetensors file "
                              f"({_one_line(exc)})") from None


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
        raise CheckpointError(f"checkpoint {ckpt}: cannot read {path.name} ({_one_line(exc)})") from None
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


# ------------------------------------------------------------------------------- the shape of the JSON parts
#
# Every JSON file is checked against the shape attnlab writes before any value of it is used, so a file that is
# valid JSON but of the wrong shape -- a list for an object, a string for a size -- fails here with the file and
# the field named, not later as an AttributeError deep inside.

def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _what(value: Any) -> str:
    """A value of the wrong type as an error names it: containers by kind, scalars by a short repr."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return short_repr(value)


def _bad(ckpt: Path, file: str, field: str, expected: str, value: Any) -> CheckpointError:
    where = f"{file} {field}" if field else file
    return CheckpointError(f"checkpoint {ckpt}: {where}: expected {expected}, got {_what(value)}; the file is "
                           f"corrupt or was not written by attnlab")


def _key(name: Any) -> str:
    """``["name"]``: how a field names an entry of an object."""
    return f"[{short_repr(name, 60)}]"


def _member(ckpt: Path, name: Any) -> Path:
    """The file ``name`` (an entry of meta.json) inside ``ckpt``.

    meta.json lists only files of the checkpoint directory: a name that is absolute, climbs out with ``..`` or
    resolves (through symbolic links) outside the directory is refused here, before any file is opened, sized or
    hashed -- a tampered checkpoint must not make attnlab read, or reveal the size of, other files.
    """
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        raise CheckpointError(f"checkpoint {ckpt}: {META_FILE} lists {short_repr(name)}, which is not a file name; "
                              f"the file is corrupt")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise CheckpointError(f"checkpoint {ckpt}: {META_FILE} lists {short_repr(name)}, a path outside the checkpoint "
                              f"directory; a checkpoint lists only its own files")
    file = ckpt / name
    # realpath follows the links on the way without opening or stat'ing the target (Path.resolve would stat it).
    root, resolved = Path(os.path.realpath(ckpt)), Path(os.path.realpath(file))
    if resolved == root or root not in resolved.parents:
        raise CheckpointError(f"checkpoint {ckpt}: {META_FILE} lists {short_repr(name)}, which resolves outside the "
                              f"checkpoint directory (a symbolic link?); a checkpoint holds its own files")
    return file


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path} (the directory does not exist)")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a file, expected a checkpoint directory")
    if not (path / META_FILE).exists():
        raise CheckpointError(f"checkpoint {path}: missing {META_FILE}; not an attnlab checkpoint, or its save was "
                              f"interrupted")
    meta = _read_json(path / META_FILE, path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"checkpoint {path}: {META_FILE} format {short_repr(found)} is not {FORMAT_NAME!r}; not "
                              f"an attnlab checkpoint")
    version = meta.get("version")
    if not _is_int(version, 1) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: {META_FILE} format version {short_repr(version)} is not supported "
                              f"(this attnlab reads version {FORMAT_VERSION}); use the attnlab version that wrote it")
    if "step" in meta and not _is_int(meta["step"]):
        raise _bad(path, META_FILE, "step", "a step count (an integer >= 0)", meta["step"])
    files = meta.get("files")
    if not isinstance(files, dict):
        raise _bad(path, META_FILE, "files", "an object of file names and sizes", files)
    for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE, EXTRA_FILE):  # every one is read: each must be checked
        if name not in files:
            raise CheckpointError(f"checkpoint {path}: {META_FILE} lists no {name}; the file is corrupt")
    digests = meta.get("sha256", {})
    if not isinstance(digests, dict):
        raise _bad(path, META_FILE, "sha256", "an object of file names and SHA-256 digests", digests)
    members = {name: _member(path, name) for name in files}  # all of them, before any file is touched
    for name, size in files.items():
        if not _is_int(size):
            raise _bad(path, META_FILE, f"files{_key(name)}", "a size in bytes", size)
    for name, digest in digests.items():
        if name not in files:
            raise CheckpointError(f"checkpoint {path}: {META_FILE} sha256 names {short_repr(name)}, which its files "
                                  f"do not list; the file is corrupt")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise _bad(path, META_FILE, f"sha256{_key(name)}", "a SHA-256 digest (64 hex digits)", digest)
    for name, size in files.items():
        file = members[name]
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path}: missing {name}")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(f"checkpoint {path}: {name} has {actual} bytes, {META_FILE} says {size}; "
                                  f"the file is truncated or was modified")
    # Same size is not same content: a flipped byte in the weights would load silently without this.
    for name, digest in digests.items():
        if hashlib.sha256(members[name].read_bytes()).hexdigest() != digest:
            raise CheckpointError(f"checkpoint {path}: {name} does not match the SHA-256 in {META_FILE}; the file is "
                                  f"corrupt or was modified")
    return meta


def _check_state(state: Any, ckpt: Path) -> dict[str, Any]:
    """``state.json`` as :func:`save_checkpoint` writes it (see the module docstring)."""
    if not isinstance(state, dict):
        raise _bad(ckpt, STATE_FILE, "", "an object", state)
    if not _is_int(state.get("step")):
        raise _bad(ckpt, STATE_FILE, "step", "a step count (an integer >= 0)", state.get("step"))
    for key in ("scheduler", "data", "rng", "trainer", "model_aliases"):
        if key in state and not isinstance(state[key], dict):
            raise _bad(ckpt, STATE_FILE, key, "an object", state[key])
    for alias, name in state.get("model_aliases", {}).items():
        if not isinstance(name, str):
            raise _bad(ckpt, STATE_FILE, f"model_aliases{_key(alias)}", "a tensor name", name)
    parts = state.get("optimizer")
    if parts is None:
        return state
    if not isinstance(parts, dict):
        raise _bad(ckpt, STATE_FILE, "optimizer", "an object (or null)", parts)
    groups = parts.get("param_groups")
    if not isinstance(groups, list):
        raise _bad(ckpt, STATE_FILE, "optimizer.param_groups", "a list of parameter groups", groups)
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise _bad(ckpt, STATE_FILE, f"optimizer.param_groups[{i}]", "an object", group)
        _check_ids(group.get("params"), ckpt, f"optimizer.param_groups[{i}].params")
    _check_ids(parts.get("state_ids", []), ckpt, "optimizer.state_ids")
    scalars = parts.get("scalar_state", {})
    if not isinstance(scalars, dict):
        raise _bad(ckpt, STATE_FILE, "optimizer.scalar_state", "an object", scalars)
    for pid, values in scalars.items():
        if not pid.isdecimal() or not isinstance(values, dict):
            raise _bad(ckpt, STATE_FILE, f"optimizer.scalar_state{_key(pid)}",
                       "an object under a parameter id", values if pid.isdecimal() else pid)
    return state


def _check_ids(ids: Any, ckpt: Path, field: str) -> None:
    if not isinstance(ids, list):
        raise _bad(ckpt, STATE_FILE, field, "a list of parameter ids", ids)
    for i, pid in enumerate(ids):
        if not _is_int(pid):
            raise _bad(ckpt, STATE_FILE, f"{field}[{i}]", "a parameter id (an integer >= 0)", pid)


_TOKENIZER_SETTINGS = {"lower": bool, "keep_cjk_spaces": bool, "model_proto_base64": str, "sha256": str,
                       "vocab_size": int}


def _check_extra(extra: dict[str, Any], ckpt: Path) -> None:
    """The tokenizers, vocabularies and labels an attnlab model's checkpoint keeps in ``extra.json`` have the shape
    :mod:`attnlab.data` writes (their values are checked when they are rebuilt)."""
    import attnlab.data  # noqa: F401 -- registers every tokenizer kind
    from attnlab.data.tokenize import TOKENIZERS

    kinds = sorted(TOKENIZERS)
    for key, value in extra.items():
        if key.endswith("tokenizer"):
            if not isinstance(value, dict):
                raise _bad(ckpt, EXTRA_FILE, key, "a tokenizer (an object)", value)
            kind = value.get("kind")
            if not isinstance(kind, str) or kind not in kinds:
                raise _bad(ckpt, EXTRA_FILE, f"{key}.kind", f"one of {', '.join(kinds)}", kind)
            for name, kind in _TOKENIZER_SETTINGS.items():
                if name in value and not isinstance(value[name], kind):
                    raise _bad(ckpt, EXTRA_FILE, f"{key}.{name}", f"a {kind.__name__}", value[name])
        elif key.endswith("vocab"):
            if not isinstance(value, dict):
                raise _bad(ckpt, EXTRA_FILE, key, "a vocabulary (an object)", value)
            tokens = value.get("tokens", [])
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                bad = next((t for t in tokens if not isinstance(t, str)), None) if isinstance(tokens, list) else tokens
                raise _bad(ckpt, EXTRA_FILE, f"{key}.tokens", "a list of strings", bad)
        elif key == "labels" and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            raise _bad(ckpt, EXTRA_FILE, key, "a list of label names", value)
        elif key == "image" and not isinstance(value, dict):
            raise _bad(ckpt, EXTRA_FILE, key, "an object", value)


def _check_model_config(config: dict[str, Any], stored: int, ckpt: Path) -> bool:
    """Refuse a ``config.json`` whose model could not be built, before anything is: invalid values, a model over
    :data:`attnlab.models.build.MAX_PARAMETERS`, or one larger than the weights ``model.safetensors`` holds (its
    header says how many values that is; a real checkpoint stores at least the estimate, which is a lower bound).

    Returns whether the config describes one of attnlab's models; a model section of a kind attnlab does not know
    (a test's toy model) is left to whoever builds it.
    """
    from attnlab.core.model_config import MODEL_CONFIGS, model_config_from_dict
    from attnlab.core.registry import task_of_source
    from attnlab.core.run_config import default_model_kind
    from attnlab.models.build import check_model_size, describe_field, estimate_parameters, largest_term

    section = config.get("model")
    if section is None:
        return False
    if not isinstance(section, dict):
        raise _bad(ckpt, CONFIG_FILE, "model", "an object", section)
    kind = section.get("kind")
    if kind is None:  # as RunConfig.from_dict: the task's first model kind
        data = config.get("data") if isinstance(config.get("data"), dict) else {}
        try:
            task = config.get("task") or task_of_source(data.get("source", "task"), data.get("task", "dates"))[0]
            kind = default_model_kind(task)
        except (KeyError, TypeError):
            return False  # the run config is invalid: reading it refuses it with its own message
    if not isinstance(kind, str):
        raise _bad(ckpt, CONFIG_FILE, "model.kind", f"one of {', '.join(MODEL_CONFIGS)}", kind)
    if kind not in MODEL_CONFIGS:
        return False
    try:
        model = model_config_from_dict({**section, "kind": kind})
        check_model_size(model)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {ckpt}: {CONFIG_FILE} {exc}") from None
    floor = estimate_parameters(model, stored_only=True)
    if floor > stored:
        field = describe_field(*largest_term(model, stored_only=True))
        raise CheckpointError(f"checkpoint {ckpt}: {CONFIG_FILE} {field} describes a model of at least {floor:,} "
                              f"values, but {MODEL_FILE} holds {stored:,}; the config does not belong to these weights")
    return True


def _resolve(target: Path) -> Path:
    """``target``, or when a crash between the two renames lost it, the newest complete sibling."""
    if target.exists():
        return target
    for candidate in _siblings(target, "tmp") + _siblings(target, "old"):
        try:
            _read_meta(candidate)
        except CheckpointError:
            continue
        logger.warning("checkpoint %s is missing; using %s left by an interrupted save", target, candidate)
        return candidate
    return target


def _check_model_state(model: nn.Module, state: dict[str, torch.Tensor], ckpt: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"checkpoint {ckpt}: does not match the model ({'; '.join(parts)}); "
                              f"was it saved from another model configuration?")
    for name, value in expected.items():
        if tuple(state[name].shape) != tuple(value.shape):
            raise CheckpointError(f"checkpoint {ckpt}: {name} has shape {tuple(state[name].shape)} in the checkpoint "
                                  f"but {tuple(value.shape)} in the model; was it saved from another model "
                                  f"configuration?")


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


_PARAM_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def _check_optimizer(optimizer: torch.optim.Optimizer, sd: dict[str, Any], ckpt: Path) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_counts = [len(g["params"]) for g in sd["param_groups"]]
    counts = [len(g["params"]) for g in optimizer.param_groups]
    if saved_counts != counts:
        raise CheckpointError(f"checkpoint {ckpt}: optimizer parameter groups have sizes {saved_counts}, the "
                              f"optimizer has {counts}; was it saved from another model configuration?")
    for pid, values in sd["state"].items():
        if not 0 <= pid < len(params):
            raise CheckpointError(f"checkpoint {ckpt}: optimizer state for parameter {pid}, the optimizer has "
                                  f"{len(params)} parameters")
        for key in _PARAM_SHAPED:
            value = values.get(key)
            if isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(params[pid].shape):
                raise CheckpointError(f"checkpoint {ckpt}: optimizer {key} of parameter {pid} has shape "
                                      f"{tuple(value.shape)}, the parameter {tuple(params[pid].shape)}")


def _load_optimizer(optimizer: torch.optim.Optimizer, sd: dict[str, Any], ckpt: Path) -> None:
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt}: optimizer state does not fit ({_one_line(exc)})") from None


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
