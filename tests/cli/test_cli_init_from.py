"""``train.init_from``: a captioner starts from the stem of a ViT trained on single Fashion-MNIST items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from safetensors.torch import load_file

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(),
                                reason="../shared/data/fashion-mnist not present")

STEM = ["--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=16",
        "--set", "model.stem=conv", "--set", "model.stem_blocks=1", "--set", "model.patch_size=4"]
ITEMS = ["--corpus", "fashion-mnist", "--model", "vit", "--data-dir", str(SHARED), *STEM,
         "--set", "model.num_layers=1", "--set", "data.max_train=64", "--set", "train.batch_size=16",
         "--set", "train.eval_every=2", "--max-steps", "2", "--no-progress"]
SCENES = ["--corpus", "fashion-mnist", "--task-kind", "captioning", "--data-dir", str(SHARED), *STEM,
          "--set", "model.encoder_layers=0", "--set", "data.num_train=32", "--set", "data.num_valid=4",
          "--set", "data.num_test=4", "--set", "decode.eval_sentences=4", "--set", "train.batch_size=16",
          "--set", "train.eval_every=1", "--set", "train.lr=1e-12", "--max-steps", "1", "--no-progress"]


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("items") / "vit"
    res = run_cli(["train", *ITEMS, "--out", str(out)])
    assert res.rc == 0, res.err
    return out


def test_captioner_starts_from_the_vit_stem_and_its_normalization(items: Path, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    res = run_cli(["train", *SCENES, "--set", f"train.init_from={items}",
                   "--set", "train.init_modules=[patch_embedding]", "--out", str(out)])
    assert res.rc == 0, res.err
    vit, cap = load_file(str(items / "best" / "model.safetensors")), load_file(str(out / "last" / "model.safetensors"))
    stem = [n for n in vit if n.startswith("patch_embedding.")]
    assert len(stem) >= 8
    for name in stem:  # one step at lr 1e-12 leaves them as copied
        torch.testing.assert_close(cap[name], vit[name], rtol=0, atol=1e-9, msg=name)
    fresh = tmp_path / "fresh"
    assert run_cli(["train", *SCENES, "--out", str(fresh)]).rc == 0
    other = load_file(str(fresh / "last" / "model.safetensors"))
    assert not torch.equal(other[stem[0]], vit[stem[0]])  # without init_from the stem starts fresh
    image = lambda run: json.loads((run / "best" / "extra.json").read_text(encoding="utf-8"))["image"]  # noqa: E731
    assert (image(out)["mean"], image(out)["std"]) == (image(items)["mean"], image(items)["std"])
    assert image(fresh)["mean"] != image(items)["mean"]  # scenes are mostly black canvas


def test_a_stem_trained_on_the_validation_items_is_refused(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    res = run_cli(["train", *ITEMS, "--set", "data.num_valid=100", "--out", str(leaky)])
    assert res.rc == 0, res.err
    res = run_cli(["train", *SCENES, "--set", f"train.init_from={leaky}", "--out", str(tmp_path / "cap")])
    assert res.rc == 2
    assert "trained on Fashion-MNIST items that this run's validation scenes are made of" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_mismatched_shapes_and_unknown_modules_are_one_line_errors(items: Path, tmp_path: Path) -> None:
    res = run_cli(["train", *SCENES, "--set", "model.d_model=32", "--set", f"train.init_from={items}",
                   "--set", "train.init_modules=[patch_embedding]", "--out", str(tmp_path / "a")])
    assert res.rc == 2 and "in the checkpoint but" in res.err and "d_model" in res.err
    res = run_cli(["train", *SCENES, "--set", f"train.init_from={items}", "--set", "train.init_modules=[stem]",
                   "--out", str(tmp_path / "b")])
    assert res.rc == 2 and "'stem' names no parameter of the model" in res.err
    res = run_cli(["train", *SCENES, "--set", "train.init_modules=[patch_embedding]", "--out", str(tmp_path / "c")])
    assert res.rc == 2 and "set init_from too" in res.err
