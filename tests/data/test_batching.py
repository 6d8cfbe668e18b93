"""collate padding and BucketedBatches: budget, coverage, seeded shuffling, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.core.errors import CheckpointError, ConfigError, DataError
from attnlab.data.batching import BucketedBatches, ResampledBatches, collate
from attnlab.data.dataset import Example
from attnlab.data.vocab import BOS_ID, EOS_ID, PAD_ID


def make_examples(lengths: list[tuple[int, int]]) -> list[Example]:
    """Examples with source ids 10.. and target ids 20.. + <eos>, of the given (src_len, tgt_len)."""
    return [
        Example(list(range(10, 10 + s)), list(range(20, 20 + t - 1)) + [EOS_ID], index=100 + i)
        for i, (s, t) in enumerate(lengths)
    ]


def test_collate_pads_and_shifts_the_target():
    exs = [Example([5, 6, 7], [8, EOS_ID], 4), Example([9], [10, 11, 12, EOS_ID], 7)]
    batch = collate(exs)
    assert torch.equal(batch.src, torch.tensor([[5, 6, 7], [9, 0, 0]]))
    assert torch.equal(batch.src_lens, torch.tensor([3, 1]))
    assert torch.equal(batch.tgt_in, torch.tensor([[BOS_ID, 8, 0, 0], [BOS_ID, 10, 11, 12]]))
    assert torch.equal(batch.tgt_out, torch.tensor([[8, EOS_ID, 0, 0], [10, 11, 12, EOS_ID]]))
    assert torch.equal(batch.tgt_lens, torch.tensor([2, 4]))
    assert torch.equal(batch.index, torch.tensor([4, 7]))
    assert all(t.dtype == torch.int64 for t in (batch.src, batch.src_lens, batch.tgt_in, batch.tgt_out,
                                                 batch.tgt_lens, batch.index))
    assert batch.num_tgt_tokens == 6
    assert collate(exs, pad_id=-1).src[1, 2].item() == -1


def test_collate_rejects_bad_input():
    with pytest.raises(DataError, match="no examples"):
        collate([])
    with pytest.raises(DataError, match="ending in <eos>"):
        collate([Example([5], [6], 0)])


def test_collate_empty_source_row():
    batch = collate([Example([], [EOS_ID], 0)])
    assert batch.src.shape == (1, 0) and batch.src_lens.tolist() == [0]


def check_batch(batch, by_index: dict[int, Example], pad_id: int = PAD_ID) -> None:
    """Every row equals its example, padded with pad_id; lengths match."""
    for row, idx in enumerate(batch.index.tolist()):
        ex = by_index[idx]
        s, t = len(ex.src_ids), len(ex.tgt_ids)
        assert batch.src_lens[row].item() == s and batch.tgt_lens[row].item() == t
        assert batch.src[row, :s].tolist() == ex.src_ids
        assert batch.tgt_out[row, :t].tolist() == ex.tgt_ids
        assert batch.tgt_in[row, :t].tolist() == [BOS_ID, *ex.tgt_ids[:-1]]
        assert (batch.src[row, s:] == pad_id).all() and (batch.tgt_out[row, t:] == pad_id).all()
        assert (batch.tgt_in[row, t:] == pad_id).all()
    assert batch.src.shape[1] == batch.src_lens.max().item()
    assert batch.tgt_out.shape[1] == batch.tgt_lens.max().item()


LENGTHS = st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(LENGTHS, st.integers(1, 120), st.one_of(st.none(), st.integers(1, 6)), st.booleans(), st.integers(0, 3))
def test_every_example_once_per_epoch_under_the_budget(lengths, budget, max_sentences, shuffle, seed):
    exs = make_examples(lengths)
    by_index = {ex.index: ex for ex in exs}
    batches = BucketedBatches(exs, budget, shuffle=shuffle, seed=seed, max_sentences=max_sentences)
    for epoch in range(2):
        seen: list[int] = []
        count = 0
        for batch in batches:
            count += 1
            rows = batch.index.numel()
            width = max(batch.src.shape[1], batch.tgt_out.shape[1])
            assert rows * width <= budget or rows == 1
            assert max_sentences is None or rows <= max_sentences
            check_batch(batch, by_index)
            seen += batch.index.tolist()
        assert sorted(seen) == sorted(by_index)  # each index exactly once, none dropped
        assert count == len(batches)
        assert batches.epoch == epoch + 1 and batches.position == 0
    assert batches.num_padded_tokens >= batches.num_tokens / 2


def test_batches_are_length_bucketed_and_shuffled_per_epoch():
    lengths = [(s, s) for s in range(1, 41)] * 2
    batches = BucketedBatches(make_examples(lengths), 40, seed=0)
    epoch0 = [b.index.tolist() for b in batches]
    epoch1 = [b.index.tolist() for b in batches]
    assert sorted(map(tuple, epoch0)) == sorted(map(tuple, epoch1))  # same batches...
    assert epoch0 != epoch1  # ...in another order
    spans = sorted((min(lengths[i - 100][0] for i in g), max(lengths[i - 100][0] for i in g)) for g in epoch0)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:], strict=False))  # no overlap
    assert spans[-1] == (40, 40)  # the longest pair shares a batch (2 * 40 <= 40 is false: one each)
    ordered = BucketedBatches(make_examples(lengths), 40, shuffle=False)
    widths = [b.src.shape[1] for b in ordered]
    assert widths == sorted(widths)
    again = BucketedBatches(make_examples(lengths), 40, seed=0)
    assert [b.index.tolist() for b in again] == epoch0  # the seed decides, nothing global
    other = BucketedBatches(make_examples(lengths), 40, seed=1)
    assert [b.index.tolist() for b in other] != epoch0


def _stream(batches: BucketedBatches, num_epochs: int) -> list[list[int]]:
    return [b.index.tolist() for _ in range(num_epochs) for b in batches]


@pytest.mark.parametrize("stop_after", [0, 5, 12, 13, 14, 20, 26, 30])
def test_exact_resume_across_epoch_boundaries(stop_after):
    lengths = [((7 * i) % 13 + 1, (5 * i) % 11 + 1) for i in range(60)]
    full = _stream(BucketedBatches(make_examples(lengths), 48, seed=3), num_epochs=3)
    first = BucketedBatches(make_examples(lengths), 48, seed=3)
    assert len(first) == 13  # stops: start, mid-epoch, around both epoch boundaries, third epoch
    consumed: list[list[int]] = []
    for _ in range(3):  # a training loop that saves and stops after `stop_after` batches
        if len(consumed) == stop_after:
            break
        for batch in first:
            consumed.append(batch.index.tolist())  # "train" on the batch, then maybe stop
            if len(consumed) == stop_after:
                break
    state = json.loads(json.dumps(first.state_dict()))
    assert set(state) == {"epoch", "position", "seed"}
    resumed = BucketedBatches(make_examples(lengths), 48, seed=999)
    resumed.load_state_dict(state)
    rest: list[list[int]] = []
    for _ in range(3 - state["epoch"]):
        rest += [b.index.tolist() for b in resumed]
    assert consumed + rest == full
    assert resumed.state_dict()["seed"] == 3


def test_resume_right_after_the_last_batch_of_an_epoch():
    exs = make_examples([(i % 9 + 1, i % 5 + 1) for i in range(30)])
    batches = BucketedBatches(exs, 20, seed=1)
    full = _stream(BucketedBatches(exs, 20, seed=1), num_epochs=2)
    it = iter(batches)
    first = [next(it).index.tolist() for _ in range(len(batches))]  # stop without finishing the loop
    assert batches.state_dict() == {"epoch": 1, "position": 0, "seed": 1}  # already the next epoch
    resumed = BucketedBatches(exs, 20)
    resumed.load_state_dict(batches.state_dict())
    assert first + [b.index.tolist() for b in resumed] == full


def test_single_overlong_example_forms_its_own_batch():
    batches = BucketedBatches(make_examples([(50, 3), (2, 2), (2, 2)]), 10, shuffle=False)
    groups = [b.index.tolist() for b in batches]
    assert groups == [[101, 102], [100]]
    assert len(batches) == 2 and batches.num_tokens == 50 + 3 + 8


def test_bad_arguments_and_states():
    exs = make_examples([(3, 3)] * 5)
    with pytest.raises(DataError, match="no examples"):
        BucketedBatches([], 10)
    with pytest.raises(ConfigError, match="tokens_per_batch"):
        BucketedBatches(exs, 0)
    with pytest.raises(ConfigError, match="max_sentences"):
        BucketedBatches(exs, 10, max_sentences=0)
    batches = BucketedBatches(exs, 10)
    with pytest.raises(CheckpointError, match="missing keys"):
        batches.load_state_dict({"epoch": 0})
    with pytest.raises(CheckpointError, match="do not fit"):
        batches.load_state_dict({"epoch": 0, "position": 99, "seed": 0})
    with pytest.raises(CheckpointError, match="position must be an int"):
        batches.load_state_dict({"epoch": 0, "position": "1", "seed": 0})


# ------------------------------------------------------------------------------------------- ResampledBatches


class EpochExamples:
    """Examples whose lengths change with the epoch (as a new segmentation's do); counts the calls per epoch."""

    def __init__(self, n: int = 60) -> None:
        self.n, self.calls = n, []

    def __call__(self, epoch: int) -> list[Example]:
        self.calls.append(epoch)
        return make_examples([((7 * i + 3 * epoch) % 13 + 1, (5 * i + epoch * epoch) % 11 + 1)
                              for i in range(self.n)])


def _resampled(seed: int = 3, make: EpochExamples | None = None) -> ResampledBatches:
    return ResampledBatches(make or EpochExamples(), 48, seed=seed)


def test_resampled_epochs_cover_every_example_once_with_that_epochs_examples():
    make = EpochExamples()
    batches = _resampled(make=make)
    sizes = []
    for epoch in range(4):
        expected = make(epoch)
        make.calls.pop()
        seen = []
        for batch in batches:
            seen += batch.index.tolist()
            for row, index in enumerate(batch.index.tolist()):  # this epoch's ids, not another epoch's
                ex = expected[index - 100]
                assert batch.src_lens[row] == len(ex.src_ids) and batch.tgt_lens[row] == len(ex.tgt_ids)
            assert batch.src.shape[0] * max(batch.src.shape[1], batch.tgt_out.shape[1]) <= 48
        assert sorted(seen) == list(range(100, 160))
        sizes.append(len(seen))
    assert make.calls == [0, 1, 2, 3]  # one call per epoch, whatever len() and state_dict() asked meanwhile


def test_resampled_batch_order_matches_bucketed_batches_of_the_same_examples():
    make = EpochExamples()
    batches = _resampled(seed=5, make=make)
    for epoch in range(2):
        reference = BucketedBatches(make(epoch), 48, seed=5)
        reference.epoch = epoch
        assert [b.index.tolist() for b in batches] == [b.index.tolist() for b in reference]


@pytest.mark.parametrize("stop_after", [0, 5, 12, 13, 14, 20, 26, 30, 39])
def test_resampled_exact_resume_across_epochs(stop_after):
    uninterrupted = _resampled()
    full = [b.index.tolist() for _ in range(3) for b in uninterrupted]
    first = _resampled()
    consumed: list[list[int]] = []
    for _ in range(3):
        if len(consumed) == stop_after:
            break
        for batch in first:
            consumed.append(batch.index.tolist())
            if len(consumed) == stop_after:
                break
    state = json.loads(json.dumps(first.state_dict()))
    make = EpochExamples()
    resumed = _resampled(seed=999, make=make)
    resumed.load_state_dict(state)
    rest: list[list[int]] = []
    for _ in range(3 - state["epoch"]):
        rest += [b.index.tolist() for b in resumed]
    assert consumed + rest == full
    assert resumed.state_dict()["seed"] == 3 and make.calls == list(range(state["epoch"], 3))


def test_resampled_state_right_after_an_epochs_last_batch():
    batches = _resampled()
    it = iter(batches)
    count = len(batches)
    for _ in range(count):
        next(it)
    assert batches.state_dict() == {"epoch": 1, "position": 0, "seed": 3}


def test_resampled_bad_states():
    batches = _resampled()
    with pytest.raises(CheckpointError, match="ResampledBatches.load_state_dict: missing keys"):
        batches.load_state_dict({"epoch": 0})
    with pytest.raises(CheckpointError, match="position=99 does not fit the .* batches of epoch 1"):
        batches.load_state_dict({"epoch": 1, "position": 99, "seed": 0})
    with pytest.raises(CheckpointError, match="epoch must be an int"):
        batches.load_state_dict({"epoch": 1.0, "position": 0, "seed": 0})
    with pytest.raises(CheckpointError, match="negative"):
        batches.load_state_dict({"epoch": -1, "position": 0, "seed": 0})
    with pytest.raises(ConfigError, match="tokens_per_batch"):
        ResampledBatches(EpochExamples(), 0)
    assert batches.state_dict() == {"epoch": 0, "position": 0, "seed": 3}  # refused states changed nothing
