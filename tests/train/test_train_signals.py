"""Ctrl-C / SIGTERM: finish the step, save OUT/last, exit 130/143; a second signal cannot corrupt the save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from train_fixtures import FakeBatches, make_model, read_metrics, tiny_config

from attnlab.core.errors import ExitCode
from attnlab.train import StopSignals, Trainer, TrainingInterrupted, load_checkpoint
from attnlab.train import trainer as trainer_mod

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from train_fixtures import FakeBatches, make_model, tiny_config
    from attnlab.core.errors import AttnlabError
    from attnlab.train import Trainer

    calls = []

    def evaluate(model):
        calls.append(1)
        if len(calls) == 1:
            print("ready", flush=True)  # the parent sends its signal once it reads this
        return {{"val_score": 0.0}}

    cfg = tiny_config(max_steps=1_000_000, eval_every=2, save_every=100_000, best_metric="val_score")
    try:
        Trainer(make_model(), cfg, FakeBatches(), sys.argv[1], evaluate=evaluate, progress=False).fit()
    except AttnlabError as exc:  # what the CLI does
        print(f"attnlab train: error: {{exc}}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
""")


def _zero(model: torch.nn.Module) -> dict[str, float]:
    return {"val_score": 0.0}


def test_signals_to_training_processes_save_and_exit_130_143(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(here=str(HERE)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = {signal.SIGINT: 130, signal.SIGTERM: 143}
    procs = {}  # both children start at once: their start-up (importing torch) overlaps
    for signum in cases:
        procs[signum] = subprocess.Popen([sys.executable, str(script), str(tmp_path / signum.name)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        errors = {}
        for signum, proc in procs.items():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.send_signal(signum)
        for signum, proc in procs.items():
            errors[signum] = proc.communicate(timeout=120)[1]
    finally:
        for proc in procs.values():
            proc.kill()
    for signum, code in cases.items():
        out, err = tmp_path / signum.name, errors[signum]
        assert procs[signum].returncode == code, err
        assert "checkpoint saved to" in err and signum.name in err
        saved = load_checkpoint(out / "last")
        assert saved.step >= 2
        assert max(r["step"] for r in read_metrics(out)) >= saved.step

    out = tmp_path / "SIGINT"  # and training continues from the saved step
    saved = load_checkpoint(out / "last")
    cfg = tiny_config(max_steps=saved.step + 3, eval_every=2, best_metric="val_score")
    result = Trainer(make_model(1), cfg, FakeBatches(), out, evaluate=_zero, progress=False).fit(resume=True)
    assert result.step == saved.step + 3
    assert [r["step"] for r in read_metrics(out)] == list(range(1, saved.step + 4))


def test_second_ctrl_c_during_the_save_is_deferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = trainer_mod.save_checkpoint
    saves: list[Path] = []

    def save_while_pressing_ctrl_c(directory: Path, **kwargs: object) -> Path:
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the save
        saves.append(Path(directory).name)
        return real_save(directory, **kwargs)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C
        return {"val_score": 0.0}

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_while_pressing_ctrl_c)
    previous = signal.getsignal(signal.SIGINT)
    cfg = tiny_config(max_steps=50, eval_every=2, save_every=100, best_metric="val_score")
    model = make_model()
    trainer = Trainer(model, cfg, FakeBatches(), tmp_path, evaluate=evaluate, progress=False)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.exit_code == ExitCode.INTERRUPTED == 130 and info.value.saved and info.value.step == 2
    assert saves == ["best", "last"]
    assert signal.getsignal(signal.SIGINT) is previous
    fresh = make_model(3)
    ck = load_checkpoint(tmp_path / "last", fresh, trainer.optimizer)
    assert ck.step == 2 and torch.equal(fresh.out.weight, model.out.weight)


def test_second_signal_outside_a_save_stops_at_once(tmp_path: Path) -> None:
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        return {"val_score": 0.0}

    previous = signal.getsignal(signal.SIGTERM)
    cfg = tiny_config(max_steps=50, eval_every=3, save_every=100, best_metric="val_score")
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(make_model(), cfg, FakeBatches(), tmp_path, evaluate=evaluate, progress=False).fit()
    assert info.value.exit_code == 143 and not info.value.saved and "not saved" in str(info.value)
    assert not (tmp_path / "last").exists()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_stop_signals_unit() -> None:
    previous = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        with stop.critical():
            os.kill(os.getpid(), signal.SIGTERM)  # deferred: no exception
        with pytest.raises(TrainingInterrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
        assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGINT) is previous

    outcome: list[bool] = []

    def in_thread() -> None:
        with StopSignals() as s:  # handlers cannot be installed here: a no-op, not an error
            outcome.append(s.requested)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert outcome == [False] and signal.getsignal(signal.SIGINT) is previous
