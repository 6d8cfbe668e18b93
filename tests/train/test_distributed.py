"""Data-parallel training under torchrun and with ``train.processes`` (2 processes, gloo, loopback only): DDP
equals one process, resumes exactly (also across a change of world size), and stops all ranks cleanly on SIGTERM;
the one-command group equals torchrun's and ends in one line when a worker dies.

Each torchrun launch starts three Python processes (agent + 2 ranks) on a 2-core machine: the tests train
tiny models for a few steps and are bounded in time; they prove correctness, not speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnlab.core.types import Batch, LabelBatch
from attnlab.train.distributed import DistContext, shard

TIMEOUT = 240  # seconds per launch: a bound, not an expectation (a launch takes ~10-20 s here)
STEPS = 6
# dropout 0: with dropout, DDP draws its masks per rank and cannot equal one process.
TRANSFORMER_ARGS = ["train", "--task", "dates", "--model", "transformer", "--set", "model.d_model=16",
                    "--set", "model.num_heads=2", "--set", "model.ffn_dim=32", "--set", "model.encoder_layers=1",
                    "--set", "model.decoder_layers=1", "--set", "model.dropout=0.0",
                    "--set", "data.num_train=300", "--set", "data.num_valid=20", "--set", "data.num_test=0",
                    "--set", "decode.eval_sentences=5", "--set", "train.log_every=1", "--set", "train.eval_every=3",
                    "--set", "train.save_every=3", "--set", "train.tokens_per_batch=400",
                    "--set", "train.num_threads=1", "--no-progress"]
CLASSIFIER_ARGS = ["train", "--task", "keywords", "--model", "rnn_classifier", "--set", "model.hidden_size=16",
                   "--set", "model.embed_dim=16", "--set", "model.dropout=0.0", "--set", "data.num_train=300",
                   "--set", "data.num_valid=20", "--set", "data.num_test=0", "--set", "train.log_every=1",
                   "--set", "train.eval_every=3", "--set", "train.save_every=3",
                   "--set", "train.tokens_per_batch=300", "--set", "train.num_threads=1", "--no-progress"]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CAPTIONER_ARGS = ["train", "--corpus", "fashion-mnist", "--task-kind", "captioning", "--data-dir", str(SHARED),
                  "--set", "model.decoder=gru", "--set", "model.d_model=16", "--set", "model.patch_size=16",
                  "--set", "model.dropout=0.0", "--set", "data.num_train=96", "--set", "data.num_valid=8",
                  "--set", "data.num_test=0", "--set", "decode.eval_sentences=4", "--set", "train.batch_size=16",
                  "--set", "train.log_every=1", "--set", "train.eval_every=3", "--set", "train.save_every=3",
                  "--set", "train.num_threads=1", "--no-progress"]
# Two ranks sum their gradients in another order than one process: equal within float32 rounding. Adam divides
# by sqrt(v) + eps, so a gradient that is zero up to rounding (attention's key-projection bias: softmax ignores a
# shift shared by all keys) turns its rounding noise into steps of size lr with random signs. eps 1e-4 (against
# gradients of ~1e-2 per element here) keeps such noise out of the parameters being compared; the runs compared
# always share the config.
EQUAL_ADAM = ["--set", "train.eps=1e-4"]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(argv: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--rdzv-endpoint=127.0.0.1:0", "-m", "attnlab", *argv]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res


def _single(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "attnlab", *argv]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _assert_close_runs(a: Path, b: Path, **tol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], msg=lambda m, n=name: f"{n}: {m}", **tol)
    la, lb = _losses(a), _losses(b)
    assert la.keys() == lb.keys() and len(la) == STEPS
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5), step


# ------------------------------------------------------------------------------------------ units


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("rows", [0, 1, 2, 5])
def test_shard_gives_every_row_to_exactly_one_rank(world: int, rows: int) -> None:
    batch = LabelBatch(tokens=torch.arange(rows * 3).view(rows, 3), valid_lens=torch.full((rows,), 3),
                       labels=torch.arange(rows), index=torch.arange(rows))
    parts = [shard(batch, DistContext(rank=r, world_size=world)) for r in range(world)]
    assert torch.equal(torch.cat([p.tokens for p in parts]), batch.tokens)
    assert torch.equal(torch.cat([p.index for p in parts]), batch.index)
    assert max(len(p.labels) for p in parts) - min(len(p.labels) for p in parts) <= 1


def test_shard_keeps_every_field_of_a_text_batch() -> None:
    b = Batch(src=torch.ones(4, 5, dtype=torch.long), src_lens=torch.tensor([5, 4, 3, 2]),
              tgt_in=torch.ones(4, 2, dtype=torch.long), tgt_out=torch.ones(4, 2, dtype=torch.long),
              tgt_lens=torch.tensor([2, 2, 1, 1]), index=torch.arange(4))
    part = shard(b, DistContext(rank=1, world_size=2))
    assert isinstance(part, Batch) and torch.equal(part.src_lens, torch.tensor([3, 2]))
    assert part.src.shape == (2, 5) and torch.equal(part.index, torch.tensor([2, 3]))
    assert shard(b, DistContext()) is b


# ------------------------------------------------------------------------------ 2 ranks, torchrun


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp")


# BPE-dropout: both ranks must draw the same segmentation of each global batch (and one process the same again).
BPE_DROPOUT = ["--set", "data.src_tokenizer=bpe", "--set", "data.tgt_tokenizer=bpe", "--set", "data.vocab_size=80",
               "--set", "data.bpe_dropout=0.2"]


@pytest.mark.parametrize("args", [TRANSFORMER_ARGS, CLASSIFIER_ARGS,
                                  [*CLASSIFIER_ARGS, "--set", "train.adversarial_eps=1.0"], CAPTIONER_ARGS,
                                  [*TRANSFORMER_ARGS, *BPE_DROPOUT]],
                         ids=["transformer", "rnn_classifier", "adversarial", "gru_captioner", "bpe_dropout"])
def test_two_ranks_train_the_model_one_process_trains(root: Path, args: list[str]) -> None:
    name = args[4] + ("-adv" if "train.adversarial_eps=1.0" in args else "") + \
        ("-bpe-dropout" if "data.bpe_dropout=0.2" in args else "")
    one, two = root / f"one-{name}", root / f"two-{name}"
    _run(_single([*args, *EQUAL_ADAM, "--max-steps", str(STEPS), "--out", str(one)]))
    res = _run(_torchrun([*args, *EQUAL_ADAM, "--max-steps", str(STEPS), "--out", str(two)]))
    _assert_close_runs(one, two, **TOLERANCE)
    assert res.stdout.count("trained 6 steps") == 1  # rank 0 alone reports
    assert (two / "best").is_dir() and (two / "last").is_dir()


def test_ddp_resume_equals_uninterrupted_ddp(root: Path) -> None:
    straight, resumed = root / "ddp-straight", root / "ddp-resumed"
    _run(_torchrun([*TRANSFORMER_ARGS, "--set", "model.dropout=0.1", "--max-steps", str(STEPS),
                    "--out", str(straight)]))
    _run(_torchrun([*TRANSFORMER_ARGS, "--set", "model.dropout=0.1", "--max-steps", "3", "--out", str(resumed)]))
    _run(_torchrun([*TRANSFORMER_ARGS, "--set", "model.dropout=0.1", "--max-steps", str(STEPS), "--resume",
                    "--out", str(resumed)]))
    # The same operations in the same order on each rank, dropout seeded per (step, rank): bit for bit.
    _assert_close_runs(straight, resumed, rtol=0.0, atol=0.0)


def test_one_process_checkpoint_resumes_on_two_ranks(root: Path) -> None:
    one = root / "one-transformer"  # 6 steps in one process (first test), else train it here
    if not (one / "last").is_dir():
        _run(_single([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", str(STEPS), "--out", str(one)]))
    mixed = root / "one-then-two"
    _run(_single([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", "3", "--out", str(mixed)]))
    _run(_torchrun([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", str(STEPS), "--resume", "--out", str(mixed)]))
    _assert_close_runs(one, mixed, **TOLERANCE)


def test_sigterm_to_torchrun_stops_all_ranks_with_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = _torchrun([*TRANSFORMER_ARGS, "--max-steps", "100000", "--set", "train.save_every=100000",
                     "--out", str(out)])
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        metrics = out / "metrics.jsonl"
        while time.monotonic() < deadline:  # wait until training is under way
            if metrics.exists() and len(metrics.read_text(encoding="utf-8").splitlines()) >= 5:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    meta = json.loads((out / "last" / "meta.json").read_text(encoding="utf-8"))
    state = json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] >= 5, meta
    # Both ranks stopped after the same step, each with one line (torchrun itself prints its own traceback).
    stops = [line for line in err.splitlines() if "training interrupted by SIGTERM after step" in line]
    assert len(stops) == 2 and stops[0] == stops[1], err[-3000:]
    assert f"after step {state['step']};" in stops[0] and "checkpoint saved to" in stops[0]
    assert "[rank0]: Traceback" not in err and "[rank1]: Traceback" not in err


# ------------------------------------------------------------------- 2 ranks, one command: train.processes


def _local(argv: list[str]) -> list[str]:
    return _single([*argv, "--set", "train.processes=2"])


def _torchrun_reference(root: Path) -> Path:
    """The 6-step torchrun run of the transformer (first test), trained here if that test did not run."""
    two = root / "two-transformer"
    if not (two / "last").is_dir():
        _run(_torchrun([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", str(STEPS), "--out", str(two)]))
    return two


def test_processes_2_trains_what_torchrun_trains(root: Path) -> None:
    local = root / "local-transformer"
    res = _run(_local([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", str(STEPS), "--out", str(local)]))
    # The same group (rank 0 = the command itself, rank 1 = the worker it starts), the same operations: bit for bit.
    _assert_close_runs(_torchrun_reference(root), local, rtol=0.0, atol=0.0)
    assert res.stdout.count("trained 6 steps") == 1  # rank 0 alone reports
    assert json.loads((local / "config.json").read_text(encoding="utf-8"))["train"]["processes"] == 2


def test_processes_2_resumes_exactly(root: Path) -> None:
    resumed = root / "local-resumed"
    _run(_local([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", "3", "--out", str(resumed)]))
    _run(_local([*TRANSFORMER_ARGS, *EQUAL_ADAM, "--max-steps", str(STEPS), "--resume", "--out", str(resumed)]))
    _assert_close_runs(_torchrun_reference(root), resumed, rtol=0.0, atol=0.0)


def _start_local(out: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A long 2-process run in its own session, its stderr in a file; returns once training is under way."""
    err = tmp_path / "stderr.txt"
    cmd = _local([*TRANSFORMER_ARGS, "--max-steps", "100000", "--set", "train.save_every=100000",
                  "--out", str(out)])
    with open(err, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=fh, text=True,
                                start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text(encoding="utf-8").splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text(encoding="utf-8")[-3000:]
        time.sleep(0.2)
    return proc, err


def _assert_group_gone(proc: subprocess.Popen[str]) -> None:
    with pytest.raises(ProcessLookupError):  # neither rank 0 nor its worker is left in the session
        os.killpg(proc.pid, 0)


def test_sigterm_to_the_command_stops_both_ranks_with_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc, err_file = _start_local(out, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)  # to rank 0 alone: the per-step agreement tells the worker
        assert proc.wait(timeout=TIMEOUT) == 143
        time.sleep(0.5)
        _assert_group_gone(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = err_file.read_text(encoding="utf-8")
    state = json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))
    stops = [line for line in err.splitlines() if "training interrupted by SIGTERM after step" in line]
    assert len(stops) == 2 and stops[0] == stops[1], err[-3000:]
    assert f"after step {state['step']};" in stops[0] and "Traceback" not in err


