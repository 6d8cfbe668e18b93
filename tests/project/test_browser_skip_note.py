"""`make test` (pytest) says in one line when the browser tests were skipped because no Chromium was found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(REPO / "tests"))
from browser_helpers import SKIPPED_WITHOUT_CHROMIUM, find_chromium  # noqa: E402


def _pytest_without_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a child process that finds no Chromium: an empty PATH and ATTNLAB_CHROMIUM at a missing file."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNLAB_REQUIRE_BROWSER", "PYTEST_ADDOPTS")}
    env |= {"PATH": str(empty), "ATTNLAB_CHROMIUM": str(tmp_path / "no-such-chromium"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_lookup_finds_nothing_without_chromium_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting the child process relies on."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("ATTNLAB_CHROMIUM", str(tmp_path / "no-such-chromium"))
    assert find_chromium() is None


def test_skipped_browser_tests_are_reported_once(tmp_path: Path) -> None:
    run = _pytest_without_chromium(tmp_path, "tests/viz/test_browser.py")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith(SKIPPED_WITHOUT_CHROMIUM)]
    assert len(lines) == 1, run.stdout
    assert "skipped" in run.stdout.splitlines()[-1] and "passed" not in run.stdout.splitlines()[-1]


def test_no_line_when_no_browser_test_was_skipped(tmp_path: Path) -> None:
    run = _pytest_without_chromium(tmp_path, "tests/viz/test_browser.py", "-m", "not browser")
    assert run.returncode == 5, run.stdout + run.stderr  # every test deselected: nothing ran, nothing skipped
    assert SKIPPED_WITHOUT_CHROMIUM not in run.stdout
