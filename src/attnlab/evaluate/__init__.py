"""attnlab.evaluate: corpus BLEU and chrF via sacreBLEU (detokenized, cased, with full signatures); ROUGE via
rouge-score (:mod:`attnlab.evaluate.rouge`); accuracy and macro-F1 (:mod:`attnlab.evaluate.classification`); the
bag-of-words logistic-regression baseline (:mod:`attnlab.evaluate.baseline`)."""

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
from attnlab.evaluate.classification import ClassificationReport, accuracy, classification_report, macro_f1
from attnlab.evaluate.rouge import RougeReport, choose_lead_k, lead_k, score_rouge

__all__ = [
    "BleuScore",
    "ClassificationReport",
    "RougeReport",
    "accuracy",
    "choose_lead_k",
    "classification_report",
    "lead_k",
    "macro_f1",
    "score_rouge",
    "ChrfScore",
    "EvalReport",
    "bleu_tokenizer_for",
    "corpus_bleu",
    "corpus_chrf",
    "score_corpus",
    "score_files",
]
