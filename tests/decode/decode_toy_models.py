"""Tiny models implementing the :class:`~attnlab.models.base.EncoderDecoder` contract, for decoding tests.

* :class:`TableModel` -- the next-token distribution is a table lookup on the target prefix, so tests can
  construct cases with known answers (e.g. beam search beating greedy decoding).
* :class:`TinyTransformer` -- one encoder and one decoder layer, single head, with a real KV cache, so
  cached and uncached decoding take genuinely different code paths.
* :class:`TinyGRU` -- GRU encoder (packed sequences) and a GRU decoder with additive attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnlab.models.base import AttentionMaps, DecoderState, EncoderDecoder, EncoderDecoderOutput, StepOutput


def _source_mask(src_lens: torch.Tensor, src_len: int) -> torch.Tensor:
    """``(B, Ts)`` bool, True on real source tokens."""
    return torch.arange(src_len, device=src_lens.device).unsqueeze(0) < src_lens.unsqueeze(1)


def _shape_eos(logits: torch.Tensor, positions: torch.Tensor, src_lens: torch.Tensor, ramp: float) -> torch.Tensor:
    """Add ``ramp * (t + 1 - src_len)`` to the ``<eos>`` logit, so outputs end near their source's length.

    ``logits``: ``(B, Tt, V)``; ``positions``: ``(Tt,)`` 0-based target positions; ``src_lens``: ``(B,)``.
    """
    if ramp == 0.0:
        return logits
    shift = ramp * (positions.unsqueeze(0) + 1 - src_lens.unsqueeze(1)).to(logits.dtype)  # (B, Tt)
    logits = logits.clone()
    logits[:, :, 2] += shift
    return logits


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention. ``q``: ``(B, Tq, D)``, ``k``/``v``: ``(B, Tk, D)``, ``mask``: ``(B, Tq|1, Tk)``."""
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, Tq, Tk)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


# ---------------------------------------------------------------------------------------------- table


@dataclass
class TableState(DecoderState):
    prefixes: list[tuple[int, ...]]  # generated tokens so far (after <bos>) per row
    src_lens: torch.Tensor  # (B,)
    src_len: int  # padded Ts
    steps: int = 0  # tokens consumed so far (the first one is <bos>)

    def reorder(self, index: torch.Tensor) -> TableState:
        idx = index.tolist()
        return TableState([self.prefixes[i] for i in idx], self.src_lens[index], self.src_len, self.steps)


class TableModel(EncoderDecoder):
    """``P(next | prefix) = table[prefix]`` (``default`` for prefixes not in the table); source ignored.

    Cross-attention at step ``t`` is a softmax of ``-(j - t)^2`` over the real source positions ``j``.
    """

    def __init__(self, vocab_size: int, table: dict[tuple[int, ...], dict[int, float]],
                 default: dict[int, float]) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.table = table
        self.default = default
        self.num_steps = 0  # decode_step calls, to check pruning and early stopping

    def _logits(self, prefix: tuple[int, ...]) -> torch.Tensor:
        dist = self.table.get(prefix, self.default)
        probs = torch.zeros(self.vocab_size, dtype=torch.float64)
        for tok, p in dist.items():
            probs[tok] = p
        return probs.log().float()  # (V,), -inf where p = 0

    def _weights(self, step: int, src_lens: torch.Tensor, src_len: int) -> torch.Tensor:
        pos = torch.arange(src_len, dtype=torch.float32)
        scores = (-(pos - step) ** 2).expand(src_lens.shape[0], src_len)  # (B, Ts)
        scores = scores.masked_fill(~_source_mask(src_lens, src_len), torch.finfo(torch.float32).min)
        return scores.softmax(dim=-1)

    def forward(self, src, src_lens, tgt_in, *, need_weights=False):
        bsz, tgt_len = tgt_in.shape
        logits = torch.stack([torch.stack([self._logits(tuple(tgt_in[b, 1:t + 1].tolist())) for t in range(tgt_len)])
                              for b in range(bsz)])  # (B, Tt, V)
        attention = None
        if need_weights:
            cross = torch.stack([self._weights(t, src_lens, src.shape[1]) for t in range(tgt_len)], dim=1)
            attention = AttentionMaps(cross=cross[None, :, None])  # (1, B, 1, Tt, Ts)
        return EncoderDecoderOutput(logits, attention)

    def encode(self, src, src_lens):
        return TableState([() for _ in range(src.shape[0])], src_lens, src.shape[1])

    def decode_step(self, tokens, state, *, need_weights=False):
        self.num_steps += 1
        assert isinstance(state, TableState)
        # The first step consumes <bos> (the prefix stays empty); later steps append the consumed token.
        toks = tokens.tolist()
        prefixes = state.prefixes if state.steps == 0 else [p + (t,) for p, t in zip(state.prefixes, toks, strict=True)]
        logits = torch.stack([self._logits(p) for p in prefixes])
        weights = self._weights(state.steps, state.src_lens, state.src_len) if need_weights else None
        return StepOutput(logits, TableState(prefixes, state.src_lens, state.src_len, state.steps + 1), weights)


