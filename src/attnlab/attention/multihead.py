"""Multi-head attention (Vaswani et al., 2017, section 3.2.2) with masks, a fused fast path and a KV cache.

Parameters follow ``torch.nn.MultiheadAttention``'s layout (``in_proj_weight`` when query, key and value
sizes are equal; separate ``q/k/v_proj_weight`` otherwise; ``out_proj``), so weights convert both ways
(:meth:`MultiHeadAttention.from_torch`, :meth:`MultiHeadAttention.to_torch`).

Differences from PyTorch, by design: tensors are always batch-first; masks are boolean with ``True`` = may
attend; a query with no allowed key gets zero weights and a zero context (PyTorch returns NaN there), so
its output is just the output projection's bias.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from attnlab.attention._checks import check_dropout, check_float3d, check_positive
from attnlab.attention.cache import KVCache
from attnlab.attention.functional import (
    build_mask,
    explicit_attention,
    fused_attention,
    zero_unreachable,
    zero_unused_inputs,
)
from attnlab.attention.masks import check_mask
from attnlab.attention.trace import active_trace
from attnlab.core.types import AttentionOutput

# Without weights, score matrices of more than one query with up to this many entries (per batch row and head)
# take the explicit matmul path; larger ones the fused kernel. On this project's 2-core CPU the matmul path beat
# SDPA up to 16 x 16 (benchmarks/attention.py, 2,048-token batches, forward+backward: 0.64-0.78x SDPA's time at
# d_model 128 / 4 heads, 0.82-0.98x at 512 / 8, with or without padding), was tied at 32 x 32 at d_model 512 and
# lost from 64 x 64 there (README, "Attention speed"). Whole Transformer training steps: benchmarks/kernel_threshold.py.
_SMALL_SCORES = 16 * 16
# The same for one-query steps (KV-cached decoding). 0: every step takes the kernel. Sending the steps to the plain
# path instead (256) measured no clear difference in greedy and beam-5 decoding: 0.88-1.19x the time over five
# runs of benchmarks/kernel_threshold.py, so the kernel stays.
_SMALL_SCORES_ONE_QUERY = 0
# From this many score entries per (batch, head), inference without weights projects and attends a group of
# heads at a time, so only one group's Q, K and V exist at once (peak memory; see benchmarks/attention.py).
_LONG_SCORES = 4096 * 4096
# Heads attended together on that path. One at a time measured lowest (benchmarks/attention.py, 8192 tokens,
# 8 heads): peak 64-71 MiB with glibc's default allocator vs 85 MiB two heads at a time, SDPA alone 64 MiB;
# the per-head projections cost little next to the T^2 attention.
_GROUP_HEADS = 1

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
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
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
        return f"d_model={self.d_model}, num_heads={self.num_heads}, dropout={self.dropout}{dims}"

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
        tracer = active_trace()
        hooked = self._has_weights_hooks()
        if (cache is None and tracer is None and not need_weights and not hooked and not torch.is_grad_enabled()
                and query.dim() == 3 and (key is None or key.dim() == 3)
                and query.shape[1] * (query.shape[1] if key is None else key.shape[1]) >= _LONG_SCORES):
            return self._forward_head_groups(query, key, value, valid_lens=valid_lens, mask=mask, is_causal=is_causal)
        # 1. Resolve self/cross attention and validate.
        is_self = key is None
        if is_self:
            if value is not None:
                raise ValueError("MultiHeadAttention: value was given without key; pass key too (or neither "
                                 "for self-attention)")
            key = value = query
        elif value is None:
            value = key
        static_hit = cache is not None and cache.static and cache.filled
        self._check_inputs(query, key, value, static_hit)
        B, Tq, _ = query.shape
        H, Dh = self.num_heads, self.head_dim
        Tk = (0 if cache is None else len(cache)) + (0 if static_hit else key.shape[1])
        if tracer is not None:
            tracer.record("query_input", query)
            if not is_self:
                tracer.record("key_input", key)
                tracer.record("value_input", value)

        # 2. One boolean mask from lengths, the explicit mask and causality; the kernel choice.
        combined, use_kernel, kernel_causal = self._mask_and_kernel(
            B, Tq, Tk, valid_lens=valid_lens, mask=mask, is_causal=is_causal,
            explicit=need_weights or tracer is not None or hooked, device=query.device)
        # Rows no output depends on (padding) become zeros before they are projected, or NaN there reaches the weight
        # gradient (0 * nan). Not with a cache: it keeps this call's keys for later queries, which may see them.
        if cache is None and (valid_lens is not None or mask is not None):
            query, key, value = zero_unused_inputs(query, key, value, combined)

        # 3. Project and split into heads.
        q, k, v = self._project(query, key, value, is_self, skip_kv=static_hit)  # (B, T, D) each
        if tracer is not None:
            tracer.record("q_proj", q)
            if k is not None:
                tracer.record("k_proj", k)
                tracer.record("v_proj", v)
        q = q.view(B, Tq, H, Dh).transpose(1, 2)  # (B, H, Tq, Dh)
        if k is not None:
            k = k.view(B, k.shape[1], H, Dh).transpose(1, 2)  # (B, H, Tk, Dh)
            v = v.view(B, v.shape[1], H, Dh).transpose(1, 2)  # (B, H, Tk, Dh)
        if tracer is not None:
            tracer.record("q_heads", q)
            if k is not None:
                tracer.record("k_heads", k)
                tracer.record("v_heads", v)

        # 4. Incremental decoding: append to (or read from) the cache.
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H, Tk, Dh): the cached keys, then the new ones
            if tracer is not None:
                tracer.record("k_cached", k)
                tracer.record("v_cached", v)

        # 5. Attention.
        weights = None
        if use_kernel:
            context = fused_attention(q, k, v, combined, is_causal=kernel_causal, dropout_p=self.dropout,
                                      training=self.training)  # (B, H, Tq, Dh)
        else:
            context, weights = explicit_attention(q, k, v, combined, dropout_p=self.dropout, training=self.training,
                                                  tracer=tracer)  # (B, H, Tq, Dh), (B, H, Tq, Tk)
            if hooked:  # weights hooks (explanation): a replacement mixes the values in place of the softmax
                given, weights = weights, self._run_weights_hooks(weights)
                if weights is not given:
                    attn = F.dropout(weights, p=self.dropout, training=self.training)  # identity in eval mode
                    context = attn @ zero_unreachable(k, v, combined)[1]  # (B, H, Tq, Dh)
        if tracer is not None:
            tracer.record("context", context)

        # 6. Merge heads and project out.
        merged = context.transpose(1, 2).reshape(B, Tq, self.d_model)  # (B, Tq, D)
        output = self.out_proj(merged)  # (B, Tq, D)
        if tracer is not None:
            tracer.record("merged", merged)
            tracer.record("output", output)
        return AttentionOutput(output, weights if need_weights else None)

    def _forward_head_groups(self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None, *,
                             valid_lens: torch.Tensor | None, mask: torch.Tensor | None,
                             is_causal: bool) -> AttentionOutput:
        """Long-sequence inference: the same result as :meth:`forward`, one group of heads (``_GROUP_HEADS``) at a time.

        Each group's context is written straight into the merged ``(B, Tq, D)`` buffer, so the peak holds the
        input, that buffer and one group's Q/K/V -- not all heads' Q/K/V plus a separate context. In train mode the
        attention dropout is applied as in :meth:`forward`, but each group draws its own mask (one kernel call per
        group), so a seed is sure to give forward's exact output only with a single group; the distribution is the same.
        Padding rows are not zeroed before the projections as in :meth:`forward`: no gradient is taken here, and
        :func:`fused_attention` keeps them out of the output.
        """
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value, static_hit=False)
        B, Tq, _ = query.shape
        Tk, H, Dh = key.shape[1], self.num_heads, self.head_dim
        mask = self._check_mask(mask, B, Tq, Tk)
        kernel_causal = is_causal and valid_lens is None and mask is None and Tq == Tk
        combined = build_mask((B, 1, Tq, Tk), valid_lens=valid_lens, is_causal=is_causal and not kernel_causal,
                              device=query.device)
        # Both big buffers exist before any per-group tensor: later allocations then reuse the memory the groups
        # free, instead of landing above it (glibc keeps freed heap memory resident, so it would count).
        output = query.new_empty(B * Tq, self.d_model)  # (B*Tq, D): the output projection writes here
        merged = query.new_empty(B, Tq, H, Dh)  # (B, Tq, H, Dh): the merged heads, filled group by group
        group = min(H, _GROUP_HEADS)
        for h0 in range(0, H, group):
            rows = slice(h0 * Dh, min(H, h0 + group) * Dh)
            q, k, v = (self._project_rows(x, i, rows).view(B, x.shape[1], -1, Dh).transpose(1, 2)
                       for i, x in enumerate((query, key, value)))  # (B, g, T, Dh) each
            group_mask = combined
            if mask is not None:
                per_head = mask.dim() == 4 and mask.shape[1] != 1  # (B, H, Tq, Tk): this group's heads only
                part = mask[:, h0:h0 + group] if per_head else mask
                group_mask = part if group_mask is None else group_mask & part
            context = fused_attention(q, k, v, group_mask, is_causal=kernel_causal, dropout_p=self.dropout,
                                      training=self.training)  # (B, g, Tq, Dh)
            merged[:, :, h0:h0 + group] = context.transpose(1, 2)
        flat = merged.view(B * Tq, self.d_model)
        weight, bias = self.out_proj.weight, self.out_proj.bias
        if bias is None:
            torch.mm(flat, weight.t(), out=output)
        else:
            torch.addmm(bias, flat, weight.t(), out=output)
        return AttentionOutput(output.view(B, Tq, self.d_model), None)  # (B, Tq, D)

    def _project_rows(self, x: torch.Tensor, i: int, rows: slice) -> torch.Tensor:
        """Projection ``i`` (0 query, 1 key, 2 value) restricted to output features ``rows``."""
        weight, bias = self._weight(i)
        return F.linear(x, weight[rows], None if bias is None else bias[rows])

    # --------------------------------------------------------------------------------------- internals
    def _mask_and_kernel(self, B: int, Tq: int, Tk: int, *, valid_lens: torch.Tensor | None,
                         mask: torch.Tensor | None, is_causal: bool, explicit: bool,
                         device: torch.device) -> tuple[torch.Tensor | None, bool, bool]:
        """The combined mask (broadcastable to ``(B, H, Tq, Tk)``, or ``None``), whether the fused kernel runs, and
        whether that kernel is told about causality itself."""
        mask = self._check_mask(mask, B, Tq, Tk)
        # Explicit math when weights are wanted (or traced) and for small multi-query score matrices; else the fused
        # kernel, which is also told about causality directly when nothing else is masked (no (Tq, Tk) mask built).
        small = _SMALL_SCORES if Tq > 1 else _SMALL_SCORES_ONE_QUERY
        use_kernel = not explicit and Tq * Tk > small
        kernel_causal = use_kernel and is_causal and valid_lens is None and mask is None and Tq == Tk
        build_causal = is_causal and not kernel_causal and Tq > 1  # one new query may see the whole cache
        combined = build_mask((B, self.num_heads, Tq, Tk), valid_lens=valid_lens, mask=mask, is_causal=build_causal,
                              device=device)
        return combined, use_kernel, kernel_causal

    def _check_mask(self, mask: torch.Tensor | None, B: int, Tq: int, Tk: int) -> torch.Tensor | None:
        """Validate ``mask``; a ``(B, Tq, Tk)`` one gets a head dim."""
        if mask is None:
            return None
        check_mask(mask, (B, Tq, Tk) if mask.dim() == 3 else (B, self.num_heads, Tq, Tk))
        return mask.unsqueeze(1) if mask.dim() == 3 else mask  # (B, 1, Tq, Tk) or as given

    def _check_inputs(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, static_hit: bool) -> None:
        check_float3d("query", query, self.d_model)
        if static_hit:
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


def _torch_state(module: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    names = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
             "out_proj.weight", "out_proj.bias")
    state = module.state_dict()
    return {n: state[n] for n in names if state.get(n) is not None}
