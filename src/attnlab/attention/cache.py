"""Key/value cache for incremental (step-by-step) decoding with multi-head attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnlab.attention.functional import zero_unreachable
from attnlab.attention.masks import lengths_to_mask

_GROW = 16
"""Positions a growing cache adds beyond what a call needs, at least (see :meth:`KVCache._append`)."""


@dataclass
class KVCache:
    """Projected keys and values of the positions seen so far, per head.

    A self-attention cache (``static=False``) grows by the new positions on every call. A cross-attention
    cache (``static=True``) is filled on the first call with the projected encoder memory and reused
    unchanged afterwards, so the memory is projected once per sentence, not once per step.

    A growing cache writes into preallocated buffers (outside autograd): appending one step copies that step
    only, not every earlier one as ``torch.cat`` would. ``key``/``value`` are views of the filled part.

    Attributes:
        key: ``(B, H, Tk, Dh)`` or ``None`` before the first call.
        value: ``(B, H, Tk, Dv)`` or ``None``.
        zeroed: static caches: ``(B, Tk)`` boolean, the keys whose key and value rows are known to be zero
            (:meth:`without_unreachable`), or ``None``.
    """

    static: bool = False
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    zeroed: torch.Tensor | None = None
    _key_buffer: torch.Tensor | None = None  # (B, H, capacity, Dh): growing caches outside autograd
    _value_buffer: torch.Tensor | None = None
    _padding: tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool] | None = None  # see padding_mask

    def padding_mask(self, valid_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """A filled static cache over a padded memory, for one-query steps: ``(mask, key, value, rows_ok)`` with
        ``mask`` the ``(B, 1, 1, Tk)`` key-padding mask of ``valid_lens`` ``(B,)``, the keys and values it leaves
        unreachable zeroed (:meth:`without_unreachable`) and ``rows_ok`` whether every row may attend some key.

        Built at the first step and kept while the same ``valid_lens`` tensor comes back with the same values
        (every step of a decoder over one batch of sources), so a step costs one comparison of ``B`` lengths instead
        of building the mask and comparing it, ``(B, Tk)``, with the keys zeroed before: the work is done once per
        sentence, not once per step. :meth:`reorder` drops it.
        """
        kept = self._padding
        if kept is not None and kept[0] is valid_lens and torch.equal(kept[1], valid_lens):
            return kept[2], self.key, self.value, kept[3]
        mask = lengths_to_mask(valid_lens, len(self), 4)  # (B, 1, 1, Tk)
        key, value = self.without_unreachable(mask)
        rows_ok = bool((valid_lens > 0).all())
        self._padding = (valid_lens, valid_lens.clone(), mask, rows_ok)  # the clone: in-place writes are noticed
        return mask, key, value, rows_ok

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
            self._key_buffer = self._value_buffer = None
            self._padding = None
        else:
            if key.shape[0] != self.key.shape[0]:
                raise ValueError(f"KVCache.update: batch size {key.shape[0]} does not match the cached "
                                 f"{self.key.shape[0]}; reorder the cache first")
            self._append(key, value)
        return self.key, self.value

    def _append(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Append ``(B, H, T, Dh)`` after the cached positions: in place in the buffers, or by ``torch.cat``.

        Under autograd the cache concatenates: an in-place write would change a tensor saved for the backward pass.
        """
        if torch.is_grad_enabled() and (key.requires_grad or value.requires_grad or self.key.requires_grad):
            self.key = torch.cat([self.key, key], dim=2)  # (B, H, Tk + T, Dh)
            self.value = torch.cat([self.value, value], dim=2)
            self._key_buffer = self._value_buffer = None
            return
        old, new = self.key.shape[2], key.shape[2]
        buffer = self._key_buffer
        if buffer is None or buffer.shape[2] < old + new or buffer.dtype != key.dtype:
            capacity = old + new + max(_GROW, old)  # doubling: the copies into new buffers cost O(1) per step
            self._key_buffer = self._grown(self.key, capacity)
            self._value_buffer = self._grown(self.value, capacity)
        self._key_buffer[:, :, old:old + new] = key
        self._value_buffer[:, :, old:old + new] = value
        self.key = self._key_buffer[:, :, :old + new]  # (B, H, Tk + T, Dh)
        self.value = self._value_buffer[:, :, :old + new]

    def next_slot(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Room for one more position, for a kernel that writes it: ``(key_buffer, value_buffer, T)`` with the
        buffers ``(B, H, capacity, Dh)`` (``capacity > T``) holding the ``T`` cached positions, ``key``/``value``
        already the views of ``T + 1`` positions; the caller fills position ``T`` of both buffers. A growing cache
        outside autograd only, filled before."""
        if self.static or self.key is None or self.value is None:
            raise ValueError("KVCache.next_slot: needs a growing cache that holds earlier positions")
        old, buffer = self.key.shape[2], self._key_buffer
        if buffer is None or self._value_buffer is None or buffer.shape[2] < old + 1 or \
                not _views_of(self.key, buffer) or not _views_of(self.value, self._value_buffer):
            capacity = old + 1 + max(_GROW, old)
            self._key_buffer = self._grown(self.key, capacity)
            self._value_buffer = self._grown(self.value, capacity)
        self.key = self._key_buffer[:, :, :old + 1]  # (B, H, T + 1, Dh)
        self.value = self._value_buffer[:, :, :old + 1]
        return self._key_buffer, self._value_buffer, old

    @staticmethod
    def _grown(cached: torch.Tensor, capacity: int) -> torch.Tensor:
        buffer = cached.new_empty(cached.shape[0], cached.shape[1], capacity, cached.shape[3])  # (B, H, cap, Dh)
        buffer[:, :, :cached.shape[2]] = cached
        return buffer

    @staticmethod
    def _moved(buffer: torch.Tensor, filled: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A buffer of the same capacity holding rows ``index`` of ``filled`` (the unused capacity is not copied)."""
        new = buffer.new_empty(index.shape[0], *buffer.shape[1:])  # (B', H, capacity, Dh)
        view = new[:, :, :filled.shape[2]]
        torch.index_select(filled, 0, index, out=view)  # written straight into the view: one copy
        return new, view

    def without_unreachable(self, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys and values with every key no query may reach under ``mask`` set to zero.

        :func:`~attnlab.attention.functional.zero_unreachable` of ``key``/``value``, done once for a static cache:
        its zeroed keys are stored (``zeroed``), and a later call whose mask leaves the same keys unreachable (every
        step of a decoder attending to one padded source) costs a comparison of two ``(B, Tk)`` boolean tensors
        instead of two masked copies of the cache. ``mask``: boolean, broadcastable to ``(B, H, Tq, Tk)``.

        Raises:
            ValueError: a static cache was zeroed for keys that ``mask`` now lets a query reach (its values are
                lost); a cross-attention cache must see the same source padding at every step.
        """
        if self.key is None:
            raise ValueError("KVCache.without_unreachable: the cache is empty")
        if mask is None:
            return self.key, self.value
        if not self.static or mask.dim() != 4 or mask.shape[1] != 1:  # per-head masks: no bookkeeping, just zero
            return zero_unreachable(self.key, self.value, mask)
        batch, num_keys = self.key.shape[0], self.key.shape[2]
        unreachable = ~mask.any(dim=-2)[:, 0].expand(batch, num_keys)  # (B, Tk)
        if self.zeroed is not None:
            if torch.equal(unreachable, self.zeroed):
                return self.key, self.value
            if bool((self.zeroed & ~unreachable).any()):
                raise ValueError("KVCache.without_unreachable: this static cache zeroed keys that the mask now lets a "
                                 "query attend to; a cross-attention cache needs the same source lengths every step")
        self.key, self.value = zero_unreachable(self.key, self.value, mask)
        self.zeroed = unreachable.clone()
        return self.key, self.value

    def reorder(self, index: torch.Tensor) -> KVCache:
        """Keep/reorder batch rows in place (``index``: ``(B',)`` long), e.g. after a beam search step."""
        if self.key is None:
            return self
        if self._key_buffer is not None:  # the filled part moves into new buffers: later steps keep writing in place
            self._key_buffer, self.key = self._moved(self._key_buffer, self.key, index)
            self._value_buffer, self.value = self._moved(self._value_buffer, self.value, index)
        else:
            self.key = self.key.index_select(0, index)
            self.value = self.value.index_select(0, index)
        if self.zeroed is not None:
            self.zeroed = self.zeroed.index_select(0, index)
        self._padding = None
        return self


def _views_of(cached: torch.Tensor, buffer: torch.Tensor) -> bool:
    """Whether ``cached`` ``(B, H, T, Dh)`` is the first ``T`` positions of ``buffer`` ``(B, H, capacity, Dh)``."""
    return (cached.data_ptr() == buffer.data_ptr() and cached.dtype == buffer.dtype
            and cached.stride() == buffer.stride() and cached.shape[:2] == buffer.shape[:2]
            and cached.shape[3] == buffer.shape[3])
