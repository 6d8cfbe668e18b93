"""Padding and length-bucketed batching under a token budget, with seeded shuffling and exact resume.

Legend: ``B`` batch size, ``Ts`` source length, ``Tt`` target length (longest in the batch).

Batching never drops or truncates an example: every example appears in exactly one batch per epoch.
Truncation to a maximum length happens earlier, in :func:`attnlab.data.dataset.encode_pairs`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from attnlab.core.errors import CheckpointError, ConfigError, DataError, short_repr
from attnlab.core.types import Batch, LabelBatch
from attnlab.data.dataset import Example
from attnlab.data.vocab import BOS_ID, EOS_ID, PAD_ID


def _pad(rows: list[list[int]], width: int, pad_id: int) -> torch.Tensor:
    return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.int64).view(
        len(rows), width
    )  # (B, width); view keeps the shape when width == 0


def collate(examples: Sequence[Example], pad_id: int = PAD_ID) -> Batch:
    """Pad examples into one :class:`~attnlab.core.types.Batch` (all tensors int64).

    Returns a Batch with ``src`` ``(B, Ts)``, ``src_lens`` ``(B,)``, ``tgt_in`` ``(B, Tt)`` =
    ``<bos>`` + target without its final ``<eos>``, ``tgt_out`` ``(B, Tt)`` = target ids (ending in
    ``<eos>``), ``tgt_lens`` ``(B,)`` = number of target ids, and ``index`` ``(B,)``. Positions past a
    row's length hold ``pad_id``.
    """
    if not examples:
        raise DataError("collate: got no examples; a batch needs at least one")
    for ex in examples:
        if not ex.tgt_ids or ex.tgt_ids[-1] != EOS_ID:
            raise DataError(f"collate: example {ex.index} has target {ex.tgt_ids[-5:]!r}..., expected ids ending "
                            f"in <eos> (id {EOS_ID}); build examples with encode_pairs")
    src_rows = [list(ex.src_ids) for ex in examples]
    tgt_out_rows = [list(ex.tgt_ids) for ex in examples]
    tgt_in_rows = [[BOS_ID, *ex.tgt_ids[:-1]] for ex in examples]
    ts = max(len(r) for r in src_rows)
    tt = max(len(r) for r in tgt_out_rows)
    return Batch(
        src=_pad(src_rows, ts, pad_id),  # (B, Ts)
        src_lens=torch.tensor([len(r) for r in src_rows], dtype=torch.int64),  # (B,)
        tgt_in=_pad(tgt_in_rows, tt, pad_id),  # (B, Tt)
        tgt_out=_pad(tgt_out_rows, tt, pad_id),  # (B, Tt)
        tgt_lens=torch.tensor([len(r) for r in tgt_out_rows], dtype=torch.int64),  # (B,)
        index=torch.tensor([ex.index for ex in examples], dtype=torch.int64),  # (B,)
    )


def collate_labels(examples: Sequence[Example], pad_id: int = PAD_ID) -> LabelBatch:
    """Pad classification examples (``label`` set) into one :class:`~attnlab.core.types.LabelBatch` (int64)."""
    if not examples:
        raise DataError("collate_labels: got no examples; a batch needs at least one")
    if any(ex.label is None for ex in examples):
        raise DataError("collate_labels: an example has no label; build examples with encode_labelled")
    rows = [list(ex.src_ids) for ex in examples]
    return LabelBatch(
        tokens=_pad(rows, max(len(r) for r in rows), pad_id),  # (B, T)
        valid_lens=torch.tensor([len(r) for r in rows], dtype=torch.int64),  # (B,)
        labels=torch.tensor([ex.label for ex in examples], dtype=torch.int64),  # (B,)
        index=torch.tensor([ex.index for ex in examples], dtype=torch.int64),  # (B,)
    )


def _check_int(name: str, value: Any, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        expected = "an int" if minimum is None else f"an int >= {minimum}"
        raise ConfigError(f"BucketedBatches: {name} must be {expected}, got {value!r}")


def _read_state(owner: str, state: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(epoch, position, seed)`` of a saved batch-stream state, checked to be ints."""
    missing = {"epoch", "position", "seed"} - set(state)
    if missing:
        raise CheckpointError(f"{owner}.load_state_dict: missing keys {sorted(missing)} in {short_repr(dict(state))}")
    epoch, position, seed = state["epoch"], state["position"], state["seed"]
    for name, value in (("epoch", epoch), ("position", position), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(f"{owner}.load_state_dict: {name} must be an int, got {short_repr(value)}")
    return epoch, position, seed


class BucketedBatches:
    """Length-bucketed batches under a token budget, reshuffled each epoch, resumable exactly.

    Batches are formed once: examples are sorted by length (``max(src_len, tgt_len)``) and packed
    greedily so that ``B * max(Ts, Tt) <= tokens_per_batch`` (padded tokens, the larger side counts) and
    ``B <= max_sentences``; an example that alone exceeds the budget forms its own batch. Each epoch
    visits every batch once, in an order shuffled by a generator seeded from ``(seed, epoch)`` (no
    global RNG); with ``shuffle=False`` batches come shortest first.

    Iterating yields collated batches (``collate_fn``: :func:`collate` for pairs, :func:`collate_labels` for
    classification): the *remaining* batches of the
    current epoch, from the current position, after which ``epoch`` advances. So::

        for epoch in range(num_epochs):
            for batch in batches:
                ...

    works, and :meth:`state_dict` / :meth:`load_state_dict` (``{"epoch", "position", "seed"}``,
    ``position`` = batches already yielded this epoch) let a fresh object continue with exactly the
    batches an uninterrupted run would have produced. Only one iterator should be active at a time.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokens_per_batch: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        max_sentences: int | None = None,
        pad_id: int = PAD_ID,
        collate_fn: Callable[[Sequence[Example], int], Any] = collate,
    ) -> None:
        if not examples:
            raise DataError("BucketedBatches: got no examples; check the data file and the max_len filter")
        _check_int("tokens_per_batch", tokens_per_batch, 1)
        _check_int("seed", seed, None)
        if max_sentences is not None:
            _check_int("max_sentences", max_sentences, 1)
        self._examples = list(examples)
        self.tokens_per_batch = tokens_per_batch
        self.max_sentences = max_sentences
        self.shuffle = shuffle
        self.seed = seed
        self.pad_id = pad_id
        self.collate_fn = collate_fn
        self.epoch = 0
        self.position = 0
        self._groups = self._pack()

    @staticmethod
    def _size(ex: Example) -> int:
        return max(len(ex.src_ids), len(ex.tgt_ids), 1)

    def _pack(self) -> list[list[int]]:
        """Positions (into the example list) of each batch, shortest batches first."""
        exs = self._examples
        order = sorted(range(len(exs)), key=lambda i: (self._size(exs[i]), len(exs[i].src_ids), i))
        groups: list[list[int]] = []
        current: list[int] = []
        width = 0
        for i in order:
            new_width = max(width, self._size(exs[i]))
            full = self.max_sentences is not None and len(current) >= self.max_sentences
            if current and (full or (len(current) + 1) * new_width > self.tokens_per_batch):
                groups.append(current)
                current, new_width = [], self._size(exs[i])
            current.append(i)
            width = new_width
        groups.append(current)
        return groups

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self._groups)))
        if self.shuffle:
            # A string seed goes through SHA-512 in random.seed: stable across runs and platforms.
            random.Random(f"attnlab.BucketedBatches:{self.seed}:{epoch}").shuffle(order)
        return order

    def __iter__(self) -> Iterator[Batch]:
        if self.position >= len(self._groups):  # stopped right after an epoch's last batch
            self.epoch += 1
            self.position = 0
        order = self._epoch_order(self.epoch)
        while self.position < len(order):
            group = self._groups[order[self.position]]
            self.position += 1
            yield self.collate_fn([self._examples[i] for i in group], self.pad_id)
        self.epoch += 1
        self.position = 0

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return len(self._groups)

    @property
    def num_examples(self) -> int:
        return len(self._examples)

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) source plus target tokens in one epoch."""
        return sum(len(ex.src_ids) + len(ex.tgt_ids) for ex in self._examples)

    @property
    def num_padded_tokens(self) -> int:
        """Sum over batches of ``B * max(Ts, Tt)``: the quantity the token budget bounds."""
        return sum(len(g) * max(self._size(self._examples[i]) for i in g) for g in self._groups)

    def state_dict(self) -> dict[str, int]:
        """JSON-ready position in the batch stream: ``{"epoch", "position", "seed"}``.

        ``position`` counts the batches of ``epoch`` already yielded. Once the last batch of an epoch
        has been yielded the state already reads ``(epoch + 1, 0)``, even before the loop over the
        epoch ends, so a run stopped right there resumes at the start of the next epoch.
        """
        if self.position >= len(self._groups):
            return {"epoch": self.epoch + 1, "position": 0, "seed": self.seed}
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the saved seed replaces this object's seed)."""
        epoch, position, seed = _read_state("BucketedBatches", state)
        if epoch < 0 or not 0 <= position <= len(self._groups):
            raise CheckpointError(
                f"BucketedBatches.load_state_dict: epoch={epoch}, position={position} do not fit {len(self)} "
                "batches per epoch; the data or the batching settings differ from the saved run"
            )
        self.epoch, self.position, self.seed = epoch, position, seed


class ResampledBatches:
    """Length-bucketed batches of examples made afresh every epoch (e.g. a new subword segmentation), resumable.

    ``make_examples(epoch)`` returns that epoch's examples; it must depend on the epoch alone (every data-parallel
    rank and every resumed run calls it for the same epoch and must get the same list). The examples are packed
    and ordered as :class:`BucketedBatches` does, with the same seed and epoch, so the number of batches may vary
    from one epoch to the next. ``__len__`` is the current epoch's count. :meth:`state_dict` /
    :meth:`load_state_dict` behave as :class:`BucketedBatches`': a fresh object continues with exactly the batches
    an uninterrupted run would have produced.
    """

    def __init__(
        self,
        make_examples: Callable[[int], Sequence[Example]],
        tokens_per_batch: int,
        *,
        seed: int = 0,
        max_sentences: int | None = None,
        pad_id: int = PAD_ID,
        collate_fn: Callable[[Sequence[Example], int], Any] = collate,
    ) -> None:
        _check_int("tokens_per_batch", tokens_per_batch, 1)
        _check_int("seed", seed, None)
        self._make = make_examples
        self._options = {"tokens_per_batch": tokens_per_batch, "max_sentences": max_sentences, "pad_id": pad_id,
                         "collate_fn": collate_fn}
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._current: tuple[int, int, BucketedBatches] | None = None  # (epoch, seed, its batches)

    def _batches(self, epoch: int) -> BucketedBatches:
        """The packed batches of ``epoch`` (made once per epoch)."""
        if self._current is None or self._current[:2] != (epoch, self.seed):
            self._current = (epoch, self.seed, BucketedBatches(self._make(epoch), seed=self.seed, **self._options))
        return self._current[2]

    def __iter__(self) -> Iterator[Any]:
        if self.position and self.position >= len(self._batches(self.epoch)):  # stopped right after its last batch
            self.epoch += 1
            self.position = 0
        inner = self._batches(self.epoch)
        inner.epoch, inner.position = self.epoch, self.position
        for batch in inner:
            self.position = inner.position
            yield batch
        self.epoch += 1
        self.position = 0

    def __len__(self) -> int:
        """Number of batches in the current epoch."""
        return len(self._batches(self.epoch))

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position", "seed"}`` as :meth:`BucketedBatches.state_dict`."""
        if self.position and self.position >= len(self._batches(self.epoch)):  # (an epoch is made only when used)
            return {"epoch": self.epoch + 1, "position": 0, "seed": self.seed}
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the saved seed replaces this object's seed)."""
        epoch, position, seed = _read_state("ResampledBatches", state)
        if epoch < 0:
            raise CheckpointError(f"ResampledBatches.load_state_dict: epoch={epoch} is negative")
        if position < 0:
            raise CheckpointError(f"ResampledBatches.load_state_dict: position={position} is negative")
        previous, self.seed = self.seed, seed
        count = len(self._batches(epoch)) if position else 0  # position 0 fits any epoch: nothing to make yet
        if position > count:
            self.seed = previous
            raise CheckpointError(
                f"ResampledBatches.load_state_dict: position={position} does not fit the {count} batches of epoch "
                f"{epoch}; the data or the batching settings differ from the saved run")
        self.epoch, self.position = epoch, position
