"""``attnlab explain-head``: one attention head for one query, every step with the model's own numbers.

Without ``--checkpoint`` it explains a small built-in example that needs no data: a seeded
``MultiHeadAttention(d_model=8, num_heads=2)`` over the words of ``--text``, each word a seeded vector (the same
word always gets the same one) plus its sinusoidal position. With ``--checkpoint`` it runs a trained Transformer
on ``--text`` and explains one head of one of its attention layers, with the inputs that layer really received.
"""

from __future__ import annotations

import argparse
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlab.cli._run_options import SEED_MAX, int_in
from attnlab.core.errors import ConfigError

EXAMPLE_TEXT = "The cat sat on the mat."
EXAMPLE_D_MODEL, EXAMPLE_HEADS = 8, 2


@dataclass
class Explained:
    """What a source hands to the printing code: every step of one attention call, and its labels."""

    steps: Any  # attnlab.viz.head_steps.AttentionSteps
    query_tokens: list[str]
    key_tokens: list[str]
    what: str  # one line naming the model and the attention layer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain-head", help="show one attention head's computation for one query, step by step, with real numbers",
        description="Explain one head of multi-head attention for one query position: the input row, the head's "
                    "slices of the Q/K/V projections, the scores q.k, the scaling by 1/sqrt(Dh), the mask, the "
                    "softmax weights, the weighted sum of value rows and the output projection, with the shape at "
                    "each step. Without --checkpoint: a small seeded example that needs no data.",
        epilog="examples:  attnlab explain-head --query cat      "
               "attnlab explain-head --checkpoint runs/dates/best --text 'Nov 21, 2026' --layer 1 --head 0")
    p.add_argument("--text", default=None,
                   help=f"the sentence whose tokens are the queries (default for the example: {EXAMPLE_TEXT!r})")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="an attnlab Transformer checkpoint (runs/x/best) or run directory; default: a built-in "
                        "seeded example")
    p.add_argument("--kind", choices=("encoder", "decoder", "cross"), default="encoder",
                   help="with --checkpoint: encoder self-attention (default), decoder (causal) self-attention or "
                        "cross-attention; the decoder reads the model's own greedy translation of --text")
    p.add_argument("--layer", type=int, default=0, metavar="L",
                   help="attention layer L (0-based; negative counts from the end; default 0)")
    p.add_argument("--head", type=int, default=0, metavar="H", help="head H (0-based; default 0)")
    p.add_argument("--query", default="0", metavar="Q",
                   help="the query: a position (0-based; negative counts from the end) or a token of the text "
                        "(its first occurrence; a number is always a position); default 0")
    p.add_argument("--causal", action="store_true",
                   help="built-in example only: causal self-attention (each token sees only itself and earlier ones)")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=0,
                   help="built-in example only: the seed of its weights (default 0)")
    p.add_argument("--html", metavar="FILE",
                   help="also write a self-contained page where clicking a token chooses the query")
    p.add_argument("--decimals", type=int, default=3, metavar="N", help="decimal places shown (0-8; default 3)")
    p.add_argument("--max-items", type=int, default=8, metavar="N",
                   help="show at most N numbers of a vector and N keys of a table, eliding the middle (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="--kind decoder/cross: longest translation to generate (default 64)")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.text is not None and not args.text.strip():
        raise ConfigError("--text is empty; give a sentence, e.g. --text \"the cat sat on the mat\"")
    if args.html and Path(args.html).suffix.lower() != ".html":
        raise ConfigError(f"--html expects a file name ending in .html, got {args.html!r}")
    if not 0 <= args.decimals <= 8:
        raise ConfigError(f"--decimals must be in 0..8, got {args.decimals}")
    if args.max_items < 2:
        raise ConfigError(f"--max-items must be at least 2, got {args.max_items}")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.checkpoint is None:
        if args.kind != "encoder":
            raise ConfigError("--kind needs --checkpoint; the built-in example has one self-attention layer "
                              "(add --causal for a decoder-style causal mask)")
        if args.layer not in (0, -1):
            raise ConfigError(f"--layer {args.layer} is out of range: the built-in example has 1 layer (0)")
    elif args.text is None:
        raise ConfigError("--checkpoint needs --text, the sentence to run the model on")
    elif args.causal:
        raise ConfigError("--causal is for the built-in example; a checkpoint's decoder self-attention "
                          "(--kind decoder) is causal already")


def run(args: argparse.Namespace) -> int:
    from attnlab.viz.head_steps import format_table, write_explain_head_html

    _check_args(args)
    explained = _from_checkpoint(args) if args.checkpoint else _example(args)
    steps = explained.steps
    head = _position("--head", args.head, steps.num_heads, "heads")
    query = _query(args.query, explained.query_tokens)
    print(explained.what)
    print("queries: " + "  ".join(f"{i}:{t}" for i, t in enumerate(explained.query_tokens)))
    if not steps.is_self:
        print("keys:    " + "  ".join(f"{j}:{t}" for j, t in enumerate(explained.key_tokens)))
    print()
    print(format_table(steps.explain(head, query), query_tokens=explained.query_tokens,
                       key_tokens=explained.key_tokens, decimals=args.decimals, max_items=args.max_items))
    if args.html:
        title = f"attnlab explain-head: {explained.what}"
        write_explain_head_html(steps, args.html, query_tokens=explained.query_tokens,
                                key_tokens=explained.key_tokens, title=title, head=head, query_index=query,
                                decimals=args.decimals)
        print(f"\nwrote {args.html}")
    return 0


def _position(option: str, value: int, size: int, what: str) -> int:
    if not -size <= value < size:
        count = f"is 1 {what[:-1]}" if size == 1 else f"are {size} {what}"
        raise ConfigError(f"{option} {value} is out of range: there {count} (0..{size - 1})")
    return value % size


def _query(value: str, tokens: list[str]) -> int:
    """``--query`` as a position, else as the first occurrence of a token."""
    if re.fullmatch(r"-?\d+", value.strip()):
        return _position("--query", int(value), len(tokens), "query positions")
    if value in tokens:
        return tokens.index(value)
    shown = ", ".join(repr(t) for t in tokens[:20]) + (", ..." if len(tokens) > 20 else "")
    raise ConfigError(f"--query {value!r} is neither a position nor one of the query tokens ({shown})")


# -------------------------------------------------------------------------------------------- sources
def _example(args: argparse.Namespace) -> Explained:
    """The built-in example: seeded weights and word vectors, sinusoidal positions; reproducible everywhere."""
    import torch

    from attnlab.attention import MultiHeadAttention
    from attnlab.attention.positional import sinusoid_table
    from attnlab.data.tokenize import WordTokenizer
    from attnlab.viz.head_steps import explain_attention

    text = EXAMPLE_TEXT if args.text is None else args.text
    tokens = WordTokenizer().tokenize(text)
    if not tokens:
        raise ConfigError(f"--text {text!r} has no words to attend over")
    D = EXAMPLE_D_MODEL
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG
        torch.manual_seed(args.seed)
        mha = MultiHeadAttention(D, EXAMPLE_HEADS).eval()
        with torch.no_grad():  # small nonzero biases, so that the bias terms show in every step
            mha.in_proj_bias.normal_(0.0, 0.1)
            mha.out_proj.bias.normal_(0.0, 0.1)
    # A word's vector depends on the word and the seed only (crc32 is stable across runs, unlike hash()).
    embed = torch.stack([torch.randn(D, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()) + args.seed))
                         for t in tokens])  # (T, D)
    x = (embed + sinusoid_table(len(tokens), D)).unsqueeze(0)  # (1, T, D)
    steps = explain_attention(mha, x, is_causal=args.causal)
    what = (f"built-in example: MultiHeadAttention(d_model={D}, num_heads={EXAMPLE_HEADS}), seed {args.seed}, "
            f"{'causal ' if args.causal else ''}self-attention over seeded word vectors + sinusoidal positions")
    return Explained(steps, tokens, tokens, what)


