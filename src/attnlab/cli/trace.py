"""``attnlab trace``: print every tensor shape inside one multi-head attention call."""

from __future__ import annotations

import argparse

from attnlab.core.errors import ConfigError

LEGEND = "B batch, H heads, Tq query length, Tk key length, D model dim, Dh = D/H head dim"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="show the shape of every step inside multi-head attention",
                       description="Run one multi-head attention call on random inputs and print each named step "
                                   "with its symbolic and concrete shape and what it does.")
    p.add_argument("--d-model", type=int, default=512, help="model dimension D (default 512)")
    p.add_argument("--heads", type=int, default=8, help="number of heads H; must divide D (default 8)")
    p.add_argument("--batch", type=int, default=2, help="batch size B (default 2)")
    p.add_argument("--seq", type=int, default=10, help="query length Tq (default 10)")
    p.add_argument("--kv-seq", type=int, default=None,
                   help="key/value length Tk: given = cross-attention over a second sequence; omitted = self-attention")
    p.add_argument("--causal", action="store_true", help="mask future positions (decoder self-attention)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnlab.attention import MultiHeadAttention, trace

    for name in ("d_model", "heads", "batch", "seq"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.kv_seq is not None and args.kv_seq <= 0:
        raise ConfigError(f"--kv-seq must be a positive integer, got {args.kv_seq}")
    if args.d_model % args.heads:
        raise ConfigError(f"--d-model {args.d_model} is not divisible by --heads {args.heads}; "
                          f"choose a number of heads that divides the model dimension")
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
