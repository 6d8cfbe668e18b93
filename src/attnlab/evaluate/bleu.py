"""Corpus BLEU and chrF with sacreBLEU (Papineni et al., 2002; Popović, 2015; Post, 2018).

Scores are computed on *detokenized*, cased text, as sacreBLEU intends: pass the model's detokenized output
and the raw references. Each result carries sacreBLEU's full signature
(``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``), which fixes every setting that changes the
number, so results are comparable across papers. For Chinese targets (``tgt_lang="zh"``) BLEU uses
sacreBLEU's ``zh`` tokenizer, which splits Chinese characters apart (Chinese has no spaces to split on).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.corpus import read_lines

# Language codes whose BLEU uses sacreBLEU's "zh" tokenizer.
CHINESE_LANGS = frozenset({"zh", "cmn", "zho", "chi", "zh-cn", "zh-tw", "zh-hans", "zh-hant", "yue"})


def _sacrebleu_metrics() -> Any:
    try:
        from sacrebleu import metrics
    except ImportError as exc:  # optional dependency
        raise ConfigError("BLEU/chrF need the sacrebleu package: pip install 'attnlab[eval]'") from exc
    return metrics


def bleu_tokenizer_for(tgt_lang: str | None) -> str:
    """sacreBLEU tokenizer for a target language: ``"zh"`` for Chinese, else the default ``"13a"``."""
    if tgt_lang is not None and tgt_lang.lower().replace("_", "-") in CHINESE_LANGS:
        return "zh"
    return "13a"


@dataclass(frozen=True)
class BleuScore:
    """Corpus BLEU.

    Attributes:
        score: BLEU in [0, 100].
        signature: sacreBLEU's full signature string.
        precisions: modified n-gram precisions for n = 1..4, in percent.
        bp: brevity penalty.
        ratio: hypothesis length / reference length (in tokens of the BLEU tokenizer).
        hyp_len: hypothesis length in tokens.
        ref_len: effective reference length in tokens.
    """

    score: float
    signature: str
    precisions: tuple[float, ...]
    bp: float
    ratio: float
    hyp_len: int
    ref_len: int

    def format(self) -> str:
        """sacreBLEU's one-line form: ``BLEU = 38.12 70.1/45.2/30.3/21.0 (BP = 1.000 ratio = ...)``."""
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
                f"hyp_len = {self.hyp_len} ref_len = {self.ref_len})")


@dataclass(frozen=True)
class ChrfScore:
    """Corpus chrF (character n-gram F-score; chrF2 by default).

    Attributes:
        score: chrF in [0, 100].
        signature: sacreBLEU's full signature string.
        char_order: maximum character n-gram order.
        word_order: maximum word n-gram order (0 for chrF, 2 for chrF++).
        beta: weight of recall relative to precision.
    """

    score: float
    signature: str
    char_order: int
    word_order: int
    beta: int

    @property
    def name(self) -> str:
        return f"chrF{self.beta}" + "+" * self.word_order

    def format(self) -> str:
        return f"{self.name} = {self.score:.2f}"


@dataclass(frozen=True)
class EvalReport:
    """BLEU and chrF of one hypothesis file against its reference(s)."""

    bleu: BleuScore
    chrf: ChrfScore
    num_sentences: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_sentences": self.num_sentences,
            "bleu": {"score": self.bleu.score, "signature": self.bleu.signature,
                     "precisions": list(self.bleu.precisions), "bp": self.bleu.bp, "ratio": self.bleu.ratio,
                     "hyp_len": self.bleu.hyp_len, "ref_len": self.bleu.ref_len},
            "chrf": {"name": self.chrf.name, "score": self.chrf.score, "signature": self.chrf.signature},
        }


