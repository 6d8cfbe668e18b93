"""``attnlab explain`` end to end on a tiny classifier trained through the CLI: table, JSON, a safe page, errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from attnlab.cli import main
from attnlab.explain import METHODS

HOSTILE = '<img src=x onerror=alert(1)> </script><b>bold</b> "quoted" & boring'
QUICK = ["--ig-steps", "4", "--max-k", "3", "--permutations", "2", "--no-progress"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``attnlab ARGV`` in this process: (exit code, stdout, stderr); a traceback fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Transformer classifier on the keywords task, trained for a few steps (seconds)."""
    out = tmp_path_factory.mktemp("explain") / "run"
    rc, _, err = run_cli(["train", "--task", "keywords", "--model", "transformer_classifier", "--max-steps", "6",
                          "--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=16",
                          "--set", "model.num_layers=1", "--set", "data.num_train=200", "--set", "data.num_valid=20",
                          "--set", "data.num_test=20", "--set", "train.tokens_per_batch=200", "--set",
                          "train.num_threads=1", "--no-progress", "--out", str(out)])
    assert rc == 0, err
    return out


def test_split_prints_the_table_and_writes_json_and_a_page(run_dir: Path, tmp_path: Path) -> None:
    html_path, json_path = tmp_path / "e.html", tmp_path / "e.json"
    rc, out, err = run_cli(["explain", "--checkpoint", str(run_dir), "--split", "test", "--n", "4", *QUICK,
                            "--html", str(html_path), "--json", str(json_path)])
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("explained 4 test texts with a transformer_classifier")
    header = next(line for line in lines if line.startswith("method"))
    assert header.split() == ["method", "comp@1", "comp", "AOPC", "suff", "AOPC", "tau", "vs", "IG", "tau", "vs",
                              "LOO"]
    for method in (*METHODS, "random"):
        assert any(line.split()[:1] == [method] for line in lines), method
    assert any(line.startswith("pooling permuted") and line.endswith("/8") for line in lines)
    assert any(line.startswith("layers.0.self_attn uniform") for line in lines)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert set(data) == {"checkpoint", "step", "model", "report", "examples"}
    assert set(data["report"]) == {"n", "methods", "agreement", "head_agreement", "ks", "curves", "checks"}
    assert data["report"]["n"] == 4 and data["report"]["ks"] == [1, 2, 3]
    assert data["report"]["methods"] == list(METHODS)
    assert set(data["report"]["head_agreement"]) == {"saliency", "input_x_gradient", "integrated_gradients",
                                                     "leave_one_out"}
    assert len(data["report"]["curves"]["random"]["comprehensiveness"]) == 3
    assert "attention|integrated_gradients" in data["report"]["agreement"]
    first = data["examples"][0]
    assert set(first["scores"]) == set(METHODS)
    assert all(len(v) == len(first["tokens"]) for v in first["scores"].values())
    page = html_path.read_text(encoding="utf-8")
    assert "attnlab-explain-data" in page and "Content-Security-Policy" in page


def test_text_page_escapes_hostile_tokens_and_loads_nothing(run_dir: Path, tmp_path: Path) -> None:
    html_path = tmp_path / "hostile.html"
    rc, out, err = run_cli(["explain", "--checkpoint", str(run_dir), "--text", HOSTILE, *QUICK,
                            "--methods", "attention,flow,leave_one_out", "--html", str(html_path)])
    assert rc == 0, err
    assert out.startswith("explained 1 text with a transformer_classifier")
    assert "explained output: " in out
    page = html_path.read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)  # no network: no URL at all
    assert "<img" not in page and "<b>" not in page and "onerror=alert(1)>" not in page
    assert page.count("</script>") == 2  # the data block's and the script's own: the token's is escaped
    assert "\\u003cimg" in page and "\\u003c/script\\u003e" in page
    assert "script-src 'sha256-" in page and "default-src 'none'" in page
    data = json.loads(re.search(r'<script type="application/json" id="attnlab-explain-data">(.*?)</script>', page,
                                re.S).group(1))
    assert [m["name"] for m in data["examples"][0]["methods"]] == ["attention", "flow", "leave_one_out"]
    assert "<img" in data["examples"][0]["tokens"]  # the token itself is kept, as data


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--text", "good", "--methods", "attention,gradcam"], 2, "unknown method 'gradcam'"),
    (["--split", "test", "--n", "0"], 2, "--n must be at least 1"),
    (["--text", "good", "--html", "page.txt"], 2, "--html expects a file name ending in .html"),
    (["--text", "   "], 2, "--text is empty"),
    (["--test-index", "0"], 2, "holds a text model"),
])
def test_bad_input_is_one_line_with_its_exit_code(run_dir: Path, args: list[str], code: int, message: str) -> None:
    rc, out, err = run_cli(["explain", "--checkpoint", str(run_dir), *args, "--no-progress"])
    assert rc == code
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and errors[0].startswith("attnlab explain: error:")
    assert "Traceback" not in err and out == ""


def test_missing_checkpoint_exits_4(tmp_path: Path) -> None:
    rc, _, err = run_cli(["explain", "--checkpoint", str(tmp_path / "nope"), "--text", "good", "--no-progress"])
    assert rc == 4
    assert err.strip().startswith("attnlab explain: error:") and len(err.strip().splitlines()) == 1


def test_argparse_usage_error_exits_2(run_dir: Path) -> None:
    rc, _, err = run_cli(["explain", "--checkpoint", str(run_dir), "--text", "a", "--split", "test"])
    assert rc == 2 and "not allowed with argument" in err


def test_a_recurrent_seq2seq_is_explained_through_the_cli(tmp_path: Path) -> None:
    """A GRU Seq2Seq trained a few steps: one report with its attention and gradient rows, rollout and flow
    reported as not defined (it has no self-attention), and a page."""
    run = tmp_path / "s2s"
    rc, _, err = run_cli(["train", "--task", "reverse", "--model", "seq2seq", "--max-steps", "4",
                          "--set", "model.embed_dim=8", "--set", "model.hidden_size=8", "--set", "model.num_layers=1",
                          "--set", "data.num_train=100", "--set", "data.num_valid=10", "--set", "data.num_test=10",
                          "--set", "train.num_threads=1", "--no-progress", "--out", str(run)])
    assert rc == 0, err
    html_path = tmp_path / "s.html"
    rc, out, err = run_cli(["explain", "--checkpoint", str(run), "--split", "test", "--n", "2", *QUICK,
                            "--html", str(html_path)])
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("explained 2 test texts with a seq2seq")
    assert "not defined for this model: rollout, flow (it has no self-attention layers)" in lines
    shown = {line.split()[0] for line in lines if line and line.split()[0] in (*METHODS, "random")}
    assert shown == set(METHODS) - {"rollout", "flow"} | {"random"}
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