# ---------------------------------------------------------------------------------------------- transformer


@dataclass
class TinyTransformerState(DecoderState):
    cross_k: torch.Tensor  # (B, Ts, D)
    cross_v: torch.Tensor  # (B, Ts, D)
    key_mask: torch.Tensor  # (B, Ts)
    self_k: torch.Tensor  # (B, t, D)
    self_v: torch.Tensor  # (B, t, D)

    def reorder(self, index: torch.Tensor) -> TinyTransformerState:
        return TinyTransformerState(*(x.index_select(0, index) for x in
                                      (self.cross_k, self.cross_v, self.key_mask, self.self_k, self.self_v)))


class TinyTransformer(EncoderDecoder):
    """One-layer, one-head encoder-decoder with learned positions and a KV cache for decoder self-attention."""

    def __init__(self, vocab_size: int = 11, d_model: int = 16, max_pos: int = 64, eos_ramp: float = 0.0) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.tgt_emb = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = nn.Embedding(max_pos, d_model)
        self.enc_qkv = nn.Linear(d_model, 3 * d_model)
        self.self_qkv = nn.Linear(d_model, 3 * d_model)
        self.cross_q = nn.Linear(d_model, d_model)
        self.cross_kv = nn.Linear(d_model, 2 * d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model))
        self.out = nn.Linear(d_model, vocab_size)
        with torch.no_grad():  # sharper distributions than the default init: fewer near-ties
            self.out.weight.mul_(4.0)
        self.eos_ramp = eos_ramp

    def encode(self, src, src_lens):
        key_mask = _source_mask(src_lens, src.shape[1])  # (B, Ts)
        x = self.src_emb(src) + self.pos(torch.arange(src.shape[1], device=src.device))
        q, k, v = self.enc_qkv(x).chunk(3, dim=-1)
        h, _ = _attend(q, k, v, key_mask.unsqueeze(1))
        memory = x + h  # (B, Ts, D)
        cross_k, cross_v = self.cross_kv(memory).chunk(2, dim=-1)
        empty = memory.new_zeros(src.shape[0], 0, memory.shape[-1])
        return TinyTransformerState(cross_k, cross_v, key_mask, empty, empty)

    def _decode(self, x, self_k, self_v, self_mask, state):
        q, _, _ = self.self_qkv(x).chunk(3, dim=-1)
        h, _ = _attend(q, self_k, self_v, self_mask)
        h = x + h
        c, w = _attend(self.cross_q(h), state.cross_k, state.cross_v, state.key_mask.unsqueeze(1))
        h = h + c
        h = h + self.ff(h)
        return self.out(h), w  # (B, Tq, V), (B, Tq, Ts)

    def forward(self, src, src_lens, tgt_in, *, need_weights=False):
        state = self.encode(src, src_lens)
        tgt_len = tgt_in.shape[1]
        x = self.tgt_emb(tgt_in) + self.pos(torch.arange(tgt_len, device=tgt_in.device))
        _, k, v = self.self_qkv(x).chunk(3, dim=-1)
        causal = torch.ones(tgt_len, tgt_len, dtype=torch.bool, device=x.device).tril().unsqueeze(0)
        logits, w = self._decode(x, k, v, causal, state)
        logits = _shape_eos(logits, torch.arange(tgt_len), src_lens, self.eos_ramp)
        return EncoderDecoderOutput(logits, AttentionMaps(cross=w[None, :, None]) if need_weights else None)

    def decode_step(self, tokens, state, *, need_weights=False):
        assert isinstance(state, TinyTransformerState)
        t = state.self_k.shape[1]
        x = self.tgt_emb(tokens).unsqueeze(1) + self.pos.weight[t]  # (B, 1, D)
        _, k, v = self.self_qkv(x).chunk(3, dim=-1)
        self_k = torch.cat([state.self_k, k], dim=1)  # (B, t + 1, D)
        self_v = torch.cat([state.self_v, v], dim=1)
        mask = torch.ones(x.shape[0], 1, t + 1, dtype=torch.bool, device=x.device)
        new_state = TinyTransformerState(state.cross_k, state.cross_v, state.key_mask, self_k, self_v)
        logits, w = self._decode(x, self_k, self_v, mask, new_state)
        logits = _shape_eos(logits, torch.tensor([t]), state.key_mask.sum(1), self.eos_ramp)
        return StepOutput(logits[:, 0], new_state, w[:, 0] if need_weights else None)


