"""ROUGE-1, ROUGE-2 and ROUGE-L F1 with Google Research's ``rouge-score`` package (Lin, 2004), and Lead-k.

ROUGE-N counts the n-grams a hypothesis shares with its reference (clipped counts); ROUGE-L uses their longest
common subsequence (summary-level "ROUGE-Lsum" is not used: sources and synopses are single lines). Each
measures precision (over the hypothesis) and recall (over the reference); we report their harmonic mean F1,
averaged over sentences and scaled to [0, 100], as the summarization literature does (e.g. See et al., 2017).

Tokenization is rouge-score's default, and the numbers are only comparable under it: text is lower-cased,
every character outside ``[a-z0-9]`` becomes a space (so punctuation and all non-ASCII letters vanish:
``"café"`` -> ``"caf"``), and with ``stemmer=True`` (the default, as in most papers) tokens longer than 3
characters are reduced by the Porter stemmer. A hypothesis or reference with no tokens left scores 0. The
:attr:`RougeReport.settings` string records the package version and these choices, as sacreBLEU's signature
does for BLEU (:mod:`attnlab.evaluate.bleu`).

:func:`lead_k` is the classic extractive baseline (the first k words of the source, Nenkova, 2005);
:func:`choose_lead_k` picks k on the *validation* set so that the test set stays unseen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from attnlab.core.errors import ConfigError, DataError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class _WordCachedTokenizer:
    """rouge-score's ``DefaultTokenizer``, memoized per whitespace-separated word (Lead-k rescores each word 26 times).

    Exact: that tokenizer turns every character outside ``[a-z0-9]`` (whitespace included) into a token boundary
    and stems token by token, so the tokens of a text are the tokens of its words, concatenated.
    """

    def __init__(self, stemmer: bool):
        from rouge_score import tokenizers

        self._inner = tokenizers.DefaultTokenizer(use_stemmer=stemmer)
        self._cache: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for word in text.split():
            cached = self._cache.get(word)
            if cached is None:
                cached = self._cache[word] = self._inner.tokenize(word)
            tokens.extend(cached)
        return tokens


def _rouge_scorer(stemmer: bool) -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:  # optional dependency
        raise ConfigError("ROUGE needs the rouge-score package: pip install 'attnlab[eval]'") from exc
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_WordCachedTokenizer(stemmer))


def rouge_settings(stemmer: bool = True) -> str:
    """The signature of a score: ``rouge-score:0.1.2|stem:porter|tok:lower-alnum|agg:mean-f1``."""
    try:
        version = metadata.version("rouge-score")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"rouge-score:{version}|stem:{'porter' if stemmer else 'none'}|tok:lower-alnum|agg:mean-f1"


@dataclass(frozen=True)
class RougeReport:
    """Mean sentence-level ROUGE F1 scores, in [0, 100].

    Attributes:
        rouge1: ROUGE-1 (unigram) F1.
        rouge2: ROUGE-2 (bigram) F1.
        rouge_l: ROUGE-L (longest common subsequence) F1.
        count: number of hypothesis/reference pairs scored.
        settings: package version, stemmer, tokenization and aggregation (see :func:`rouge_settings`).
    """

    rouge1: float
    rouge2: float
    rouge_l: float
    count: int
    settings: str

    @property
    def mean(self) -> float:
        """The mean of the three F1 scores (what :func:`choose_lead_k` maximizes)."""
        return (self.rouge1 + self.rouge2 + self.rouge_l) / 3

    def format(self) -> str:
        """One line: ``ROUGE-1 = 40.12 ROUGE-2 = 17.30 ROUGE-L = 36.70 (n = 2000; rouge-score:0.1.2|...)``."""
        return (f"ROUGE-1 = {self.rouge1:.2f} ROUGE-2 = {self.rouge2:.2f} ROUGE-L = {self.rouge_l:.2f} "
                f"(n = {self.count}; {self.settings})")

    def to_dict(self) -> dict[str, Any]:
        return {"rouge1": self.rouge1, "rouge2": self.rouge2, "rougeL": self.rouge_l, "count": self.count,
                "settings": self.settings}


def score_rouge(hypotheses: Sequence[str], references: Sequence[str], *, stemmer: bool = True) -> RougeReport:
    """Mean ROUGE-1/2/L F1 (x 100) of ``hypotheses`` against one reference each.

    Args:
        hypotheses: one generated summary per segment (detokenized text).
        references: one reference summary per segment.
        stemmer: apply the Porter stemmer to tokens longer than 3 characters (rouge-score's ``use_stemmer``).

    Raises:
        ConfigError: rouge-score is not installed, or either argument is a single string.
        DataError: (a ``ValueError``) different numbers of hypotheses and references, or nothing to score.
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ConfigError("hypotheses and references must be sequences of texts, not one string")
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must be aligned")
    if not hypotheses:
        raise DataError("no summaries to score")
    return _mean_f1(_rouge_scorer(stemmer), hypotheses, references, stemmer)


def _mean_f1(scorer: Any, hypotheses: Sequence[str], references: Sequence[str], stemmer: bool) -> RougeReport:
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references, strict=True):
        scores = scorer.score(ref, hyp)  # rouge-score's order: (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    n = len(hypotheses)
    return RougeReport(100 * totals["rouge1"] / n, 100 * totals["rouge2"] / n, 100 * totals["rougeL"] / n, n,
                       rouge_settings(stemmer))


def lead_k(text: str, k: int) -> str:
    """The first ``k`` whitespace-separated words of ``text``, joined by single spaces (Lead-k)."""
    if k < 1:
        raise ConfigError(f"lead_k: k must be >= 1, got {k}")
    return " ".join(text.split()[:k])


def choose_lead_k(valid_pairs: Sequence[tuple[str, str]], ks: Iterable[int] = range(5, 31), *,
                  stemmer: bool = True) -> tuple[int, RougeReport]:
    """The Lead-k baseline tuned on validation ``(source, reference)`` pairs.

    Returns the ``k`` of ``ks`` whose hypotheses have the highest mean of ROUGE-1/2/L F1 (the smallest such k
    on a tie), with its report. Score the test set with that k afterwards; never tune k on the test set.

    Raises:
        ConfigError: ``ks`` is empty or holds a k < 1; rouge-score is not installed.
        DataError: no pairs.
    """
    ks = sorted(set(ks))
    if not ks:
        raise ConfigError("choose_lead_k: no candidate k")
    sources = [s for s, _ in valid_pairs]
    references = [r for _, r in valid_pairs]
    if not sources:
        raise DataError("choose_lead_k: no validation pairs")
    scorer = _rouge_scorer(stemmer)  # one word cache for every k
    reports = {k: _mean_f1(scorer, [lead_k(s, k) for s in sources], references, stemmer) for k in ks}
    best = max(ks, key=lambda k: (reports[k].mean, -k))
    return best, reports[best]

