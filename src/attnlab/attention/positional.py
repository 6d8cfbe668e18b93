"""Positional encodings added to token embeddings: fixed sinusoids (attnlab's and fairseq's) and learned vectors."""

from __future__ import annotations

import math

import torch
from torch import nn

from attnlab.attention.dropout import Dropout


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
        self.dropout = Dropout(dropout)
        # Derived from the arguments, so not saved in checkpoints.
        self.register_buffer("table", sinusoid_table(max_len, d_model, base), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x``: ``(B, T, D)`` embeddings of positions ``offset .. offset+T-1``; returns ``(B, T, D)``."""
        _check_input(x, self.d_model, type(self).__name__)
        length = x.shape[1]
        if offset + length <= self.table.shape[0]:
            pe = self.table[offset:offset + length]  # (T, D)
        else:
            pe = self._rows(length, offset).to(x.device)
        return self.dropout(x + pe.to(x.dtype))

    def _rows(self, length: int, offset: int) -> torch.Tensor:
        """``(T, D)`` rows past the stored table, computed on demand."""
        return sinusoid_table(length, self.d_model, self.base, offset)


def fairseq_sinusoid_table(num_positions: int, d_model: int, padding_idx: int = 0, offset: int = 0) -> torch.Tensor:
    """``(T, D)`` rows of fairseq's sinusoidal table (as Hugging Face's M2M100 rebuilds it) for attnlab positions
    ``offset .. offset+T-1``: position ``p`` is fairseq's row ``r = p + padding_idx + 1`` (fairseq numbers tokens from
    ``padding_idx + 1``), ``PE[p, i] = sin(r * f_i)`` and ``PE[p, D/2 + i] = cos(r * f_i)`` with
    ``f_i = exp(-i * ln(10000) / (D/2 - 1))``, ``i = 0 .. D/2 - 1``: a sine block, then a cosine block, and a zero last
    column for odd ``D``.

    fairseq's ``SinusoidalPositionalEmbedding.get_embedding`` (tensor2tensor's layout), computed with the same float32
    operations as ``M2M100SinusoidalPositionalEmbedding.get_embedding``, so the rows are bit-equal to Hugging Face's.
    """
    half = d_model // 2
    if half < 2:
        raise ValueError(f"fairseq_sinusoid_table: d_model must be >= 4 (the frequencies divide by d_model/2 - 1), "
                         f"got {d_model}")
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)  # (D/2,)
    first = offset + padding_idx + 1
    rows = torch.arange(first, first + num_positions, dtype=torch.int64).float()  # (T,)
    angles = rows.unsqueeze(1) * freqs.unsqueeze(0)  # (T, D/2)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (T, 2*(D/2)) sines, then cosines
    if d_model % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)  # (T, D)
    return table


class FairseqSinusoidalPositionalEncoding(SinusoidalPositionalEncoding):
    """Adds fairseq's fixed sinusoids (:func:`fairseq_sinusoid_table`); no parameters. Positions past ``max_len``
    are computed on demand.

    The table Hugging Face's ``M2M100ForConditionalGeneration`` (and fairseq's Transformer) rebuilds at load time,
    so a model trained with it exports to that class exactly (:mod:`attnlab.export.hf`). ``padding_idx`` is the
    ``<pad>`` id, which fixes fairseq's row offset; attnlab's is 0.
    """

    def __init__(self, d_model: int, max_len: int = 1024, dropout: float = 0.0, padding_idx: int = 0) -> None:
        nn.Module.__init__(self)  # its own checks and table; forward is the parent's
        if d_model < 4 or max_len <= 0 or padding_idx < 0:
            raise ValueError(f"FairseqSinusoidalPositionalEncoding: d_model must be >= 4 (fairseq's frequencies "
                             f"divide by d_model/2 - 1), max_len positive and padding_idx >= 0, got "
                             f"d_model={d_model}, max_len={max_len}, padding_idx={padding_idx}")
        self.d_model, self.padding_idx = d_model, padding_idx
        self.dropout = Dropout(dropout)
        # Derived from the arguments, so not saved in checkpoints.
        self.register_buffer("table", fairseq_sinusoid_table(max_len, d_model, padding_idx), persistent=False)

    def _rows(self, length: int, offset: int) -> torch.Tensor:
        return fairseq_sinusoid_table(length, self.d_model, self.padding_idx, offset)


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
        self.dropout = Dropout(dropout)

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
    if kind == "fairseq":
        return FairseqSinusoidalPositionalEncoding(d_model, max_len, dropout)
    if kind == "learned":
        return LearnedPositionalEncoding(d_model, max_len, dropout)
    raise ValueError(f"positional_encoding: unknown kind {kind!r}, expected sinusoidal, fairseq or learned")