# ---------------------------------------------------------------------------------------------- GRU


@dataclass
class TinyGRUState(DecoderState):
    hidden: torch.Tensor  # (B, D)
    memory: torch.Tensor  # (B, Ts, D)
    key_mask: torch.Tensor  # (B, Ts)
    steps: int = 0

    def reorder(self, index: torch.Tensor) -> TinyGRUState:
        return TinyGRUState(self.hidden[index], self.memory[index], self.key_mask[index], self.steps)


class TinyGRU(EncoderDecoder):
    """GRU encoder-decoder with additive (Bahdanau) attention; query = previous decoder hidden state."""

    def __init__(self, vocab_size: int = 11, d_model: int = 16, eos_ramp: float = 0.0) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.tgt_emb = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.encoder = nn.GRU(d_model, d_model, batch_first=True)
        self.w_q = nn.Linear(d_model, d_model, bias=False)
        self.w_k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, 1, bias=False)
        self.cell = nn.GRUCell(2 * d_model, d_model)
        self.out = nn.Linear(2 * d_model, vocab_size)
        with torch.no_grad():
            self.out.weight.mul_(4.0)
        self.eos_ramp = eos_ramp

    def encode(self, src, src_lens):
        packed = pack_padded_sequence(self.src_emb(src), src_lens.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, Ts, D)
        return TinyGRUState(h[0], memory, _source_mask(src_lens, src.shape[1]))

    def decode_step(self, tokens, state, *, need_weights=False):
        assert isinstance(state, TinyGRUState)
        scores = self.v(torch.tanh(self.w_q(state.hidden).unsqueeze(1) + self.w_k(state.memory))).squeeze(2)
        scores = scores.masked_fill(~state.key_mask, torch.finfo(scores.dtype).min)  # (B, Ts)
        weights = scores.softmax(dim=-1)
        context = (weights.unsqueeze(2) * state.memory).sum(1)  # (B, D)
        hidden = self.cell(torch.cat([self.tgt_emb(tokens), context], dim=-1), state.hidden)
        logits = self.out(torch.cat([hidden, context], dim=-1)).unsqueeze(1)  # (B, 1, V)
        logits = _shape_eos(logits, torch.tensor([state.steps]), state.key_mask.sum(1), self.eos_ramp)[:, 0]
        new_state = TinyGRUState(hidden, state.memory, state.key_mask, state.steps + 1)
        return StepOutput(logits, new_state, weights if need_weights else None)

    def forward(self, src, src_lens, tgt_in, *, need_weights=False):
        state = self.encode(src, src_lens)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            out = self.decode_step(tgt_in[:, t], state, need_weights=True)
            state = out.state
            logits.append(out.logits)
            weights.append(out.cross_weights)
        cross = torch.stack(weights, dim=1)[None, :, None]  # (1, B, 1, Tt, Ts)
        return EncoderDecoderOutput(torch.stack(logits, dim=1), AttentionMaps(cross=cross) if need_weights else None)


# ---------------------------------------------------------------------------------------------- copy


@dataclass
class CopyState(DecoderState):
    src: torch.Tensor  # (B, Ts)
    src_lens: torch.Tensor  # (B,)
    steps: int = 0

    def reorder(self, index: torch.Tensor) -> CopyState:
        return CopyState(self.src[index], self.src_lens[index], self.steps)


