"""Small attention classifiers: attention pooling, an RNN text classifier and a Transformer-encoder classifier.

Attention pooling replaces "take the last hidden state" or "average over time" with a learned weighted
average: a trained query scores every position with Bahdanau et al.'s (2015, eq. 6) additive function, and
the softmax of the scores weights the sum -- the attention layer of Yang et al. (2016), "Hierarchical
Attention Networks for Document Classification", eqs. 5-7. Several trained queries give several pooled
vectors (Lin et al., 2017, "A Structured Self-attentive Sentence Embedding"; Lee et al., 2019, "Set
Transformer", pooling by attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.attention import AdditiveAttention, ScaledDotProductAttention
from attnlab.attention.dropout import Dropout
from attnlab.attention.functional import build_mask, zero_unreachable
from attnlab.attention.multihead import WeightsHooks
from attnlab.attention.positional import positional_encoding
from attnlab.core.model_config import RNNClassifierConfig, TransformerClassifierConfig
from attnlab.core.types import AttentionOutput
from attnlab.models.rnn import RNNEncoder
from attnlab.models.transformer import TransformerEncoderLayer

__all__ = ["AttentionPooling", "ClassifierOutput", "RNNAttentionClassifier", "TransformerClassifier",
           "lengths_from_padding"]


@dataclass
class ClassifierOutput:
    """What every attnlab classifier returns (fields are ``None`` when the model has no such attention or
    ``need_weights`` was false; the type never changes).

    Attributes:
        logits: ``(B, C)`` class scores.
        encoder_self: ``(L, B, H, T, T)`` self-attention per layer and head (Transformer encoders, ViT).
        pooling: ``(B, Q, T)`` attention-pooling weights of the ``Q`` pooling queries over the positions.
    """

    logits: torch.Tensor
    encoder_self: torch.Tensor | None = None
    pooling: torch.Tensor | None = None


def lengths_from_padding(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """The valid lengths ``valid_lens`` ``(B,)`` (non-padding tokens per row) of right-padded ``tokens`` ``(B, T)``."""
    return (tokens != pad_id).sum(dim=1)


def bigram_ids(tokens: torch.Tensor, buckets: int) -> torch.Tensor:
    """``(B, T)`` bucket of the bigram ``(tokens[t-1], tokens[t])`` (``t = 0`` pairs with padding id 0): a fixed
    multiplicative hash, so no bigram vocabulary is stored (Joulin et al. 2017's hashing trick)."""
    prev = F.pad(tokens[:, :-1], (1, 0))  # (B, T)
    return (prev * 1_000_003 + tokens * 7_919) % buckets


def word_dropout(embedded: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole token embeddings of ``embedded`` ``(B, T, E)`` with probability ``p`` in training, scaling the
    kept ones by ``1 / (1 - p)`` (Iyyer et al. 2015's word dropout, on embeddings; Gal & Ghahramani 2016 drop
    word types instead). Identity in evaluation or when ``p`` is 0."""
    if not training or p == 0.0:
        return embedded
    keep = torch.empty(embedded.shape[:2], device=embedded.device).bernoulli_(1.0 - p)  # (B, T)
    return embedded * (keep / (1.0 - p)).unsqueeze(-1).to(embedded.dtype)


class AttentionPooling(WeightsHooks, nn.Module):
    """``Q`` trained queries attend over a sequence; each returns a weighted average of its positions.

    Two scorings: ``"additive"``, ``v^T tanh(W_q q + W_k h_t)`` (Bahdanau et al. 2015, eq. 6; with a trained query
    this is Yang et al. 2016's ``u_w^T tanh(W h_t + b)``), and ``"scaled_dot"``, ``q . (W_k h_t) / sqrt(D)``
    (Vaswani et al. 2017, eq. 1, with a trained query as in Lee et al. 2019's pooling by attention). The additive
    form can switch itself off: once ``W_q q`` grows large the ``tanh`` saturates, every position scores the same
    and attention stays uniform with no gradient to leave it (seen on Chinese reviews); the dot form cannot.

    Args:
        input_size: feature size ``D`` of the pooled sequence.
        num_queries: ``Q`` pooled vectors per sequence (1 for plain pooling).
        hidden_size: hidden size of the additive scorer (default ``input_size``).
        dropout: on the attention weights.
        scoring: ``"additive"`` or ``"scaled_dot"``.

    Weights hooks (:meth:`register_weights_hook`, as on ``MultiHeadAttention``) see the ``(B, Q, T)`` weights and
    may replace them: the pooled vectors are then exactly the replacement's weighted averages.
    """

    def __init__(self, input_size: int, num_queries: int = 1, hidden_size: int | None = None,
                 dropout: float = 0.0, scoring: str = "additive") -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, input_size))
        self.key_proj: nn.Module = nn.Identity()
        if scoring == "additive":
            self.attention: nn.Module = AdditiveAttention(input_size, input_size, hidden_size or input_size, dropout)
        elif scoring == "scaled_dot":
            self.key_proj = nn.Linear(input_size, input_size, bias=False)
            self.attention = ScaledDotProductAttention(dropout)
        else:
            raise ValueError(f"AttentionPooling: scoring must be 'additive' or 'scaled_dot', got {scoring!r}")

    def forward(self, x: torch.Tensor, valid_lens: torch.Tensor | None = None) -> AttentionOutput:
        """Pool ``x`` ``(B, T, D)``; ``valid_lens`` ``(B,)`` excludes right padding.

        Returns:
            ``AttentionOutput(output (B, Q, D), weights (B, Q, T))``.
        """
        # In x's dtype: under CPU bf16 autocast an LSTM returns bfloat16 states (a GRU float32).
        queries = self.queries.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, Q, D)
        out = self.attention(queries, self.key_proj(x).to(x.dtype), x, valid_lens=valid_lens)
        if not self._has_weights_hooks():
            return out
        weights = self._run_weights_hooks(out.weights)  # (B, Q, T)
        if weights is out.weights:
            return out
        mask = build_mask(tuple(weights.shape), valid_lens=valid_lens, device=x.device)  # padding never leaks
        return AttentionOutput(torch.bmm(self.attention.dropout(weights), zero_unreachable(x, x, mask)[1]), weights)


class RNNAttentionClassifier(nn.Module):
    """Embedding -> (bi)RNN/LSTM/GRU -> attention pooling -> linear classifier (Yang et al., 2016, one level)."""

    def __init__(self, config: RNNClassifierConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(vocab_size, config.embed_dim, padding_idx=0)
        self.bigrams = nn.Embedding(config.bigram_buckets, config.embed_dim) if config.bigram_buckets else None
        self.encoder = RNNEncoder(config.embed_dim, config.hidden_size, config.num_layers, config.rnn,
                                  bidirectional=config.bidirectional, dropout=config.dropout)
        self.pooling = AttentionPooling(self.encoder.output_size, config.pooling_queries, scoring=config.pooling)
        self.dropout = Dropout(config.dropout)
        self.classifier = nn.Linear(config.pooling_queries * self.encoder.output_size, config.num_classes)

    def forward(self, tokens: torch.Tensor, valid_lens: torch.Tensor | None = None, *,
                need_weights: bool = False) -> ClassifierOutput:
        """Classify ``tokens`` ``(B, T)`` (right-padded with 0; ``valid_lens`` ``(B,)`` derived if omitted)."""
        valid_lens = lengths_from_padding(tokens) if valid_lens is None else valid_lens
        # 1. Embed and read the sequence (packed: padding never enters the recurrence).
        x = self.embedding(tokens)  # (B, T, E)
        if self.bigrams is not None:
            x = x + self.bigrams(bigram_ids(tokens, self.bigrams.num_embeddings))  # (B, T, E)
        x = self.dropout(word_dropout(x, self.config.word_dropout, self.training))  # (B, T, E)
        outputs, _ = self.encoder(x, valid_lens)  # (B, T, dirs * Hd)
        # 2. Pool with attention over the real positions.
        pooled, weights = self.pooling(outputs, valid_lens=valid_lens)  # (B, Q, dirs * Hd), (B, Q, T)
        # 3. Classify the Q pooled vectors side by side.
        logits = self.classifier(self.dropout(pooled.flatten(1)))  # (B, C)
        return ClassifierOutput(logits, None, weights if need_weights else None)


class TransformerClassifier(nn.Module):
    """Transformer encoder (Vaswani et al., 2017) + attention pooling + linear classifier."""

    def __init__(self, config: TransformerClassifierConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embedding = nn.Embedding(vocab_size, d, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=d ** -0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.positional = positional_encoding(config.positional, d, config.max_len, config.dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d, config.num_heads, config.ffn_dim, dropout=config.dropout,
                                    attention_dropout=config.attention_dropout, activation=config.activation,
                                    norm_first=config.norm_first)
            for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.pooling = AttentionPooling(d, config.pooling_queries, scoring=config.pooling)
        self.classifier = nn.Linear(config.pooling_queries * d, config.num_classes)

    def forward(self, tokens: torch.Tensor, valid_lens: torch.Tensor | None = None, *,
                need_weights: bool = False) -> ClassifierOutput:
        """Classify ``tokens`` ``(B, T)`` (right-padded with 0; ``valid_lens`` ``(B,)`` derived if omitted)."""
        valid_lens = lengths_from_padding(tokens) if valid_lens is None else valid_lens
        # 1. Scaled embeddings plus positions.
        x = word_dropout(self.embedding(tokens), self.config.word_dropout, self.training)
        x = self.positional(x * math.sqrt(self.config.d_model))  # (B, T, D)
        # 2. Encoder layers; padding keys are masked by valid lengths.
        maps = []
        for layer in self.layers:
            x, weights = layer(x, valid_lens, need_weights=need_weights)  # (B, T, D), (B, H, T, T) | None
            maps.append(weights)
        x = self.norm(x)
        # 3. Attention pooling over real tokens, then classify.
        pooled, pool_weights = self.pooling(x, valid_lens=valid_lens)  # (B, Q, D), (B, Q, T)
        logits = self.classifier(pooled.flatten(1))  # (B, C)
        if not need_weights:
            return ClassifierOutput(logits)
        return ClassifierOutput(logits, torch.stack(maps), pool_weights)  # encoder_self: (L, B, H, T, T)
