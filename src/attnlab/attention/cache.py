"""Key/value cache for incremental (step-by-step) decoding with multi-head attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Projected keys and values of the positions seen so far, per head.

    A self-attention cache (``static=False``) grows by the new positions on every call. A cross-attention
    cache (``static=True``) is filled on the first call with the projected encoder memory and reused
    unchanged afterwards, so the memory is projected once per sentence, not once per step.

    Attributes:
        key: ``(B, H, Tk, Dh)`` or ``None`` before the first call.
        value: ``(B, H, Tk, Dv)`` or ``None``.
    """

    static: bool = False
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None

    @property
    def filled(self) -> bool:
        return self.key is not None

    def __len__(self) -> int:
        return 0 if self.key is None else self.key.shape[2]

    def update(self, key: torch.Tensor | None, value: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Store/append ``key``/``value`` ``(B, H, T, Dh)`` and return everything cached."""
        if self.static and self.filled:
            return self.key, self.value
        if key is None or value is None:
            raise ValueError("KVCache.update: key and value are required until the cache is filled")
        if self.key is None or self.static:
            self.key, self.value = key, value
        else:
            if key.shape[0] != self.key.shape[0]:
                raise ValueError(f"KVCache.update: batch size {key.shape[0]} does not match the cached "
                                 f"{self.key.shape[0]}; reorder the cache first")
            self.key = torch.cat([self.key, key], dim=2)  # (B, H, Tk + T, Dh)
            self.value = torch.cat([self.value, value], dim=2)
        return self.key, self.value

    def reorder(self, index: torch.Tensor) -> KVCache:
        """Keep/reorder batch rows in place (``index``: ``(B',)`` long), e.g. after a beam search step."""
        if self.key is not None:
            self.key = self.key.index_select(0, index)
            self.value = self.value.index_select(0, index)
        return self
