"""``attnlab viz``: translate, classify (or encode) texts, or classify/caption one image, and draw their attention
as figures and an HTML viewer.

Several texts (``--text`` more than once, or ``--input FILE`` of lines; at most :data:`MAX_TEXTS`) share one
page: the viewer lists them as examples, and figures are numbered (``a-1.png``, ``a-2.png``...). The model is
loaded once for all of them.

Sources of a model, each a function returning a :class:`Drawn`: ``--checkpoint`` (a run or checkpoint folder
written by ``attnlab train``) and ``--hf-model`` (a local Hugging Face folder). Encoder-decoders translate
greedily, then run once more, teacher-forced on that translation, inside :func:`attnlab.viz.capture.capture`.
A classifier draws its words highlighted by attention-pooling weight, with the predicted label (and, for a
Transformer classifier, its heads' self-attention in files named ``*-heads.*`` beside the requested ones).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlab.cli._hf import load_errors, open_folder, quiet
from attnlab.core.errors import CheckpointError, ConfigError, DataError, one_line, short_repr
from attnlab.viz.i18n import LANGS

FIGURES = ("png", "svg", "pdf")
MAX_TEXTS = 50  # texts in one run: one page holds them all, and it should open in a second or so


@dataclass
class Drawn:
    """What a source hands to the drawing code.

    Attributes:
        maps: the capture result of one forward pass (batch of one); may hold no layer (an RNN classifier).
        translation: the decoded target text for encoder-decoder models, else ``None``.
        highlight: a classifier's words, their attention-pooling weights and its prediction, else ``None``.
        text: the input text (``None``: the drawing code reads ``--text``).
    """

    maps: Any
    translation: str | None = None
    highlight: Any = None  # attnlab.viz.highlight.Highlight of a classifier's prediction
    text: str | None = None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "viz", help="draw the attention of a model on sentences (PNG/SVG/PDF figures, HTML viewer)",
        description="Run a model on one or more sentences (translating them when the model is an encoder-decoder), "
                    "capture every attention layer and write heatmaps and/or an interactive HTML page. Several "
                    f"sentences (at most {MAX_TEXTS}) go into one page, and figures are numbered FILE-1, FILE-2...")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR",
                        help="an attnlab checkpoint directory (runs/x/best) or a run directory (uses its best/)")
    source.add_argument("--hf-model", metavar="DIR",
                        help="a local Hugging Face model folder (config.json, weights and tokenizer files)")
    from attnlab.cli._images import add_image_options

    inputs = p.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--text", action="append", metavar="TEXT",
                        help="a sentence to translate or encode; repeat for several (one page holds them all)")
    inputs.add_argument("--input", metavar="FILE",
                        help=f"a UTF-8 file of sentences, one a line (blank lines skipped; '-' reads stdin; at most "
                             f"{MAX_TEXTS})")
    add_image_options(p, inputs, many=False)
    for fmt in FIGURES:
        article = "an" if fmt == "svg" else "a"
        p.add_argument(f"--{fmt}", metavar="FILE", help=f"write {article} {fmt.upper()} heatmap to FILE")
    p.add_argument("--html", metavar="FILE", help="write the interactive viewer (one self-contained file)")
    p.add_argument("--lang", choices=tuple(LANGS), default="en",
                   help="language of the HTML page's interface: en (English) or zh (simplified Chinese); "
                        "tokens and figures are unchanged (default: en)")
    p.add_argument("--kind", choices=("encoder", "decoder", "cross"), default=None,
                   help="which attention the figures show (default: cross-attention when the model has it)")
    p.add_argument("--layer", type=int, default=None, metavar="L",
                   help="draw only layer L (0-based; negative counts from the end; default: all layers)")
    p.add_argument("--head", default=None, metavar="H",
                   help="draw only head H (0-based), or 'mean' for the average over heads (default: all heads)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="longest translation to generate (encoder-decoder models; default 64)")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> int | str | None:
    """Validate what can be checked before loading a model; returns the parsed ``--head``."""
    texts = [args.text] if isinstance(args.text, str) else args.text or []
    if any(not text.strip() for text in texts):
        raise ConfigError("--text is empty; give the sentence to visualize, e.g. --text \"a small cat\"")
    outputs = [getattr(args, f) for f in (*FIGURES, "html")]
    if not any(outputs):
        raise ConfigError("nothing to write: pass at least one of --png, --svg, --pdf or --html")
    for fmt in (*FIGURES, "html"):
        value = getattr(args, fmt)
        if value and Path(value).suffix.lower() != f".{fmt}":
            raise ConfigError(f"--{fmt} expects a file name ending in .{fmt}, got {value!r}")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.head is None or args.head == "mean":
        return args.head
    try:
        return int(args.head)
    except ValueError:
        raise ConfigError(f"--head must be a head number or 'mean', got {args.head!r}") from None


def _texts(args: argparse.Namespace) -> list[str]:
    """The texts of ``--text`` (one or more) or ``--input FILE``, at most :data:`MAX_TEXTS`."""
    if getattr(args, "input", None) is not None:
        try:
            lines = (sys.stdin.read() if args.input == "-" else Path(args.input).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or one_line(exc)
            raise DataError(f"cannot read --input {short_repr(args.input)}: {reason}") from None
        texts = [line.strip() for line in lines.splitlines() if line.strip()]
        if not texts:
            raise DataError(f"--input {short_repr(args.input)} holds no text; write one sentence a line")
    else:
        texts = [args.text] if isinstance(args.text, str) else list(args.text)
    if len(texts) > MAX_TEXTS:
        raise ConfigError(f"{len(texts)} texts: one run draws at most {MAX_TEXTS} (one page holds them all); "
                          "split them over several runs")
    return texts


def run(args: argparse.Namespace) -> int:
    head = _check_args(args)
    if args.text is None and getattr(args, "input", None) is None:
        return _draw_image(args)
    texts = _texts(args)  # before loading the model: a bad file fails fast
    source = _checkpoint_source(args) if args.checkpoint else _hf_source(args)
    drawn = [source(text) for text in texts]
    if len(drawn) == 1:
        return _draw(drawn[0], args, head)
    return _draw_many(drawn, args, head)


def _draw(drawn: Drawn, args: argparse.Namespace, head: int | str | None) -> int:
    from attnlab.viz.heatmap import plot_attention
    from attnlab.viz.html import write_html
    from attnlab.viz.views import as_views, pick_view, select

    if drawn.highlight is not None:
        return _draw_classifier(drawn, args, head)
    # Check --kind/--layer/--head against the model before writing anything.
    select(pick_view(as_views(drawn.maps), args.kind), args.layer, head)
    text = drawn.text if drawn.text is not None else args.text
    title = text if drawn.translation is None else f"{text} \N{RIGHTWARDS ARROW} {drawn.translation}"
    if drawn.translation is not None:
        print(f"translation: {drawn.translation}")
    for fmt in FIGURES:
        if getattr(args, fmt):
            plot_attention(drawn.maps, path=getattr(args, fmt), kind=args.kind, layer=args.layer, head=head,
                           title=_short(title))
            print(f"wrote {getattr(args, fmt)}")
    if args.html:
        write_html(drawn.maps, args.html, title=title, lang=args.lang)
        print(f"wrote {args.html}")
    return 0


def _heads_path(path: str) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-heads{p.suffix}")


def _draw_classifier(drawn: Drawn, args: argparse.Namespace, head: int | str | None) -> int:
    from attnlab.viz.heatmap import plot_attention
    from attnlab.viz.highlight import plot_highlight, write_highlight_html
    from attnlab.viz.html import write_html

    hl = drawn.highlight
    text = drawn.text if drawn.text is not None else args.text
    print(f"prediction: {hl.label} ({hl.probability:.3f})")
    heads = len(drawn.maps) > 0  # a Transformer classifier's self-attention layers
    title = f"{_short(text)} → {hl.label} ({hl.probability:.2f})"
    for fmt in FIGURES:
        if getattr(args, fmt):
            plot_highlight(hl, getattr(args, fmt))
            print(f"wrote {getattr(args, fmt)}")
            if heads:
                plot_attention(drawn.maps, path=_heads_path(getattr(args, fmt)), kind=args.kind, layer=args.layer,
                               head=head, title=title)
                print(f"wrote {_heads_path(getattr(args, fmt))}")
    if args.html:
        write_highlight_html([hl], args.html, title=f"attnlab viz: {_short(text)}", lang=args.lang)
        print(f"wrote {args.html}")
        if heads:
            write_html(drawn.maps, _heads_path(args.html), title=title, lang=args.lang)
            print(f"wrote {_heads_path(args.html)}")
    return 0


def _numbered(path: str, i: int) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-{i}{p.suffix}")


def _draw_many(drawn: list[Drawn], args: argparse.Namespace, head: int | str | None) -> int:
    """Several texts: numbered figures (``FILE-1.png``...) and one page that lists them all as examples."""
    from attnlab.viz.heatmap import plot_attention
    from attnlab.viz.highlight import plot_highlight, write_highlight_html
    from attnlab.viz.html import write_html
    from attnlab.viz.views import Example, as_views, pick_view, select

    highlights = [d.highlight for d in drawn if d.highlight is not None]
    # Which texts have heads to draw: all for a translator or encoder, a Transformer classifier's only.
    heads = [not highlights or len(d.maps) > 0 for d in drawn]
    for d, has in zip(drawn, heads, strict=True):  # check --kind/--layer/--head on every text before writing
        if has:
            select(pick_view(as_views(d.maps), args.kind), args.layer, head)
    predictions = [d.translation if d.highlight is None else f"{d.highlight.label} ({d.highlight.probability:.2f})"
                   for d in drawn]
    for i, (d, prediction) in enumerate(zip(drawn, predictions, strict=True), start=1):
        print(f"{i:>3}. {_short(d.text or '', 40):<40} -> {prediction or ''}")
    for fmt in FIGURES:
        if not getattr(args, fmt):
            continue
        if highlights:
            plot_highlight(highlights, getattr(args, fmt))
            print(f"wrote {getattr(args, fmt)}")
        for i, (d, has) in enumerate(zip(drawn, heads, strict=True), start=1):
            if has:
                path = _numbered(getattr(args, fmt), i)
                path = _heads_path(str(path)) if highlights else path
                plot_attention(d.maps, path=path, kind=args.kind, layer=args.layer, head=head,
                               title=_short(f"{d.text} \N{RIGHTWARDS ARROW} {predictions[i - 1]}"))
                print(f"wrote {path}")
    if args.html:
        if highlights:
            write_highlight_html(highlights, args.html, title=f"attnlab viz: {len(drawn)} texts", lang=args.lang)
            print(f"wrote {args.html}")
        examples = [Example(d.maps, name=d.text, prediction=p)
                    for d, p, has in zip(drawn, predictions, heads, strict=True) if has]
        if examples:
            page = _heads_path(args.html) if highlights else Path(args.html)
            write_html(examples, page, title=f"attnlab viz: {len(examples)} texts", lang=args.lang)
            print(f"wrote {page} ({len(examples)} examples)")
    return 0


def _draw_image(args: argparse.Namespace) -> int:
    """An image model on ``--image``/``--test-index``: every layer and head over the patches, as figures and a page."""
    from attnlab.cli._images import image_inputs
    from attnlab.pipeline import load_predictor
    from attnlab.viz.heatmap import save_figure
    from attnlab.viz.image import plot_vit_attention, save_html, vit_attention_html

    if not args.checkpoint:
        raise ConfigError("--image/--test-index need an attnlab image checkpoint (--checkpoint DIR)")
    if args.kind is not None or args.layer is not None or args.head is not None:
        raise ConfigError("--kind/--layer/--head choose among a text model's maps; image figures show every layer "
                          "and head")
    predictor = load_predictor(args.checkpoint)
    if not hasattr(predictor, "pipeline"):
        raise ConfigError(f"{args.checkpoint} holds a {predictor.config.task_name} model; --image/--test-index "
                          f"need an image model (use --text)")
    (item,) = image_inputs(predictor, args)
    if hasattr(predictor, "caption"):
        return _draw_caption(predictor, item, args)
    (pred,) = predictor.predict(item.pixels[None], return_attention=True)
    truth = f" (truth: {item.truth})" if item.truth is not None else ""
    print(f"prediction: {pred.label} ({pred.probability:.3f}){truth}")
    title = _short(item.name) + truth
    for fmt in FIGURES:
        if getattr(args, fmt):
            fig = plot_vit_attention(item.pixels, pred.attention, patch_size=predictor.patch_size, label=pred.label,
                                     probability=pred.probability, title=title)
            save_figure(fig, getattr(args, fmt))
            print(f"wrote {getattr(args, fmt)}")
    if args.html:
        save_html(vit_attention_html(item.pixels, pred.attention, patch_size=predictor.patch_size, label=pred.label,
                                     probabilities=pred.probabilities, title=f"attnlab viz: {title}",
                                     lang=args.lang), args.html)
        print(f"wrote {args.html}")
    return 0


def _draw_caption(predictor: Any, item: Any, args: argparse.Namespace) -> int:
    """A captioner: one panel per generated word with that step's attention (and the item's box when known)."""
    from attnlab.viz.heatmap import save_figure
    from attnlab.viz.image import caption_attention_html, plot_caption_attention, save_html

    (result,) = predictor.caption(item.pixels[None], return_attention=True)
    truth = f" (truth: {item.truth})" if item.truth is not None else ""
    print(f"caption: {result.text}{truth}")
    words = result.words
    boxes = item.boxes(words) if callable(item.boxes) else None
    title = _short(item.name) + truth
    for fmt in FIGURES:
        if getattr(args, fmt):
            fig = plot_caption_attention(item.pixels, words, result.attention, patch_size=predictor.patch_size,
                                         boxes=boxes, title=title)
            save_figure(fig, getattr(args, fmt))
            print(f"wrote {getattr(args, fmt)}")
    if args.html:
        save_html(caption_attention_html(item.pixels, words, result.attention, patch_size=predictor.patch_size,
                                         boxes=boxes, title=f"attnlab viz: {title}", lang=args.lang), args.html)
        print(f"wrote {args.html}")
    return 0


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


# -------------------------------------------------------------------------------------------- sources
def _checkpoint_source(args: argparse.Namespace) -> Callable[[str], Drawn]:
    """Load an attnlab checkpoint once; the returned function runs it on one text."""
    from attnlab.pipeline import Classifier, load_predictor

    path = Path(args.checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint directory at {path}; pass the folder written by `attnlab train`, "
                              "e.g. runs/NAME/best")
    predictor = load_predictor(path)
    if isinstance(predictor, Classifier):
        return lambda text: _classify(predictor, text)
    return lambda text: _translate(predictor, text, args.max_new_tokens)


def _translate(translator: Any, text: str, max_new_tokens: int) -> Drawn:
    import torch

    from attnlab.data.vocab import BOS_ID
    from attnlab.viz.capture import capture

    result = translator.translate([text], beam_size=1, max_len=max_new_tokens)[0]
    if not result.src_tokens or result.best is None:
        raise ConfigError(f"--text {short_repr(text)} gives no source tokens for this model")
    hyp, vocab = result.best, translator.text.tgt_vocab
    # Teacher-force the greedy translation once more: row t is the decoder state that emitted output t, so the
    # rows are labelled with the emitted tokens (and <eos> when the translation ended).
    emitted = [vocab.id_to_token(i) for i in hyp.tokens] + (["<eos>"] if hyp.ended else [])
    tgt_in = [BOS_ID, *hyp.tokens][:len(emitted)]
    model = translator.model
    device = next(model.parameters()).device
    src = torch.tensor([translator.text.src_vocab.encode(result.src_tokens)], device=device)  # (1, Ts)
    with torch.no_grad(), capture(model, src_tokens=result.src_tokens, tgt_tokens=emitted) as maps:
        model(src, torch.tensor([src.shape[1]], device=device), torch.tensor([tgt_in], device=device))
    return Drawn(maps, result.text, text=text)


def _classify(classifier: Any, text: str) -> Drawn:
    """Predict with attention-pooling weights, and capture the encoder's self-attention (if any) in one pass."""
    from attnlab.viz.capture import capture
    from attnlab.viz.highlight import Highlight

    tokens = classifier.text.tokenizer.tokenize(text)
    if not tokens:
        raise ConfigError(f"--text {short_repr(text)} gives no tokens for this model")
    layers = getattr(classifier.model, "layers", None)  # a Transformer's self-attention layers, not the pooling
    if layers is None:
        maps: Any = []
        (prediction,) = classifier.predict([text], return_attention=True)
    else:
        with capture(layers, src_tokens=tokens[:classifier.config.data.max_len]) as maps:
            (prediction,) = classifier.predict([text], return_attention=True)
    if prediction.attention is None:
        raise ConfigError(f"{type(classifier.model).__name__} returns no attention-pooling weights to draw")
    return Drawn(maps, highlight=Highlight(prediction.tokens, prediction.attention, prediction.label,
                                           prediction.probability, text=text), text=text)


