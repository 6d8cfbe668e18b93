"""Turn whatever holds attention weights into labelled ``(L, H, Tq, Tk)`` views for plotting and the viewer.

Accepted inputs: a tensor or array ``(Tq, Tk)``, ``(H, Tq, Tk)``, ``(L, H, Tq, Tk)`` or ``(L, B, H, Tq, Tk)``;
an :class:`~attnlab.viz.capture.AttentionRecord`; a :class:`~attnlab.viz.capture.CaptureResult`; an
:class:`attnlab.models.base.AttentionMaps`; or :class:`AttentionView` itself (one, or a list of them).

A page may hold several inputs (sentences) at once: each is an :class:`Example`, its attention (any of the inputs
above) with its tokens, a name and what the model predicted.

Token convention for inputs with several kinds of attention: ``key_tokens`` are the source tokens (encoder
self-attention, cross-attention keys), ``query_tokens`` the target tokens (decoder self-attention,
cross-attention queries). With self-attention only, either one labels both axes.

Dimension legend: ``L`` layers, ``B`` batch, ``H`` heads, ``Tq``/``Tk`` query/key length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnlab.core.errors import ConfigError, DataError
from attnlab.viz.i18n import KIND_TITLES

TITLES = KIND_TITLES["en"]


@dataclass(frozen=True)
class AttentionView:
    """One kind of attention of one batch row, ready to draw.

    Attributes:
        kind: ``"encoder"``, ``"decoder"``, ``"cross"``, ``"self"`` or ``"attention"`` (a plain tensor).
        weights: ``(L, H, Tq, Tk)`` float32 on CPU, cropped to the given tokens.
        query_tokens: ``Tq`` labels of the rows.
        key_tokens: ``Tk`` labels of the columns.
        layer_names: ``L`` names (module names for captures, ``"layer i"`` otherwise).
        head_names: ``H`` names (``"head j"`` unless heads were selected or averaged).
    """

    kind: str
    weights: torch.Tensor
    query_tokens: list[str]
    key_tokens: list[str]
    layer_names: list[str]
    head_names: list[str] | None = None

    @property
    def heads(self) -> list[str]:
        return self.head_names or [f"head {j}" for j in range(self.num_heads)]

    @property
    def title(self) -> str:
        return TITLES.get(self.kind, self.kind)

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Shown in Jupyter as the interactive viewer (see :mod:`attnlab.viz.notebook`)."""
        from attnlab.viz.notebook import inline

        return inline(self)._repr_mimebundle_(include, exclude)


@dataclass(frozen=True)
class Example:
    """One input of a page that holds several: its attention, its tokens and what the model made of it.

    Attributes:
        weights: anything :func:`as_views` accepts (a tensor, a capture result, an ``AttentionMaps``, views).
        query_tokens: row labels, as for :func:`as_views` (for captures and ``AttentionMaps``: the target tokens).
        key_tokens: column labels, as for :func:`as_views` (for captures and ``AttentionMaps``: the source tokens).
        name: how the example is listed, e.g. the source sentence (default: "example N").
        prediction: what the model predicted for it, e.g. the translation or the label; ``None`` for none.
        batch: the batch row of batched ``weights``.
    """

    weights: Any
    query_tokens: Sequence[str] | None = None
    key_tokens: Sequence[str] | None = None
    name: str | None = None
    prediction: str | None = None
    batch: int = 0

    def __post_init__(self) -> None:
        for field in ("name", "prediction"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"Example.{field} must be a string or None, got {type(value).__name__}")

    def views(self) -> list[AttentionView]:
        """The labelled views of this example (see :func:`as_views`)."""
        return as_views(self.weights, query_tokens=self.query_tokens, key_tokens=self.key_tokens, batch=self.batch)


