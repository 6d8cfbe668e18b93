"""Gradient-weighted rollout (Chefer et al. 2021) on cases with known answers, and the model adapters' shapes."""

from __future__ import annotations

import pytest
import torch

from attnlab.core.errors import DataError
from attnlab.explain import (
    ATTENTION_METHODS,
    RecurrentTranslationAdapter,
    TextClassifierAdapter,
    TranslationAdapter,
    ViTAdapter,
    encoder_decoder_relevance,
    gradient_rollout,
    gradient_weighted,
)
from attnlab.viz.capture import capture


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_zero_gradients_give_the_identity() -> None:
    a = torch.softmax(_rand(3, 2, 4, 4), -1)
    torch.testing.assert_close(gradient_rollout(a, torch.zeros_like(a)), torch.eye(4, dtype=torch.float64))


def test_gradient_rollout_equals_a_loop_oracle() -> None:
    a, g = torch.softmax(_rand(2, 3, 4, 4, seed=1), -1), _rand(2, 3, 4, 4, seed=2) - 0.5
    relevance = torch.eye(4, dtype=torch.float64)
    for layer in range(2):
        bar = torch.zeros(4, 4, dtype=torch.float64)
        for h in range(3):
            for i in range(4):
                for j in range(4):
                    bar[i, j] += max(0.0, float(a[layer, h, i, j] * g[layer, h, i, j])) / 3
        relevance = relevance + bar @ relevance
    torch.testing.assert_close(gradient_rollout(a, g), relevance)
    assert bool((gradient_weighted(a[0], g[0]) >= 0).all())  # only positive contributions count


def test_encoder_decoder_rule_on_known_cases() -> None:
    """Zero gradients everywhere: no source relevance. One decoder layer with inactive self-attention and an
    inactive encoder: R_ts is the gradient-weighted cross-attention itself (R̄_tt = I, R̄_ss = I)."""
    enc = [(torch.softmax(_rand(2, 3, 3), -1), torch.zeros(2, 3, 3, dtype=torch.float64))]
    dec_self = [(torch.softmax(_rand(2, 4, 4, seed=3), -1), torch.zeros(2, 4, 4, dtype=torch.float64))]
    cross_a, cross_g = torch.softmax(_rand(2, 4, 3, seed=4), -1), _rand(2, 4, 3, seed=5)
    zero = encoder_decoder_relevance(enc, dec_self, [(cross_a, torch.zeros_like(cross_g))])
    torch.testing.assert_close(zero, torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(encoder_decoder_relevance(enc, dec_self, [(cross_a, cross_g)]),
                               gradient_weighted(cross_a, cross_g))
    with pytest.raises(DataError):
        encoder_decoder_relevance(enc, dec_self, [])


def test_text_classifier_importances(random_classifier) -> None:
    adapter = TextClassifierAdapter(random_classifier, labels=["a", "b"])
    example = adapter.example_from_ids(torch.tensor([[4, 5, 6, 7, 8]]))
    out = adapter.attention_importance(example)
    assert list(out.scores) == list(ATTENTION_METHODS)
    assert all(s.shape == (5,) and bool(torch.isfinite(s).all()) for s in out.scores.values())
    assert out.heads.shape == (2, 2, 5)  # (L, H, T)
    # The raw attention is the pooling's, averaged over its two queries: as the model returns it.
    with torch.no_grad():
        pooling = random_classifier(example.inputs, need_weights=True).pooling[0].mean(0)
    torch.testing.assert_close(out.scores["attention"], pooling.double())
    torch.testing.assert_close(out.scores["attention"].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_vit_importances_drop_the_class_token(random_vit) -> None:
    adapter = ViTAdapter(random_vit)
    example = adapter.example_from_tensor(torch.randn(1, 1, 8, 8))
    assert example.grid == (2, 2) and example.num_positions == 4
    out = adapter.attention_importance(example)
    assert all(s.shape == (4,) for s in out.scores.values())
    with torch.no_grad(), capture(random_vit) as maps:
        random_vit(example.inputs)
    last = maps.stack("self")[-1, 0].double()  # (H, N + 1, N + 1)
    torch.testing.assert_close(out.scores["attention"], last.mean(0)[0, 1:])


def test_translation_importances_have_one_row_per_generated_token(random_translator) -> None:
    adapter = TranslationAdapter(random_translator, max_new_tokens=5)
    example = adapter.example_from_ids(torch.tensor([[4, 5, 6, 7]]))
    Tt = len(example.target)
    assert 1 <= Tt <= 5 and len(example.output_tokens) == Tt
    out = adapter.attention_importance(example)
    assert list(out.scores) == list(ATTENTION_METHODS)
    assert all(s.shape == (Tt, 4) for s in out.scores.values())
    assert out.heads.shape == (2, 2, Tt, 4)  # (Ld, H, Tt, Ts) cross-attention
    assert bool((out.scores["grad_rollout"] >= 0).all())
    torch.testing.assert_close(out.scores["attention"], out.heads[-1].mean(0))


def test_a_recurrent_seq2seq_is_explained_with_its_own_attention_rows(random_seq2seq) -> None:
    """One row per generated token; ``attention`` is exactly the decoder's alpha_t (as the model reports it);
    rollout and flow are not defined without self-attention; grad_rollout row t only uses steps s <= t."""
    adapter = RecurrentTranslationAdapter(random_seq2seq, max_new_tokens=5)
    src = torch.tensor([[4, 5, 6, 7, 9]])
    example = adapter.example_from_ids(src)
    Tt = len(example.target)
    out = adapter.attention_importance(example)
    assert list(out.scores) == ["attention", "grad_rollout"]
    tgt_in = adapter._tgt_in(example.target)
    with torch.no_grad():
        cross = random_seq2seq(src, torch.tensor([5]), tgt_in, need_weights=True).attention.cross  # (1, 1, 1, Tt, Ts)
    torch.testing.assert_close(out.scores["attention"], cross[0, 0, 0].double())
    assert out.heads.shape == (1, 1, Tt, 5)
    rel = out.scores["grad_rollout"]
    assert rel.shape == (Tt, 5) and bool((rel >= 0).all()) and float(rel.sum()) > 0


def test_recurrent_attention_hooks_replace_the_weights_exactly(random_seq2seq) -> None:
    """Weights hooks on the decoder's attention see every step and their replacement is what the model uses."""
    src, lens, tgt_in = torch.tensor([[4, 5, 6, 7]]), torch.tensor([4]), torch.tensor([[1, 8, 9]])
    seen: list[torch.Tensor] = []

    def uniform(module: torch.nn.Module, weights: torch.Tensor) -> torch.Tensor:
        seen.append(weights)
        return torch.full_like(weights, 0.25)

    handle = random_seq2seq.attention.register_weights_hook(uniform)
    try:
        with torch.no_grad():
            out = random_seq2seq(src, lens, tgt_in, need_weights=True)
    finally:
        handle.remove()
    assert len(seen) == 3 and torch.all(out.attention.cross == 0.25)
    with torch.no_grad():
        plain = random_seq2seq(src, lens, tgt_in, need_weights=True)
    assert not torch.allclose(plain.logits, out.logits)  # the replacement reached the output
    assert not torch.all(plain.attention.cross == 0.25)