def _from_checkpoint(args: argparse.Namespace) -> Explained:
    from attnlab.pipeline import Classifier, load_predictor

    predictor = load_predictor(args.checkpoint)
    model = predictor.model
    if isinstance(predictor, Classifier) and _attention_layers(getattr(model, "layers", None), "self_attn"):
        return _classifier(predictor, args)
    if _attention_layers(getattr(model, "encoder_layers", None), "self_attn"):
        return _transformer(predictor, args)
    raise ConfigError(f"{args.checkpoint} holds a {type(model).__name__}, which has no multi-head attention layers; "
                      "explain-head needs a Transformer (train one with `--model transformer`)")


def _attention_layers(layers: Any, name: str) -> list[Any]:
    """Each layer's ``name`` attention module when all of them are attnlab's MultiHeadAttention, else ``[]``."""
    from attnlab.attention import MultiHeadAttention

    modules = [getattr(layer, name, None) for layer in (layers or [])]
    return modules if modules and all(isinstance(m, MultiHeadAttention) for m in modules) else []


def _pick(modules: list[Any], layer: int, what: str) -> Any:
    return modules[_position("--layer", layer, len(modules), f"{what} layers")]


def _tokens(tokenizer: Any, text: str, max_len: int) -> list[str]:
    tokens = tokenizer.tokenize(text)[:max_len]
    if not tokens:
        raise ConfigError(f"--text {text!r} gives no tokens for this model")
    return tokens


