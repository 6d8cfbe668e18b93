"""Adversarial training on the embeddings (fast gradient method) against a hand-written oracle."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.core.model_config import RNNClassifierConfig, TransformerClassifierConfig
from attnlab.core.run_config import RunConfig
from attnlab.data.batching import collate_labels
from attnlab.data.dataset import Example
from attnlab.models.build import build_model
from attnlab.train.loss import adversarial_loss, classification_loss


def _batch():
    g = torch.Generator().manual_seed(1)
    examples = []
    for i in range(6):
        ids = torch.randint(4, 30, (int(torch.randint(2, 9, (), generator=g)),), generator=g).tolist()
        examples.append(Example(ids, [], i, i % 2))
    return collate_labels(examples)


class _Fixed(nn.Module):
    """Stands in for the word table: returns ``table(tokens) + shift``, or ``leaf`` when given."""

    def __init__(self, table: nn.Embedding, shift: torch.Tensor | None = None, leaf: torch.Tensor | None = None):
        super().__init__()
        self.table, self.shift, self.leaf = table, shift, leaf

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.leaf is not None:
            return self.leaf
        return self.table(tokens) + self.shift


def _oracle(model: nn.Module, batch, eps: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """clean loss, adversarial loss and the parameter gradients of their sum, computed step by step."""
    table = model.embedding
    leaf = table(batch.tokens).detach().requires_grad_(True)  # (B, T, E)
    model.embedding = _Fixed(table, leaf=leaf)
    clean, _ = classification_loss(model, batch)
    (grad,) = torch.autograd.grad(clean, leaf)
    delta = torch.stack([eps * g / g.norm() for g in grad])  # one L2 norm per example, over (T, E)
    model.embedding = table
    clean, _ = classification_loss(model, batch)
    model.embedding = _Fixed(table, shift=delta)
    adversarial, _ = classification_loss(model, batch)
    model.embedding = table
    model.zero_grad()
    (clean + adversarial).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return clean.detach(), adversarial.detach(), grads


@pytest.mark.parametrize("config", [RNNClassifierConfig(embed_dim=8, hidden_size=8, dropout=0.0),
                                    TransformerClassifierConfig(d_model=8, num_heads=2, ffn_dim=16, num_layers=1,
                                                                dropout=0.0, max_len=16)],
                         ids=["rnn", "transformer"])
def test_adversarial_loss_equals_the_step_by_step_oracle(config) -> None:
    torch.manual_seed(0)
    model = build_model(config, 30).double()
    batch = _batch()
    eps = 0.7
    clean, adversarial, want = _oracle(model, batch, eps)
    total, count = adversarial_loss(model, batch, loss=classification_loss, eps=eps)
    assert count == 6
    torch.testing.assert_close(total.detach(), clean + adversarial, rtol=1e-10, atol=1e-12)
    assert float(adversarial) > float(clean)  # the perturbation climbs the loss
    total.backward()
    for name, grad in want.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-9, atol=1e-12,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_eps_zero_gives_twice_the_clean_loss_and_the_hook_is_removed() -> None:
    torch.manual_seed(0)
    model = build_model(RNNClassifierConfig(embed_dim=8, hidden_size=8, dropout=0.0), 30).double()
    batch = _batch()
    clean, _ = classification_loss(model, batch)
    total, _ = adversarial_loss(model, batch, loss=classification_loss, eps=0.0)
    torch.testing.assert_close(total, 2 * clean)
    assert not model.embedding._forward_hooks


def test_a_model_without_a_word_table_is_refused() -> None:
    with pytest.raises(TypeError, match="model.embedding"):
        adversarial_loss(nn.Linear(2, 2), _batch(), loss=functools.partial(classification_loss), eps=1.0)


def test_adversarial_eps_is_for_text_classification_only() -> None:
    ok = RunConfig.from_dict({"data": {"task": "keywords"}, "model": {"kind": "rnn_classifier"},
                              "train": {"adversarial_eps": 1.0}})
    assert ok.train.adversarial_eps == 1.0
    with pytest.raises(ConfigError, match="train.adversarial_eps: .* translation task"):
        RunConfig.from_dict({"data": {"task": "dates"}, "train": {"adversarial_eps": 1.0}})
    with pytest.raises(ConfigError, match="adversarial_eps"):
        RunConfig.from_dict({"data": {"task": "keywords"}, "model": {"kind": "rnn_classifier"},
                             "train": {"adversarial_eps": -1.0}})
