"""``attnlab demo`` (the main job, shortened to a few steps; on a few dates in make test, on the recipe's data in
the slow tests) and a Multi30k smoke run of ``attnlab train``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import TINY_TRANSFORMER, checkpoint_step, run_cli, snapshot

import attnlab.cli.demo as demo_cli
from attnlab.cli.demo import EXAMPLES, demo_config
from attnlab.core.run_config import RunConfig, merge_dicts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_DIR = Path("/work/shared/data")


def _small_demo_config(max_steps: int | None = None, seed: int | None = None) -> RunConfig:
    """The demo recipe on 200 training, 20 validation and 20 held-out dates (the recipe: 20,000 and 1,000)."""
    cfg = demo_config(max_steps, seed)
    small = {"data": {"num_train": 200, "num_valid": 20, "num_test": 20}, "decode": {"eval_sentences": 5}}
    return RunConfig.from_dict(merge_dicts(cfg.to_dict(), small))


def test_demo_on_a_few_dates_writes_heatmaps_and_reuses_a_finished_run(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke test of the slow test below: the same command and checks on a few dates, 2 steps."""
    monkeypatch.setattr(demo_cli, "demo_config", _small_demo_config)
    _demo_writes_heatmaps_and_reuses_a_finished_run(tmp_path / "demo", steps=2, held_out=20)


@pytest.mark.slow  # ~6-10 s: the demo recipe's data (20k dates) and decoding of ~1000 held-out dates, twice
def test_demo_writes_heatmaps_and_reuses_a_finished_run(tmp_path: Path) -> None:
    _demo_writes_heatmaps_and_reuses_a_finished_run(tmp_path / "demo", steps=5, held_out=None)


def _demo_writes_heatmaps_and_reuses_a_finished_run(out: Path, *, steps: int, held_out: int | None) -> None:
    res = run_cli(["demo", "--out", str(out), "--max-steps", str(steps), "--no-progress"])
    assert res.rc == 0, res.err
    for i in range(1, 7):
        png = out / f"attention-{i}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, png
        assert str(png) in res.out
    html = (out / "attention.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html.lower()
    # One page holds all six translations, each with its source, its prediction and its cross-attention.
    data = json.loads(re.search(r'id="attnlab-data">(.*?)</script>', html, re.S).group(1))
    assert [e["name"] for e in data["examples"]] == EXAMPLES
    for i, example in enumerate(data["examples"], start=1):
        assert f"  {example['name']:<24} -> {example['prediction']:<12} {out / f'attention-{i}.png'}" in res.out
    assert [(v["example"], v["kind"]) for v in data["views"]] == [(i, "cross") for i in range(6)]
    assert ["".join(v["keyTokens"]).replace("\u2423", " ") for v in data["views"]] == EXAMPLES
    assert f"interactive viewer: {out / 'attention.html'} (all 6 translations)" in res.out
    assert "held-out accuracy (exact match" in res.out and f"trained {steps} steps" in res.out
    if held_out is not None:
        assert f"held-out accuracy (exact match, {held_out} dates never seen in training)" in res.out
    assert checkpoint_step(out / "last") == steps and (out / "best" / "meta.json").is_file()

    checkpoints = {k: v for k, v in snapshot(out).items() if k.startswith(("last/", "best/"))}
    metrics = (out / "metrics.jsonl").read_bytes()
    res = run_cli(["demo", "--out", str(out), "--max-steps", str(steps), "--no-progress"])
    assert res.rc == 0, res.err
    assert "continuing" in res.out and "held-out accuracy (exact match" in res.out
    assert checkpoint_step(out / "last") == steps
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith(("last/", "best/"))} == checkpoints  # not rewritten
    assert (out / "metrics.jsonl").read_bytes() == metrics  # no step trained
    assert all((out / f"attention-{i}.png").read_bytes()[:8] == PNG_MAGIC for i in range(1, 7))


@pytest.mark.skipif(not (DATA_DIR / "multi30k").is_dir(), reason="needs the Multi30k files in /work/shared/data")
def test_multi30k_smoke_run_scores_bleu(tmp_path: Path) -> None:
    out = tmp_path / "m30k"
    res = run_cli(["train", "--corpus", "multi30k", "--src", "en", "--tgt", "de", "--data-dir", str(DATA_DIR),
                   "--model", "transformer", *TINY_TRANSFORMER, "--set", "data.max_train=300",
                   "--set", "data.vocab_size=300", "--set", "decode.max_len=20", "--set", "decode.eval_sentences=5",
                   "--max-steps", "3", "--no-progress", "--out", str(out)])
    assert res.rc == 0, res.err
    assert "BLEU" in res.out
    beam1 = json.loads((out / "test_results.json").read_text(encoding="utf-8"))["beam1"]
    assert beam1["sentences"] == 1000  # test_2016_flickr
    assert 0.0 <= beam1["bleu"] <= 100.0 and 0.0 <= beam1["chrf"] <= 100.0
    assert beam1["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["source"] == "multi30k" and config["train"]["best_metric"] == "val_bleu"
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "val_bleu" in evals[-1] and (out / "best" / "meta.json").is_file()
