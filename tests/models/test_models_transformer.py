"""Transformer: reference equality with torch.nn, KV-cached decoding == full forward, padding, maps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from models_helpers import padded_batch
from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.core.model_config import TransformerConfig
from attnlab.models import Transformer, TransformerState

SRC_V, TGT_V = 21, 23
SMALL = {"d_model": 16, "num_heads": 4, "ffn_dim": 32, "encoder_layers": 2, "decoder_layers": 2, "dropout": 0.0,
         "max_len": 64}


def _model(**overrides: object) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(**{**SMALL, **overrides}), SRC_V, TGT_V).eval()


def _batch(seed: int, src_lens: list[int], tgt_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src, lens = padded_batch(src_lens, SRC_V, generator=g)
    tgt, _ = padded_batch([tgt_len] * len(src_lens), TGT_V, generator=g)
    return src, lens, tgt


def _to_torch_names(name: str) -> str:
    """Our parameter names -> torch.nn.TransformerEncoder/DecoderLayer's (our conversion code)."""
    return name.replace("ffn.", "").replace("cross_attn.", "multihead_attn.")


@pytest.mark.parametrize("norm_first", [True, False])
def test_matches_torch_nn_transformer(norm_first: bool) -> None:
    model = _model(norm_first=norm_first, activation="gelu")
    d, h, f = SMALL["d_model"], SMALL["num_heads"], SMALL["ffn_dim"]
    enc_layer = nn.TransformerEncoderLayer(d, h, f, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=norm_first)
    dec_layer = nn.TransformerDecoderLayer(d, h, f, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=norm_first)
    ref_encoder = nn.TransformerEncoder(enc_layer, 2, norm=nn.LayerNorm(d) if norm_first else None,
                                        enable_nested_tensor=False).eval()
    ref_decoder = nn.TransformerDecoder(dec_layer, 2, norm=nn.LayerNorm(d) if norm_first else None).eval()
    for ours, ref, norm in ((model.encoder_layers, ref_encoder, model.encoder_norm),
                            (model.decoder_layers, ref_decoder, model.decoder_norm)):
        for i, layer in enumerate(ours):
            missing, unexpected = ref.layers[i].load_state_dict(
                {_to_torch_names(k): v for k, v in layer.state_dict().items()}, strict=True)
            assert not missing and not unexpected
        if norm_first:
            ref.norm.load_state_dict(norm.state_dict())

    src, lens, tgt = _batch(0, [7, 4, 2], 6)
    with torch.no_grad():
        logits = model(src, lens, tgt).logits
        src_x = model.src_positional(model.src_embedding(src) * model.embed_scale)
        tgt_x = model.tgt_positional(model.tgt_embedding(tgt) * model.embed_scale)
        pad = src == 0  # torch: True = ignore
        causal = nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.bool)
        memory = ref_encoder(src_x, src_key_padding_mask=pad)
        hidden = ref_decoder(tgt_x, memory, tgt_mask=causal, memory_key_padding_mask=pad)
        ref_logits = model.output(hidden)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("norm_first", "positional", "share"), [
    (True, "sinusoidal", False), (False, "learned", False), (True, "learned", True), (False, "sinusoidal", True),
])
def test_cached_decode_step_equals_full_forward(norm_first: bool, positional: str, share: bool) -> None:
    model = Transformer(TransformerConfig(**{**SMALL, "norm_first": norm_first, "positional": positional,
                                             "share_embeddings": share}), SRC_V, SRC_V).eval()
    src, lens, _ = _batch(1, [9, 5, 1], 1)
    tgt = torch.randint(4, SRC_V, (3, 45), generator=torch.Generator().manual_seed(9))  # Tq*Tk > 40*40: fused path
    full = model(src, lens, tgt, need_weights=True)
    state = model.encode(src, lens)
    logits, cross = [], []
    for t in range(tgt.shape[1]):
        step = model.decode_step(tgt[:, t], state, need_weights=True)
        state = step.state
        logits.append(step.logits)
        cross.append(step.cross_weights)
    assert isinstance(state, TransformerState) and state.offset == 45 and len(state.self_caches[0]) == 45
    torch.testing.assert_close(torch.stack(logits, 1), full.logits, rtol=1e-5, atol=1e-5)
    expected_cross = full.attention.cross[-1].mean(dim=1)  # last layer, averaged over heads: (B, Tt, Ts)
    torch.testing.assert_close(torch.stack(cross, 1), expected_cross, rtol=1e-5, atol=1e-6)
    assert model.decode_step(tgt[:, 0], model.encode(src, lens)).cross_weights is None


