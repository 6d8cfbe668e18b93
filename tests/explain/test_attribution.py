"""Attribution: completeness of integrated gradients, a model whose answer is one known token, rank agreement."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from attnlab.core.errors import ConfigError
from attnlab.explain import (
    METHODS,
    RecurrentTranslationAdapter,
    TextClassifierAdapter,
    TranslationAdapter,
    ViTAdapter,
    attribute,
    explain,
    explain_batch,
    perturbation_curves,
    rank_agreement,
    ranking,
)


def test_integrated_gradients_is_complete_for_a_classifier(random_classifier) -> None:
    """Sum of attributions = f(x) - f(all <pad>), up to the quadrature error of 32 Gauss-Legendre steps."""
    adapter = TextClassifierAdapter(random_classifier, labels=["a", "b"])
    example = adapter.example_from_ids(torch.tensor([[4, 9, 13, 2, 17, 6]]))
    ig = attribute(adapter, example, ["integrated_gradients"], ig_steps=32)["integrated_gradients"]
    with torch.no_grad():
        target = int(example.target)
        difference = (adapter.log_probs(example.inputs)[0, target]
                      - adapter.log_probs(torch.zeros_like(example.inputs))[0, target])
    assert abs(float(difference)) > 1e-3  # not trivially zero
    assert float(ig.sum()) == pytest.approx(float(difference), abs=2e-3)


def _assert_complete_per_step(mt, example, **kwargs) -> None:
    """Each generated token's IG row sums to log p(token | source) - log p(token | all <pad>)."""
    ig = attribute(mt, example, ["integrated_gradients"], **kwargs)["integrated_gradients"]  # (Tt, Ts)
    assert ig.shape == (len(example.target), example.inputs.shape[1])
    for (args, target), row in zip(mt.steps(example), ig, strict=True):
        with torch.no_grad():
            want = (mt.log_probs(example.inputs, *args)[0, target]
                    - mt.log_probs(torch.zeros_like(example.inputs), *args)[0, target])
        assert float(row.sum()) == pytest.approx(float(want), abs=2e-3)


def test_integrated_gradients_is_complete_for_each_step_of_a_recurrent_seq2seq(random_seq2seq) -> None:
    mt = RecurrentTranslationAdapter(random_seq2seq, max_new_tokens=4)
    example = mt.example_from_ids(torch.tensor([[4, 5, 6, 7, 8]]))
    _assert_complete_per_step(mt, example, ig_steps=64)


def test_integrated_gradients_is_complete_for_vit_and_each_translation_step(random_vit, random_translator) -> None:
    vit = ViTAdapter(random_vit)
    example = vit.example_from_tensor(torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    ig = attribute(vit, example, ["integrated_gradients"])["integrated_gradients"]  # (N,)
    with torch.no_grad():
        t = int(example.target)
        want = vit.log_probs(example.inputs)[0, t] - vit.log_probs(torch.zeros_like(example.inputs))[0, t]
    assert float(ig.sum()) == pytest.approx(float(want), abs=2e-3)

    mt = TranslationAdapter(random_translator, max_new_tokens=4)
    example = mt.example_from_ids(torch.tensor([[4, 5, 6, 7, 8]]))
    _assert_complete_per_step(mt, example)


@pytest.mark.parametrize("position", [0, 2, 5])
def test_every_method_ranks_the_deciding_token_first(keyword_model, keyword_id: int, position: int) -> None:
    adapter = TextClassifierAdapter(keyword_model, labels=["negative", "positive"])
    ids = [4, 9, 12, 5, 3, 16]
    ids[position] = keyword_id
    example = adapter.example_from_ids(torch.tensor([ids]))
    assert example.prediction == "positive" and 0.6 < example.probability < 0.99  # confident, not saturated
    e = explain(adapter, example)
    assert list(e.scores) == list(METHODS)
    for method, scores in e.scores.items():
        assert int(ranking(scores)[0]) == position, method
    curves = perturbation_curves(adapter, example, {m: ranking(s) for m, s in e.scores.items()}, max_k=3)
    for method, c in curves.items():
        # Removing the keyword alone drops p to 0.5 (logits 0); keeping it alone changes nothing.
        assert c["comprehensiveness"][0] == pytest.approx(example.probability - 0.5, abs=1e-5), method
        assert c["sufficiency"][0] == pytest.approx(0.0, abs=1e-5), method


def test_report_on_the_keyword_model(keyword_model, keyword_id: int) -> None:
    adapter = TextClassifierAdapter(keyword_model, labels=["negative", "positive"])
    examples = [adapter.example_from_ids(torch.tensor([ids])) for ids in
                ([keyword_id, 4, 9, 12, 5, 6, 8], [4, 9, keyword_id, 12, 5, 6, 8], [4, 9, 12, 5, 6, 8, keyword_id])]
    _, report = explain_batch(adapter, examples, max_k=3, seed=0, permutations=4)
    # Every method finds the keyword: at k = 1 each removes it, the random ranking only sometimes.
    first = report.curves["integrated_gradients"]["comprehensiveness"][0]
    assert first > 0.3
    assert all(report.curves[m]["comprehensiveness"][0] == pytest.approx(first) for m in report.methods)
    assert report.curves["random"]["comprehensiveness_aopc"] < report.curves["leave_one_out"]["comprehensiveness_aopc"]
    assert report.tau("integrated_gradients", "leave_one_out") > 0.5
    assert report.checks["pooling uniform"]["trials"] == 3 and report.checks["pooling permuted"]["trials"] == 12
    # The encoder layer is switched off: replacing its attention changes nothing.
    assert report.checks["layers.0.self_attn permuted"]["mean_abs_dp"] == pytest.approx(0.0, abs=1e-6)
    assert report.checks["pooling uniform"]["mean_abs_dp"] > 0.1
    assert "tau vs IG" in report.table() and "pooling permuted" in report.table()


def test_rank_agreement_extremes() -> None:
    a = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3])
    assert rank_agreement(a, a) == (pytest.approx(1.0), pytest.approx(1.0))
    assert rank_agreement(a, -a) == (pytest.approx(-1.0), pytest.approx(-1.0))
    assert rank_agreement(a, 2 * a + 1) == (pytest.approx(1.0), pytest.approx(1.0))
    assert all(math.isnan(x) for x in rank_agreement(a, torch.ones(5)))  # a constant map ranks nothing


def test_missing_captum_is_one_line_naming_the_extra(random_classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = TextClassifierAdapter(random_classifier, labels=["a", "b"])
    example = adapter.example_from_ids(torch.tensor([[4, 5, 6]]))
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    monkeypatch.setitem(sys.modules, "captum", None)
    with pytest.raises(ConfigError, match=r"attnlab\[explain\]") as info:
        attribute(adapter, example, ["saliency"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown"):
        attribute(adapter, example, ["gradcam"])
