"""What BPE-dropout costs per epoch: time to resegment the training pairs, pieces and batches, memory.

Run: .venv/bin/python benchmarks/bpe_dropout.py [--vocab-size 8000] [--probabilities 0.05,0.1,0.2] [--epochs 2]

Prepares Multi30k En-De as the En-De recipe does (joint BPE, the vocabulary holding every piece), builds
:class:`attnlab.data.bpe_dropout.ExampleDropout` once (the word tables), then makes ``--epochs`` epochs of
resegmented pairs per probability and packs them into 4,096-token batches as training does. Prints, per
probability, the median seconds per epoch, the pieces per pair and the batches per epoch as ratios to the
deterministic segmentation (which is what the model then trains on per target sentence), and the process's peak
RSS before and after. Single-threaded Python: run it on an idle core; beside a busy process it takes longer.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment  # noqa: E402

from attnlab.core.run_config import RunConfig  # noqa: E402
from attnlab.data.batching import BucketedBatches  # noqa: E402
from attnlab.data.bpe_dropout import ExampleDropout  # noqa: E402
from attnlab.data.prepare import prepare_data  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--probabilities", default="0.05,0.1,0.2")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tokens-per-batch", type=int, default=4096)
    args = parser.parse_args()
    probabilities = [float(p) for p in args.probabilities.split(",")]
    cfg = RunConfig.from_dict({"data": {"source": "multi30k", "src_lang": "en", "tgt_lang": "de",
                                        "vocab_size": args.vocab_size, "bpe_dropout": max(probabilities)},
                               "model": {"kind": "transformer"}})
    print(environment())
    data = prepare_data(cfg.data)
    text = data.text
    rss_prepared = peak_rss_mib()
    start = time.perf_counter()
    dropout = ExampleDropout(data.train_examples, data.train, (text.src_tokenizer, text.tgt_tokenizer),
                             (text.src_vocab, text.tgt_vocab), max(probabilities), max_len=cfg.data.max_len)
    build = time.perf_counter() - start
    pieces = sum(len(e.src_ids) + len(e.tgt_ids) for e in data.train_examples)
    batches = len(BucketedBatches(data.train_examples, args.tokens_per_batch))
    print(f"{len(data.train_examples):,} pairs, {pieces:,} pieces and {batches} batches of {args.tokens_per_batch} "
          f"tokens deterministically; word tables built in {build:.2f} s")
    print("| p | s / epoch (median) | pieces, ratio | batches / epoch, ratio | pairs kept deterministic |")
    print("|---:|---:|---:|---:|---:|")
    for p in probabilities:
        dropout.p = p
        times, epoch_pieces, epoch_batches, kept = [], [], [], []
        for epoch in range(args.epochs):
            start = time.perf_counter()
            examples, stats = dropout.examples(f"0:{epoch}")
            packed = BucketedBatches(examples, args.tokens_per_batch)
            times.append(time.perf_counter() - start)
            epoch_pieces.append(sum(len(e.src_ids) + len(e.tgt_ids) for e in examples))
            epoch_batches.append(len(packed))
            kept.append(stats["kept_deterministic"])
        print(f"| {p:g} | {statistics.median(times):.2f} | {statistics.mean(epoch_pieces) / pieces:.2f}x | "
              f"{statistics.mean(epoch_batches):.0f}, {statistics.mean(epoch_batches) / batches:.2f}x | "
              f"{max(kept)} |")
    print(f"peak RSS: {rss_prepared:.0f} MiB after preparing the data, {peak_rss_mib():.0f} MiB after the epochs")


if __name__ == "__main__":
    main()
