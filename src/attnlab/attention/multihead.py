"""Multi-head attention (Vaswani et al., 2017, section 3.2.2) with masks, a fused fast path and a KV cache.

Parameters follow ``torch.nn.MultiheadAttention``'s layout (``in_proj_weight`` when query, key and value
sizes are equal; separate ``q/k/v_proj_weight`` otherwise; ``out_proj``), so weights convert both ways
(:meth:`MultiHeadAttention.from_torch`, :meth:`MultiHeadAttention.to_torch`).

Differences from PyTorch, by design: tensors are always batch-first; masks are boolean with ``True`` = may
attend; a query with no allowed key gets zero weights and a zero context (PyTorch returns NaN there), so
its output is just the output projection's bias.

Each call takes one of three paths, all with the same result (the tests hold them to it): ``"explicit"``
(scores, masked softmax and weighted sum written out), ``"fused"`` (``F.scaled_dot_product_attention``) and
``"head_groups"`` (long-sequence inference, a few heads at a time). :class:`PathPolicy` chooses; its thresholds
were measured on this project's 2-core CPU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from attnlab.attention import native
from attnlab.attention._checks import check_dropout, check_float3d, check_positive
from attnlab.attention.cache import KVCache
from attnlab.attention.functional import (
    build_mask,
    explicit_attention,
    fused_attention,
    step_attention,
    zero_unreachable,
    zero_unused_inputs,
)
from attnlab.attention.masks import check_mask
from attnlab.attention.trace import Trace, active_trace
from attnlab.core.types import AttentionOutput

AttentionPath = Literal["explicit", "fused", "head_groups"]


@dataclass(frozen=True)
class PathPolicy:
    """Which path :class:`MultiHeadAttention` takes for a call, from its flags and the size of its score matrix.

    * ``"explicit"`` (:func:`explicit_attention`): always when the weights must exist as a tensor (``need_weights``,
      weights hooks; an active :func:`~attnlab.attention.trace.trace` takes it too, before any policy is asked);
      otherwise for small score matrices, where plain matmuls beat the kernel's overhead.
    * ``"fused"`` (:func:`fused_attention`, SDPA): everything else...
    * ``"head_groups"``: ...except long-sequence inference (no autograd, no cache), which projects and attends
      ``group_heads`` heads at a time so that only one group's Q, K and V exist at once (peak memory).

    Dropout does not enter the choice: every path applies it in train mode (on the CPU, the explicit and fused paths
    draw the same Bernoulli mask from the same seed). The thresholds are per ``(batch row, head)`` score matrix,
    ``Tq * Tk`` entries, and were measured on this project's 2-core CPU; other machines may want others. Override them
    per module (``MultiHeadAttention(..., policy=PathPolicy(small_scores=0))`` or the ``policy`` attribute), e.g. to
    force a path in a test or benchmark.
    """

    small_scores: int = 16 * 16
    """Without weights, score matrices of more than one query with up to this many entries take the explicit path;
    larger ones the fused kernel. The matmul path beat SDPA up to 16 x 16 (benchmarks/attention.py, 2,048-token
    batches, forward+backward: 0.64-0.78x SDPA's time at d_model 128 / 4 heads, 0.82-0.98x at 512 / 8, with or
    without padding), was tied at 32 x 32 at d_model 512 and lost from 64 x 64 there (README, "Attention speed").
    Whole Transformer training steps: benchmarks/kernel_threshold.py."""
    small_scores_one_query: int = 0
    """The same for one-query steps (KV-cached decoding). 0: every step takes the kernel. Sending the steps to the
    plain path instead (256) measured no clear difference in greedy and beam-5 decoding: 0.88-1.19x the time over
    five runs of benchmarks/kernel_threshold.py, so the kernel stays."""
    long_scores: int = 4096 * 4096
    """From this many entries, inference without weights, autograd or cache takes the head-group path (peak
    memory; see benchmarks/attention.py)."""
    group_heads: int = 1
    """Heads attended together on the head-group path. One at a time measured lowest (benchmarks/attention.py, 8192
    tokens, 8 heads): peak 64-71 MiB with glibc's default allocator vs 85 MiB two heads at a time, SDPA alone
    64 MiB; the per-head projections cost little next to the T^2 attention."""

    def __post_init__(self) -> None:
        for name in ("small_scores", "small_scores_one_query", "long_scores"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PathPolicy: {name} must be a non-negative integer (score entries), got {value!r}")
        check_positive("PathPolicy", "group_heads", self.group_heads)

    def choose(self, num_queries: int, num_keys: int, *, need_weights: bool = False, hooked: bool = False,
               cached: bool = False, grad: bool = True) -> AttentionPath:
        """The path for ``num_queries`` (``Tq``) queries over ``num_keys`` (``Tk``, cached keys included).

        Args:
            need_weights: the weights are returned; hooked: weights hooks must see them. Only the explicit path
                has them.
            cached: a :class:`KVCache` is read or filled (the head-group path does neither).
            grad: autograd records the call (the head-group path writes into preallocated buffers).
        """
        if need_weights or hooked:
            return "explicit"
        scores = num_queries * num_keys
        if scores >= self.long_scores and not (cached or grad):
            return "head_groups"
        small = self.small_scores if num_queries > 1 else self.small_scores_one_query
        return "fused" if scores > small else "explicit"


DEFAULT_POLICY = PathPolicy()
"""The thresholds every :class:`MultiHeadAttention` uses unless given its own."""


@dataclass(slots=True)
class _Call:
    """One call's checked inputs, as every path needs them (``key``/``value`` are ``query`` for self-attention)."""

    query: torch.Tensor  # (B, Tq, D)
    key: torch.Tensor  # (B, Tk_new, kdim): this call's keys; on a static cache hit, unused
    value: torch.Tensor  # (B, Tk_new, vdim)
    is_self: bool
    static_hit: bool  # a filled cross-attention cache: its keys and values are used, this call's are not projected
    batch: int  # B
    num_queries: int  # Tq
    num_keys: int  # Tk: cached keys, then this call's
    valid_lens: torch.Tensor | None
    mask: torch.Tensor | None  # checked; (Tq, Tk), (B, 1, Tq, Tk) or as given (B|1, H|1, Tq, Tk)
    is_causal: bool

    @property
    def kernel_causal(self) -> bool:
        """Causality the fused kernel can apply itself: nothing else is masked and the keys are the queries' own
        positions (SDPA aligns its causal mask top-left, which is wrong after cached keys)."""
        return self.is_causal and self.valid_lens is None and self.mask is None and self.num_queries == self.num_keys


