"""Numbers about attention: entropy per head, rollout, alignments with their error rate, head importance.

Dimension legend: ``L`` layers, ``B`` batch, ``H`` heads, ``Tq``/``Tk`` query/key length, ``Tt``/``Ts``
target/source length, ``T`` sequence length of self-attention.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from attnlab.core.errors import ConfigError, DataError

Pair = tuple[int, int]  # (source index i, target index j), as in Pharaoh "i-j"


def _is_maps(obj: Any) -> bool:
    """An ``attnlab.models.base.AttentionMaps`` (or anything shaped like one)."""
    return all(hasattr(obj, a) for a in ("encoder_self", "decoder_self", "cross"))


def _tensor(weights: Any, kind: str | None) -> torch.Tensor:
    """A plain tensor from a tensor, a capture result (``(L, B, H, Tq, Tk)``) or an ``AttentionMaps``."""
    from attnlab.viz.capture import CaptureResult

    if isinstance(weights, CaptureResult):
        kinds = weights.kinds()
        return weights.stack(kind or (kinds[0] if kinds else "self"))
    if _is_maps(weights):
        field = {"encoder": "encoder_self", "self": "encoder_self", "decoder": "decoder_self", "cross": "cross",
                 None: "encoder_self"}.get(kind, kind)
        t = getattr(weights, str(field), None)
        if t is None:
            raise DataError(f"AttentionMaps has no {field} attention")
        return t.detach().float().cpu()
    if not isinstance(weights, torch.Tensor):
        weights = torch.as_tensor(weights)
    return weights.detach().float().cpu()


# --------------------------------------------------------------------------------------------- entropy
def attention_entropy(weights: Any, *, kind: str | None = None) -> torch.Tensor:
    """Mean entropy ``-sum_k p_k log p_k`` (nats) of each head's attention distributions.

    A head that spreads its attention over ``n`` keys evenly scores ``log n``; a head that always looks at one
    key scores 0. Queries whose weights are all zero (fully masked rows) are left out of the mean.

    Args:
        weights: ``(Tq, Tk)``, ``(H, Tq, Tk)``, ``(L, H, Tq, Tk)`` or ``(L, B, H, Tq, Tk)``, or a capture result /
            ``AttentionMaps`` (pick the attention with ``kind``).

    Returns:
        a scalar, ``(H,)`` or ``(L, H)`` (the batch is averaged over).
    """
    w = _tensor(weights, kind).clamp_min(0)
    if not 2 <= w.dim() <= 5:
        raise DataError(f"attention_entropy: expected 2 to 5 dimensions, got shape {tuple(w.shape)}")
    rows = -torch.special.xlogy(w, w).sum(-1)  # (..., Tq); 0 log 0 = 0
    valid = (w.sum(-1) > 0).float()  # (..., Tq)
    if w.dim() == 5:  # (L, B, H, Tq) -> (L, H, B * Tq): average over the batch too
        rows, valid = (t.transpose(1, 2).flatten(2) for t in (rows, valid))
    return (rows * valid).sum(-1) / valid.sum(-1).clamp_min(1)


# --------------------------------------------------------------------------------------------- rollout
def attention_rollout(weights: Any, *, residual: float = 0.5, head_fusion: Literal["mean", "max", "min"] = "mean",
                      kind: str | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers", eq. 1).

    Each layer's heads are fused (``mean`` by default), the residual connection is modelled as
    ``A' = residual * I + (1 - residual) * A`` with rows renormalized to sum to 1, and the layers are chained:
    ``R = A'_L @ ... @ A'_1``. ``R[i, j]`` estimates how much of position ``i``'s representation after the last
    layer comes from input token ``j``.

    Args:
        weights: self-attention ``(L, H, T, T)`` or ``(L, B, H, T, T)``, first layer first, or a capture result /
            ``AttentionMaps`` (``kind`` defaults to the encoder).

    Returns:
        ``(T, T)``, or ``(B, T, T)`` for batched input.
    """
    if not 0.0 <= residual <= 1.0:
        raise ConfigError(f"attention_rollout: residual must be in [0, 1], got {residual}")
    w = _tensor(weights, kind)
    if w.dim() not in (4, 5) or w.shape[-1] != w.shape[-2]:
        raise DataError(f"attention_rollout: expected self-attention (L, H, T, T) or (L, B, H, T, T), "
                        f"got shape {tuple(w.shape)}")
    fuse = {"mean": lambda x: x.mean(-3), "max": lambda x: x.amax(-3), "min": lambda x: x.amin(-3)}
    if head_fusion not in fuse:
        raise ConfigError(f"attention_rollout: head_fusion must be mean, max or min, got {head_fusion!r}")
    layers = fuse[head_fusion](w)  # (L, T, T) or (L, B, T, T)
    eye = torch.eye(w.shape[-1])
    result = None
    for a in layers:
        a = residual * eye + (1.0 - residual) * a
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)  # rows sum to 1 again
        result = a if result is None else a @ result
    return result


