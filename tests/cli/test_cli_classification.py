"""Classification end to end through the CLI: train, resume exactly, predict, evaluate, viz, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_resumed_equals_straight, run_cli

from attnlab.data.synthetic import KeywordTask, make_pairs
from attnlab.pipeline import Classifier, load_predictor

TINY = {
    "rnn_classifier": ["--set", "model.embed_dim=8", "--set", "model.hidden_size=8"],
    "transformer_classifier": ["--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=16",
                               "--set", "model.num_layers=1"],
}
DATA = ["--set", "data.num_train=300", "--set", "data.num_valid=40", "--set", "data.num_test=40", "--no-progress",
        "--set", "train.log_every=1", "--set", "train.tokens_per_batch=200"]
N = 4


def _train(kind: str, out: Path, *extra: str) -> None:
    res = run_cli(["train", "--task", "keywords", "--model", kind, *TINY[kind], *DATA, "--out", str(out), *extra])
    assert res.rc == 0, res.err


@pytest.fixture(scope="module", params=sorted(TINY))
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``resumed``: N steps, then --resume to 2N; ``straight``: 2N steps in one go."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    _train(kind, root / "resumed", "--max-steps", str(N), "--set", "data.num_test=0")
    _train(kind, root / "resumed", "--max-steps", str(2 * N), "--resume", "--set", "data.num_test=0")
    _train(kind, root / "straight", "--max-steps", str(2 * N), "--set", "data.num_test=0")
    return {"resumed": root / "resumed", "straight": root / "straight", "kind": root}


def test_resume_is_bit_exact(runs: dict[str, Path]) -> None:
    """N steps + resume to 2N == 2N uninterrupted: parameters, optimizer moments and logged losses."""
    assert_resumed_equals_straight(runs["resumed"], runs["straight"], 2 * N)


def test_config_records_the_task(runs: dict[str, Path]) -> None:
    saved = json.loads((runs["straight"] / "config.json").read_text(encoding="utf-8"))
    assert saved["data"]["task"] == "keywords" and saved["train"]["best_metric"] == "val_accuracy"
    assert load_predictor(runs["straight"]).config.task_name == "classification"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small RNN classifier trained long enough to learn the keyword rule (it is scored in the tests)."""
    out = tmp_path_factory.mktemp("keywords") / "run"
    res = run_cli(["train", "--task", "keywords", "--model", "rnn_classifier", "--max-steps", "120", "--no-progress",
                   "--set", "data.num_train=3000", "--set", "data.num_valid=200", "--set", "data.num_test=200",
                   "--set", "train.eval_every=60", "--set", "model.hidden_size=32", "--set", "model.embed_dim=32",
                   "--set", "train.tokens_per_batch=1024", "--out", str(out)])
    assert res.rc == 0, res.err
    (out / "stdout.txt").write_text(res.out, encoding="utf-8")
    return out


def test_train_scores_model_and_baseline_on_test(trained: Path) -> None:
    out = (trained / "stdout.txt").read_text(encoding="utf-8")
    assert "test (200 texts, model): accuracy" in out and "test (200 texts, bag-of-words baseline)" in out
    results = json.loads((trained / "test_results.json").read_text(encoding="utf-8"))
    assert set(results) >= {"model", "baseline", "checkpoint"}
    assert results["model"]["accuracy"] >= 0.95  # the keyword decides the label
    assert 0.0 <= results["model"]["macro_f1"] <= 1.0


def test_attention_pooling_finds_the_keyword(trained: Path) -> None:
    """The known answer: one word decides the label, so the pooling attention must peak on it."""
    classifier = load_predictor(trained)
    assert isinstance(classifier, Classifier)
    texts = [t for t, _ in make_pairs("keywords", 200, seed=1234)]
    preds = classifier.predict(texts, return_attention=True)
    on_keyword = [p.attention[KeywordTask.keyword_position(t)] for t, p in zip(texts, preds, strict=True)]
    peaks = [max(range(len(p.attention)), key=p.attention.__getitem__) == KeywordTask.keyword_position(t)
             for t, p in zip(texts, preds, strict=True)]
    assert sum(on_keyword) / len(on_keyword) > 0.5
    assert sum(peaks) / len(peaks) > 0.75, sum(on_keyword) / len(on_keyword)  # measured: 0.855 peaks
    for p in preds:
        assert abs(sum(p.attention) - 1.0) < 1e-4 and len(p.attention) == len(p.tokens)


