"""Decoding equivalences on attnlab's own Seq2Seq and Transformer (small, random init, built from configs).

The models are wrapped in :class:`EosRamp` so that their outputs end at different steps (see there); every
KV cache, RNN state and reorder is the real model's own.
"""

from __future__ import annotations

import pytest
import torch
from decode_toy_models import EosRamp, random_batch, teacher_forced

from attnlab.core.model_config import Seq2SeqConfig, TransformerConfig
from attnlab.decode import beam_search, greedy_decode
from attnlab.models import build_model

V = 23
LENS = [7, 3, 5, 1, 7, 2, 6, 4]
MAX_LEN = 14

CONFIGS = {
    "gru-additive": Seq2SeqConfig(embed_dim=16, hidden_size=16, num_layers=2, dropout=0.1),
    "lstm-bidir-dot": Seq2SeqConfig(rnn="lstm", bidirectional=True, embed_dim=16, hidden_size=16, num_layers=1,
                                    attention="dot", dropout=0.1),
    "transformer-preln": TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=2, decoder_layers=2),
    "transformer-postln-learned": TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1,
                                                    decoder_layers=2, norm_first=False, positional="learned",
                                                    tie_output=False, max_len=64),
}


@pytest.fixture(params=list(CONFIGS))
def model(request: pytest.FixtureRequest) -> EosRamp:
    torch.manual_seed(0)
    wrapped = EosRamp(build_model(CONFIGS[request.param], V, V), ramp=1.0)
    wrapped.train()  # dropout on: decoding must switch it off by itself
    return wrapped


def test_cached_equals_uncached(model: EosRamp) -> None:
    src, lens = random_batch(21, LENS, V)
    cached = greedy_decode(model, src, lens, max_len=MAX_LEN, return_attention=True)
    uncached = greedy_decode(model, src, lens, max_len=MAX_LEN, return_attention=True, use_cache=False)
    assert len({h.num_steps for h in cached}) >= 3 and any(h.ended for h in cached)
    for a, b in zip(cached, uncached, strict=True):
        assert (a.tokens, a.ended) == (b.tokens, b.ended)
        assert a.score == pytest.approx(b.score, abs=1e-5)
        torch.testing.assert_close(a.cross_attention, b.cross_attention, atol=1e-5, rtol=0)
    assert model.training


def test_unwrapped_transformer_cached_equals_uncached() -> None:
    torch.manual_seed(1)
    transformer = build_model(CONFIGS["transformer-preln"], V, V)
    src, lens = random_batch(22, LENS, V)
    cached = greedy_decode(transformer, src, lens, max_len=MAX_LEN)
    uncached = greedy_decode(transformer, src, lens, max_len=MAX_LEN, use_cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in uncached]
    assert [h.score for h in cached] == pytest.approx([h.score for h in uncached], abs=1e-5)


def test_beam_size_one_equals_greedy(model: EosRamp) -> None:
    src, lens = random_batch(23, LENS, V)
    greedy = greedy_decode(model, src, lens, max_len=MAX_LEN, length_penalty=0.0)
    beam = beam_search(model, src, lens, beam_size=1, max_len=MAX_LEN, length_penalty=0.0)
    for g, (b,) in zip(greedy, beam, strict=True):
        assert (b.tokens, b.ended) == (g.tokens, g.ended)
        assert b.score == pytest.approx(g.score, abs=1e-6)


def test_batched_equals_one_by_one(model: EosRamp) -> None:
    src, lens = random_batch(24, LENS, V)
    greedy = greedy_decode(model, src, lens, max_len=MAX_LEN)
    beam = beam_search(model, src, lens, beam_size=3, n_best=2, max_len=MAX_LEN)
    for b in range(len(LENS)):
        one_src, one_lens = src[b:b + 1, : int(lens[b])], lens[b:b + 1]
        (g,) = greedy_decode(model, one_src, one_lens, max_len=MAX_LEN)
        (nbest,) = beam_search(model, one_src, one_lens, beam_size=3, n_best=2, max_len=MAX_LEN)
        assert g.tokens == greedy[b].tokens and g.score == pytest.approx(greedy[b].score, abs=1e-5)
        assert [h.tokens for h in nbest] == [h.tokens for h in beam[b]]
        assert [h.score for h in nbest] == pytest.approx([h.score for h in beam[b]], abs=1e-5)


def test_beam_hypotheses_match_teacher_forcing(model: EosRamp) -> None:
    """Scores and per-step cross-attention survive the beam reorders of the real states."""
    src, lens = random_batch(25, LENS, V)
    results = beam_search(model, src, lens, beam_size=4, n_best=3, max_len=MAX_LEN, return_attention=True)
    for b, nbest in enumerate(results):
        n = int(lens[b])
        assert len(nbest) == 3
        assert [h.normalized_score for h in nbest] == sorted((h.normalized_score for h in nbest), reverse=True)
        for h in nbest:
            score, cross = teacher_forced(model, src[b:b + 1], n, h.tokens, h.ended)
            assert h.score == pytest.approx(score, abs=1e-4)
            assert h.cross_attention.shape == (h.num_steps, n)
            torch.testing.assert_close(h.cross_attention, cross, atol=1e-5, rtol=0)
            torch.testing.assert_close(h.cross_attention.sum(-1), torch.ones(h.num_steps), atol=1e-5, rtol=0)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_logits_a_hook_kept_are_not_overwritten(beam_size: int) -> None:
    """Unwatched, decoding writes each step's log-probabilities over the Transformer's logits (no second (B, V)
    tensor); a forward hook on the output layer that keeps them must still see them unchanged, and the outputs
    must not depend on the hook."""
    torch.manual_seed(0)
    model = build_model(CONFIGS["transformer-preln"], V, V)
    src, lens = random_batch(12, LENS, V)

    def decode() -> list[tuple[list[int], float]]:
        if beam_size == 1:
            hyps = greedy_decode(model, src, lens, max_len=6)
        else:
            hyps = [nb[0] for nb in beam_search(model, src, lens, beam_size=beam_size, max_len=6)]
        return [(h.tokens, h.score) for h in hyps]

    plain = decode()
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = model.output.register_forward_hook(lambda _m, _i, out: kept.append((out, out.clone())))
    try:
        watched = decode()
    finally:
        handle.remove()
    assert len(kept) >= 3
    for held, copy in kept:
        assert torch.equal(held, copy)
    assert [t for t, _ in watched] == [t for t, _ in plain]
    for (_, a), (_, b) in zip(watched, plain, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
