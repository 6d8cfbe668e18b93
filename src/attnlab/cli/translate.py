"""``attnlab translate``: translate one sentence per line with a trained checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnlab.cli._run_options import float_in, int_in
from attnlab.core.errors import ConfigError, DataError
from attnlab.core.run_config import MAX_BEAM, MAX_LENGTH_PENALTY


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate sentences (one per line) with a checkpoint",
                       description="Read one sentence per line (stdin or --input), write one translation per line "
                                   "(stdout or --output).")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory, e.g. runs/x/best")
    p.add_argument("--beam", type=int_in(1, MAX_BEAM), default=None, metavar="N",
                   help="beam size (default: the run's decode.beam_size)")
    p.add_argument("--n-best", type=int, default=1, metavar="K", help="print the K best hypotheses, tab-separated")
    p.add_argument("--early-stopping", action="store_true",
                   help="beam search: stop a sentence once N hypotheses have ended (faster; default: the run's "
                        "decode.early_stopping, else the exact rule)")
    p.add_argument("--length-penalty", type=float_in(0.0, MAX_LENGTH_PENALTY), default=None, metavar="A",
                   help="beam search: length normalization exponent, GNMT's alpha (0 = none; default: the run's "
                        "decode.length_penalty)")
    p.add_argument("--input", metavar="FILE", help="input file (default: stdin)")
    p.add_argument("--output", metavar="FILE", help="output file (default: stdout); written only when all is done")
    p.set_defaults(func=run)


def read_sentences(path: str | None) -> list[str]:
    """Lines of ``path`` (or stdin), split on ``\\n`` only, strict UTF-8 with the failing line named."""
    name = path or "<stdin>"
    try:
        data = Path(path).read_bytes() if path else sys.stdin.buffer.read()
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, raw in enumerate(lines, start=1):
        try:
            out.append(raw.decode("utf-8").removesuffix("\r").lstrip("\ufeff") if number == 1
                       else raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}, line {number}: not valid UTF-8 (byte {exc.start}: "
                            f"{raw[exc.start:exc.start + 1]!r})") from None
    return out


def run(args: argparse.Namespace) -> int:
    from attnlab.pipeline import load_translator

    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be at least 1, got {args.beam}")
    translator = load_translator(args.checkpoint)
    if args.early_stopping:
        translator.config = translator.config.replace("decode", early_stopping=True)
    if args.length_penalty is not None:
        translator.config = translator.config.replace("decode", length_penalty=args.length_penalty)
    beam = translator.config.decode.beam_size if args.beam is None else args.beam
    if args.n_best < 1 or args.n_best > beam:
        raise ConfigError(f"--n-best {args.n_best} needs a beam of at least {args.n_best} (beam is {beam}); "
                          f"add --beam {max(args.n_best, 1)}")
    sentences = read_sentences(args.input)
    results = translator.translate(sentences, beam_size=args.beam, n_best=args.n_best)
    if args.n_best > 1:
        detok = translator.text.tgt_tokenizer.detokenize
        vocab = translator.text.tgt_vocab
        # An empty source has no hypotheses: still K (empty) fields, so that every line splits into K columns.
        lines = ["\t".join([detok(vocab.decode(h.tokens)) for h in r.hypotheses] or [""] * args.n_best)
                 for r in results]
    else:
        lines = [r.text for r in results]
    write_lines(lines, args.output)
    return 0


def write_lines(lines: list[str], path: str | None) -> None:
    """One output line per input line, to ``path`` (written only when all is done) or stdout."""
    text = "".join(line + "\n" for line in lines)
    if path:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    else:
        sys.stdout.write(text)