def as_examples(weights: Any, *, query_tokens: Sequence[str] | None = None,
                key_tokens: Sequence[str] | None = None, batch: int = 0) -> list[Example]:
    """``weights`` as a list of examples: an :class:`Example` or a list of them as given, anything else as one."""
    if isinstance(weights, Example):
        weights = [weights]
    items = list(weights) if isinstance(weights, list | tuple) else []
    if items and any(isinstance(e, Example) for e in items):
        if not all(isinstance(e, Example) for e in items):
            raise ConfigError("a list of examples must hold only Example objects; wrap each input in Example(...)")
        if query_tokens is not None or key_tokens is not None or batch != 0:
            raise ConfigError("query_tokens, key_tokens and batch belong to each Example, not to the page")
        return items
    return [Example(weights, query_tokens, key_tokens, batch=batch)]


def _tensor(x: Any) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise DataError(f"attention weights must be numbers, got dtype {t.dtype}")
    return t.detach().to("cpu", torch.float32)


def _fit(weights: torch.Tensor, query_tokens: Sequence[str] | None, key_tokens: Sequence[str] | None,
         what: str) -> tuple[torch.Tensor, list[str], list[str]]:
    """Check tokens against ``(L, H, Tq, Tk)`` and crop padded positions beyond the tokens."""
    Tq, Tk = weights.shape[-2:]
    if query_tokens is None and key_tokens is not None and Tq == Tk:
        query_tokens = key_tokens
    if key_tokens is None and query_tokens is not None and Tq == Tk:
        key_tokens = query_tokens
    q = [str(i) for i in range(Tq)] if query_tokens is None else [str(t) for t in query_tokens]
    k = [str(i) for i in range(Tk)] if key_tokens is None else [str(t) for t in key_tokens]
    if len(q) > Tq or len(k) > Tk:
        raise DataError(f"{what}: got {len(q)} query and {len(k)} key tokens for attention of {Tq} queries "
                        f"x {Tk} keys; pass at most one token per position")
    if not q or not k:
        raise DataError(f"{what}: no tokens to show (empty sequence)")
    return weights[..., :len(q), :len(k)], q, k


