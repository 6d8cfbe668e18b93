"""The compiled Transformer layers (``native.decoder_layer_step``, ``native.encoder_layer``) against PyTorch's own
operations in float64, on the layers' general paths: pre- and post-LN, ReLU and GELU, beams, padded memories with an
empty row, caches that grow past their capacity, and what they decline."""

from __future__ import annotations

import copy
import platform
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import KVCache, native
from attnlab.models.transformer import TransformerDecoderLayer, TransformerEncoderLayer

needs_layers = pytest.mark.skipif(not (native._compiler() and native._blas_sgemm()),
                                  reason="no C compiler or no BLAS sgemm_ exported by PyTorch here")


def test_the_layer_kernels_have_a_blas_on_linux_x86_64() -> None:
    """PyTorch's x86-64 Linux wheels export MKL's ``sgemm_`` (else every test below would be skipped there)."""
    if sys.platform == "linux" and platform.machine() == "x86_64" and native.available():
        assert native._blas_sgemm() is not None
        assert "compiled layers are off" not in native.status()


def randomized(layer: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn at random (LayerNorm weights around 1), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if "norm" in name and "bias" in name else 0.3)
                    + (1.0 if "norm" in name and "weight" in name else 0.0))
    return layer.eval()


def decode_steps(layer: TransformerDecoderLayer, memory: torch.Tensor, lens: torch.Tensor | None, xs: torch.Tensor,
                 beams: int) -> list[torch.Tensor]:
    """``layer.step`` over the positions ``xs`` ``(steps, R, 1, D)`` with fresh caches."""
    self_cache, cross_cache = KVCache(), KVCache(static=True)
    with torch.inference_mode():
        return [layer.step(x, memory, lens, self_cache, cross_cache, beams) for x in xs]


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, int]:
    calls = {"ran": 0}
    fn = getattr(native, name)

    def counted(*args, **kwargs):
        out = fn(*args, **kwargs)
        calls["ran"] += out is not None
        return out

    monkeypatch.setattr(native, name, counted)
    return calls


@needs_layers
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("beams", [1, 3])
def test_decoder_step_equals_pytorch_in_float64(monkeypatch: pytest.MonkeyPatch, norm_first: bool, activation: str,
                                                beams: int) -> None:
    """20 steps, so the self-attention cache grows past its first capacity (16) while the kernel writes into it."""
    D, H, F, B, Ts, steps = 24, 3, 40, 4, 7, 20
    layer = randomized(TransformerDecoderLayer(D, H, F, activation=activation, norm_first=norm_first), seed=beams)
    reference = copy.deepcopy(layer).double()
    g = torch.Generator().manual_seed(7)
    memory = torch.randn(B, Ts, D, generator=g)
    lens = torch.tensor([7, 0, 3, 1])  # an empty row: a zero context, as PyTorch's guard gives
    xs = torch.randn(steps, B * beams, 1, D, generator=g)
    calls = count_calls(monkeypatch, "decoder_layer_step")
    got = decode_steps(layer, memory, lens, xs, beams)
    assert calls["ran"] == steps - 1  # every step after the first, which fills the caches through PyTorch
    want = decode_steps(reference, memory.double(), lens, xs.double(), beams)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5, msg=lambda m, s=step: f"step {s}: {m}")


@needs_layers
@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), beams=st.integers(1, 3), H=st.integers(1, 4), Dh=st.sampled_from([1, 5, 32, 64]),
       F=st.integers(1, 33), Ts=st.integers(1, 9), steps=st.integers(2, 5), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_decoder_step_shapes(B: int, beams: int, H: int, Dh: int, F: int, Ts: int, steps: int, bias: bool,
                             seed: int) -> None:
    D = H * Dh
    layer = randomized(TransformerDecoderLayer(D, H, F), seed)
    if not bias:  # attention without biases (MultiHeadAttention(bias=False) leaves them None)
        for attn in (layer.self_attn, layer.cross_attn):
            attn.in_proj_bias, attn.out_proj.bias = None, None
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(B, Ts, D, generator=g)
    lens = torch.randint(0, Ts + 1, (B,), generator=g)
    xs = torch.randn(steps, B * beams, 1, D, generator=g)
    got = decode_steps(layer, memory, lens, xs, beams)
    want = decode_steps(copy.deepcopy(layer).double(), memory.double(), lens, xs.double(), beams)
    with pytest.MonkeyPatch.context() as mp:  # PyTorch's own float32 path: the rounding error to expect
        mp.setattr(native, "decoder_layer_step", lambda *args, **kwargs: None)
        pytorch = decode_steps(layer, memory, lens, xs, beams)
    for a, b, c in zip(got, want, pytorch, strict=True):
        error, expected = (a.double() - b).abs().max().item(), (c.double() - b).abs().max().item()
        assert error <= 4 * expected + 1e-6 * (1 + b.abs().max().item()), (error, expected)


@needs_layers
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("lens", [None, [5, 0, 2], [40, 0, 33, 32, 7]])
def test_encoder_layer_equals_pytorch_in_float64(norm_first: bool, activation: str, lens: list[int] | None) -> None:
    """Every position, padding included (its queries attend to the row's real keys, as on PyTorch's paths); rows of
    more than 32 keys take the kernel's matrix-product attention, shorter ones its one-query loop."""
    layer = randomized(TransformerEncoderLayer(32, 4, 48, activation=activation, norm_first=norm_first), seed=11)
    shape = (3, 5, 32) if lens is None or len(lens) == 3 else (len(lens), max(lens), 32)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    valid = None if lens is None else torch.tensor(lens)
    with torch.inference_mode():
        got = layer.compiled_forward(x, valid)
        want = copy.deepcopy(layer).double()(x.double(), valid).output
    assert got is not None
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)


