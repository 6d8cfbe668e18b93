"""masked_softmax: exact zeros, fully masked rows, every dtype, gradients, errors, properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import masked_softmax
from attnlab.attention.masks import causal_mask, from_torch_masks, lengths_to_mask


def test_valid_lens_per_row_matches_reference_softmax():
    torch.manual_seed(0)
    scores = torch.randn(3, 4, 6, dtype=torch.float64)
    lens = torch.tensor([2, 6, 4])
    w = masked_softmax(scores, valid_lens=lens)
    for b, n in enumerate(lens.tolist()):
        torch.testing.assert_close(w[b, :, :n], torch.softmax(scores[b, :, :n], dim=-1))
        assert torch.all(w[b, :, n:] == 0)


def test_valid_lens_per_query():
    scores = torch.randn(2, 3, 5)
    lens = torch.tensor([[1, 2, 3], [5, 0, 4]])
    w = masked_softmax(scores, valid_lens=lens)
    for b in range(2):
        for i in range(3):
            n = int(lens[b, i])
            assert torch.all(w[b, i, n:] == 0)
            expected = 1.0 if n else 0.0
            assert w[b, i].sum().item() == pytest.approx(expected, abs=1e-6)


def test_boolean_mask_and_lengths_combine():
    scores = torch.randn(2, 4, 4)
    mask = causal_mask(4, 4)
    w = masked_softmax(scores, valid_lens=torch.tensor([2, 4]), mask=mask)
    assert torch.all(w[0, :, 2:] == 0)
    assert torch.all(w.triu(1) == 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_fully_masked_row_is_zero_without_nan_in_every_dtype(dtype):
    scores = (torch.randn(2, 3, 5) * 100).to(dtype).requires_grad_(True)
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[0, 1] = False  # a fully masked row
    mask[1, :, 3:] = False
    w = masked_softmax(scores, mask=mask)
    assert w.dtype == dtype
    assert torch.isfinite(w).all()
    assert torch.all(w[0, 1] == 0)
    assert torch.all(w[1, :, 3:] == 0)
    sums = w.float().sum(-1)
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(sums[0, 1], torch.tensor(0.0))
    torch.testing.assert_close(sums[1], torch.ones(3), atol=tol, rtol=0)
    (w.float() * torch.randn(w.shape)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.all(scores.grad[0, 1] == 0)


def test_half_precision_does_not_use_a_magic_fill_that_overflows():
    # -1e9 is -inf in fp16; a row that is entirely masked then gives NaN. We must not.
    scores = torch.zeros(1, 1, 3, dtype=torch.float16)
    w = masked_softmax(scores, mask=torch.zeros(1, 1, 3, dtype=torch.bool))
    assert torch.equal(w, torch.zeros_like(w))


def test_gradcheck_with_lengths_and_fully_masked_row():
    scores = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([[0, 2, 4], [1, 3, 0]])
    assert torch.autograd.gradcheck(lambda s: masked_softmax(s, valid_lens=lens), (scores,))
    mask = torch.rand(2, 3, 4) > 0.4
    mask[1, 2] = False
    assert torch.autograd.gradcheck(lambda s: masked_softmax(s, mask=mask), (scores,))


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 3), q=st.integers(1, 5), k=st.integers(1, 6), data=st.data())
def test_property_weights_sum_to_one_over_allowed_and_zero_elsewhere(b, q, k, data):
    bits = data.draw(st.lists(st.booleans(), min_size=b * q * k, max_size=b * q * k))
    mask = torch.tensor(bits).view(b, q, k)
    scores = torch.randn(b, q, k, dtype=torch.float64) * data.draw(st.floats(0.1, 50.0))
    w = masked_softmax(scores, mask=mask)
    assert torch.all(w[~mask] == 0)
    assert torch.all(w >= 0)
    row_has = mask.any(-1)
    torch.testing.assert_close(w.sum(-1)[row_has], torch.ones(int(row_has.sum()), dtype=torch.float64))
    assert torch.all(w.sum(-1)[~row_has] == 0)


def test_four_dim_scores_with_lengths_broadcast_over_heads():
    scores = torch.randn(2, 3, 4, 5)
    w = masked_softmax(scores, valid_lens=torch.tensor([1, 5]))
    assert torch.all(w[0, :, :, 1:] == 0)
    torch.testing.assert_close(w[1].sum(-1), torch.ones(3, 4))


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"valid_lens": torch.tensor([1.0, 2.0])}, TypeError, ["valid_lens", "integer", "float32"]),
        ({"valid_lens": torch.tensor([1, 2, 3])}, ValueError, ["valid_lens", "(2,)", "(3,)"]),
        ({"valid_lens": torch.tensor([1, 9])}, ValueError, ["valid_lens", "[0, 5]", "max 9"]),
        ({"valid_lens": torch.tensor([-1, 2])}, ValueError, ["valid_lens", "min -1"]),
        ({"mask": torch.ones(2, 4, 5, dtype=torch.int64)}, TypeError, ["mask", "torch.bool", "int64"]),
        ({"mask": torch.ones(2, 4, 3, dtype=torch.bool)}, ValueError, ["mask", "(2, 4, 3)", "(2, 4, 5)"]),
        ({"mask": [[True]]}, TypeError, ["mask", "list"]),
    ],
)
def test_bad_arguments_name_the_argument_and_what_was_expected(kwargs, exc, words):
    with pytest.raises(exc) as info:
        masked_softmax(torch.randn(2, 4, 5), **kwargs)
    for word in words:
        assert word in str(info.value)


def test_integer_scores_rejected():
    with pytest.raises(TypeError, match="scores: expected a floating-point tensor"):
        masked_softmax(torch.ones(2, 3, dtype=torch.long))


def test_lengths_to_mask_and_causal_alignment():
    m = lengths_to_mask(torch.tensor([1, 3]), 3, score_ndim=3)
    assert m.shape == (2, 1, 3)
    assert m.tolist() == [[[True, False, False]], [[True, True, True]]]
    c = causal_mask(2, 4)  # two new queries after two cached keys
    assert c.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_from_torch_masks_inverts_convention():
    kpm = torch.tensor([[False, False, True]])
    attn = torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    m = from_torch_masks(attn, kpm)
    assert m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    additive = torch.tensor([[0.0, float("-inf")], [0.0, 0.0]])
    assert from_torch_masks(additive).tolist() == [[True, False], [True, True]]