class CopyModel(EncoderDecoder):
    """Predicts the source back, then ``<eos>``, with probability ~0.9998 per step; attends to the copied token."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def _step(self, src: torch.Tensor, src_lens: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        bsz, src_len = src.shape
        target = src[:, t] if t < src_len else torch.zeros(bsz, dtype=torch.long)
        target = torch.where(src_lens > t, target, torch.full_like(target, 2))
        logits = torch.nn.functional.one_hot(target, self.vocab_size).float() * 10.0  # (B, V)
        pos = torch.minimum(torch.full_like(src_lens, t), src_lens - 1)
        weights = torch.nn.functional.one_hot(pos, src_len).float()  # (B, Ts)
        return logits, weights

    def forward(self, src, src_lens, tgt_in, *, need_weights=False):
        steps = [self._step(src, src_lens, t) for t in range(tgt_in.shape[1])]
        logits = torch.stack([s[0] for s in steps], dim=1)
        cross = torch.stack([s[1] for s in steps], dim=1)[None, :, None]
        return EncoderDecoderOutput(logits, AttentionMaps(cross=cross) if need_weights else None)

    def encode(self, src, src_lens):
        return CopyState(src, src_lens)

    def decode_step(self, tokens, state, *, need_weights=False):
        assert isinstance(state, CopyState)
        logits, weights = self._step(state.src, state.src_lens, state.steps)
        return StepOutput(logits, CopyState(state.src, state.src_lens, state.steps + 1),
                          weights if need_weights else None)


# ---------------------------------------------------------------------------------------------- helpers


def random_batch(seed: int, lens: list[int], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded source batch: ``(B, max(lens))`` ids in ``[4, V)`` (no specials), 0 after each length."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (len(lens), max(lens)), generator=gen)
    src_lens = torch.tensor(lens)
    src[~_source_mask(src_lens, src.shape[1])] = 0
    return src, src_lens


def teacher_forced(model: EncoderDecoder, src: torch.Tensor, src_len: int, tokens: list[int], ended: bool
                   ) -> tuple[float, torch.Tensor | None]:
    """Sum of log-probs of ``tokens (+ <eos>)`` for one unpadded source ``(1, Ts)``, and the cross-attention
    ``(num_steps, Ts)`` of the last layer averaged over heads, from one teacher-forced ``forward``."""
    target = tokens + ([2] if ended else [])
    tgt_in = torch.tensor([[1] + target[:-1]])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.forward(src[:, :src_len], torch.tensor([src_len]), tgt_in, need_weights=True)
    model.train(was_training)
    logp = out.logits[0].float().log_softmax(-1)  # (Tt, V)
    score = float(logp[torch.arange(len(target)), torch.tensor(target)].sum())
    maps = out.attention
    cross = maps.cross[-1, 0].mean(0) if maps is not None and maps.cross is not None else None  # (Tt, Ts)
    return score, cross


# ---------------------------------------------------------------------------------------------- eos ramp wrapper


@dataclass
class RampState(DecoderState):
    inner: DecoderState
    src_lens: torch.Tensor  # (B,)
    steps: int = 0

    def reorder(self, index: torch.Tensor) -> RampState:
        return RampState(self.inner.reorder(index), self.src_lens[index], self.steps)


class EosRamp(EncoderDecoder):
    """Wraps a (random-init) model and adds ``ramp * (t + 1 - src_len)`` to its ``<eos>`` logit.

    Untrained models rarely emit ``<eos>``; with the ramp their outputs end near the source length, at
    different steps per row, like a trained translation model's -- so pruning and stopping get exercised
    while all the state handling (KV caches, RNN states, reorders) is the wrapped model's own.
    """

    def __init__(self, inner: EncoderDecoder, ramp: float = 1.0) -> None:
        super().__init__()
        self.inner = inner
        self.ramp = ramp

    def forward(self, src, src_lens, tgt_in, *, need_weights=False):
        out = self.inner.forward(src, src_lens, tgt_in, need_weights=need_weights)
        logits = _shape_eos(out.logits, torch.arange(tgt_in.shape[1]), src_lens, self.ramp)
        return EncoderDecoderOutput(logits, out.attention)

    def encode(self, src, src_lens):
        return RampState(self.inner.encode(src, src_lens), src_lens)

    def decode_step(self, tokens, state, *, need_weights=False):
        assert isinstance(state, RampState)
        out = self.inner.decode_step(tokens, state.inner, need_weights=need_weights)
        logits = _shape_eos(out.logits.unsqueeze(1), torch.tensor([state.steps]), state.src_lens, self.ramp)[:, 0]
        return StepOutput(logits, RampState(out.state, state.src_lens, state.steps + 1), out.cross_weights)