def _hf_source(args: argparse.Namespace) -> Callable[[str], Drawn]:
    """Load a local Hugging Face model and tokenizer once; the returned function runs them on one text."""
    path, transformers, config = open_folder(args.hf_model)
    with quiet(transformers), load_errors(path):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        auto = transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModel
        model = auto.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()

    def draw(text: str) -> Drawn:
        import torch

        from attnlab.viz.capture import capture

        with quiet(transformers), torch.no_grad():
            encoded = tokenizer(text, return_tensors="pt")
            src_tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
            if not config.is_encoder_decoder:
                with capture(model, src_tokens=src_tokens) as maps:
                    model(**encoded)
                return Drawn(maps, text=text)
            generated = model.generate(**encoded, max_new_tokens=args.max_new_tokens, num_beams=1,
                                       do_sample=False)
            # Teacher-force the translation once more: row t is the decoder state that emitted token t + 1, so
            # the rows are labelled with the emitted tokens.
            emitted = tokenizer.convert_ids_to_tokens(generated[0, 1:].tolist())
            with capture(model, src_tokens=src_tokens, tgt_tokens=emitted) as maps:
                model(**encoded, decoder_input_ids=generated[:, :-1])
            return Drawn(maps, tokenizer.decode(generated[0], skip_special_tokens=True), text=text)

    return draw
