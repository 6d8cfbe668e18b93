"""Training throughput: attnlab's Transformer and trainer step vs a plain ``torch.nn.Transformer`` loop.

Run: .venv/bin/python benchmarks/train_throughput.py [--threads 2] [--steps 10] [--tokens-per-batch 4096]
     [--sizes base,tiny] [--dtypes fp32,bf16] [--keep-freed-memory] [--no-memory] [--quick]
     [--loss-chunk-tokens N] [--copy]

Data: Multi30k En->De train, attnlab's own data preparation (joint SentencePiece BPE, 8,000 pieces, shared
vocabulary) and :class:`~attnlab.data.batching.BucketedBatches` under ``--tokens-per-batch``, epoch 0 in
its shuffled order: both models train on the *same* batches. If the corpus is missing the script says so
and falls back to random token ids with Multi30k's length distribution.

Models (same size, same init seed; neither is the other's copy):

* ``attnlab``: :class:`attnlab.models.Transformer` (shared source/target embedding, output tied to it,
  sinusoidal positions) trained by :class:`attnlab.train.Trainer`'s own step (``Trainer._train_step``:
  bf16 autocast when asked, label-smoothed masked cross-entropy, backward, gradient clipping at 1.0,
  :func:`attnlab.train.build_optimizer`'s AdamW, the schedule, metrics logging every 10 steps) -- exactly
  what ``attnlab train`` runs per step. Its loss projects the decoder states onto the vocabulary
  ``--loss-chunk-tokens`` target tokens at a time (:func:`attnlab.train.loss.linear_cross_entropy`; default
  the library's :data:`~attnlab.train.loss.LOSS_CHUNK_TOKENS`, 0 = all (B, Tt, V) logits at once). With
  ``--copy`` it is a pointer-generator (``copy=True``, as ``configs/debian-summarization.yaml``), whose loss goes
  a slice of about that many target positions at a time under activation checkpointing
  (:func:`attnlab.train.loss.sliced_cross_entropy`); the torch reference stays a plain Transformer, so compare
  attnlab's columns between ``--loss-chunk-tokens 256`` and ``0``, not the ratio.
* ``torch``: ``torch.nn.Transformer(batch_first=True)`` with the same ``d_model``/heads/FFN/layers/dropout
  and LayerNorm placement, one shared ``nn.Embedding`` scaled by ``sqrt(d_model)``, a sinusoidal table and
  embedding dropout, an output ``nn.Linear`` tied to the embedding; key padding masks for the source, the
  causal mask for the target; ``F.cross_entropy(label_smoothing=0.1, ignore_index=pad)`` summed over tokens
  and divided by their count; ``clip_grad_norm_(1.0)``; ``torch.optim.AdamW`` with its defaults for CPU.

Timing: for each size and dtype, ``--warmup`` batches then ``--steps`` batches; on every batch one step of
each model, the order alternating from batch to batch, so machine noise (this machine is shared) hits both
alike. Reported: median over steps of tokens/s (target tokens = non-padding ``tgt_out`` ids; also source
+ target), and the median over steps of the per-batch ratio ``t_torch / t_attnlab`` (> 1: attnlab faster).

Peak memory: each model once more in a fresh subprocess per size and dtype, on the largest sampled batch:
peak RSS (``VmHWM``) of one training step after a warm-up step (so AdamW's moments already exist), as the
rise above the resident size just before the step, and the process's absolute peak (glibc's default
allocator settings, also under ``--keep-freed-memory``).

``--keep-freed-memory`` (glibc ``mallopt`` through :func:`attnlab.train.allocator.keep_freed_memory`, as
``attnlab train`` does) stops the allocator from handing the logits-sized blocks back to the kernel after every
step; on this VM re-faulting them in costs up to a third of a step, for both models alike. attnlab's chunked
loss has no such blocks (``--loss-chunk-tokens 0`` brings them back).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment  # noqa: E402

from attnlab.attention.positional import sinusoid_table  # noqa: E402
from attnlab.core.model_config import TransformerConfig  # noqa: E402
from attnlab.core.train_config import TrainConfig  # noqa: E402
from attnlab.core.types import Batch  # noqa: E402
from attnlab.data.batching import BucketedBatches  # noqa: E402
from attnlab.models import build_model  # noqa: E402
from attnlab.train import Trainer  # noqa: E402
from attnlab.train.allocator import keep_freed_memory  # noqa: E402
from attnlab.train.loss import LOSS_CHUNK_TOKENS, teacher_forced_loss  # noqa: E402
from attnlab.train.progress import ProgressBar, Throughput  # noqa: E402

PAD_ID = 0
LABEL_SMOOTHING = 0.1
# name -> (d_model, num_heads, ffn_dim, encoder_layers, decoder_layers, dropout)
SIZES = {
    "base": (256, 4, 1024, 3, 3, 0.1),  # the issue's reference size
    "tiny": (128, 4, 256, 4, 4, 0.3),  # Transformer-tiny (Wu et al., 2021), the configs/multi30k-* recipes' size
}


# ------------------------------------------------------------------------------------------------- data
def load_batches(count: int, tokens_per_batch: int, vocab_size: int, seed: int) -> tuple[list[Batch], int, str]:
    """``count`` training batches of Multi30k En->De (or synthetic ones), the vocabulary size, a description."""
    from attnlab.core.errors import AttnlabError
    from attnlab.core.run_config import DataConfig
    from attnlab.data.prepare import prepare_data

    try:
        data = prepare_data(DataConfig(source="multi30k", src_lang="en", tgt_lang="de", vocab_size=vocab_size))
        examples, vocab = data.train_examples, len(data.text.src_vocab)
        what = f"Multi30k en-de train, joint BPE {vocab_size} (vocab {vocab}, shared)"
    except (AttnlabError, OSError) as exc:
        examples, vocab = _synthetic_examples(vocab_size, seed)
        what = f"SYNTHETIC random ids with Multi30k-like lengths (corpus unavailable: {exc})"
    batches = BucketedBatches(examples, tokens_per_batch, seed=seed)
    out = []
    for batch in batches:  # epoch 0 in its shuffled order
        out.append(batch)
        if len(out) == count:
            break
    return out, vocab, what


def _synthetic_examples(vocab_size: int, seed: int) -> tuple[list, int]:
    from attnlab.data.dataset import Example
    from attnlab.data.vocab import EOS_ID

    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(29000):
        ts = int(torch.clamp(torch.normal(14.3, 5.0, (1,), generator=g), 4, 60))
        tt = int(torch.clamp(torch.normal(15.8, 5.5, (1,), generator=g), 4, 60))
        src = torch.randint(4, vocab_size, (ts,), generator=g).tolist()
        tgt = torch.randint(4, vocab_size, (tt - 1,), generator=g).tolist() + [EOS_ID]
        examples.append(Example(src, tgt, i))
    return examples, vocab_size


# ------------------------------------------------------------------------------------ reference model
class TorchReference(nn.Module):
    """A plain ``nn.Transformer`` seq2seq model as one would write it from the PyTorch docs."""

    def __init__(self, vocab: int, d_model: int, heads: int, ffn: int, enc: int, dec: int, dropout: float,
                 norm_first: bool, max_len: int = 512) -> None:
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.embedding = nn.Embedding(vocab, d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.embedding.weight, std=d_model ** -0.5)
        self.register_buffer("positions", sinusoid_table(max_len, d_model), persistent=False)  # (max_len, D)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(d_model, heads, enc, dec, ffn, dropout, batch_first=True,
                                          norm_first=norm_first)
        self.output = nn.Linear(d_model, vocab, bias=False)
        self.output.weight = self.embedding.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(ids) * self.scale + self.positions[: ids.shape[1]])  # (B, T, D)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        src_pad = src == PAD_ID  # (B, Ts), True = padding (PyTorch's convention)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])  # (Tt, Tt)
        hidden = self.transformer(self.embed(src), self.embed(tgt_in), tgt_mask=causal, tgt_is_causal=True,
                                  src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad)  # (B, Tt, D)
        return self.output(hidden)  # (B, Tt, V)


# ------------------------------------------------------------------------------------------ the steps
@dataclass
class Candidates:
    """One training step of each model on a given batch."""

    attnlab: Callable[[Batch], None]
    torch: Callable[[Batch], None]


def make_candidates(size: str, vocab: int, bf16: bool, norm_first: bool, workdir: Path,
                    chunk_tokens: int = LOSS_CHUNK_TOKENS, copy: bool = False) -> Candidates:
    d, h, f, e, dl, p = SIZES[size]
    cfg = TrainConfig(lr=5e-4, warmup_steps=100, max_steps=10**6, label_smoothing=LABEL_SMOOTHING,
                      clip_grad_norm=1.0, bf16=bf16, best_metric="train_loss", log_every=10)
    torch.manual_seed(0)
    # nn.Transformer applies its one dropout rate to the attention weights too: so does attnlab's model here.
    model = build_model(TransformerConfig(d_model=d, num_heads=h, ffn_dim=f, encoder_layers=e, decoder_layers=dl,
                                          dropout=p, attention_dropout=p, norm_first=norm_first,
                                          share_embeddings=True, tie_output=True, copy=copy), vocab, vocab)
    out_dir = Path(tempfile.mkdtemp(prefix=f"attnlab-{size}-", dir=workdir))
    loss = None if chunk_tokens == LOSS_CHUNK_TOKENS else functools.partial(  # None: the trainer's own
        teacher_forced_loss, label_smoothing=LABEL_SMOOTHING, chunk_tokens=chunk_tokens or None)
    trainer = Trainer(model, cfg, _NoBatches(), out_dir, progress=False, loss=loss)
    bar, meter, start = ProgressBar(1, enabled=False), Throughput(), time.perf_counter()

    def attnlab_step(batch: Batch) -> None:
        trainer._train_step(batch, bar, meter, start)  # the trainer's own per-step code  # noqa: SLF001

    torch.manual_seed(0)
    ref = TorchReference(vocab, d, h, f, e, dl, p, norm_first)
    opt = torch.optim.AdamW(ref.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.01)

    def torch_step(batch: Batch) -> None:
        ref.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = ref(batch.src, batch.tgt_in)  # (B, Tt, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID,
                               label_smoothing=LABEL_SMOOTHING, reduction="sum")
        num_tokens = int((batch.tgt_out != PAD_ID).sum())
        (loss / num_tokens).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step()

    return Candidates(attnlab_step, torch_step)


class _NoBatches:
    """The trainer wants a batch source; the benchmark feeds batches to its step directly."""

    epoch = 0

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def state_dict(self) -> dict:
        return {"epoch": 0, "position": 0, "seed": 0}

    def load_state_dict(self, state: dict) -> None:
        pass


def time_steps(cands: Candidates, batches: list[Batch], warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each candidate on each batch after ``warmup``, order alternating per batch."""
    times: dict[str, list[float]] = {"attnlab": [], "torch": []}
    for i, batch in enumerate(batches):
        order = ("attnlab", "torch") if i % 2 == 0 else ("torch", "attnlab")
        for name in order:
            fn = getattr(cands, name)
            t0 = time.perf_counter()
            fn(batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------------------------- memory
_MEM_CHILD = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import train_throughput as tt
which, size, bf16, norm_first, vocab, path, threads, chunk, copy = sys.argv[2:11]
torch.set_num_threads(int(threads))
batch = torch.load(path, weights_only=False)
with __import__("tempfile").TemporaryDirectory() as tmp:
    cands = tt.make_candidates(size, int(vocab), bf16 == "1", norm_first == "1", __import__("pathlib").Path(tmp),
                               int(chunk), copy == "1")
    step = getattr(cands, which)
    step(batch)  # warm-up: kernels, AdamW moments
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM so set-up peaks do not count
        f.write("5")
    before = status("VmRSS")
    step(batch)
    peak = status("VmHWM")
print(json.dumps({"step_mib": (peak - before) / 1024, "peak_mib": peak / 1024}))
"""


def peak_memory(which: str, size: str, bf16: bool, norm_first: bool, vocab: int, batch_path: Path,
                threads: int, chunk_tokens: int, copy: bool = False) -> dict[str, float]:
    """Always with glibc's default allocator settings (``--keep-freed-memory`` would hide the step's peak)."""
    args = [sys.executable, "-c", _MEM_CHILD, str(Path(__file__).resolve().parent), which, size, str(int(bf16)),
            str(int(norm_first)), str(vocab), str(batch_path), str(threads), str(chunk_tokens),
            str(int(copy))]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- main
def cpu_line() -> str:
    flags, name = set(), "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    feats = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(feats) or 'no AVX-512/AMX'}, " \
           f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=10, help="timed batches per size and dtype")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    parser.add_argument("--tokens-per-batch", type=int, default=4096, help="BucketedBatches token budget")
    parser.add_argument("--vocab-size", type=int, default=8000, help="joint BPE pieces")
    parser.add_argument("--sizes", default="base,tiny", help=f"comma-separated from {', '.join(SIZES)}")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated from fp32, bf16 (autocast)")
    parser.add_argument("--post-ln", action="store_true", help="post-LN layers (default: pre-LN, attnlab's)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc mallopt: no mmap for large blocks, no trimming (see keep_freed_memory)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--quick", action="store_true", help="tiny size, fp32 and bf16, 4 steps, no memory")
    parser.add_argument("--loss-chunk-tokens", type=int, default=LOSS_CHUNK_TOKENS,
                        help="attnlab's loss projects this many target tokens at a time (0 = all logits at once)")
    parser.add_argument("--copy", action="store_true",
                        help="attnlab's model is a pointer-generator (the summarization recipe's copy=True)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps, args.warmup, args.no_memory = "tiny", 4, 1, True
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()]
    norm_first = not args.post_ln

    batches, vocab, what = load_batches(args.warmup + args.steps, args.tokens_per_batch, args.vocab_size, seed=0)
    print(f"# {environment()}")
    print(f"# {cpu_line()}")
    print(f"# device cpu; data: {what}; {len(batches)} batches of <= {args.tokens_per_batch} padded tokens "
          f"({args.warmup} warm-up + {args.steps} timed); {'post' if args.post_ln else 'pre'}-LN; "
          f"label smoothing {LABEL_SMOOTHING}, AdamW, clip 1.0; glibc keep-freed-memory "
          f"{'on' if kept else 'off'}; attnlab loss chunk {args.loss_chunk_tokens or 'off (full logits)'}"
          + ("; attnlab model: pointer-generator (copy), torch: plain" if args.copy else ""))
    timed = batches[args.warmup:]
    tgt_tokens = [int((b.tgt_out != PAD_ID).sum()) for b in timed]
    all_tokens = [t + int(b.src_lens.sum()) for t, b in zip(tgt_tokens, timed, strict=True)]
    print(f"# timed batches: median {statistics.median(tgt_tokens):.0f} target / "
          f"{statistics.median(all_tokens):.0f} source+target tokens per batch")
    load_start = os.getloadavg()[0]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        largest = max(batches, key=lambda b: b.src.numel() + b.tgt_out.numel())
        batch_path = workdir / "batch.pt"
        torch.save(largest, batch_path)
        for size in sizes:
            for dtype in dtypes:
                bf16 = dtype == "bf16"
                cands = make_candidates(size, vocab, bf16, norm_first, workdir, args.loss_chunk_tokens, args.copy)
                times = time_steps(cands, batches, args.warmup)
                row = {"size": size, "dtype": dtype, "dims": SIZES[size]}
                for name in ("attnlab", "torch"):
                    row[f"{name}_tgt_tok_s"] = statistics.median(n / t for n, t in zip(tgt_tokens, times[name],
                                                                                         strict=True))
                    row[f"{name}_all_tok_s"] = statistics.median(n / t for n, t in zip(all_tokens, times[name],
                                                                                         strict=True))
                    row[f"{name}_total_s"] = sum(times[name])
                row["ratio"] = statistics.median(b / a for a, b in zip(times["attnlab"], times["torch"], strict=True))
                if not args.no_memory:
                    for name in ("attnlab", "torch"):
                        row[f"{name}_mem"] = peak_memory(name, size, bf16, norm_first, vocab, batch_path, args.threads,
                                                         args.loss_chunk_tokens, args.copy)
                rows.append(row)
                print(f"  measured {size} {dtype}: ratio {row['ratio']:.2f}", file=sys.stderr, flush=True)

    print("\n| size (D, H, FFN, enc+dec) | autocast | attnlab tgt tok/s | torch tgt tok/s | attnlab src+tgt tok/s "
          "| torch src+tgt tok/s | ratio attnlab/torch |" + (" step peak RSS attnlab / torch MiB |"
                                                              if not args.no_memory else ""))
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if not args.no_memory else ""))
    for r in rows:
        d, h, f, e, dl, _ = r["dims"]
        line = (f"| {r['size']} ({d}, {h}, {f}, {e}+{dl}) | {r['dtype']} | {r['attnlab_tgt_tok_s']:,.0f} | "
                f"{r['torch_tgt_tok_s']:,.0f} | {r['attnlab_all_tok_s']:,.0f} | {r['torch_all_tok_s']:,.0f} | "
                f"{r['ratio']:.2f} |")
        if not args.no_memory:
            a, t = r["attnlab_mem"], r["torch_mem"]
            line += (f" {a['step_mib']:.0f} / {t['step_mib']:.0f} (process peak {a['peak_mib']:.0f} / "
                     f"{t['peak_mib']:.0f}) |")
        print(line)
    print(f"\nratio = median over batches of t_torch / t_attnlab (> 1: attnlab faster); "
          f"worst {min(r['ratio'] for r in rows):.2f}")
    load_end = os.getloadavg()[0]
    # This run itself accounts for about --threads of the load; well above that, other processes competed.
    print(f"1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the end ({os.cpu_count()} CPUs)"
          + ("; other processes competed for the cores: absolute tokens/s are low, the ratios still compare"
             if max(load_start, load_end) > args.threads + 1 else ""))
    for size in sizes:
        by = {r["dtype"]: r for r in rows if r["size"] == size}
        if "fp32" in by and "bf16" in by:
            gain = {n: by["bf16"][f"{n}_tgt_tok_s"] / by["fp32"][f"{n}_tgt_tok_s"] for n in ("attnlab", "torch")}
            print(f"bf16 autocast speed-up ({size}): attnlab {gain['attnlab']:.2f}x, torch {gain['torch']:.2f}x "
                  f"(fp32 and bf16 measured one after the other, not interleaved)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
