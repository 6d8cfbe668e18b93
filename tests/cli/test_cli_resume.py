"""``attnlab train --resume``: continuing a run exactly, refusing what would lose or mix runs, and Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import SMALL_DATA, TINY_SEQ2SEQ, checkpoint_step, read_jsonl, run_cli, snapshot
from safetensors.torch import load_file

from attnlab.pipeline import load_translator

N = 4
# log_every=1: a train record per step to compare; a small token budget: the resume is in the middle of an epoch.
RESUME_ARGS = ["train", "--task", "dates", "--model", "seq2seq", *TINY_SEQ2SEQ, *SMALL_DATA, "--set",
               "data.num_test=0", "--set", "train.log_every=1", "--set", "train.tokens_per_batch=300"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``resumed``: N steps, then --resume to 2N; ``straight``: 2N steps in one go (same seed)."""
    root = tmp_path_factory.mktemp("resume")
    resumed, straight = root / "resumed", root / "straight"
    for argv in (["--max-steps", str(N), "--out", str(resumed)],
                 ["--max-steps", str(2 * N), "--resume", "--out", str(resumed)],
                 ["--max-steps", str(2 * N), "--out", str(straight)]):
        res = run_cli(RESUME_ARGS + argv)
        assert res.rc == 0, res.err
    return {"resumed": resumed, "straight": straight}


def test_resume_continues_to_2n_without_duplicate_steps(runs: dict[str, Path]) -> None:
    out = runs["resumed"]
    assert checkpoint_step(out / "last") == 2 * N
    records = read_jsonl(out / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    eval_steps = [r["step"] for r in records if r["kind"] == "eval"]
    assert train_steps == list(range(1, 2 * N + 1))
    assert eval_steps == [N, 2 * N]
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["train"]["max_steps"] == 2 * N


def test_resume_is_bit_exact(runs: dict[str, Path]) -> None:
    """N steps + resume to 2N == 2N uninterrupted: every parameter, optimizer moment and logged loss."""
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(runs["resumed"] / "last" / name)
        b = load_file(runs["straight"] / "last" / name)
        assert a.keys() == b.keys() and a
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {different}"
    losses = [{r["step"]: r["loss"] for r in read_jsonl(runs[k] / "metrics.jsonl") if r["kind"] == "train"}
              for k in ("resumed", "straight")]
    assert losses[0] == losses[1]


def test_resume_with_other_model_or_data_options_exits_2_and_changes_nothing(runs: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(runs["resumed"], out)
    before = snapshot(out)
    for extra in (["--set", "model.hidden_size=32"], ["--set", "model.rnn=lstm"]):
        res = run_cli(RESUME_ARGS + ["--max-steps", str(3 * N), "--resume", *extra, "--out", str(out)])
        assert res.rc == 2 and len(res.error_lines()) == 1 and "model" in res.error_lines()[0], res.err
    other_family = ["train", "--task", "dates", "--model", "transformer", *SMALL_DATA]
    res = run_cli(other_family + ["--max-steps", str(3 * N), "--resume", "--out", str(out)])
    assert res.rc == 2 and len(res.error_lines()) == 1 and "model" in res.error_lines()[0], res.err
    res = run_cli(["train", "--task", "reverse", "--max-steps", str(3 * N), "--resume", "--out", str(out)])
    assert res.rc == 2 and len(res.error_lines()) == 1 and "data" in res.error_lines()[0], res.err
    assert snapshot(out) == before


def test_fresh_run_into_an_existing_run_exits_2_and_changes_nothing(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(runs["resumed"], out)
    before = snapshot(out)
    res = run_cli(RESUME_ARGS + ["--max-steps", str(N), "--out", str(out)])
    assert res.rc == 2 and len(res.error_lines()) == 1 and "--resume" in res.error_lines()[0], res.err
    assert snapshot(out) == before


def test_resume_without_last_exits_4(tmp_path: Path) -> None:
    for out in (tmp_path / "missing", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        res = run_cli(RESUME_ARGS + ["--max-steps", str(N), "--resume", "--out", str(out)])
        assert res.rc == 4 and len(res.error_lines()) == 1 and "last" in res.error_lines()[0], res.err
        assert not (out / "last").exists() and not (out / "metrics.jsonl").exists()


def test_ctrl_c_saves_last_exits_130_and_resume_continues(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = RESUME_ARGS + ["--max-steps", "1000000", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "attnlab.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and metrics.stat().st_size > 0):  # a step is done: the handlers are in place
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    step = checkpoint_step(out / "last")
    assert step >= 1
    assert load_translator(out / "last").step == step
    res = run_cli(["train", "--resume", "--out", str(out), "--max-steps", str(step + 2), "--no-progress"])
    assert res.rc == 0, res.err
    assert checkpoint_step(out / "last") == step + 2
    train_steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert train_steps == list(range(1, step + 3))


def test_translate_given_a_run_directory_uses_its_best_checkpoint(runs: dict[str, Path]) -> None:
    out = runs["resumed"]
    assert checkpoint_step(out / "best") == N < checkpoint_step(out / "last")  # best and last differ here
    assert load_translator(out).step == N
    stdin = b"Nov 21, 2026\n1 jan 2000\n"
    via_run = run_cli(["translate", "--checkpoint", str(out)], stdin=stdin)
    via_best = run_cli(["translate", "--checkpoint", str(out / "best")], stdin=stdin)
    assert via_run.rc == via_best.rc == 0 and via_run.out == via_best.out and via_run.out.count("\n") == 2
