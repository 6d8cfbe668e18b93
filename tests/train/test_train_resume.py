"""Exact resume: N steps + resume to 2N equals 2N uninterrupted steps bit for bit (params, buffers, losses)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from train_fixtures import FakeBatches, make_model, read_metrics, tiny_config

from attnlab.core.errors import CheckpointError, ExitCode
from attnlab.train import Trainer, TrainingInterrupted, load_checkpoint


def _noisy_eval(model: torch.nn.Module) -> dict[str, float]:
    """Consumes the global torch generator, which the trainer must isolate from training."""
    return {"val_score": float(torch.rand(()))}


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out)]


def test_stop_at_n_and_resume_to_2n_is_bit_exact(tmp_path: Path) -> None:
    # 7 batches per epoch: the stop at step 10 falls in the middle of the second epoch.
    common = {"schedule": "inverse_sqrt", "eval_every": 4, "save_every": 3, "best_metric": "val_score"}
    full_model = make_model()
    Trainer(full_model, tiny_config(max_steps=20, **common), FakeBatches(), tmp_path / "full",
            evaluate=_noisy_eval, progress=False).fit()

    out = tmp_path / "split"
    first = Trainer(make_model(), tiny_config(max_steps=10, **common), FakeBatches(), out, evaluate=_noisy_eval,
                    progress=False).fit()
    assert first.step == 10 and load_checkpoint(out / "last").data_state == {"epoch": 1, "position": 3, "seed": 0}
    resumed_model = make_model(seed=99)  # different init: everything must come from the checkpoint
    torch.manual_seed(12345)  # and the global generator too
    second = Trainer(resumed_model, tiny_config(max_steps=20, **common), FakeBatches(), out, evaluate=_noisy_eval,
                     progress=False).fit(resume=True)

    assert second.step == 20
    _assert_same_state(full_model, resumed_model)  # parameters and the forward-count buffer
    assert _losses(out) == _losses(tmp_path / "full")  # every step once, identical losses
    assert [s for s, _ in _losses(out)] == list(range(1, 21))


def test_sigterm_mid_epoch_then_resume_is_bit_exact_with_cosine(tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=12, schedule="cosine", eval_every=3, save_every=100, best_metric="val_score")
    full_model = make_model()
    Trainer(full_model, cfg, FakeBatches(), tmp_path / "full", evaluate=_noisy_eval, progress=False).fit()

    calls: list[int] = []

    def evaluate_then_terminate(model: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:  # at step 6
            os.kill(os.getpid(), signal.SIGTERM)
        return _noisy_eval(model)

    out = tmp_path / "split"
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(make_model(), cfg, FakeBatches(), out, evaluate=evaluate_then_terminate, progress=False).fit()
    assert info.value.exit_code == ExitCode.TERMINATED == 143 and info.value.step == 6 and info.value.saved
    assert "SIGTERM" in str(info.value) and "--resume" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert load_checkpoint(out / "last").step == 6

    resumed_model = make_model(seed=5)
    result = Trainer(resumed_model, cfg, FakeBatches(), out, evaluate=_noisy_eval, progress=False).fit(resume=True)
    assert result.step == 12
    _assert_same_state(full_model, resumed_model)
    assert _losses(out) == _losses(tmp_path / "full")


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(make_model(), tiny_config(max_steps=5, save_every=100), FakeBatches(), out, progress=False).fit()
    with open(out / "metrics.jsonl", "a") as fh:  # as if a crash happened after step 7 was logged
        fh.write('{"kind": "train", "step": 6, "loss": 1.0}\n{"kind": "train", "step": 7, "loss": 1.0}\n{"kind"')
    Trainer(make_model(), tiny_config(max_steps=8), FakeBatches(), out, progress=False).fit(resume=True)
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 9))


def test_resume_without_a_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at .*last"):
        Trainer(make_model(), tiny_config(), FakeBatches(), tmp_path, progress=False).fit(resume=True)


def test_resume_of_a_finished_run_does_nothing(tmp_path: Path) -> None:
    Trainer(make_model(), tiny_config(max_steps=3), FakeBatches(), tmp_path, progress=False).fit()
    before = (tmp_path / "metrics.jsonl").read_text()
    result = Trainer(make_model(), tiny_config(max_steps=3), FakeBatches(), tmp_path, progress=False).fit(resume=True)
    assert result.step == 3 and result.stop_reason == "max_steps"
    assert (tmp_path / "metrics.jsonl").read_text() == before
