"""``attnlab average``: checkpoint averaging of a run's snapshots or of listed checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import SMALL_DATA, TINY_SEQ2SEQ, run_cli

from attnlab.pipeline import load_translator
from attnlab.train.checkpoint import load_checkpoint


def _train(out: Path, *extra: str) -> None:
    res = run_cli(["train", "--task", "dates", "--model", "seq2seq", "--max-steps", "6", *TINY_SEQ2SEQ, *SMALL_DATA,
                   "--set", "train.save_every=2", "--set", "train.keep_snapshots=3", *extra, "--out", str(out)])
    assert res.rc == 0, res.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("avg") / "run"
    _train(out)
    return out


def test_average_of_a_runs_snapshots_is_the_mean_and_translates(run_dir: Path, tmp_path: Path) -> None:
    res = run_cli(["average", str(run_dir), "--out", str(tmp_path / "avg")])
    assert res.rc == 0, res.err
    assert "averaged 3 checkpoints (steps 2, 4, 6)" in res.out
    snaps = [load_checkpoint(run_dir / "snapshots" / f"step-000000{s}").model_state for s in (2, 4, 6)]
    avg = load_checkpoint(tmp_path / "avg")
    assert avg.step == 6 and avg.optimizer_state is None
    assert [s["step"] for s in avg.extra["averaged_from"]] == [2, 4, 6]
    floating = [k for k, v in snaps[0].items() if v.dtype.is_floating_point]
    assert floating
    for name in floating:
        expected = (snaps[0][name].double() + snaps[1][name].double() + snaps[2][name].double()) / 3
        torch.testing.assert_close(avg.model_state[name], expected.float())
    assert any(not torch.equal(avg.model_state[k], snaps[2][k]) for k in floating)  # really a new set of weights
    translator = load_translator(tmp_path / "avg")
    assert translator.config == load_translator(run_dir / "last").config
    res = run_cli(["translate", "--checkpoint", str(tmp_path / "avg")], stdin=b"march 3, 2001\n")
    assert res.rc == 0 and len(res.out.splitlines()) == 1


def test_last_n_and_listed_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    res = run_cli(["average", str(run_dir), "--last", "2", "--out", str(tmp_path / "a")])
    assert res.rc == 0 and "steps 4, 6" in res.out
    listed = [str(run_dir / "snapshots" / "step-0000006"), str(run_dir / "snapshots" / "step-0000002")]
    res = run_cli(["average", *listed, "--out", str(tmp_path / "b")])
    assert res.rc == 0 and "steps 2, 6" in res.out  # sorted by step; the newest gives config and step
    assert load_checkpoint(tmp_path / "b").step == 6


@pytest.mark.parametrize(("how", "rc", "words"), [
    ("one", 4, "at least two checkpoints"),
    ("exists", 4, "already exists"),
    ("no_snapshots", 4, "keep_snapshots"),
    ("last_one", 2, "--last must be at least 2"),
    ("last_with_list", 2, "--last selects snapshots"),
    ("other_model", 4, "model config differs"),
])
def test_bad_requests_exit_with_one_clear_line(run_dir: Path, tmp_path: Path, how: str, rc: int, words: str) -> None:
    snap = run_dir / "snapshots" / "step-0000006"
    argv = {"one": [str(snap)],
            "exists": [str(run_dir), "--out", str(run_dir / "last")],
            "no_snapshots": [str(tmp_path)],
            "last_one": [str(run_dir), "--last", "1"],
            "last_with_list": [str(snap), str(snap), "--last", "2"]}.get(how)
    if how == "other_model":
        other = tmp_path / "other"
        _train(other, "--set", "model.hidden_size=12")
        argv = [str(snap), str(other / "snapshots" / "step-0000006")]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "avg")]
    before = sorted(p.name for p in run_dir.iterdir())
    res = run_cli(["average", *argv])
    assert res.rc == rc, res.err
    lines = res.error_lines()
    assert len(lines) == 1 and words in lines[0], res.err
    assert "Traceback" not in res.err
    assert sorted(p.name for p in run_dir.iterdir()) == before and not (tmp_path / "avg").exists()
