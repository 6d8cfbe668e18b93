"""attnlab's CPU dropout (attnlab.attention.dropout) against what torch.nn.functional.dropout promises."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from attnlab.attention.dropout import Dropout, dropout, relu_dropout
from attnlab.core.model_config import Seq2SeqConfig, TransformerConfig
from attnlab.models import Seq2Seq, Transformer

N = 200_000


def _within(count: int, n: int, prob: float, sds: float = 5.0) -> bool:
    """``count`` successes in ``n`` draws is within ``sds`` binomial standard deviations of ``n * prob``."""
    return abs(count - n * prob) <= sds * math.sqrt(n * prob * (1 - prob))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_each_element_is_dropped_with_probability_p_and_the_rest_scaled(p: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.rand(N, dtype=dtype) + 0.5  # no zeros: a zero output means a dropped element
    out = dropout(x, p)
    assert out.dtype == dtype and out.shape == x.shape
    kept = out != 0
    assert _within(int(kept.sum()), N, 1 - p)
    torch.testing.assert_close(out[kept], (x[kept].double() / (1 - p)).to(dtype))  # dtype's own tolerance
    # neighbours are independent: both kept as often as (1 - p)^2 says
    assert _within(int((kept[:-1] & kept[1:]).sum()), N - 1, (1 - p) ** 2)


def test_the_gradient_is_the_mask_scaled() -> None:
    torch.manual_seed(1)
    x = (torch.rand(64, 33) + 0.5).requires_grad_()
    out = dropout(x, 0.3)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(x.grad, g * (out.detach() != 0) / 0.7)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_relu_dropout_equals_dropout_of_relu(p: float, dtype: torch.dtype) -> None:
    """Same generator state, same mask: outputs and gradients equal, with zeros, negatives and infinities in."""
    x = torch.randn(400, 33).to(dtype)
    x[0, :5] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan")])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(5)
    want = dropout(F.relu(a), p)
    torch.manual_seed(5)
    got = relu_dropout(b, p)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    if 0 < p < 1:
        (saved,) = got.grad_fn.saved_tensors  # one mask instead of ReLU's output and dropout's mask
        assert saved.dtype == dtype and saved.shape == x.shape
    g = torch.randn(want.shape).to(dtype)
    want.backward(g)
    got.backward(g)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0)


def test_relu_dropout_follows_eval_and_checks_p() -> None:
    y = torch.randn(50)
    assert torch.equal(relu_dropout(y, 0.5, training=False), F.relu(y))
    with pytest.raises(ValueError, match="between 0 and 1, but got -0.5"):
        relu_dropout(y, -0.5)


def test_relu_dropout_float64_gradcheck_with_a_fixed_draw() -> None:
    x = (torch.randn(6, 7, dtype=torch.float64) + 0.05).requires_grad_()  # away from the kink at 0

    def f(t: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)
        return relu_dropout(t, 0.4)

    assert torch.autograd.gradcheck(f, (x,))


def test_float64_gradcheck_with_a_fixed_draw() -> None:
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)  # the same mask at every evaluation
        return dropout(t, 0.4)

    assert torch.autograd.gradcheck(f, (x,))


def test_the_seed_decides_the_mask() -> None:
    x = torch.ones(1000)
    torch.manual_seed(7)
    a = dropout(x, 0.5)
    torch.manual_seed(7)
    b = dropout(x, 0.5)
    torch.manual_seed(8)
    c = dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_inplace_equals_out_of_place() -> None:
    x = torch.randn(100, 10)
    torch.manual_seed(4)
    expected = dropout(x, 0.2)
    y = x.clone()
    torch.manual_seed(4)
    out = dropout(y, 0.2, inplace=True)
    assert out is y and torch.equal(out, expected)


def test_edges_are_pytorchs() -> None:
    x = torch.randn(10, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), F.dropout(x, 1.0))
    near_one = 1 - 2 ** -33  # its threshold, p * 2^31, rounds to 2^31: beyond int32, so PyTorch's dropout runs
    assert (dropout(x, near_one) == 0).all()
    assert (dropout(torch.ones(10_000), 1 - 2 ** -20) == 0).all()
    tiny = dropout(torch.ones(10_000), 2 ** -40)  # rounds to no element dropped, the rest scaled by ~1
    assert (tiny == 1.0).all()
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        dropout(x, 1.5)


def test_the_module_is_a_torch_dropout_and_follows_train_and_eval() -> None:
    module = Dropout(0.25)
    assert isinstance(module, nn.Dropout) and repr(module) == repr(nn.Dropout(0.25))
    assert module.state_dict() == {}
    x = torch.rand(4000) + 0.5
    assert module.eval()(x) is x
    assert _within(int((module.train()(x) == 0).sum()), 4000, 0.25)


@pytest.mark.parametrize("model", ["transformer", "seq2seq"])
def test_attnlabs_models_use_it(model: str) -> None:
    """Every dropout module of the models is attnlab's (else training pays for bernoulli_ again)."""
    if model == "transformer":
        net = Transformer(TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
                                            dropout=0.1, attention_dropout=0.1), 11, 11)
    else:
        net = Seq2Seq(Seq2SeqConfig(embed_dim=8, hidden_size=8, dropout=0.1), 11, 11)
    found = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert found and all(type(m) is Dropout for m in found)
