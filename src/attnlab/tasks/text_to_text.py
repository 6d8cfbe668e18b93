"""Text-to-text tasks on encoder-decoders: translation, and summarization (a long text -> a one-line synopsis).

Both read ``(source, target)`` text pairs (:func:`attnlab.data.prepare.prepare_data`), train with teacher
forcing (:func:`attnlab.train.loss.teacher_forced_loss`), validate by greedy decoding a sample spread over the
validation set, and predict with :class:`Translator`. They differ in their metrics: BLEU/chrF and exact match
for translation, ROUGE-1/2/L against a Lead-k baseline for summarization.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.core.errors import CheckpointError
from attnlab.core.run_config import RunConfig
from attnlab.data.batching import BucketedBatches, ResampledBatches
from attnlab.data.dataset import Example
from attnlab.data.prepare import PreparedData, TextPipeline, prepare_data, restore_text_pipeline
from attnlab.decode.translate import Translation, translate_sentences
from attnlab.models.base import EncoderDecoder
from attnlab.models.build import build_model
from attnlab.tasks.base import Task, TestReport, register_task
from attnlab.train.checkpoint import Checkpoint
from attnlab.train.loss import loss_evaluator, teacher_forced_loss
from attnlab.train.trainer import BatchSource, Evaluate, LossFn

log = logging.getLogger(__name__)

__all__ = ["SummarizationTask", "TranslationTask", "Translator", "exact_match", "make_evaluator", "score_pairs",
           "spread_sample"]

# Defaults for the synthetic datasets, by model kind: small models that learn in minutes on 2 CPU cores.
SYNTHETIC_DEFAULTS: dict[str, dict[str, Any]] = {
    "seq2seq": {
        "model": {"kind": "seq2seq", "rnn": "gru", "embed_dim": 64, "hidden_size": 128, "num_layers": 1,
                  "dropout": 0.1, "attention": "additive"},
        "train": {"lr": 0.003, "warmup_steps": 50, "schedule": "cosine", "max_steps": 600, "label_smoothing": 0.0,
                  "tokens_per_batch": 4096, "eval_every": 100, "save_every": 100, "best_metric": "val_exact_match",
                  "best_mode": "max"},
    },
    "transformer": {
        "model": {"kind": "transformer", "d_model": 128, "num_heads": 4, "ffn_dim": 256, "encoder_layers": 2,
                  "decoder_layers": 2, "dropout": 0.1, "max_len": 256},
        "train": {"lr": 0.001, "warmup_steps": 200, "schedule": "inverse_sqrt", "max_steps": 2000,
                  "label_smoothing": 0.1, "tokens_per_batch": 4096, "eval_every": 250, "save_every": 250,
                  "best_metric": "val_exact_match", "best_mode": "max"},
    },
}


# ------------------------------------------------------------------------------------------- predictor


@dataclass
class Translator:
    """A trained encoder-decoder ready to turn text into text (translation or summarization).

    Attributes:
        model: in eval mode.
        text: its tokenizers and vocabularies.
        config: the run configuration it was trained with.
        step: training step of the checkpoint.
        path: the checkpoint directory.
    """

    model: EncoderDecoder
    text: TextPipeline
    config: RunConfig
    step: int
    path: Path

    def translate(self, sentences: list[str], *, beam_size: int | None = None, n_best: int = 1,
                  return_attention: bool = False, max_len: int | None = None) -> list[Translation]:
        """Translate ``sentences`` (input order kept); beam size defaults to the run's ``decode.beam_size``.

        A source longer than the run's ``data.max_len`` tokens is cut to it (the model never saw longer ones); how
        many were cut is logged as a warning, once per call."""
        cfg = self.config.decode
        with torch.inference_mode():
            return translate_sentences(
                self.model, sentences, self.text.src_tokenizer, self.text.src_vocab, self.text.tgt_tokenizer,
                self.text.tgt_vocab, beam_size=cfg.beam_size if beam_size is None else beam_size, n_best=n_best,
                batch_size=cfg.batch_size, max_len=max_len if max_len is not None else cfg.max_len,
                max_src_len=self.config.data.max_len, length_penalty=cfg.length_penalty,
                early_stopping=cfg.early_stopping, return_attention=return_attention, warn_cut=True)


def load_weights(model: nn.Module, ckpt: Checkpoint) -> nn.Module:
    """Load a checkpoint's weights into the model built from its own config; eval mode.

    Weights holding NaN or inf are refused: the trainer never applies a non-finite update, so such a checkpoint is
    damaged, and a model computing with them would emit empty or arbitrary output with no error.
    """
    for name, tensor in ckpt.model_state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"checkpoint {ckpt.path}: {name} holds {bad} NaN/inf value(s) of {tensor.numel()}; "
                                  f"the checkpoint is damaged (use another one, e.g. OUT/last or a snapshot)")
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt.path}: weights do not fit its own model config ({first})") from None
    return model.eval()


# ------------------------------------------------------------------------------------------- scoring


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


def text_metrics(hypotheses: Sequence[str], references: Sequence[str], cfg: RunConfig, *,
                 corpus_metrics: bool | None = None) -> dict[str, Any]:
    """The task's scores of decoded texts: exact match always; on natural-language data (``corpus_metrics=None``:
    whenever the source is a corpus) BLEU/chrF for translation or ROUGE-1/2/L for summarization."""
    metrics: dict[str, Any] = {"exact_match": exact_match(hypotheses, references), "sentences": len(hypotheses)}
    if not (corpus_metrics if corpus_metrics is not None else cfg.data.source != "task"):
        return metrics
    if cfg.task_name == "summarization":
        from attnlab.evaluate.rouge import score_rouge

        report = score_rouge(list(hypotheses), list(references))
        metrics.update(rouge1=report.rouge1, rouge2=report.rouge2, rougeL=report.rouge_l,
                       rouge_settings=report.settings)
    else:
        from attnlab.evaluate.bleu import score_corpus

        report = score_corpus(hypotheses, references, tgt_lang=cfg.data.tgt_lang)
        metrics.update(bleu=report.bleu.score, chrf=report.chrf.score, bleu_signature=report.bleu.signature,
                       chrf_signature=report.chrf.signature)
    return metrics


def score_pairs(model: EncoderDecoder, text: TextPipeline, pairs: Sequence[tuple[str, str]], cfg: RunConfig, *,
                beam_size: int | None = None, bleu: bool | None = None) -> tuple[dict[str, Any], list[str]]:
    """Decode the sources of ``pairs`` and score them against the targets (:func:`text_metrics`).

    Returns ``(metrics, hypotheses)``; ``bleu`` forces the corpus metrics on (or off).
    """
    sources = [s for s, _ in pairs]
    refs = [t for _, t in pairs]
    beam = cfg.decode.beam_size if beam_size is None else beam_size
    out = translate_sentences(model, sources, text.src_tokenizer, text.src_vocab, text.tgt_tokenizer, text.tgt_vocab,
                              beam_size=beam, batch_size=cfg.decode.batch_size, max_len=cfg.decode.max_len,
                              max_src_len=cfg.data.max_len, length_penalty=cfg.decode.length_penalty,
                              early_stopping=cfg.decode.early_stopping)
    hyps = [t.text for t in out]
    metrics = text_metrics(hyps, refs, cfg, corpus_metrics=bleu)
    metrics["beam_size"] = beam
    return metrics, hyps


_VALIDATION_KEYS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")


def make_evaluator(prepared: PreparedData, cfg: RunConfig) -> Evaluate:
    """The trainer's evaluation: ``val_loss``/``val_ppl`` on all validation pairs, plus ``val_exact_match`` (and
    ``val_bleu``/``val_chrf`` or ``val_rouge1/2/L`` on corpora) from greedy decoding of ``eval_sentences`` of them,
    spread evenly over the validation set (:func:`spread_sample`)."""
    batches = BucketedBatches(prepared.valid_examples, cfg.train.tokens_per_batch, shuffle=False)
    loss_eval = loss_evaluator(batches)
    sample = spread_sample(prepared.valid, cfg.decode.eval_sentences)

    def evaluate(model: EncoderDecoder) -> dict[str, float]:
        metrics = dict(loss_eval(model))
        if sample:
            scores, _ = score_pairs(model, prepared.text, sample, cfg, beam_size=1)
            metrics["val_exact_match"] = scores["exact_match"]
            metrics.update({f"val_{key}": scores[key] for key in _VALIDATION_KEYS if key in scores})
        return metrics

    return evaluate


def _line(name: str, count: int, metrics: Mapping[str, Any]) -> str:
    line = f"test ({count} pairs, {name}): exact match {100 * metrics['exact_match']:.1f}%"
    if "bleu" in metrics:
        line += f", BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}"
    if "rouge1" in metrics:
        line += f", ROUGE-1 {metrics['rouge1']:.2f}, ROUGE-2 {metrics['rouge2']:.2f}, ROUGE-L {metrics['rougeL']:.2f}"
    return line


# ------------------------------------------------------------------------------------------- tasks


@register_task
class TranslationTask(Task):
    """Text in one language -> text in another (the data: :mod:`attnlab.data.prepare`)."""

    name = "translation"
    truncate = False  # a pair with a side longer than data.max_len is skipped (and counted)

    def defaults(self, model_kind: str, *, synthetic: bool) -> dict[str, Any]:
        if synthetic and model_kind in SYNTHETIC_DEFAULTS:
            return json.loads(json.dumps(SYNTHETIC_DEFAULTS[model_kind]))
        return {"model": {"kind": model_kind}, "train": {"best_metric": "val_bleu", "best_mode": "max"}}

    def prepare(self, cfg: RunConfig, saved: Mapping[str, Any] | None = None, *,
                where: str = "checkpoint") -> PreparedData:
        text = restore_text_pipeline(dict(saved), where) if saved is not None else None
        return prepare_data(cfg.data, text, truncate=self.truncate)

    def build_model(self, cfg: RunConfig, data: PreparedData) -> nn.Module:
        return build_model(cfg.model, len(data.text.src_vocab), len(data.text.tgt_vocab))

    def train_batches(self, data: PreparedData, cfg: RunConfig) -> BatchSource:
        if not cfg.data.bpe_dropout:
            return BucketedBatches(data.train_examples, cfg.train.tokens_per_batch, seed=cfg.train.seed)
        from attnlab.data.bpe_dropout import ExampleDropout

        text = data.text
        dropout = ExampleDropout(data.train_examples, data.train, (text.src_tokenizer, text.tgt_tokenizer),
                                 (text.src_vocab, text.tgt_vocab), cfg.data.bpe_dropout, max_len=cfg.data.max_len,
                                 truncate=self.truncate)
        log.info("BPE-dropout %g: the training pairs are segmented afresh every epoch", cfg.data.bpe_dropout)

        def epoch_examples(epoch: int) -> list[Example]:
            examples, stats = dropout.examples(f"{cfg.train.seed}:{epoch}")
            if stats["kept_deterministic"] or stats["truncated"]:
                log.info("epoch %d: BPE-dropout made %d pair(s) longer than data.max_len=%d: %s", epoch,
                         stats["kept_deterministic"] + stats["truncated"], cfg.data.max_len,
                         "cut to it" if self.truncate else "they keep their deterministic segmentation")
            return examples

        return ResampledBatches(epoch_examples, cfg.train.tokens_per_batch, seed=cfg.train.seed)

    def loss(self, cfg: RunConfig) -> LossFn:
        return functools.partial(teacher_forced_loss, label_smoothing=cfg.train.label_smoothing)

    def evaluator(self, data: PreparedData, cfg: RunConfig) -> Evaluate:
        return make_evaluator(data, cfg)

    def load(self, ckpt: Checkpoint, cfg: RunConfig) -> Translator:
        text = restore_text_pipeline(ckpt.extra, str(ckpt.path))
        model = load_weights(build_model(cfg.model, len(text.src_vocab), len(text.tgt_vocab)), ckpt)
        return Translator(model, text, cfg, ckpt.step, ckpt.path)

    def score(self, predictor: Translator, examples: Sequence[tuple[str, str]], cfg: RunConfig, *,
              beams: Sequence[int] = (1,), baseline_data: Any = None) -> list[TestReport]:
        reports = []
        for beam in beams:
            metrics, hyps = score_pairs(predictor.model, predictor.text, examples, predictor.config, beam_size=beam)
            reports.append(TestReport(f"beam{beam}", metrics, _line(f"beam {beam}", len(examples), metrics), hyps))
        return reports


@register_task
class SummarizationTask(TranslationTask):
    """A long text -> its one-line summary, scored with ROUGE beside a Lead-k baseline chosen on validation."""

    name = "summarization"
    truncate = True  # a description longer than data.max_len keeps its lead rather than being skipped

    def defaults(self, model_kind: str, *, synthetic: bool) -> dict[str, Any]:
        return {"model": {"kind": model_kind}, "train": {"best_metric": "val_rougeL", "best_mode": "max"}}

    def score(self, predictor: Translator, examples: Sequence[tuple[str, str]], cfg: RunConfig, *,
              beams: Sequence[int] = (1,), baseline_data: Any = None) -> list[TestReport]:
        reports = super().score(predictor, examples, cfg, beams=beams)
        if baseline_data is not None and baseline_data.valid:
            from attnlab.evaluate.rouge import choose_lead_k, lead_k, score_rouge

            k, _ = choose_lead_k(baseline_data.valid)
            hyps = [lead_k(src, k) for src, _ in examples]
            rouge = score_rouge(hyps, [t for _, t in examples])
            metrics = {"k": k, "rouge1": rouge.rouge1, "rouge2": rouge.rouge2, "rougeL": rouge.rouge_l,
                       "rouge_settings": rouge.settings, "sentences": len(examples)}
            line = (f"baseline Lead-{k} (k chosen on validation): ROUGE-1 {rouge.rouge1:.2f}, "
                    f"ROUGE-2 {rouge.rouge2:.2f}, ROUGE-L {rouge.rouge_l:.2f}")
            reports.append(TestReport("lead_k", metrics, line, hyps))
        return reports