def test_source_padding_does_not_change_results() -> None:
    model = _model()
    src, lens, tgt = _batch(2, [6, 3], 5)
    out = model(src, lens, tgt)
    wider = model(F.pad(src, (0, 4)), lens, tgt)
    torch.testing.assert_close(wider.logits, out.logits, rtol=1e-5, atol=1e-5)
    alone = model(src[1:, :3], lens[1:], tgt[1:])
    torch.testing.assert_close(alone.logits[0], out.logits[1], rtol=1e-5, atol=1e-5)
    noisy = src.clone()
    noisy[1, 3:] = 7  # garbage after the real tokens is ignored too
    torch.testing.assert_close(model(noisy, lens, tgt).logits, out.logits, rtol=1e-5, atol=1e-5)


def test_attention_maps() -> None:
    model = _model(encoder_layers=3)
    src, lens, tgt = _batch(3, [5, 2], 4)
    out = model(src, lens, tgt, need_weights=True)
    maps = out.attention
    assert maps.encoder_self.shape == (3, 2, 4, 5, 5)
    assert maps.decoder_self.shape == (2, 2, 4, 4, 4)
    assert maps.cross.shape == (2, 2, 4, 4, 5)
    for weights in (maps.encoder_self, maps.decoder_self, maps.cross):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.all(maps.encoder_self[:, 1, :, :, 2:] == 0)  # padding keys get no weight
    assert torch.all(maps.cross[:, 1, :, :, 2:] == 0)
    assert torch.all(maps.decoder_self.triu(diagonal=1) == 0)  # no attention to the future
    plain = model(src, lens, tgt)
    assert plain.attention is None
    torch.testing.assert_close(plain.logits, out.logits, rtol=1e-5, atol=1e-5)


def test_embedding_sharing_and_tying() -> None:
    shared = Transformer(TransformerConfig(**SMALL, share_embeddings=True, tie_output=True), 30, 30)
    assert shared.src_embedding is shared.tgt_embedding
    assert shared.output.weight is shared.tgt_embedding.weight
    separate = Transformer(TransformerConfig(**SMALL, share_embeddings=False, tie_output=False), 30, 31)
    assert separate.src_embedding is not separate.tgt_embedding
    assert separate.output.weight is not separate.tgt_embedding.weight
    count = sum(p.numel() for p in shared.parameters())
    assert count < sum(p.numel() for p in separate.parameters()) - 2 * 30 * 16
    with pytest.raises(ConfigError, match="share_embeddings"):
        Transformer(TransformerConfig(**SMALL, share_embeddings=True), 30, 31)