# ---------------------------------------------------------------------------------------- alignments
def argmax_alignment(weights: Any, *, batch: int = 0) -> set[Pair]:
    """Hard alignment from cross-attention: each target position ``j`` links to its most attended source ``i``.

    Args:
        weights: ``(Tt, Ts)``; ``(H, Tt, Ts)`` or ``(L, H, Tt, Ts)`` are averaged over heads (and layers);
            a capture result or ``AttentionMaps`` uses its cross-attention (row ``batch``, all layers and heads).

    Returns:
        the links as ``(i, j)`` pairs (source index, target index), the Pharaoh ``i-j`` convention.
    """
    from attnlab.viz.capture import CaptureResult

    if isinstance(weights, CaptureResult) or _is_maps(weights):
        w = _tensor(weights, "cross")[:, batch]  # (L, H, Tt, Ts)
    else:
        w = _tensor(weights, None)
    if not 2 <= w.dim() <= 4:
        raise DataError(f"argmax_alignment: expected (Tt, Ts), (H, Tt, Ts) or (L, H, Tt, Ts), got {tuple(w.shape)}")
    w = w.reshape(-1, *w.shape[-2:]).mean(0)  # (Tt, Ts)
    return {(int(i), j) for j, i in enumerate(w.argmax(-1).tolist())}


_LINK = re.compile(r"^(\d+)([-?p])(\d+)$")


def parse_alignment(text: str) -> tuple[set[Pair], set[Pair]]:
    """Parse gold links ``"0-0 1-2 2?1"``: ``i-j`` is a sure link, ``i?j`` or ``ipj`` a possible one.

    Returns:
        ``(sure, possible)`` with ``possible`` containing the sure links too (``S ⊆ P``).
    """
    sure, possible = set(), set()
    for item in text.split():
        m = _LINK.match(item)
        if m is None:
            raise DataError(f"bad alignment link {item!r}: expected i-j (sure) or i?j (possible), e.g. 3-4")
        pair = (int(m.group(1)), int(m.group(3)))
        (sure if m.group(2) == "-" else possible).add(pair)
    return sure, possible | sure


def alignment_error_rate(predicted: Iterable[Pair] | str, sure: Iterable[Pair] | str,
                         possible: Iterable[Pair] | None = None) -> float:
    """Alignment error rate (Och & Ney, 2003): ``AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)``.

    Args:
        predicted: the links ``A`` as ``(i, j)`` pairs or an ``"i-j ..."`` string.
        sure: the gold sure links ``S``, as pairs or a string (which may also hold ``i?j`` possible links).
        possible: the gold possible links ``P``; sure links always count as possible. Default: only ``S``.

    Returns:
        0.0 for a perfect alignment, up to 1.0.
    """
    a = parse_alignment(predicted)[1] if isinstance(predicted, str) else {tuple(p) for p in predicted}
    if isinstance(sure, str):
        s, p = parse_alignment(sure)
    else:
        s = {tuple(x) for x in sure}
        p = set(s)
    p |= set() if possible is None else {tuple(x) for x in possible}
    if not a and not s:
        raise DataError("alignment_error_rate: both the predicted and the sure alignment are empty")
    return 1.0 - (len(a & s) + len(a & p)) / (len(a) + len(s))


# ----------------------------------------------------------------------------------- head importance
def _head_layout(name: str, module: nn.Module) -> tuple[int, int]:
    """``(num_heads, head_dim)`` of a multi-head module, or a :class:`ConfigError` saying why not."""
    heads = getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
    out = getattr(module, "out_proj", None) or getattr(module, "o_proj", None)
    if not heads or not isinstance(out, nn.Linear):
        raise ConfigError(f"mask_heads: cannot mask heads of {name} ({type(module).__name__}): it needs num_heads "
                          "and an out_proj/o_proj Linear whose input is the concatenated heads")
    return int(heads), out.in_features // int(heads)


def _maskable(module: nn.Module) -> bool:
    try:
        _head_layout("", module)
    except ConfigError:
        return False
    return True


