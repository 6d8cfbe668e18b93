"""Beam search: width 1 = greedy, exhaustive optimum, beam beats greedy, n-best, batching, attention."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from decode_toy_models import CopyModel, TableModel, TinyGRU, TinyTransformer, random_batch, teacher_forced

from attnlab.decode import beam_search, greedy_decode
from attnlab.decode.search import length_penalty

V = 11
LENS = [7, 3, 5, 1, 7, 2, 6, 4]


def _model(kind: str, seed: int = 0, vocab_size: int = V) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = TinyTransformer if kind == "transformer" else TinyGRU
    return cls(vocab_size, eos_ramp=2.0)


@pytest.fixture(params=["transformer", "gru"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize(("alpha", "early_stopping"), [(0.0, False), (0.0, True), (1.0, True)])
def test_beam_size_one_equals_greedy(kind: str, alpha: float, early_stopping: bool) -> None:
    model = _model(kind)
    src, lens = random_batch(11, LENS, V)
    greedy = greedy_decode(model, src, lens, max_len=14, length_penalty=alpha, return_attention=True)
    beam = beam_search(model, src, lens, beam_size=1, max_len=14, length_penalty=alpha,
                       early_stopping=early_stopping, return_attention=True)
    assert len({h.num_steps for h in greedy}) >= 3  # rows finish at different steps
    for g, (b,) in zip(greedy, beam, strict=True):
        assert b.tokens == g.tokens
        assert b.ended == g.ended
        assert b.score == pytest.approx(g.score, abs=1e-6)
        assert b.normalized_score == pytest.approx(g.normalized_score, abs=1e-6)
        torch.testing.assert_close(b.cross_attention, g.cross_attention, atol=1e-6, rtol=0)


def _all_hypotheses(model: torch.nn.Module, src: torch.Tensor, n: int, max_len: int, vocab_size: int,
                    alpha: float) -> list[tuple[float, tuple[int, ...], bool]]:
    """Every possible output (ending in <eos>, or cut at ``max_len``), with its normalized score."""
    words = [t for t in range(vocab_size) if t not in (0, 1, 2)]
    out = []
    for length in range(max_len + 1):
        for toks in itertools.product(words, repeat=length):
            endings = [True, False] if length == max_len else [True]
            for ended in endings:
                if ended and length + 1 > max_len:
                    continue
                score, _ = teacher_forced(model, src, n, list(toks), ended)
                out.append((score / length_penalty(length + int(ended), alpha), toks, ended))
    return sorted(out, key=lambda x: -x[0])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_optimum(kind: str, alpha: float) -> None:
    """With a beam wider than every prefix set nothing is pruned: the n-best are the true n-best."""
    vocab, max_len = 6, 3  # 3 word tokens (incl. <unk>) + <eos>: at most 9 * 4 = 36 candidates per step
    model = _model(kind, seed=3, vocab_size=vocab)
    model.eos_ramp = 0.0
    src, lens = random_batch(12, [4, 2, 3], vocab)
    results = beam_search(model, src, lens, beam_size=36, max_len=max_len, length_penalty=alpha, n_best=5)
    for b, nbest in enumerate(results):
        truth = _all_hypotheses(model, src[b:b + 1], int(lens[b]), max_len, vocab, alpha)[:5]
        assert [(tuple(h.tokens), h.ended) for h in nbest] == [(t, e) for _, t, e in truth]
        assert [h.normalized_score for h in nbest] == pytest.approx([s for s, _, _ in truth], abs=1e-5)


def test_beam_beats_greedy_on_a_constructed_case() -> None:
    """P(a)=.6, P(b)=.4; after a: a .4, <eos> .3; after b: <eos> .9.

    Greedy takes a, a, <eos> (p = .24); beam 2 keeps b alive and finds b <eos> (p = .36).
    """
    table = {(): {4: 0.6, 5: 0.4}, (4,): {2: 0.3, 4: 0.4, 5: 0.3}, (5,): {2: 0.9, 4: 0.1}}
    model = TableModel(6, table, default={2: 1.0})
    src, lens = random_batch(0, [3, 2], 6)
    greedy = greedy_decode(model, src, lens, max_len=5, length_penalty=0.0)
    beam = beam_search(model, src, lens, beam_size=2, max_len=5, length_penalty=0.0, n_best=2)
    for g, nbest in zip(greedy, beam, strict=True):
        assert g.tokens == [4, 4] and g.score == pytest.approx(math.log(0.24), abs=1e-6)
        assert [h.tokens for h in nbest] == [[5], [4, 4]]
        assert [h.score for h in nbest] == pytest.approx([math.log(0.36), math.log(0.24)], abs=1e-6)


def test_length_penalty_changes_the_winner() -> None:
    """Short: <eos> right away (p=.5). Long: a a a <eos> (p=.5*.8^3 = .256): higher per-token probability."""
    table = {(): {2: 0.5, 4: 0.5}, (4,): {4: 0.8, 2: 0.2}, (4, 4): {4: 0.8, 2: 0.2}, (4, 4, 4): {2: 0.8, 4: 0.2}}
    model = TableModel(6, table, default={2: 1.0})
    src, lens = random_batch(0, [2], 6)
    (raw,) = beam_search(model, src, lens, beam_size=2, max_len=8, length_penalty=0.0)
    (norm,) = beam_search(model, src, lens, beam_size=2, max_len=8, length_penalty=2.0)
    assert raw[0].tokens == [] and raw[0].score == pytest.approx(math.log(0.5))
    assert norm[0].tokens == [4, 4, 4]
    assert norm[0].normalized_score == pytest.approx(math.log(0.5 * 0.8 ** 3) / ((5 + 4) / 6) ** 2.0, abs=1e-6)


def test_nbest_sorted_distinct_and_consistent_with_teacher_forcing(kind: str) -> None:
    """Scores and attention tracked through beam reorders equal a teacher-forced pass over each hypothesis."""
    model = _model(kind)
    src, lens = random_batch(13, LENS, V)
    results = beam_search(model, src, lens, beam_size=4, max_len=14, n_best=4, length_penalty=0.6,
                          return_attention=True)
    for b, nbest in enumerate(results):
        n = int(lens[b])
        assert len(nbest) == 4
        norms = [h.normalized_score for h in nbest]
        assert norms == sorted(norms, reverse=True)
        assert len({(tuple(h.tokens), h.ended) for h in nbest}) == 4
        for h in nbest:
            assert h.num_steps <= 14 and 2 not in h.tokens
            score, cross = teacher_forced(model, src[b:b + 1], n, h.tokens, h.ended)
            assert h.score == pytest.approx(score, abs=1e-4)
            assert h.normalized_score == pytest.approx(h.score / length_penalty(h.num_steps, 0.6), abs=1e-6)
            assert h.cross_attention.shape == (h.num_steps, n)
            torch.testing.assert_close(h.cross_attention, cross, atol=1e-5, rtol=0)
            torch.testing.assert_close(h.cross_attention.sum(-1), torch.ones(h.num_steps), atol=1e-5, rtol=0)


def test_batched_equals_one_by_one(kind: str) -> None:
    model = _model(kind)
    src, lens = random_batch(14, LENS, V)
    batched = beam_search(model, src, lens, beam_size=3, max_len=14, n_best=3)
    for b, nbest in enumerate(batched):
        n = int(lens[b])
        (alone,) = beam_search(model, src[b:b + 1, :n], lens[b:b + 1], beam_size=3, max_len=14, n_best=3)
        assert [h.tokens for h in nbest] == [h.tokens for h in alone]
        assert [h.score for h in nbest] == pytest.approx([h.score for h in alone], abs=1e-5)


@pytest.mark.parametrize("max_len", [1, 4])
def test_max_len_respected(kind: str, max_len: int) -> None:
    model = _model(kind)
    with torch.no_grad():
        model.out.bias[2] = -100.0
    model.eos_ramp = 0.0
    src, lens = random_batch(15, LENS, V)
    for nbest in beam_search(model, src, lens, beam_size=3, max_len=max_len, n_best=3):
        assert len(nbest) == 3
        assert all(len(h.tokens) == max_len and not h.ended for h in nbest)


def test_stops_as_soon_as_finished_hypotheses_cannot_be_beaten() -> None:
    """P(<eos>)=.9 at every step: the first <eos> (log .9) beats every live beam (<= log .1) at alpha 0."""
    model = TableModel(6, {}, default={2: 0.9, 4: 0.1})
    src, lens = random_batch(0, [2, 3], 6)
    (first, _) = beam_search(model, src, lens, beam_size=3, max_len=50, length_penalty=0.0)
    assert first[0].tokens == [] and model.num_steps == 1
    model.num_steps = 0
    beam_search(model, src, lens, beam_size=3, max_len=50, length_penalty=0.0, early_stopping=True)
    assert model.num_steps == 3  # one <eos> per step until 3 hypotheses finished
    model.num_steps = 0
    # alpha = 2: a live beam might still win once divided by lp(50) = (55/6)^2, so search goes on until
    # (t + 1) * log(.1) / lp(50) < log(.9), i.e. 4 steps.
    beam_search(model, src, lens, beam_size=3, max_len=50, length_penalty=2.0)
    assert model.num_steps == 4


def test_finished_sentences_are_pruned() -> None:
    """A copy model stops a sentence of length n after n + 1 steps; later steps see only the others' rows."""
    seen: list[int] = []

    class Recording(CopyModel):
        def decode_step(self, tokens, state, *, need_weights=False):
            seen.append(tokens.shape[0])
            return super().decode_step(tokens, state, need_weights=need_weights)

    src, lens = random_batch(0, [1, 3], V)
    results = beam_search(Recording(V), src, lens, beam_size=2, max_len=10, length_penalty=0.0)
    assert seen == [4, 4, 2, 2]  # 2 sentences x 2 beams, then 1 x 2 once the 1-token sentence is done
    assert [r[0].tokens for r in results] == [src[0, :1].tolist(), src[1, :3].tolist()]


