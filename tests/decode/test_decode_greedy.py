"""Greedy decoding: cached = uncached, batched = one-by-one, <eos> stopping, max_len, attention."""

from __future__ import annotations

import math

import pytest
import torch
from decode_toy_models import TableModel, TinyGRU, TinyTransformer, random_batch, teacher_forced

from attnlab.decode import greedy_decode
from attnlab.decode.search import length_penalty

V = 11
LENS = [7, 3, 5, 1, 7, 2, 6, 4]


def _model(kind: str, seed: int = 0, never_ends: bool = False) -> torch.nn.Module:
    """A random toy model whose outputs end near their source's length (or never, with ``never_ends``)."""
    torch.manual_seed(seed)
    model = TinyTransformer(V, eos_ramp=2.0) if kind == "transformer" else TinyGRU(V, eos_ramp=2.0)
    if never_ends:
        model.eos_ramp = 0.0
        with torch.no_grad():
            model.out.bias[2] = -100.0
    return model


@pytest.fixture(params=["transformer", "gru"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_outputs_end_at_different_steps(kind: str) -> None:
    """Precondition of the other tests: with this eos bias, rows stop at different steps (pruning happens)."""
    src, lens = random_batch(1, LENS, V)
    hyps = greedy_decode(_model(kind), src, lens, max_len=14)
    assert sum(h.ended for h in hyps) >= 4
    assert len({h.num_steps for h in hyps if h.ended}) >= 2


def test_cached_equals_uncached(kind: str) -> None:
    model = _model(kind)
    src, lens = random_batch(1, LENS, V)
    cached = greedy_decode(model, src, lens, max_len=14, return_attention=True)
    uncached = greedy_decode(model, src, lens, max_len=14, return_attention=True, use_cache=False)
    for a, b in zip(cached, uncached, strict=True):
        assert a.tokens == b.tokens
        assert a.ended == b.ended
        assert a.score == pytest.approx(b.score, abs=1e-5)
        torch.testing.assert_close(a.cross_attention, b.cross_attention, atol=1e-5, rtol=0)


def test_batched_equals_one_by_one(kind: str) -> None:
    """Padding and batch neighbours do not change a sentence's result."""
    model = _model(kind)
    src, lens = random_batch(2, LENS, V)
    batched = greedy_decode(model, src, lens, max_len=14, return_attention=True)
    for b, hyp in enumerate(batched):
        n = int(lens[b])
        (alone,) = greedy_decode(model, src[b:b + 1, :n], lens[b:b + 1], max_len=14, return_attention=True)
        assert hyp.tokens == alone.tokens
        assert hyp.score == pytest.approx(alone.score, abs=1e-5)
        torch.testing.assert_close(hyp.cross_attention, alone.cross_attention, atol=1e-5, rtol=0)


def test_scores_match_teacher_forcing_after_pruning(kind: str) -> None:
    """Each row's score is the model's log-prob of its own output, although finished rows were pruned."""
    model = _model(kind)
    src, lens = random_batch(3, LENS, V)
    for b, hyp in enumerate(greedy_decode(model, src, lens, max_len=14)):
        assert 2 not in hyp.tokens and 0 not in hyp.tokens and 1 not in hyp.tokens
        score, _ = teacher_forced(model, src[b:b + 1], int(lens[b]), hyp.tokens, hyp.ended)
        assert hyp.score == pytest.approx(score, abs=1e-4)
        assert hyp.normalized_score == pytest.approx(hyp.score / length_penalty(hyp.num_steps, 1.0))


def test_eos_stops_rows_exactly() -> None:
    """Known distribution: a -> b -> <eos>; decoding stops there and does no further steps."""
    model = TableModel(6, {(): {4: 0.7, 5: 0.3}, (4,): {5: 0.6, 2: 0.4}}, default={2: 0.8, 4: 0.2})
    src, lens = random_batch(0, [3, 5], 6)
    hyps = greedy_decode(model, src, lens, max_len=20)
    for hyp in hyps:
        assert hyp.tokens == [4, 5] and hyp.ended
        assert hyp.score == pytest.approx(math.log(0.7) + math.log(0.6) + math.log(0.8), abs=1e-6)
    assert model.num_steps == 3


@pytest.mark.parametrize("max_len", [1, 5])
def test_max_len_respected(kind: str, max_len: int) -> None:
    model = _model(kind, never_ends=True)
    src, lens = random_batch(4, LENS, V)
    for use_cache in (True, False):
        hyps = greedy_decode(model, src, lens, max_len=max_len, use_cache=use_cache)
        assert all(len(h.tokens) == max_len and not h.ended for h in hyps)
    ending = greedy_decode(_model(kind), src, lens, max_len=max_len)
    assert all(h.num_steps <= max_len for h in ending)


def test_attention_shape_and_rows_sum_to_one(kind: str) -> None:
    model = _model(kind)
    src, lens = random_batch(5, LENS, V)
    for b, hyp in enumerate(greedy_decode(model, src, lens, max_len=14, return_attention=True)):
        assert hyp.cross_attention.shape == (hyp.num_steps, int(lens[b]))
        torch.testing.assert_close(hyp.cross_attention.sum(-1), torch.ones(hyp.num_steps), atol=1e-5, rtol=0)
    assert all(h.cross_attention is None for h in greedy_decode(model, src, lens, max_len=4))


def test_restores_training_mode_and_ignores_dropout() -> None:
    torch.manual_seed(0)
    model = TinyTransformer(V, eos_ramp=2.0)
    model.ff.insert(1, torch.nn.Dropout(0.5))  # dropout would make repeated calls differ
    model.train()
    src, lens = random_batch(6, LENS, V)
    first = greedy_decode(model, src, lens, max_len=10)
    second = greedy_decode(model, src, lens, max_len=10)
    assert model.training
    assert [h.tokens for h in first] == [h.tokens for h in second]
    assert [h.score for h in first] == [h.score for h in second]


def test_rejects_bad_inputs() -> None:
    model = _model("gru")
    src, lens = random_batch(0, [2, 3], V)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, src, lens, max_len=0)
    with pytest.raises(ValueError, match="src_lens"):
        greedy_decode(model, src, lens[:1], max_len=3)
    with pytest.raises(ValueError, match="src must be"):
        greedy_decode(model, src[0], lens, max_len=3)
