"""``attnlab trace``: print every tensor shape inside one multi-head attention call."""

from __future__ import annotations

import argparse

from attnlab.cli._run_options import int_arg
from attnlab.core.errors import ConfigError, short_repr

LEGEND = "B batch, H heads, Tq query length, Tk key length, D model dim, Dh = D/H head dim"

MAX_TRACE_BYTES = 2**32
"""The most memory one traced call may take (4 GiB): the shapes it prints do not need large sizes, so sizes beyond
this are refused before anything is allocated."""

_FLAGS = {"d_model": "--d-model", "heads": "--heads", "batch": "--batch", "seq": "--seq", "kv_seq": "--kv-seq"}


def estimated_bytes(d_model: int, heads: int, batch: int, seq: int, kv_seq: int) -> int:
    """float32 bytes of one traced multi-head attention call, from its sizes alone: the four D x D projections, the
    inputs, projections and outputs (about 5 tensors of B x T x D) and the scores, weights and mask (B x H x Tq x Tk
    each)."""
    weights = 4 * d_model * d_model + 4 * d_model
    activations = 5 * batch * (seq + kv_seq) * d_model
    scores = 3 * batch * heads * seq * kv_seq
    return 4 * (weights + activations + scores)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="show the shape of every step inside multi-head attention",
                       description="Run one multi-head attention call on random inputs and print each named step "
                                   "with its symbolic and concrete shape and what it does. Sizes that would need "
                                   f"more than {MAX_TRACE_BYTES // 2**30} GiB are refused.")
    p.add_argument("--d-model", type=int_arg, default=512, help="model dimension D (default 512)")
    p.add_argument("--heads", type=int_arg, default=8, help="number of heads H; must divide D (default 8)")
    p.add_argument("--batch", type=int_arg, default=2, help="batch size B (default 2)")
    p.add_argument("--seq", type=int_arg, default=10, help="query length Tq (default 10)")
    p.add_argument("--kv-seq", type=int_arg, default=None,
                   help="key/value length Tk: given = cross-attention over a second sequence; omitted = self-attention")
    p.add_argument("--causal", action="store_true", help="mask future positions (decoder self-attention)")
    p.set_defaults(func=run)


def _check_sizes(args: argparse.Namespace) -> None:
    """Positive sizes, heads dividing D, and a call that fits in :data:`MAX_TRACE_BYTES` -- before allocating."""
    sizes = {name: getattr(args, name) for name in _FLAGS}
    if sizes["kv_seq"] is None:
        del sizes["kv_seq"]
    for name, value in sizes.items():
        if value <= 0:
            raise ConfigError(f"{_FLAGS[name]} must be a positive integer, got {short_repr(value)}")
    if args.d_model % args.heads:
        raise ConfigError(f"--d-model {short_repr(args.d_model)} is not divisible by --heads {short_repr(args.heads)}; "
                          f"choose a number of heads that divides the model dimension")

    def need(**changes: int) -> int:
        values = {**sizes, **changes}
        return estimated_bytes(values["d_model"], values["heads"], values["batch"], values["seq"],
                               values.get("kv_seq", values["seq"]))

    total = need()
    if total > MAX_TRACE_BYTES:
        largest = min(sizes, key=lambda name: need(**{name: 1}))  # the size whose cut to 1 saves the most
        raise ConfigError(f"{_FLAGS[largest]} {short_repr(sizes[largest])}: this call would need about {total:.2g} "
                          f"bytes, more than the {MAX_TRACE_BYTES // 2**30} GiB `attnlab trace` allows; the shapes "
                          f"it prints are the same with small sizes")


def run(args: argparse.Namespace) -> int:
    import torch

    from attnlab.attention import MultiHeadAttention, trace

    _check_sizes(args)
    gen = torch.Generator().manual_seed(0)
    mha = MultiHeadAttention(args.d_model, args.heads).eval()
    x = torch.randn(args.batch, args.seq, args.d_model, generator=gen)
    memory = None if args.kv_seq is None else torch.randn(args.batch, args.kv_seq, args.d_model, generator=gen)
    with torch.no_grad(), trace() as t:
        mha(x, memory, is_causal=args.causal)
    kind = "self-attention" if memory is None else "cross-attention"
    tk = args.seq if memory is None else args.kv_seq
    print(f"{kind}{' (causal)' if args.causal else ''}: B={args.batch}, Tq={args.seq}, Tk={tk}, "
          f"D={args.d_model}, H={args.heads}, Dh={args.d_model // args.heads}")
    print(f"legend: {LEGEND}\n")
    print(t.table())
    return 0
