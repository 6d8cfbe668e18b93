"""Weight averaging (train.ema_decay): a loop oracle, what is evaluated and kept, exact resume, turning it off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_fixtures import FakeBatches, make_model, tiny_config

from attnlab.core.errors import ConfigError
from attnlab.train import Trainer, load_checkpoint
from attnlab.train.ema import EMA_KEY, averaged_weights, ema_rate, update_averages


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_averages_follow_the_loop_oracle() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    expected: dict[str, torch.Tensor] = {}
    for step in range(1, 8):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        update_averages(opt, 0.9, step)
        rate = min(0.9, (1 + step) / (10 + step))
        for name, p in model.named_parameters():  # avg = rate * avg + (1 - rate) * p, starting at the first step
            expected[name] = p.detach().clone() if step == 1 else rate * expected[name] + (1 - rate) * p.detach()
    for name, p in model.named_parameters():
        torch.testing.assert_close(opt.state[p][EMA_KEY], expected[name], rtol=1e-6, atol=1e-7)
    assert ema_rate(0.999, 1) == pytest.approx(2 / 11) and ema_rate(0.9, 10_000) == 0.9


def test_a_parameter_without_gradients_gets_no_average_until_adamw_updates_it() -> None:
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(2, 2), "unused": torch.nn.Linear(2, 2)})
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model["used"](torch.ones(1, 2)).sum().backward()
    opt.step()
    update_averages(opt, 0.9, 1)
    assert all(EMA_KEY not in opt.state.get(p, {}) for p in model["unused"].parameters())
    model["unused"](torch.ones(1, 2)).sum().backward()  # AdamW must still initialize its moments
    opt.step()
    assert all("exp_avg" in opt.state[p] for p in model["unused"].parameters())


def test_averaged_weights_swap_in_and_back() -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    update_averages(opt, 0.9, 1)
    for p in model.parameters():
        opt.state[p][EMA_KEY].fill_(7.0)
    trained = _weights(model)
    with averaged_weights(opt) as swapped:
        assert swapped and all(torch.all(p == 7.0) for p in model.parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, trained[name])


def test_evaluation_and_best_use_the_averages_and_last_keeps_the_trained_weights(tmp_path: Path) -> None:
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        seen.append(_weights(model))
        return {"val_score": float(len(seen))}  # improves every time: best/ is the last evaluation

    model = make_model()
    cfg = tiny_config(max_steps=6, eval_every=6, save_every=6, ema_decay=0.5, best_metric="val_score",
                      best_mode="max")
    trainer = Trainer(model, cfg, FakeBatches(), tmp_path, evaluate=evaluate, progress=False)
    trainer.fit()
    averages = {n: trainer.optimizer.state[p][EMA_KEY] for n, p in model.named_parameters()}
    assert len(seen) == 1
    for name, value in seen[0].items():
        assert torch.equal(value, averages[name]), name
        assert not torch.equal(value, dict(model.named_parameters())[name]), name  # the average differs
    best = load_checkpoint(tmp_path / "best").model_state
    last = load_checkpoint(tmp_path / "last").model_state
    for name, p in model.named_parameters():
        assert torch.equal(best[name], averages[name]) and torch.equal(last[name], p.detach()), name


def test_stop_and_resume_continues_the_average_exactly(tmp_path: Path) -> None:
    common = {"eval_every": 4, "save_every": 3, "ema_decay": 0.8}
    full = make_model()
    full_trainer = Trainer(full, tiny_config(max_steps=12, **common), FakeBatches(), tmp_path / "full",
                           progress=False)
    full_trainer.fit()
    Trainer(make_model(), tiny_config(max_steps=6, **common), FakeBatches(), tmp_path / "split", progress=False).fit()
    resumed = make_model(seed=99)
    trainer = Trainer(resumed, tiny_config(max_steps=12, **common), FakeBatches(), tmp_path / "split",
                      progress=False)
    trainer.fit(resume=True)
    for (name, a), b in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name
        assert torch.equal(full_trainer.optimizer.state[a][EMA_KEY], trainer.optimizer.state[b][EMA_KEY]), name


def test_resuming_with_averaging_off_drops_the_averages(tmp_path: Path) -> None:
    Trainer(make_model(), tiny_config(max_steps=3, ema_decay=0.8), FakeBatches(), tmp_path, progress=False).fit()
    trainer = Trainer(make_model(), tiny_config(max_steps=5), FakeBatches(), tmp_path, progress=False)
    trainer.fit(resume=True)
    assert not any(EMA_KEY in s for s in trainer.optimizer.state.values())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
def test_ema_decay_out_of_range_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"ema_decay: got .*expected a value in \[0, 1\)"):
        tiny_config(ema_decay=bad)
