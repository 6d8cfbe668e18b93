"""Attention pooling, the text classifiers and the Vision Transformer: shapes, masking, learnability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models_helpers import marker_sequences, padded_batch, quadrant_images
from torch import nn

from attnlab.core.model_config import RNNClassifierConfig, TransformerClassifierConfig, ViTConfig
from attnlab.models import AttentionPooling, RNNAttentionClassifier, TransformerClassifier, VisionTransformer
from attnlab.models.vit import PatchEmbedding

TINY_VIT = ViTConfig(image_size=8, patch_size=4, in_channels=1, num_classes=4, d_model=32, num_heads=4, ffn_dim=64,
                     num_layers=1, dropout=0.0)


def _text_models() -> list[nn.Module]:
    torch.manual_seed(0)
    return [RNNAttentionClassifier(RNNClassifierConfig(hidden_size=16, embed_dim=16, dropout=0.0), 12),
            TransformerClassifier(TransformerClassifierConfig(d_model=32, num_heads=4, ffn_dim=64, num_layers=1,
                                                              dropout=0.0, max_len=16), 12)]


def test_attention_pooling_masks_padding() -> None:
    torch.manual_seed(0)
    pool = AttentionPooling(6, num_queries=3)
    x = torch.randn(2, 5, 6)
    pooled, weights = pool(x, valid_lens=torch.tensor([5, 2]))
    assert pooled.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    assert torch.all(weights[1, :, 2:] == 0)
    torch.testing.assert_close(pooled, weights @ x)  # a convex combination of the positions
    assert not torch.allclose(weights[0, 0], weights[0, 1])  # the queries differ


def test_scaled_dot_pooling_equals_a_loop_oracle() -> None:
    """score_t = q . (W_k h_t) / sqrt(D), softmax over the real positions, weighted sum of the h_t."""
    torch.manual_seed(0)
    pool = AttentionPooling(6, num_queries=2, scoring="scaled_dot").double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    lens = [5, 3]
    pooled, weights = pool(x, valid_lens=torch.tensor(lens))
    for b, n in enumerate(lens):
        for q in range(2):
            scores = torch.stack([pool.queries[q] @ (pool.key_proj.weight @ x[b, t]) / 6 ** 0.5 for t in range(n)])
            expected = torch.softmax(scores, 0)
            torch.testing.assert_close(weights[b, q, :n], expected)
            torch.testing.assert_close(pooled[b, q], (expected[:, None] * x[b, :n]).sum(0))
            assert torch.all(weights[b, q, n:] == 0)
    with pytest.raises(ValueError, match="scoring"):
        AttentionPooling(6, scoring="cosine")


def test_saturated_additive_pooling_is_uniform_and_scaled_dot_is_not() -> None:
    """Why the option exists: a large trained query saturates tanh, and additive pooling goes flat."""
    torch.manual_seed(0)
    x = torch.randn(1, 7, 8)
    additive = AttentionPooling(8)
    with torch.no_grad():
        additive.queries.mul_(1e3)
    _, flat = additive(x)
    torch.testing.assert_close(flat, torch.full((1, 1, 7), 1 / 7))
    dot = AttentionPooling(8, scoring="scaled_dot")
    with torch.no_grad():
        dot.queries.mul_(1e3)
    _, peaked = dot(x)
    assert peaked.max() > 0.99  # a large query sharpens dot-product attention instead of flattening it


@pytest.mark.parametrize("index", [0, 1], ids=["rnn", "transformer"])
def test_text_classifier_shapes_and_padding_invariance(index: int) -> None:
    model = _text_models()[index].eval()
    tokens, lens = padded_batch([6, 2, 4], 12, generator=torch.Generator().manual_seed(1))
    out = model(tokens, need_weights=True)  # lengths derived from padding
    assert out.logits.shape == (3, 2)
    assert out.pooling.shape == (3, 1, 6) and torch.all(out.pooling[1, :, 2:] == 0)
    if index == 1:
        assert out.encoder_self.shape == (1, 3, 4, 6, 6)
    else:
        assert out.encoder_self is None
    wider = model(F.pad(tokens, (0, 3)), lens)
    torch.testing.assert_close(wider.logits, out.logits, rtol=1e-5, atol=1e-5)
    assert wider.pooling is None  # only returned when asked for


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1], ids=["rnn", "transformer"])
def test_text_classifier_learns_marker_rule(index: int) -> None:
    model = _text_models()[index]
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        tokens, lens, labels = marker_sequences(64, g)
        loss = F.cross_entropy(model(tokens, lens).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens, lens, labels = marker_sequences(256, g)
    with torch.no_grad():
        accuracy = (model(tokens, lens).logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.9


def test_patch_embedding_order_and_errors() -> None:
    embed = PatchEmbedding(1, 4, patch_size=2)
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, 2:, :2] = 1.0  # bottom-left patch = patch 2 in row-major order
    patches = embed(images) - embed(torch.zeros(1, 1, 4, 4))  # (1, 4, D), bias removed
    assert patches.shape == (1, 4, 4)
    assert [bool(p.abs().sum() > 0) for p in patches[0]] == [False, False, True, False]
    with pytest.raises(ValueError, match="patch_size"):
        embed(torch.zeros(1, 1, 5, 5))


def test_vit_shapes_and_attention_maps() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(image_size=8, patch_size=2, in_channels=3, num_classes=5, d_model=16,
                                      num_heads=2, ffn_dim=32, num_layers=3, dropout=0.0)).eval()
    images = torch.randn(2, 3, 8, 8)
    out = vit(images, need_weights=True)
    assert out.logits.shape == (2, 5)
    assert out.encoder_self.shape == (3, 2, 2, 17, 17)  # (L, B, H, N + 1, N + 1)
    torch.testing.assert_close(out.encoder_self.sum(-1), torch.ones(3, 2, 2, 17))
    plain = vit(images)
    assert plain.encoder_self is None and plain.pooling is None
    torch.testing.assert_close(plain.logits, out.logits, rtol=1e-5, atol=1e-5)
    vit.train()
    vit(images).logits.sum().backward()
    assert all(p.grad is not None for p in vit.parameters())


@pytest.mark.slow
def test_vit_learns_quadrant_rule() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(TINY_VIT)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(vit.parameters(), lr=3e-3)
    for _ in range(80):
        images, labels = quadrant_images(64, g)
        loss = F.cross_entropy(vit(images).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, labels = quadrant_images(256, g)
    with torch.no_grad():
        accuracy = (vit(images).logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("which", ["rnn", "transformer", "vit"])
def test_a_few_training_steps_reach_and_move_every_parameter(which: str) -> None:
    """The few-step smoke test of the two slow "learns" tests above: their models, data and loop for 3 steps --
    logits of the right shape, a finite loss, a finite gradient for every parameter, and every parameter moved."""
    g = torch.Generator().manual_seed(2)
    if which == "vit":
        torch.manual_seed(0)
        model, batches, classes = VisionTransformer(TINY_VIT), [quadrant_images(16, g) for _ in range(3)], 4
    else:
        model = _text_models()[["rnn", "transformer"].index(which)]
        batches, classes = [marker_sequences(16, g) for _ in range(3)], 2
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for *inputs, labels in batches:
        logits = model(*inputs).logits
        assert logits.shape == (16, classes)
        loss = F.cross_entropy(logits, labels)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []
        opt.step()
    assert [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])] == []


def test_pooling_queries_word_dropout_and_bigrams() -> None:
    """Q pooling queries feed the classifier side by side; word dropout is training-only; bigram buckets make
    the representation depend on word order even for a bag-like reader."""
    from attnlab.models.classifier import bigram_ids, word_dropout

    torch.manual_seed(0)
    cfg = RNNClassifierConfig(hidden_size=8, embed_dim=8, dropout=0.0, pooling_queries=3, bigram_buckets=97,
                              word_dropout=0.5)
    model = RNNAttentionClassifier(cfg, 12)
    assert model.classifier.in_features == 3 * 16
    tokens, lens = padded_batch([6, 2, 4], 12, generator=torch.Generator().manual_seed(1))
    out = model.eval()(tokens, need_weights=True)
    assert out.pooling.shape == (3, 3, 6)
    torch.testing.assert_close(model(tokens).logits, out.logits)  # eval: word dropout off, deterministic
    model.train()
    a, b = model(tokens).logits, model(tokens).logits
    assert not torch.allclose(a, b)  # train: tokens are dropped at random
    # word dropout zeroes whole tokens and rescales the rest
    x = torch.ones(4, 50, 3)
    dropped = word_dropout(x, 0.5, training=True)
    assert set(dropped.unique().tolist()) <= {0.0, 2.0} and (dropped[..., 0] == dropped[..., 2]).all()
    assert word_dropout(x, 0.5, training=False) is x
    ids = bigram_ids(torch.tensor([[3, 5, 7], [5, 3, 7]]), 97)
    assert ids.min() >= 0 and ids.max() < 97
    assert ids[0, 1] != ids[1, 1]  # (3, 5) and (5, 3) are different bigrams
    with pytest.raises(Exception, match="bigram_buckets"):
        RNNClassifierConfig(bigram_buckets=-1)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["scaled_dot", "additive"])
def test_rnn_classifier_trains_under_cpu_bf16_autocast(rnn: str, pooling: str) -> None:
    # Under CPU autocast an LSTM returns bfloat16 states and a GRU float32; the pooling takes either.
    torch.manual_seed(0)
    model = RNNAttentionClassifier(RNNClassifierConfig(embed_dim=16, hidden_size=8, rnn=rnn, pooling=pooling,
                                                       num_classes=2), vocab_size=30)
    tokens, lens = torch.randint(4, 30, (3, 7)), torch.tensor([7, 4, 1])
    model.eval()  # no dropout: the two passes differ by precision alone
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens, lens, need_weights=True)
    reference = model(tokens, lens)
    assert out.pooling.shape == (3, 1, 7) and torch.isfinite(out.logits).all()
    assert (out.pooling[1, 0, 4:] == 0).all()  # padding still gets no weight
    torch.testing.assert_close(out.logits.float(), reference.logits, atol=0.05, rtol=0.05)  # bf16 resolution
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens, lens).logits
    F.cross_entropy(logits.float(), torch.tensor([0, 1, 0])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
