"""Summarization end to end through the CLI on a hand-made Debian description index: train, resume, score."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import read_jsonl, run_cli
from safetensors.torch import load_file

from attnlab.pipeline import Translator, load_predictor

NOUNS = ["parser", "editor", "library", "server", "daemon", "compiler", "viewer", "toolkit", "monitor", "shell"]
ADJS = ["fast", "small", "secure", "graphical", "portable", "modular", "simple", "extensible"]


def _index(n: int = 160) -> str:
    """``n`` packages in distinct families, each a synopsis and a long description that starts with it."""
    entries = []
    for i in range(n):
        adj, noun = ADJS[i % len(ADJS)], NOUNS[(i // len(ADJS)) % len(NOUNS)]
        name = f"pkg{i}{noun}"
        synopsis = f"{adj} {noun} for project {i}"
        body = (f" The {adj} {noun} of project {i} is a tool that helps users work with data in many formats,\n"
                f" and it is written carefully so that every user can rely on it every day.")
        entries.append(f"Package: {name}\nDescription-md5: {i:032x}\nDescription-en: {synopsis}\n{body}\n")
    return "\n".join(entries)


ARGS = ["train", "--corpus", "debian-descriptions", "--model", "transformer", "--no-progress",
        "--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=32",
        "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1", "--set", "data.vocab_size=120",
        "--set", "decode.eval_sentences=5", "--set", "decode.max_len=12", "--set", "train.log_every=1",
        "--set", "train.tokens_per_batch=400", "--set", "train.eval_every=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("debian")
    (root / "debian-descriptions").mkdir()
    (root / "debian-descriptions" / "Translation-en").write_text(_index(), encoding="utf-8")
    return ["--data-dir", str(root), "--set", f"data.split_file={root / 'split.json'}"]


def test_a_corpus_too_small_for_the_split_is_a_one_line_error(data: list[str], tmp_path: Path) -> None:
    # a split made on the fly holds out 2,000 + 2,000 pairs by default: more than this corpus has
    res = run_cli([*ARGS, *data, "--max-steps", "3", "--out", str(tmp_path / "a")])
    assert res.rc == 2 and len(res.error_lines()) == 1, res.err
    assert "leave no training pairs" in res.err


@pytest.fixture
def small_split(data: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The same corpus with 20 validation and 20 test pairs (the recipe's 2,000 do not fit in 160)."""
    from attnlab.data import debian

    monkeypatch.setattr(debian, "load_debian_split", functools.partial(debian.load_debian_split, valid=20, test=20))
    return ["--data-dir", data[1], "--set", f"data.split_file={tmp_path / 'split.json'}"]


def test_summarization_run_end_to_end(small_split: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = run_cli([*ARGS, *small_split, "--max-steps", "6", "--out", str(run)])
    assert res.rc == 0, res.err
    assert "test (20 pairs, beam 1): exact match" in res.out and "ROUGE-L" in res.out
    assert "baseline Lead-" in res.out
    results = json.loads((run / "test_results.json").read_text(encoding="utf-8"))
    assert set(results["beam1"]) >= {"rouge1", "rouge2", "rougeL", "rouge_settings"}
    assert 1 <= results["lead_k"]["k"] <= 30
    evals = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals and all("val_rougeL" in r for r in evals)
    translator = load_predictor(run)
    assert isinstance(translator, Translator) and translator.config.task_name == "summarization"

    straight = tmp_path / "straight"
    for argv in (["--max-steps", "3", "--out", str(tmp_path / "resumed")],
                 ["--max-steps", "6", "--resume", "--out", str(tmp_path / "resumed")],
                 ["--max-steps", "6", "--out", str(straight)]):
        assert run_cli([*ARGS, *small_split, "--set", "data.num_test=0", *argv]).rc == 0
    a = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    b = load_file(straight / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    res = run_cli(["evaluate", "--checkpoint", str(run), "--beam", "1", "--json"])
    assert res.rc == 0, res.err
    assert json.loads(res.out)["beam1"]["rougeL"] == results["beam1"]["rougeL"]
