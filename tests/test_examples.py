"""Every example reaches its target (each run takes a second or two on CPU)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the examples import their shared hello_common module
    return importlib.import_module(name)


@pytest.mark.parametrize("name", ["hello_rnncell", "hello_rnn", "hello_embedding", "hello_attention_pooling"])
def test_hello_examples_learn_ohlol(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load(name).main(seed=0) == "ohlol"
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "'ohlol'" in printed  # predictions are printed per epoch


@pytest.mark.parametrize("cell", ["lstm", "gru", "bilstm"])
def test_hello_rnn_variants_learn_ohlol(cell: str) -> None:
    assert _load("hello_rnn_variants").main(cell, seed=0, verbose=False) == "ohlol"


def test_hello_needs_training() -> None:
    # With no training the prediction is not the target: the tests above measure learning, not luck.
    assert _load("hello_rnn").main(epochs=1, seed=0, verbose=False) != "ohlol"


def test_char_rnn_memorizes_text() -> None:
    char_rnn = _load("char_rnn")
    assert char_rnn.main(seed=0, verbose=False) == char_rnn.TEXT
