"""Masked, label-smoothed cross-entropy against F.cross_entropy, and the loss evaluator."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from train_fixtures import FakeBatches, make_model

from attnlab.train.loss import loss_evaluator, masked_cross_entropy, token_loss


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 7, generator=g) * 3
    target = torch.randint(1, 7, (3, 5), generator=g)
    target[0, 3:] = 0
    target[2, 1:] = 0
    return logits, target


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_matches_torch_cross_entropy(smoothing: float) -> None:
    logits, target = _data()
    loss_sum, n = masked_cross_entropy(logits, target, label_smoothing=smoothing)
    ref = F.cross_entropy(logits.reshape(-1, 7), target.reshape(-1), ignore_index=0, label_smoothing=smoothing)
    assert n == int((target != 0).sum()) == 9
    torch.testing.assert_close(loss_sum / n, ref, rtol=1e-6, atol=1e-6)


def test_padding_never_counts() -> None:
    logits, target = _data()
    logits.requires_grad_(True)
    loss_sum, _ = masked_cross_entropy(logits, target, label_smoothing=0.2)
    loss_sum.backward()
    pad = target == 0
    assert torch.all(logits.grad[pad] == 0)
    assert torch.all(logits.grad[~pad].abs().sum(-1) > 0)
    changed = logits.detach().clone()
    changed[pad] = 1e4
    torch.testing.assert_close(masked_cross_entropy(changed, target, label_smoothing=0.2)[0], loss_sum.detach())


def test_sums_give_exact_token_weighted_means() -> None:
    (l1, t1), (l2, t2) = _data(1), _data(2)
    s1, n1 = masked_cross_entropy(l1, t1, label_smoothing=0.1)
    s2, n2 = masked_cross_entropy(l2, t2, label_smoothing=0.1)
    ref = F.cross_entropy(torch.cat([l1, l2]).reshape(-1, 7), torch.cat([t1, t2]).reshape(-1), ignore_index=0,
                          label_smoothing=0.1)
    torch.testing.assert_close((s1 + s2) / (n1 + n2), ref)


def test_bf16_logits_give_float32_loss_and_shape_errors_are_clear() -> None:
    logits, target = _data()
    loss_sum, _ = masked_cross_entropy(logits.bfloat16(), target)
    assert loss_sum.dtype == torch.float32
    with pytest.raises(ValueError, match="do not match target"):
        masked_cross_entropy(logits, target[:, :4])


def test_loss_evaluator_is_consistent_and_restores_train_mode() -> None:
    model = make_model()
    batches = FakeBatches(num_batches=3).all_batches()
    evaluate = loss_evaluator(batches)
    model.train()
    metrics = evaluate(model)
    assert model.training
    assert metrics["val_loss"] == pytest.approx(token_loss(model, batches))
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert evaluate(model) == metrics  # eval mode: no dropout, deterministic
