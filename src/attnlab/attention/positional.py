"""Positional encodings added to token embeddings: fixed sinusoids and learned vectors."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(num_positions: int, d_model: int, base: float = 10000.0, offset: int = 0) -> torch.Tensor:
    """``(T, D)`` table with ``PE[p, 2i] = sin(p / base^(2i/D))`` and ``PE[p, 2i+1] = cos(...)``.

    Vaswani et al. (2017), section 3.5. Odd ``D`` is allowed (the last cosine column is dropped).
    """
    positions = torch.arange(offset, offset + num_positions, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    freqs = torch.exp(-math.log(base) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (ceil(D/2),)
    angles = positions * freqs  # (T, ceil(D/2))
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, 2*ceil(D/2)) interleaved
    return table[:, :d_model].float()  # (T, D)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds fixed sinusoidal positions; no parameters. Positions past ``max_len`` are computed on demand."""

    def __init__(self, d_model: int, max_len: int = 1024, dropout: float = 0.0, base: float = 10000.0) -> None:
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"SinusoidalPositionalEncoding: d_model and max_len must be positive, "
                             f"got d_model={d_model}, max_len={max_len}")
        self.d_model, self.base = d_model, base
        self.dropout = nn.Dropout(dropout)
        # Derived from the arguments, so not saved in checkpoints.
        self.register_buffer("table", sinusoid_table(max_len, d_model, base), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x``: ``(B, T, D)`` embeddings of positions ``offset .. offset+T-1``; returns ``(B, T, D)``."""
        _check_input(x, self.d_model, type(self).__name__)
        length = x.shape[1]
        if offset + length <= self.table.shape[0]:
            pe = self.table[offset:offset + length]  # (T, D)
        else:
            pe = sinusoid_table(length, self.d_model, self.base, offset).to(x.device)
        return self.dropout(x + pe.to(x.dtype))


class LearnedPositionalEncoding(nn.Module):
    """Adds a trained vector per position (as in BERT/GPT); at most ``max_len`` positions."""

    def __init__(self, d_model: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"LearnedPositionalEncoding: d_model and max_len must be positive, "
                             f"got d_model={d_model}, max_len={max_len}")
        self.d_model, self.max_len = d_model, max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x``: ``(B, T, D)``; returns ``(B, T, D)``. Raises if ``offset + T > max_len``."""
        _check_input(x, self.d_model, type(self).__name__)
        length = x.shape[1]
        if offset + length > self.max_len:
            raise ValueError(f"LearnedPositionalEncoding: positions {offset}..{offset + length - 1} exceed "
                             f"max_len={self.max_len}; raise max_len or truncate the input")
        positions = torch.arange(offset, offset + length, device=x.device)
        return self.dropout(x + self.embedding(positions).to(x.dtype))


def _check_input(x: torch.Tensor, d_model: int, owner: str) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{owner}: expected x of shape (B, T, {d_model}), got {tuple(x.shape)}")


def positional_encoding(kind: str, d_model: int, max_len: int, dropout: float = 0.0) -> nn.Module:
    """The positional encoding a model config names (``model.positional``): one place for every kind."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len, dropout)
    if kind == "learned":
        return LearnedPositionalEncoding(d_model, max_len, dropout)
    raise ValueError(f"positional_encoding: unknown kind {kind!r}, expected sinusoidal or learned")