def _classifier(classifier: Any, args: argparse.Namespace) -> Explained:
    if args.kind != "encoder":
        raise ConfigError(f"--kind {args.kind}: a classifier has only encoder self-attention (use --kind encoder)")
    mha = _pick(_attention_layers(classifier.model.layers, "self_attn"), args.layer, "encoder")
    tokens = _tokens(classifier.text.tokenizer, args.text, classifier.config.data.max_len)
    call = _record_call(mha, lambda: classifier.predict([args.text]))
    layer = args.layer % len(classifier.model.layers)
    what = f"checkpoint {args.checkpoint}: classifier encoder self-attention, layer {layer}"
    return Explained(_explain(mha, call), tokens, tokens, what)


def _transformer(translator: Any, args: argparse.Namespace) -> Explained:
    import torch

    from attnlab.data.vocab import BOS_ID

    model, text = translator.model, translator.text
    src_tokens = _tokens(text.src_tokenizer, args.text, translator.config.data.max_len)
    device = next(model.parameters()).device
    src = torch.tensor([text.src_vocab.encode(src_tokens)], device=device)  # (1, Ts)
    src_lens = torch.tensor([src.shape[1]], device=device)  # (1,)
    if args.kind == "encoder":
        layers = _attention_layers(model.encoder_layers, "self_attn")
        mha = _pick(layers, args.layer, "encoder")
        call = _record_call(mha, lambda: model.encode(src, src_lens))
        what = f"checkpoint {args.checkpoint}: encoder self-attention, layer {args.layer % len(layers)}"
        return Explained(_explain(mha, call), src_tokens, src_tokens, what)
    layers = _attention_layers(model.decoder_layers, "self_attn" if args.kind == "decoder" else "cross_attn")
    mha = _pick(layers, args.layer, "decoder")
    # Teacher-force the model's greedy translation as `attnlab viz` does: query t is the decoder position that reads
    # input token t (<bos> first) and emitted output t.
    result = translator.translate([args.text], beam_size=1, max_len=args.max_new_tokens)[0]
    hyp = result.best
    emitted = 0 if hyp is None else len(hyp.tokens) + int(hyp.ended)
    tgt_ids = [BOS_ID, *(hyp.tokens if hyp is not None else [])][:max(emitted, 1)]
    tgt_tokens = [text.tgt_vocab.id_to_token(i) for i in tgt_ids]
    tgt_in = torch.tensor([tgt_ids], device=device)  # (1, Tt)
    call = _record_call(mha, lambda: model(src, src_lens, tgt_in))
    name = "decoder (causal) self-attention" if args.kind == "decoder" else "cross-attention"
    what = (f"checkpoint {args.checkpoint}: {name}, layer {args.layer % len(layers)}, decoder reading its greedy "
            f"translation {result.text!r}")
    keys = tgt_tokens if args.kind == "decoder" else src_tokens
    return Explained(_explain(mha, call), tgt_tokens, keys, what)


def _record_call(module: Any, run: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of ``module``'s first call while ``run()`` runs."""
    import torch

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def hook(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not calls:
            calls.append((args, dict(kwargs)))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    if not calls:
        raise ConfigError("the chosen attention layer was not called for this text")
    return calls[0]


def _explain(mha: Any, call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
    from attnlab.viz.head_steps import explain_attention

    args, kwargs = call
    if kwargs.get("cache") is not None:
        raise ConfigError("the chosen attention layer was called with a KV cache; explain-head needs a full pass")
    inputs = [a.clone() for a in args]  # inference-mode tensors become ordinary ones
    keywords = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in kwargs.items()
                if k in ("valid_lens", "mask", "is_causal") and v is not None}
    return explain_attention(mha, *inputs, **keywords)
