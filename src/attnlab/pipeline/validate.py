"""Validation during training and scoring after it: loss, exact match, BLEU and chrF by decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attnlab.core.run_config import RunConfig
from attnlab.data.batching import BucketedBatches
from attnlab.data.prepare import PreparedData, TextPipeline
from attnlab.decode.translate import translate_sentences
from attnlab.models.base import EncoderDecoder
from attnlab.train.loss import loss_evaluator
from attnlab.train.trainer import Evaluate


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Share of hypotheses identical to their reference (after stripping outer whitespace), in [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"exact_match: {len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        return float("nan")
    return sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True)) / len(hypotheses)


def spread_sample(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread evenly over ``items`` (first and last included), in their order; all if fewer.

    The validation decode scores a sample, and a corpus may be ordered (Tatoeba's file is sorted by sentence
    length, and its held-out lines keep the file order): the first ``count`` would be its shortest sentences,
    whose BLEU says little about the rest. Evenly spaced positions cover every length and stay deterministic.
    """
    n = len(items)
    if count >= n:
        return list(items)
    if count <= 0:
        return []
    if count == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (count - 1))] for i in range(count)]


def score_pairs(model: EncoderDecoder, text: TextPipeline, pairs: Sequence[tuple[str, str]], cfg: RunConfig, *,
                beam_size: int | None = None, bleu: bool | None = None) -> tuple[dict[str, Any], list[str]]:
    """Translate the sources of ``pairs`` and score them against the targets.

    Returns ``(metrics, hypotheses)``; metrics hold ``exact_match`` always and ``bleu``/``chrf`` (with their
    sacreBLEU signatures) for natural-language data (``bleu=None``: whenever the source is a corpus).
    """
    sources = [s for s, _ in pairs]
    refs = [t for _, t in pairs]
    beam = cfg.decode.beam_size if beam_size is None else beam_size
    out = translate_sentences(model, sources, text.src_tokenizer, text.src_vocab, text.tgt_tokenizer, text.tgt_vocab,
                              beam_size=beam, batch_size=cfg.decode.batch_size, max_len=cfg.decode.max_len,
                              max_src_len=cfg.data.max_len, length_penalty=cfg.decode.length_penalty)
    hyps = [t.text for t in out]
    metrics: dict[str, Any] = {"exact_match": exact_match(hyps, refs), "sentences": len(hyps), "beam_size": beam}
    if bleu if bleu is not None else cfg.data.source != "task":
        from attnlab.evaluate.bleu import score_corpus

        report = score_corpus(hyps, refs, tgt_lang=cfg.data.tgt_lang)
        metrics.update(bleu=report.bleu.score, chrf=report.chrf.score, bleu_signature=report.bleu.signature,
                       chrf_signature=report.chrf.signature)
    return metrics, hyps


def make_evaluator(prepared: PreparedData, cfg: RunConfig) -> Evaluate:
    """The trainer's evaluation: ``val_loss``/``val_ppl`` on all validation pairs, plus ``val_exact_match``
    (and ``val_bleu``/``val_chrf`` on corpora) from greedy decoding of ``eval_sentences`` of them, spread evenly
    over the validation set (:func:`spread_sample`)."""
    batches = BucketedBatches(prepared.valid_examples, cfg.train.tokens_per_batch, shuffle=False)
    loss_eval = loss_evaluator(batches)
    sample = spread_sample(prepared.valid, cfg.decode.eval_sentences)

    def evaluate(model: EncoderDecoder) -> dict[str, float]:
        metrics = dict(loss_eval(model))
        if sample:
            scores, _ = score_pairs(model, prepared.text, sample, cfg, beam_size=1)
            metrics["val_exact_match"] = scores["exact_match"]
            for key in ("bleu", "chrf"):
                if key in scores:
                    metrics[f"val_{key}"] = scores[key]
        return metrics

    return evaluate
