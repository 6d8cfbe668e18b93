"""Warmup + inverse-sqrt / cosine / constant / warmup-stable-decay schedules on known values; JSON-ready state."""

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


@pytest.mark.parametrize(("step", "ratio", "expected"), [
    (1, 0.0, 0.5), (2, 0.0, 1.0), (8, 0.0, 1.0), (9, 0.0, 0.5), (10, 0.0, 0.0), (50, 0.0, 0.0),
    (9, 0.2, 0.6), (10, 0.2, 0.2),
])
def test_wsd(step: int, ratio: float, expected: float) -> None:
    # warmup 2, stable to step 8, then linear to the final ratio over the last 20% (steps 8..10)
    got = lr_factor("wsd", step, warmup_steps=2, max_steps=10, min_lr_ratio=ratio, decay_fraction=0.2)
    assert got == pytest.approx(expected)


def test_wsd_decay_never_starts_inside_warmup() -> None:
    # decay_fraction 0.9 of 10 steps would start decaying at step 1: it starts when warmup ends instead
    factors = [lr_factor("wsd", s, warmup_steps=4, max_steps=10, decay_fraction=0.9) for s in range(1, 11)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4:] == pytest.approx([1 - k / 6 for k in range(1, 7)])


def test_wsd_on_a_time_budget_decays_in_the_budget_s_last_fifth() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    sched = WarmupSchedule(torch.optim.SGD([param], lr=1.0), "wsd", base_lr=1.0, warmup_steps=10, max_steps=1000,
                           budget_s=100.0)
    lrs = []
    for i in range(1, 101):  # a slow machine: 100 steps of 1 s in a 100 s budget planned for 1,000 steps
        sched.step(elapsed_s=float(i))
        lrs.append(sched.lr)
    assert lrs[70] == 1.0  # 71 s: still at the peak
    assert lrs[89] == pytest.approx(0.5)  # 90 s: half-way through the decay from 80 s to 100 s
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # the budget's end: annealed


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
    assert state == {"step": 7, "elapsed_s": 0.0}
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched2 = WarmupSchedule(opt2, "inverse_sqrt", base_lr=0.1, warmup_steps=4, max_steps=100)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.1 * math.sqrt(4 / 8))
    with pytest.raises(ValueError):
        sched2.load_state_dict({"step": -1})


# ------------------------------------------------------------------------------------- time budgets


def _time_schedule(budget_s: float | None, **kw: float) -> WarmupSchedule:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    return WarmupSchedule(opt, "cosine", base_lr=1.0, warmup_steps=10, max_steps=100, budget_s=budget_s, **kw)


def test_time_budget_follows_whichever_runs_out_first() -> None:
    s = _time_schedule(60.0)
    assert s.effective_step(5, 0.0) == 5.0  # no time used: steps
    assert s.effective_step(5, 30.0) == 50.0  # half the budget on a slow machine: half the schedule
    assert s.effective_step(80, 30.0) == 80.0  # a fast machine: steps lead
    assert s.effective_step(5, 600.0) == 100.0  # past the budget: the end, not beyond
    assert _time_schedule(None).effective_step(5, 600.0) == 5  # no budget: steps alone


def test_time_budget_ends_annealed_on_a_slow_machine() -> None:
    slow = _time_schedule(60.0)
    for i in range(1, 21):  # 20 steps of 3 s: the budget runs out at step 20 of a planned 100
        slow.step(elapsed_s=3.0 * i)
    assert slow.lr == pytest.approx(0.0, abs=1e-12)
    half = _time_schedule(60.0)
    for i in range(1, 11):
        half.step(elapsed_s=3.0 * i)  # 30 s: half the budget, so warmup is over and cosine is half-way
    assert half.lr == pytest.approx(lr_factor("cosine", 50, warmup_steps=10, max_steps=100))


def test_time_budget_equals_the_step_schedule_when_steps_run_out_first() -> None:
    timed, stepped = _time_schedule(1e9), _time_schedule(None)
    for i in range(1, 101):
        assert timed.lr == stepped.lr
        timed.step(elapsed_s=0.001 * i)
        stepped.step()


def test_time_budget_state_round_trips_and_old_states_load() -> None:
    s = _time_schedule(60.0)
    for i in range(1, 6):
        s.step(elapsed_s=4.0 * i)
    state = json.loads(json.dumps(s.state_dict()))
    assert state == {"step": 5, "elapsed_s": 20.0}
    t = _time_schedule(60.0)
    t.load_state_dict(state)
    assert t.lr == s.lr
    t.load_state_dict({"step": 5})  # a checkpoint written before time budgets: no elapsed time
    assert t.elapsed_s == 0.0
    with pytest.raises(ValueError, match="elapsed_s"):
        t.load_state_dict({"step": 5, "elapsed_s": -1.0})
    with pytest.raises(ValueError, match="budget_s"):
        _time_schedule(0.0)
