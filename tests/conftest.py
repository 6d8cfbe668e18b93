"""Run-wide pytest hooks: one clear line at the end when the browser tests were skipped for want of Chromium."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_helpers import SKIPPED_WITHOUT_CHROMIUM, skipped_without_chromium  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Each skipped test already has its reason in the short summary, but only with -rs and once per test; this
    # says it once, even under -q, so that `make test` never passes quietly without its browser tests.
    count = skipped_without_chromium(terminalreporter.stats.get("skipped", []))
    if count:
        terminalreporter.write_line(f"{SKIPPED_WITHOUT_CHROMIUM} ({count} tests)", yellow=True, bold=True)
