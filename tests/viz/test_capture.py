"""attnlab.capture: our modules, torch.nn.MultiheadAttention (also inside nn.Transformer*), Hugging Face models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import attnlab
from attnlab.attention import AdditiveAttention, KVCache, MultiHeadAttention
from attnlab.core.errors import ConfigError, DataError
from attnlab.viz.capture import capture

# PyTorch's own notes about its nested-tensor fast path, which these tests exercise on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")]


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _hook_counts(model: nn.Module) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]


# ----------------------------------------------------------------------------------------- PyTorch modules
@pytest.mark.parametrize("grad", [False, True])
def test_transformer_encoder_fast_path_outputs_unchanged(grad: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=True).eval()
    with torch.no_grad():
        enc.norm.bias.normal_()  # padded rows of the nested path become norm(0) = bias: make that visible
    assert enc.use_nested_tensor
    x = torch.randn(3, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 2 + [True] * 4])
    with torch.set_grad_enabled(grad):
        ref = enc(x, src_key_padding_mask=pad)
        with capture(enc) as maps:
            out = enc(x, src_key_padding_mask=pad)
        ref_w = enc.layers[0].self_attn(x, x, x, key_padding_mask=pad, need_weights=True,
                                        average_attn_weights=False)[1]
    assert_close(out, ref)  # padded positions included
    assert [r.name for r in maps] == ["layers.0.self_attn", "layers.1.self_attn"]
    assert {r.kind for r in maps} == {"encoder"} or {r.kind for r in maps} == {"self"}
    w = maps.stack(maps.kinds()[0])
    assert w.shape == (2, 3, 4, 6, 6) and not w.requires_grad and w.device.type == "cpu"
    assert_close(w[0], ref_w.detach())
    assert w[:, 2, :, :, 2:].abs().max() == 0  # no weight on padded keys
    assert enc.use_nested_tensor and _no_hooks(enc)


@pytest.mark.parametrize("batch_first", [True, False])
def test_nn_transformer_kinds_and_outputs(batch_first: bool) -> None:
    torch.manual_seed(1)
    model = nn.Transformer(16, 2, 2, 2, 32, dropout=0.0, batch_first=batch_first).eval()
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    if not batch_first:
        src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    with torch.no_grad():
        ref = model(src, tgt, tgt_mask=causal)
        with capture(model, src_tokens=list("abcde"), tgt_tokens=list("WXYZ")) as maps:
            out = model(src, tgt, tgt_mask=causal)
    assert_close(out, ref)
    assert maps.kinds() == ["encoder", "decoder", "cross"]
    assert [r.name for r in maps.layers("cross")] == ["decoder.layers.0.multihead_attn",
                                                      "decoder.layers.1.multihead_attn"]
    m = maps.to_maps()
    assert m.encoder_self.shape == (2, 2, 2, 5, 5)
    assert m.decoder_self.shape == (2, 2, 2, 4, 4)
    assert m.cross.shape == (2, 2, 2, 4, 5)
    assert torch.triu(m.decoder_self, diagonal=1).abs().max() == 0  # causal
    assert_close(m.cross.sum(-1), torch.ones(2, 2, 2, 4))
    cross = maps["decoder.layers.1.multihead_attn"]
    assert cross.query_tokens == list("WXYZ") and cross.key_tokens == list("abcde")


def test_nn_multihead_attention_caller_sees_what_it_asked_for() -> None:
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    ref_avg = mha(q, kv, kv)  # default: averaged weights
    ref_heads = mha(q, kv, kv, need_weights=False)
    with capture(mha) as maps:
        avg = mha(q, kv, kv)
        heads = mha(q, kv, kv, need_weights=True, average_attn_weights=False)
        none = mha(q, kv, kv, need_weights=False)
        unbatched = mha(q[0], kv[0], kv[0], need_weights=True, average_attn_weights=False)
    assert_close(avg[0], ref_avg[0])
    assert_close(avg[1], ref_avg[1])
    assert avg[1].shape == (2, 3, 5) and heads[1].shape == (2, 2, 3, 5) and unbatched[1].shape == (2, 3, 5)
    assert none[1] is None
    assert_close(none[0], ref_heads[0])
    assert avg[1].requires_grad  # the caller's weights keep their graph; recorded ones do not
    assert [c.weights.shape for c in maps.calls] == [(2, 2, 3, 5)] * 3 + [(1, 2, 3, 5)]
    assert all(c.kind == "cross" and not c.weights.requires_grad for c in maps.calls)
    assert_close(maps.calls[0].weights.mean(1), ref_avg[1].detach())


# ------------------------------------------------------------------------------------------ attnlab modules
def test_attnlab_multihead_self_and_cross() -> None:
    torch.manual_seed(3)
    mha = MultiHeadAttention(16, 4)
    x, mem = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    ref = mha(x, mem, need_weights=True)
    with capture(mha) as maps:
        out = mha(x, mem)
    assert out.weights is None  # not asked for, not handed back
    assert_close(out.output, ref.output)
    rec = maps[0]
    assert rec.kind == "cross" and rec.weights.shape == (2, 4, 3, 7)
    assert_close(rec.weights, ref.weights.detach())
    with capture(mha) as maps:
        out = mha(x, need_weights=True)
    assert out.weights is not None and maps[0].kind == "self"


def test_attnlab_incremental_decoding_is_merged_into_one_matrix() -> None:
    torch.manual_seed(4)
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 4, 16)
    full = mha(x, is_causal=True, need_weights=True).weights  # (1, 2, 4, 4)
    cache = KVCache()
    with capture(mha) as maps:
        for t in range(4):
            mha(x[:, t:t + 1], cache=cache, is_causal=True)
    assert len(maps.calls) == 4 and maps[0].calls == 4
    assert_close(maps[0].weights, full.detach())  # right-padded steps = the causal full pass


def test_scoring_module_records_one_head_per_step() -> None:
    torch.manual_seed(5)
    attn = AdditiveAttention(8, 6, 10)
    keys = torch.randn(2, 5, 6)
    lens = torch.tensor([5, 3])
    with capture(nn.ModuleDict({"decoder": nn.ModuleDict({"attention": attn})})) as maps:
        steps = [attn(torch.randn(2, 1, 8), keys, keys, valid_lens=lens).weights for _ in range(3)]
    rec = maps[0]
    assert rec.name == "decoder.attention" and rec.kind == "cross" and rec.weights.shape == (2, 1, 3, 5)
    assert_close(rec.weights[:, 0], torch.cat(steps, dim=1).detach())
    assert rec.weights[1, 0, :, 3:].abs().max() == 0


def test_repeated_full_passes_keep_the_last_one() -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    a, b = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    with capture(mha) as maps:
        mha(a, a, a)
        mha(b, b, b)
    ref = mha(b, b, b, average_attn_weights=False)[1]
    assert len(maps.calls) == 2 and maps[0].calls == 1
    assert_close(maps[0].weights, ref.detach())


# ------------------------------------------------------------------------------------------ errors, cleanup
def test_hooks_removed_and_settings_restored_after_an_exception() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=True).eval()
    with pytest.raises(RuntimeError, match="boom"), capture(enc):
        enc(torch.randn(1, 2, 8))
        raise RuntimeError("boom")
    assert _no_hooks(enc) and enc.use_nested_tensor
    with capture(enc) as maps:  # usable again afterwards
        enc(torch.randn(1, 2, 8))
    assert len(maps) == 1


def test_model_without_attention_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="found no attention inside Sequential"):
        capture(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_nested_capture_is_refused() -> None:
    mha = nn.MultiheadAttention(4, 1)
    with capture(mha), pytest.raises(ConfigError, match="already being captured"), capture(mha):
        pass
    assert _no_hooks(mha)


def test_empty_capture_and_missing_kind() -> None:
    mha = nn.MultiheadAttention(4, 1)
    with capture(mha) as maps:
        pass
    assert len(maps) == 0 and maps.module_names == [""]
    with pytest.raises(DataError, match="no cross attention was captured"):
        maps.stack("cross")


def test_top_level_capture_is_lazy() -> None:
    assert attnlab.capture is capture
    code = "import sys, attnlab; print(any(m.startswith('attnlab.viz') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -------------------------------------------------------------------------------------------- Hugging Face
def test_hf_bert_from_config() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(1, 40, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    impl, hooks = model.config._attn_implementation, _hook_counts(model)  # transformers has hooks of its own
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).last_hidden_state
        with capture(model) as maps:
            out = model(ids, attention_mask=mask).last_hidden_state
        assert model.config._attn_implementation == impl  # restored
        assert _hook_counts(model) == hooks
        model.config._attn_implementation = "eager"
        hf = model(ids, attention_mask=mask, output_attentions=True).attentions
        model.config._attn_implementation = impl
    assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert [r.name for r in maps] == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    assert maps.kinds() == ["encoder"]
    assert_close(maps.stack("encoder"), torch.stack(hf))
    assert maps.stack("encoder")[:, 1, :, :, 4:].abs().max() == 0


def test_hf_marian_from_config() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(7)
    cfg = transformers.MarianConfig(vocab_size=30, d_model=16, encoder_layers=2, decoder_layers=1,
                                    encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=29,
                                    decoder_start_token_id=29)
    model = transformers.MarianMTModel(cfg).eval()
    src, tgt = torch.randint(0, 29, (1, 5)), torch.randint(0, 29, (1, 3))
    with torch.no_grad():
        ref = model(input_ids=src, decoder_input_ids=tgt).logits
        with capture(model) as maps:
            out = model(input_ids=src, decoder_input_ids=tgt).logits
    assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert maps.kinds() == ["encoder", "decoder", "cross"]
    assert maps.stack("encoder").shape == (2, 1, 2, 5, 5)
    assert maps.stack("decoder").shape == (1, 1, 4, 3, 3)
    assert maps.stack("cross").shape == (1, 1, 4, 3, 5)
    assert maps.layers("cross")[0].name == "model.decoder.layers.0.encoder_attn"
    assert torch.triu(maps.stack("decoder"), diagonal=1).abs().max() == 0


# ---------------------------------------------------------------------------------- attnlab's own models
def test_capture_equals_the_models_own_attention_maps() -> None:
    from attnlab.core.model_config import TransformerConfig
    from attnlab.models.transformer import Transformer

    torch.manual_seed(8)
    cfg = TransformerConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=2, decoder_layers=2, dropout=0.0,
                            max_len=16)
    model = Transformer(cfg, 20, 20).eval()
    src, lens, tgt = torch.randint(1, 20, (2, 5)), torch.tensor([5, 3]), torch.randint(1, 20, (2, 4))
    own = model(src, lens, tgt, need_weights=True)
    with capture(model) as maps:
        out = model(src, lens, tgt)
    assert out.attention is None  # the caller did not ask for weights, and does not get them
    assert_close(out.logits, own.logits)
    assert [r.name for r in maps.layers("cross")] == ["decoder_layers.0.cross_attn", "decoder_layers.1.cross_attn"]
    got = maps.to_maps()
    for field in ("encoder_self", "decoder_self", "cross"):
        assert_close(getattr(got, field), getattr(own.attention, field).detach())