def _reference_streams(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]],
                       names: tuple[str, Sequence[str]] | None = None) -> list[list[str]]:
    """References as a list of streams (one per reference set), each as long as the hypotheses."""
    if isinstance(hypotheses, str):
        raise ConfigError("hypotheses must be a sequence of sentences, not one string")
    streams = [list(references)] if not references or isinstance(references[0], str) else \
        [list(r) for r in references]  # type: ignore[arg-type]
    for k, stream in enumerate(streams):
        if len(stream) != len(hypotheses):
            if names is not None:
                hyp_name, ref_names = names
                raise DataError(f"{hyp_name} has {len(hypotheses)} lines but {ref_names[k]} has {len(stream)}: "
                                "hypotheses and references must be aligned line by line")
            raise DataError(f"{len(hypotheses)} hypotheses but {len(stream)} references"
                            + (f" in reference set {k + 1}" if len(streams) > 1 else ""))
    if not hypotheses:
        raise DataError("no sentences to score")
    return streams


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
                tgt_lang: str | None = None, tokenize: str | None = None, lowercase: bool = False) -> BleuScore:
    """Corpus BLEU of detokenized ``hypotheses`` against ``references``.

    Args:
        hypotheses: one detokenized sentence per segment.
        references: one sentence per segment, or several such lists (multiple references).
        tgt_lang: target language; Chinese codes select the ``zh`` tokenizer.
        tokenize: explicit sacreBLEU tokenizer (overrides ``tgt_lang``).
        lowercase: case-insensitive BLEU (the default, cased, is the standard report).

    Raises:
        DataError: different numbers of hypotheses and references, or nothing to score.
    """
    streams = _reference_streams(hypotheses, references)
    metric = _sacrebleu_metrics().BLEU(tokenize=tokenize or bleu_tokenizer_for(tgt_lang), lowercase=lowercase)
    result = metric.corpus_score(list(hypotheses), streams)
    return BleuScore(score=float(result.score), signature=str(metric.get_signature()),
                     precisions=tuple(float(p) for p in result.precisions), bp=float(result.bp),
                     ratio=float(result.ratio), hyp_len=int(result.sys_len), ref_len=int(result.ref_len))


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
                char_order: int = 6, word_order: int = 0, beta: int = 2) -> ChrfScore:
    """Corpus chrF (``word_order=2`` for chrF++) of detokenized ``hypotheses`` against ``references``.

    chrF works on characters, so it needs no language-specific tokenization (whitespace is ignored).

    Raises:
        DataError: different numbers of hypotheses and references, or nothing to score.
    """
    streams = _reference_streams(hypotheses, references)
    metric = _sacrebleu_metrics().CHRF(char_order=char_order, word_order=word_order, beta=beta)
    result = metric.corpus_score(list(hypotheses), streams)
    return ChrfScore(score=float(result.score), signature=str(metric.get_signature()), char_order=char_order,
                     word_order=word_order, beta=beta)


def score_corpus(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
                 tgt_lang: str | None = None) -> EvalReport:
    """BLEU and chrF together (the standard report)."""
    streams = _reference_streams(hypotheses, references)
    return EvalReport(corpus_bleu(hypotheses, streams, tgt_lang=tgt_lang), corpus_chrf(hypotheses, streams),
                      len(hypotheses))


def score_files(hyp_path: str | os.PathLike[str], ref_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                *, tgt_lang: str | None = None) -> EvalReport:
    """Score a hypothesis file against one or more reference files (one sentence per line, UTF-8).

    Lines are split on ``"\\n"`` only and kept as they are (empty lines included), so line N of every file is
    segment N.

    Raises:
        DataError: a line-count mismatch (naming both files and counts), unreadable files, or no lines.
    """
    if isinstance(ref_paths, (str, os.PathLike)):
        ref_paths = [ref_paths]
    if not ref_paths:
        raise ConfigError("score_files: at least one reference file is needed")
    hypotheses = read_lines(hyp_path)
    references = [read_lines(p) for p in ref_paths]
    if not hypotheses and not any(references):
        raise DataError(f"{hyp_path} and {', '.join(map(str, ref_paths))} are empty: nothing to score")
    _reference_streams(hypotheses, references, names=(str(hyp_path), [str(p) for p in ref_paths]))
    return score_corpus(hypotheses, references, tgt_lang=tgt_lang)
