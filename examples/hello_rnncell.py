"""Learn "hello" -> "ohlol" with an ``nn.RNNCell`` unrolled by hand over one-hot characters.

The Elman (1990) recurrence, written out: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, then a
linear read-out ``y_t = W_hy h_t``. Run: ``python examples/hello_rnncell.py``.
"""

from __future__ import annotations

import torch
from hello_common import CHARS, SOURCE, one_hot, run_main, train
from torch import nn


class CellTagger(nn.Module):
    """One ``nn.RNNCell`` stepped in a Python loop, one output per step."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = nn.RNNCell(vocab_size, hidden_size)
        self.readout = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, V)`` one-hot -> ``(B, T, V)`` logits."""
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)  # (B, Hd): h_0 = 0
        logits = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)  # (B, Hd): h_t from x_t and h_{t-1}
            logits.append(self.readout(h))  # (B, V)
        return torch.stack(logits, dim=1)  # (B, T, V)


def main(epochs: int = 60, seed: int = 0, verbose: bool = True) -> str:
    torch.manual_seed(seed)
    model = CellTagger(len(CHARS), hidden_size=8)
    return train(model, one_hot(SOURCE), epochs=epochs, verbose=verbose)


if __name__ == "__main__":
    run_main(main, __doc__, epochs=60)
