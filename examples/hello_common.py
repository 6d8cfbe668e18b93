"""Shared data and training loop of the "hello" -> "ohlol" examples (the classic first RNN exercise).

Each character of "hello" must be mapped to the character of "ohlol" at the same position. Plain
per-character lookup cannot do it -- the two "l"s map to "l" and to "o" -- so the model needs memory
of what came before: exactly what a recurrent network provides.

Every example defines only its model (a module mapping an input batch to ``(B, T, V)`` logits) and calls
:func:`train`, which prints the prediction after each epoch and returns the final one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHARS = "helo"  # the vocabulary: index i <-> CHARS[i]
SOURCE, TARGET = "hello", "ohlol"


def encode(text: str) -> torch.Tensor:
    """``(1, T)`` character ids of ``text``."""
    return torch.tensor([[CHARS.index(ch) for ch in text]])


def one_hot(text: str) -> torch.Tensor:
    """``(1, T, V)`` one-hot float vectors of ``text``."""
    return F.one_hot(encode(text), num_classes=len(CHARS)).float()


def decode(ids: torch.Tensor) -> str:
    """Characters of a ``(T,)`` id tensor."""
    return "".join(CHARS[i] for i in ids.tolist())


def train(model: nn.Module, inputs: torch.Tensor, *, epochs: int, lr: float = 0.05, verbose: bool = True) -> str:
    """Fit ``model(inputs) -> (1, T, V)`` logits to :data:`TARGET` with Adam; returns the last prediction."""
    targets = encode(TARGET)  # (1, T)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    prediction = ""
    for epoch in range(1, epochs + 1):
        logits = model(inputs)  # (1, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        prediction = decode(logits[0].argmax(-1))
        if verbose:
            print(f"epoch {epoch:3d}  loss {loss.item():.4f}  {SOURCE!r} -> {prediction!r}")
    return prediction


def run_main(main, doc: str | None, *, epochs: int = 60, **choices: list[str]) -> None:
    """Command line of every example: ``--epochs``, ``--seed`` and any ``--name`` choice, passed to ``main``.

    ``choices`` maps a keyword of ``main`` to its allowed values (the first is the default).
    """
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    for name, values in choices.items():
        parser.add_argument(f"--{name}", choices=values, default=values[0])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
