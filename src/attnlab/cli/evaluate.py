"""``attnlab evaluate``: score a checkpoint on its own test split, or translations with sacreBLEU.

Three modes:

* ``attnlab evaluate --checkpoint DIR`` scores the checkpoint on the test split of the data it was trained on,
  with its task's metrics: accuracy and macro-F1 (classification), BLEU/chrF (translation), ROUGE
  (summarization); ``--baseline`` adds the task's baseline trained on the same split.
* ``attnlab evaluate --hyp FILE --ref FILE [--ref FILE ...] [--tgt-lang zh]`` scores an existing
  hypothesis file (one detokenized sentence per line, aligned with the references).
* ``attnlab evaluate --checkpoint DIR --src FILE --ref FILE [--beam N]`` first translates ``--src`` with the
  checkpoint (:func:`attnlab.pipeline.load_translator`), writes them to ``--out`` if given, then scores them;
  the target language defaults to the one the checkpoint was trained for.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from attnlab.cli._run_options import float_in, int_in
from attnlab.core.errors import ConfigError, DataError
from attnlab.core.run_config import MAX_BEAM, MAX_LENGTH_PENALTY
from attnlab.data.corpus import read_lines
from attnlab.evaluate.bleu import EvalReport, score_corpus, score_files


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a checkpoint on its test split, or translations with sacreBLEU",
        description="With --checkpoint alone: score the checkpoint on the test split of its own data, with its "
                    "task's metrics. With --hyp or --checkpoint --src: score translations with sacreBLEU "
                    "(detokenized, cased BLEU and chrF2) and print the signatures.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--hyp", type=Path, help="hypothesis file: one detokenized translation per line")
    mode.add_argument("--checkpoint", type=Path, help="checkpoint directory of a trained model")
    parser.add_argument("--ref", type=Path, action="append", default=None,
                        help="reference file aligned with the hypotheses; repeat for several references")
    parser.add_argument("--split", choices=("test", "valid"), default="test",
                        help="with --checkpoint alone: which split of its data to score (default test)")
    parser.add_argument("--baseline", action="store_true",
                        help="with --checkpoint alone: also fit and score the task's baseline on the same split")
    parser.add_argument("--src", type=Path, help="source file to translate (with --checkpoint)")
    parser.add_argument("--beam", type=int_in(1, MAX_BEAM), default=5,
                        help="beam size of encoder-decoders; 1 = greedy (default 5)")
    parser.add_argument("--length-penalty", type=float_in(0.0, MAX_LENGTH_PENALTY), default=None, metavar="A",
                        help="beam search with --checkpoint: length normalization exponent, GNMT's alpha (0 = none; "
                             "default: the run's decode.length_penalty)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch with --checkpoint")
    parser.add_argument("--device", default="cpu", help="device with --checkpoint (default cpu)")
    parser.add_argument("--out", type=Path, help="with --checkpoint: also write the translations here")
    parser.add_argument("--tgt-lang", default=None,
                        help="target language code; zh (or cmn) selects sacreBLEU's zh tokenizer for BLEU")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.set_defaults(func=run)


def _translate(args: argparse.Namespace, num_refs: list[int]) -> list[str]:
    if args.src is None:
        raise ConfigError("--checkpoint needs --src FILE (the source sentences to translate)")
    if args.beam < 1 or args.batch_size < 1:
        raise ConfigError("--beam and --batch-size must be at least 1")
    from attnlab.pipeline import load_translator

    translator = load_translator(args.checkpoint)  # cheap: fail on a bad checkpoint before anything else
    sources = read_lines(args.src)
    for ref_path, count in zip(args.ref, num_refs, strict=True):  # and on misaligned files before translating
        if count != len(sources):
            raise DataError(f"{args.src} has {len(sources)} lines but {ref_path} has {count}: sources and "
                            f"references must be aligned line by line")
    translator.model.to(args.device)
    if args.tgt_lang is None and translator.config.data.source != "task":
        args.tgt_lang = translator.config.data.tgt_lang
    translator.config = translator.config.replace("decode", batch_size=args.batch_size)
    if args.length_penalty is not None:
        translator.config = translator.config.replace("decode", length_penalty=args.length_penalty)
    hypotheses = [t.text for t in translator.translate(sources, beam_size=args.beam)]
    if args.out is not None:
        _write_lines(args.out, hypotheses)
    return hypotheses


def _write_lines(path: Path, lines: list[str]) -> None:
    """Write one sentence per line atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line.replace("\n", " ") + "\n" for line in lines)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _print_report(report: EvalReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    print(report.bleu.format())
    print(f"  signature: {report.bleu.signature}")
    print(report.chrf.format())
    print(f"  signature: {report.chrf.signature}")
    print(f"  sentences: {report.num_sentences}")


def _score_split(args: argparse.Namespace) -> int:
    from attnlab.pipeline import score_checkpoint

    if args.out is not None or args.tgt_lang is not None:
        raise ConfigError("--out and --tgt-lang go with --src/--ref; the checkpoint's own split needs neither")
    if args.beam < 1:
        raise ConfigError("--beam must be at least 1")
    _, reports = score_checkpoint(args.checkpoint, beams=(args.beam,), baseline=args.baseline, split=args.split,
                                  length_penalty=args.length_penalty)
    if args.json:
        print(json.dumps({r.name: r.metrics for r in reports}, indent=2, ensure_ascii=False))
    else:
        for report in reports:
            print(report.line.replace("test (", f"{args.split} (", 1))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and args.src is None and args.ref is None:
        return _score_split(args)
    if args.ref is None:
        raise ConfigError("--ref FILE is needed with --hyp and with --src (or give --checkpoint alone to score "
                          "its test split)")
    if args.split != "test" or args.baseline:
        raise ConfigError("--split and --baseline go with --checkpoint alone")
    if args.hyp is not None:
        if args.src is not None or args.out is not None or args.length_penalty is not None:
            raise ConfigError("--src, --out and --length-penalty go with --checkpoint, not with --hyp")
        report = score_files(args.hyp, args.ref, tgt_lang=args.tgt_lang)
    else:
        references = [read_lines(p) for p in args.ref]
        hypotheses = _translate(args, [len(r) for r in references])
        report = score_corpus(hypotheses, references, tgt_lang=args.tgt_lang)
    _print_report(report, args.json)
    return 0
