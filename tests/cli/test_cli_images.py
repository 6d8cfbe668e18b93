"""Image tasks end to end through the CLI: a ViT on the squares set and a captioner on Fashion-MNIST scenes --
train, resume exactly, predict, evaluate, viz, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_resumed_equals_straight, run_cli

from attnlab.pipeline import load_predictor
from attnlab.tasks import ImageCaptioner, ImageClassifier

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_fashion = pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(),
                                   reason="../shared/data/fashion-mnist not present")

TINY_VIT = ["--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=16",
            "--set", "model.num_layers=1", "--set", "model.patch_size=7"]
SQUARES = ["--task", "squares", *TINY_VIT, "--set", "data.num_train=96", "--set", "data.num_valid=16",
           "--set", "data.num_test=16", "--set", "train.batch_size=16", "--set", "train.log_every=1",
           "--set", "train.eval_every=3", "--no-progress"]
TINY_CAPTIONER = ["--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=16",
                  "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1", "--set", "model.patch_size=16"]
SCENES = ["--corpus", "fashion-mnist", "--task-kind", "captioning", "--data-dir", str(SHARED), *TINY_CAPTIONER,
          "--set", "data.num_train=64", "--set", "data.num_valid=8", "--set", "data.num_test=8",
          "--set", "decode.eval_sentences=4", "--set", "train.batch_size=16", "--set", "train.log_every=1",
          "--set", "train.eval_every=3", "--no-progress"]
N = 3


def _train(argv: list[str], out: Path, *extra: str) -> None:
    res = run_cli(["train", *argv, "--out", str(out), *extra])
    assert res.rc == 0, res.err


def _resumed_and_straight(argv: list[str], root: Path) -> dict[str, Path]:
    _train(argv, root / "resumed", "--max-steps", str(N))
    _train(argv, root / "resumed", "--max-steps", str(2 * N), "--resume")
    _train(argv, root / "straight", "--max-steps", str(2 * N))
    return {"resumed": root / "resumed", "straight": root / "straight"}


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _resumed_and_straight(SQUARES, tmp_path_factory.mktemp("squares"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (SHARED / "fashion-mnist").is_dir():
        pytest.skip("../shared/data/fashion-mnist not present")
    return _resumed_and_straight(SCENES, tmp_path_factory.mktemp("scenes"))


def _assert_bit_exact(runs: dict[str, Path]) -> None:
    assert_resumed_equals_straight(runs["resumed"], runs["straight"], 2 * N)


def test_vit_resume_is_bit_exact(squares: dict[str, Path]) -> None:
    _assert_bit_exact(squares)


@needs_fashion
def test_captioner_resume_is_bit_exact(scenes: dict[str, Path]) -> None:
    _assert_bit_exact(scenes)


def test_vit_run_records_task_and_scores_test(squares: dict[str, Path]) -> None:
    saved = json.loads((squares["straight"] / "config.json").read_text(encoding="utf-8"))
    assert saved["data"]["task"] == "squares" and saved["train"]["best_metric"] == "val_accuracy"
    results = json.loads((squares["straight"] / "test_results.json").read_text(encoding="utf-8"))
    assert 0.0 <= results["model"]["accuracy"] <= 1.0
    predictor = load_predictor(squares["straight"])
    assert isinstance(predictor, ImageClassifier) and predictor.pipeline.labels[0] == "top-left"


def test_vit_predict_test_index_and_image_file(squares: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    res = run_cli(["predict", "--checkpoint", str(squares["straight"]), "--test-index", "0", "5"])
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("test image 0\t")
    name, label, prob, truth = lines[1].split("\t")
    assert label in ("top-left", "top-right", "bottom-left", "bottom-right") and 0.25 <= float(prob) <= 1.0
    assert truth in ("top-left", "top-right", "bottom-left", "bottom-right")
    picture = np.zeros((56, 56, 3), dtype=np.uint8)
    picture[4:16, 40:52] = 255
    Image.fromarray(picture).save(tmp_path / "square.png")
    res = run_cli(["predict", "--checkpoint", str(squares["straight"]), "--image", str(tmp_path / "square.png")])
    assert res.rc == 0, res.err
    assert res.out.startswith(f"{tmp_path / 'square.png'}\t") and "56x56 RGB -> 28x28 grayscale" in res.err


def test_vit_viz_writes_figure_and_page(squares: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli(["viz", "--checkpoint", str(squares["straight"]), "--test-index", "2", "--png",
                   str(tmp_path / "a.png"), "--html", str(tmp_path / "a.html")])
    assert res.rc == 0, res.err
    assert res.out.startswith("prediction: ") and "(truth: " in res.out
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "<canvas" in page and "http://" not in page and "https://" not in page


def test_vit_evaluate_rescores_the_test_split(squares: dict[str, Path]) -> None:
    res = run_cli(["evaluate", "--checkpoint", str(squares["straight"])])
    assert res.rc == 0, res.err
    saved = json.loads((squares["straight"] / "test_results.json").read_text(encoding="utf-8"))["model"]
    assert f"accuracy {100 * saved['accuracy']:.2f}%" in res.out


@pytest.mark.parametrize(("argv", "rc", "words"), [
    (["--test-index", "16"], 2, "--test-index 16: the test split holds images 0 to 15"),
    (["--image", "missing.png"], 3, "missing.png: no such file"),
    (["--test-index", "1", "--layer", "0", "--png", "x.png"], 2, "image figures show every layer and head"),
])
def test_bad_image_requests_are_one_line(squares: dict[str, Path], tmp_path: Path, argv: list[str], rc: int,
                                         words: str) -> None:
    command = ["viz", "--checkpoint", str(squares["straight"]), *argv]
    if "--png" not in argv:
        command += ["--png", str(tmp_path / "x.png")]
    res = run_cli(command)
    assert res.rc == rc and len(res.error_lines()) == 1 and words in res.err, res.err


def test_text_input_to_an_image_model_and_images_to_a_text_model_are_refused(squares: dict[str, Path],
                                                                              dates_run: Path) -> None:
    res = run_cli(["predict", "--checkpoint", str(squares["straight"])], stdin=b"hello\n")
    assert res.rc == 2 and "holds an image model; give it --image FILE or --test-index N" in res.err
    res = run_cli(["predict", "--checkpoint", str(dates_run), "--test-index", "0"])
    assert res.rc == 2 and "holds a translation model; give it text" in res.err


def test_an_image_model_must_fit_the_images(tmp_path: Path) -> None:
    res = run_cli(["train", *SQUARES, "--set", "model.num_classes=10", "--max-steps", "1",
                   "--out", str(tmp_path / "x")])
    assert res.rc == 2 and "model.num_classes is 10 but the images need 4" in res.err


@needs_fashion
def test_captioner_predict_viz_and_scores(scenes: dict[str, Path], tmp_path: Path) -> None:
    run = scenes["straight"]
    results = json.loads((run / "test_results.json").read_text(encoding="utf-8"))
    assert set(results["beam1"]) >= {"exact_match", "bleu", "scenes"}
    predictor = load_predictor(run)
    assert isinstance(predictor, ImageCaptioner)
    res = run_cli(["predict", "--checkpoint", str(run), "--test-index", "0", "1", "--beam", "2"])
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("test scene 0\t") and lines[0].count("\t") == 2
    res = run_cli(["viz", "--checkpoint", str(run), "--test-index", "3", "--png", str(tmp_path / "c.png"),
                   "--html", str(tmp_path / "c.html")])
    assert res.rc == 0, res.err
    assert res.out.startswith("caption: ") and "(truth: a " in res.out
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "c.html").stat().st_size > 1000


@needs_fashion
def test_captioning_refuses_augmentation(tmp_path: Path) -> None:
    res = run_cli(["train", *SCENES, "--set", "data.augment=crop-flip", "--max-steps", "1", "--out", str(tmp_path)])
    assert res.rc == 2 and "captioning takes augment: none" in res.err
