"""A shape tracer for learners: record every named step inside multi-head attention.

>>> with trace() as t:
...     mha(x)
>>> print(t.table())

Tracing is off unless a :func:`trace` block is active; when off, the attention modules pay one
``ContextVar.get()`` per call. While tracing, multi-head attention takes the explicit (non-fused) path so
that scores and weights exist as tensors to show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

# name -> (symbolic shape, one-line explanation), in the order the steps happen.
STEPS: dict[str, tuple[str, str]] = {
    "query_input": ("(B, Tq, D)", "queries enter: one D-dim vector per query position"),
    "key_input": ("(B, Tk, Dk)", "keys enter (cross-attention: the sequence being attended to)"),
    "value_input": ("(B, Tk, Dv)", "values enter: what gets mixed into the output"),
    "q_proj": ("(B, Tq, D)", "Q = query @ W_q + b_q (all heads at once)"),
    "k_proj": ("(B, Tk, D)", "K = key @ W_k + b_k"),
    "v_proj": ("(B, Tk, D)", "V = value @ W_v + b_v"),
    "q_heads": ("(B, H, Tq, Dh)", "split D into H heads of Dh = D/H and move heads next to batch"),
    "k_heads": ("(B, H, Tk, Dh)", "the same split for keys"),
    "v_heads": ("(B, H, Tk, Dh)", "the same split for values"),
    "k_cached": ("(B, H, Tk, Dh)", "keys after appending to the KV cache (past + new positions)"),
    "v_cached": ("(B, H, Tk, Dh)", "values after appending to the KV cache"),
    "scores": ("(B, H, Tq, Tk)", "Q @ K^T: one similarity per (query, key) pair in every head"),
    "scaled_scores": ("(B, H, Tq, Tk)", "divide by sqrt(Dh) so softmax does not saturate as Dh grows"),
    "masked_scores": ("(B, H, Tq, Tk)", "disallowed pairs (padding, future) set to the dtype's minimum"),
    "weights": ("(B, H, Tq, Tk)", "softmax over keys: each query's weights sum to 1 (0 if fully masked)"),
    "context": ("(B, H, Tq, Dh)", "weights @ V: each query's weighted average of values, per head"),
    "merged": ("(B, Tq, D)", "concatenate the heads back: transpose and reshape H*Dh -> D"),
    "output": ("(B, Tq, D)", "output = merged @ W_o + b_o mixes information across heads"),
}


@dataclass(frozen=True)
class TraceStep:
    """One recorded step: ``module`` is the traced module's qualified label (empty if unnamed)."""

    name: str
    shape: tuple[int, ...]
    symbols: str
    explanation: str
    module: str = ""


@dataclass
class Trace:
    """The steps recorded inside one :func:`trace` block, in order."""

    steps: list[TraceStep] = field(default_factory=list)
    _module: str = ""

    def record(self, name: str, tensor: torch.Tensor) -> None:
        symbols, explanation = STEPS[name]
        self.steps.append(TraceStep(name, tuple(tensor.shape), symbols, explanation, self._module))

    @contextmanager
    def scope(self, module: str) -> Iterator[None]:
        previous, self._module = self._module, module
        try:
            yield
        finally:
            self._module = previous

    def table(self) -> str:
        """The steps as an aligned text table: step, symbolic shape, concrete shape, explanation."""
        rows = [("step", "symbols", "shape", "what happens")]
        rows += [(s.name, s.symbols, "(" + ", ".join(map(str, s.shape)) + ")", s.explanation) for s in self.steps]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 12)
        return "\n".join(lines)


_ACTIVE: ContextVar[Trace | None] = ContextVar("attnlab_trace", default=None)


def active_trace() -> Trace | None:
    """The trace being recorded in this context, or ``None`` (the common, zero-cost case)."""
    return _ACTIVE.get()


@contextmanager
def trace() -> Iterator[Trace]:
    """Record the shape of every step of every attention module called inside the block."""
    t = Trace()
    token = _ACTIVE.set(t)
    try:
        yield t
    finally:
        _ACTIVE.reset(token)
