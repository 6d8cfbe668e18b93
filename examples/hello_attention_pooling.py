"""Learn "hello" -> "ohlol" with an LSTM whose outputs are read by attention pooling.

Each output position ``t`` owns a trained query that attends over *all* LSTM outputs (additive scores,
Bahdanau et al., 2015; pooling with several queries as in Lin et al., 2017) and the output character is read
from the pooled vector. After training, the printed weights show which input positions each output looked
at. Run: ``python examples/hello_attention_pooling.py``.
"""

from __future__ import annotations

import torch
from hello_common import CHARS, SOURCE, TARGET, encode, run_main, train
from torch import nn

from attnlab.models.classifier import AttentionPooling


class PooledLSTMTagger(nn.Module):
    """Embedding -> LSTM -> one attention-pooled vector per output position -> logits."""

    def __init__(self, vocab_size: int, num_outputs: int, embed_dim: int = 6, hidden_size: int = 12) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.pooling = AttentionPooling(hidden_size, num_queries=num_outputs)
        self.readout = nn.Linear(hidden_size, vocab_size)

    def attend(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` ``(B, T)`` -> pooled ``(B, Q, Hd)`` and weights ``(B, Q, T)``."""
        outputs, _ = self.lstm(self.embedding(ids))  # (B, T, Hd)
        return self.pooling(outputs)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` ``(B, T)`` -> ``(B, Q, V)`` logits, one row per output character."""
        pooled, _ = self.attend(ids)  # (B, Q, Hd)
        return self.readout(pooled)  # (B, Q, V)


def main(epochs: int = 80, seed: int = 0, verbose: bool = True) -> str:
    torch.manual_seed(seed)
    model = PooledLSTMTagger(len(CHARS), num_outputs=len(TARGET))
    prediction = train(model, encode(SOURCE), epochs=epochs, lr=0.05, verbose=verbose)
    if verbose:
        with torch.no_grad():
            _, weights = model.attend(encode(SOURCE))  # (1, Q, T)
        print("attention of each output character over the input positions:")
        print("      " + "  ".join(f"{ch:>4}" for ch in SOURCE))
        for ch, row in zip(prediction, weights[0], strict=True):
            print(f"  {ch}   " + "  ".join(f"{w:4.2f}" for w in row.tolist()))
    return prediction


if __name__ == "__main__":
    run_main(main, __doc__, epochs=80)