def test_rejects_bad_arguments() -> None:
    model = _model("gru")
    src, lens = random_batch(0, [2, 3], V)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, src, lens, beam_size=2, max_len=5, n_best=3)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, lens, beam_size=0, max_len=5)
    with pytest.raises(ValueError, match="max_len"):
        beam_search(model, src, lens, beam_size=2, max_len=0)


def test_empty_batch() -> None:
    model = _model("transformer")
    empty = torch.zeros(0, 3, dtype=torch.long)
    lens = torch.zeros(0, dtype=torch.long)
    assert beam_search(model, empty, lens, beam_size=2, max_len=5) == []
    assert greedy_decode(model, empty, lens, max_len=5) == []


def test_step_log_probs_in_place_equals_a_new_tensor() -> None:
    from attnlab.decode.search import step_log_probs

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(3)) * 5
    expected = step_log_probs(logits.clone(), bos_id=1)
    buffer = logits.clone()
    got = step_log_probs(buffer, bos_id=1, inplace=True)
    assert got.data_ptr() == buffer.data_ptr()
    assert torch.equal(got, expected)
    assert torch.isinf(got[:, :2]).all() and torch.isfinite(got[:, 2:]).all()
    half = step_log_probs(logits.bfloat16(), bos_id=1, inplace=True)  # not float32: a new float32 tensor
    assert half.dtype == torch.float32
    steps = torch.randn(6, 4, 50, generator=torch.Generator().manual_seed(4))  # the last step of a teacher-forced pass
    strided, before = steps[:, -1], steps[:, -1].clone()
    got = step_log_probs(strided, bos_id=1, inplace=True)
    assert torch.equal(got, step_log_probs(before, bos_id=1))
    assert torch.equal(strided, before) and got.data_ptr() != strided.data_ptr()
