"""The encoder-decoder contract shared by Seq2Seq and Transformer, used by training and decoding.

Training calls :meth:`EncoderDecoder.forward` with teacher forcing. Decoding calls
:meth:`EncoderDecoder.encode` once, then :meth:`EncoderDecoder.decode_step` once per target position;
beam search reorders the decoder state with :meth:`DecoderState.reorder`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttentionMaps:
    """Attention weights of one forward pass, each ``None`` when the model has no such attention.

    Attributes:
        encoder_self: ``(L, B, H, Ts, Ts)`` encoder self-attention per layer and head.
        decoder_self: ``(L, B, H, Tt, Tt)`` decoder self-attention per layer and head.
        cross: ``(L, B, H, Tt, Ts)`` decoder-to-encoder attention (Seq2Seq: ``L = H = 1``).
    """

    encoder_self: torch.Tensor | None = None
    decoder_self: torch.Tensor | None = None
    cross: torch.Tensor | None = None


@dataclass
class EncoderDecoderOutput:
    """Attributes:
    logits: ``(B, Tt, V)`` next-token scores for every target position; ``None`` only when ``project=False``
        was passed to a model with an :meth:`EncoderDecoder.output_projection` or a
        :meth:`EncoderDecoder.sliced_output`.
    attention: the attention maps when ``need_weights=True`` was passed, else ``None``.
    hidden: ``(B, Tt, D)`` the decoder states that ``output_projection()`` (or ``project``) maps to ``logits``,
        from models that have one; else ``None``.
    project: with ``project=False`` on a model whose :meth:`EncoderDecoder.sliced_output` is true, the function
        that maps ``hidden[:, a:b]`` to the ``(B, b - a, V)`` logits of those positions; else ``None``.
    """

    logits: torch.Tensor | None
    attention: AttentionMaps | None
    hidden: torch.Tensor | None = None
    project: Callable[[torch.Tensor], torch.Tensor] | None = None


class DecoderState(ABC):
    """Everything the decoder carries between steps (RNN hidden state, KV caches, encoder memory)."""

    @abstractmethod
    def reorder(self, index: torch.Tensor) -> DecoderState:
        """Select/reorder batch rows (``index``: ``(B',)`` long) -- used by beam search and batch pruning."""

    def reorder_beams(self, index: torch.Tensor) -> DecoderState:
        """:meth:`reorder` for an ``index`` that moves rows only among rows holding the same source.

        Beam search keeps ``K`` copies of each sentence's encoder state, one per beam, and reorders rows within a
        sentence at every step; the source-side parts (encoder memory, cross-attention keys and values) are then
        the same before and after, and a state may leave them where they are. The default reorders everything.
        """
        return self.reorder(index)

    def expand_beams(self, index: torch.Tensor, beam_size: int) -> DecoderState:
        """The state of ``beam_size`` beams per row: ``index`` is ``arange(B).repeat_interleave(beam_size)``.

        Row ``b * beam_size + j`` is beam ``j`` of row ``b``. The default copies every row ``beam_size`` times
        (:meth:`reorder`); a state may keep one copy of its source side per row instead, as long as its
        :meth:`reorder` then accepts only indices that keep each row's beams together (what beam search does).
        """
        return self.reorder(index)


@dataclass
class StepOutput:
    """Attributes:
    logits: ``(B, V)`` scores for the next token. They belong to the caller: greedy decoding and beam search write
        log-probabilities over them (unless a hook watches the model), so a model must not keep them in its state.
    state: the decoder state after consuming the step's tokens.
    cross_weights: ``(B, Ts)`` attention over the source for this step (averaged over heads, last layer
        for the Transformer), or ``None`` when not requested.
    """

    logits: torch.Tensor
    state: DecoderState
    cross_weights: torch.Tensor | None


class EncoderDecoder(nn.Module, ABC):
    """Base class of attnlab's translation models (ids in, logits out; 0 is always padding)."""

    @abstractmethod
    def forward(self, src: torch.Tensor, src_lens: torch.Tensor, tgt_in: torch.Tensor, *,
                need_weights: bool = False) -> EncoderDecoderOutput:
        """Teacher-forced pass. ``src``: ``(B, Ts)``, ``src_lens``: ``(B,)``, ``tgt_in``: ``(B, Tt)``."""

    def output_projection(self) -> nn.Linear | None:
        """The linear layer with ``logits = output_projection()(hidden)``, or ``None`` (the default) when the
        logits are anything else.

        A model that returns a layer here also accepts ``forward(..., project=False)``, which skips that layer and
        returns ``logits=None`` with the ``hidden`` states ``(B, Tt, D)``: the loss can then project them itself,
        a chunk of tokens at a time, without ever holding the ``(B, Tt, V)`` logits
        (:func:`attnlab.train.loss.linear_cross_entropy`).
        """
        return None

    def sliced_output(self) -> bool:
        """Whether ``forward(..., project=False)`` returns ``logits=None``, the ``hidden`` states and ``project``,
        a function from a slice of target positions ``hidden[:, a:b]`` to their logits (``False``, the default).

        For a model whose logits are no linear map of ``hidden`` alone (the pointer-generator mixes in a copy
        distribution over each row's source): the loss then computes them a slice of positions at a time
        (:func:`attnlab.train.loss.sliced_cross_entropy`).
        """
        return False

    @abstractmethod
    def encode(self, src: torch.Tensor, src_lens: torch.Tensor) -> DecoderState:
        """Run the encoder and return the initial decoder state."""

    @abstractmethod
    def decode_step(self, tokens: torch.Tensor, state: DecoderState, *, need_weights: bool = False) -> StepOutput:
        """Consume one token per row (``tokens``: ``(B,)`` long) and score the next one."""
