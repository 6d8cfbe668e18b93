"""Learn "hello" -> "ohlol" with an LSTM, a GRU or a bidirectional LSTM (attnlab's ``RNNEncoder``).

LSTM: Hochreiter & Schmidhuber (1997); GRU: Cho et al. (2014); bidirectional: Schuster & Paliwal (1997)
-- the bidirectional model sees the whole word at every position, so it also sees what comes *after*.
Run: ``python examples/hello_rnn_variants.py --cell gru``.
"""

from __future__ import annotations

import torch
from hello_common import CHARS, SOURCE, encode, run_main, train
from torch import nn

from attnlab.models.rnn import RNNEncoder

CELLS = {"lstm": ("lstm", False), "gru": ("gru", False), "bilstm": ("lstm", True)}


class RecurrentTagger(nn.Module):
    """Embedding -> (bi)LSTM/GRU -> per-step logits."""

    def __init__(self, vocab_size: int, cell: str, embed_dim: int = 6, hidden_size: int = 8) -> None:
        super().__init__()
        rnn, bidirectional = CELLS[cell]
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.encoder = RNNEncoder(embed_dim, hidden_size, rnn=rnn, bidirectional=bidirectional)
        self.readout = nn.Linear(self.encoder.output_size, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: ``(B, T)`` long -> ``(B, T, V)`` logits."""
        outputs, _ = self.encoder(self.embedding(ids))  # (B, T, dirs * Hd)
        return self.readout(outputs)  # (B, T, V)


def main(cell: str = "lstm", epochs: int = 60, seed: int = 0, verbose: bool = True) -> str:
    torch.manual_seed(seed)
    model = RecurrentTagger(len(CHARS), cell)
    return train(model, encode(SOURCE), epochs=epochs, verbose=verbose)


if __name__ == "__main__":
    run_main(main, __doc__, epochs=60, cell=["lstm", *sorted(set(CELLS) - {"lstm"})])
