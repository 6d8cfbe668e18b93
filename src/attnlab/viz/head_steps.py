"""One attention head, step by step, with the module's own numbers: a worked example for learners.

For query position ``i`` of head ``h`` of a :class:`~attnlab.attention.multihead.MultiHeadAttention`
(Vaswani et al., 2017, eq. 1 and section 3.2.2)::

    q_i = x_i W_q[h]ᵀ + b_q[h]        K_h = X_k W_k[h]ᵀ + b_k[h]        V_h = X_v W_v[h]ᵀ + b_v[h]
    w_i = softmax(mask(q_i K_hᵀ / sqrt(Dh)))        head_i = w_i V_h
    out_i = sum over heads g of W_o[:, g] head_i(g) + b_o

where ``W_q[h]`` are rows ``h*Dh:(h+1)*Dh`` of the query projection and ``W_o[:, h]`` the matching columns of the
output projection. :func:`explain_attention` computes every one of these for all heads and queries of one batch
row (:class:`AttentionSteps`); :func:`explain_head` picks one head and one query (:class:`HeadExplanation`).

The module itself also runs once, inside :func:`attnlab.attention.trace.trace` and with ``need_weights=True``: its
weights and output row are kept beside the ones computed here (a reader sees they agree; the tests assert it), and
the shapes its tracer records are checked against ours. The inputs and masks are the module's own: the keywords of
:meth:`MultiHeadAttention.forward` (``valid_lens``, ``mask`` with ``True`` = may attend, ``is_causal``). As the
module does, input rows that no output depends on (padding) are zeroed before they are projected.

Views: :func:`format_table` for a terminal and :func:`explain_head_html` / :func:`write_explain_head_html`, a
self-contained page (no network; tokens as JSON data put on the page with ``textContent`` only; CSP by hash, as
:mod:`attnlab.viz.html`) where clicking a token chooses the query and a selector the head.

Dimension legend: ``B`` batch, ``H`` heads, ``Tq``/``Tk`` query/key length, ``D`` model dim, ``Dk``/``Dv`` key/value
input dims, ``Dh`` head dim.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.attention.functional import build_mask, fill_masked, softmax_with_mask, zero_unused_inputs
from attnlab.attention.masks import check_mask
from attnlab.attention.multihead import MultiHeadAttention
from attnlab.attention.trace import STEPS, trace
from attnlab.core.errors import ConfigError
from attnlab.viz.html import PAGE_HEAD, _asset, _csp_hash, json_for_script

log = logging.getLogger(__name__)

__all__ = ["AttentionSteps", "HeadExplanation", "explain_attention", "explain_head", "explain_head_html",
           "format_table", "write_explain_head_html"]

_LARGE = 500_000  # numbers on the page; past this it gets slow to load, so say so
_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


# ------------------------------------------------------------------------------------------------ results

@dataclass(frozen=True)
class HeadExplanation:
    """Every step of one head's attention for one query (one batch row). Tensors are detached, on the CPU.

    Attributes:
        head, num_heads, query_index, batch_index: which head, of how many; which query and batch row.
        is_self: self-attention (the keys and values are the queries' own sequence).
        scale: ``1 / sqrt(Dh)``.
        mask_kinds: what restricts attention here, e.g. ``("key padding (valid_lens)", "causal")``.
        x_query: ``(Tq, D)`` the query inputs (row ``query_index`` is this query's ``x_i``).
        x_key, x_value: ``(Tk, Dk)``, ``(Tk, Dv)`` the key and value inputs.
        w_q, w_k, w_v: ``(Dh, D)``, ``(Dh, Dk)``, ``(Dh, Dv)`` this head's rows of the input projections.
        b_q, b_k, b_v: ``(Dh,)`` this head's biases, or ``None`` (``bias=False``).
        q_head: ``(Tq, Dh)`` Q of this head for every query; k_head, v_head: ``(Tk, Dh)`` K and V.
        q: ``(Dh,)`` this query's row of ``q_head``.
        scores: ``(Tk,)`` ``q · k_j``; scaled_scores: ``(Tk,)`` times ``scale``.
        allowed: ``(Tk,)`` boolean, ``True`` = this query may attend to key ``j``.
        masked_scores: ``(Tk,)`` the scaled scores with disallowed keys at the dtype's minimum (as the module fills).
        weights: ``(Tk,)`` softmax weights; exactly 0 where not allowed, all 0 if nothing is allowed.
        head_output: ``(Dh,)`` ``sum_j weights[j] * v_head[j]``.
        w_o: ``(D, Dh)`` this head's columns of the output projection.
        contributions: ``(H, D)`` every head's ``W_o[:, g] head_output(g)`` for this query (row ``head`` is ours).
        out_bias: ``(D,)`` or ``None``.
        output: ``(D,)`` ``contributions.sum(0) + out_bias``: the attention output for this query.
        module_weights: ``(Tk,)`` and module_output: ``(D,)``: the same two, as the module's forward returned them.
        shapes: step name -> shape of the whole call as recorded by :func:`attnlab.attention.trace.trace`.
    """

    head: int
    num_heads: int
    query_index: int
    batch_index: int
    is_self: bool
    scale: float
    mask_kinds: tuple[str, ...]
    x_query: torch.Tensor
    x_key: torch.Tensor
    x_value: torch.Tensor
    w_q: torch.Tensor
    b_q: torch.Tensor | None
    w_k: torch.Tensor
    b_k: torch.Tensor | None
    w_v: torch.Tensor
    b_v: torch.Tensor | None
    q_head: torch.Tensor
    k_head: torch.Tensor
    v_head: torch.Tensor
    q: torch.Tensor
    scores: torch.Tensor
    scaled_scores: torch.Tensor
    allowed: torch.Tensor
    masked_scores: torch.Tensor
    weights: torch.Tensor
    head_output: torch.Tensor
    w_o: torch.Tensor
    contributions: torch.Tensor
    out_bias: torch.Tensor | None
    output: torch.Tensor
    module_weights: torch.Tensor
    module_output: torch.Tensor
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def head_dim(self) -> int:
        return self.q.shape[0]

    @property
    def head_slice(self) -> slice:
        """This head's rows of ``W_q``/``W_k``/``W_v`` (and columns of ``W_o``)."""
        return slice(self.head * self.head_dim, (self.head + 1) * self.head_dim)

    @property
    def x(self) -> torch.Tensor:
        """``(D,)`` this query's input row."""
        return self.x_query[self.query_index]

    @property
    def contribution(self) -> torch.Tensor:
        """``(D,)`` this head's share of the output row."""
        return self.contributions[self.head]

    @property
    def max_abs_diff(self) -> float:
        """Largest difference between :attr:`output` and the module's own output row."""
        return float((self.output - self.module_output).abs().max())


@dataclass(frozen=True)
class AttentionSteps:
    """Every step of one attention call for one batch row: all heads and all queries at once.

    Attributes are those of :class:`HeadExplanation` with the head and query dims kept: ``q`` ``(H, Tq, Dh)``,
    ``k``/``v`` ``(H, Tk, Dh)``, ``scores``/``scaled_scores``/``allowed``/``masked_scores``/``weights``/
    ``module_weights`` ``(H, Tq, Tk)``, ``context`` ``(H, Tq, Dh)``, ``contributions`` ``(H, Tq, D)``,
    ``output``/``module_output`` ``(Tq, D)``; ``w_q``/``w_k``/``w_v`` are the whole ``(D, D|Dk|Dv)`` input
    projections (head ``h`` owns rows ``h*Dh:(h+1)*Dh``) and ``w_o`` the whole ``(D, D)`` output projection.
    """

    num_heads: int
    batch_index: int
    is_self: bool
    scale: float
    mask_kinds: tuple[str, ...]
    x_query: torch.Tensor
    x_key: torch.Tensor
    x_value: torch.Tensor
    w_q: torch.Tensor
    b_q: torch.Tensor | None
    w_k: torch.Tensor
    b_k: torch.Tensor | None
    w_v: torch.Tensor
    b_v: torch.Tensor | None
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scores: torch.Tensor
    scaled_scores: torch.Tensor
    allowed: torch.Tensor
    masked_scores: torch.Tensor
    weights: torch.Tensor
    context: torch.Tensor
    w_o: torch.Tensor
    contributions: torch.Tensor
    out_bias: torch.Tensor | None
    output: torch.Tensor
    module_weights: torch.Tensor
    module_output: torch.Tensor
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

    @property
    def num_queries(self) -> int:
        return self.q.shape[1]

    @property
    def num_keys(self) -> int:
        return self.k.shape[1]

    def explain(self, head: int = 0, query_index: int = 0) -> HeadExplanation:
        """One head and one query (negative indexes count from the end)."""
        h = _index("head", head, self.num_heads, "heads")
        i = _index("query", query_index, self.num_queries, "query positions")
        rows = slice(h * self.head_dim, (h + 1) * self.head_dim)

        def part(b: torch.Tensor | None) -> torch.Tensor | None:
            return None if b is None else b[rows]

        return HeadExplanation(
            head=h, num_heads=self.num_heads, query_index=i, batch_index=self.batch_index, is_self=self.is_self,
            scale=self.scale, mask_kinds=self.mask_kinds, x_query=self.x_query, x_key=self.x_key,
            x_value=self.x_value, w_q=self.w_q[rows], b_q=part(self.b_q), w_k=self.w_k[rows], b_k=part(self.b_k),
            w_v=self.w_v[rows], b_v=part(self.b_v), q_head=self.q[h], k_head=self.k[h], v_head=self.v[h],
            q=self.q[h, i], scores=self.scores[h, i], scaled_scores=self.scaled_scores[h, i],
            allowed=self.allowed[h, i], masked_scores=self.masked_scores[h, i], weights=self.weights[h, i],
            head_output=self.context[h, i], w_o=self.w_o[:, rows], contributions=self.contributions[:, i],
            out_bias=self.out_bias, output=self.output[i], module_weights=self.module_weights[h, i],
            module_output=self.module_output[i], shapes=self.shapes)

    def explain_all(self, head: int = 0) -> list[HeadExplanation]:
        """:meth:`explain` for every query position of ``head``."""
        return [self.explain(head, i) for i in range(self.num_queries)]


# ------------------------------------------------------------------------------------------------ compute

def explain_attention(mha: MultiHeadAttention | nn.MultiheadAttention, query: torch.Tensor,
                      key: torch.Tensor | None = None, value: torch.Tensor | None = None, *, batch_index: int = 0,
                      valid_lens: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                      is_causal: bool = False) -> AttentionSteps:
    """Every step of ``mha(query, key, value, ...)`` for batch row ``batch_index``, all heads and queries.

    Args:
        mha: attnlab's :class:`MultiHeadAttention` (packed or separate projections, with or without bias, any
            ``kdim``/``vdim``), or a ``torch.nn.MultiheadAttention`` (copied with
            :meth:`MultiHeadAttention.from_torch`; its ``batch_first`` decides the input layout). Dropout must be
            off (``mha.eval()``): with it the output is random and could not be reproduced step by step.
        query: ``(B, Tq, D)`` (``(Tq, B, D)`` for a torch module with ``batch_first=False``), or ``(Tq, D)``.
        key, value: likewise with ``Tk`` keys of ``kdim``/``vdim``; omitted for self-attention.
        batch_index: the batch row to explain.
        valid_lens, mask, is_causal: as for :meth:`MultiHeadAttention.forward` (``mask``: boolean, ``True`` =
            may attend; torch-style masks convert with :func:`attnlab.attention.masks.from_torch_masks`).

    Raises:
        ConfigError: ``batch_index`` out of range, dropout active, or inputs that are not 2- or 3-dim.
    """
    module, batch_first = _as_module(mha)
    if module.training and module.dropout > 0:
        raise ConfigError(f"the attention module is in training mode with dropout {module.dropout}; call .eval() "
                          f"on the model first, so its output can be reproduced step by step")
    is_self = key is None
    query = _batched("query", query, batch_first)
    key = None if key is None else _batched("key", key, batch_first)
    value = None if value is None else _batched("value", value, batch_first)
    b = _index("batch_index", batch_index, query.shape[0], "batch rows")

    with torch.no_grad():
        # 1. The module's own forward: its weights and output, and the shapes its tracer records.
        with trace() as t:
            module_output, module_weights = module(query, key, value, valid_lens=valid_lens, mask=mask,
                                                   is_causal=is_causal, need_weights=True)
        shapes: dict[str, tuple[int, ...]] = {}
        for step in t.steps:
            shapes.setdefault(step.name, step.shape)
        # 2. The inputs as the module sees them: one mask, and unused (padding) rows zeroed before projection.
        key = query if key is None else key
        value = key if value is None else value
        B, Tq, _ = query.shape
        H, Dh, Tk = module.num_heads, module.head_dim, key.shape[1]
        explicit = mask
        if mask is not None and mask.dim() == 3:
            check_mask(mask, (B, Tq, Tk))
            explicit = mask.unsqueeze(1)  # (B, 1, Tq, Tk)
        combined = build_mask((B, H, Tq, Tk), valid_lens=valid_lens, mask=explicit, is_causal=is_causal,
                              device=query.device)
        if valid_lens is not None or mask is not None:
            query, key, value = zero_unused_inputs(query, key, value, combined)
        allowed = (torch.ones(H, Tq, Tk, dtype=torch.bool, device=query.device) if combined is None
                   else combined.expand(B, H, Tq, Tk)[b])  # (H, Tq, Tk)
        xq, xk, xv = query[b], key[b], value[b]  # (Tq, D), (Tk, Dk), (Tk, Dv)
        # 3. Per-head projections: head h owns rows h*Dh:(h+1)*Dh of each projection.
        (w_q, b_q), (w_k, b_k), (w_v, b_v) = (module._weight(i) for i in range(3))
        q = _heads(xq, w_q, b_q, H)  # (H, Tq, Dh)
        k = _heads(xk, w_k, b_k, H)  # (H, Tk, Dh)
        v = _heads(xv, w_v, b_v, H)  # (H, Tk, Dh)
        # 4. Scores, scaling, mask, softmax; keys nobody may see are zeroed in V (0 * nan is nan).
        scale = 1.0 / math.sqrt(Dh)
        scores = q @ k.transpose(-2, -1)  # (H, Tq, Tk)
        scaled = scores * scale  # (H, Tq, Tk)
        weights = softmax_with_mask(scaled, allowed)  # (H, Tq, Tk)
        v_safe = v.masked_fill(~allowed.any(dim=1).unsqueeze(-1), 0.0)  # (H, Tk, Dh)
        context = weights @ v_safe  # (H, Tq, Dh)
        # 5. Output projection, one head's columns at a time, then the sum over heads and the bias.
        w_o, out_bias = module.out_proj.weight, module.out_proj.bias  # (D, D), (D,)
        w_o_heads = w_o.view(module.d_model, H, Dh).permute(1, 0, 2)  # (H, D, Dh)
        contributions = context @ w_o_heads.transpose(-2, -1)  # (H, Tq, D)
        output = contributions.sum(dim=0) + (0.0 if out_bias is None else out_bias)  # (Tq, D)

    steps = AttentionSteps(
        num_heads=H, batch_index=b, is_self=is_self, scale=scale,
        mask_kinds=_mask_kinds(valid_lens, mask, is_causal), x_query=_cpu(xq), x_key=_cpu(xk), x_value=_cpu(xv),
        w_q=_cpu(w_q), b_q=_cpu(b_q), w_k=_cpu(w_k), b_k=_cpu(b_k), w_v=_cpu(w_v), b_v=_cpu(b_v), q=_cpu(q),
        k=_cpu(k), v=_cpu(v), scores=_cpu(scores), scaled_scores=_cpu(scaled), allowed=_cpu(allowed),
        masked_scores=_cpu(fill_masked(scaled, allowed)), weights=_cpu(weights), context=_cpu(context),
        w_o=_cpu(w_o), contributions=_cpu(contributions), out_bias=_cpu(out_bias), output=_cpu(output),
        module_weights=_cpu(module_weights[b]), module_output=_cpu(module_output[b]), shapes=shapes)
    _check_shapes(steps, B)
    return steps


def explain_head(mha: MultiHeadAttention | nn.MultiheadAttention, query: torch.Tensor,
                 key: torch.Tensor | None = None, value: torch.Tensor | None = None, *, head: int = 0,
                 query_index: int = 0, batch_index: int = 0, valid_lens: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, is_causal: bool = False) -> HeadExplanation:
    """Every step of head ``head`` for query ``query_index``; arguments as for :func:`explain_attention`.

    Raises:
        ConfigError: ``head``, ``query_index`` or ``batch_index`` out of range (negative ones count from the end).
    """
    steps = explain_attention(mha, query, key, value, batch_index=batch_index, valid_lens=valid_lens, mask=mask,
                              is_causal=is_causal)
    return steps.explain(head, query_index)


def _as_module(mha: Any) -> tuple[MultiHeadAttention, bool]:
    if isinstance(mha, MultiHeadAttention):
        return mha, True
    if isinstance(mha, nn.MultiheadAttention):
        return MultiHeadAttention.from_torch(mha).train(mha.training), mha.batch_first
    raise TypeError(f"expected attnlab's MultiHeadAttention or torch.nn.MultiheadAttention, got {type(mha).__name__}")


def _batched(name: str, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """``(B, T, E)`` from ``(B, T, E)``, ``(T, B, E)`` (not batch-first) or an unbatched ``(T, E)``."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{name}: expected a (B, T, E) or (T, E) tensor, got {got}")
    if x.dim() == 2:
        return x.unsqueeze(0)  # (1, T, E)
    return x if batch_first else x.transpose(0, 1)  # (B, T, E)


def _index(name: str, value: int, size: int, what: str) -> int:
    if not -size <= value < size:
        raise ConfigError(f"{name} {value} is out of range: there are {size} {what} (0..{size - 1})")
    return value % size


def _heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """``x`` ``(T, E)`` projected by each head's rows of ``weight`` ``(D, E)``: ``(H, T, Dh)``."""
    w = weight.view(num_heads, -1, weight.shape[-1])  # (H, Dh, E)
    out = x @ w.transpose(-2, -1)  # (H, T, Dh)
    return out if bias is None else out + bias.view(num_heads, 1, -1)


def _cpu(t: torch.Tensor | None) -> Any:
    return None if t is None else t.detach().cpu()


def _mask_kinds(valid_lens: torch.Tensor | None, mask: torch.Tensor | None, is_causal: bool) -> tuple[str, ...]:
    kinds = [("key padding (valid_lens)", valid_lens is not None), ("explicit mask", mask is not None),
             ("causal", is_causal)]
    return tuple(name for name, on in kinds if on)


def _check_shapes(steps: AttentionSteps, batch: int) -> None:
    """Our per-row tensors must be slices of the tensors the module's tracer recorded."""
    ours = {"q_heads": steps.q, "k_heads": steps.k, "v_heads": steps.v, "scores": steps.scores,
            "weights": steps.weights, "context": steps.context, "output": steps.output}
    for name, tensor in ours.items():
        traced = steps.shapes.get(name)
        expected = (batch, *tensor.shape)
        if traced is not None and tuple(traced) != expected:
            raise RuntimeError(f"explain_attention: step {name} has shape {expected} here but {tuple(traced)} in "
                               f"the module's trace")


# ------------------------------------------------------------------------------------------------ text

def _vec(t: torch.Tensor | None, decimals: int, limit: int) -> str:
    """``[ 0.123 -0.456 … 0.789]``: a 1-D tensor with at most ``limit`` numbers shown."""
    if t is None:
        return "(none)"
    cells = [f"{v:.{decimals}f}" for v in t.tolist()]
    width = max(map(len, cells), default=0)
    cells = [c.rjust(width) for c in cells]
    if len(cells) > limit:
        cells = [*cells[:(limit + 1) // 2], _ELLIPSIS, *cells[len(cells) - limit // 2:]]
    return "[" + " ".join(cells) + "]"


def _shape(symbols: str, t: torch.Tensor | tuple[int, ...]) -> str:
    dims = tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)
    return f"{symbols} = ({', '.join(map(str, dims))}{',' if len(dims) == 1 else ''})"


def _label(tokens: Sequence[str] | None, index: int, limit: int = 14) -> str:
    if tokens is None or index >= len(tokens):
        return ""
    text = repr(str(tokens[index]))
    return text if len(text) <= limit else text[:limit - 1] + _ELLIPSIS


def _rows(count: int, limit: int) -> list[int | None]:
    """Row indexes to show; ``None`` stands for the elided middle."""
    if count <= limit:
        return list(range(count))
    return [*range((limit + 1) // 2), None, *range(count - limit // 2, count)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Fixed-width columns, indented; columns in ``right`` (numbers) are right-aligned."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                         for c, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
    return ["    " + text for text in lines]


def format_table(expl: HeadExplanation, *, query_tokens: Sequence[str] | None = None,
                 key_tokens: Sequence[str] | None = None, decimals: int = 3, max_items: int = 8) -> str:
    """The explanation as fixed-width text: each step with its shape and numbers (``decimals`` places).

    Vectors longer than ``max_items`` numbers and tables of more than ``max_items`` keys are elided in the middle
    (``…``). ``key_tokens`` defaults to ``query_tokens`` for self-attention.
    """
    if max_items < 2:
        raise ConfigError(f"max_items must be at least 2, got {max_items}")
    e, d, n = expl, decimals, max_items
    if key_tokens is None and e.is_self:
        key_tokens = query_tokens
    D, H, Dh = e.x_query.shape[1], e.num_heads, e.head_dim
    Tq, Tk = e.x_query.shape[0], e.x_key.shape[0]
    h0, h1 = e.head_slice.start, e.head_slice.stop
    sh = e.shapes
    kind = "self-attention" if e.is_self else "cross-attention"
    who = f"query {e.query_index} {_label(query_tokens, e.query_index, 40)}".rstrip()
    out = [f"head {e.head} of {H}, {who}, batch row {e.batch_index}: {kind}, D={D}, H={H}, Dh={Dh}, Tq={Tq}, "
           f"Tk={Tk}", ""]

    out.append(f"1. input row x_{e.query_index}, row {e.query_index} of the queries "
               f"{_shape('(B, Tq, D)', sh.get('query_input', (1, Tq, D)))}")
    out.append(f"    x_{e.query_index} {_shape('(D,)', e.x)}  {_vec(e.x, d, n)}")
    if not e.is_self:
        out.append(f"    keys {_shape('(Tk, Dk)', e.x_key)}, values {_shape('(Tk, Dv)', e.x_value)} "
                   "(another sequence: cross-attention)")

    out += ["", f"2. project, head {e.head}'s slice: rows {h0}:{h1} of W_q, W_k, W_v "
                f"(all heads: Q {_shape('(B, Tq, D)', sh.get('q_proj', ()))} -> "
                f"{_shape('(B, H, Tq, Dh)', sh.get('q_heads', ()))})"]
    bias = "" if e.b_q is None else " + b_q"
    out.append(f"    W_q[{h0}:{h1}] {_shape('(Dh, D)', e.w_q)}, b_q {_vec(e.b_q, d, n)}")
    out.append(f"    q = x W_q[{h0}:{h1}]ᵀ{bias}  {_shape('(Dh,)', e.q)}  {_vec(e.q, d, n)}")
    out.append(f"    K = X_k W_k[{h0}:{h1}]ᵀ{'' if e.b_k is None else ' + b_k'}  {_shape('(Tk, Dh)', e.k_head)};  "
               f"V = X_v W_v[{h0}:{h1}]ᵀ{'' if e.b_v is None else ' + b_v'}  {_shape('(Tk, Dh)', e.v_head)}")
    out += _table(["j", "key", "k_j", "v_j"],
                  [[_ELLIPSIS, "", "", ""] if j is None else
                   [str(j), _label(key_tokens, j), _vec(e.k_head[j], d, n), _vec(e.v_head[j], d, n)]
                   for j in _rows(Tk, n)], right=(0,))

    masks = ", ".join(e.mask_kinds) or "none"
    out += ["", f"3. scores q·k_j, 4. scale by 1/sqrt(Dh) = {e.scale:.{max(d, 4)}f}, 5. mask ({masks}), "
                f"6. softmax over keys  (row [{e.batch_index}, {e.head}, {e.query_index}] of "
                f"{_shape('(B, H, Tq, Tk)', sh.get('scores', ()))})"]
    rows = []
    for j in _rows(Tk, n):
        if j is None:
            rows.append([_ELLIPSIS] + [""] * 6)
            continue
        ok = bool(e.allowed[j])
        rows.append([str(j), _label(key_tokens, j), f"{float(e.scores[j]):.{d}f}",
                     f"{float(e.scaled_scores[j]):.{d}f}", "yes" if ok else "no",
                     f"{float(e.masked_scores[j]):.{d}f}" if ok else "-inf (min)", f"{float(e.weights[j]):.{d}f}"])
    out += _table(["j", "key", "q·k_j", "scaled", "allowed", "masked", "weight"], rows, right=(0, 2, 3, 5, 6))
    out.append(f"    weights sum to {float(e.weights.sum()):.{d}f}; the module's own weights differ by at most "
               f"{float((e.weights - e.module_weights).abs().max()):.1e}")

    out += ["", f"7. head output = sum_j weight_j v_j  {_shape('(Dh,)', e.head_output)}  {_vec(e.head_output, d, n)}"
                f"  (all: context {_shape('(B, H, Tq, Dh)', sh.get('context', ()))})"]

    out += ["", f"8. output projection: columns {h0}:{h1} of W_o {_shape('(D, Dh)', e.w_o)}; "
                f"output row {_shape('(D,)', e.output)} (all: {_shape('(B, Tq, D)', sh.get('output', ()))})"]
    parts = [[f"head {g}" + (" (this one)" if g == e.head else ""), f"W_o[:, {g * Dh}:{(g + 1) * Dh}] head_{g}",
              _vec(e.contributions[g], d, n)] for g in range(H)]
    if e.out_bias is not None:
        parts.append(["bias", "b_o", _vec(e.out_bias, d, n)])
    parts.append(["output", "sum of the rows above", _vec(e.output, d, n)])
    parts.append(["module", f"mha(...)[{e.batch_index}, {e.query_index}]", _vec(e.module_output, d, n)])
    out += _table(["part", "what", "(D,) row"], parts)
    out.append(f"    largest difference from the module's forward: {e.max_abs_diff:.1e}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ page

_PAGE = PAGE_HEAD + """<header>
  <h1 id="title"></h1>
  <p class="help">Click a token to explain its query; choose a head. Numbers are rounded for display
    (the page's data keeps float32 precision).</p>
  <div class="controls">
    <label>head <select id="head"></select></label>
    <label>decimals <select id="decimals"></select></label>
  </div>
  <div id="queries" class="tokrow" aria-label="query tokens"></div>
  <div id="keys-wrap"><span class="rowlabel">keys</span><div id="keys" class="tokrow"></div></div>
  <p id="summary" class="summary"></p>
</header>
<main id="steps"></main>
<script type="application/json" id="attnlab-explain-data">{{DATA}}</script>
<script>{{JS}}</script>
</body>
</html>
"""


def _numbers(t: torch.Tensor | None) -> Any:
    """Nested lists of floats with 9 significant digits (enough to round-trip float32); non-finite -> null."""
    if t is None:
        return None

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(y) for y in x]
        if isinstance(x, bool):
            return x
        return float(f"{x:.9g}") if math.isfinite(x) else None

    return fix(t.to(torch.float64).tolist() if t.dtype != torch.bool else t.tolist())


def _page_data(steps: AttentionSteps, query_tokens: Sequence[str] | None, key_tokens: Sequence[str] | None,
               title: str, head: int, query_index: int, decimals: int) -> dict[str, Any]:
    Tq, Tk = steps.num_queries, steps.num_keys
    q_tokens = _tokens("query_tokens", query_tokens, Tq)
    k_tokens = q_tokens if key_tokens is None and steps.is_self else _tokens("key_tokens", key_tokens, Tk)
    H, Dh = steps.num_heads, steps.head_dim

    def rows(t: torch.Tensor | None, h: int) -> Any:
        return None if t is None else _numbers(t[h * Dh:(h + 1) * Dh])

    heads = [{"q": _numbers(steps.q[h]), "k": _numbers(steps.k[h]), "v": _numbers(steps.v[h]),
              "bq": rows(steps.b_q, h), "bk": rows(steps.b_k, h), "bv": rows(steps.b_v, h),
              "scores": _numbers(steps.scores[h]), "scaled": _numbers(steps.scaled_scores[h]),
              "allowed": steps.allowed[h].tolist(), "weights": _numbers(steps.weights[h]),
              "moduleWeights": _numbers(steps.module_weights[h]), "context": _numbers(steps.context[h]),
              "contribution": _numbers(steps.contributions[h])} for h in range(H)]
    return {
        "title": str(title), "queryTokens": q_tokens, "keyTokens": k_tokens, "isSelf": steps.is_self,
        "dModel": steps.x_query.shape[1], "kdim": steps.x_key.shape[1], "vdim": steps.x_value.shape[1],
        "numHeads": H, "headDim": Dh, "scale": steps.scale, "maskKinds": list(steps.mask_kinds),
        "batchIndex": steps.batch_index, "head": head, "query": query_index, "decimals": decimals,
        "shapes": {name: list(shape) for name, shape in steps.shapes.items()},
        "symbols": {name: STEPS[name][0] for name in steps.shapes},
        "xQuery": _numbers(steps.x_query), "xKey": None if steps.is_self else _numbers(steps.x_key),
        "xValue": None if steps.is_self else _numbers(steps.x_value), "outBias": _numbers(steps.out_bias),
        "output": _numbers(steps.output), "moduleOutput": _numbers(steps.module_output), "heads": heads,
    }


def _tokens(name: str, tokens: Sequence[str] | None, count: int) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(count)]
    if isinstance(tokens, str) or len(tokens) != count:
        got = "one string" if isinstance(tokens, str) else f"{len(tokens)} tokens"
        raise ConfigError(f"{name}: expected a list of {count} tokens (one per position), got {got}")
    return [str(t) for t in tokens]


def explain_head_html(steps: AttentionSteps, *, query_tokens: Sequence[str] | None = None,
                      key_tokens: Sequence[str] | None = None, title: str = "one attention head, step by step",
                      head: int = 0, query_index: int = 0, decimals: int = 3) -> str:
    """The page as a string; arguments as for :func:`write_explain_head_html`."""
    from attnlab import __version__

    h = _index("head", head, steps.num_heads, "heads")
    i = _index("query", query_index, steps.num_queries, "query positions")
    if not 0 <= decimals <= 8:
        raise ConfigError(f"decimals must be in 0..8, got {decimals}")
    payload = _page_data(steps, query_tokens, key_tokens, title, h, i, decimals)
    size = steps.num_heads * steps.num_queries * (3 * steps.num_keys + steps.x_query.shape[1])
    if size > _LARGE:
        log.warning("the page holds about %d numbers; it may load slowly (explain a shorter text)", size)
    css, js = _asset("explain_head.css"), _asset("explain_head.js")
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; base-uri 'none'; "
           "form-action 'none'")
    fields = {"LANG": "en", "CSP": csp, "VERSION": html.escape(__version__), "TITLE": html.escape(str(title)),
              "CSS": css, "JS": js, "DATA": json_for_script(payload)}
    # One pass over the template (an English page): inserted text is never scanned for placeholders again.
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: fields[m.group(1)], _PAGE)


def write_explain_head_html(steps: AttentionSteps, path: str | Path, *, query_tokens: Sequence[str] | None = None,
                            key_tokens: Sequence[str] | None = None, title: str = "one attention head, step by step",
                            head: int = 0, query_index: int = 0, decimals: int = 3) -> Path:
    """Write a self-contained page that explains every head and query of ``steps`` (UTF-8, no network access).

    The tokens stand in a row: clicking one makes it the query, and every step (input row, the head's q, K and V,
    scores, scaling, mask, softmax weights, weighted sum of values, each head's share of the output projection and
    the output row next to the module's own) is shown again for it; a selector switches the head.

    Args:
        steps: from :func:`explain_attention`.
        path: the ``.html`` file to write (parent folders are created).
        query_tokens: one label per query position (default: the positions' numbers).
        key_tokens: one per key; defaults to ``query_tokens`` for self-attention.
        title: shown at the top of the page and in the browser tab.
        head, query_index: what the page shows first.
        decimals: places shown at first (the reader can change it; the data keeps 9 significant digits).

    Returns:
        the path written.
    """
    page = explain_head_html(steps, query_tokens=query_tokens, key_tokens=key_tokens, title=title, head=head,
                             query_index=query_index, decimals=decimals)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(page, encoding="utf-8")
    return p
