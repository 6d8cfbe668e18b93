"""KVCache: appending in place, reordering, zeroing a cross-attention cache's padding once, beam reorders."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import KVCache, MultiHeadAttention
from attnlab.attention.functional import explicit_attention, step_attention, zero_unreachable
from attnlab.attention.masks import lengths_to_mask
from attnlab.core.model_config import TransformerConfig
from attnlab.models import build_model


def _steps(B=3, H=2, T=40, Dh=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, Dh, generator=g), torch.randn(B, H, T, Dh, generator=g)


def test_growing_cache_appends_in_place_and_equals_concatenation():
    keys, values = _steps()
    cache = KVCache()
    pointers = set()
    for t in range(keys.shape[2]):
        k, v = cache.update(keys[:, :, t:t + 1], values[:, :, t:t + 1])
        torch.testing.assert_close(k, keys[:, :, :t + 1], rtol=0, atol=0)
        torch.testing.assert_close(v, values[:, :, :t + 1], rtol=0, atol=0)
        pointers.add(k.data_ptr())
    assert len(cache) == keys.shape[2]
    # 40 one-step appends moved to a new buffer only when it was full: 16, then doubling (16 + 17, ...).
    assert len(pointers) <= 4, f"the buffer was reallocated {len(pointers)} times for 40 steps"


def test_reorder_of_a_buffered_cache_keeps_appending_correctly():
    keys, values = _steps(T=30)
    cache = KVCache()
    for t in range(10):
        cache.update(keys[:, :, t:t + 1], values[:, :, t:t + 1])
    index = torch.tensor([2, 2, 0])
    cache.reorder(index)
    for t in range(10, 30):
        k, v = cache.update(keys[index, :, t:t + 1], values[index, :, t:t + 1])
    expected_k = torch.cat([keys[index, :, :10], keys[index, :, 10:]], dim=2)
    torch.testing.assert_close(k, expected_k, rtol=0, atol=0)
    torch.testing.assert_close(v, torch.cat([values[index, :, :10], values[index, :, 10:]], dim=2), rtol=0, atol=0)


def test_cache_under_autograd_concatenates_and_gradients_match_the_full_pass():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double().eval()
    x = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    full = mha(x, is_causal=True).output
    (grad_full,) = torch.autograd.grad(full.square().sum(), x)
    cache = KVCache()
    steps = torch.cat([mha(x[:, t:t + 1], is_causal=True, cache=cache).output for t in range(6)], dim=1)
    torch.testing.assert_close(steps, full)
    (grad_steps,) = torch.autograd.grad(steps.square().sum(), x)  # an in-place write would break this backward
    torch.testing.assert_close(grad_steps, grad_full)


def _key_mask(lens, Tk):
    return (torch.arange(Tk)[None, :] < lens[:, None])[:, None, None, :]  # (B, 1, 1, Tk)


def test_static_cache_zeroes_unreachable_keys_once():
    keys, values = _steps(T=5)
    keys[1, :, 3:] = float("nan")  # padding of row 1
    lens = torch.tensor([5, 3, 4])
    cache = KVCache(static=True)
    cache.update(keys, values)
    mask = _key_mask(lens, 5)
    k1, v1 = cache.without_unreachable(mask)
    ref_k, ref_v = zero_unreachable(keys, values, mask)
    torch.testing.assert_close(k1, ref_k, rtol=0, atol=0)
    torch.testing.assert_close(v1, ref_v, rtol=0, atol=0)
    assert torch.isfinite(k1).all()
    k2, v2 = cache.without_unreachable(_key_mask(lens, 5))  # the next step: the same padding, nothing copied
    assert k2 is k1 and v2 is v1
    cache.reorder(torch.tensor([1, 0]))
    k3, _ = cache.without_unreachable(_key_mask(lens[[1, 0]], 5))  # the bookkeeping follows the rows
    assert k3 is cache.key
    torch.testing.assert_close(k3, ref_k[[1, 0]], rtol=0, atol=0)
    # A later mask reaching a zeroed key cannot be served: its values are gone.
    with pytest.raises(ValueError, match="same source lengths"):
        cache.without_unreachable(_key_mask(torch.tensor([5, 5]), 5))


def test_static_cache_builds_the_padding_mask_once_per_sentence(monkeypatch):
    import attnlab.attention.cache as cache_module

    built = []
    monkeypatch.setattr(cache_module, "lengths_to_mask",
                        lambda *a: built.append(a) or lengths_to_mask(*a))
    keys, values = _steps(T=5)
    keys[1, :, 3:] = float("nan")
    lens = torch.tensor([5, 3, 0])  # row 2 attends nothing
    cache = KVCache(static=True)
    cache.update(keys, values)
    mask, k, v, rows_ok = cache.padding_mask(lens)
    assert torch.equal(mask, _key_mask(lens, 5)) and not rows_ok and len(built) == 1
    ref_k, ref_v = zero_unreachable(keys, values, _key_mask(lens, 5))
    torch.testing.assert_close(k, ref_k, rtol=0, atol=0)
    torch.testing.assert_close(v, ref_v, rtol=0, atol=0)
    again = cache.padding_mask(lens)  # the next step: nothing built, compared or copied
    assert again[0] is mask and again[1] is k and len(built) == 1
    lens[0] = 4  # an in-place write to the lengths is noticed: built again for the new values
    mask, k, _, _ = cache.padding_mask(lens)
    assert torch.equal(mask, _key_mask(lens, 5)) and len(built) == 2 and not k[0, :, 4].any()
    ref_k[0, :, 4] = 0.0
    cache.reorder(torch.tensor([1, 0]))  # new rows: a new mask for the new lengths
    mask2, k2, _, rows_ok2 = cache.padding_mask(lens[[1, 0]])
    assert rows_ok2 and len(built) == 3 and torch.equal(mask2, _key_mask(lens[[1, 0]], 5))
    torch.testing.assert_close(k2, ref_k[[1, 0]], rtol=0, atol=0)


def test_static_cache_with_a_per_head_mask_zeroes_like_the_function():
    keys, values = _steps(B=2, T=5)
    mask = torch.rand(2, 2, 1, 5) > 0.5
    cache = KVCache(static=True)
    cache.update(keys, values)
    k, v = cache.without_unreachable(mask)
    ref_k, ref_v = zero_unreachable(keys, values, mask)
    torch.testing.assert_close(k, ref_k, rtol=0, atol=0)
    torch.testing.assert_close(v, ref_v, rtol=0, atol=0)
    assert cache.zeroed is None and cache.key is keys  # no bookkeeping for per-head masks


def test_transformer_reorder_beams_equals_a_full_reorder_within_sentences():
    torch.manual_seed(0)
    config = TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=2, decoder_layers=2, dropout=0.0)
    model = build_model(config, 30, 30).eval()
    K = 3
    src = torch.randint(4, 30, (2, 6))
    lens = torch.tensor([6, 4])
    with torch.no_grad():
        states = [model.encode(src, lens).reorder(torch.arange(2).repeat_interleave(K)) for _ in range(2)]
        tokens = torch.randint(4, 30, (2 * K,))
        for _ in range(2):
            states = [model.decode_step(tokens, s).state for s in states]
        rows = torch.tensor([2, 2, 0, 3, 5, 5])  # each sentence's beams from its own rows
        full, beams = states[0].reorder(rows), states[1].reorder_beams(rows)
        assert beams.memory is states[1].memory  # the source side was left where it was
        nxt = torch.randint(4, 30, (2 * K,))
        torch.testing.assert_close(model.decode_step(nxt, beams).logits, model.decode_step(nxt, full).logits,
                                   rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 4), H=st.integers(1, 3), Tq=st.integers(1, 5), Tk=st.integers(1, 9), data=st.data())
def test_step_attention_equals_the_explicit_path_on_cache_views(B, H, Tq, Tk, data):
    """The decoding steps' four-operation attention against explicit_attention, in float64, reading keys and values
    where a growing cache keeps them (views of larger buffers) and with padding zeroed as a static cache does."""
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    q = torch.randn(B, H, Tq, 8, generator=gen, dtype=torch.float64)
    buffers = [torch.randn(B, H, Tk + 3, 8, generator=gen, dtype=torch.float64) for _ in range(2)]
    k, v = (b[:, :, :Tk] for b in buffers)  # (B, H, Tk, 8) views, as KVCache.key / value
    lens = torch.tensor(data.draw(st.lists(st.integers(1, Tk), min_size=B, max_size=B)))
    mask = _key_mask(lens, Tk) if data.draw(st.booleans()) else None
    kz, vz = zero_unreachable(k, v, mask)
    expected, _ = explicit_attention(q, kz, vz, mask)
    with torch.inference_mode():
        got = step_attention(q, kz, vz, mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