@contextmanager
def mask_heads(model: nn.Module, heads: Mapping[str, Iterable[int]]) -> Iterator[None]:
    """Silence attention heads while the block runs: their context vectors become zero.

    ``MultiHead = Concat(head_1..head_H) W_o``: zeroing ``head_h`` removes exactly its contribution
    ``head_h W_o^h`` and leaves the other heads and the output bias alone (Michel et al., 2019, sec. 2, with a
    gate ``ξ_h = 0``). For attnlab's ``MultiHeadAttention`` and Hugging Face layers with an ``out_proj``/``o_proj``
    this is a forward pre-hook on the output projection that zeroes the head's slice of its input. PyTorch's
    ``nn.MultiheadAttention`` never calls its ``out_proj`` module (the functional and fused paths read its weight
    directly), so there the head's input columns of ``out_proj.weight`` are zeroed in place for the block and
    restored afterwards, which is the same product; use it for forward passes only.

    Args:
        heads: module name (as in ``model.named_modules()``) -> head indices to silence.
    """
    modules = dict(model.named_modules())
    handles, saved = [], []
    try:
        for name, idx in heads.items():
            if name not in modules:
                raise ConfigError(f"mask_heads: no module named {name!r} in {type(model).__name__}")
            module = modules[name]
            num_heads, head_dim = _head_layout(name, module)
            idx = sorted(set(idx))
            if any(not 0 <= h < num_heads for h in idx):
                raise ConfigError(f"mask_heads: {name} has {num_heads} heads (0-{num_heads - 1}), got {idx}")
            keep = torch.ones(num_heads * head_dim)
            for h in idx:
                keep[h * head_dim:(h + 1) * head_dim] = 0.0
            if isinstance(module, nn.MultiheadAttention):
                weight = module.out_proj.weight
                saved.append((weight, weight.detach().clone()))
                with torch.no_grad():
                    weight.mul_(keep.to(weight))  # (D, H*Dh) columns of masked heads -> 0
            else:
                out = getattr(module, "out_proj", None) or module.o_proj

                def zero(mod: nn.Module, args: tuple, keep: torch.Tensor = keep) -> tuple:
                    return (args[0] * keep.to(args[0]), *args[1:])  # (B, Tq, H*Dh) with masked heads' slices 0

                handles.append(out.register_forward_pre_hook(zero))
        yield
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


@dataclass
class HeadImportance:
    """Result of :func:`head_importance`.

    Attributes:
        names: the attention modules, one per row of ``loss_change``.
        base_loss: the loss with every head active.
        loss_change: ``(L, H)`` loss with head ``h`` of module ``l`` masked minus ``base_loss`` (``NaN`` past a
            module's own head count). Large = important; near 0 or negative = the head can go.
    """

    names: list[str]
    base_loss: float
    loss_change: torch.Tensor

    def ranking(self) -> list[tuple[str, int, float]]:
        """``(module, head, loss change)`` from most to least important."""
        items = [(name, j, v) for i, name in enumerate(self.names)
                 for j, v in enumerate(self.loss_change[i].tolist()) if not math.isnan(v)]
        return sorted(items, key=lambda t: -t[2])


def head_importance(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor | float], *,
                    modules: Iterable[str] | None = None) -> HeadImportance:
    """Importance of every head as the loss increase when that head alone is masked (Michel et al., 2019).

    Runs ``loss_fn(model)`` once with all heads and once per head under :func:`mask_heads`, without gradients.
    Put the model in ``eval()`` mode first so that dropout does not blur the differences.

    Args:
        loss_fn: runs the model on held-out data and returns a scalar loss.
        modules: the multi-head modules to test (default: every one capture finds that :func:`mask_heads` can
            mask; single-head scoring modules and layers without an output projection are skipped).
    """
    from attnlab.viz.capture import find_attention_modules

    if modules is None:
        names = [t.name for t in find_attention_modules(model) if t.family != "scoring" and _maskable(t.module)]
    else:
        names = list(modules)
    if not names:
        raise ConfigError(f"head_importance: no multi-head attention inside {type(model).__name__}")
    found = dict(model.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"head_importance: no module named {missing[0]!r} in {type(model).__name__}")
    layouts = [_head_layout(n, found[n])[0] for n in names]

    def loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model))

    base = loss()
    change = torch.full((len(names), max(layouts)), float("nan"))
    for i, (name, num_heads) in enumerate(zip(names, layouts, strict=True)):
        for h in range(num_heads):
            with mask_heads(model, {name: [h]}):
                change[i, h] = loss() - base
    return HeadImportance(names, base, change)
