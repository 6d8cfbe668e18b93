"""Training's three CPU hot spots, attnlab's way against PyTorch's: dropout, bf16 attention, the loss's rows.

Run: .venv/bin/python benchmarks/train_kernels.py [--threads 1] [--tokens 2048] [--vocab 7795] [--repeats 15]

At Transformer-tiny's training shapes (a rank's share of a 4,096-token Multi30k batch: ``--tokens`` rows of
d_model 128, 4 heads of 32, a 7.8k vocabulary), each row times forward plus backward, medians of interleaved
repeats, and prints attnlab's time as a ratio to PyTorch's (below 1: faster), and the memory each holds from
the forward pass to the backward pass (the output and what autograd saved; glibc's in-use bytes after forward
minus before, so Linux only):

* dropout: ``F.dropout`` (its ``bernoulli_`` mask) against :func:`attnlab.attention.dropout.dropout`, float32 and
  bfloat16 activations, and the feed-forward layer's ReLU then dropout against ``relu_dropout`` (one saved mask);
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
from attnlab.attention.dropout import dropout, relu_dropout  # noqa: E402
from attnlab.attention.functional import fused_attention  # noqa: E402
from attnlab.train.allocator import heap_bytes_in_use, keep_freed_memory  # noqa: E402
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


def held(make: Callable[[], torch.Tensor]) -> float:
    """MiB in use after ``make()`` (its output alive, so what autograd saved for backward too) minus before."""
    before = heap_bytes_in_use()
    if before is None:
        return float("nan")
    out = make()
    after = heap_bytes_in_use()
    del out
    return (after - before) / 2 ** 20


def measure(name: str, fns: dict[str, Callable[[], torch.Tensor]], inputs: tuple[torch.Tensor, ...],
            repeats: int) -> tuple[str, float, float, float, float]:
    t = median_times({k: fwd_bwd(f, inputs) for k, f in fns.items()}, repeats=repeats)
    return name, t["torch"], t["attnlab"], held(fns["torch"]), held(fns["attnlab"])


def rows(args: argparse.Namespace) -> list[tuple[str, float, float, float, float]]:
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.tokens, 128, dtype=dtype, requires_grad=True)
        out.append(measure(f"dropout 0.3, ({args.tokens}, 128) {str(dtype)[6:]}",
                           {"torch": lambda x=x: F.dropout(x, 0.3, True), "attnlab": lambda x=x: dropout(x, 0.3)},
                           (x,), args.repeats))
    x = torch.randn(args.tokens, 256, dtype=torch.bfloat16, requires_grad=True)  # the FFN's hidden layer
    out.append(measure(f"ReLU + dropout 0.3, ({args.tokens}, 256) bfloat16",
                       {"torch": lambda x=x: F.dropout(F.relu(x), 0.3, True),
                        "attnlab": lambda x=x: relu_dropout(x, 0.3)},
                       (x,), args.repeats))
    for B, H, T, Dh in ATTENTION_SHAPES:
        q, k, v = (torch.randn(B, H, T, Dh, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
        mask[::3, ..., T // 2:] = False  # key padding in every third sentence
        out.append(measure(f"attention bf16, heads ({B}, {H}, {T}, {Dh}), key padding", {
            "torch": lambda q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
            "attnlab": lambda q=q, k=k, v=v, m=mask: fused_attention(q, k, v, m, training=True),
        }, (q, k, v), args.repeats))
    hidden = torch.randn(args.tokens, 128, requires_grad=True)
    weight = (torch.randn(args.vocab, 128) * 0.1).requires_grad_()
    target = torch.randint(1, args.vocab, (args.tokens,))

    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return linear_cross_entropy(hidden, weight, target, label_smoothing=0.1)[0]

    def loss_torch() -> torch.Tensor:
        with mock.patch.object(native, "cross_entropy_rows", lambda *a, **k: None):
            return loss()

    out.append(measure(f"loss, ({args.tokens}, 128) x ({args.vocab}, 128) bf16, smoothing 0.1",
                       {"torch": loss_torch, "attnlab": loss}, (hidden, weight), args.repeats))
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
    print(f"{'forward + backward':<64} {'PyTorch ms':>10} {'attnlab ms':>10} {'ratio':>6} "
          f"{'held MiB: PyTorch':>17} {'attnlab':>7}")
    for name, ref, ours, held_ref, held_ours in rows(args):
        print(f"{name:<64} {ref * 1e3:>10.2f} {ours * 1e3:>10.2f} {ours / ref:>6.2f} "
              f"{held_ref:>17.2f} {held_ours:>7.2f}")


if __name__ == "__main__":
    main()
