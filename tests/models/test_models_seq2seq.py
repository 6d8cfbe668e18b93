"""Seq2Seq with Bahdanau attention: decode_step == forward, padding invariance, weights, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from models_helpers import padded_batch

from attnlab.core.model_config import Seq2SeqConfig
from attnlab.models import Seq2Seq, Seq2SeqState

SRC_V, TGT_V = 17, 19


def _model(**overrides: object) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(embed_dim=8, hidden_size=12, num_layers=2, dropout=0.0, **overrides)
    return Seq2Seq(cfg, SRC_V, TGT_V).eval()


def _stepwise(model: Seq2Seq, src: torch.Tensor, lens: torch.Tensor, tgt: torch.Tensor):
    state = model.encode(src, lens)
    logits, weights = [], []
    for t in range(tgt.shape[1]):
        step = model.decode_step(tgt[:, t], state, need_weights=True)
        state = step.state
        logits.append(step.logits)
        weights.append(step.cross_weights)
    return torch.stack(logits, 1), torch.stack(weights, 1)


@pytest.mark.parametrize(("rnn", "bidirectional", "attention"), [
    ("gru", False, "additive"), ("gru", True, "dot"), ("lstm", True, "additive"), ("lstm", False, "general"),
    ("rnn", True, "scaled_dot"), ("gru", False, "scaled_dot"),
])
def test_decode_step_equals_teacher_forcing(rnn: str, bidirectional: bool, attention: str) -> None:
    model = _model(rnn=rnn, bidirectional=bidirectional, attention=attention)
    g = torch.Generator().manual_seed(1)
    src, lens = padded_batch([6, 3, 1], SRC_V, generator=g)
    tgt, _ = padded_batch([5, 5, 5], TGT_V, generator=g)
    out = model(src, lens, tgt, need_weights=True)
    step_logits, step_weights = _stepwise(model, src, lens, tgt)
    assert out.logits.shape == (3, 5, TGT_V)
    torch.testing.assert_close(step_logits, out.logits, rtol=1e-5, atol=1e-6)
    assert out.attention is not None and out.attention.cross.shape == (1, 3, 1, 5, 6)
    torch.testing.assert_close(step_weights, out.attention.cross[0, :, 0], rtol=1e-5, atol=1e-6)
    assert out.attention.encoder_self is None and out.attention.decoder_self is None


def test_unprojected_forward_returns_the_states_the_output_layer_maps_to_logits() -> None:
    model = _model()
    g = torch.Generator().manual_seed(3)
    src, lens = padded_batch([5, 2], SRC_V, generator=g)
    tgt, _ = padded_batch([4, 4], TGT_V, generator=g)
    bare = model(src, lens, tgt, project=False)
    assert bare.logits is None and bare.hidden.shape == (2, 4, 12)
    torch.testing.assert_close(model.output_projection()(bare.hidden), model(src, lens, tgt).logits, rtol=0, atol=0)


def test_attention_weights_are_distributions_over_real_tokens() -> None:
    model = _model()
    g = torch.Generator().manual_seed(2)
    src, lens = padded_batch([5, 2], SRC_V, generator=g)
    tgt, _ = padded_batch([4, 4], TGT_V, generator=g)
    cross = model(src, lens, tgt, need_weights=True).attention.cross[0, :, 0]  # (B, Tt, Ts)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 4))
    assert torch.all(cross[1, :, 2:] == 0)
    assert model(src, lens, tgt).attention is None


@pytest.mark.parametrize(("rnn", "bidirectional"), [("gru", True), ("lstm", False)])
def test_source_padding_does_not_change_results(rnn: str, bidirectional: bool) -> None:
    model = _model(rnn=rnn, bidirectional=bidirectional)
    g = torch.Generator().manual_seed(3)
    src, lens = padded_batch([4, 6, 2], SRC_V, generator=g)
    tgt, _ = padded_batch([3, 3, 3], TGT_V, generator=g)
    out = model(src, lens, tgt, need_weights=True)
    # More padding columns: same logits.
    wider = F.pad(src, (0, 3))
    out_wide = model(wider, lens, tgt, need_weights=True)
    torch.testing.assert_close(out_wide.logits, out.logits, rtol=1e-5, atol=1e-6)
    # Each row alone, unpadded: same logits and alignments.
    for b in range(3):
        n = int(lens[b])
        alone = model(src[b:b + 1, :n], lens[b:b + 1], tgt[b:b + 1], need_weights=True)
        torch.testing.assert_close(alone.logits[0], out.logits[b], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alone.attention.cross[0, 0, 0], out.attention.cross[0, b, 0, :, :n],
                                   rtol=1e-5, atol=1e-6)


def test_reorder_selects_rows() -> None:
    model = _model(rnn="lstm", bidirectional=True)
    g = torch.Generator().manual_seed(4)
    src, lens = padded_batch([5, 3, 4], SRC_V, generator=g)
    tokens = torch.tensor([1, 1, 1])
    state = model.encode(src, lens)
    index = torch.tensor([2, 2, 0])
    reordered = model.decode_step(tokens, state).state.reorder(index)
    assert isinstance(reordered, Seq2SeqState)
    direct = model.decode_step(tokens, model.encode(src[index], lens[index])).state
    nxt = torch.tensor([5, 6, 7])
    torch.testing.assert_close(model.decode_step(nxt, reordered).logits, model.decode_step(nxt, direct).logits)


def test_gradients_reach_every_parameter() -> None:
    model = _model(rnn="lstm", bidirectional=True).train()
    g = torch.Generator().manual_seed(5)
    src, lens = padded_batch([5, 3], SRC_V, generator=g)
    tgt, _ = padded_batch([4, 4], TGT_V, generator=g)
    model(src, lens, tgt).logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def _train_to_reverse(steps: int) -> tuple[list[float], float]:
    """``steps`` Adam steps on one fixed batch of 16 reversals; the losses and the token accuracy after them."""
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(embed_dim=16, hidden_size=32, num_layers=1, dropout=0.0), 10, 10)
    g = torch.Generator().manual_seed(6)
    src = torch.randint(4, 10, (16, 5), generator=g)
    lens = torch.full((16,), 5)
    tgt_out = torch.cat([src.flip(1), torch.full((16, 1), 2)], dim=1)  # reversed + <eos>
    tgt_in = torch.cat([torch.ones(16, 1, dtype=torch.long), src.flip(1)], dim=1)  # <bos> + reversed
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(src, lens, tgt_in).logits.flatten(0, 1), tgt_out.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    logits = model(src, lens, tgt_in).logits
    assert logits.shape == (16, 6, 10)
    return losses, float((logits.argmax(-1) == tgt_out).float().mean())


@pytest.mark.slow
def test_learns_to_reverse_a_fixed_batch() -> None:
    _, accuracy = _train_to_reverse(30)
    assert accuracy > 0.9


def test_a_few_steps_on_the_fixed_batch_lower_its_loss() -> None:
    """The few-step smoke test of the slow test above: the same model, batch and loop, 3 steps."""
    losses, accuracy = _train_to_reverse(3)
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0] and 0.0 <= accuracy <= 1.0


@pytest.mark.parametrize("attention", ["additive", "general"])
def test_hooked_attention_sees_every_step_with_identical_results(attention: str) -> None:
    # attnlab.viz.capture observes ScoringAttention modules through forward hooks: with a hook attached the
    # module's own forward runs (recording every step) and the results equal the unobserved fast path.
    model = _model(attention=attention, bidirectional=True)
    g = torch.Generator().manual_seed(7)
    src, lens = padded_batch([5, 2], SRC_V, generator=g)
    tgt, _ = padded_batch([4, 4], TGT_V, generator=g)
    fast = model(src, lens, tgt, need_weights=True)
    seen: list[torch.Tensor] = []
    handle = model.attention.register_forward_hook(lambda _m, _args, out: seen.append(out.weights))
    try:
        hooked = model(src, lens, tgt, need_weights=True)
    finally:
        handle.remove()
    assert len(seen) == 4 and seen[0].shape == (2, 1, 5)
    torch.testing.assert_close(hooked.logits, fast.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat(seen, dim=1), fast.attention.cross[0, :, 0], rtol=1e-5, atol=1e-6)
