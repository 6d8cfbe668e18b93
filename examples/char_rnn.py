"""A character-level language model (a tiny "char-rnn", Karpathy, 2015): a GRU learns to continue a text
one character at a time, then writes it back from a short prompt with greedy decoding.

Training predicts character ``t + 1`` from characters ``0..t`` (teacher forcing); generation feeds each
predicted character back in, carrying the GRU state, so the whole text must be held in the recurrent state
(for example, which "attention" it is currently in). Run: ``python examples/char_rnn.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hello_common import run_main
from torch import nn

from attnlab.models.rnn import RNNEncoder, RNNState

TEXT = "attention is all you need; attention lets each word look at every other word."
PROMPT = "attention"


class CharLanguageModel(nn.Module):
    """Embedding -> GRU -> next-character logits."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden_size: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = RNNEncoder(embed_dim, hidden_size, rnn="gru")
        self.readout = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state: RNNState | None = None) -> tuple[torch.Tensor, RNNState]:
        """``ids`` ``(B, T)`` -> logits ``(B, T, V)`` and the GRU state after the last character."""
        outputs, state = self.rnn(self.embedding(ids), state=state)  # (B, T, Hd)
        return self.readout(outputs), state  # (B, T, V)


@torch.no_grad()
def generate(model: CharLanguageModel, chars: str, prompt: str, length: int) -> str:
    """Greedy continuation of ``prompt`` up to ``length`` characters in all."""
    ids = torch.tensor([[chars.index(c) for c in prompt]])  # (1, P)
    logits, state = model(ids)  # read the whole prompt, keep the state
    text = prompt
    while len(text) < length:
        next_id = logits[0, -1].argmax()
        text += chars[int(next_id)]
        logits, state = model(next_id.view(1, 1), state)  # one step: (1, 1, V)
    return text


def main(epochs: int = 60, seed: int = 0, verbose: bool = True) -> str:
    torch.manual_seed(seed)
    chars = "".join(sorted(set(TEXT)))
    ids = torch.tensor([[chars.index(c) for c in TEXT]])  # (1, T)
    inputs, targets = ids[:, :-1], ids[:, 1:]  # predict each next character
    model = CharLanguageModel(len(chars))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    sample = ""
    for epoch in range(1, epochs + 1):
        model.train()
        logits, _ = model(inputs)  # (1, T - 1, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.eval()
        sample = generate(model, chars, PROMPT, len(TEXT))
        if verbose:
            print(f"epoch {epoch:3d}  loss {loss.item():.4f}  {sample!r}")
    return sample


if __name__ == "__main__":
    run_main(main, __doc__, epochs=60)