@needs_layers
def test_the_layers_decline_what_they_do_not_do() -> None:
    layer = randomized(TransformerDecoderLayer(16, 2, 8), seed=1)
    encoder = randomized(TransformerEncoderLayer(16, 2, 8), seed=1)
    memory, lens, x = torch.randn(2, 3, 16), torch.tensor([3, 2]), torch.randn(2, 1, 16)
    self_cache, cross_cache = KVCache(), KVCache(static=True)
    with torch.inference_mode():
        layer.step(x, memory, lens, self_cache, cross_cache)  # fills both caches
        filled = self_cache.key.clone()
        assert layer.compiled_step(x.double(), lens, self_cache, cross_cache, 1) is None  # float64
        assert layer.compiled_step(x[:1], lens, self_cache, cross_cache, 1) is None  # rows != cache rows
        assert layer.compiled_step(x, lens.float(), self_cache, cross_cache, 1) is None  # float lengths
        assert encoder.compiled_forward(torch.randn(2, 4, 16).double(), None) is None
        layer.ffn.activation = torch.tanh  # an activation the kernels do not know
        assert layer.compiled_step(x, lens, self_cache, cross_cache, 1) is None
        assert encoder.compiled_forward(torch.randn(2, 4, 16), torch.tensor([4, 1])) is not None
    torch.testing.assert_close(self_cache.key, filled)  # nothing was appended by the declined calls
    with torch.inference_mode():  # the pointers kept for this layer are not taken for inputs of another width
        wide, wide_self, wide_cross = torch.randn(2, 1, 24), KVCache(), KVCache(static=True)
        wide_self.update(torch.randn(2, 2, 3, 12), torch.randn(2, 2, 3, 12))
        wide_cross.update(torch.randn(2, 2, 3, 12), torch.randn(2, 2, 3, 12))
        layer.ffn.activation = torch.nn.functional.relu
        assert layer.compiled_step(x, lens, self_cache, cross_cache, 1) is not None  # keeps the pointers
        assert native.decoder_layer_step(
            wide, layer._compiled_weights(), (1e-5,) * 3, norm_first=True, activation="relu", num_heads=2,
            self_cache=wide_self, cross_key=wide_cross.key, cross_value=wide_cross.value, valid_lens=lens,
            owner=layer) is None
    lib = native._lib()
    lib.attnlab_set_sgemm(None)  # no BLAS: the layers keep PyTorch's path
    try:
        with torch.inference_mode():
            assert encoder.compiled_forward(torch.randn(2, 4, 16), None) is None
    finally:
        lib.attnlab_set_sgemm(native._blas_sgemm())
    x_grad = torch.randn(2, 4, 16, requires_grad=True)
    assert encoder.compiled_forward(x_grad, None) is None  # autograd records: PyTorch's path


@needs_layers
def test_kept_weight_pointers_follow_new_weights() -> None:
    """The layer's checked pointers are reused only while it holds the same tensors with the same data."""
    layer = randomized(TransformerDecoderLayer(16, 2, 12), seed=4)
    memory, lens = torch.randn(2, 3, 16), torch.tensor([3, 2])
    xs = torch.randn(4, 2, 1, 16)
    decode_steps(layer, memory, lens, xs, 1)  # keeps the pointers
    with torch.no_grad():
        layer.norm1.weight.data = torch.randn(16)  # new data in the same Parameter object
        layer.ffn.linear1.weight = torch.nn.Parameter(torch.randn(12, 16))  # a new Parameter object
        layer.cross_attn.in_proj_weight.mul_(2.0)  # in place: the same data pointer, read afresh by the kernel
    got = decode_steps(layer, memory, lens, xs, 1)
    want = decode_steps(copy.deepcopy(layer).double(), memory.double(), lens, xs.double(), 1)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5)


@needs_layers
def test_without_a_blas_the_layers_keep_pytorch(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    saved = dict(native._state)
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_blas_sgemm", lambda: None)
    native._reset()
    try:
        assert native.available()
        assert native.status().endswith("; the compiled layers are off: no usable sgemm_ in PyTorch's libraries")
        layer = randomized(TransformerDecoderLayer(16, 2, 8), seed=2)
        memory, lens, xs = torch.randn(2, 3, 16), torch.tensor([3, 1]), torch.randn(3, 2, 1, 16)
        calls = count_calls(monkeypatch, "decoder_layer_step")
        got = decode_steps(layer, memory, lens, xs, 1)
        assert calls["ran"] == 0
        want = decode_steps(copy.deepcopy(layer).double(), memory.double(), lens, xs.double(), 1)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5)
    finally:
        native._reset()
        native._state.update(saved)


def test_next_slot_rebuilds_buffers_that_do_not_hold_the_cache() -> None:
    """A cache whose ``key`` was replaced (here by fewer rows) gets buffers made from it, so a kernel writing row
    ``r`` of the buffer never writes past it."""
    cache = KVCache()
    cache.update(torch.randn(4, 2, 3, 8), torch.randn(4, 2, 3, 8))
    cache.update(torch.randn(4, 2, 1, 8), torch.randn(4, 2, 1, 8))  # now in buffers of 4 rows
    cache.key, cache.value = cache.key[:2].clone(), cache.value[:2].clone()  # 2 rows, not views of the buffers
    kept = cache.key.clone()
    key_buffer, value_buffer, T = cache.next_slot()
    assert T == 4 and key_buffer.shape[:2] == (2, 2) and value_buffer.shape[:2] == (2, 2)
    torch.testing.assert_close(key_buffer[:, :, :4], kept)
    assert cache.key.shape == (2, 2, 5, 8) and cache.key.data_ptr() == key_buffer.data_ptr()