def test_reorder_matches_reordered_inputs() -> None:
    model = _model()
    src, lens, tgt = _batch(4, [6, 4, 3], 3)
    state = model.encode(src, lens)
    for t in range(2):
        state = model.decode_step(tgt[:, t], state).state
    index = torch.tensor([2, 0, 0])
    reordered = state.reorder(index)
    direct = model.encode(src[index], lens[index])
    for t in range(2):
        direct = model.decode_step(tgt[index, t], direct).state
    torch.testing.assert_close(model.decode_step(tgt[index, 2], reordered).logits,
                               model.decode_step(tgt[index, 2], direct).logits, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter() -> None:
    model = _model(positional="learned", tie_output=False).train()
    src, lens, tgt = _batch(5, [5, 3], 4)
    model(src, lens, tgt).logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize("tie", [True, False])
def test_unprojected_forward_returns_the_states_the_output_layer_maps_to_logits(tie: bool) -> None:
    model = _model(tie_output=tie)
    src, lens, tgt = _batch(6, [5, 2], 4)
    full = model(src, lens, tgt, need_weights=True)
    bare = model(src, lens, tgt, need_weights=True, project=False)
    assert bare.logits is None and bare.hidden.shape == (2, 4, SMALL["d_model"])
    assert model.output_projection() is model.output
    torch.testing.assert_close(model.output_projection()(bare.hidden), full.logits, rtol=0, atol=0)
    torch.testing.assert_close(bare.attention.cross, full.attention.cross, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ pointer-generator
def _copy_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(**SMALL, share_embeddings=True, copy=True), SRC_V, SRC_V).eval()


def _copy_oracle(model: Transformer, src: torch.Tensor, lens: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The pointer-generator distribution written out position by position, in float64 (See et al. 2017, eq. 9)."""
    memory, _ = model._encode(src, lens, need_weights=False)
    hidden, _ = model._decode(tgt, memory, lens)
    out = torch.zeros(*tgt.shape, SRC_V, dtype=torch.float64)
    for b in range(src.shape[0]):
        n = int(lens[b])
        keys = model.copy_key(memory[b, :n]).double()  # (n, D)
        for t in range(tgt.shape[1]):
            h = hidden[b, t].double()
            attn = torch.softmax(keys @ model.copy_query(hidden[b, t]).double() / math.sqrt(h.shape[0]), dim=0)
            context = attn @ memory[b, :n].double()
            gate = torch.sigmoid(model.copy_gate(torch.cat([hidden[b, t], context.float()])).double())
            vocab = torch.softmax(model.output(hidden[b, t]).double(), dim=0)
            for i in range(n):  # every copy of a token adds its weight
                out[b, t, src[b, i]] += (1 - gate[0]) * attn[i]
            out[b, t] += gate[0] * vocab
    return out


def test_copy_output_is_the_pointer_generator_mixture() -> None:
    model = _copy_model()
    src, lens, tgt = _batch(6, [7, 4], 5)
    tgt = tgt.clamp_max(SRC_V - 1)  # one vocabulary for both sides
    src[0, :3] = 9  # a repeated source token collects the weight of all its copies
    logp = model(src, lens, tgt).logits
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 5))  # a distribution, returned as log-probs
    torch.testing.assert_close(logp.exp().double(), _copy_oracle(model, src, lens, tgt), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(F.log_softmax(logp, -1), logp, rtol=0, atol=1e-5)  # losses/decoders see log-probs


def test_copy_gate_closed_puts_all_mass_on_source_tokens() -> None:
    model = _copy_model()
    with torch.no_grad():
        model.copy_gate.weight.zero_()
        model.copy_gate.bias.fill_(-40.0)  # p_gen ~ 0: copy only
    src, lens, tgt = _batch(7, [6, 3], 4)
    tgt = tgt.clamp_max(SRC_V - 1)
    probs = model(src, lens, tgt).logits.exp()
    for b in range(2):
        seen = set(src[b, :int(lens[b])].tolist())
        on_source = probs[b][:, sorted(seen)].sum(-1)
        torch.testing.assert_close(on_source, torch.ones(4), rtol=0, atol=1e-5)  # padding ids get nothing


def test_copy_cached_decoding_equals_full_forward_and_reorders() -> None:
    model = _copy_model(1)
    src, lens, _ = _batch(8, [9, 5, 1], 1)
    tgt = torch.randint(4, SRC_V, (3, 12), generator=torch.Generator().manual_seed(3))
    full = model(src, lens, tgt).logits
    state = model.encode(src, lens)
    steps = []
    for t in range(tgt.shape[1]):
        out = model.decode_step(tgt[:, t], state)
        state = out.state
        steps.append(out.logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)
    index = torch.tensor([2, 0, 0])
    direct = model.encode(src[index], lens[index])
    for t in range(tgt.shape[1]):
        direct = model.decode_step(tgt[index, t], direct).state
    torch.testing.assert_close(model.decode_step(tgt[index, 0], state.reorder(index)).logits,
                               model.decode_step(tgt[index, 0], direct).logits, rtol=1e-5, atol=1e-5)


def test_copy_needs_one_vocabulary_and_trains_every_parameter() -> None:
    with pytest.raises(ConfigError, match="copy.*share_embeddings"):
        TransformerConfig(**SMALL, copy=True)
    model = _copy_model().train()
    src, lens, tgt = _batch(9, [5, 3], 4)
    tgt = tgt.clamp_max(SRC_V - 1)
    F.nll_loss(model(src, lens, tgt).logits.flatten(0, 1), tgt.flatten()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_copy_has_no_linear_output_projection_but_projects_any_slice_of_positions() -> None:
    model = _copy_model().eval()
    src, lens, tgt = _batch(7, [4, 3], 5)
    assert model.output_projection() is None and model.sliced_output()
    full = model(src, lens, tgt)
    bare = model(src, lens, tgt, project=False)
    assert bare.logits is None and bare.project is not None
    torch.testing.assert_close(bare.hidden, full.hidden)
    for a, b in [(0, 5), (0, 1), (2, 4), (4, 5)]:
        torch.testing.assert_close(bare.project(bare.hidden[:, a:b]), full.logits[:, a:b], rtol=1e-5, atol=1e-6)
    assert model(src, lens, tgt).project is None and not Transformer(TransformerConfig(**SMALL), 9, 9).sliced_output()


def test_copy_under_bf16_autocast_is_a_float32_distribution() -> None:
    model = _copy_model(2)
    src, lens, tgt = _batch(10, [6, 2], 3)
    tgt = tgt.clamp_max(SRC_V - 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp = model(src, lens, tgt).logits
        step = model.decode_step(tgt[:, 0], model.encode(src, lens)).logits
    assert logp.dtype == torch.float32 and step.dtype == torch.float32
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(step, logp[:, 0], rtol=0.05, atol=0.05)  # bf16 matmuls before the mixture
