"""``attnlab explain --hf-model``: tiny Hugging Face folders built from configs (no download), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnlab.cli import main
from attnlab.explain import METHODS

transformers = pytest.importorskip("transformers")
pytest.importorskip("captum")
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "</s>", "a", "good", "dull", "film", "ein", "kleiner", "hund"]


def _tokenizer(bert: bool) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert:
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                    mask_token="[MASK]", cls_token="[CLS]", sep_token="[SEP]")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                eos_token="</s>")


def _bert_config() -> object:
    return transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=32, initializer_range=0.3,
                                   id2label={0: "negative", 1: "positive"})


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert-clf")
    transformers.BertForSequenceClassification(_bert_config()).save_pretrained(path)
    _tokenizer(bert=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(vocab_size=len(WORDS), d_model=16, encoder_layers=2, decoder_layers=2,
                                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0, eos_token_id=5,
                                    decoder_start_token_id=0, forced_eos_token_id=None, init_std=0.3)
    path = tmp_path_factory.mktemp("marian")
    transformers.MarianMTModel(cfg).save_pretrained(path)
    _tokenizer(bert=False).save_pretrained(path)
    return path


def test_a_classifier_is_explained_with_every_method(bert_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bert.json"
    assert main(["explain", "--hf-model", str(bert_dir), "--text", "a good film", "--max-k", "2", "--ig-steps", "8",
                 "--json", str(out), "--html", str(tmp_path / "bert.html"), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert f"explained 1 text with a BertForSequenceClassification (Hugging Face model {bert_dir})" in stdout
    assert "uniform/permuted attention: not available for captured models" in stdout
    assert "not defined for this model" not in stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["hf_model"] == str(bert_dir) and data["model"] == "BertForSequenceClassification"
    (example,) = data["examples"]
    assert example["tokens"] == ["[CLS]", "a", "good", "film", "[SEP]"]
    assert example["prediction"] in ("negative", "positive")
    assert list(example["scores"]) == list(METHODS) and all(len(v) == 5 for v in example["scores"].values())
    assert "uniform/permuted attention" in data["report"]["unavailable"]
    assert (tmp_path / "bert.html").stat().st_size > 1000


def test_a_translation_is_explained_row_by_row(marian_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "marian.json"
    assert main(["explain", "--hf-model", str(marian_dir), "--text", "ein kleiner hund", "--max-new-tokens", "3",
                 "--max-k", "2", "--ig-steps", "4", "--methods", "attention,grad_rollout,leave_one_out",
                 "--json", str(out)]) == 0
    assert "explained 1 text with a MarianMTModel" in capsys.readouterr().out
    (example,) = json.loads(out.read_text(encoding="utf-8"))["examples"]
    rows = len(example["output_tokens"])
    assert 1 <= rows <= 3 and list(example["scores"]) == ["attention", "grad_rollout", "leave_one_out"]
    assert all(len(v) == rows and all(len(r) == 3 for r in v) for v in example["scores"].values())


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--split", "test"], 2, "--hf-model explains one --text"),
    (["--text", "a film", "--readout", "last"], 2, "--readout must be cls, mean or a position"),
    (["--text", "a film", "--readout", "9"], 3, "readout 9 is out of range for 4 positions"),
    (["--text", "a film", "--max-new-tokens", "0"], 2, "--max-new-tokens must be at least 1"),
    (["--text", "a film", "--remove-id", "99"], 2, "remove_id must be a token id in [0, 13)"),
])
def test_bad_input_is_one_line_and_an_exit_code(bert_dir: Path, capsys: pytest.CaptureFixture[str],
                                                extra: list[str], code: int, message: str) -> None:
    assert main(["explain", "--hf-model", str(bert_dir), "--max-k", "2", "--ig-steps", "2", *extra]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("attnlab explain: error:")


def test_a_model_without_a_classification_head_or_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transformers.BertModel(_bert_config()).save_pretrained(tmp_path / "encoder")
    assert main(["explain", "--hf-model", str(tmp_path / "encoder"), "--text", "a film"]) == 2
    assert "holds a BertModel; explain --hf-model takes sequence classifiers" in capsys.readouterr().err
    assert main(["explain", "--hf-model", str(tmp_path / "nope"), "--text", "a film"]) == 4
    assert "no model folder" in capsys.readouterr().err
    assert main(["explain", "--hf-model", str(tmp_path), "--text", "a film"]) == 4
    assert "no config.json" in capsys.readouterr().err
