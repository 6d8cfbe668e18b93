"""ROUGE-1/2/L F1 via rouge-score: hand-computed cases, rouge-score's tokenization, Lead-k chosen on validation."""

from __future__ import annotations

import sys

import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.evaluate.rouge import choose_lead_k, lead_k, rouge_settings, score_rouge


def test_identical_texts_score_100_and_disjoint_texts_0():
    same = score_rouge(["the quick brown fox jumps"], ["the quick brown fox jumps"])
    assert (same.rouge1, same.rouge2, same.rouge_l, same.count) == (100.0, 100.0, 100.0, 1)
    disjoint = score_rouge(["alpha beta gamma"], ["delta epsilon zeta"])
    assert (disjoint.rouge1, disjoint.rouge2, disjoint.rouge_l) == (0.0, 0.0, 0.0)


def test_hand_computed_rouge_1_and_2():
    # hyp unigrams {the:2, cat, sat, on, mat}, ref {the:2, cat, is, on, mat}: 5 of 6 match on each side.
    # Bigrams: hyp {the cat, cat sat, sat on, on the, the mat}, ref {the cat, cat is, is on, on the, the mat}: 3 of 5.
    r = score_rouge(["the cat sat on the mat"], ["the cat is on the mat"], stemmer=False)
    assert r.rouge1 == pytest.approx(100 * 5 / 6)
    assert r.rouge2 == pytest.approx(100 * 3 / 5)
    assert r.rouge_l == pytest.approx(100 * 5 / 6)  # LCS "the cat on the mat"


def test_rouge_l_follows_the_longest_common_subsequence():
    # LCS of "a b c d e f" and "a x c y e" is "a c e": P = 3/6, R = 3/5, F1 = 2PR / (P + R) = 6/11.
    r = score_rouge(["a b c d e f"], ["a x c y e"], stemmer=False)
    assert r.rouge_l == pytest.approx(100 * 6 / 11)
    assert r.rouge2 == 0.0
    # Same words in reverse order: every unigram matches but the LCS is one word long.
    rev = score_rouge(["one two three"], ["three two one"], stemmer=False)
    assert rev.rouge1 == pytest.approx(100.0)
    assert rev.rouge_l == pytest.approx(100 / 3)


def test_scores_are_the_mean_over_pairs():
    r = score_rouge(["red green", "blue sky"], ["red green", "dark night"])
    assert r.rouge1 == pytest.approx(50.0) and r.count == 2
    assert r.mean == pytest.approx((r.rouge1 + r.rouge2 + r.rouge_l) / 3)


def test_tokenization_is_rouge_scores_default():
    # Lower-cased, punctuation dropped; non-ASCII letters are removed too ("café" -> "caf").
    assert score_rouge(["Hello, World!"], ["hello world"]).rouge1 == 100.0
    assert score_rouge(["café"], ["caf"]).rouge1 == 100.0
    # The Porter stemmer (default) maps "running cats" to "run cat".
    assert score_rouge(["running cats"], ["run cat"]).rouge1 == 100.0
    assert score_rouge(["running cats"], ["run cat"], stemmer=False).rouge1 == 0.0


@pytest.mark.parametrize("stemmer", [True, False])
def test_word_cache_matches_rouge_scores_own_tokenizer(stemmer):
    from rouge_score import rouge_scorer

    hyps = ["Real-time strategy game (RTS) of ancient warfare", "libfoo1: the C library — runtime files",
            "Ǆemal's naïve café, über-fast; 3D/2D", "tabs\tand\u00a0nbsp", "", "!!!"]
    refs = ["strategy games of warfare", "C library for foo (runtime)", "naive cafe 3d", "tabs and nbsp", "x", ""]
    ours = score_rouge(hyps, refs, stemmer=stemmer)
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stemmer)
    scores = [plain.score(r, h) for h, r in zip(hyps, refs, strict=True)]
    for name, value in (("rouge1", ours.rouge1), ("rouge2", ours.rouge2), ("rougeL", ours.rouge_l)):
        assert value == pytest.approx(100 * sum(s[name].fmeasure for s in scores) / len(scores))


def test_settings_record_version_and_stemmer():
    r = score_rouge(["a b"], ["a b"], stemmer=False)
    assert r.settings == rouge_settings(False)
    assert r.settings.startswith("rouge-score:0.") and "stem:none" in r.settings
    assert "stem:porter" in rouge_settings(True)
    assert "ROUGE-L = 100.00" in r.format() and r.to_dict()["rougeL"] == 100.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        score_rouge(["a", "b"], ["a"])
    with pytest.raises(DataError, match="no summaries"):
        score_rouge([], [])
    with pytest.raises(ConfigError, match="not one string"):
        score_rouge("a b", "a b")


def test_missing_package_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes `import rouge_score` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'attnlab\[eval\]'") as info:
        score_rouge(["a"], ["a"])
    assert "\n" not in str(info.value)


def test_lead_k_takes_the_first_k_words():
    assert lead_k("  one two\tthree\n four ", 3) == "one two three"
    assert lead_k("one two", 5) == "one two"
    with pytest.raises(ConfigError):
        lead_k("one", 0)


def _lead_pairs(n_lead: int, count: int = 20) -> list[tuple[str, str]]:
    """Sources whose first ``n_lead`` words are the reference, followed by 40 words found nowhere else."""
    pairs = []
    for i in range(count):
        lead = [f"w{i}x{j}" for j in range(n_lead)]
        rest = [f"z{i}y{j}" for j in range(40)]
        pairs.append((" ".join(lead + rest), " ".join(lead)))
    return pairs


@pytest.mark.parametrize("n_lead", [7, 12])
def test_choose_lead_k_picks_the_k_the_validation_set_favours(n_lead):
    k, report = choose_lead_k(_lead_pairs(n_lead))
    assert k == n_lead
    assert (report.rouge1, report.rouge2, report.rouge_l) == (100.0, 100.0, 100.0)
    # Outside the candidate range it takes the nearest candidate.
    k_small, _ = choose_lead_k(_lead_pairs(n_lead), ks=range(20, 25))
    assert k_small == 20


def test_choose_lead_k_rejects_empty_inputs():
    with pytest.raises(ConfigError):
        choose_lead_k(_lead_pairs(5), ks=[])
    with pytest.raises(DataError):
        choose_lead_k([])
