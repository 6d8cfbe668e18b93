"""attnlab's compiled Transformer layers against the same layers on PyTorch's operators, at inference shapes.

Run: .venv/bin/python benchmarks/compiled_layers.py [--threads 1] [--repeats 30]

An encoder layer (``TransformerEncoderLayer.compiled_forward`` against the layer's own forward) over padded
batches, lengths drawn between half the padded length and all of it; and a decoder layer's decoding step
(``TransformerDecoderLayer.step`` with the compiled step, against the same step with the compiled step declined)
with ``T`` cached positions over a memory of ``Ts`` positions. Eval mode, ``torch.inference_mode``, random weights,
pre-LN. The two paths of each row alternate call by call (``benchmarks/_timing.median_times``), ``--repeats`` calls
each; medians. The ratio is PyTorch's time over the compiled one's (above 1: the compiled layer is faster), and the
largest difference between the two outputs is printed beside it. The kernels' status is printed first: without a
C compiler or without PyTorch's ``sgemm_``, there is nothing to compare and the script says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median_times  # noqa: E402

from attnlab.attention import KVCache, native  # noqa: E402
from attnlab.models.transformer import TransformerDecoderLayer, TransformerEncoderLayer  # noqa: E402

# (d_model, heads, FFN, activation, batch, padded length): Transformer-tiny's batches, longer sources, wider models.
ENCODER_SHAPES = [(128, 4, 256, "relu", 64, 20), (128, 4, 256, "relu", 64, 50), (128, 4, 256, "relu", 32, 128),
                  (128, 4, 256, "relu", 8, 512), (256, 4, 1024, "relu", 64, 20), (512, 8, 2048, "relu", 32, 40),
                  (128, 4, 256, "gelu", 64, 20), (192, 6, 384, "gelu", 128, 50)]
# (d_model, heads, FFN, activation, rows, beams, cached positions T, memory positions Ts)
DECODER_SHAPES = [(128, 4, 256, "relu", 64, 1, 10, 20), (128, 4, 256, "relu", 8, 1, 10, 20),
                  (128, 4, 256, "relu", 320, 5, 10, 20), (128, 4, 256, "relu", 128, 4, 30, 40),
                  (128, 4, 512, "relu", 16, 1, 20, 400), (512, 8, 2048, "relu", 64, 1, 10, 20),
                  (128, 4, 256, "gelu", 64, 1, 10, 20)]


def encoder_row(d: int, heads: int, ffn: int, activation: str, batch: int, length: int, repeats: int) -> str:
    layer = TransformerEncoderLayer(d, heads, ffn, activation=activation).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, d, generator=g)
    lens = torch.randint(length // 2, length + 1, (batch,), generator=g)
    times = median_times({"compiled": lambda: layer.compiled_forward(x, lens), "pytorch": lambda: layer(x, lens)},
                         warmup=3, repeats=repeats)
    diff = (layer.compiled_forward(x, lens) - layer(x, lens).output).abs().max().item()
    return (f"| encoder {d} / {heads} / {ffn} {activation} | {batch} x {length} | {times['pytorch'] * 1e3:,.2f} | "
            f"{times['compiled'] * 1e3:,.2f} | {times['pytorch'] / times['compiled']:.2f} | {diff:.1e} |")


def decoder_row(d: int, heads: int, ffn: int, activation: str, rows: int, beams: int, cached: int, ts: int,
                repeats: int) -> str:
    layer = TransformerDecoderLayer(d, heads, ffn, activation=activation).eval()
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(rows // beams, ts, d, generator=g)
    lens = torch.randint(ts // 2, ts + 1, (rows // beams,), generator=g)
    x = torch.randn(rows, 1, d, generator=g)

    def filled() -> tuple[KVCache, KVCache]:
        self_cache, cross_cache = KVCache(), KVCache(static=True)
        for _ in range(cached):
            layer.step(x, memory, lens, self_cache, cross_cache, beams)
        return self_cache, cross_cache

    compiled_caches, pytorch_caches = filled(), filled()
    compiled_step, declined = layer.compiled_step, (lambda *args: None)

    def run(caches: tuple[KVCache, KVCache], compiled: bool) -> torch.Tensor:
        layer.compiled_step = compiled_step if compiled else declined
        try:
            out = layer.step(x, memory, lens, *caches, beams)
        finally:
            del layer.compiled_step
        for cache in caches[:1]:  # back to T cached positions, so every call sees the same shapes
            cache.key, cache.value = cache.key[:, :, :cached], cache.value[:, :, :cached]
        return out

    paths = {"compiled": lambda: run(compiled_caches, True), "pytorch": lambda: run(pytorch_caches, False)}
    times = median_times(paths, warmup=3, repeats=repeats)
    diff = (run(compiled_caches, True) - run(pytorch_caches, False)).abs().max().item()
    return (f"| decoder step {d} / {heads} / {ffn} {activation} | {rows} rows ({beams} beams), T {cached}, Ts {ts} | "
            f"{times['pytorch'] * 1e3:,.3f} | {times['compiled'] * 1e3:,.3f} | "
            f"{times['pytorch'] / times['compiled']:.2f} | {diff:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="calls of each path, alternating (A B, B A, ...)")
    args = parser.parse_args()
    for name in ("threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    print(environment())
    print(f"# attnlab's compiled kernels: {native.status()}")
    with torch.inference_mode():
        if TransformerEncoderLayer(8, 2, 8).eval().compiled_forward(torch.zeros(1, 2, 8), None) is None:
            print("the compiled layers are not available here: nothing to compare")
            return
        print("| layer (d_model / heads / FFN) | shape | PyTorch ms | compiled ms | PyTorch / compiled "
              "| max abs difference |")
        print("|---|---|---:|---:|---:|---:|")
        for shape in ENCODER_SHAPES:
            print(encoder_row(*shape, args.repeats), flush=True)
        for shape in DECODER_SHAPES:
            print(decoder_row(*shape, args.repeats), flush=True)


if __name__ == "__main__":
    main()
