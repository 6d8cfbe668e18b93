"""Decoding speed: greedy with the KV cache vs recomputing the prefix each step, beam 5, and peak memory.

Run: .venv/bin/python benchmarks/decode.py [--checkpoint DIR] [--sentences 1000] [--batch-size 64]
     [--threads 2] [--repeats 3] [--quick] [--json FILE] [--vs ctranslate2]

Sentences: the first ``--sentences`` lines of Multi30k ``test_2016_flickr`` (``--src-file``), sorted by
length and decoded in batches of ``--batch-size``; every mode decodes the same batches, interleaved
(A, B, C, A, B, C, ...), after one warm-up pass; the table shows medians.

* ``--checkpoint DIR``: a model trained by ``attnlab train`` (its tokenizers, vocabularies and
  ``decode.max_len``); outputs end where the model emits ``<eos>``.
* without it: a random-init model of the recipe's size (``--model transformer``: d_model 256, 4 heads,
  FFN 1024, 3+3 layers; ``--model seq2seq``: the GRU + Bahdanau default) over word-level vocabularies of
  Multi30k train (``--src-lang``/``--tgt-lang``, min_freq 2). A random model never emits ``<eos>``, so
  each batch decodes exactly ``1 + the longest reference translation in the batch`` steps -- the length
  a trained model would produce -- and beam search runs every beam to that length (no early stop).

Modes: ``greedy+cache`` (``greedy_decode``, incremental ``decode_step``), ``greedy recompute``
(``use_cache=False``: the full teacher-forced ``forward`` over the prefix at every step; the reference),
``beam5`` (exact stopping, GNMT alpha 1.0) and ``beam5 early`` (stop at 5 finished hypotheses).
``greedy recompute`` runs the whole ``forward`` (encoder included) at every step, as
``greedy_decode(use_cache=False)`` does.
Peak memory: each mode once more in a fresh subprocess; CPU: peak RSS (``VmHWM``, reset just before
decoding) above the RSS before decoding; CUDA: ``torch.cuda.max_memory_allocated`` above the allocation
before decoding.

``--vs ctranslate2`` (needs ``--checkpoint``, a Transformer with SentencePiece tokenizers): exports it to a
temporary directory (:func:`attnlab.export.export_ctranslate2`) and times attnlab against CTranslate2
(``translate_batch``, ``compute_type="float32"``, ``inter_threads=1``, ``intra_threads=--threads``) on the same
batches of the same source ids with the same ``max_len``: greedy (beam 1, batches of ``--batch-size``), beam 5 in
batches of 64 and beam 4 in batches of 32. Beam search runs with length penalty 0 on both sides, the setting under
which both engines rank and stop alike (CTranslate2 divides by ``length ** alpha``, attnlab by GNMT's penalty).
Each engine runs in its own process (in one process their OpenMP thread pools slow each other down), the two
alternating, each pass after a warm-up pass; the first round also counts the sentences whose best output differs
(greedy: expected 0). The ratio is attnlab's time over CTranslate2's (above 1: CTranslate2 is faster). Without
``ctranslate2`` installed it says so in one line and times attnlab alone.

The header says whether attnlab's compiled decoding kernels (:mod:`attnlab.attention.native`) were in use;
``ATTNLAB_NATIVE=0 python benchmarks/decode.py ...`` times PyTorch's kernels instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median_times  # noqa: E402

from attnlab.attention import native  # noqa: E402
from attnlab.core.errors import AttnlabError  # noqa: E402
from attnlab.core.model_config import Seq2SeqConfig, TransformerConfig  # noqa: E402
from attnlab.data.corpus import multi30k_path, read_lines  # noqa: E402
from attnlab.data.tokenize import Tokenizer, WordTokenizer  # noqa: E402
from attnlab.data.vocab import Vocab  # noqa: E402
from attnlab.decode import beam_search, greedy_decode  # noqa: E402
from attnlab.decode.translate import default_max_len  # noqa: E402
from attnlab.models import EncoderDecoder, build_model  # noqa: E402

MODES = ("greedy+cache", "greedy recompute", "beam5", "beam5 early")
VS_MODES = (("greedy", 1, None), ("beam5", 5, 64), ("beam4", 4, 32))
"""``--vs``: (name, beam size, batch size; ``None``: ``--batch-size``)."""


@dataclass
class DecodeBatch:
    src: torch.Tensor  # (B, Ts)
    src_lens: torch.Tensor  # (B,)
    max_len: int


@dataclass
class Setup:
    model: EncoderDecoder
    batches: list[DecodeBatch]
    description: str

    @property
    def num_sentences(self) -> int:
        return sum(b.src.shape[0] for b in self.batches)


def make_batches(sentences: list[str], tokenizer: Tokenizer, vocab: Vocab, batch_size: int,
                 max_lens: Callable[[list[int], list[int]], int], device: torch.device) -> list[DecodeBatch]:
    """Longest first, as :func:`attnlab.decode.translate_sentences` batches; ``max_lens(indices, src_lens)``."""
    ids = [vocab.encode(tokenizer.tokenize(s)) or [3] for s in sentences]  # an empty line becomes <unk>
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        lens = [len(ids[i]) for i in chunk]
        src = torch.zeros(len(chunk), max(lens), dtype=torch.long)
        for row, i in enumerate(chunk):
            src[row, : lens[row]] = torch.tensor(ids[i])
        batches.append(DecodeBatch(src.to(device), torch.tensor(lens, device=device), max_lens(chunk, lens)))
    return batches


def build_setup(args: argparse.Namespace, device: torch.device) -> Setup:
    src_file = args.src_file or multi30k_path("test_2016_flickr", args.src_lang)
    sentences = read_lines(src_file)[: args.sentences]
    if args.checkpoint:
        from attnlab.pipeline.load import load_translator  # the script may use every layer

        tr = load_translator(args.checkpoint)
        cfg_max = tr.config.decode.max_len
        batches = make_batches(sentences, tr.text.src_tokenizer, tr.text.src_vocab, args.batch_size,
                               lambda _, lens: cfg_max or default_max_len(max(lens)), device)
        kind = type(tr.model).__name__
        return Setup(tr.model.to(device), batches, f"checkpoint {tr.path} ({kind}, step {tr.step})")
    tok = WordTokenizer()
    src_vocab = Vocab.build((tok.tokenize(s) for s in read_lines(multi30k_path("train", args.src_lang))), min_freq=2)
    tgt_vocab = Vocab.build((tok.tokenize(s) for s in read_lines(multi30k_path("train", args.tgt_lang))), min_freq=2)
    refs = read_lines(args.ref_file or multi30k_path("test_2016_flickr", args.tgt_lang))[: args.sentences]
    ref_lens = [len(tok.tokenize(r)) for r in refs]
    config = TransformerConfig(dropout=0.0) if args.model == "transformer" else Seq2SeqConfig(dropout=0.0)
    torch.manual_seed(0)
    model = build_model(config, len(src_vocab), len(tgt_vocab)).to(device)
    with torch.no_grad():  # make <eos> impossible: every row runs the forced length
        model.output.weight[2] = 0.0
        if model.output.bias is not None:
            model.output.bias[2] = -100.0
    batches = make_batches(sentences, tok, src_vocab, args.batch_size,
                           lambda idx, _: 1 + max(ref_lens[i] for i in idx), device)
    size = sum(p.numel() for p in model.parameters())
    return Setup(model, batches, f"random-init {args.model} ({size / 1e6:.1f}M parameters; vocab {len(src_vocab)}"
                                 f" -> {len(tgt_vocab)}), forced output length = 1 + longest reference per batch")


def run_mode(setup: Setup, mode: str) -> int:
    """Decode every batch once with ``mode``; returns the number of target tokens scored (best hypotheses)."""
    tokens = 0
    for b in setup.batches:
        if mode == "greedy+cache":
            hyps = greedy_decode(setup.model, b.src, b.src_lens, max_len=b.max_len)
        elif mode == "greedy recompute":
            hyps = greedy_decode(setup.model, b.src, b.src_lens, max_len=b.max_len, use_cache=False)
        else:
            hyps = [nbest[0] for nbest in beam_search(setup.model, b.src, b.src_lens, beam_size=5, max_len=b.max_len,
                                                      early_stopping=mode == "beam5 early")]
        tokens += sum(h.num_steps for h in hyps)
    return tokens


def attnlab_ids(model: EncoderDecoder, batches: list[DecodeBatch], beam: int) -> list[list[int]]:
    """The best output of each sentence, decoded by attnlab (greedy for ``beam`` 1; length penalty 0)."""
    if beam == 1:
        return [h.tokens for b in batches for h in greedy_decode(model, b.src, b.src_lens, max_len=b.max_len)]
    return [nb[0].tokens for b in batches for nb in beam_search(model, b.src, b.src_lens, beam_size=beam,
                                                                max_len=b.max_len, length_penalty=0.0)]


def as_pieces(batch: DecodeBatch, vocab: Vocab) -> list[list[str]]:
    """The batch's source ids as the token strings CTranslate2 reads (an unknown piece: ``<unk>``)."""
    return [[vocab.id_to_token(i) for i in row[:n]] for row, n in zip(batch.src.tolist(), batch.src_lens.tolist(),
                                                                       strict=True)]


