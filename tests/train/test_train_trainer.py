"""Trainer: run directory layout, best checkpoint, early stopping, divergence, bf16, RNG isolation of evaluation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from train_fixtures import FakeBatches, TinySeq2Seq, make_model, read_metrics, tiny_config

from attnlab.core.errors import ConfigError, DivergedError, ExitCode
from attnlab.models.base import EncoderDecoderOutput
from attnlab.train import Trainer, load_checkpoint


def _scripted(values: list[float], name: str = "val_score"):
    """An evaluate function returning the given values in turn (and counting its calls)."""
    calls: list[int] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        return {name: values[len(calls) - 1]}

    return evaluate


def test_fit_writes_the_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The few-step smoke test of the slow test below: 4 steps write the same run directory."""
    out = tmp_path / "run"
    cfg = tiny_config(max_steps=4, eval_every=2, save_every=2, log_every=1)
    trainer = Trainer(make_model(), cfg, FakeBatches(), out, run_config={"model": {"kind": "tiny"}},
                      extra_state={"vocab": ["<pad>", "<bos>"]})
    result = trainer.fit()
    assert result.step == 4 and result.stop_reason == "max_steps" and result.epoch == 0
    assert result.best_step in (2, 4) and result.best_value is not None
    train = read_metrics(out)
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["lr"] > 0 for r in train)
    assert [r["step"] for r in read_metrics(out, "eval")] == [2, 4]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"kind": "tiny"} and config["train"]["max_steps"] == 4
    last = load_checkpoint(out / "last", make_model(1))
    assert last.step == 4 and last.extra == {"vocab": ["<pad>", "<bos>"]} and last.config == config
    assert load_checkpoint(out / "best").step == result.best_step
    err = capsys.readouterr().err
    assert "loss=" in err and "tok/s=" in err and "lr=" in err  # the progress bar


@pytest.mark.slow
def test_fit_writes_the_run_directory_and_learns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(max_steps=30, eval_every=10, save_every=10, log_every=5, lr=1e-2)
    trainer = Trainer(make_model(), cfg, FakeBatches(), out, run_config={"model": {"kind": "tiny"}},
                      extra_state={"vocab": ["<pad>", "<bos>"]})
    result = trainer.fit()
    assert result.step == 30 and result.stop_reason == "max_steps" and result.epoch == 4
    assert result.best_step is not None and result.best_value is not None
    train = read_metrics(out)
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    assert train[-1]["loss"] < train[0]["loss"] - 0.2  # it learns
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in train)
    assert [r["step"] for r in read_metrics(out, "eval")] == [10, 20, 30]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"kind": "tiny"} and config["train"]["max_steps"] == 30
    last = load_checkpoint(out / "last", make_model(1))
    assert last.step == 30 and last.extra == {"vocab": ["<pad>", "<bos>"]} and last.config == config
    assert load_checkpoint(out / "best").step == result.best_step
    err = capsys.readouterr().err
    assert "loss=" in err and "tok/s=" in err and "lr=" in err  # the progress bar


def test_refuses_to_overwrite_an_existing_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(make_model(), tiny_config(max_steps=2), FakeBatches(), out, progress=False).fit()
    before = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="already holds a training run.*--resume"):
        Trainer(make_model(), tiny_config(max_steps=4), FakeBatches(), out, progress=False).fit()
    assert (out / "metrics.jsonl").read_bytes() == before and load_checkpoint(out / "last").step == 2


def test_unwritable_output_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write to output directory"):
        Trainer(make_model(), tiny_config(), FakeBatches(), tmp_path / "file" / "run", progress=False).fit()


@pytest.mark.parametrize(("mode", "best_step"), [("min", 4), ("max", 3)])
def test_best_checkpoint_follows_the_metric(tmp_path: Path, mode: str, best_step: int) -> None:
    cfg = tiny_config(max_steps=5, eval_every=1, best_metric="val_score", best_mode=mode)
    result = Trainer(make_model(), cfg, FakeBatches(), tmp_path, evaluate=_scripted([3.0, 2.0, 5.0, 1.0, 4.0]),
                     progress=False).fit()
    assert result.best_step == best_step and load_checkpoint(tmp_path / "best").step == best_step
    assert result.eval_metrics["val_score"] == 4.0 and "train_loss" in result.eval_metrics


