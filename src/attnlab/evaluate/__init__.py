"""attnlab.evaluate: corpus BLEU and chrF via sacreBLEU (detokenized, cased, with full signatures)."""

from attnlab.evaluate.bleu import (
    BleuScore,
    ChrfScore,
    EvalReport,
    bleu_tokenizer_for,
    corpus_bleu,
    corpus_chrf,
    score_corpus,
    score_files,
)

__all__ = [
    "BleuScore",
    "ChrfScore",
    "EvalReport",
    "bleu_tokenizer_for",
    "corpus_bleu",
    "corpus_chrf",
    "score_corpus",
    "score_files",
]