def test_predict_round_trip(trained: Path, tmp_path: Path) -> None:
    stdin = b"the film was superb and long\n\na dull story\n"
    res = run_cli(["predict", "--checkpoint", str(trained), "--html", str(tmp_path / "p.html"),
                   "--png", str(tmp_path / "p.png")], stdin=stdin)
    assert res.rc == 0, res.err
    lines = res.out.split("\n")
    assert lines[0].startswith("positive\t") and lines[1] == "" and lines[2].startswith("negative\t")
    assert 0.5 <= float(lines[0].split("\t")[1]) <= 1.0
    assert "1 input line(s) hold no token" in res.err
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "superb" in page and "dull" in page
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rescores_the_test_split(trained: Path) -> None:
    res = run_cli(["evaluate", "--checkpoint", str(trained), "--json"])
    assert res.rc == 0, res.err
    scores = json.loads(res.out)
    saved = json.loads((trained / "test_results.json").read_text(encoding="utf-8"))
    assert scores["model"]["accuracy"] == saved["model"]["accuracy"]
    assert scores["model"]["macro_f1"] == saved["model"]["macro_f1"]
    assert "baseline" not in scores


def test_viz_draws_highlight(trained: Path, tmp_path: Path) -> None:
    res = run_cli(["viz", "--checkpoint", str(trained), "--text", "a <b>tedious</b> $x^2$ story",
                   "--png", str(tmp_path / "v.png"), "--html", str(tmp_path / "v.html")])
    assert res.rc == 0, res.err
    assert "prediction: negative" in res.out
    assert (tmp_path / "v.png").exists() and not (tmp_path / "v-heads.png").exists()  # an RNN: no heads
    assert "<b>" not in (tmp_path / "v.html").read_text(encoding="utf-8")
    # Several texts: one highlight page and one figure hold them all.
    texts = ["the plot was dull", "a <b>tedious</b> story"]
    res = run_cli(["viz", "--checkpoint", str(trained), "--text", texts[0], "--text", texts[1],
                   "--png", str(tmp_path / "m.png"), "--html", str(tmp_path / "m.html")])
    assert res.rc == 0, res.err
    page = (tmp_path / "m.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="attnlab-highlight-data">', 1)[1].split("</script>", 1)[0])
    assert [e["text"] for e in data["examples"]] == texts and "<b>" not in page
    assert (tmp_path / "m.png").exists() and not list(tmp_path.glob("m-*"))  # no heads, no numbered figures


def test_viz_of_a_transformer_classifier_also_draws_its_heads(tmp_path: Path) -> None:
    _train("transformer_classifier", tmp_path / "run", "--max-steps", "2")
    res = run_cli(["viz", "--checkpoint", str(tmp_path / "run"), "--text", "the plot was dull",
                   "--png", str(tmp_path / "v.png"), "--html", str(tmp_path / "v.html")])
    assert res.rc == 0, res.err
    assert (tmp_path / "v-heads.png").exists() and (tmp_path / "v.png").exists()
    assert "self_attn" in (tmp_path / "v-heads.html").read_text(encoding="utf-8")
    # Several texts: the heads of each in one viewer page (its prediction beside it) and numbered heads figures.
    res = run_cli(["viz", "--checkpoint", str(tmp_path / "run"), "--text", "the plot was dull", "--text", "a fine film",
                   "--png", str(tmp_path / "m.png"), "--html", str(tmp_path / "m.html")])
    assert res.rc == 0, res.err
    page = (tmp_path / "m-heads.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="attnlab-data">', 1)[1].split("</script>", 1)[0])
    assert [e["name"] for e in data["examples"]] == ["the plot was dull", "a fine film"]
    assert all(e["prediction"].rsplit(" (", 1)[0] in ("positive", "negative") for e in data["examples"])
    assert (tmp_path / "m-1-heads.png").exists() and (tmp_path / "m-2-heads.png").exists()


def test_translate_refuses_a_classifier(trained: Path) -> None:
    res = run_cli(["translate", "--checkpoint", str(trained)], stdin=b"hello\n")
    assert res.rc == 4 and len(res.error_lines()) == 1 and "attnlab predict" in res.err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--corpus", "multi30k", "--model", "rnn_classifier"], "does not fit the translation task"),
    (["--task", "keywords", "--model", "transformer"], "does not fit the classification task"),
    (["--task", "keywords", "--set", "model.num_classes=3", "--max-steps", "1"], "num_classes is 3"),
    (["--task-kind", "summarization", "--task", "keywords"], "does not fit the synthetic dataset"),
])
def test_misfit_model_or_task_is_one_line_exit_2(argv: list[str], needle: str, tmp_path: Path) -> None:
    res = run_cli(["train", *argv, "--out", str(tmp_path / "x"), "--no-progress", "--set", "data.num_train=50",
                   "--set", "data.num_valid=5", "--set", "data.num_test=5"])
    assert res.rc == 2 and len(res.error_lines()) == 1, res.err
    assert needle in res.err


def test_average_works_for_classifiers(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["straight"], run)
    res = run_cli(["average", str(run / "last"), str(run / "best"), "--out", str(tmp_path / "avg")])
    assert res.rc == 0, res.err
    assert isinstance(load_predictor(tmp_path / "avg"), Classifier)


def test_a_task_of_the_wrong_type_in_a_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("task: [1, 2]\ndata: {source: rotten-tomatoes}\n", encoding="utf-8")
    res = run_cli(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "x")])
    assert res.rc == 2 and len(res.error_lines()) == 1 and "task" in res.err, res.err
