"""The trainer is task-agnostic: with a task's loss it takes exactly the steps of a plain hand-written loop."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from attnlab.core.model_config import RNNClassifierConfig, TransformerClassifierConfig
from attnlab.core.train_config import TrainConfig
from attnlab.data.batching import BucketedBatches, collate_labels
from attnlab.data.dataset import Example
from attnlab.models.build import build_model
from attnlab.train import Trainer
from attnlab.train.loss import classification_loss
from attnlab.train.schedule import WarmupSchedule
from attnlab.train.trainer import build_optimizer


def _examples(n: int = 120) -> list[Example]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = int(torch.randint(2, 9, (), generator=g))
        ids = torch.randint(4, 30, (length,), generator=g).tolist()
        out.append(Example(ids, [], i, int(ids[0] % 2)))  # the first token's parity is the label
    return out


def _oracle(model: torch.nn.Module, cfg: TrainConfig, loss) -> list[float]:
    """nanoGPT-plain: seed, AdamW + warmup schedule, clip, step -- over the same batch stream."""
    torch.manual_seed(cfg.seed)
    optimizer = build_optimizer(model, cfg)
    schedule = WarmupSchedule(optimizer, cfg.schedule, base_lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                              max_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio,
                              decay_fraction=cfg.decay_fraction)
    batches = BucketedBatches(_examples(), cfg.tokens_per_batch, seed=cfg.seed, collate_fn=collate_labels)
    losses: list[float] = []
    while len(losses) < cfg.max_steps:
        for batch in batches:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, count = loss(model, batch)
            (loss_sum / count).backward()
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(float(loss_sum.detach()) / count)
            if len(losses) == cfg.max_steps:
                break
    return losses


def test_trainer_with_a_classification_loss_equals_the_plain_loop(tmp_path: Path) -> None:
    cfg = TrainConfig(max_steps=12, warmup_steps=3, lr=3e-3, tokens_per_batch=60, log_every=1, eval_every=100,
                      save_every=5, best_metric="train_loss", schedule="cosine", label_smoothing=0.1)
    loss = functools.partial(classification_loss, label_smoothing=cfg.label_smoothing)
    for model_cfg in (RNNClassifierConfig(embed_dim=8, hidden_size=8, dropout=0.2),
                      TransformerClassifierConfig(d_model=16, num_heads=2, ffn_dim=16, num_layers=1, dropout=0.2)):
        torch.manual_seed(1)
        ours = build_model(model_cfg, 30)
        reference = build_model(model_cfg, 30)
        reference.load_state_dict(ours.state_dict())
        batches = BucketedBatches(_examples(), cfg.tokens_per_batch, seed=cfg.seed, collate_fn=collate_labels)
        result = Trainer(ours, cfg, batches, tmp_path / model_cfg.kind, loss=loss, progress=False).fit()
        expected = _oracle(reference, cfg, loss)
        assert result.step == cfg.max_steps and math.isclose(result.final_loss, expected[-1], rel_tol=0, abs_tol=0)
        for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{model_cfg.kind}: {name}"
