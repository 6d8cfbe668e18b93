"""The Transformer encoder-decoder (Vaswani et al., 2017, "Attention Is All You Need") on attnlab's attention.

Both layer orders are supported: post-LN, the paper's ``x = LN(x + Sublayer(x))`` (section 3.1), and pre-LN,
``x = x + Sublayer(LN(x))`` with a final LayerNorm after each stack (Xiong et al., 2020, "On Layer
Normalization in the Transformer Architecture"), which trains without a long warm-up. Embeddings are
multiplied by ``sqrt(d_model)`` (section 3.4); the output projection can share the target embedding matrix
(Press & Wolf, 2017, "Using the Output Embedding to Improve Language Models").

Incremental decoding keeps one :class:`KVCache` per decoder layer for self-attention (grows by one position
per step) and one static cache per layer for cross-attention (the encoder memory is projected once).

With ``copy`` the output is a pointer-generator (See et al., 2017, "Get To The Point", eqs. 8-9, with a scaled
dot-product copy attention in place of their additive one): a single-head copy attention ``a`` over the encoder
memory, its context ``c = a . memory``, a gate ``p_gen = sigmoid(w . [h; c] + b)``, and the final distribution
``p(w) = p_gen * softmax(W h)(w) + (1 - p_gen) * sum_{i: src_i = w} a_i``. The model then returns the *log* of
that distribution in place of logits; ``log_softmax`` of a log-distribution is itself, so the losses and the
decoders use it unchanged. It needs one vocabulary for both sides (``share_embeddings``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.attention import KVCache, MultiHeadAttention, native
from attnlab.attention.dropout import Dropout, relu_dropout
from attnlab.attention.positional import positional_encoding
from attnlab.attention.scoring import is_observed
from attnlab.attention.trace import active_trace
from attnlab.core.errors import ConfigError
from attnlab.core.model_config import TransformerConfig
from attnlab.core.types import AttentionOutput
from attnlab.models.base import AttentionMaps, DecoderState, EncoderDecoder, EncoderDecoderOutput, StepOutput

__all__ = ["DecoderLayerOutput", "PositionwiseFeedForward", "Transformer", "TransformerDecoderLayer",
           "TransformerEncoderLayer", "TransformerState"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class PositionwiseFeedForward(nn.Module):
    """``FFN(x) = W_2 act(W_1 x + b_1) + b_2`` applied at every position (Vaswani et al., 2017, eq. 2)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"PositionwiseFeedForward: activation {activation!r} unknown, "
                             f"expected one of {', '.join(_ACTIVATIONS)}")
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.activation = _ACTIVATIONS[activation]
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``."""
        if self.activation is F.relu:  # one saved mask for both (attnlab.attention.dropout.relu_dropout)
            return self.linear2(relu_dropout(self.linear1(x), self.dropout.p, self.dropout.training))
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in a residual connection and LayerNorm.

    Args:
        norm_first: pre-LN if true, post-LN (the paper) if false.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation: str = "relu", norm_first: bool = True) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.ffn = PositionwiseFeedForward(d_model, ffn_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, valid_lens: torch.Tensor | None = None, *,
                need_weights: bool = False) -> AttentionOutput:
        """``x``: ``(B, T, D)``; ``valid_lens``: ``(B,)`` real tokens per row (padding keys are masked).

        Returns:
            ``AttentionOutput(output (B, T, D), weights (B, H, T, T) or None)``.
        """
        if self.norm_first:
            # 1. x + SelfAttention(LN(x)); 2. x + FFN(LN(x)).
            h = self.norm1(x)
            attended, weights = self.self_attn(h, valid_lens=valid_lens, need_weights=need_weights)
            x = x + self.dropout(attended)
            x = x + self.dropout(self.ffn(self.norm2(x)))
        else:
            # 1. LN(x + SelfAttention(x)); 2. LN(x + FFN(x)).
            attended, weights = self.self_attn(x, valid_lens=valid_lens, need_weights=need_weights)
            x = self.norm1(x + self.dropout(attended))
            x = self.norm2(x + self.dropout(self.ffn(x)))
        return AttentionOutput(x, weights)

    def compiled_forward(self, x: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor | None:
        """``forward(x, valid_lens).output`` in eval mode as one call of the compiled kernels
        (:func:`~attnlab.attention.native.encoder_layer`), for inference where nothing watches the layer (see
        :func:`plain_inference`); ``None`` where that does not apply (no kernels, other dtypes, kdim/vdim)."""
        sa, ffn = self.self_attn, self.ffn
        if not sa.same_dims or ffn.activation not in _ACTIVATION_NAMES:
            return None
        m = self._modules
        weights = (*_norm_params(m["norm1"]), *_attention_params(sa), *_norm_params(m["norm2"]), *_ffn_params(ffn))
        return native.encoder_layer(x, weights, (self.norm1.eps, self.norm2.eps), norm_first=self.norm_first,
                                    activation=_ACTIVATION_NAMES[ffn.activation], num_heads=sa.num_heads,
                                    valid_lens=valid_lens, owner=self)


class DecoderLayerOutput(NamedTuple):
    """Attributes:
    output: ``(B, Tt, D)``.
    self_weights: ``(B, H, Tt, Tk)`` masked self-attention weights (``Tk`` includes cached steps) or ``None``.
    cross_weights: ``(B, H, Tt, Ts)`` attention over the encoder memory or ``None``.
    """

    output: torch.Tensor
    self_weights: torch.Tensor | None
    cross_weights: torch.Tensor | None


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder memory, feed-forward (Vaswani et al., 3.1)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation: str = "relu", norm_first: bool = True) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.ffn = PositionwiseFeedForward(d_model, ffn_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_lens: torch.Tensor | None = None, *,
                self_cache: KVCache | None = None, cross_cache: KVCache | None = None,
                need_weights: bool = False, beams: int = 1) -> DecoderLayerOutput:
        """``x``: ``(B, Tt, D)`` target states; ``memory``: ``(B, Ts, D)``; ``src_lens``: ``(B,)``.

        With caches, ``x`` holds the new positions only; ``self_cache`` holds the earlier ones.

        ``beams > 1`` (one decoding step of beam search): ``x`` is ``(B * beams, 1, D)``, the beams of each memory row
        in consecutive rows, and ``memory`` keeps one row per source. Cross-attention then takes a row's beams as
        ``beams`` queries over its one copy of the memory: the same result as a copy per beam, with the memory's
        keys and values read once per sentence instead of once per beam.
        """
        def self_block(h: torch.Tensor) -> AttentionOutput:
            return self.self_attn(h, is_causal=True, cache=self_cache, need_weights=need_weights)

        def cross_block(h: torch.Tensor) -> AttentionOutput:
            if beams == 1:
                return self.cross_attn(h, memory, valid_lens=src_lens, cache=cross_cache, need_weights=need_weights)
            if h.shape[1] != 1 or h.shape[0] % beams:
                raise ValueError(f"TransformerDecoderLayer: beams={beams} needs (B * beams, 1, D) states, got "
                                 f"{tuple(h.shape)}")
            rows = h.shape[0]
            out, weights = self.cross_attn(h.view(rows // beams, beams, -1), memory, valid_lens=src_lens,
                                           cache=cross_cache, need_weights=need_weights)  # (B, beams, D)
            if weights is not None:  # (B, H, beams, Ts) -> (B * beams, H, 1, Ts)
                weights = weights.transpose(1, 2).reshape(rows, weights.shape[1], 1, weights.shape[-1])
            return AttentionOutput(out.reshape(rows, 1, -1), weights)

        if self.norm_first:
            # 1. x + CausalSelfAttention(LN(x)); 2. x + CrossAttention(LN(x), memory); 3. x + FFN(LN(x)).
            attended, self_w = self_block(self.norm1(x))
            x = x + self.dropout(attended)
            attended, cross_w = cross_block(self.norm2(x))
            x = x + self.dropout(attended)
            x = x + self.dropout(self.ffn(self.norm3(x)))
        else:
            # The same three sublayers, each followed by its residual sum and LayerNorm.
            attended, self_w = self_block(x)
            x = self.norm1(x + self.dropout(attended))
            attended, cross_w = cross_block(x)
            x = self.norm2(x + self.dropout(attended))
            x = self.norm3(x + self.dropout(self.ffn(x)))
        return DecoderLayerOutput(x, self_w, cross_w)


    def step(self, x: torch.Tensor, memory: torch.Tensor, src_lens: torch.Tensor | None, self_cache: KVCache,
             cross_cache: KVCache, beams: int = 1) -> torch.Tensor:
        """One decoding step for inference: ``forward(x, memory, src_lens, self_cache=..., cross_cache=...,
        beams=...).output`` through the attention modules' one-step methods (no dropout, checks or hooks; see
        :func:`plain_inference`). ``x``: ``(B * beams, 1, D)`` -> ``(B * beams, 1, D)``."""
        fused = self.compiled_step(x, src_lens, self_cache, cross_cache, beams)
        if fused is not None:
            return fused
        self_step, cross_step = self.self_attn.self_step, self.cross_attn.cross_step
        if self.norm_first:
            x = x + self_step(_norm(self.norm1, x), self_cache)
            x = x + cross_step(_norm(self.norm2, x), memory, src_lens, cross_cache, beams)
            return x + _ffn(self.ffn, _norm(self.norm3, x))
        x = _norm(self.norm1, x + self_step(x, self_cache))
        x = _norm(self.norm2, x + cross_step(x, memory, src_lens, cross_cache, beams))
        return _norm(self.norm3, x + _ffn(self.ffn, x))

    def compiled_step(self, x: torch.Tensor, src_lens: torch.Tensor | None, self_cache: KVCache,
                       cross_cache: KVCache, beams: int) -> torch.Tensor | None:
        """:meth:`step` as one call of the compiled kernels (:func:`~attnlab.attention.native.decoder_layer_step`)
        once both caches hold earlier steps; ``None`` where that does not apply (the first step, other dtypes or
        layouts, no kernels), and then nothing has changed."""
        if not (cross_cache.filled and self_cache.filled and self.self_attn.same_dims) or \
                self.ffn.activation not in _ACTIVATION_NAMES:
            return None
        return native.decoder_layer_step(
            x, self._compiled_weights(), (self.norm1.eps, self.norm2.eps, self.norm3.eps), norm_first=self.norm_first,
            activation=_ACTIVATION_NAMES[self.ffn.activation], num_heads=self.self_attn.num_heads,
            self_cache=self_cache, cross_key=cross_cache.key, cross_value=cross_cache.value, valid_lens=src_lens,
            beams=beams, owner=self)


    def _compiled_weights(self) -> tuple[torch.Tensor | None, ...]:
        """The 18 tensors :func:`~attnlab.attention.native.decoder_layer_step` takes, in its order."""
        m = self._modules
        cross = m["cross_attn"]._parameters
        return (*_norm_params(m["norm1"]), *_attention_params(m["self_attn"]), *_norm_params(m["norm2"]),
                cross["in_proj_weight"] if cross["in_proj_weight"] is not None else cross["q_proj_weight"],
                cross["in_proj_bias"], *_linear_params(m["cross_attn"]._modules["out_proj"]),
                *_norm_params(m["norm3"]), *_ffn_params(m["ffn"]))


_ACTIVATION_NAMES = {fn: name for name, fn in _ACTIVATIONS.items()}

# The compiled layers' weights, read from the modules' registries: nn.Module's attribute lookup costs about a
# microsecond a name, and a decoding step reads 18 of them per layer.


def _linear_params(linear: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return linear._parameters["weight"], linear._parameters["bias"]


_norm_params = _linear_params  # a LayerNorm's weight and bias are registered under the same names


def _attention_params(attn: MultiHeadAttention) -> tuple[torch.Tensor | None, ...]:
    """Self-attention's fused Q/K/V weight and bias, then its output projection's."""
    return attn._parameters["in_proj_weight"], attn._parameters["in_proj_bias"], *_linear_params(
        attn._modules["out_proj"])


def _ffn_params(ffn: PositionwiseFeedForward) -> tuple[torch.Tensor | None, ...]:
    return *_linear_params(ffn._modules["linear1"]), *_linear_params(ffn._modules["linear2"])


def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _ffn(ffn: PositionwiseFeedForward, x: torch.Tensor) -> torch.Tensor:
    """``ffn(x)`` in eval mode (no dropout)."""
    hidden = ffn.activation(F.linear(x, ffn.linear1.weight, ffn.linear1.bias))
    return F.linear(hidden, ffn.linear2.weight, ffn.linear2.bias)


def plain_inference(layers: nn.ModuleList, need_weights: bool) -> bool:
    """Whether decoder ``layers`` may take :meth:`TransformerDecoderLayer.step`: eval mode, no autograd, no weights
    wanted, no trace, and nothing (capture, explanation hooks) watching any of their modules."""
    if need_weights or torch.is_grad_enabled() or active_trace() is not None:
        return False
    return not any(m.training or is_observed(m) for layer in layers for m in layer.modules())


@dataclass
class TransformerState(DecoderState):
    """Decoder state for incremental decoding.

    Attributes:
        memory: ``(B, Ts, D)`` encoder output.
        src_lens: ``(B,)`` real source tokens per row.
        self_caches: one growing :class:`KVCache` per decoder layer.
        cross_caches: one static :class:`KVCache` per decoder layer (memory keys/values, projected once).
        offset: number of target positions consumed so far (the next token's position).
    """

    memory: torch.Tensor
    src_lens: torch.Tensor
    self_caches: list[KVCache]
    cross_caches: list[KVCache]
    offset: int = 0
    src: torch.Tensor | None = None
    copy_keys: torch.Tensor | None = None
    beams: int = 1
    """Decoder rows per source row (:meth:`expand_beams`): ``memory``, ``src_lens`` and the cross caches hold
    ``B`` rows, the self caches and the tokens ``B * beams``."""

    def reorder(self, index: torch.Tensor) -> TransformerState:
        """Select batch rows; the caches are reordered in place and shared with the returned state.

        Raises:
            ValueError: with ``beams > 1``, an ``index`` that splits the beams of a source across source rows.
        """
        for cache in self.self_caches:
            cache.reorder(index)
        sources = index if self.beams == 1 else self._source_rows(index)  # (B',): the source row of each group
        for cache in self.cross_caches:
            cache.reorder(sources)
        rows = [None if t is None else t.index_select(0, sources) for t in (self.src, self.copy_keys)]
        return TransformerState(self.memory.index_select(0, sources), self.src_lens.index_select(0, sources),
                                self.self_caches, self.cross_caches, self.offset, *rows, beams=self.beams)

    def _source_rows(self, index: torch.Tensor) -> torch.Tensor:
        """``(B' * beams,)`` decoder rows -> ``(B',)`` source rows, one per group of ``beams`` consecutive rows."""
        groups = index.view(-1, self.beams) // self.beams  # (B', beams): the source row of every selected row
        if not bool((groups == groups[:, :1]).all()):
            raise ValueError(f"TransformerState.reorder: with {self.beams} beams per source, each group of "
                             f"{self.beams} consecutive rows must come from one source row")
        return groups[:, 0]

    def reorder_beams(self, index: torch.Tensor) -> TransformerState:
        """Only the self-attention caches move: every row of one source holds the same memory and cross caches."""
        for cache in self.self_caches:
            cache.reorder(index)
        return TransformerState(self.memory, self.src_lens, self.self_caches, self.cross_caches, self.offset,
                                self.src, self.copy_keys, self.beams)

    def expand_beams(self, index: torch.Tensor, beam_size: int) -> TransformerState:
        """``beam_size`` decoder rows per source row sharing one copy of the memory and cross caches.

        The pointer-generator's copy attention (``src`` set) and states that already decoded get the default copy
        per beam."""
        if self.src is not None or self.beams != 1 or self.offset or any(c.filled for c in self.self_caches):
            return self.reorder(index)
        return TransformerState(self.memory, self.src_lens, self.self_caches, self.cross_caches, self.offset,
                                beams=beam_size)

    def advanced(self) -> TransformerState:
        """The same state one position further (after a decoding step filled the caches)."""
        return TransformerState(self.memory, self.src_lens, self.self_caches, self.cross_caches, self.offset + 1,
                                self.src, self.copy_keys, self.beams)


class Transformer(EncoderDecoder):
    """Encoder-decoder Transformer configured by :class:`TransformerConfig`.

    Raises:
        ConfigError: ``share_embeddings`` with different source and target vocabulary sizes.
    """

    def __init__(self, config: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        if config.share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ConfigError(f"TransformerConfig.share_embeddings: got true, but the source vocabulary has "
                              f"{src_vocab_size} entries and the target {tgt_vocab_size}; use a joint vocabulary "
                              f"or set share_embeddings=false")
        self.config = config
        d = config.d_model
        self.embed_scale = math.sqrt(d)
        # 1. Embeddings, N(0, d^-1/2) so that the sqrt(d) scaling gives unit variance (and a sane tied output).
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d, padding_idx=0)
        self.src_embedding = self.tgt_embedding if config.share_embeddings else nn.Embedding(
            src_vocab_size, d, padding_idx=0)
        for emb in {id(m): m for m in (self.src_embedding, self.tgt_embedding)}.values():
            nn.init.normal_(emb.weight, std=d ** -0.5)
            with torch.no_grad():
                emb.weight[0].zero_()
        self.src_positional = self._positional(config)
        self.tgt_positional = self._positional(config)
        # 2. Layer stacks; pre-LN needs a final LayerNorm on each stack's output.
        layer_args = {"dropout": config.dropout, "attention_dropout": config.attention_dropout,
                      "activation": config.activation, "norm_first": config.norm_first}
        self.encoder_layers = nn.ModuleList(TransformerEncoderLayer(d, config.num_heads, config.ffn_dim, **layer_args)
                                            for _ in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(TransformerDecoderLayer(d, config.num_heads, config.ffn_dim, **layer_args)
                                            for _ in range(config.decoder_layers))
        self.encoder_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        # 3. Output projection, optionally tied to the target embedding.
        self.output = nn.Linear(d, tgt_vocab_size, bias=False)
        if config.tie_output:
            self.output.weight = self.tgt_embedding.weight
        # 4. Pointer-generator: a copy attention over the memory and the gate between copying and generating.
        if config.copy:
            self.copy_query = nn.Linear(d, d, bias=False)
            self.copy_key = nn.Linear(d, d, bias=False)
            self.copy_gate = nn.Linear(2 * d, 1)

    @staticmethod
    def _positional(config: TransformerConfig) -> nn.Module:
        return positional_encoding(config.positional, config.d_model, config.max_len, config.dropout)

    # ------------------------------------------------------------------------------------------ stacks
    def _encode(self, src: torch.Tensor, src_lens: torch.Tensor,
                need_weights: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """``src`` ``(B, Ts)`` -> memory ``(B, Ts, D)`` and per-layer weights ``(B, H, Ts, Ts)``."""
        x = self.src_positional(self.src_embedding(src) * self.embed_scale)  # (B, Ts, D)
        maps = []
        if plain_inference(self.encoder_layers, need_weights):
            for layer in self.encoder_layers:
                y = layer.compiled_forward(x, src_lens)  # None: the layer's own forward
                x = layer(x, src_lens).output if y is None else y
                maps.append(None)
            return self.encoder_norm(x), maps
        for layer in self.encoder_layers:
            x, weights = layer(x, src_lens, need_weights=need_weights)  # (B, Ts, D)
            maps.append(weights)
        return self.encoder_norm(x), maps

    def _decode(self, tokens: torch.Tensor, memory: torch.Tensor, src_lens: torch.Tensor, *, offset: int = 0,
                caches: tuple[list[KVCache], list[KVCache]] | None = None,
                need_weights: bool = False, beams: int = 1) -> tuple[torch.Tensor, list[DecoderLayerOutput]]:
        """``tokens`` ``(B, Tt)`` at positions ``offset..`` -> hidden ``(B, Tt, D)`` and each layer's output.

        ``beams``: decoder rows per memory row (see :class:`TransformerDecoderLayer`)."""
        x = self.tgt_positional(self.tgt_embedding(tokens) * self.embed_scale, offset)  # (B, Tt, D)
        if caches is not None and tokens.shape[1] == 1 and plain_inference(self.decoder_layers, need_weights):
            for layer, self_cache, cross_cache in zip(self.decoder_layers, *caches, strict=True):
                x = layer.step(x, memory, src_lens, self_cache, cross_cache, beams)  # (B, 1, D)
            return self.decoder_norm(x), []
        outs = []
        for i, layer in enumerate(self.decoder_layers):
            self_cache, cross_cache = (caches[0][i], caches[1][i]) if caches is not None else (None, None)
            out = layer(x, memory, src_lens, self_cache=self_cache, cross_cache=cross_cache,
                        need_weights=need_weights, beams=beams)
            x = out.output  # (B, Tt, D)
            outs.append(out)
        return self.decoder_norm(x), outs

    def _project(self, hidden: torch.Tensor, src: torch.Tensor, src_lens: torch.Tensor, memory: torch.Tensor,
                 copy_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden`` ``(B, Tt, D)`` -> logits ``(B, Tt, V)`` (with ``copy``: log-probabilities) and the copy
        attention ``(B, Tt, Ts)`` (``None`` without ``copy``)."""
        logits = self.output(hidden)  # (B, Tt, V)
        if not self.config.copy:
            return logits, None
        keys = self.copy_key(memory) if copy_keys is None else copy_keys  # (B, Ts, D)
        query = self.copy_query(hidden)  # (B, Tt, D)
        with torch.autocast(hidden.device.type, enabled=False):  # float32 throughout: it feeds a log below
            # 1. Copy attention over the real source positions.
            scores = query.float() @ keys.float().transpose(1, 2) / math.sqrt(hidden.shape[-1])  # (B, Tt, Ts)
            pad = torch.arange(memory.shape[1], device=memory.device)[None, :] >= src_lens[:, None]  # (B, Ts)
            copy_attn = torch.softmax(scores.masked_fill(pad[:, None, :], -math.inf), dim=-1)  # (B, Tt, Ts)
            context = copy_attn @ memory.float()  # (B, Tt, D)
            # 2. The gate, and the mixture of generating and copying (scatter_add: a repeated token gets all).
            gate_in = torch.cat([hidden.float(), context], dim=-1)  # (B, Tt, 2D)
            p_gen = torch.sigmoid(F.linear(gate_in, self.copy_gate.weight.float(), self.copy_gate.bias.float()))
            copied = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device).scatter_add_(
                -1, src[:, None, :].expand(-1, hidden.shape[1], -1), copy_attn)  # (B, Tt, V)
            probs = p_gen * torch.softmax(logits.float(), dim=-1) + (1.0 - p_gen) * copied  # p_gen: (B, Tt, 1)
            return torch.log(probs.clamp_min(1e-30)), copy_attn

    # ------------------------------------------------------------------------------------- public API
    def forward(self, src: torch.Tensor, src_lens: torch.Tensor, tgt_in: torch.Tensor, *,
                need_weights: bool = False, project: bool = True) -> EncoderDecoderOutput:
        """Teacher-forced pass: ``src`` ``(B, Ts)``, ``src_lens`` ``(B,)``, ``tgt_in`` ``(B, Tt)``.

        Args:
            project: ``False`` skips step 3 and returns ``logits=None``, for a loss that projects ``hidden`` a
                chunk at a time: with :meth:`output_projection`, or with ``copy`` (:meth:`sliced_output`) through
                the returned ``project``, which maps ``hidden[:, a:b]`` to those positions' log-probabilities.

        Returns:
            logits ``(B, Tt, V)``; the decoder's final states ``hidden`` ``(B, Tt, D)``; with ``need_weights``,
            :class:`AttentionMaps` with ``encoder_self`` ``(Le, B, H, Ts, Ts)``, ``decoder_self``
            ``(Ld, B, H, Tt, Tt)`` and ``cross`` ``(Ld, B, H, Tt, Ts)``.
        """
        # 1. Encode the source (padding keys masked by src_lens).
        memory, enc_maps = self._encode(src, src_lens, need_weights)  # (B, Ts, D)
        # 2. Decode all target positions at once under the causal mask.
        hidden, dec_outs = self._decode(tgt_in, memory, src_lens, need_weights=need_weights)  # (B, Tt, D)
        # 3. Project to the vocabulary (with copy: mix in the copy distribution over the source tokens).
        logits = self._project(hidden, src, src_lens, memory)[0] if project else None  # (B, Tt, V)
        sliced = None
        if not project and self.config.copy:
            copy_keys = self.copy_key(memory)  # (B, Ts, D), projected once for every slice
            sliced = functools.partial(self._project_slice, src=src, src_lens=src_lens, memory=memory,
                                       copy_keys=copy_keys)
        if not need_weights:
            return EncoderDecoderOutput(logits, None, hidden, sliced)
        maps = AttentionMaps(encoder_self=torch.stack(enc_maps),  # (Le, B, H, Ts, Ts)
                             decoder_self=torch.stack([o.self_weights for o in dec_outs]),  # (Ld, B, H, Tt, Tt)
                             cross=torch.stack([o.cross_weights for o in dec_outs]))  # (Ld, B, H, Tt, Ts)
        return EncoderDecoderOutput(logits, maps, hidden, sliced)

    def _project_slice(self, hidden: torch.Tensor, *, src: torch.Tensor, src_lens: torch.Tensor,
                       memory: torch.Tensor, copy_keys: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(B, t, V)`` of the positions in ``hidden`` ``(B, t, D)`` (``copy`` only)."""
        return self._project(hidden, src, src_lens, memory, copy_keys)[0]

    def output_projection(self) -> nn.Linear | None:
        """``output`` (tied to the target embedding with ``tie_output``); ``None`` with ``copy``."""
        return None if self.config.copy else self.output

    def sliced_output(self) -> bool:
        """``True`` with ``copy``: ``forward(..., project=False)`` returns ``project`` for a sliced loss."""
        return self.config.copy

    def encode(self, src: torch.Tensor, src_lens: torch.Tensor) -> TransformerState:
        """Run the encoder once and set up empty caches for :meth:`decode_step`."""
        memory, _ = self._encode(src, src_lens, need_weights=False)  # (B, Ts, D)
        num_layers = len(self.decoder_layers)
        copy_keys = self.copy_key(memory) if self.config.copy else None  # (B, Ts, D), projected once
        return TransformerState(memory, src_lens, [KVCache() for _ in range(num_layers)],
                                [KVCache(static=True) for _ in range(num_layers)], 0,
                                src if self.config.copy else None, copy_keys)

    def decode_step(self, tokens: torch.Tensor, state: TransformerState, *,
                    need_weights: bool = False) -> StepOutput:
        """Consume ``tokens`` ``(B,)`` at position ``state.offset``; the caches in ``state`` grow in place.

        Returns:
            logits ``(B, V)``, the advanced state and, with ``need_weights``, the last layer's cross-attention
            averaged over heads ``(B, Ts)``.
        """
        hidden, outs = self._decode(tokens.unsqueeze(1), state.memory, state.src_lens, offset=state.offset,
                                    caches=(state.self_caches, state.cross_caches),
                                    need_weights=need_weights, beams=state.beams)  # (B, 1, D)
        if self.config.copy:
            out, _ = self._project(hidden, state.src, state.src_lens, state.memory, state.copy_keys)
            logits = out[:, 0]  # (B, V) log-probabilities
        else:
            logits = self.output(hidden[:, 0])  # (B, V)
        new_state = state.advanced()
        cross = outs[-1].cross_weights if outs else None
        cross_weights = cross[:, :, 0].mean(dim=1) if need_weights and cross is not None else None  # (B, Ts)
        return StepOutput(logits, new_state, cross_weights)
