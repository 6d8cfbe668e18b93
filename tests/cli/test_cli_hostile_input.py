"""Hostile command lines: integers out of range, huge sizes, alias bombs and endless values in ``--set`` end in one
bounded line with exit code 2 -- before anything large is allocated, never with a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from cli_helpers import SMALL_DATA, run_cli

from attnlab.core.errors import ExitCode

MAX_LINE = 600  # names the flag or field and what it expects; never more than ~80 characters of the input


def _one_error_line(argv: list[str]) -> str:
    """Run ``attnlab ARGV``; assert exit 2 and exactly one bounded stderr line; return it."""
    res = run_cli(argv)
    lines = res.err.strip().splitlines()
    assert res.rc == ExitCode.USAGE, res.err[:2000]
    assert len(lines) == 1 and "Traceback" not in res.err, res.err[:2000]
    assert len(lines[0]) <= MAX_LINE and "error:" in lines[0], lines[0][:2000]
    return lines[0]


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a model (or a traced attention) at all fails the test: the size check must come first."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built before its size was checked")
    for target in ("attnlab.models.build.Seq2Seq.__init__", "attnlab.models.build.Transformer.__init__",
                   "attnlab.attention.MultiHeadAttention.__init__"):
        monkeypatch.setattr(target, refuse)


@pytest.mark.parametrize("seed", [str(2**64), str(2**63), "-1", "9" * 200])
def test_seed_out_of_range_is_one_line(tmp_path, seed: str) -> None:
    line = _one_error_line(["train", "--task", "dates", "--seed", seed, "--out", str(tmp_path / "out")])
    assert "seed" in line and len(line) < 250, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--seed", "--max-steps"])
def test_an_unparsable_integer_is_quoted_short(tmp_path, flag: str) -> None:
    """argparse prints its usage, then the error; the error quotes only the start of the argument."""
    for value in ("7" * 5000, "x" * 5000):
        res = run_cli(["train", "--task", "dates", flag, value, "--out", str(tmp_path / "out")])
        assert res.rc == ExitCode.USAGE and "Traceback" not in res.err
        error = [line for line in res.err.splitlines() if "error:" in line]
        assert len(error) == 1 and flag in error[0] and len(error[0]) < 200, res.err[-2000:]


@pytest.mark.parametrize(("item", "needles"), [
    ("train.seed=" + "7" * 5000, ["TrainConfig.seed", "expected an integer"]),
    ("train.lr=2026-13-45", ["TrainConfig.lr"]),
    ("train.lr=" + "[" * 50_000 + "]" * 50_000, ["TrainConfig.lr"]),
    ("train.lr=[&a [1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, "
     "*b], &d [*c, *c, *c, *c, *c, *c, *c, *c], &e [*d, *d, *d, *d, *d, *d, *d, *d], &f [*e, *e, *e, *e, *e, *e, "
     "*e, *e], &g [*f, *f, *f, *f, *f, *f, *f, *f]]", ["TrainConfig.lr"]),
    ("x" * 10_000, ["--set", "SECTION.KEY=VALUE"]),
    ("train." + "k" * 10_000 + "=1", ["unknown option"]),
    ("model.kind=[1]", ["model.kind"]),
    ("model.rnn=" + "r" * 10_000, ["Seq2SeqConfig.rnn"]),
])
def test_set_values_are_quoted_short(tmp_path, item: str, needles: list[str]) -> None:
    line = _one_error_line(["train", "--task", "dates", "--model", "seq2seq", "--set", item,
                            "--out", str(tmp_path / "out")])
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(("model", "item", "field"), [
    ("seq2seq", "model.hidden_size=1000000000", "model.hidden_size=1000000000"),
    ("seq2seq", "model.num_layers=1000000", "model.num_layers=1000000"),
    ("transformer", "model.d_model=1048576", "model.d_model=1048576"),
    ("transformer", "model.max_len=100000000000", "model.max_len=100000000000"),
])
def test_a_model_too_large_to_build_is_refused_first(tmp_path, monkeypatch: pytest.MonkeyPatch, model: str,
                                                     item: str, field: str) -> None:
    _no_models(monkeypatch)
    extra = ["--set", "model.num_heads=1"] if model == "transformer" else []
    line = _one_error_line(["train", "--task", "dates", "--model", model, "--set", item, *extra, *SMALL_DATA,
                            "--max-steps", "1", "--out", str(tmp_path / "out")])
    assert field in line and "MAX_PARAMETERS" in line, line


@pytest.mark.parametrize(("args", "flag"), [
    (["--batch", str(10**9)], "--batch"),
    (["--d-model", str(2**20), "--heads", "1"], "--d-model"),
    (["--seq", str(10**7)], "--seq"),
    (["--kv-seq", str(10**30)], "--kv-seq"),
    (["--heads", str(2**40), "--d-model", str(2**40)], "--d-model"),
])
def test_trace_refuses_sizes_it_cannot_allocate(monkeypatch: pytest.MonkeyPatch, args: list[str], flag: str) -> None:
    _no_models(monkeypatch)
    line = _one_error_line(["trace", *args])
    assert line.startswith(f"attnlab trace: error: {flag} ") and "GiB" in line, line


@pytest.mark.parametrize("args", [["--batch", "0"], ["--heads", "-3"], ["--d-model", "10", "--heads", "3"]])
def test_trace_refuses_impossible_sizes(args: list[str]) -> None:
    _one_error_line(["trace", *args])


def test_trace_quotes_an_unparsable_size_short() -> None:
    res = run_cli(["trace", "--batch", "9" * 5000])
    error = [line for line in res.err.splitlines() if "error:" in line]
    assert res.rc == ExitCode.USAGE and len(error) == 1 and "--batch" in error[0] and len(error[0]) < 200


def test_trace_still_traces_small_sizes() -> None:
    res = run_cli(["trace", "--d-model", "16", "--heads", "2", "--batch", "2", "--seq", "3", "--kv-seq", "4"])
    assert res.rc == 0 and "cross-attention" in res.out and "D=16" in res.out


@pytest.mark.parametrize("argv", [
    ["explain-head", "--seed", "9" * 25], ["explain", "--checkpoint", "x", "--seed", "-3"],
    ["translate", "--checkpoint", "x", "--beam", "1000000000"], ["evaluate", "--checkpoint", "x", "--beam", "0"],
    ["predict", "--checkpoint", "x", "--beam", "99999"], ["data", "split", "--seed", "-1", "x"],
    ["demo", "--seed", "9" * 20],
])
def test_seeds_and_beams_out_of_range_are_one_line_usage_errors(argv: list[str]) -> None:
    result = run_cli(argv)
    assert result.rc == 2
    lines = result.error_lines()
    assert len(lines) == 1 and "expected an integer from" in lines[0] and len(lines[0]) < 200
