"""Small models for the explanation tests: random ones, and one built so that a single known token decides."""

from __future__ import annotations

import pytest
import torch

from attnlab.core.model_config import Seq2SeqConfig, TransformerClassifierConfig, TransformerConfig, ViTConfig
from attnlab.models.classifier import TransformerClassifier
from attnlab.models.seq2seq import Seq2Seq
from attnlab.models.transformer import Transformer
from attnlab.models.vit import VisionTransformer

KEYWORD = 7  # the token id that decides the constructed classifier
VOCAB = 20


def keyword_classifier() -> TransformerClassifier:
    """A Transformer classifier whose prediction depends on token ``KEYWORD`` only.

    Its encoder layer is switched off (all its weights 0, so the pre-LN residual passes ``x`` through), every
    position adds the same vector ``p`` with mean 0 and zeros in dims 0-1, and every other token's embedding is
    mean-zero with zeros in dims 0-1 too; the keyword's is ``(2, -2, 0, ...)``. After the final LayerNorm only the
    keyword has anything in dims 0-1; the pooling query and the classifier read only those dims, so the pooling
    attends to the keyword and the logits are ``(+z, -z)`` with it and ``0`` without it.
    """
    cfg = TransformerClassifierConfig(d_model=8, num_heads=2, ffn_dim=8, num_layers=1, dropout=0.0,
                                      positional="learned", pooling="scaled_dot", max_len=32)
    model = TransformerClassifier(cfg, VOCAB)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.layers.parameters():
            p.zero_()
        body = torch.randn(VOCAB, 6, generator=g)
        body = body - body.mean(1, keepdim=True)  # mean 0, so LayerNorm leaves dims 0-1 at exactly 0
        model.embedding.weight.zero_()
        model.embedding.weight[1:, 2:] = 0.3 * body[1:]
        model.embedding.weight[KEYWORD] = torch.tensor([2.0, -2.0, 0, 0, 0, 0, 0, 0])
        position = torch.tensor([0.0, 0.0, 1.0, -1.0, 1.0, -1.0, 0.5, -0.5])
        model.positional.embedding.weight.copy_(position.expand_as(model.positional.embedding.weight))
        model.pooling.key_proj.weight.copy_(torch.eye(8))
        model.pooling.queries.zero_()
        model.pooling.queries[0, :2] = torch.tensor([6.0, -6.0])
        model.classifier.weight.zero_()
        model.classifier.weight[0, :2] = torch.tensor([-0.3, 0.3])
        model.classifier.weight[1, :2] = torch.tensor([0.3, -0.3])
        model.classifier.bias.zero_()
    return model.eval()


@pytest.fixture
def keyword_model() -> TransformerClassifier:
    return keyword_classifier()


@pytest.fixture
def random_classifier() -> TransformerClassifier:
    torch.manual_seed(0)
    cfg = TransformerClassifierConfig(d_model=16, num_heads=2, ffn_dim=16, num_layers=2, dropout=0.0, max_len=32,
                                      pooling_queries=2)
    return TransformerClassifier(cfg, VOCAB).eval()


@pytest.fixture
def random_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(image_size=8, patch_size=4, in_channels=1, num_classes=3, d_model=16,
                                       num_heads=2, ffn_dim=16, num_layers=2, dropout=0.0)).eval()


@pytest.fixture
def random_translator() -> Transformer:
    torch.manual_seed(0)
    # gelu: a smooth model, so 32 integration steps are accurate (with relu's kinks IG converges slowly)
    cfg = TransformerConfig(d_model=16, num_heads=2, ffn_dim=16, encoder_layers=2, decoder_layers=2, dropout=0.0,
                            max_len=32, activation="gelu")
    return Transformer(cfg, VOCAB, VOCAB).eval()


@pytest.fixture
def keyword_id() -> int:
    """The token id that decides :func:`keyword_classifier`."""
    return KEYWORD


@pytest.fixture
def random_seq2seq() -> Seq2Seq:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(embed_dim=12, hidden_size=16, num_layers=1, rnn="gru", bidirectional=True, dropout=0.0,
                        attention="additive")
    return Seq2Seq(cfg, VOCAB, VOCAB).eval()
