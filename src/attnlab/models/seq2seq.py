"""RNN encoder-decoder with attention (Bahdanau, Cho & Bengio, 2015, "Neural Machine Translation by Jointly
Learning to Align and Translate"), in the d2l.ai design.

At decoder step ``t`` (Bahdanau et al., section 3.1 and appendix A):

1. the query is the decoder's last-layer hidden state ``s_{t-1}``;
2. scores ``e_{t,j} = a(s_{t-1}, h_j)`` over the encoder outputs ``h_j`` (additive by default, eq. 6;
   dot, scaled dot or Luong's "general" selectable), softmaxed over the real source tokens (padding masked by
   the source lengths) into weights ``alpha_{t,j}`` (eq. 6);
3. the context ``c_t = sum_j alpha_{t,j} h_j`` (eq. 5) is concatenated with the embedding of ``y_{t-1}`` and
   fed to the decoder RNN, giving ``s_t`` (eq. 4);
4. a linear layer maps ``s_t`` to next-token scores.

A bidirectional encoder's outputs ``[h_fwd; h_bwd]`` are projected back to the decoder size, and its final
states are bridged to the decoder's initial state with ``s_0 = tanh(W_s [h_fwd; h_bwd])`` per layer (the
paper's ``s_0 = tanh(W_s h_1_bwd)``, using both directions).

Training (:meth:`Seq2Seq.forward`) and decoding (:meth:`Seq2Seq.decode_step`) run the very same step
function, so teacher-forced logits and step-by-step logits agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnlab.attention import AdditiveAttention, DotProductAttention, GeneralAttention, ScaledDotProductAttention
from attnlab.attention.dropout import Dropout
from attnlab.attention.functional import build_mask, softmax_with_mask
from attnlab.attention.scoring import ScoringAttention, is_observed
from attnlab.core.model_config import Seq2SeqConfig
from attnlab.models.base import AttentionMaps, DecoderState, EncoderDecoder, EncoderDecoderOutput, StepOutput
from attnlab.models.rnn import RNNEncoder, RNNState, concat_directions, make_rnn, map_state

__all__ = ["Seq2Seq", "Seq2SeqState", "make_scoring"]


def make_scoring(kind: str, query_size: int, key_size: int, hidden_size: int) -> ScoringAttention:
    """The single-head scoring module named by ``kind`` (``additive``, ``dot``, ``scaled_dot``, ``general``)."""
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, hidden_size)
    if kind == "dot":
        return DotProductAttention()
    if kind == "scaled_dot":
        return ScaledDotProductAttention()
    if kind == "general":
        return GeneralAttention(query_size, key_size)
    raise ValueError(f"make_scoring: unknown attention kind {kind!r}, expected additive, dot, scaled_dot or general")


@dataclass
class Seq2SeqState(DecoderState):
    """What the decoder carries between steps.

    Attributes:
        hidden: decoder state ``(L, B, Hd)`` (``(h, c)`` for an LSTM).
        memory: ``(B, Ts, Hd)`` encoder outputs (the attention values, and keys for non-additive scoring).
        keys: ``(B, Ts, A)`` additive attention's ``W_k h_j``, projected once per sentence; else ``memory``.
        mask: ``(B, 1, Ts)`` boolean, ``True`` at real source tokens.
    """

    hidden: RNNState
    memory: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor

    def reorder(self, index: torch.Tensor) -> Seq2SeqState:
        """A new state with the batch rows ``index`` ``(B',)``."""
        return Seq2SeqState(map_state(self.hidden, lambda t: t.index_select(1, index)),
                            self.memory.index_select(0, index), self.keys.index_select(0, index),
                            self.mask.index_select(0, index))

    def reorder_beams(self, index: torch.Tensor) -> Seq2SeqState:
        """Only the decoder's hidden state moves: every row of one source holds the same memory, keys and mask."""
        return Seq2SeqState(map_state(self.hidden, lambda t: t.index_select(1, index)), self.memory, self.keys,
                            self.mask)


class Seq2Seq(EncoderDecoder):
    """Bahdanau-attention encoder-decoder configured by :class:`Seq2SeqConfig`."""

    def __init__(self, config: Seq2SeqConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.config = config
        hidden, layers = config.hidden_size, config.num_layers
        # Encoder.
        self.src_embedding = nn.Embedding(src_vocab_size, config.embed_dim, padding_idx=0)
        self.encoder = RNNEncoder(config.embed_dim, hidden, layers, config.rnn, bidirectional=config.bidirectional,
                                  dropout=config.dropout)
        # Bridge from a bidirectional encoder: memory and initial states back to the decoder's size.
        if config.bidirectional:
            self.memory_proj: nn.Module = nn.Linear(2 * hidden, hidden)
            self.bridge_h = nn.Linear(2 * hidden, hidden)
            self.bridge_c = nn.Linear(2 * hidden, hidden) if config.rnn == "lstm" else None
        else:
            self.memory_proj, self.bridge_h, self.bridge_c = nn.Identity(), None, None
        # Decoder.
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, config.embed_dim, padding_idx=0)
        self.attention = make_scoring(config.attention, hidden, hidden, config.attention_hidden or hidden)
        self.decoder = make_rnn(config.rnn, config.embed_dim + hidden, hidden, layers, dropout=config.dropout)
        self.dropout = Dropout(config.dropout)
        self.output = nn.Linear(hidden, tgt_vocab_size)

    # ------------------------------------------------------------------------------------------ pieces
    def _bridge(self, state: RNNState) -> RNNState:
        """Encoder final state -> decoder initial state ``(L, B, Hd)`` (identity if unidirectional)."""
        if self.bridge_h is None:
            return state
        layers = self.config.num_layers
        if isinstance(state, tuple):
            h = torch.tanh(self.bridge_h(concat_directions(state[0], layers)))  # (L, B, Hd)
            # The cell state is unbounded in an LSTM, so no tanh on it.
            return h, self.bridge_c(concat_directions(state[1], layers))  # (L, B, Hd) each
        return torch.tanh(self.bridge_h(concat_directions(state, layers)))  # (L, B, Hd)

    def _attend(self, query: torch.Tensor, state: Seq2SeqState) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` ``(B, 1, Hd)`` -> context ``(B, 1, Hd)`` and weights ``(B, 1, Ts)`` over the real tokens.

        The fast path reuses the keys projected once in :meth:`encode` and skips per-call input checks. When the
        attention module is observed by hooks (``attnlab.viz.capture``, ``attnlab.explain``), its own ``forward``
        runs instead, so every step is recorded; both paths compute the same numbers.
        """
        attention = self.attention
        if is_observed(attention):
            return attention(query, state.memory, state.memory, mask=state.mask)
        if isinstance(attention, AdditiveAttention):
            scores = attention.score_projected(attention.W_q(query), state.keys)  # (B, 1, Ts)
        else:
            scores = attention.score(query, state.keys)  # (B, 1, Ts)
        weights = softmax_with_mask(scores, state.mask)  # (B, 1, Ts): padding gets exactly 0
        context = torch.bmm(attention.dropout(weights), state.memory)  # (B, 1, Hd)
        return context, weights

    def _step(self, embedded: torch.Tensor, state: Seq2SeqState) -> tuple[torch.Tensor, Seq2SeqState, torch.Tensor]:
        """One decoder step from ``embedded`` ``(B, E)`` (the previous target token).

        Returns:
            ``(s_t (B, Hd), new state, alpha_t (B, 1, Ts))``.
        """
        # 1. Query: the last layer's previous hidden state s_{t-1}.
        h = state.hidden[0] if isinstance(state.hidden, tuple) else state.hidden
        query = h[-1].unsqueeze(1)  # (B, 1, Hd)
        # 2. Attention over the source: alpha_t (B, 1, Ts) and the context c_t (B, 1, Hd).
        context, weights = self._attend(query, state)
        # 3. The context, concatenated with the input embedding, drives the RNN one step.
        rnn_input = torch.cat([context, embedded.unsqueeze(1)], dim=-1)  # (B, 1, Hd + E)
        output, hidden = self.decoder(rnn_input, state.hidden)  # (B, 1, Hd)
        return output.squeeze(1), Seq2SeqState(hidden, state.memory, state.keys, state.mask), weights

    # ------------------------------------------------------------------------------------- public API
    def encode(self, src: torch.Tensor, src_lens: torch.Tensor) -> Seq2SeqState:
        """Run the encoder over ``src`` ``(B, Ts)`` with ``src_lens`` ``(B,)``; returns the initial state."""
        # 1. Embed and run the (packed) encoder RNN.
        x = self.dropout(self.src_embedding(src))  # (B, Ts, E)
        outputs, final = self.encoder(x, src_lens)  # (B, Ts, dirs * Hd)
        # 2. Bring memory and states to the decoder's size.
        memory = self.memory_proj(outputs)  # (B, Ts, Hd)
        hidden = self._bridge(final)
        # 3. Precompute the attention keys and the source-padding mask once per sentence.
        keys = self.attention.W_k(memory) if isinstance(self.attention, AdditiveAttention) else memory  # (B, Ts, A)
        batch, length = src.shape
        mask = build_mask((batch, 1, length), valid_lens=src_lens, device=src.device)  # (B, 1, Ts)
        return Seq2SeqState(hidden, memory, keys, mask)

    def forward(self, src: torch.Tensor, src_lens: torch.Tensor, tgt_in: torch.Tensor, *,
                need_weights: bool = False, project: bool = True) -> EncoderDecoderOutput:
        """Teacher-forced pass: ``src`` ``(B, Ts)``, ``src_lens`` ``(B,)``, ``tgt_in`` ``(B, Tt)``.

        Args:
            project: ``False`` skips the output layer and returns ``logits=None``, for a loss that projects
                ``hidden`` with :meth:`output_projection` itself, a chunk at a time.

        Returns:
            logits ``(B, Tt, V)``; ``hidden`` ``(B, Tt, Hd)``, the decoder outputs ``s_t`` after dropout; with
            ``need_weights``, ``AttentionMaps(cross=(1, B, 1, Tt, Ts))``.
        """
        # 1. Encode.
        state = self.encode(src, src_lens)
        # 2. Decode every position, feeding the reference previous token (teacher forcing).
        embedded = self.dropout(self.tgt_embedding(tgt_in))  # (B, Tt, E)
        outputs, all_weights = [], []
        # unbind (not embedded[:, t]): its backward is one stack, not a zero-filled (B, Tt, E) per step.
        for step_input in embedded.unbind(1):
            output, state, weights = self._step(step_input, state)  # (B, Hd), _, (B, 1, Ts)
            outputs.append(output)
            all_weights.append(weights)
        # 3. One projection for all positions.
        hidden = self.dropout(torch.stack(outputs, dim=1))  # (B, Tt, Hd)
        logits = self.output(hidden) if project else None  # (B, Tt, V)
        if not need_weights:
            return EncoderDecoderOutput(logits, None, hidden)
        cross = torch.cat(all_weights, dim=1)  # (B, Tt, Ts)
        return EncoderDecoderOutput(logits, AttentionMaps(cross=cross[None, :, None]), hidden)  # (1, B, 1, Tt, Ts)

    def output_projection(self) -> nn.Linear:
        """``output``, the linear layer from the decoder outputs to the logits."""
        return self.output

    def decode_step(self, tokens: torch.Tensor, state: Seq2SeqState, *, need_weights: bool = False) -> StepOutput:
        """Consume ``tokens`` ``(B,)``; returns logits ``(B, V)``, the new state and ``alpha_t`` ``(B, Ts)``."""
        embedded = self.dropout(self.tgt_embedding(tokens))  # (B, E)
        output, state, weights = self._step(embedded, state)  # (B, Hd)
        logits = self.output(self.dropout(output))  # (B, V)
        return StepOutput(logits, state, weights[:, 0] if need_weights else None)
