"""The one-step inference path of the Transformer decoder equals the general path, and steps aside when watched."""

from __future__ import annotations

import pytest
import torch

from attnlab.attention import KVCache, trace
from attnlab.attention.multihead import PathPolicy
from attnlab.core.model_config import TransformerConfig
from attnlab.models import build_model
from attnlab.models.transformer import TransformerDecoderLayer, plain_inference


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("second_len", [4, 0])  # 0: a row with nothing to attend to (the kernel's guarded case)
@pytest.mark.parametrize("small", [0, 256])  # one-query steps on the kernel, or on the plain matmuls
def test_layer_step_equals_the_general_path(norm_first, beams, second_len, small):
    torch.manual_seed(0)
    layer = TransformerDecoderLayer(16, 4, 32, dropout=0.3, norm_first=norm_first).eval()
    for attention in (layer.self_attn, layer.cross_attn):
        attention.policy = PathPolicy(small_scores=small, small_scores_one_query=small)
    B, Ts, T = 2, 6, 5
    memory = torch.randn(B, Ts, 16)
    memory[1, second_len:] = float("nan")  # padding never reaches an output, on either path
    lens = torch.tensor([6, second_len])
    x = torch.randn(B * beams, T, 16)
    caches = [(KVCache(), KVCache(static=True)) for _ in range(2)]
    with torch.no_grad():
        for t in range(T):
            general = layer(x[:, t:t + 1], memory, lens, self_cache=caches[0][0], cross_cache=caches[0][1],
                            beams=beams).output
            fast = layer.step(x[:, t:t + 1], memory, lens, caches[1][0], caches[1][1], beams)
            torch.testing.assert_close(fast, general, rtol=1e-6, atol=1e-6)
            assert torch.isfinite(fast).all()
    if beams == 1:  # the first step also equals the teacher-forced pass at position 0
        full = layer(x, memory, lens).output
        with torch.no_grad():
            first = layer.step(x[:, :1], memory, lens, KVCache(), KVCache(static=True))
        torch.testing.assert_close(first, full[:, :1], rtol=1e-5, atol=1e-5)


def _model():
    torch.manual_seed(0)
    config = TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2, dropout=0.1)
    return build_model(config, 20, 20).eval()


def test_plain_inference_only_when_nothing_watches():
    model = _model()
    layers = model.decoder_layers
    with torch.no_grad():
        assert plain_inference(layers, need_weights=False)
        assert not plain_inference(layers, need_weights=True)
        with trace():
            assert not plain_inference(layers, need_weights=False)
        handle = layers[1].cross_attn.register_weights_hook(lambda m, w: None)
        assert not plain_inference(layers, need_weights=False)
        handle.remove()
        handle = layers[0].ffn.linear1.register_forward_hook(lambda m, i, o: None)
        assert not plain_inference(layers, need_weights=False)
        handle.remove()
        model.train()
        assert not plain_inference(layers, need_weights=False)
        model.eval()
    assert not plain_inference(layers, need_weights=False)  # autograd on


def test_a_hooked_decoder_still_sees_every_step():
    model = _model()
    seen = []
    handle = model.decoder_layers[0].self_attn.register_forward_hook(lambda m, i, o: seen.append(1))
    src, lens = torch.randint(4, 20, (2, 5)), torch.tensor([5, 3])
    with torch.no_grad():
        state = model.encode(src, lens)
        for _ in range(3):
            out = model.decode_step(torch.full((2,), 1), state)
            state = out.state
        plain = out.logits
    handle.remove()
    assert len(seen) == 3
    with torch.no_grad():  # the same logits without the hook (the one-step path)
        state = model.encode(src, lens)
        for _ in range(3):
            out = model.decode_step(torch.full((2,), 1), state)
            state = out.state
    torch.testing.assert_close(out.logits, plain, rtol=1e-6, atol=1e-6)
