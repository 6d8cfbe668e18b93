"""``attnlab explain``: attention-based importance and attribution side by side, and how far to trust them.

Runs every method of :mod:`attnlab.explain` (raw attention, rollout, attention flow, gradient-weighted rollout;
saliency, input x gradient, integrated gradients, leave-one-out) on one text or image, or on ``--n`` examples of
the checkpoint's own test split, prints the faithfulness table (methods x metrics, then the uniform/permuted
attention checks), and writes the numbers as JSON and a page with every example's maps side by side.
``--hf-model DIR`` explains a local Hugging Face sequence classifier or encoder-decoder on one ``--text``,
through :mod:`attnlab.explain.captured`.

Exit codes: 0 ok, 2 usage (bad option, unknown method, a model or input this command cannot explain, captum or
scipy missing), 3 data, 4 checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attnlab.cli._run_options import SEED_MAX, int_in
from attnlab.core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    from attnlab.cli._images import add_image_options
    from attnlab.explain.report import METHODS

    p = sub.add_parser(
        "explain", help="attention vs gradient/perturbation attribution, with a faithfulness report",
        description="Explain a classifier, ViT or Transformer translation checkpoint on one input or on --n "
                    "examples of its test split (or a local Hugging Face text classifier or encoder-decoder on one "
                    "--text) with attention-based importance (raw attention, rollout, attention "
                    "flow, gradient-weighted rollout) and attribution (saliency, input x gradient, integrated "
                    "gradients, leave-one-out), and report rank agreement, perturbation curves "
                    "(comprehensiveness/sufficiency against a random ranking) and uniform/permuted attention checks.",
        epilog="example:  attnlab explain --checkpoint runs/keywords --split test --n 50 --html explain.html")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", help="a checkpoint (runs/x/best) or run directory")
    source.add_argument("--hf-model", metavar="DIR",
                        help="a local Hugging Face folder (config.json, weights, tokenizer) holding a sequence "
                             "classifier (e.g. BertForSequenceClassification) or an encoder-decoder (e.g. "
                             "MarianMTModel); with --text only; uniform/permuted checks are not available")
    inputs = p.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--text", help="one text to explain (classifiers and translation)")
    inputs.add_argument("--split", choices=("test", "valid"), help="explain --n examples of this split of the "
                                                                   "checkpoint's own data, spread evenly over it")
    add_image_options(p, inputs, many=True)
    p.add_argument("--n", type=int, default=100, metavar="N", help="examples of --split (default 100)")
    p.add_argument("--methods", default="all", metavar="M,M",
                   help=f"comma-separated methods or 'all' (default): {', '.join(METHODS)}")
    p.add_argument("--ig-steps", type=int, default=32, metavar="S", help="integrated-gradients steps (default 32)")
    p.add_argument("--max-k", type=int, default=10, metavar="K",
                   help="perturbation curves remove (or keep) the top 1..K positions (default 10)")
    p.add_argument("--permutations", type=int, default=5, metavar="P",
                   help="permuted-attention trials per example and attention module (default 5)")
    p.add_argument("--no-checks", action="store_true", help="skip the uniform/permuted attention checks")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=0,
                   help="seed of the random ranking and the permutations (default 0)")
    p.add_argument("--html", metavar="FILE", help="write every example's maps, one row per method, to FILE")
    p.add_argument("--json", metavar="FILE", help="write the report and every example's scores to FILE")
    p.add_argument("--readout", default="cls", metavar="cls|mean|POS",
                   help="--hf-model classifiers: where the model reads the sequence, for the attention-based "
                        "methods: cls (position 0, BERT-style; default), mean (mean pooling) or a position")
    p.add_argument("--remove-id", type=int, default=None, metavar="ID",
                   help="--hf-model: the token id that removes a token (default: the tokenizer's [MASK], else <unk>)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="--hf-model encoder-decoders: the longest translation explained (default 64)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for PyTorch (default 1: the small models run fastest on one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _methods(value: str) -> list[str] | None:
    from attnlab.explain.report import check_methods

    if value.strip() == "all":
        return None
    return check_methods([m.strip() for m in value.split(",") if m.strip()])


def _check(args: argparse.Namespace) -> list[str] | None:
    for name, low in (("n", 1), ("ig_steps", 1), ("max_k", 1), ("permutations", 1), ("threads", 1),
                      ("max_new_tokens", 1)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.text is not None and not args.text.strip():
        raise ConfigError("--text is empty; give the text to explain, e.g. --text \"a dull film\"")
    for flag, suffix in (("html", ".html"), ("json", ".json")):
        value = getattr(args, flag)
        if value and Path(value).suffix.lower() != suffix:
            raise ConfigError(f"--{flag} expects a file name ending in {suffix}, got {value[:80]!r}")
    if args.hf_model is not None and args.text is None:
        raise ConfigError("--hf-model explains one --text (Hugging Face text classifiers and encoder-decoders)")
    return _methods(args.methods)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnlab.explain.attribution import captum_attr
    from attnlab.explain.flow import _scipy

    methods = _check(args)
    captum_attr(), _scipy()  # a missing extra fails before any work
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _explain(args, methods)
    finally:
        torch.set_num_threads(previous)


def _explain(args: argparse.Namespace, methods: list[str] | None) -> int:
    from tqdm import tqdm

    from attnlab.explain import explain_batch
    from attnlab.explain.report import METHODS

    if args.hf_model is not None:
        adapter, kind, source = _hf_adapter(args)
        examples, what = [adapter.example(args.text)], "1 text"
    else:
        adapter, kind, source, examples, what = _checkpoint(args)
    with tqdm(total=len(examples), desc="explain", unit="example", file=sys.stderr,
              disable=args.no_progress or len(examples) < 2) as bar:
        explanations, report = explain_batch(adapter, examples, methods, ig_steps=args.ig_steps, max_k=args.max_k,
                                             seed=args.seed, permutations=args.permutations,
                                             checks=not args.no_checks, progress=bar.update)
    print(f"explained {what} with a {kind} ({source['where']})")
    if len(examples) == 1:
        ex = examples[0]
        print(f"explained output: {ex.prediction} (p = {ex.probability:.3f})")
    missing = [m for m in (methods or METHODS) if m not in report.methods]
    if missing:
        print(f"not defined for this model: {', '.join(missing)} (it has no self-attention layers)")
    print(report.table())
    if args.json:
        _write_json(args.json, source, kind, report, explanations)
        print(f"wrote {args.json}")
    if args.html:
        from attnlab.explain.page import write_explanation_html

        write_explanation_html(explanations, report, args.html, title=f"attnlab explain: {what} ({kind})")
        print(f"wrote {args.html}")
    return 0


def _checkpoint(args: argparse.Namespace) -> tuple[object, str, dict, list, str]:
    """An attnlab checkpoint: its adapter, model kind, where it came from, and the examples of the options."""
    from attnlab.explain import adapter_for
    from attnlab.pipeline.load import predictor_from_checkpoint, resolve_checkpoint
    from attnlab.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint))
    predictor = predictor_from_checkpoint(ckpt)
    adapter = adapter_for(predictor)
    examples, what = _examples(adapter, predictor, ckpt, args)
    source = {"checkpoint": str(ckpt.path), "step": ckpt.step, "where": f"checkpoint {ckpt.path}, step {ckpt.step}"}
    return adapter, predictor.config.model.kind, source, examples, what


def _hf_adapter(args: argparse.Namespace) -> tuple[object, str, dict]:
    """A local Hugging Face classifier or encoder-decoder with its tokenizer, wrapped in its captured adapter."""
    from attnlab.cli._hf import load_errors, open_folder, quiet
    from attnlab.explain import CapturedClassifierAdapter, CapturedTranslationAdapter

    readout = _readout(args.readout)
    path, transformers, config = open_folder(args.hf_model)
    if not (config.is_encoder_decoder
            or any(a.endswith("ForSequenceClassification") for a in config.architectures or [])):
        raise ConfigError(f"{path} holds a {', '.join(config.architectures or [config.model_type])}; explain "
                          "--hf-model takes sequence classifiers (...ForSequenceClassification) and "
                          "encoder-decoders")
    auto = (transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder
            else transformers.AutoModelForSequenceClassification)
    with quiet(transformers), load_errors(path):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = auto.from_pretrained(path, local_files_only=True).eval()
    if args.remove_id is None and all(getattr(tokenizer, f"{t}_token_id", None) is None for t in ("mask", "unk")):
        raise ConfigError(f"the tokenizer in {path} has no [MASK] or <unk> token to remove tokens with; pass "
                          "--remove-id ID")
    if config.is_encoder_decoder:
        adapter = CapturedTranslationAdapter(model, tokenizer=tokenizer, remove_id=args.remove_id,
                                             max_new_tokens=args.max_new_tokens)
    else:
        adapter = CapturedClassifierAdapter(model, tokenizer=tokenizer, remove_id=args.remove_id, readout=readout)
    return adapter, type(model).__name__, {"hf_model": str(path), "where": f"Hugging Face model {path}"}


def _readout(value: str) -> str | int:
    if value in ("cls", "mean"):
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--readout must be cls, mean or a position, got {value[:40]!r}") from None


def _examples(adapter: object, predictor: object, ckpt: object, args: argparse.Namespace) -> tuple[list, str]:
    """The examples named by the options, and how to call them in the first output line."""
    if adapter.kind == "image":
        if args.text is not None:
            raise ConfigError(f"{args.checkpoint} holds an image model; give it --image FILE, --test-index N or "
                              f"--split test")
        if args.split is not None:
            from attnlab.explain.inputs import split_examples

            examples = split_examples(adapter, predictor, ckpt.extra, split=args.split, n=args.n)
            return examples, f"{len(examples)} {args.split} images"
        from attnlab.cli._images import image_inputs

        items = image_inputs(predictor, args)
        return [adapter.example(i.pixels, name=i.name, truth=i.truth) for i in items], f"{len(items)} image(s)"
    if args.image is not None or args.test_index is not None:
        raise ConfigError(f"{args.checkpoint} holds a text model; give it --text or --split test")
    if args.split is not None:
        from attnlab.explain.inputs import split_examples

        examples = split_examples(adapter, predictor, ckpt.extra, split=args.split, n=args.n)
        return examples, f"{len(examples)} {args.split} texts"
    return [adapter.example(args.text)], "1 text"


def _write_json(path: str, source: dict, kind: str, report: object, explanations: list) -> None:
    def scores(e: object) -> dict:
        ex = e.example
        return {"tokens": ex.tokens, "text": ex.text, "prediction": ex.prediction, "probability": ex.probability,
                "truth": ex.truth, "output_tokens": ex.output_tokens,
                "scores": {m: s.double().nan_to_num(0.0).round(decimals=6).tolist() for m, s in e.scores.items()}}

    payload = {**{k: v for k, v in source.items() if k != "where"}, "model": kind, "report": report.to_dict(),
               "examples": [scores(e) for e in explanations]}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, ensure_ascii=False, indent=1, allow_nan=False), encoding="utf-8")