def ct2_ids(engine: Any, batches: list[DecodeBatch], pieces: list[list[list[str]]], beam: int,
            tgt_vocab: Vocab) -> list[list[int]]:
    """The same for CTranslate2 (an :class:`attnlab.export.ExportedTranslator`), as attnlab target ids."""
    return [[tgt_vocab.token_to_id(t) for t in hyp] for b, p in zip(batches, pieces, strict=True)
            for hyp in engine.translate_pieces(p, beam_size=beam, max_len=b.max_len)]


def _vs_setup(args: argparse.Namespace, device: torch.device) -> tuple[Any, list[tuple[str, int, list, list]]]:
    """The translator and, per ``--vs`` mode, ``(name, beam, batches, CTranslate2 pieces)``."""
    from attnlab.pipeline.load import load_translator

    tr = load_translator(args.checkpoint)
    tr.model.to(device).eval()
    src_file = args.src_file or multi30k_path("test_2016_flickr", args.src_lang)
    sentences = read_lines(src_file)[: args.sentences]
    cfg_max = tr.config.decode.max_len
    vocab = tr.text.src_vocab
    modes = []
    for name, beam, size in VS_MODES:
        batches = make_batches(sentences, tr.text.src_tokenizer, vocab, size or args.batch_size,
                               lambda _, lens: cfg_max or default_max_len(max(lens)), device)
        modes.append((name, beam, batches, [as_pieces(b, vocab) for b in batches]))
    return tr, modes


