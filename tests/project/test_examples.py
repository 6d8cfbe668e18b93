"""Every example runs (a few epochs, in make test) and reaches its target (the slow tests: a second or two each
on CPU)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the examples import their shared hello_common module
    return importlib.import_module(name)


HELLO = ["hello_rnncell", "hello_rnn", "hello_embedding", "hello_attention_pooling"]
CELLS = ["lstm", "gru", "bilstm"]


@pytest.mark.parametrize(("name", "choice"), [*((name, {}) for name in HELLO),
                                              *(("hello_rnn_variants", {"cell": cell}) for cell in CELLS),
                                              ("char_rnn", {})], ids=[*HELLO, *CELLS, "char_rnn"])
def test_every_example_runs_a_few_epochs(name: str, choice: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """The few-step smoke test of the slow tests below: each ``main()`` for 2 epochs, printing each of them."""
    module = _load(name)
    prediction = module.main(**choice, epochs=2, seed=0)
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "epoch   2" in printed and "epoch   3" not in printed
    if name == "char_rnn":
        assert len(prediction) == len(module.TEXT) and prediction.startswith(module.PROMPT)
        assert set(prediction) <= set(module.TEXT)
    else:
        assert len(prediction) == 5 and set(prediction) <= set("helo")


@pytest.mark.slow
@pytest.mark.parametrize("name", HELLO)
def test_hello_examples_learn_ohlol(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load(name).main(seed=0) == "ohlol"
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "'ohlol'" in printed  # predictions are printed per epoch


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_hello_rnn_variants_learn_ohlol(cell: str) -> None:
    assert _load("hello_rnn_variants").main(cell, seed=0, verbose=False) == "ohlol"


@pytest.mark.slow  # the control of the two learning tests above, so it runs with them
def test_hello_needs_training() -> None:
    # With no training the prediction is not the target: the tests above measure learning, not luck.
    assert _load("hello_rnn").main(epochs=1, seed=0, verbose=False) != "ohlol"


@pytest.mark.slow
def test_char_rnn_memorizes_text() -> None:
    char_rnn = _load("char_rnn")
    assert char_rnn.main(seed=0, verbose=False) == char_rnn.TEXT
