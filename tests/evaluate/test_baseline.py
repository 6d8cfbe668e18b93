"""Bag-of-n-grams logistic regression: learns a keyword rule, selects on validation, is deterministic and optimal."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from attnlab.evaluate.baseline import BowLogisticRegression, ngrams

FILLER = [f"w{i}" for i in range(60)]


def keyword_corpus(n: int, seed: int, keywords: tuple[str, ...] = ("bad", "good")) -> tuple[list[list[str]], list[int]]:
    """Texts of 5-12 random filler words plus one keyword, placed anywhere, whose index is the label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(len(keywords))
        words = rng.choices(FILLER, k=rng.randint(5, 12))
        words.insert(rng.randint(0, len(words)), keywords[label])
        texts.append(words)
        labels.append(label)
    return texts, labels


def test_ngrams():
    assert ngrams(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("b", "c")]
    assert ngrams(["a"], max_n=3) == [("a",)] and ngrams([]) == []


@pytest.mark.slow  # its smoke tests: the default fit in test_two_fits_are_identical and test_three_classes
def test_learns_a_keyword_rule_to_full_validation_accuracy():
    train = keyword_corpus(300, seed=0)
    valid = keyword_corpus(200, seed=1)
    model = BowLogisticRegression().fit(*train, *valid, num_classes=2)
    assert model.valid_accuracy == 1.0
    assert model.predict(valid[0]) == valid[1]
    probs = model.predict_proba(valid[0])
    assert probs.shape == (200, 2) and torch.allclose(probs.sum(dim=1), torch.ones(200, dtype=torch.float64))
    weights = model.weight[:, 1] - model.weight[:, 0]  # (F,) evidence for "good"
    top = max(model.vocab, key=lambda g: abs(float(weights[model.vocab[g]])))
    assert top in {("good",), ("bad",)}


def test_three_classes():
    keywords = ("bad", "fine", "good")
    model = BowLogisticRegression(l2_grid=(1e-3,)).fit(*keyword_corpus(300, 2, keywords),
                                                       *keyword_corpus(100, 3, keywords), num_classes=3)
    test = keyword_corpus(100, 4, keywords)
    assert model.predict(test[0]) == test[1]


def test_regularization_is_chosen_on_validation_and_recorded():
    train, valid = keyword_corpus(200, seed=5), keyword_corpus(100, seed=6)
    # l2 = 100 shrinks every weight to ~0: the model predicts one class for all and loses on validation.
    model = BowLogisticRegression(feature_grid=("binary", "log1p"), l2_grid=(100.0, 1e-3)).fit(
        *train, *valid, num_classes=2)
    assert [(g["features"], g["l2"]) for g in model.grid] == [("binary", 100.0), ("binary", 1e-3),
                                                               ("log1p", 100.0), ("log1p", 1e-3)]
    assert model.grid[0]["valid_accuracy"] < 0.7 and model.grid[1]["valid_accuracy"] == 1.0
    # Ties go to the stronger l2, then to binary features: the first grid point with the best accuracy.
    assert model.chosen["l2"] == 1e-3 and model.chosen["features"] == "binary"
    assert model.chosen["num_features"] == len(model.vocab) and model.chosen["min_freq"] == 1
    best = max(g["valid_accuracy"] for g in model.grid)
    assert model.valid_accuracy == best
    assert sum(p == y for p, y in zip(model.predict(valid[0]), valid[1], strict=True)) / 100 == best


def test_two_fits_are_identical():
    train, valid = keyword_corpus(150, seed=7), keyword_corpus(50, seed=8)
    threads = torch.get_num_threads()
    a = BowLogisticRegression().fit(*train, *valid, num_classes=2)
    b = BowLogisticRegression().fit(*train, *valid, num_classes=2)
    assert torch.get_num_threads() == threads  # the fit's single thread is restored afterwards
    assert a.vocab == b.vocab and a.chosen == b.chosen and a.grid == b.grid
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert torch.equal(a.predict_proba(valid[0]), b.predict_proba(valid[0]))


def test_fit_reaches_the_penalized_optimum():
    """At the returned W, b the autograd gradient of mean CE + l2/2 ||W||^2 (dense features) is ~0."""
    texts, labels = keyword_corpus(80, seed=9)
    flip = random.Random(10).sample(range(80), 15)  # label noise: no separable shortcut
    labels = [1 - y if i in flip else y for i, y in enumerate(labels)]
    l2 = 1e-2
    model = BowLogisticRegression(feature_grid=("log1p",), l2_grid=(l2,), max_iter=500).fit(
        texts, labels, texts, labels, num_classes=2)
    x = model.featurize(texts).to_dense()  # (B, F)
    weight, bias = model.weight.clone().requires_grad_(), model.bias.clone().requires_grad_()
    loss = F.cross_entropy(x @ weight + bias, torch.tensor(labels)) + 0.5 * l2 * weight.pow(2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-6 and bias.grad.abs().max() < 1e-6
    assert loss.item() == pytest.approx(model.grid[0]["train_loss"], rel=1e-9)


def test_vocabulary_from_training_only_with_min_freq():
    train = [["a", "b"], ["a", "c"], ["b", "a"]]
    valid = [["z", "a"]]
    model = BowLogisticRegression(min_freq=2, l2_grid=(1e-2,)).fit(train, [0, 1, 0], valid, [1], num_classes=2)
    assert set(model.vocab) == {("a",), ("b",)}  # in >= 2 training texts; "z" is validation-only
    model = BowLogisticRegression(min_freq=1, l2_grid=(1e-2,)).fit(train, [0, 1, 0], valid, [1], num_classes=2)
    assert ("z",) not in model.vocab and ("a", "b") in model.vocab
    x = model.featurize([["a", "a", "z"]], "log1p").to_dense()  # (1, F)
    assert x[0, model.vocab[("a",)]] == pytest.approx(math.log(3)) and x.sum() == pytest.approx(math.log(3))
    assert model.featurize([["a", "a"]], "binary").to_dense().sum() == 1.0  # "a" once; bigram "a a" is unknown
    unseen = model.predict_proba([["z"], []])  # no known n-gram: the bias alone decides
    assert torch.equal(unseen[0], unseen[1])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="same non-zero number"):
        BowLogisticRegression().fit([["a"]], [0, 1], [["a"]], [0], num_classes=2)
    with pytest.raises(ValueError, match="outside 0..1"):
        BowLogisticRegression().fit([["a"]], [2], [["a"]], [0], num_classes=2)
    with pytest.raises(ValueError, match="l2_grid"):
        BowLogisticRegression(l2_grid=(0.0,))
    with pytest.raises(ValueError, match="feature_grid"):
        BowLogisticRegression(feature_grid=("tfidf",))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="call fit"):
        BowLogisticRegression().predict([["a"]])
