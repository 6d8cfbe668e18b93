"""``attnlab predict``: run a trained model of any task on one text per line, or on images.

Classification checkpoints print ``label<TAB>probability`` per line; text-to-text checkpoints (translation,
summarization) print the generated text; image models (``--image FILE...`` or ``--test-index N...``) print
``NAME<TAB>label<TAB>probability`` or ``NAME<TAB>caption`` per image. ``--html``/``--png`` draw where a text
classifier looked: every line's words highlighted by their attention weight, all in one page (or one figure).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from attnlab.cli._run_options import int_in
from attnlab.cli.translate import read_sentences, write_lines
from attnlab.core.errors import ConfigError
from attnlab.core.run_config import MAX_BEAM


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="label (or translate/summarize) one text per line with a checkpoint",
                       description="Read one text per line (stdin or --input). A classifier prints "
                                   "'label<TAB>probability' per line; an encoder-decoder prints its output text.")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory, e.g. runs/x/best")
    from attnlab.cli._images import add_image_options

    inputs = p.add_mutually_exclusive_group()
    inputs.add_argument("--input", metavar="FILE", help="input file (default: stdin)")
    add_image_options(p, inputs, many=True)
    p.add_argument("--output", metavar="FILE", help="output file (default: stdout); written only when all is done")
    p.add_argument("--beam", type=int_in(1, MAX_BEAM), default=None, metavar="N", help="beam size for encoder-decoders")
    p.add_argument("--html", metavar="FILE", help="classifiers: write the attention highlights of every line to FILE")
    p.add_argument("--png", metavar="FILE", help="classifiers: draw the highlights of the first --max-figure lines "
                                                 "(.png, .svg or .pdf)")
    p.add_argument("--max-figure", type=int, default=10, metavar="N", help="lines drawn by --png (default 10)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be at least 1, got {args.beam}")
    if args.max_figure < 1:
        raise ConfigError(f"--max-figure must be at least 1, got {args.max_figure}")
    if args.html and Path(args.html).suffix.lower() != ".html":
        raise ConfigError(f"--html expects a file name ending in .html, got {args.html[:80]!r}")
    if args.png and Path(args.png).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"--png expects a .png, .svg or .pdf file name, got {args.png[:80]!r}")


def run(args: argparse.Namespace) -> int:
    from attnlab.pipeline import Classifier, load_predictor

    _check(args)
    predictor = load_predictor(args.checkpoint)
    images = args.image is not None or args.test_index is not None
    if images != hasattr(predictor, "pipeline"):
        what = "an image model" if hasattr(predictor, "pipeline") else f"a {predictor.config.task_name} model"
        need = "--image FILE or --test-index N" if hasattr(predictor, "pipeline") else "text (--input or stdin)"
        raise ConfigError(f"{args.checkpoint} holds {what}; give it {need}")
    if images:
        write_lines(_predict_images(predictor, args), args.output)
        return 0
    texts = read_sentences(args.input)
    if isinstance(predictor, Classifier):
        predictions = predictor.predict(texts, return_attention=bool(args.html or args.png))
        # A line with no token has nothing to classify: an empty output line keeps the lines aligned.
        lines = [f"{p.label}\t{p.probability:.4f}" if p.tokens else "" for p in predictions]
        empty = sum(not p.tokens for p in predictions)
        if empty:
            print(f"attnlab predict: {empty} input line(s) hold no token; their output lines are empty",
                  file=sys.stderr)
        _draw(predictions, args)
    else:
        if args.html or args.png:
            raise ConfigError("--html/--png draw a classifier's word attention; for an encoder-decoder use "
                              "`attnlab viz --checkpoint DIR --text ...`")
        lines = [t.text for t in predictor.translate(texts, beam_size=args.beam)]
    write_lines(lines, args.output)
    return 0


def _predict_images(predictor: object, args: argparse.Namespace) -> list[str]:
    """``NAME<TAB>label<TAB>probability`` per image (a captioner: ``NAME<TAB>caption``); the truth of a test image
    is appended as a last column."""
    from attnlab.cli._images import image_inputs

    if args.html or args.png or args.beam is not None and not hasattr(predictor, "caption"):
        raise ConfigError("--html/--png/--beam do not apply to an image classifier; draw one image's attention with "
                          "`attnlab viz --checkpoint DIR --image FILE --png OUT.png`")
    items = image_inputs(predictor, args)
    stack = np.stack([item.pixels for item in items])  # (B, C, S, S)
    if hasattr(predictor, "caption"):
        columns = [[r.text] for r in predictor.caption(stack, beam_size=args.beam)]
    else:
        columns = [[p.label, f"{p.probability:.4f}"] for p in predictor.predict(stack)]
    return ["\t".join([item.name, *cols, *([item.truth] if item.truth is not None else [])])
            for item, cols in zip(items, columns, strict=True)]


def _draw(predictions: list, args: argparse.Namespace) -> None:
    from attnlab.viz.highlight import Highlight, plot_highlight, write_highlight_html

    shown = [Highlight(p.tokens, p.attention, p.label, p.probability, text=p.text, title=f"line {i}")
             for i, p in enumerate(predictions, start=1) if p.tokens and p.attention is not None]
    if not shown:
        return
    if args.html:
        write_highlight_html(shown, args.html, title="attnlab predict: where the classifier looked")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.png:
        plot_highlight(shown[:args.max_figure], args.png)
        print(f"wrote {args.png}", file=sys.stderr)
