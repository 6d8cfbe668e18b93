"""Learn "hello" -> "ohlol" with ``nn.RNN``: the same recurrence as ``hello_rnncell.py``, but PyTorch runs
the loop over time (in C++), and the layer can be stacked. Run: ``python examples/hello_rnn.py``.
"""

from __future__ import annotations

import torch
from hello_common import CHARS, SOURCE, one_hot, run_main, train
from torch import nn


class RNNTagger(nn.Module):
    """A stacked ``nn.RNN`` over the whole sequence at once, plus a linear read-out."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.rnn = nn.RNN(vocab_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.readout = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, V)`` one-hot -> ``(B, T, V)`` logits."""
        outputs, _ = self.rnn(x)  # (B, T, Hd): the last layer's h_t for every t
        return self.readout(outputs)  # (B, T, V)


def main(epochs: int = 60, seed: int = 0, verbose: bool = True) -> str:
    torch.manual_seed(seed)
    model = RNNTagger(len(CHARS), hidden_size=8, num_layers=2)
    return train(model, one_hot(SOURCE), epochs=epochs, verbose=verbose)


if __name__ == "__main__":
    run_main(main, __doc__, epochs=60)