def run_vs_engine(args: argparse.Namespace, device: torch.device) -> None:
    """Internal (``--vs-engine``): one engine in this process, a warm-up and one timed pass per mode; prints JSON."""
    tr, modes = _vs_setup(args, device)
    engine = None
    if args.vs_engine == "ct2":
        from attnlab.export import ExportedTranslator

        engine = ExportedTranslator(Path(args.vs_export), device=device.type, compute_type="float32",
                                    intra_threads=args.threads, inter_threads=1)
    out = {}
    for name, beam, batches, pieces in modes:
        if engine is None:
            fn = functools.partial(attnlab_ids, tr.model, batches, beam)
        else:
            fn = functools.partial(ct2_ids, engine, batches, pieces, beam, tr.text.tgt_vocab)
        ids = fn()  # warm-up
        start = time.perf_counter()
        fn()
        out[name] = {"seconds": time.perf_counter() - start, "ids": ids if args.vs_ids else None}
    print(json.dumps(out))


def run_vs_ctranslate2(args: argparse.Namespace, device: torch.device) -> None:
    """``--vs ctranslate2``: attnlab and CTranslate2 on the same batches (see the module docstring).

    Each engine runs in its own process, the two alternating (A B, B A, ...): in one process their OpenMP thread
    pools spin against each other (measured: both engines at under half their speed with 2 threads)."""
    import tempfile

    try:
        import ctranslate2
    except ImportError:
        ctranslate2 = None
        print("ctranslate2 is not installed (pip install 'attnlab[export]'): timing attnlab alone")
    tr, modes = _vs_setup(args, device)
    t0 = time.perf_counter()
    engines = ["attnlab"] + (["ct2"] if ctranslate2 is not None else [])
    times: dict[str, dict[str, list[float]]] = {e: {m[0]: [] for m in modes} for e in engines}
    ids: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if ctranslate2 is not None:
            from attnlab.export import export_checkpoint

            try:
                export_checkpoint(args.checkpoint, Path(tmp) / "ct2", "ctranslate2")
            except AttnlabError as exc:
                sys.exit(f"decode.py --vs ctranslate2: {exc}")
        for round_ in range(args.repeats):
            for engine in engines if round_ % 2 == 0 else engines[::-1]:
                cmd = [sys.executable, __file__, "--checkpoint", args.checkpoint, "--sentences", str(args.sentences),
                       "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device,
                       "--vs-engine", engine, "--vs-export", str(Path(tmp) / "ct2")]
                if args.src_file:
                    cmd += ["--src-file", args.src_file]
                if round_ == 0:
                    cmd.append("--vs-ids")
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    sys.exit(f"decode.py --vs ctranslate2: the {engine} process failed: {res.stderr.strip()[-500:]}")
                result = json.loads(res.stdout.strip().splitlines()[-1])
                for name, row in result.items():
                    times[engine][name].append(row["seconds"])
                if round_ == 0:
                    ids[engine] = {name: row["ids"] for name, row in result.items()}
    rows = []
    for name, beam, batches, _ in modes:
        med = {e: statistics.median(times[e][name]) for e in engines}
        differ = (sum(a != c for a, c in zip(ids["attnlab"][name], ids["ct2"][name], strict=True))
                  if "ct2" in ids else None)
        rows.append({"mode": name, "beam_size": beam, "batch_size": batches[0].src.shape[0],
                     "attnlab_seconds": med["attnlab"], "ct2_seconds": med.get("ct2"), "outputs_differ": differ})
    n = sum(b.src.shape[0] for b in modes[0][2])
    version = ctranslate2.__version__ if ctranslate2 is not None else "not installed"
    print(f"# attnlab vs CTranslate2 {version}: {n} sentences, checkpoint {tr.path} (step {tr.step}), attnlab's "
          f"compiled kernels: {kernels_status()}")
    print(f"# {environment()}, device {device}, fp32 (CT2 compute_type float32, intra_threads {args.threads}, "
          f"inter_threads 1), beam length penalty 0, each engine in its own process, median of {args.repeats} "
          f"(total {time.perf_counter() - t0:.0f} s)")
    print(f"{'mode':<8} {'batch':>5} {'attnlab sent/s':>15} {'CT2 sent/s':>11} {'attnlab/CT2 time':>17} "
          f"{'outputs differ':>15}")
    for row in rows:
        ct2_s = row["ct2_seconds"]
        ct2_col = f"{n / ct2_s:11.1f}" if ct2_s else f"{'-':>11}"
        ratio = f"{row['attnlab_seconds'] / ct2_s:16.2f}x" if ct2_s else f"{'-':>17}"
        differ = f"{row['outputs_differ']} of {n}" if row["outputs_differ"] is not None else "-"
        print(f"{row['mode']:<8} {row['batch_size']:>5} {n / row['attnlab_seconds']:15.1f} {ct2_col} {ratio} "
              f"{differ:>15}")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(), "device": str(device),
                                               "checkpoint": str(tr.path), "ctranslate2": version, "sentences": n,
                                               "repeats": args.repeats, "rows": rows}, indent=2))


