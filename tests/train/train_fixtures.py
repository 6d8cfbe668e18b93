"""Tiny models and a fake batch source for the training tests (also imported by subprocess scripts)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.core.train_config import TrainConfig
from attnlab.core.types import Batch
from attnlab.models.base import DecoderState, EncoderDecoder, EncoderDecoderOutput, StepOutput

VOCAB = 12  # 0 = <pad>, 1 = <bos>, 2 = <eos>, 3.. = symbols


class TinySeq2Seq(EncoderDecoder):
    """Embedding + GRU encoder/decoder + linear output, with dropout (RNG) and a step-counting buffer."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, dropout: float = 0.2, tie: bool = False) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.tgt_embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.encoder = nn.GRU(dim, dim, batch_first=True)
        self.decoder = nn.GRU(dim, dim, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, vocab)
        if tie:
            self.out.weight = self.tgt_embed.weight
        self.register_buffer("forward_calls", torch.zeros((), dtype=torch.long))

    def forward(self, src: torch.Tensor, src_lens: torch.Tensor, tgt_in: torch.Tensor, *,
                need_weights: bool = False) -> EncoderDecoderOutput:
        if self.training:
            self.forward_calls += 1
        _, h = self.encoder(self.dropout(self.src_embed(src)))  # h: (1, B, D)
        y, _ = self.decoder(self.dropout(self.tgt_embed(tgt_in)), h)  # (B, Tt, D)
        return EncoderDecoderOutput(self.out(self.dropout(self.norm(y))), None)  # (B, Tt, V)

    def encode(self, src: torch.Tensor, src_lens: torch.Tensor) -> DecoderState:
        raise NotImplementedError

    def decode_step(self, tokens: torch.Tensor, state: DecoderState, *, need_weights: bool = False) -> StepOutput:
        raise NotImplementedError


def make_model(seed: int = 0, **kwargs: Any) -> TinySeq2Seq:
    torch.manual_seed(seed)
    return TinySeq2Seq(**kwargs)


def _collate(pairs: list[tuple[list[int], list[int]]], index: list[int]) -> Batch:
    src_len = max(len(s) for s, _ in pairs)
    tgt_len = max(len(t) for _, t in pairs) + 1
    src = torch.zeros(len(pairs), src_len, dtype=torch.long)
    tgt_in = torch.zeros(len(pairs), tgt_len, dtype=torch.long)
    tgt_out = torch.zeros(len(pairs), tgt_len, dtype=torch.long)
    for row, (s, t) in enumerate(pairs):
        src[row, : len(s)] = torch.tensor(s)
        tgt_in[row, : len(t) + 1] = torch.tensor([1, *t])
        tgt_out[row, : len(t) + 1] = torch.tensor([*t, 2])
    return Batch(src=src, src_lens=torch.tensor([len(s) for s, _ in pairs]), tgt_in=tgt_in, tgt_out=tgt_out,
                 tgt_lens=torch.tensor([len(t) + 1 for _, t in pairs]), index=torch.tensor(index))


class FakeBatches:
    """The BatchSource protocol over a fixed list of reversal-task batches, reshuffled per epoch.

    Same semantics as ``attnlab.data.batching.BucketedBatches``: ``position`` counts the batches of
    ``epoch`` already yielded and is advanced before each yield; after the last batch of an epoch the
    state already reads ``(epoch + 1, 0)``.
    """

    def __init__(self, num_batches: int = 7, batch_size: int = 4, seed: int = 0, data_seed: int = 123) -> None:
        rng = random.Random(data_seed)
        self._batches = []
        for b in range(num_batches):
            pairs = []
            for _ in range(batch_size):
                seq = [rng.randrange(3, VOCAB) for _ in range(rng.randint(2, 6))]
                pairs.append((seq, seq[::-1]))
            self._batches.append(_collate(pairs, list(range(b * batch_size, (b + 1) * batch_size))))
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self._batches)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def __iter__(self) -> Iterator[Batch]:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
        order = self._order(self.epoch)
        while self.position < len(order):
            batch = self._batches[order[self.position]]
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def __len__(self) -> int:
        return len(self._batches)

    def state_dict(self) -> dict[str, int]:
        if self.position >= len(self._batches):
            return {"epoch": self.epoch + 1, "position": 0, "seed": self.seed}
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]

    def all_batches(self) -> list[Batch]:
        return list(self._batches)


def tiny_config(**overrides: Any) -> TrainConfig:
    """A fast config: no logging window, frequent evaluation/saving, train_loss as the best metric."""
    base: dict[str, Any] = {"lr": 3e-3, "warmup_steps": 3, "max_steps": 10, "eval_every": 5, "save_every": 5,
                            "log_every": 1, "best_metric": "train_loss", "seed": 7, "label_smoothing": 0.1}
    base.update(overrides)
    return TrainConfig(**base)


def read_metrics(out_dir: Any, kind: str = "train") -> list[dict[str, Any]]:
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]
