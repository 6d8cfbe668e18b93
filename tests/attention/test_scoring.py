"""Scoring modules against small loop-based float64 oracles, gradcheck, dropout and error messages."""

import math

import pytest
import torch

from attnlab.attention import (
    AdditiveAttention,
    DotProductAttention,
    GeneralAttention,
    ScaledDotProductAttention,
)


def _oracle(score_fn, q, k, v, lens):
    """Attention one (batch, query) at a time with Python loops: the plainest possible definition."""
    B, Tq, _ = q.shape
    out = torch.zeros(B, Tq, v.shape[-1], dtype=torch.float64)
    weights = torch.zeros(B, Tq, k.shape[1], dtype=torch.float64)
    for b in range(B):
        n = int(lens[b])
        for i in range(Tq):
            if n == 0:
                continue
            s = torch.stack([score_fn(q[b, i], k[b, j]) for j in range(n)])
            e = torch.exp(s - s.max())
            w = e / e.sum()
            weights[b, i, :n] = w
            out[b, i] = sum(w[j] * v[b, j] for j in range(n))
    return out, weights


def _modules():
    torch.manual_seed(1)
    additive = AdditiveAttention(query_size=5, key_size=3, hidden_size=7).double()
    general = GeneralAttention(query_size=5, key_size=3).double()
    return [
        ("dot", DotProductAttention(), 4, 4, lambda q, k: q @ k),
        ("scaled", ScaledDotProductAttention(), 4, 4, lambda q, k: q @ k / math.sqrt(4)),
        ("general", general, 5, 3, lambda q, k: q @ general.weight @ k),
        ("additive", additive, 5, 3,
         lambda q, k: additive.w_v.weight[0] @ torch.tanh(additive.W_q.weight @ q + additive.W_k.weight @ k)),
    ]


@pytest.mark.parametrize("case", _modules(), ids=lambda c: c[0])
def test_matches_loop_oracle_float64_with_padding(case):
    _, module, dq, dk, score_fn = case
    torch.manual_seed(0)
    q = torch.randn(3, 4, dq, dtype=torch.float64)
    k = torch.randn(3, 6, dk, dtype=torch.float64)
    v = torch.randn(3, 6, 2, dtype=torch.float64)
    lens = torch.tensor([6, 2, 0])
    out, w = module(q, k, v, valid_lens=lens)
    ref_out, ref_w = _oracle(score_fn, q, k, v, lens)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(out, ref_out)
    assert out.shape == (3, 4, 2) and w.shape == (3, 4, 6)


@pytest.mark.parametrize("case", _modules(), ids=lambda c: c[0])
def test_gradcheck_float64_with_fully_masked_row(case):
    _, module, dq, dk, _ = case
    torch.manual_seed(0)
    q = torch.randn(2, 3, dq, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, dk, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([[4, 0, 2], [1, 3, 4]])  # (B, Tq): query (0, 1) sees nothing
    assert torch.autograd.gradcheck(lambda q, k, v: module(q, k, v, valid_lens=lens).output, (q, k, v))
    params = [p for p in module.parameters()]
    if params:
        out = module(q, k, v, valid_lens=lens).output.sum()
        grads = torch.autograd.grad(out, params)
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("case", _modules(), ids=lambda c: c[0])
def test_nan_in_padded_keys_and_values_does_not_reach_outputs_or_gradients(case):
    _, module, dq, dk, _ = case
    module = module.float()
    q = torch.randn(2, 3, dq, requires_grad=True)
    k = torch.randn(2, 5, dk)
    v = torch.randn(2, 5, 4)
    k[0, 3:] = float("nan")
    v[0, 3:] = float("inf")
    k[1, 4:] = 1e30
    lens = torch.tensor([3, 4])
    out, w = module(q, k, v, valid_lens=lens)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    for p in module.parameters():
        assert torch.isfinite(p.grad).all()


def test_dropout_applies_to_output_but_reported_weights_are_pre_dropout():
    torch.manual_seed(0)
    module = ScaledDotProductAttention(dropout=0.5).train()
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 4)
    out, w = module(q, k, v)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    assert not torch.allclose(out, torch.bmm(w, v))
    module.eval()
    out, w = module(q, k, v)
    torch.testing.assert_close(out, torch.bmm(w, v))


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: DotProductAttention()(torch.randn(2, 3, 4), torch.randn(2, 5, 6), torch.randn(2, 5, 6)),
         ValueError, ["same feature size", "4", "6"]),
        (lambda: AdditiveAttention(4, 6, 8)(torch.randn(2, 3, 5), torch.randn(2, 5, 6), torch.randn(2, 5, 2)),
         ValueError, ["queries", "last dim 4", "(2, 3, 5)"]),
        (lambda: ScaledDotProductAttention()(torch.randn(2, 3, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4)),
         ValueError, ["batch sizes differ"]),
        (lambda: ScaledDotProductAttention()(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 6, 4)),
         ValueError, ["one value per key", "5 keys", "6 values"]),
        (lambda: ScaledDotProductAttention()(torch.randn(3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)),
         ValueError, ["queries", "3-dim", "(3, 4)"]),
        (lambda: ScaledDotProductAttention()(torch.ones(2, 3, 4, dtype=torch.long), torch.randn(2, 5, 4),
                                             torch.randn(2, 5, 4)), TypeError, ["queries", "floating", "int64"]),
        (lambda: AdditiveAttention(0, 4, 4), ValueError, ["query_size", "positive", "0"]),
        (lambda: ScaledDotProductAttention(dropout=1.5), ValueError, ["dropout", "[0, 1)", "1.5"]),
    ],
)
def test_bad_input_errors_are_specific(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value)
