"""Shared fixtures of the CLI tests; makes ``cli_helpers`` importable under any import mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cli_helpers import DATES_STEPS, SMALL_DATA, TINY_SEQ2SEQ, run_cli  # noqa: E402


@pytest.fixture(scope="session")
def dates_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seq2seq run on the dates task (5 steps), trained once. Read-only: copy it before changing it."""
    out = tmp_path_factory.mktemp("dates") / "run"
    res = run_cli(["train", "--task", "dates", "--model", "seq2seq", "--max-steps", str(DATES_STEPS), *TINY_SEQ2SEQ,
                   *SMALL_DATA, "--out", str(out)])
    assert res.rc == 0, res.err
    (out.parent / "train_stdout.txt").write_text(res.out, encoding="utf-8")
    return out