def _batch_row(w: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """``(L, B, H, Tq, Tk)`` -> ``(L, H, Tq, Tk)``."""
    if not -w.shape[1] <= batch < w.shape[1]:
        raise ConfigError(f"{what}: batch row {batch} is out of range, the batch has {w.shape[1]} rows")
    return w[:, batch]


def as_views(weights: Any, *, query_tokens: Sequence[str] | None = None, key_tokens: Sequence[str] | None = None,
             batch: int = 0) -> list[AttentionView]:
    """Labelled views of ``weights`` (see the module docstring for inputs and the token convention)."""
    from attnlab.viz.capture import AttentionRecord, CaptureResult

    if isinstance(weights, CaptureResult):
        return _capture_views(weights, query_tokens, key_tokens, batch)
    if isinstance(weights, AttentionView) or (isinstance(weights, list | tuple) and weights
                                              and all(isinstance(v, AttentionView) for v in weights)):
        views = [weights] if isinstance(weights, AttentionView) else list(weights)
        if query_tokens is None and key_tokens is None:
            return views
        relabelled = []
        for v in views:  # given tokens replace the labels of their axis, checked and cropped as for any input
            q = v.query_tokens if query_tokens is None else query_tokens
            w, q, k = _fit(v.weights, q, v.key_tokens if key_tokens is None else key_tokens, v.title)
            relabelled.append(AttentionView(v.kind, w, q, k, v.layer_names, v.head_names))
        return relabelled
    if isinstance(weights, AttentionRecord):
        w = _batch_row(weights.weights.unsqueeze(0), batch, weights.name)
        q = query_tokens if query_tokens is not None else weights.query_tokens
        k = key_tokens if key_tokens is not None else weights.key_tokens
        w, q, k = _fit(w, q, k, weights.name)
        return [AttentionView(weights.kind, w, q, k, [weights.name])]
    if all(hasattr(weights, a) for a in ("encoder_self", "decoder_self", "cross")):  # AttentionMaps
        src = key_tokens if key_tokens is not None else query_tokens
        tgt = query_tokens if query_tokens is not None else key_tokens
        views = []
        for kind, field, q, k in (("encoder", "encoder_self", src, src), ("decoder", "decoder_self", tgt, tgt),
                                  ("cross", "cross", query_tokens, key_tokens)):
            t = getattr(weights, field)
            if t is None:
                continue
            w = _tensor(t)
            if w.dim() != 5:
                raise DataError(f"AttentionMaps.{field} must be (L, B, H, Tq, Tk), got shape {tuple(w.shape)}")
            w, q2, k2 = _fit(_batch_row(w, batch, field), q, k, TITLES[kind])
            views.append(AttentionView(kind, w, q2, k2, [f"layer {i}" for i in range(w.shape[0])]))
        if not views:
            raise DataError("AttentionMaps holds no attention (every field is None)")
        return views
    try:
        w = _tensor(weights)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read attention weights from {type(weights).__name__}: {exc}") from None
    if w.dim() == 5:
        w = _batch_row(w, batch, "attention")
    elif 2 <= w.dim() <= 4:
        w = w.reshape((1,) * (4 - w.dim()) + tuple(w.shape))  # (L, H, Tq, Tk)
    else:
        raise DataError(f"attention weights must be (Tq, Tk), (H, Tq, Tk), (L, H, Tq, Tk) or (L, B, H, Tq, Tk), "
                        f"got shape {tuple(w.shape)}")
    w, q, k = _fit(w, query_tokens, key_tokens, "attention")
    return [AttentionView("attention", w, q, k, [f"layer {i}" for i in range(w.shape[0])])]


def _capture_views(result: Any, query_tokens: Sequence[str] | None, key_tokens: Sequence[str] | None,
                   batch: int) -> list[AttentionView]:
    kinds = result.kinds()
    if not kinds:
        raise DataError("the capture recorded nothing: run the model inside the `with capture(model)` block")
    two_stacks = "decoder" in kinds or "cross" in kinds
    src = key_tokens if key_tokens is not None or two_stacks else query_tokens
    views = []
    for kind in kinds:
        recs = result.layers(kind)
        q, k = result.tokens_for(kind)
        if kind == "cross":
            q, k = query_tokens or q, key_tokens or k
        elif kind == "decoder":
            q = k = query_tokens or q
        else:
            q = k = src or q
        w, q, k = _fit(_batch_row(result.stack(kind), batch, kind), q, k, TITLES[kind])
        views.append(AttentionView(kind, w, q, k, [r.name for r in recs]))
    return views


def pick_view(views: list[AttentionView], kind: str | None) -> AttentionView:
    """The view of ``kind``; by default cross-attention if present, else the first."""
    if kind is None:
        return next((v for v in views if v.kind == "cross"), views[0])
    for v in views:
        if v.kind == kind or (kind == "encoder" and v.kind == "self"):
            return v
    raise ConfigError(f"no {kind} attention here; available: {', '.join(v.kind for v in views)}")


def check_index(value: int, size: int, what: str, owner: str) -> int:
    """A non-negative index into ``size`` items, or a one-line :class:`ConfigError` naming the valid range."""
    if not -size <= value < size:
        raise ConfigError(f"{what} {value} is out of range: the {owner} has {size} {what}s (0-{size - 1})")
    return value % size


def select(view: AttentionView, layer: int | None = None, head: int | str | None = None) -> AttentionView:
    """Keep one layer (``None`` = all) and one head (``None`` = all, ``"mean"`` = average over heads)."""
    w, names, heads = view.weights, view.layer_names, view.heads
    if layer is not None:
        i = check_index(layer, view.num_layers, "layer", view.title)
        w, names = w[i:i + 1], [names[i]]
    if head == "mean":
        w, heads = w.mean(dim=1, keepdim=True), ["mean of heads"]  # (L, 1, Tq, Tk)
    elif head is not None:
        if not isinstance(head, int):
            raise ConfigError(f"head must be an integer or 'mean', got {head!r}")
        j = check_index(head, view.num_heads, "head", view.title)
        w, heads = w[:, j:j + 1], [heads[j]]
    return AttentionView(view.kind, w, view.query_tokens, view.key_tokens, names, heads)
