"""Uniform and permuted attention are applied exactly: the weights the model used are the override."""

from __future__ import annotations

import pytest
import torch

from attnlab.attention import MultiHeadAttention
from attnlab.core.errors import ConfigError
from attnlab.explain import (
    TextClassifierAdapter,
    attention_checks,
    override_attention,
    permuted_weights,
    uniform_weights,
)
from attnlab.viz.capture import capture


def test_uniform_and_permuted_weights_respect_padding() -> None:
    w = torch.softmax(torch.randn(2, 3, 5), -1)  # (B, Q, T)
    lens = torch.tensor([5, 3])
    w[1, :, 3:] = 0.0
    u = uniform_weights(w, lens)
    torch.testing.assert_close(u[0], torch.full((3, 5), 0.2))
    torch.testing.assert_close(u[1], torch.tensor([[1 / 3] * 3 + [0.0, 0.0]] * 3))
    p = permuted_weights(w, torch.Generator().manual_seed(0), lens)
    assert bool((p[1, :, 3:] == 0).all())
    for b, n in ((0, 5), (1, 3)):
        for q in range(3):  # each row is a permutation of itself over the real positions
            torch.testing.assert_close(p[b, q, :n].sort().values, w[b, q, :n].sort().values)
    assert not torch.equal(p, w)


def test_layer_override_is_what_the_model_used(random_classifier) -> None:
    """The captured self-attention equals the override exactly, and so does the layer's output computed from it."""
    model = random_classifier
    ids = torch.tensor([[4, 5, 6, 7, 8, 9]])
    module = model.layers[0].self_attn
    with torch.no_grad(), capture(model) as plain:
        base = model(ids).logits
    original = plain.stack("self")[0, 0]  # (H, T, T), layer 0
    for how in ("uniform", "permuted"):
        gen = torch.Generator().manual_seed(3)
        expected = uniform_weights(original[None]) if how == "uniform" else permuted_weights(original[None], gen)
        gen = torch.Generator().manual_seed(3)

        def replace(w: torch.Tensor, how: str = how, gen: torch.Generator = gen) -> torch.Tensor:
            return uniform_weights(w) if how == "uniform" else permuted_weights(w, gen)

        with torch.no_grad(), override_attention(module, replace), capture(model) as maps:
            logits = model(ids).logits
        used = maps.stack("self")[0]  # (B, H, T, T), layer 0
        assert torch.equal(used, expected.float()), how
        assert not torch.allclose(logits, base)  # the model's output changed with its attention
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, base, rtol=0, atol=0)  # hooks gone: back to the original


def test_override_mixes_values_with_the_given_weights() -> None:
    """MultiHeadAttention's output under an override equals the explicit sum with those weights."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    fixed = torch.softmax(torch.randn(1, 2, 4, 4), -1)
    with torch.no_grad(), override_attention(mha, lambda w: fixed):
        out, weights = mha(x, need_weights=True)
        no_weights = mha(x).output  # without need_weights too: the hook forces the explicit path
    v = torch.nn.functional.linear(x, mha.in_proj_weight[16:], mha.in_proj_bias[16:]).view(1, 4, 2, 4).transpose(1, 2)
    want = mha.out_proj((fixed @ v).transpose(1, 2).reshape(1, 4, 8))
    assert torch.equal(weights, fixed)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(no_weights, want)


def test_pooling_override_is_what_the_model_used(random_classifier) -> None:
    model = random_classifier
    ids = torch.tensor([[4, 5, 6, 7, 0, 0]])  # right-padded: 4 real tokens
    seen = {}
    handle = model.pooling.register_forward_hook(lambda m, args, kwargs, out: seen.update(x=args[0], out=out),
                                                 with_kwargs=True)
    try:
        with torch.no_grad(), override_attention(model.pooling,
                                                 lambda w: uniform_weights(w, torch.tensor([4]))):
            result = model(ids, need_weights=True)
    finally:
        handle.remove()
    expected = torch.tensor([[[0.25] * 4 + [0.0, 0.0]] * 2])  # (B, Q, T): two queries
    assert torch.equal(result.pooling, expected)
    torch.testing.assert_close(seen["out"].output, expected @ seen["x"])  # the pooled vectors are its averages


def test_hook_that_returns_none_changes_nothing(random_classifier) -> None:
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    with torch.no_grad():
        base = random_classifier(ids, need_weights=True)
    handles = [m.register_weights_hook(lambda mod, w: None) for m in (random_classifier.pooling,
                                                                       random_classifier.layers[1].self_attn)]
    try:
        with torch.no_grad():
            hooked = random_classifier(ids, need_weights=True)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(hooked.logits, base.logits)
    torch.testing.assert_close(hooked.pooling, base.pooling)
    with pytest.raises(ValueError, match="shape"), override_attention(random_classifier.pooling, lambda w: w[..., :2]):
        random_classifier(ids)
    with pytest.raises(ConfigError), override_attention(torch.nn.Linear(2, 2), lambda w: w):
        pass


def test_attention_checks_report_every_module(random_classifier) -> None:
    adapter = TextClassifierAdapter(random_classifier, labels=["a", "b"])
    example = adapter.example_from_ids(torch.tensor([[4, 5, 6, 7, 8]]))
    out = attention_checks(adapter, example, permutations=3, generator=torch.Generator().manual_seed(0))
    assert set(out) == {f"{m} {how}" for m in ("pooling", "layers.0.self_attn", "layers.1.self_attn")
                        for how in ("uniform", "permuted")}
    assert len(out["pooling uniform"]["abs_dp"]) == 1 and len(out["pooling permuted"]["flips"]) == 3
    assert all(0.0 <= v <= 1.0 for c in out.values() for v in c["abs_dp"] + c["flips"])