def test_a_killed_worker_ends_the_command_with_one_line_and_its_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc, err_file = _start_local(out, tmp_path)
    try:
        found = re.search(r"workers: pid (\d+)", err_file.read_text(encoding="utf-8"))
        assert found, err_file.read_text(encoding="utf-8")[-2000:]
        os.kill(int(found.group(1)), signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == 137
        _assert_group_gone(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = err_file.read_text(encoding="utf-8")
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == ["attnlab train: error: worker rank 1 of train.processes ended with exit code 137 (SIGKILL); "
                      "its own error, if any, is above"], err[-3000:]
    assert "Traceback" not in err


_POPEN = subprocess.Popen


class _ExitingWorker:
    """Stands in for subprocess.Popen in :mod:`attnlab.train.launch`: a process that exits with ``code``."""

    code = 0

    def __new__(cls, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        cls.seen = (argv, env)
        return _POPEN([sys.executable, "-c", f"raise SystemExit({cls.code})"])


@pytest.mark.parametrize("code", [0, 3])
def test_the_group_environment_is_restored_and_a_failed_worker_reported(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path, code: int) -> None:
    from attnlab.core.errors import ConfigError
    from attnlab.train import launch

    monkeypatch.setattr(launch.subprocess, "Popen", _ExitingWorker)
    monkeypatch.setattr(_ExitingWorker, "code", code)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("MASTER_PORT", "1234")
    before = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if code:
            stack.enter_context(pytest.raises(launch.WorkerFailed, match="worker rank 1 .* exit code 3;"))
        with launch.local_group(2, {"train": {"lr": 0.1}}, tmp_path / "run", resume=True):
            assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "2" and launch.under_launcher()
            argv, env = _ExitingWorker.seen
            assert env["RANK"] == "1" and env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] != "1234"
            config = Path(argv[argv.index("--config") + 1])
            assert json.loads(config.read_text(encoding="utf-8")) == {"train": {"lr": 0.1}}
            assert argv[-1] == "--resume" and argv[argv.index("--out") + 1] == str(tmp_path / "run")
    assert dict(os.environ) == before and not config.exists()
    # An error of rank 0's own (not a worker's) is raised as it is, and the workers are stopped.
    monkeypatch.setattr(_ExitingWorker, "code", 0)
    for error in (ConfigError("rank 0's own"), RuntimeError("rank 0's own crash")):
        with pytest.raises(type(error), match="rank 0's own"), \
                launch.local_group(2, {}, tmp_path / "r2", resume=False):
            raise error
    # A crash of rank 0's with a worker that failed first (the cause) reports the worker.
    monkeypatch.setattr(_ExitingWorker, "code", 3)
    with pytest.raises(launch.WorkerFailed, match="exit code 3;"), \
            launch.local_group(2, {}, tmp_path / "r3", resume=False):
        time.sleep(1.0)
        raise RuntimeError("Connection closed by peer")
    assert dict(os.environ) == before


@pytest.mark.parametrize(("processes", "env", "noted"), [
    (2, {"WORLD_SIZE": "4", "RANK": "0"}, True),   # torchrun made 4: the recipe's 2 does not apply, said once
    (2, {"WORLD_SIZE": "4", "RANK": "3"}, False),  # ... by rank 0 only
    (2, {"WORLD_SIZE": "2", "RANK": "0"}, False),  # our own group, or torchrun with the same count
    (1, {"WORLD_SIZE": "4", "RANK": "0"}, False),
    (2, {}, False),                                # no launcher: train.processes starts the group
])
def test_train_processes_under_another_launcher_is_noted(monkeypatch: pytest.MonkeyPatch, processes: int,
                                                         env: dict[str, str], noted: bool) -> None:
    from attnlab.train.launch import ignored_processes

    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    note = ignored_processes(processes)
    assert (note is not None) == noted
    if noted:
        assert note.startswith("note: train.processes: 2 does not apply") and "group of 4 processes" in note