def test_early_stopping(tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=50, eval_every=2, best_metric="val_score", early_stopping_patience=2)
    result = Trainer(make_model(), cfg, FakeBatches(), tmp_path, evaluate=_scripted([1.0, 0.5, 0.7, 0.5, 9.0]),
                     progress=False).fit()
    assert result.stop_reason == "early_stopping" and result.step == 8 and result.best_step == 4
    assert load_checkpoint(tmp_path / "last").step == 8 and load_checkpoint(tmp_path / "best").step == 4


def test_missing_best_metric_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an evaluation function"):
        Trainer(make_model(), tiny_config(best_metric="val_loss"), FakeBatches(), tmp_path)
    cfg = tiny_config(best_metric="bleu", eval_every=1)
    with pytest.raises(ConfigError, match="'bleu' is not among the evaluation metrics"):
        Trainer(make_model(), cfg, FakeBatches(), tmp_path, evaluate=_scripted([1.0]), progress=False).fit()


def test_wall_clock_budget_stops_training_and_accumulates_across_resume(tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=1000, max_minutes=1e-9)  # any step exceeds the budget
    result = Trainer(make_model(), cfg, FakeBatches(), tmp_path, progress=False).fit()
    assert result.stop_reason == "max_minutes" and result.step == 1
    spent = load_checkpoint(tmp_path / "last").trainer_state["elapsed_s"]
    assert spent > 0
    again = Trainer(make_model(), tiny_config(max_steps=1000, max_minutes=1e-9), FakeBatches(), tmp_path,
                    progress=False).fit(resume=True)
    assert again.stop_reason == "max_minutes" and again.step == 2
    assert load_checkpoint(tmp_path / "last").trainer_state["elapsed_s"] > spent


def test_cpu_time_budget_stops_training(tmp_path: Path) -> None:
    result = Trainer(make_model(), tiny_config(max_steps=1000, max_cpu_minutes=1e-9), FakeBatches(), tmp_path,
                     progress=False).fit()
    assert result.stop_reason == "max_cpu_minutes" and result.step == 1
    assert load_checkpoint(tmp_path / "last").trainer_state["cpu_s"] > 0


def test_max_epochs_and_thread_setting(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    cfg = tiny_config(max_steps=100, max_epochs=2, num_threads=max(1, threads - 1) if threads > 1 else 2)
    result = Trainer(make_model(), cfg, FakeBatches(num_batches=3), tmp_path, progress=False).fit()
    assert result.stop_reason == "max_epochs" and result.step == 6 and result.epoch == 2
    assert torch.get_num_threads() == threads  # restored after training
    assert load_checkpoint(tmp_path / "last").step == 6


class _NaNAt(TinySeq2Seq):
    """Produces NaN logits at training forward call ``bad_call`` (1-based)."""

    bad_call = 5

    def forward(self, src, src_lens, tgt_in, *, need_weights=False) -> EncoderDecoderOutput:  # type: ignore[override]
        out = super().forward(src, src_lens, tgt_in)
        if self.training and int(self.forward_calls) == self.bad_call:
            return EncoderDecoderOutput(out.logits * math.nan, None)
        return out


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _NaNAt()
    trainer = Trainer(model, tiny_config(max_steps=20, save_every=2, eval_every=2), FakeBatches(), tmp_path,
                      progress=False)
    with pytest.raises(DivergedError) as info:
        trainer.fit()
    message = str(info.value)
    assert "step 5" in message and "loss is nan" in message and "step 4" in message
    assert info.value.exit_code == ExitCode.DIVERGED == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())  # not trained through
    last = load_checkpoint(tmp_path / "last", _NaNAt())
    assert last.step == 4
    assert torch.equal(last.model_state["out.weight"], model.out.weight)  # the failed step changed nothing
    assert max(r["step"] for r in read_metrics(tmp_path)) == 4