def kernels_status() -> str:
    """:func:`attnlab.attention.native.status` without the library's path."""
    status = native.status()
    return "compiled" if status.startswith("compiled") else status


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory(setup: Setup, mode: str, device: torch.device) -> float:
    """MiB of memory the decoding of ``mode`` needed above what was in use before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_mode(setup, mode)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM), so set-up peaks do not count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    run_mode(setup, mode)
    return max(_proc_status_kib("VmHWM") - before, 0) / 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="checkpoint (or run) directory written by `attnlab train`")
    p.add_argument("--model", choices=["transformer", "seq2seq"], default="transformer",
                   help="random-init model family when no --checkpoint is given")
    p.add_argument("--src-file", help="source sentences (default: Multi30k test_2016_flickr of --src-lang)")
    p.add_argument("--ref-file", help="references, whose lengths set the forced output length of a random-init "
                                      "model (default: Multi30k test_2016_flickr of --tgt-lang)")
    p.add_argument("--src-lang", default="en", help="Multi30k source language (test file, random-init vocabulary)")
    p.add_argument("--tgt-lang", default="de", help="Multi30k target language (references, random-init vocabulary)")
    p.add_argument("--sentences", type=int, default=1000, help="sentences decoded per pass")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per mode (median reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="200 sentences, 1 repeat: a smoke run")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--vs", choices=["ctranslate2"], help="time attnlab against another engine on a --checkpoint's "
                                                         "export (see the module docstring)")
    p.add_argument("--memory-mode", help=argparse.SUPPRESS)  # internal: one mode in a fresh process
    p.add_argument("--vs-engine", choices=["attnlab", "ct2"], help=argparse.SUPPRESS)  # internal: one engine
    p.add_argument("--vs-export", help=argparse.SUPPRESS)  # internal: the exported CTranslate2 directory
    p.add_argument("--vs-ids", action="store_true", help=argparse.SUPPRESS)  # internal: also return the ids
    args = p.parse_args(argv)
    if args.quick:
        args.sentences, args.repeats = min(args.sentences, 200), 1
    if args.vs and not args.checkpoint:
        p.error(f"--vs {args.vs} needs --checkpoint (a trained Transformer to export)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.vs_engine:
        run_vs_engine(args, device)
        return
    if args.vs == "ctranslate2":
        run_vs_ctranslate2(args, device)
        return
    setup = build_setup(args, device)
    setup.model.eval()
    if args.memory_mode:
        print(json.dumps({"mib": measure_memory(setup, args.memory_mode, device)}))
        return

    t0 = time.perf_counter()
    tokens = {mode: run_mode(setup, mode) for mode in MODES}  # also the warm-up pass
    fns = {mode: (lambda m=mode: run_mode(setup, m)) for mode in MODES}
    times = median_times(fns, warmup=0, repeats=args.repeats)
    memory: dict[str, float | None] = {mode: None for mode in MODES}
    if not args.no_memory:
        passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--quick",)]
        extra = ["--sentences", str(args.sentences), "--repeats", "1"]
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, *passthrough, *extra, "--memory-mode", mode],
                                 capture_output=True, text=True, check=True)
            memory[mode] = json.loads(out.stdout.strip().splitlines()[-1])["mib"]

    n = setup.num_sentences
    print(f"# decoding benchmark: {n} sentences, batch {args.batch_size}, {len(setup.batches)} batches")
    print(f"# model: {setup.description}; attnlab's compiled kernels: {kernels_status()}")
    print(f"# {environment()}, device {device}, fp32, median of {args.repeats} "
          f"(total {time.perf_counter() - t0:.0f} s)")
    print(f"{'mode':<18} {'sent/s':>9} {'tok/s':>9} {'s/pass':>8} {'peak MiB':>9} {'vs recompute':>13}")
    ref = times["greedy recompute"]
    rows = []
    for mode in MODES:
        t = times[mode]
        mem = memory[mode]
        mem_s = f"{mem:9.1f}" if mem is not None else f"{'-':>9}"
        print(f"{mode:<18} {n / t:9.1f} {tokens[mode] / t:9.0f} {t:8.2f} {mem_s} {ref / t:12.2f}x")
        rows.append({"mode": mode, "sentences_per_s": n / t, "tokens_per_s": tokens[mode] / t, "seconds": t,
                     "peak_mib": mem, "speedup_vs_recompute": ref / t})
    speedup = ref / times["greedy+cache"]
    verdict = "met" if speedup >= 3 else "MISSED"
    print(f"greedy KV-cache speed-up over recompute: {speedup:.2f}x (target >= 3x: {verdict})")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(), "device": str(device),
                                               "model": setup.description, "sentences": n,
                                               "batch_size": args.batch_size, "rows": rows,
                                               "greedy_cache_speedup": speedup}, indent=2))


if __name__ == "__main__":
    main()
