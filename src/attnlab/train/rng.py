"""Capture and restore the global random generators, so that a resumed run draws what an uninterrupted one would.

:func:`capture_rng` turns the torch CPU (and initialized CUDA), python ``random`` and numpy global generator states
into a JSON-ready dict -- the ``rng`` entry of a checkpoint's ``state.json`` (see :mod:`attnlab.train.checkpoint`);
:func:`restore_rng` puts them back.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

from attnlab.core.errors import CheckpointError, one_line
from attnlab.train.checkpoint_format import STATE_FILE

__all__ = ["capture_rng", "restore_rng"]


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
        raise CheckpointError(f"invalid RNG state in checkpoint ({STATE_FILE} rng): {one_line(exc)}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

