"""``attnlab viz --hf-model``: tiny Hugging Face folders built from configs (no download), and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from attnlab.cli import main

transformers = pytest.importorskip("transformers")
WORDS = ["<pad>", "<unk>", "</s>", "ein", "kleiner", "hund", "a", "small", "dog", "我", "爱", "你"]


def _tokenizer() -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                eos_token="</s>")


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(vocab_size=len(WORDS), d_model=16, encoder_layers=2, decoder_layers=2,
                                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0, eos_token_id=2,
                                    decoder_start_token_id=0, forced_eos_token_id=None)
    path = tmp_path_factory.mktemp("marian")
    transformers.MarianMTModel(cfg).save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    path = tmp_path_factory.mktemp("bert")
    transformers.BertModel(cfg).save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


def test_translate_and_draw(marian_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["viz", "--hf-model", str(marian_dir), "--text", "ein kleiner hund", "--max-new-tokens", "4",
                 "--png", str(out / "a.png"), "--svg", str(out / "a.svg"), "--html", str(out / "a.html"),
                 "--layer", "-1", "--head", "mean"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "translation:" in stdout and f"wrote {out / 'a.html'}" in stdout
    assert (out / "a.png").read_bytes()[:4] == b"\x89PNG" and (out / "a.svg").stat().st_size > 1000
    page = (out / "a.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="attnlab-data">(.*?)</script>', page, re.S).group(1))
    views = {v["kind"]: v for v in data["views"]}
    assert list(views) == ["encoder", "decoder", "cross"]
    assert views["cross"]["keyTokens"] == ["ein", "kleiner", "hund"]
    assert len(views["cross"]["queryTokens"]) == 4 and len(views["cross"]["layerNames"]) == 2


def test_encoder_only_model(bert_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "bert.png"
    assert main(["viz", "--hf-model", str(bert_dir), "--text", "我 爱 你", "--png", str(png), "--layer", "1",
                 "--head", "0"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--text", "  "], 2, "--text is empty"),
    (["--text", "a dog"], 2, "nothing to write"),
    (["--text", "a dog", "--png", "x.jpg"], 2, "--png expects a file name ending in .png"),
    (["--text", "a dog", "--png", "x.png", "--layer", "5"], 2, "layer 5 is out of range"),
    (["--text", "a dog", "--png", "x.png", "--head", "2"], 2, "head 2 is out of range"),
    (["--text", "a dog", "--png", "x.png", "--head", "first"], 2, "--head must be a head number or 'mean'"),
    (["--text", "a dog", "--png", "x.png", "--kind", "cross"], 2, "no cross attention here"),
])
def test_bad_input_is_one_line_and_an_exit_code(bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                extra: list[str], code: int, message: str) -> None:
    args = ["viz", "--hf-model", str(bert_dir), *[str(tmp_path / a) if a.endswith(".png") else a for a in extra]]
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("attnlab viz: error:")
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture(scope="module", params=["transformer", "seq2seq"])
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step training run on synthetic dates: random-ish weights, but a real attnlab checkpoint."""
    from attnlab.core.run_config import RunConfig
    from attnlab.pipeline import train_run

    model = {"transformer": {"kind": "transformer", "d_model": 16, "num_heads": 2, "ffn_dim": 32, "encoder_layers": 2,
                             "decoder_layers": 1, "max_len": 64},
             "seq2seq": {"kind": "seq2seq", "embed_dim": 8, "hidden_size": 16, "attention": "additive"}}[request.param]
    cfg = RunConfig.from_dict({"data": {"source": "task", "task": "dates", "num_train": 200, "num_valid": 10,
                                        "num_test": 10},
                               "model": model, "train": {"max_steps": 2, "eval_every": 2, "save_every": 2},
                               "decode": {"eval_sentences": 5}})
    out = tmp_path_factory.mktemp(request.param)
    train_run(cfg, out, progress=False)
    return out


def test_checkpoint_translate_and_draw(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = tmp_path / "dates.html"
    assert main(["viz", "--checkpoint", str(run_dir), "--text", "Nov 21, 2026", "--max-new-tokens", "5",
                 "--pdf", str(tmp_path / "dates.pdf"), "--html", str(html), "--head", "0"]) == 0
    assert "translation:" in capsys.readouterr().out
    assert (tmp_path / "dates.pdf").read_bytes()[:5] == b"%PDF-"
    data = json.loads(re.search(r'id="attnlab-data">(.*?)</script>', html.read_text("utf-8"), re.S).group(1))
    cross = next(v for v in data["views"] if v["kind"] == "cross")
    assert "".join(cross["keyTokens"]).replace("\u2423", " ") == "Nov 21, 2026"
    assert 1 <= len(cross["queryTokens"]) <= 5
    kinds = [v["kind"] for v in data["views"]]
    assert kinds == (["encoder", "decoder", "cross"] if "transformer" in run_dir.name else ["cross"])
    assert main(["viz", "--checkpoint", str(run_dir), "--text", "x", "--png", str(tmp_path / "a.png"),
                 "--layer", "3"]) == 2
    assert "layer 3 is out of range" in capsys.readouterr().err


def test_missing_model_or_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", "--hf-model", str(tmp_path / "nope"), "--text", "a", "--png", "a.png"]) == 4
    assert "no model folder" in capsys.readouterr().err
    assert main(["viz", "--hf-model", str(tmp_path), "--text", "a", "--png", "a.png"]) == 4
    assert "no config.json" in capsys.readouterr().err
    assert main(["viz", "--checkpoint", str(tmp_path / "nope"), "--text", "a", "--png", "a.png"]) == 4
    assert "no checkpoint directory" in capsys.readouterr().err
