"""Training's three CPU hot spots, attnlab's way against PyTorch's: dropout, bf16 attention, the loss's rows.

Run: .venv/bin/python benchmarks/train_kernels.py [--threads 1] [--tokens 2048] [--vocab 7795] [--repeats 15]

At Transformer-tiny's training shapes (a rank's share of a 4,096-token Multi30k batch: ``--tokens`` rows of
d_model 128, 4 heads of 32, a 7.8k vocabulary), each row times forward plus backward, medians of interleaved
repeats, and prints attnlab's time as a ratio to PyTorch's (below 1: faster):

* dropout: ``F.dropout`` (its ``bernoulli_`` mask) against :func:`attnlab.attention.dropout.dropout`, float32 and
  bfloat16 activations;
* attention: ``F.scaled_dot_product_attention`` on bfloat16 heads (what autocast gives it) against attnlab's
  ``fused_attention``, which attends in float32 under autograd on the CPU, at three batch shapes of the corpus;
* loss: :func:`attnlab.train.loss.linear_cross_entropy` under bf16 autocast with the compiled row kernel
  (``attention/kernels.c``) against the same function on PyTorch's operators (``native.cross_entropy_rows``
  declined).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median_times  # noqa: E402

from attnlab.attention import native  # noqa: E402
from attnlab.attention.dropout import dropout  # noqa: E402
from attnlab.attention.functional import fused_attention  # noqa: E402
from attnlab.train.allocator import keep_freed_memory  # noqa: E402
from attnlab.train.loss import linear_cross_entropy  # noqa: E402

# (sentences, heads, length, head size): the padded shapes of three bucketed 2,048-token shares of Multi30k batches
ATTENTION_SHAPES = ((107, 4, 19, 32), (136, 4, 15, 32), (186, 4, 11, 32))


def fwd_bwd(make: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    def step() -> None:
        for t in inputs:
            t.grad = None
        out = make()
        out.backward(torch.ones_like(out))
    return step


def rows(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.tokens, 128, dtype=dtype, requires_grad=True)
        t = median_times({"torch": fwd_bwd(lambda x=x: F.dropout(x, 0.3, True), (x,)),
                          "attnlab": fwd_bwd(lambda x=x: dropout(x, 0.3), (x,))}, repeats=args.repeats)
        out.append((f"dropout 0.3, ({args.tokens}, 128) {str(dtype)[6:]}", t["torch"], t["attnlab"]))
    for B, H, T, Dh in ATTENTION_SHAPES:
        q, k, v = (torch.randn(B, H, T, Dh, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
        mask[::3, ..., T // 2:] = False  # key padding in every third sentence
        t = median_times({
            "torch": fwd_bwd(lambda q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                             (q, k, v)),
            "attnlab": fwd_bwd(lambda q=q, k=k, v=v, m=mask: fused_attention(q, k, v, m, training=True), (q, k, v)),
        }, repeats=args.repeats)
        out.append((f"attention bf16, heads ({B}, {H}, {T}, {Dh}), key padding", t["torch"], t["attnlab"]))
    hidden = torch.randn(args.tokens, 128, requires_grad=True)
    weight = (torch.randn(args.vocab, 128) * 0.1).requires_grad_()
    target = torch.randint(1, args.vocab, (args.tokens,))

    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return linear_cross_entropy(hidden, weight, target, label_smoothing=0.1)[0]

    def loss_torch() -> torch.Tensor:
        with mock.patch.object(native, "cross_entropy_rows", lambda *a, **k: None):
            return loss()

    t = median_times({"torch": fwd_bwd(loss_torch, (hidden, weight)), "attnlab": fwd_bwd(loss, (hidden, weight))},
                     repeats=args.repeats)
    out.append((f"loss, ({args.tokens}, 128) x ({args.vocab}, 128) bf16, smoothing 0.1", t["torch"], t["attnlab"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=7795)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as attnlab train does
    torch.manual_seed(0)
    print(environment())
    print(f"compiled kernels: {native.status()}")
    print(f"{'forward + backward':<64} {'PyTorch ms':>10} {'attnlab ms':>10} {'ratio':>6}")
    for name, ref, ours in rows(args):
        print(f"{name:<64} {ref * 1e3:>10.2f} {ours * 1e3:>10.2f} {ours / ref:>6.2f}")


if __name__ == "__main__":
    main()