WeightsHook = Callable[[nn.Module, torch.Tensor], "torch.Tensor | None"]


class WeightsHooks:
    """Mixin for attention modules: hooks that see, and may replace, the attention weights before they mix the values.

    For explanation (``attnlab.explain``): ``hook(module, weights)`` may return a tensor of the same shape, which
    the module then uses *exactly*, for its output and as the weights it returns (uniform or permuted attention),
    or ``None``/the same tensor to leave them (e.g. after ``weights.retain_grad()``, to read their gradient). The
    hooks live in the instance's ``__dict__``, like PyTorch's own hooks: never in ``state_dict``.
    """

    def register_weights_hook(self, hook: WeightsHook) -> RemovableHandle:
        """Add ``hook``; ``handle.remove()`` takes it away again."""
        hooks = self.__dict__.setdefault("_weights_hooks", OrderedDict())
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def _has_weights_hooks(self) -> bool:
        return bool(self.__dict__.get("_weights_hooks"))

    def _run_weights_hooks(self, weights: torch.Tensor) -> torch.Tensor:
        """The weights after every hook, in registration order."""
        for hook in list(self.__dict__.get("_weights_hooks", {}).values()):
            new = hook(self, weights)
            if new is not None:
                if new.shape != weights.shape:
                    raise ValueError(f"{type(self).__name__}: a weights hook returned shape {tuple(new.shape)}, "
                                     f"expected {tuple(weights.shape)}")
                weights = new
        return weights


