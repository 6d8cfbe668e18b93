"""Checks on what a checkpoint directory holds, each done before any value it checks is used.

- ``meta.json``: the format and version, the files it lists (only files inside the directory: an absolute name,
  ``..`` or a symbolic link out is refused before any file is opened), and each file's size and SHA-256;
- the JSON parts (``state.json``, ``config.json``, ``extra.json``): the shape :mod:`attnlab.train.checkpoint` writes;
- ``config.json``'s model: sized from its fields alone, before any model is built or weights are loaded;
- the model and optimizer to restore: parameter names, groups and shapes that match the checkpoint.

Each problem is a one-line :class:`CheckpointError` naming the checkpoint, the file and the field. The file layout is
described in :mod:`attnlab.train.checkpoint_format`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from attnlab.core.errors import CheckpointError, ConfigError, short_repr
from attnlab.train.checkpoint_format import (
    CONFIG_FILE,
    EXTRA_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    STATE_FILE,
    _is_int,
    _read_json,
)

# ------------------------------------------------------------------------------- the shape of the JSON parts
#
# Every JSON file is checked against the shape attnlab writes before any value of it is used, so a file that is
# valid JSON but of the wrong shape -- a list for an object, a string for a size -- fails here with the file and
# the field named, not later as an AttributeError deep inside.

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
    """``state.json`` as :func:`~attnlab.train.checkpoint.save_checkpoint` writes it (see
    :mod:`attnlab.train.checkpoint_format`)."""
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


_PARAM_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "ema")  # ema: attnlab.train.ema


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

