"""Shared helpers for the model tests (imported by name; conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import torch


def padded_batch(lengths: list[int], vocab: int, *, generator: torch.Generator,
                 total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, T)`` ids in ``[4, vocab)`` (0 = padding) and their ``(B,)`` lengths."""
    total = max(lengths) if total is None else total
    ids = torch.randint(4, vocab, (len(lengths), total), generator=generator)
    lens = torch.tensor(lengths)
    ids[torch.arange(total).unsqueeze(0) >= lens.unsqueeze(1)] = 0
    return ids, lens


def quadrant_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, 8, 8)`` noise images with a bright 2x2 square in one quadrant; label = quadrant (0..3)."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = 0.3 * torch.randn(n, 1, 8, 8, generator=generator)
    for i, q in enumerate(labels.tolist()):
        row, col = divmod(q, 2)
        dr, dc = torch.randint(0, 3, (2,), generator=generator).tolist()
        images[i, 0, 4 * row + dr:4 * row + dr + 2, 4 * col + dc:4 * col + dc + 2] += 2.0
    return images, labels


def marker_sequences(n: int, generator: torch.Generator, vocab: int = 12,
                     max_len: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded random token sequences; label 1 iff the marker token 5 occurs among the real tokens."""
    lens = torch.randint(3, max_len + 1, (n,), generator=generator)
    tokens = torch.randint(6, vocab, (n, max_len), generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    for i in range(n):
        if labels[i]:
            tokens[i, torch.randint(0, int(lens[i]), (1,), generator=generator)] = 5
    tokens[torch.arange(max_len).unsqueeze(0) >= lens.unsqueeze(1)] = 0
    return tokens, lens, labels
