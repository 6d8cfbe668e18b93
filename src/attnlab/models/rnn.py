"""Recurrent encoders over ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` that handle padding with packed sequences.

Elman (1990) RNN, Hochreiter & Schmidhuber (1997) LSTM, Cho et al. (2014) GRU; bidirectional reading as
in Schuster & Paliwal (1997). A padded batch and the same sequences run one by one give the same outputs
and final states for the real tokens: padding never enters the recurrence because the input is packed.

State conventions (PyTorch's): ``h`` is ``(L * dirs, B, Hd)`` with layer-major order
``[layer0_fwd, layer0_bwd, layer1_fwd, ...]``; an LSTM state is the pair ``(h, c)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RNNState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

__all__ = ["RNN_CLASSES", "RNNEncoder", "RNNEncoderOutput", "RNNState", "concat_directions", "make_rnn",
           "map_state"]


class RNNEncoderOutput(NamedTuple):
    """Attributes:
    outputs: ``(B, T, dirs * Hd)`` last-layer outputs; zero at padded positions.
    state: final state per layer and direction, ``(L * dirs, B, Hd)`` (or ``(h, c)`` for an LSTM), taken at
        each row's last real token.
    """

    outputs: torch.Tensor
    state: RNNState


def make_rnn(kind: str, input_size: int, hidden_size: int, num_layers: int = 1, *, bidirectional: bool = False,
             dropout: float = 0.0) -> nn.RNNBase:
    """A batch-first ``nn.RNN`` (tanh), ``nn.LSTM`` or ``nn.GRU`` picked by ``kind``.

    ``dropout`` applies between stacked layers only (PyTorch warns if it is set with one layer, so it is
    dropped then).
    """
    if kind not in RNN_CLASSES:
        raise ValueError(f"make_rnn: unknown kind {kind!r}, expected one of {', '.join(RNN_CLASSES)}")
    return RNN_CLASSES[kind](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                             bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)


def map_state(state: RNNState, fn: Callable[[torch.Tensor], torch.Tensor]) -> RNNState:
    """Apply ``fn`` to ``h`` (and ``c`` for an LSTM), keeping the state's structure."""
    if isinstance(state, tuple):
        return fn(state[0]), fn(state[1])
    return fn(state)


def concat_directions(h: torch.Tensor, num_layers: int) -> torch.Tensor:
    """``(L * 2, B, Hd)`` bidirectional states -> ``(L, B, 2 * Hd)`` with ``[forward; backward]`` per layer."""
    _, batch, hidden = h.shape
    h = h.view(num_layers, 2, batch, hidden)  # (L, 2, B, Hd)
    return h.permute(0, 2, 1, 3).reshape(num_layers, batch, 2 * hidden)  # (L, B, 2 * Hd)


class RNNEncoder(nn.Module):
    """A stacked, optionally bidirectional RNN/LSTM/GRU over a padded batch.

    Args:
        input_size: features per input step (embedding size).
        hidden_size: hidden units per layer and direction ``Hd``.
        num_layers: stacked layers ``L``.
        rnn: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        bidirectional: also read right-to-left; outputs concatenate both directions.
        dropout: between stacked layers.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, rnn: str = "gru", *,
                 bidirectional: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.kind, self.num_layers, self.bidirectional = rnn, num_layers, bidirectional
        self.hidden_size = hidden_size
        self.rnn = make_rnn(rnn, input_size, hidden_size, num_layers, bidirectional=bidirectional, dropout=dropout)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of the last dim of :attr:`RNNEncoderOutput.outputs`."""
        return self.num_directions * self.hidden_size

    def forward(self, inputs: torch.Tensor, valid_lens: torch.Tensor | None = None,
                state: RNNState | None = None) -> RNNEncoderOutput:
        """Run the RNN over ``inputs`` ``(B, T, input_size)``.

        Args:
            valid_lens: ``(B,)`` real steps per row, or ``None`` when no row is padded. Rows of length 0 are
                read as one step (packing needs at least one); their outputs are still zeroed.
            state: optional initial state (zeros by default).

        Returns:
            :class:`RNNEncoderOutput`; padded output positions are exactly zero.
        """
        if valid_lens is None:
            outputs, final = self.rnn(inputs, state)
            return RNNEncoderOutput(outputs, final)
        total = inputs.shape[1]
        # 1. Pack: each row contributes only its real steps, so padding never reaches the recurrence and
        #    the backward direction starts at the last real token, not at the padding.
        packed = pack_padded_sequence(inputs, valid_lens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        # 2. Recur. The final state is taken at each row's last real step (and is un-sorted by PyTorch).
        packed_out, final = self.rnn(packed, state)
        # 3. Unpack to (B, T, dirs * Hd) with zeros after each row's end.
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=total)
        if bool((valid_lens == 0).any()):
            outputs = outputs * (valid_lens > 0).to(outputs.dtype).view(-1, 1, 1)
        return RNNEncoderOutput(outputs, final)
