"""``attnlab train``: what a run directory holds, options from file/flags/--set, and usage errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import (
    DATES_STEPS,
    SMALL_DATA,
    TINY_SEQ2SEQ,
    TINY_TRANSFORMER,
    checkpoint_step,
    read_jsonl,
    run_cli,
)

from attnlab.pipeline import load_translator


def _check_run_dir(out: Path, *, task: str, kind: str, steps: int) -> None:
    for name in ("last", "best"):
        assert (out / name / "meta.json").is_file() and (out / name / "model.safetensors").is_file(), name
    assert checkpoint_step(out / "last") == steps
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["task"] == task and config["model"]["kind"] == kind
    assert config["train"]["max_steps"] == steps
    records = read_jsonl(out / "metrics.jsonl")
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and evals[-1]["step"] == steps and "val_loss" in evals[-1] and "val_exact_match" in evals[-1]
    results = json.loads((out / "test_results.json").read_text(encoding="utf-8"))
    assert results["beam1"]["sentences"] > 0 and 0.0 <= results["beam1"]["exact_match"] <= 1.0
    translator = load_translator(out / "best")  # the best checkpoint is a usable model of that kind
    assert translator.config.model.kind == kind and translator.config.data.task == task


def test_train_dates_seq2seq_writes_the_run_directory(dates_run: Path) -> None:
    _check_run_dir(dates_run, task="dates", kind="seq2seq", steps=DATES_STEPS)
    stdout = (dates_run.parent / "train_stdout.txt").read_text(encoding="utf-8")
    assert f"trained {DATES_STEPS} steps" in stdout and "test (" in stdout


@pytest.mark.parametrize(("task", "model", "tiny"), [("dates", "transformer", TINY_TRANSFORMER),
                                                     ("reverse", "seq2seq", TINY_SEQ2SEQ)])
def test_train_other_models_and_tasks_write_the_run_directory(tmp_path: Path, task: str, model: str,
                                                              tiny: list[str]) -> None:
    out = tmp_path / "run"
    res = run_cli(["train", "--task", task, "--model", model, "--max-steps", "3", *tiny, *SMALL_DATA,
                   "--out", str(out)])
    assert res.rc == 0, res.err
    _check_run_dir(out, task=task, kind=model, steps=3)


def test_config_file_then_flags_then_set(tmp_path: Path) -> None:
    """Defaults < --config file < flags < --set; what the file gives and nobody overrides is used."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: {source: task, task: reverse, num_train: 200, num_valid: 20, num_test: 0}\n"
                   "model: {kind: seq2seq, hidden_size: 12, embed_dim: 8, rnn: lstm}\n"
                   "train: {max_steps: 1, lr: 0.01, seed: 7}\n"
                   "decode: {eval_sentences: 5}\n", encoding="utf-8")
    out = tmp_path / "run"
    res = run_cli(["train", "--config", str(cfg), "--task", "dates", "--max-steps", "3", "--seed", "3",
                   "--set", "train.max_steps=2", "--set", "train.lr=1e-3", "--no-progress", "--out", str(out)])
    assert res.rc == 0, res.err
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["data"]["task"] == "dates"  # flag over file
    assert saved["data"]["num_train"] == 200 and saved["model"]["rnn"] == "lstm"  # file over defaults
    assert saved["model"]["hidden_size"] == 12
    assert saved["train"]["seed"] == 3  # flag over file
    assert saved["train"]["max_steps"] == 2 and checkpoint_step(out / "last") == 2  # --set over flag and file
    assert saved["train"]["lr"] == pytest.approx(1e-3)  # --set over file; "1e-3" is a number
    assert not (out / "test_results.json").exists()  # num_test: 0 from the file


@pytest.mark.parametrize(("where", "option", "named"), [
    ("set", "foo.bar=1", "foo.bar"),
    ("set", "model.no_such_key=1", "no_such_key"),
    ("set", "model.hidden_size=-1", "hidden_size"),
    ("set", "train.lr=abc", "lr"),
    ("set", "train.schedule=sometimes", "schedule"),
    ("set", "data.num_train=0", "num_train"),
    ("file", "optimizer: {lr: 0.1}\n", "optimizer"),
    ("file", "model: {hidden: 32}\n", "hidden"),
    ("file", "train: {warmup_steps: -5}\n", "warmup_steps"),
    ("file", "- just\n- a list\n", "mapping"),
])
def test_bad_options_exit_2_naming_them(tmp_path: Path, where: str, option: str, named: str) -> None:
    argv = ["train", "--task", "dates", "--max-steps", "2", *SMALL_DATA, "--out", str(tmp_path / "run")]
    if where == "set":
        argv += ["--set", option]
    else:
        (tmp_path / "bad.yaml").write_text(option, encoding="utf-8")
        argv += ["--config", str(tmp_path / "bad.yaml")]
    res = run_cli(argv)
    assert res.rc == 2
    assert len(res.error_lines()) == 1 and named in res.error_lines()[0], res.err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["--task", "nope"], ["--model", "lstm-transformer"], ["--corpus", "wmt14"]])
def test_unknown_names_are_argparse_errors(tmp_path: Path, argv: list[str]) -> None:
    res = run_cli(["train", *argv, "--out", str(tmp_path / "run")])
    assert res.rc == 2 and "invalid choice" in res.err and argv[1] in res.err
    assert not (tmp_path / "run").exists()


def test_corpus_files_without_files_names_the_missing_flags(tmp_path: Path) -> None:
    src = tmp_path / "train.src"
    src.write_text("a b\n", encoding="utf-8")
    res = run_cli(["train", "--corpus", "files", "--train-src", str(src), "--no-progress", "--out",
                   str(tmp_path / "run")])
    assert res.rc == 2
    line = res.error_lines()[0]
    assert len(res.error_lines()) == 1
    for flag in ("--train-tgt", "--valid-src", "--valid-tgt"):
        assert flag in line
    assert "--train-src" not in line  # given: not reported missing
    assert not (tmp_path / "run").exists()


def test_out_that_cannot_be_written_exits_2_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me\n", encoding="utf-8")
    for out in (blocker / "run", blocker):
        res = run_cli(["train", "--task", "dates", "--max-steps", "2", *TINY_SEQ2SEQ, *SMALL_DATA, "--out", str(out)])
        assert res.rc == 2, res.err
        assert len(res.error_lines()) == 1 and str(blocker) in res.error_lines()[0]
        assert "Traceback" not in res.err
    assert blocker.read_text(encoding="utf-8") == "keep me\n"