def test_infinite_gradient_is_detected(tmp_path: Path) -> None:
    model = make_model()
    calls = []

    def hook(grad: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return grad * math.inf if len(calls) == 3 else grad

    model.out.bias.register_hook(hook)
    with pytest.raises(DivergedError, match="step 3: the gradient norm is"):
        Trainer(model, tiny_config(max_steps=10, clip_grad_norm=None), FakeBatches(), tmp_path, progress=False).fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    result = Trainer(model, tiny_config(max_steps=4, bf16=True), FakeBatches(), tmp_path, progress=False).fit()
    assert math.isfinite(result.final_loss) and result.step == 4
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_evaluation_does_not_shift_the_training_random_streams(tmp_path: Path) -> None:
    def noisy(model: torch.nn.Module) -> dict[str, float]:
        model.train()  # dropout active: consumes the torch generator
        batch = FakeBatches().all_batches()[0]
        torch.rand(100)
        return {"val_score": float(model(batch.src, batch.src_lens, batch.tgt_in).logits.detach().sum())}

    def quiet(model: torch.nn.Module) -> dict[str, float]:
        return {"val_score": 0.0}

    params = []
    for i, evaluate in enumerate((noisy, quiet)):
        model = make_model()
        cfg = tiny_config(max_steps=6, eval_every=2, best_metric="val_score")
        Trainer(model, cfg, FakeBatches(), tmp_path / str(i), evaluate=evaluate, progress=False).fit()
        params.append(list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(*params, strict=True))


def test_keep_snapshots_keeps_the_newest_n_weights_and_resume_adds_to_them(tmp_path: Path) -> None:
    from attnlab.train.trainer import list_snapshots

    out = tmp_path / "run"
    cfg = tiny_config(max_steps=12, save_every=3, keep_snapshots=2)
    Trainer(make_model(), cfg, FakeBatches(), out, progress=False, extra_state={"vocab": ["a"]}).fit()
    kept = list_snapshots(out / "snapshots")
    assert [p.name for p in kept] == ["step-0000009", "step-0000012"]
    last = load_checkpoint(out / "last")
    snap = load_checkpoint(kept[-1])
    assert snap.step == 12 and snap.optimizer_state is None and snap.extra == {"vocab": ["a"]}
    assert snap.config == last.config
    assert all(torch.equal(snap.model_state[k], v) for k, v in last.model_state.items())
    assert not torch.equal(load_checkpoint(kept[0]).model_state["out.weight"], last.model_state["out.weight"])
    longer = tiny_config(max_steps=14, save_every=3, keep_snapshots=2)
    Trainer(make_model(), longer, FakeBatches(), out, progress=False).fit(resume=True)
    assert [p.name for p in list_snapshots(out / "snapshots")] == ["step-0000012", "step-0000014"]
    shutil.rmtree(out / "last")
    shutil.rmtree(out / "best")
    (out / "metrics.jsonl").unlink()
    with pytest.raises(ConfigError, match="snapshots exists"):  # snapshots alone still mark an occupied run dir
        Trainer(make_model(), cfg, FakeBatches(), out, progress=False).fit()


@pytest.mark.parametrize("average_score", [9.0, 0.5], ids=["average-wins", "average-loses"])
def test_average_snapshots_is_evaluated_and_becomes_best_only_if_it_beats_it(tmp_path: Path,
                                                                            average_score: float) -> None:
    from attnlab.train.trainer import list_snapshots

    out = tmp_path / "run"
    cfg = tiny_config(max_steps=12, eval_every=4, save_every=3, keep_snapshots=3, average_snapshots=True,
                      best_metric="val_score", best_mode="max")
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_score": [1.0, 2.0, 1.5, average_score][len(seen) - 1]}  # steps 4, 8, 12, then the average

    model = make_model()
    result = Trainer(model, cfg, FakeBatches(), out, evaluate=evaluate, progress=False,
                     extra_state={"vocab": ["a"]}).fit()
    kept = [load_checkpoint(p) for p in list_snapshots(out / "snapshots")]
    assert [k.step for k in kept] == [6, 9, 12] and len(seen) == 4
    # the fourth evaluation saw the mean of the three snapshots (integer buffers: the newest's value)
    mean = {name: sum(k.model_state[name].double() for k in kept) / 3 if t.is_floating_point() else t
            for name, t in kept[-1].model_state.items()}
    assert any(t.is_floating_point() for t in mean.values())
    for name, want in mean.items():
        torch.testing.assert_close(seen[3][name].to(want.dtype), want, rtol=0, atol=1e-6)
    last = load_checkpoint(out / "last")
    assert all(torch.equal(p, last.model_state[n]) for n, p in model.state_dict().items())  # trained weights back
    record = read_metrics(out, "average")
    assert record == [{"kind": "average", "step": 12, "snapshots": [6, 9, 12], "val_score": average_score,
                       "selected": average_score > 2.0}]
    best = load_checkpoint(out / "best")
    if average_score > 2.0:
        assert result.best_value == average_score and result.best_step == 12 and best.step == 12
        assert [a["step"] for a in best.extra["averaged_from"]] == [6, 9, 12] and best.extra["vocab"] == ["a"]
        assert all(torch.equal(best.model_state[n], seen[3][n]) for n in mean)
    else:
        assert result.best_value == 2.0 and result.best_step == 8 and best.step == 8
        assert "averaged_from" not in best.extra


def test_average_snapshots_needs_two_snapshots_kept() -> None:
    with pytest.raises(ConfigError, match="average_snapshots.*keep_snapshots to 2 or more"):
        tiny_config(average_snapshots=True, keep_snapshots=1)


def test_no_snapshots_by_default(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(make_model(), tiny_config(max_steps=6, save_every=3), FakeBatches(), out, progress=False).fit()
    assert not (out / "snapshots").exists()


class _FakeClock:
    """perf_counter/process_time that advance ``tick`` seconds per reading: a deterministic slow machine."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now

    def process_time(self) -> float:
        return self.now


def test_time_schedule_ends_annealed_when_the_budget_runs_out_first(tmp_path: Path, monkeypatch) -> None:
    import attnlab.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", _FakeClock(tick=1.0))
    # Planned: 1,000 steps; the clock makes each step cost a few seconds, so the 1-minute budget ends first.
    cfg = tiny_config(max_steps=1000, max_minutes=1.0, schedule="cosine", schedule_by="time", warmup_steps=10,
                      eval_every=1000, save_every=1000)
    result = Trainer(make_model(), cfg, FakeBatches(), tmp_path, progress=False).fit()
    assert result.stop_reason == "max_minutes" and result.step < 100
    lrs = [r["lr"] for r in read_metrics(tmp_path)]
    assert max(lrs) == pytest.approx(cfg.lr, rel=0.05)  # warmed up and reached the peak
    assert lrs[-1] < 0.05 * cfg.lr  # and annealed by the end of the budget (the last step: 2% of the peak)
    steps = Trainer(make_model(), tiny_config(max_steps=1000, max_minutes=1.0, schedule="cosine", warmup_steps=10,
                                              eval_every=1000, save_every=1000),
                    FakeBatches(), tmp_path / "steps", progress=False).fit()
    assert steps.stop_reason == "max_minutes"
    assert read_metrics(tmp_path / "steps")[-1]["lr"] > 0.9 * cfg.lr  # the step schedule is cut un-annealed


def test_time_schedule_needs_a_time_budget() -> None:
    with pytest.raises(ConfigError, match="needs a time budget"):
        tiny_config(schedule_by="time")


def test_the_heap_is_released_after_each_evaluation_and_at_the_end(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    monkeypatch.setattr("attnlab.train.trainer.release_freed_memory", lambda: events.append("release"))

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        events.append("eval")
        return {"val_score": 1.0}

    cfg = tiny_config(max_steps=4, eval_every=2, save_every=2)
    Trainer(make_model(), cfg, FakeBatches(), tmp_path / "run", evaluate=evaluate).fit()
    assert events == ["eval", "release", "eval", "release", "release"]
