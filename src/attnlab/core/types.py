"""Shared result and batch types.

Dimension legend used in every docstring and shape comment of attnlab:

    B   batch size              H   number of heads
    Tq  query length            Tk  key/value length
    Ts  source length           Tt  target length
    D   model dimension         Dh  head dimension (D / H)
    V   vocabulary size         L   number of layers

Names: the ``(B,)`` real lengths of a padded batch are ``valid_lens`` when one sequence is involved (attention
keys, RNN encoders, classifiers, :class:`LabelBatch`), and ``src_lens`` / ``tgt_lens`` when a source and a
target meet (encoder-decoders, :class:`Batch`). A hidden width is ``hidden_size`` (PyTorch's name, not d2l's
``num_hiddens``); what every encoder-decoder returns is :class:`attnlab.models.base.EncoderDecoderOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch


class AttentionOutput(NamedTuple):
    """What every attention module returns.

    Attributes:
        output: ``(B, Tq, Dv)`` the attended values (after the output projection for multi-head).
        weights: the attention probabilities before dropout, ``(B, Tq, Tk)`` for single-head scoring
            modules and ``(B, H, Tq, Tk)`` for multi-head attention; ``None`` when not requested.
    """

    output: torch.Tensor
    weights: torch.Tensor | None


@dataclass
class Batch:
    """A padded batch of source/target token ids (padding id is always 0 in attnlab vocabularies).

    Attributes:
        src: ``(B, Ts)`` source ids.
        src_lens: ``(B,)`` number of real source tokens per row.
        tgt_in: ``(B, Tt)`` decoder input: ``<bos> y1 ... yn`` (teacher forcing).
        tgt_out: ``(B, Tt)`` decoder target: ``y1 ... yn <eos>``.
        tgt_lens: ``(B,)`` number of real target tokens per row (including ``<eos>``).
        index: ``(B,)`` position of each example in its dataset (to restore the original order).
    """

    src: torch.Tensor
    src_lens: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_lens: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def num_tgt_tokens(self) -> int:
        return int(self.tgt_lens.sum())


@dataclass
class LabelBatch:
    """A padded batch of texts with one class label each (classification; padding id 0).

    Attributes:
        tokens: ``(B, T)`` token ids.
        valid_lens: ``(B,)`` number of real tokens per row.
        labels: ``(B,)`` class ids.
        index: ``(B,)`` position of each example in its dataset.
    """

    tokens: torch.Tensor
    valid_lens: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> LabelBatch:
        return LabelBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})
