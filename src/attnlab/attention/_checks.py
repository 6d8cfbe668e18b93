"""Input validation shared by the attention modules: errors name the argument, what came, what was expected."""

from __future__ import annotations

import torch


def check_float3d(name: str, x: object, last_dim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 3:
        want = f"(B, T, {last_dim})" if last_dim is not None else "(B, T, features)"
        raise ValueError(f"{name}: expected a 3-dim batch-first tensor {want}, got shape {tuple(x.shape)}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(f"{name}: expected last dim {last_dim}, got shape {tuple(x.shape)}")
    return x


def check_qkv(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
              query_dim: int | None = None, key_dim: int | None = None, value_dim: int | None = None,
              names: tuple[str, str, str] = ("queries", "keys", "values")) -> None:
    check_float3d(names[0], queries, query_dim)
    check_float3d(names[1], keys, key_dim)
    check_float3d(names[2], values, value_dim)
    if not (queries.shape[0] == keys.shape[0] == values.shape[0]):
        raise ValueError(f"{names[0]}/{names[1]}/{names[2]}: batch sizes differ: {queries.shape[0]}, "
                         f"{keys.shape[0]}, {values.shape[0]}")
    if keys.shape[1] != values.shape[1]:
        raise ValueError(f"{names[1]}/{names[2]}: need one value per key, got {keys.shape[1]} keys and "
                         f"{values.shape[1]} values")
    if not (queries.dtype == keys.dtype == values.dtype):
        raise TypeError(f"{names[0]}/{names[1]}/{names[2]}: dtypes differ: {queries.dtype}, {keys.dtype}, "
                        f"{values.dtype}")


def check_dropout(owner: str, dropout: float) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{owner}: dropout must be a number in [0, 1), got {dropout!r}")
    return float(dropout)


def check_positive(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value
