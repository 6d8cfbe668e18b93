"""Record the attention weights of any model with forward hooks: ``with capture(model) as maps: model(x)``.

What is captured:

* attnlab's :class:`~attnlab.attention.MultiHeadAttention` (``need_weights`` is forced on for the call and the
  weights are handed back to the caller only if it asked for them) and every
  :class:`~attnlab.attention.ScoringAttention` (``H = 1``);
* any ``torch.nn.MultiheadAttention``, also inside ``nn.TransformerEncoder``/``nn.Transformer``, which never
  return weights themselves: ``need_weights=True, average_attn_weights=False`` is forced and the caller gets the
  output it asked for. PyTorch's fused inference paths skip ``self_attn.forward``; the encoder-layer path is
  turned off by the hooks themselves (PyTorch checks for hooks), and the encoder's nested-tensor path is turned
  off for the duration of the capture, its zeroed padded positions reproduced so outputs stay the same;
* Hugging Face ``transformers`` models (v5 ``_can_record_outputs`` layers): their attention implementation is
  switched to ``"eager"`` (the only one that materializes weights) and restored on exit.

Weights are recorded as detached float32 copies on the CPU. ``capture(model, keep_graph=True)`` records them as
the module computed them instead, still attached to the autograd graph, and :func:`attention_grads` takes the
gradient of an output with respect to them (gradient-weighted rollout, :mod:`attnlab.explain`).

Dimension legend: ``B`` batch, ``H`` heads, ``Tq``/``Tk`` query/key length, ``L`` layers.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.core.errors import ConfigError, DataError
from attnlab.core.types import AttentionOutput

log = logging.getLogger(__name__)

Kind = Literal["encoder", "decoder", "cross", "self"]
KINDS: tuple[Kind, ...] = ("encoder", "decoder", "cross", "self")
Family = Literal["attnlab", "scoring", "torch", "hf"]

# Modules hooked by an active capture; a second capture of the same module would fight over need_weights.
_ACTIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@dataclass
class AttentionRecord:
    """The attention of one module (one call, or all calls of a step-wise decode merged along ``Tq``).

    Attributes:
        name: qualified module name inside the model, e.g. ``"decoder.layers.0.multihead_attn"``.
        kind: ``"encoder"`` (encoder self-attention), ``"decoder"`` (decoder self-attention), ``"cross"``
            (decoder queries over encoder keys) or ``"self"`` (self-attention with no encoder/decoder split).
        weights: ``(B, H, Tq, Tk)`` float32 on CPU, detached; ``H = 1`` for single-head scoring modules. Under
            ``capture(..., keep_graph=True)``: on the model's device, in its dtype, attached to the autograd graph.
        calls: how many forward calls of the module went into ``weights``.
        query_tokens: the ``Tq`` query tokens (of batch row 0) when known, else ``None``.
        key_tokens: the ``Tk`` key tokens when known, else ``None``.
    """

    name: str
    kind: Kind
    weights: torch.Tensor
    calls: int = 1
    query_tokens: list[str] | None = None
    key_tokens: list[str] | None = None

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]


class CaptureResult(Sequence[AttentionRecord]):
    """What :func:`capture` yields: one :class:`AttentionRecord` per attention module that ran, in call order.

    Indexing and iteration give one record per module for its last pass: the calls of a step-wise decode
    (one query per call) are concatenated along ``Tq``, the key axis right-padded with zeros where it grew
    (KV cache); a call with several queries starts a new pass. Every raw call is kept in :attr:`calls`.
    Tokens: ``src_tokens`` label encoder/self positions and cross-attention keys, ``tgt_tokens`` label decoder
    positions and cross-attention queries.
    """

    def __init__(self, module_names: list[str], src_tokens: Sequence[str] | None = None,
                 tgt_tokens: Sequence[str] | None = None) -> None:
        self.module_names = list(module_names)
        self.calls: list[AttentionRecord] = []
        self.src_tokens = None if src_tokens is None else [str(t) for t in src_tokens]
        self.tgt_tokens = None if tgt_tokens is None else [str(t) for t in tgt_tokens]

    # ---------------------------------------------------------------------------------------- tokens
    def set_tokens(self, src: Sequence[str] | None = None, tgt: Sequence[str] | None = None) -> None:
        """Label positions after the fact (e.g. once the decoded target is known)."""
        if src is not None:
            self.src_tokens = [str(t) for t in src]
        if tgt is not None:
            self.tgt_tokens = [str(t) for t in tgt]

    def tokens_for(self, kind: Kind) -> tuple[list[str] | None, list[str] | None]:
        """``(query_tokens, key_tokens)`` for a kind of attention."""
        if kind == "decoder":
            return self.tgt_tokens, self.tgt_tokens
        if kind == "cross":
            return self.tgt_tokens, self.src_tokens
        return self.src_tokens, self.src_tokens

    # --------------------------------------------------------------------------------------- records
    def layers(self, kind: Kind | None = None) -> list[AttentionRecord]:
        """Per-module records (optionally of one kind), in the order the modules first ran."""
        groups: dict[str, list[AttentionRecord]] = {}
        for rec in self.calls:
            groups.setdefault(rec.name, []).append(rec)
        out = []
        for name, recs in groups.items():
            merged = _merge_calls(name, recs)
            if kind is not None and merged.kind != kind:
                continue
            q, k = self.tokens_for(merged.kind)
            Tq, Tk = merged.weights.shape[-2:]
            out.append(replace(merged, query_tokens=q if q is not None and len(q) == Tq else None,
                               key_tokens=k if k is not None and len(k) == Tk else None))
        return out

    def kinds(self) -> list[Kind]:
        """The kinds present, in the canonical order encoder, decoder, cross, self."""
        present = {rec.kind for rec in self.calls}
        return [k for k in KINDS if k in present]

    def stack(self, kind: Kind) -> torch.Tensor:
        """All layers of one kind as ``(L, B, H, Tq, Tk)``."""
        recs = self.layers(kind)
        if not recs:
            raise DataError(f"no {kind} attention was captured (captured: {', '.join(self.kinds()) or 'nothing'})")
        shapes = {tuple(r.weights.shape) for r in recs}
        if len(shapes) > 1:
            raise DataError(f"{kind} attention layers have different shapes {sorted(shapes)}; "
                            "index the records one by one instead of stacking them")
        return torch.stack([r.weights for r in recs])  # (L, B, H, Tq, Tk)

    def to_maps(self) -> Any:
        """An :class:`attnlab.models.base.AttentionMaps` (``"self"`` attention goes to ``encoder_self``)."""
        from attnlab.models.base import AttentionMaps

        kinds = self.kinds()
        enc = "encoder" if "encoder" in kinds else ("self" if "self" in kinds else None)
        return AttentionMaps(encoder_self=self.stack(enc) if enc else None,
                             decoder_self=self.stack("decoder") if "decoder" in kinds else None,
                             cross=self.stack("cross") if "cross" in kinds else None)

    def clear(self) -> None:
        """Forget what was recorded so far (to reuse one capture block for several passes)."""
        self.calls.clear()

    def __len__(self) -> int:
        return len(self.layers())

    def __getitem__(self, index: int | str) -> Any:  # type: ignore[override]
        recs = self.layers()
        if isinstance(index, str):
            for rec in recs:
                if rec.name == index:
                    return rec
            raise KeyError(f"no attention recorded for module {index!r}; recorded: {[r.name for r in recs]}")
        return recs[index]

    def __iter__(self) -> Iterator[AttentionRecord]:
        return iter(self.layers())

    def __repr__(self) -> str:
        parts = [f"{r.name} [{r.kind}] {tuple(r.weights.shape)}" for r in self.layers()]
        return f"CaptureResult({len(parts)} layers" + ("".join(f"\n  {p}" for p in parts)) + ")"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any] | None:
        """Shown in Jupyter as the interactive viewer (see :mod:`attnlab.viz.notebook`); empty, as its repr."""
        if not self.calls:
            return None
        from attnlab.viz.notebook import inline

        return inline(self)._repr_mimebundle_(include, exclude)


def _merge_calls(name: str, recs: list[AttentionRecord]) -> AttentionRecord:
    """The last pass of one module: its step-wise calls concatenated along ``Tq``, ``Tk`` zero-padded.

    A call starts a new pass when it has several queries (a full forward, or a decoder prompt) or fewer keys
    than the call before (a KV cache that was reset); single-query calls continue the pass (decoding steps).
    """
    start = 0
    for i in range(1, len(recs)):
        if recs[i].weights.shape[2] > 1 or recs[i].weights.shape[3] < recs[i - 1].weights.shape[3]:
            start = i
    recs = recs[start:]
    if len(recs) == 1:
        return recs[0]
    B, H = recs[0].weights.shape[:2]
    if any(r.weights.shape[:2] != (B, H) for r in recs):
        raise DataError(f"module {name} ran with different batch sizes inside one capture (e.g. beam search); "
                        "read CaptureResult.calls, or capture one pass per block")
    Tk = max(r.weights.shape[-1] for r in recs)
    parts = [F.pad(r.weights, (0, Tk - r.weights.shape[-1])) for r in recs]
    kind = "cross" if any(r.kind == "cross" for r in recs) else recs[0].kind
    return AttentionRecord(name, kind, torch.cat(parts, dim=2), calls=len(recs))  # (B, H, sum Tq, Tk)


# ------------------------------------------------------------------------------------------ discovery
def _stack_of(name: str) -> Kind:
    """Encoder or decoder from the module path (``decoder`` wins: ``decoder.layers.0.encoder_attn``)."""
    parts = name.lower().split(".")
    if any("decoder" in p for p in parts):
        return "decoder"
    if any("encoder" in p for p in parts):
        return "encoder"
    return "self"


@dataclass
class _Target:
    name: str
    module: nn.Module
    family: Family
    hf_cross: bool = False
    hf_index: int = 1


def _attnlab_classes() -> tuple[type, type] | None:
    try:
        from attnlab.attention import MultiHeadAttention, ScoringAttention
    except ImportError:  # the attention package is optional for capture of foreign models
        return None
    return MultiHeadAttention, ScoringAttention


def _hf_specs(model: nn.Module) -> list[tuple[str, Any, int, str | None, bool, str | None]]:
    """``(prefix, class, index, layer_name, is_cross, class_name)`` from every ``_can_record_outputs``."""
    specs = []
    for prefix, sub in model.named_modules():
        table = getattr(type(sub), "_can_record_outputs", None)
        if not isinstance(table, dict):
            continue
        for key, spec in table.items():
            if "attention" not in key:
                continue
            cls = spec if isinstance(spec, type) else getattr(spec, "target_class", None)
            specs.append((prefix, cls, int(getattr(spec, "index", 1) or 1), getattr(spec, "layer_name", None),
                          key.startswith("cross"), getattr(spec, "class_name", None)))
    return specs


def find_attention_modules(model: nn.Module) -> list[_Target]:
    """Every attention module capture knows how to hook, outermost first (nested ones are skipped)."""
    ours = _attnlab_classes()
    found: dict[str, _Target] = {}
    for name, mod in model.named_modules():
        if ours is not None and isinstance(mod, ours[0]):
            found[name] = _Target(name, mod, "attnlab")
        elif ours is not None and isinstance(mod, ours[1]):
            found[name] = _Target(name, mod, "scoring")
        elif isinstance(mod, nn.MultiheadAttention):
            found[name] = _Target(name, mod, "torch")
    for prefix, cls, index, layer_name, cross, class_name in _hf_specs(model):
        base = prefix + "." if prefix else ""
        for name, mod in model.named_modules():
            if name in found or not name.startswith(base):
                continue
            if not ((cls is not None and isinstance(mod, cls)) or (class_name and type(mod).__name__ == class_name)):
                continue
            if layer_name is not None and layer_name not in name.split("."):
                continue
            found[name] = _Target(name, mod, "hf", hf_cross=cross, hf_index=index)
    # A scoring module inside a multi-head module would be recorded twice: keep the outer one.
    names = sorted(found)
    return [found[n] for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


# ------------------------------------------------------------------------------------------- capture
class capture:  # noqa: N801 -- used like a function: ``with capture(model) as maps``
    """Record attention weights of every attention module of ``model`` while the block runs.

    Args:
        model: any ``nn.Module`` containing attention (see the module docstring for what is found).
        src_tokens: tokens labelling encoder (or single-stack) positions, for batch row 0.
        tgt_tokens: tokens labelling decoder positions.
        keep_graph: record the weights as computed, not detached nor copied, so that gradients with respect to
            them can be taken (:func:`attention_grads`; run the model with gradients enabled). The records then
            hold the graph alive as long as they are kept.

    Yields:
        a :class:`CaptureResult`, filled as the model runs. Hooks are removed and every setting restored on
        exit, also after an exception.

    Raises:
        ConfigError: the model has no attention module capture knows, or is already being captured.
    """

    def __init__(self, model: nn.Module, *, src_tokens: Sequence[str] | None = None,
                 tgt_tokens: Sequence[str] | None = None, keep_graph: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"capture: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.keep_graph = bool(keep_graph)
        self.targets = find_attention_modules(model)
        if not self.targets and any(type(m).__module__.startswith("transformers.") for m in model.modules()):
            raise ConfigError(f"capture: no attention layers declared by {type(model).__name__}; capturing Hugging "
                              "Face models needs transformers>=5 (layers listed in _can_record_outputs)")
        if not self.targets:
            raise ConfigError(
                f"capture: found no attention inside {type(model).__name__}; supported are attnlab's "
                "MultiHeadAttention and scoring modules, torch.nn.MultiheadAttention (also inside "
                "nn.Transformer*), and Hugging Face transformers attention layers")
        self.result = CaptureResult([t.name for t in self.targets], src_tokens, tgt_tokens)
        self._handles: list[Any] = []
        self._undo: list[Any] = []
        self._warned: set[str] = set()

    def __enter__(self) -> CaptureResult:
        busy = [t.name for t in self.targets if t.module in _ACTIVE]
        if busy:
            raise ConfigError(f"capture: {busy[0]} is already being captured; nested captures of one model "
                              "are not supported")
        try:
            for t in self.targets:
                self._hook(t)
                _ACTIVE.add(t.module)
            self._disable_fast_paths()
            self._switch_hf_to_eager()
        except BaseException:
            self._restore()
            raise
        return self.result

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for t in self.targets:
            _ACTIVE.discard(t.module)

    # ------------------------------------------------------------------------------------ recording
    def _record(self, t: _Target, weights: torch.Tensor | None, cross: bool) -> None:
        if weights is None:
            if t.name not in self._warned:
                self._warned.add(t.name)
                log.warning("capture: %s returned no attention weights; it was not recorded", t.name)
            return
        w = weights if self.keep_graph else weights.detach().to("cpu", torch.float32)
        if w.dim() == 3:  # (B, Tq, Tk) from a scoring module, or unbatched (H, Tq, Tk) from nn.MHA
            w = w.unsqueeze(1 if t.family == "scoring" else 0)  # (B, H, Tq, Tk)
        kind: Kind = "cross" if cross else _stack_of(t.name)
        self.result.calls.append(AttentionRecord(t.name, kind, w))

    def _hook(self, t: _Target) -> None:
        pending: list[tuple[bool, bool, bool]] = []  # (caller wanted weights, wanted them averaged, is cross)
        mod = t.module

        if t.family == "attnlab":
            def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                query = args[0] if args else kwargs.get("query")
                key = args[1] if len(args) > 1 else kwargs.get("key")
                pending.append((bool(kwargs.get("need_weights", False)), False, key is not None and key is not query))
                return args, {**kwargs, "need_weights": True}

            def post(module: nn.Module, args: tuple, kwargs: dict, out: AttentionOutput) -> AttentionOutput:
                wanted, _, cross = pending.pop()
                self._record(t, out.weights, cross)
                return out if wanted else AttentionOutput(out.output, None)

        elif t.family == "torch":
            signature = inspect.signature(mod.forward)

            def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                bound = signature.bind(*args, **kwargs).arguments
                pending.append((bool(bound.get("need_weights", True)), bool(bound.get("average_attn_weights", True)),
                                bound["key"] is not bound["query"]))
                rest = {k: v for k, v in bound.items() if k not in ("query", "key", "value")}
                rest.update(need_weights=True, average_attn_weights=False)
                return (bound["query"], bound["key"], bound["value"]), rest

            def post(module: nn.Module, args: tuple, kwargs: dict, out: tuple) -> tuple:
                wanted, average, cross = pending.pop()
                attn_out, weights = out  # weights (B, H, Tq, Tk), or (H, Tq, Tk) for unbatched input
                self._record(t, weights, cross)
                if not wanted:
                    return attn_out, None
                return attn_out, weights.mean(dim=-3) if average else weights

        elif t.family == "scoring":
            def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
                q = args[0] if args else kwargs.get("queries")
                k = args[1] if len(args) > 1 else kwargs.get("keys")
                pending.append((True, False, k is not q))

            def post(module: nn.Module, args: tuple, kwargs: dict, out: AttentionOutput) -> None:
                self._record(t, out.weights, pending.pop()[2])

        else:  # Hugging Face: attention layers return (output, weights, ...) under the eager implementation
            def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
                cross = t.hf_cross or any(kwargs.get(k) is not None
                                          for k in ("key_value_states", "encoder_hidden_states"))
                pending.append((True, False, cross))

            def post(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
                cross = pending.pop()[2]
                weights = out[t.hf_index] if isinstance(out, tuple) and len(out) > t.hf_index else None
                self._record(t, weights if isinstance(weights, torch.Tensor) else None, cross)

        self._handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(mod.register_forward_hook(post, with_kwargs=True))

    # ------------------------------------------------------------------------------- fused paths
    def _disable_fast_paths(self) -> None:
        """Turn off ``nn.TransformerEncoder``'s nested-tensor path, reproducing its zeroed padded outputs."""
        for enc in self.model.modules():
            if not (isinstance(enc, nn.TransformerEncoder) and getattr(enc, "use_nested_tensor", False)):
                continue
            enc.use_nested_tensor = False
            self._undo.append(lambda e=enc: setattr(e, "use_nested_tensor", True))
            self._hook_nested(enc)

    def _hook_nested(self, enc: nn.TransformerEncoder) -> None:
        signature = inspect.signature(enc.forward)
        pending: list[torch.Tensor | None] = []

        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            bound = signature.bind(*args, **kwargs).arguments
            src, mask, kpm = bound["src"], bound.get("mask"), bound.get("src_key_padding_mask")
            pending.append(_nested_padding(enc, src, mask, kpm))

        def post(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> torch.Tensor:
            pad = pending.pop()  # (B, T) True at padded positions, when the nested path would have run
            if pad is None:
                return out
            fill = torch.zeros(out.shape[-1], dtype=out.dtype, device=out.device)
            if enc.norm is not None:
                fill = enc.norm(fill)  # the nested path pads with zeros *before* the final norm
            fixed = out.clone()
            (fixed if enc.layers[0].self_attn.batch_first else fixed.transpose(0, 1))[pad] = fill
            return fixed

        self._handles.append(enc.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(enc.register_forward_hook(post, with_kwargs=True))

    def _switch_hf_to_eager(self) -> None:
        """Only the eager attention implementation returns weights; switch every config, restore on exit."""
        seen: set[int] = set()
        for mod in self.model.modules():
            config = getattr(mod, "config", None)
            if config is None or id(config) in seen or not hasattr(config, "_attn_implementation"):
                continue
            seen.add(id(config))
            old = config._attn_implementation
            if old in (None, "eager"):
                continue
            config._attn_implementation = "eager"
            self._undo.append(lambda c=config, v=old: setattr(c, "_attn_implementation", v))


def attention_grads(output: torch.Tensor, weights: Sequence[torch.Tensor], *,
                    retain_graph: bool = False) -> list[torch.Tensor]:
    """Gradients of a scalar ``output`` with respect to weights recorded by ``capture(..., keep_graph=True)``.

    ``nn.MultiheadAttention`` hands out its weights as a reshaped view of the tensor it multiplied the values with,
    made after that product, so autograd has no path from the view to the output: the gradient is taken with
    respect to the tensor the view shows (``Tensor._base``, when the view covers all of it in the same order) and
    reshaped. Weights the output does not depend on get zeros.

    Returns:
        one gradient per weights tensor, of its shape.
    """
    if any(not w.requires_grad for w in weights):
        raise DataError("attention_grads: the weights are not attached to the autograd graph; record them with "
                        "capture(model, keep_graph=True) while gradients are enabled")
    used = [_computed(w) for w in weights]
    grads = torch.autograd.grad(output, used, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g.reshape(w.shape) for w, g in zip(weights, grads, strict=True)]


def _computed(w: torch.Tensor) -> torch.Tensor:
    """The tensor a whole-tensor view ``w`` shows (same elements, same order), else ``w`` itself."""
    base = w._base
    if (base is None or base.numel() != w.numel() or not (base.is_contiguous() and w.is_contiguous())
            or base.storage_offset() != w.storage_offset()):
        return w
    return base


def _nested_padding(enc: nn.TransformerEncoder, src: torch.Tensor, mask: torch.Tensor | None,
                    kpm: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, T)`` padding mask if ``enc.forward`` would take its nested-tensor path, else ``None``.

    Mirrors the conditions of ``torch.nn.TransformerEncoder.forward`` (PyTorch 2.x); the capture tests compare
    captured and uncaptured outputs, padded positions included, so a change upstream shows up there.
    """
    first = enc.layers[0]
    if (kpm is None or mask is not None or src.dim() != 3 or src.is_nested or first.training
            or not torch.backends.mha.get_fastpath_enabled() or torch.is_autocast_enabled()):
        return None
    pad = kpm if kpm.dtype == torch.bool else kpm != 0  # float masks: non-zero (-inf) = padded
    check = getattr(torch, "_nested_tensor_from_mask_left_aligned", None)
    if getattr(enc, "mask_check", True) and (check is None or not check(src, pad.logical_not())):
        return None
    attn, tensors = first.self_attn, [src]
    tensors += [attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias]
    tensors += [first.norm1.weight, first.norm1.bias, first.norm2.weight, first.norm2.bias]
    tensors += [first.linear1.weight, first.linear1.bias, first.linear2.weight, first.linear2.bias]
    if any(t is None for t in tensors) or torch.overrides.has_torch_function(tuple(tensors)):
        return None
    if src.device.type not in ("cpu", "cuda", "xpu", _privateuse1_name()):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return pad


def _privateuse1_name() -> str:
    from torch.utils import backend_registration

    return getattr(backend_registration, "_privateuse1_backend_name", "privateuseone")
