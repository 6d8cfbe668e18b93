"""BLEU/chrF via sacreBLEU: against a loop-based BLEU oracle, signatures, Chinese tokenization, strict counts."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from attnlab.core.errors import DataError
from attnlab.evaluate import bleu_tokenizer_for, corpus_bleu, corpus_chrf, score_corpus, score_files


def oracle_bleu(hyps: list[str], refs: list[str]) -> tuple[float, list[float], float]:
    """Papineni et al. (2002), eq. 1-2, on whitespace tokens, one reference, no smoothing (all counts > 0)."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            h_ngrams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            r_ngrams = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, r_ngrams[g]) for g, c in h_ngrams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    precisions = [100.0 * m / t for m, t in zip(matches, totals, strict=True)]
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(sum(math.log(p / 100) for p in precisions) / 4) * 100, precisions, bp


HYPS = ["the cat sat on the mat", "a dog runs in the green park today", "two men play music on a street"]
REFS = ["the cat is sitting on the soft mat", "a dog runs in the park", "two men are playing music on the street"]


def test_bleu_matches_oracle():
    score, precisions, bp = oracle_bleu(HYPS, REFS)
    result = corpus_bleu(HYPS, REFS)
    assert result.score == pytest.approx(score, abs=1e-9)
    assert list(result.precisions) == pytest.approx(precisions, abs=1e-9)
    assert result.bp == pytest.approx(bp) and bp < 1.0
    assert result.ratio == pytest.approx(result.hyp_len / result.ref_len)
    assert (result.hyp_len, result.ref_len) == (21, 22)
    assert result.format().startswith(f"BLEU = {result.score:.2f} ")


def test_full_signatures():
    bleu = corpus_bleu(HYPS, REFS)
    assert bleu.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    chrf = corpus_chrf(HYPS, REFS)
    assert chrf.signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    assert chrf.name == "chrF2" and 0 < chrf.score < 100
    assert corpus_chrf(HYPS, REFS, word_order=2).name == "chrF2++"


def test_cased_by_default():
    hyps, refs = ["The cat sat on the mat ."], ["the cat sat on the mat ."]
    assert corpus_bleu(hyps, refs).score < 100
    assert corpus_bleu(hyps, refs, lowercase=True).score == pytest.approx(100)


def test_chinese_targets_use_zh_tokenizer():
    assert bleu_tokenizer_for("zh") == "zh" and bleu_tokenizer_for("cmn") == "zh" and bleu_tokenizer_for("de") == "13a"
    hyps, refs = ["我今天很高兴见到你。"], ["我今天很高兴看到你。"]
    zh = corpus_bleu(hyps, refs, tgt_lang="zh")
    assert "tok:zh" in zh.signature and 30 < zh.score < 100
    assert corpus_bleu(hyps, refs).score == 0.0  # no spaces: 13a sees one wrong "word"


def test_multiple_references():
    one = corpus_bleu(HYPS, REFS).score
    two = corpus_bleu(HYPS, [REFS, HYPS]).score
    assert two == pytest.approx(100.0) and one < 60
    assert "nrefs:2" in corpus_bleu(HYPS, [REFS, HYPS]).signature


def test_count_mismatch_is_data_error():
    with pytest.raises(DataError, match="3 hypotheses but 2 references"):
        corpus_bleu(HYPS, REFS[:2])
    with pytest.raises(DataError, match="no sentences"):
        corpus_chrf([], [])


def test_score_files_names_both_files_on_mismatch(tmp_path):
    hyp, ref = tmp_path / "hyp.de", tmp_path / "ref.de"
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    ref.write_text("\n".join(REFS[:2]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"hyp\.de has 3 lines but .*ref\.de has 2"):
        score_files(hyp, ref)


def test_score_files_splits_on_newline_only(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_bytes("\n".join(HYPS).replace("green", "green\u2028").encode() + b"\n")
    ref.write_bytes("\r\n".join(REFS).encode() + b"\r\n")
    report = score_files(hyp, [ref])
    assert report.num_sentences == 3
    assert report.bleu.score == pytest.approx(oracle_bleu(HYPS, REFS)[0], abs=1e-9)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["bleu"]["signature"] == report.bleu.signature and data["chrf"]["name"] == "chrF2"


def test_score_corpus_perfect():
    report = score_corpus(REFS, REFS)
    assert report.bleu.score == pytest.approx(100.0) and report.chrf.score == pytest.approx(100.0)
