"""Warmup + inverse-sqrt / cosine / constant schedules on known values; JSON-ready state."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnlab.train.schedule import WarmupSchedule, lr_factor


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (1, 0.25), (2, 0.5), (4, 1.0), (16, 0.5), (64, 0.25)])
def test_inverse_sqrt(step: int, expected: float) -> None:
    assert lr_factor("inverse_sqrt", step, warmup_steps=4, max_steps=100) == pytest.approx(expected)


def test_inverse_sqrt_without_warmup() -> None:
    assert lr_factor("inverse_sqrt", 1, warmup_steps=0, max_steps=10) == 1.0
    assert lr_factor("inverse_sqrt", 4, warmup_steps=0, max_steps=10) == pytest.approx(0.5)


@pytest.mark.parametrize(("step", "ratio", "expected"), [
    (1, 0.0, 0.5), (2, 0.0, 1.0), (6, 0.0, 0.5), (10, 0.0, 0.0), (4, 0.0, 0.5 * (1 + math.cos(math.pi / 4))),
    (10, 0.1, 0.1), (50, 0.1, 0.1), (6, 0.2, 0.6),
])
def test_cosine(step: int, ratio: float, expected: float) -> None:
    assert lr_factor("cosine", step, warmup_steps=2, max_steps=10, min_lr_ratio=ratio) == pytest.approx(expected)


def test_constant_and_bad_kind() -> None:
    assert [lr_factor("constant", s, warmup_steps=2, max_steps=5) for s in (1, 2, 3, 9)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("linear", 3, warmup_steps=0, max_steps=5)  # type: ignore[arg-type]


def test_schedule_drives_the_optimizer_and_restores_from_json() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=123.0)
    sched = WarmupSchedule(opt, "inverse_sqrt", base_lr=0.1, warmup_steps=4, max_steps=100)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)  # the lr of the first update
    for _ in range(7):
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    assert state == {"step": 7}
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched2 = WarmupSchedule(opt2, "inverse_sqrt", base_lr=0.1, warmup_steps=4, max_steps=100)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.1 * math.sqrt(4 / 8))
    with pytest.raises(ValueError):
        sched2.load_state_dict({"step": -1})