class MultiHeadAttention(WeightsHooks, nn.Module):
    """``MultiHead(Q, K, V) = Concat(head_1..head_H) W_o`` with ``head_i = Attention(Q W_q^i, K W_k^i, V W_v^i)``.

    Args:
        d_model: model size ``D`` (query size and output size).
        num_heads: ``H``; must divide ``d_model``.
        dropout: dropout on the attention weights during training.
        bias: add biases to the input and output projections.
        kdim, vdim: key and value input sizes for cross-attention (default ``d_model``).
        policy: which path a call takes (:class:`PathPolicy`; default :data:`DEFAULT_POLICY`). Also the
            ``policy`` attribute, which may be replaced at any time; it is not part of ``state_dict``.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, *, policy: PathPolicy | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        if policy is not None and not isinstance(policy, PathPolicy):
            raise TypeError(f"{owner}: policy must be a PathPolicy, got {type(policy).__name__}")
        self.policy = DEFAULT_POLICY if policy is None else policy
        check_positive(owner, "d_model", d_model)
        check_positive(owner, "num_heads", num_heads)
        if d_model % num_heads:
            raise ValueError(f"{owner}: d_model={d_model} is not divisible by num_heads={num_heads}; "
                             f"pick num_heads among the divisors of d_model")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.kdim = d_model if kdim is None else check_positive(owner, "kdim", kdim)
        self.vdim = d_model if vdim is None else check_positive(owner, "vdim", vdim)
        self.dropout = check_dropout(owner, dropout)
        self.same_dims = self.kdim == d_model and self.vdim == d_model
        factory = {"device": device, "dtype": dtype}
        if self.same_dims:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(d_model, d_model, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(d_model, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(d_model, self.vdim, **factory))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model, **factory)) if bias else None
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform input projections, zero biases (as ``nn.MultiheadAttention``)."""
        if self.same_dims:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        dims = "" if self.same_dims else f", kdim={self.kdim}, vdim={self.vdim}"
        policy = "" if self.policy == DEFAULT_POLICY else f", policy={self.policy}"
        return f"d_model={self.d_model}, num_heads={self.num_heads}, dropout={self.dropout}{dims}{policy}"

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None, *,
                valid_lens: torch.Tensor | None = None, mask: torch.Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False, cache: KVCache | None = None) -> AttentionOutput:
        """Attend from ``query`` ``(B, Tq, D)`` over ``key`` ``(B, Tk, kdim)`` / ``value`` ``(B, Tk, vdim)``.

        Args:
            key, value: omitted for self-attention; ``value`` defaults to ``key``.
            valid_lens: ``(B,)`` or ``(B, Tq)`` number of keys each row/query may see (key padding).
            mask: boolean, ``True`` = may attend; ``(Tq, Tk)``, ``(B, Tq, Tk)`` or broadcastable to
                ``(B, H, Tq, Tk)``.
            is_causal: query ``i`` sees keys up to its own position, aligned to the end of the keys (so it is
                correct with a cache holding earlier steps).
            need_weights: also return the per-head weights; otherwise the fused kernel may be used.
            cache: a :class:`KVCache` for incremental decoding (appended to in place).

        Returns:
            ``AttentionOutput(output (B, Tq, D), weights (B, H, Tq, Tk) or None)``.
        """
        # 1. Resolve self/cross attention and validate every input.
        call = self._resolve(query, key, value, valid_lens=valid_lens, mask=mask, is_causal=is_causal, cache=cache)
        tracer = active_trace()
        if tracer is not None:  # all that tracing costs while it is off
            return self._forward_traced(call, cache, need_weights, tracer)
        # 2. Choose the path: the explicit one when weights are wanted, else by the score matrix's size.
        path = self.policy.choose(call.num_queries, call.num_keys, need_weights=need_weights,
                                  hooked=self._has_weights_hooks(), cached=cache is not None,
                                  grad=torch.is_grad_enabled())
        # 3. Project, attend and project out on that path.
        if path == "fused":
            return self._forward_fused(call, cache)
        if path == "head_groups":
            return self._forward_head_groups(call)
        return self._forward_explicit(call, cache, need_weights)

    # ------------------------------------------------------------------------------ one-step inference
    def self_step(self, query: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decoding step of causal self-attention, for inference: what ``forward(query, is_causal=True,
        cache=cache).output`` returns, with less Python around the same operations.

        ``query``: ``(B, 1, D)``, the new position; it may see every cached key and itself. No checks, hooks,
        trace or dropout: callers use it in eval mode, without autograd, and only where nothing observes the module
        (see :func:`observed`).
        """
        B, H, Dh = query.shape[0], self.num_heads, self.head_dim
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (B, 1, 3D)
        q, k, v = (t.view(B, 1, H, Dh).transpose(1, 2) for t in qkv.chunk(3, dim=-1))  # (B, H, 1, Dh) each
        k, v = cache.update(k, v)  # (B, H, Tk, Dh)
        context = native.one_query_attention(q[:, :, 0], k, v)  # (B, 1, D), or None: no compiled kernels
        if context is not None:
            return self.out_proj(context)
        if self.policy.choose(1, k.shape[2], cached=True, grad=False) == "explicit":
            context = step_attention(q, k, v)  # (B, H, 1, Dh): one query, every key allowed
        else:
            context = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(context.transpose(1, 2).reshape(B, 1, self.d_model))  # (B, 1, D)

    def cross_step(self, query: torch.Tensor, memory: torch.Tensor, valid_lens: torch.Tensor | None, cache: KVCache,
                   beams: int = 1) -> torch.Tensor:
        """One decoding step of attention over an encoder memory, for inference (see :meth:`self_step`).

        ``query``: ``(B * beams, 1, D)``, the beams of each memory row in consecutive rows; ``memory``:
        ``(B, Ts, kdim)``, projected into the static ``cache`` on the first call; ``valid_lens``: ``(B,)``. A row's
        beams attend as ``beams`` queries over its one copy of the memory, as the Transformer decoder layer does on
        the general path, with the same choice of path.
        """
        rows, H, Dh = query.shape[0], self.num_heads, self.head_dim
        B = rows // beams
        q_rows = F.linear(query, *self._weight(0)).view(rows, H, Dh)  # (B * beams, H, Dh)
        q = q_rows.view(B, beams, H, Dh).transpose(1, 2)  # (B, H, beams, Dh)
        if not cache.filled:
            _, k, v = self._project(memory, memory, memory, False, skip_kv=False)  # (B, Ts, D) each; q unused
            Ts = memory.shape[1]
            cache.update(k.view(B, Ts, H, Dh).transpose(1, 2), v.view(B, Ts, H, Dh).transpose(1, 2))
        if valid_lens is None:
            mask, k, v, rows_ok = None, cache.key, cache.value, True
        else:  # (B, 1, 1, Ts) mask and (B, H, Ts, Dh) keys/values with the padding zeroed, made at the first step
            mask, k, v, rows_ok = cache.padding_mask(valid_lens)
        if rows_ok:  # the compiled kernel reads the first valid_lens[b] keys of row b: every row needs one
            context = native.one_query_attention(q_rows, k, v, valid_lens, beams)
            if context is not None:
                return self.out_proj(context)  # (B * beams, 1, D)
        explicit = self.policy.choose(beams, len(cache), cached=True, grad=False) == "explicit"
        if not rows_ok:  # a row with no key to attend to: the general paths' guards
            context = explicit_attention(q, k, v, mask, keys_zeroed=True)[0] if explicit else \
                fused_attention(q, k, v, mask, keys_zeroed=True)
        elif explicit:
            context = step_attention(q, k, v, mask)  # (B, H, beams, Dh)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(context.transpose(1, 2).reshape(rows, 1, self.d_model))  # (B * beams, 1, D)

    # ------------------------------------------------------------------------------------------- paths
    def _forward_explicit(self, call: _Call, cache: KVCache | None, need_weights: bool) -> AttentionOutput:
        """Scores, masked softmax and weighted sum written out (eq. 1); weights hooks see, and may replace, them."""
        mask = self._combined_mask(call, kernel_causal=False)  # broadcastable to (B, H, Tq, Tk), or None
        q, k, v = self._heads(call, mask, cache)  # (B, H, Tq, Dh), (B, H, Tk, Dh), (B, H, Tk, Dh)
        context, weights = self._attend_explicit(q, k, v, mask, keys_zeroed=_zeroed(cache))  # (B, H, Tq, Dh|Tk)
        merged = context.transpose(1, 2).flatten(2)  # (B, Tq, H * Dh = D): the heads concatenated
        return AttentionOutput(self.out_proj(merged), weights if need_weights else None)

    def _forward_fused(self, call: _Call, cache: KVCache | None) -> AttentionOutput:
        """``F.scaled_dot_product_attention``, told about causality itself when nothing else is masked."""
        kernel_causal = call.kernel_causal
        mask = self._combined_mask(call, kernel_causal)  # (B|1, H|1, Tq, Tk), or None
        q, k, v = self._heads(call, mask, cache)  # (B, H, Tq, Dh), (B, H, Tk, Dh), (B, H, Tk, Dh)
        context = fused_attention(q, k, v, mask, is_causal=kernel_causal, dropout_p=self.dropout,
                                  training=self.training, keys_zeroed=_zeroed(cache))  # (B, H, Tq, Dh)
        merged = context.transpose(1, 2).flatten(2)  # (B, Tq, H * Dh = D): the heads concatenated
        return AttentionOutput(self.out_proj(merged), None)

    def _forward_head_groups(self, call: _Call) -> AttentionOutput:
        """Long-sequence inference: the fused path's result, one group of heads (``policy.group_heads``) at a time.

        Each group's context is written straight into the merged ``(B, Tq, D)`` buffer, so the peak holds the
        input, that buffer and one group's Q/K/V -- not all heads' Q/K/V plus a separate context. In train mode the
        attention dropout is applied as on the fused path, but each group draws its own mask (one kernel call per
        group), so a seed is sure to give that path's exact output only with a single group; the distribution is the
        same. Padding rows are not zeroed before the projections as on the other paths: no gradient is taken here,
        and :func:`fused_attention` keeps them out of the output.
        """
        query, key, value = call.query, call.key, call.value
        B, Tq, Tk = call.batch, call.num_queries, call.num_keys
        H, Dh, kernel_causal = self.num_heads, self.head_dim, call.kernel_causal
        lengths_causal = build_mask((B, 1, Tq, Tk), valid_lens=call.valid_lens,
                                    is_causal=call.is_causal and not kernel_causal, device=query.device)
        # Both big buffers exist before any per-group tensor: later allocations then reuse the memory the groups
        # free, instead of landing above it (glibc keeps freed heap memory resident, so it would count).
        output = query.new_empty(B * Tq, self.d_model)  # (B*Tq, D): the output projection writes here
        merged = query.new_empty(B, Tq, H, Dh)  # (B, Tq, H, Dh): the merged heads, filled group by group
        group = min(H, self.policy.group_heads)
        for h0 in range(0, H, group):
            heads, rows = slice(h0, h0 + group), slice(h0 * Dh, min(H, h0 + group) * Dh)
            q, k, v = (self._project_rows(x, i, rows).view(B, x.shape[1], -1, Dh).transpose(1, 2)
                       for i, x in enumerate((query, key, value)))  # (B, g, T, Dh) each
            mask = _heads_mask(lengths_causal, call.mask, heads)  # (B|1, g|1, Tq, Tk), or None
            context = fused_attention(q, k, v, mask, is_causal=kernel_causal, dropout_p=self.dropout,
                                      training=self.training)  # (B, g, Tq, Dh)
            merged[:, :, heads] = context.transpose(1, 2)
        flat = merged.view(B * Tq, self.d_model)  # (B*Tq, D)
        weight, bias = self.out_proj.weight, self.out_proj.bias
        if bias is None:
            torch.mm(flat, weight.t(), out=output)
        else:
            torch.addmm(bias, flat, weight.t(), out=output)
        return AttentionOutput(output.view(B, Tq, self.d_model), None)  # (B, Tq, D)

    def _forward_traced(self, call: _Call, cache: KVCache | None, need_weights: bool, tracer: Trace) -> AttentionOutput:
        """The explicit path split where a learner wants to see a shape, recording each step in ``tracer``.

        The same calls as :meth:`_forward_explicit` (tests hold the outputs equal), kept apart so that the other
        paths pay nothing for tracing.
        """
        cross = not call.is_self
        _record(tracer, query_input=call.query, key_input=call.key if cross else None,
                value_input=call.value if cross else None)
        mask = self._combined_mask(call, kernel_causal=False)  # broadcastable to (B, H, Tq, Tk), or None
        q, k, v = self._project(*self._zero_unused(call, mask, cache), call.is_self, skip_kv=call.static_hit)
        _record(tracer, q_proj=q, k_proj=k, v_proj=v)  # (B, T, D) each
        q, k, v = self._split_heads(call, q, k, v)  # (B, H, T, Dh) each
        _record(tracer, q_heads=q, k_heads=k, v_heads=v)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H, Tk, Dh): the cached keys, then the new ones
            _record(tracer, k_cached=k, v_cached=v)
        context, weights = self._attend_explicit(q, k, v, mask, tracer)  # records scores .. weights
        merged = context.transpose(1, 2).flatten(2)  # (B, Tq, H * Dh = D): the heads concatenated
        output = self.out_proj(merged)  # (B, Tq, D)
        _record(tracer, context=context, merged=merged, output=output)
        return AttentionOutput(output, weights if need_weights else None)

    # ---------------------------------------------------------------------------------- shared steps
    def _resolve(self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None, *,
                 valid_lens: torch.Tensor | None, mask: torch.Tensor | None, is_causal: bool,
                 cache: KVCache | None) -> _Call:
        """The call's inputs, checked: ``key`` defaults to ``query`` and ``value`` to ``key``."""
        is_self = key is None
        if is_self:
            if value is not None:
                raise ValueError("MultiHeadAttention: value was given without key; pass key too (or neither "
                                 "for self-attention)")
            key = value = query
        elif value is None:
            value = key
        static_hit = cache is not None and cache.static and cache.filled
        self._check_inputs(query, key, value, skip_kv=static_hit or (is_self and self.same_dims))
        B, Tq, _ = query.shape
        Tk = (0 if cache is None else len(cache)) + (0 if static_hit else key.shape[1])
        return _Call(query, key, value, is_self, static_hit, B, Tq, Tk, valid_lens, self._check_mask(mask, B, Tq, Tk),
                     is_causal)

    def _combined_mask(self, call: _Call, kernel_causal: bool) -> torch.Tensor | None:
        """Lengths, the explicit mask and causality as one boolean mask broadcastable to ``(B, H, Tq, Tk)``.

        Causality is left out where the kernel applies it (``kernel_causal``) and for one query, which may see every
        key (the cache's and its own)."""
        Tq = call.num_queries
        return build_mask((call.batch, self.num_heads, Tq, call.num_keys), valid_lens=call.valid_lens,
                          mask=call.mask, is_causal=call.is_causal and not kernel_causal and Tq > 1,
                          device=call.query.device)

    def _zero_unused(self, call: _Call, mask: torch.Tensor | None,
                     cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """query, key, value with the rows no output depends on (padding) zeroed, as :func:`zero_unused_inputs`.

        Before the projections, or NaN there reaches the weight gradient (0 * nan). Not with a cache: it keeps this
        call's keys for later queries, which may see them."""
        if cache is None and (call.valid_lens is not None or call.mask is not None):
            return zero_unused_inputs(call.query, call.key, call.value, mask)
        return call.query, call.key, call.value

    def _heads(self, call: _Call, mask: torch.Tensor | None,
               cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q ``(B, H, Tq, Dh)``, K and V ``(B, H, Tk, Dh)``: projected, split into heads, after the cached ones."""
        q, k, v = self._project(*self._zero_unused(call, mask, cache), call.is_self, skip_kv=call.static_hit)
        q, k, v = self._split_heads(call, q, k, v)  # (B, H, T, Dh) each; no k, v on a static cache hit
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H, Tk, Dh): the cached keys, then the new ones
            if _zeroed(cache):  # a cross-attention cache zeroes its padding keys once, not at every step
                k, v = cache.without_unreachable(mask)
        return q, k, v

    def _split_heads(self, call: _Call, q: torch.Tensor, k: torch.Tensor | None,
                     v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Q ``(B, Tq, D)`` -> ``(B, H, Tq, Dh)``, K and V likewise (``None`` on a static cache hit: no new keys)."""
        B, H, Dh = call.batch, self.num_heads, self.head_dim
        q = q.view(B, call.num_queries, H, Dh).transpose(1, 2)  # (B, H, Tq, Dh)
        if k is None:
            return q, None, None
        T = k.shape[1]
        return q, k.view(B, T, H, Dh).transpose(1, 2), v.view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh) x2

    def _attend_explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                         tracer: Trace | None = None, keys_zeroed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``(B, H, Tq, Dh)`` and weights ``(B, H, Tq, Tk)``, after any weights hooks."""
        context, weights = explicit_attention(q, k, v, mask, dropout_p=self.dropout, training=self.training,
                                              tracer=tracer, keys_zeroed=keys_zeroed)  # (B, H, Tq, Dh|Tk)
        if self._has_weights_hooks():  # explanation: a replacement mixes the values in place of the softmax
            given, weights = weights, self._run_weights_hooks(weights)
            if weights is not given:
                attn = F.dropout(weights, p=self.dropout, training=self.training)  # identity in eval mode
                context = attn @ zero_unreachable(k, v, mask)[1]  # (B, H, Tq, Dh)
        return context, weights

    def _project_rows(self, x: torch.Tensor, i: int, rows: slice) -> torch.Tensor:
        """Projection ``i`` (0 query, 1 key, 2 value) restricted to output features ``rows``."""
        weight, bias = self._weight(i)
        return F.linear(x, weight[rows], None if bias is None else bias[rows])

    # --------------------------------------------------------------------------------------- internals
    def _check_mask(self, mask: torch.Tensor | None, B: int, Tq: int, Tk: int) -> torch.Tensor | None:
        """Validate ``mask``; a ``(B, Tq, Tk)`` one gets a head dim."""
        if mask is None:
            return None
        check_mask(mask, (B, Tq, Tk) if mask.dim() == 3 else (B, self.num_heads, Tq, Tk))
        return mask.unsqueeze(1) if mask.dim() == 3 else mask  # (B, 1, Tq, Tk) or as given

    def _check_inputs(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, skip_kv: bool) -> None:
        """``skip_kv``: key and value are unused (a static cache hit) or are the query, already checked."""
        check_float3d("query", query, self.d_model)
        if skip_kv:
            return
        check_float3d("key", key, self.kdim)
        check_float3d("value", value, self.vdim)
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(f"query/key/value: batch sizes differ: {query.shape[0]}, {key.shape[0]}, "
                             f"{value.shape[0]}")
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"key/value: need one value per key, got {key.shape[1]} keys and {value.shape[1]} values")

    def _weight(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of projection ``i`` (0 = query, 1 = key, 2 = value)."""
        D = self.d_model
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * D:(i + 1) * D]
        if self.same_dims:
            return self.in_proj_weight[i * D:(i + 1) * D], b
        return (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i], b

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_self: bool,
                 skip_kv: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Q, K, V ``(B, T, D)``; one fused matmul for self-attention, two when key is value."""
        if skip_kv:
            return F.linear(query, *self._weight(0)), None, None
        if is_self and self.same_dims:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # (B, T, D) x3
            return q, k, v
        q = F.linear(query, *self._weight(0))
        if key is value and self.same_dims:
            D = self.d_model
            b = None if self.in_proj_bias is None else self.in_proj_bias[D:]
            k, v = F.linear(key, self.in_proj_weight[D:], b).chunk(2, dim=-1)  # (B, Tk, D) x2
            return q, k, v
        return q, F.linear(key, *self._weight(1)), F.linear(value, *self._weight(2))

    # --------------------------------------------------------------------------------------- interop
    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy an ``nn.MultiheadAttention`` (``batch_first`` or not; our module is always batch-first)."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"from_torch: expected torch.nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("from_torch: add_bias_kv and add_zero_attn are not supported by attnlab's "
                             "MultiHeadAttention")
        ref = module.out_proj.weight
        new = cls(module.embed_dim, module.num_heads, dropout=module.dropout, bias=module.in_proj_bias is not None,
                  kdim=module.kdim, vdim=module.vdim, device=ref.device, dtype=ref.dtype)
        new.load_state_dict(_torch_state(module))
        return new

    def to_torch(self, batch_first: bool = True) -> nn.MultiheadAttention:
        """An equivalent ``nn.MultiheadAttention`` with copied weights."""
        ref = self.out_proj.weight
        module = nn.MultiheadAttention(self.d_model, self.num_heads, dropout=self.dropout,
                                       bias=self.in_proj_bias is not None, kdim=self.kdim, vdim=self.vdim,
                                       batch_first=batch_first, device=ref.device, dtype=ref.dtype)
        module.load_state_dict(self.state_dict(), strict=False)
        return module


def _zeroed(cache: KVCache | None) -> bool:
    """Whether the keys and values read from ``cache`` have their unreachable rows zeroed already (static caches)."""
    return cache is not None and cache.static


def _heads_mask(lengths_causal: torch.Tensor | None, mask: torch.Tensor | None,
                heads: slice) -> torch.Tensor | None:
    """The head-group path's mask for ``heads``: lengths and causality (one for all heads) and the checked ``mask``."""
    if mask is None:
        return lengths_causal
    per_head = mask.dim() == 4 and mask.shape[1] != 1  # (B, H, Tq, Tk): this group's heads only
    part = mask[:, heads] if per_head else mask
    return part if lengths_causal is None else lengths_causal & part


def _record(tracer: Trace, **steps: torch.Tensor | None) -> None:
    """Record ``steps`` in order, skipping the ``None`` ones (no new keys on a static cache hit, self-attention)."""
    for name, tensor in steps.items():
        if tensor is not None:
            tracer.record(name, tensor)


def _torch_state(module: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    names = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
             "out_proj.weight", "out_proj.bias")
    state = module.state_dict()
    return {n: state[n] for n in names if state.get(n) is not None}
