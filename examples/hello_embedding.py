"""Learn "hello" -> "ohlol" with an ``nn.Embedding`` input layer in front of ``nn.RNN``.

Instead of one-hot vectors the model looks up a trained dense vector per character id -- equivalent to
multiplying the one-hot vector by a weight matrix, without building the one-hot vector. Run:
``python examples/hello_embedding.py``.
"""

from __future__ import annotations

import torch
from hello_common import CHARS, SOURCE, encode, run_main, train
from torch import nn


class EmbeddingRNNTagger(nn.Module):
    """Character ids -> embeddings -> ``nn.RNN`` -> per-step logits."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.RNN(embed_dim, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: ``(B, T)`` long -> ``(B, T, V)`` logits."""
        x = self.embedding(ids)  # (B, T, E)
        outputs, _ = self.rnn(x)  # (B, T, Hd)
        return self.readout(outputs)  # (B, T, V)


def main(epochs: int = 60, seed: int = 0, verbose: bool = True) -> str:
    torch.manual_seed(seed)
    model = EmbeddingRNNTagger(len(CHARS), embed_dim=6, hidden_size=8)
    return train(model, encode(SOURCE), epochs=epochs, verbose=verbose)


if __name__ == "__main__":
    run_main(main, __doc__, epochs=60)
