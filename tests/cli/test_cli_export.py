"""``attnlab export --format ctranslate2``: the written model translates; refusals and damaged checkpoints end in
one error line with the documented exit code (2: a model CTranslate2 cannot represent or a bad request; 4: a
missing, truncated or corrupt checkpoint) and leave no output directory behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import export_error, run_cli, train_bpe_dates

from attnlab.core.errors import ExitCode

pytest.importorskip("ctranslate2")
pytest.importorskip("sentencepiece")



_train = train_bpe_dates


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step Transformer run with a joint BPE model. Read-only: copy it before changing it."""
    return _train(tmp_path_factory.mktemp("export") / "run", "--set", "model.share_embeddings=true")


_one_error = export_error


def test_export_writes_a_model_that_translates(bpe_run: Path, tmp_path: Path) -> None:
    from attnlab.export import translate_ctranslate2
    from attnlab.pipeline import load_translator

    out = tmp_path / "ct2"
    res = run_cli(["export", "--checkpoint", str(bpe_run), "--format", "ctranslate2", "--out", str(out)])
    assert res.rc == 0, res.err
    first, second = res.out.splitlines()
    assert first.startswith(f"exported {bpe_run / 'best'} (step 2) to ctranslate2 -> {out}: ") and "model.bin" in first
    assert second == f"how to translate with it: {out / 'README.md'}"
    assert {"model.bin", "shared_vocabulary.json", "source.spm", "target.spm", "README.md"} <= {
        p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left
    sentences = ["21 Nov 2026", "1/1/01", ""]
    expected = [t.text for t in load_translator(bpe_run).translate(sentences, beam_size=1)]
    assert translate_ctranslate2(out, sentences, compute_type="float32") == expected


def test_help_names_the_formats_and_what_is_refused() -> None:
    res = run_cli(["export", "--help"])
    assert res.rc == 0
    text = " ".join(res.out.split())
    for words in ("{ctranslate2,hf}", "--checkpoint DIR", "seq2seq", "model.copy", "data.src_tokenizer=bpe"):
        assert words in text, words
    assert "export" in run_cli(["--help"]).out


def test_a_recurrent_seq2seq_is_refused(dates_run: Path, tmp_path: Path) -> None:
    line = _one_error(["export", "--checkpoint", str(dates_run), "--format", "ctranslate2", "--out",
                       str(tmp_path / "out")], ExitCode.USAGE)
    assert "a seq2seq model cannot be exported to CTranslate2" in line and "recurrent" in line
    assert not (tmp_path / "out").exists()


def test_the_pointer_generator_transformer_is_refused(tmp_path: Path) -> None:
    run = _train(tmp_path / "copy", "--set", "model.copy=true", "--set", "model.share_embeddings=true")
    line = _one_error(["export", "--checkpoint", str(run), "--format", "ctranslate2", "--out", str(tmp_path / "out")],
                      ExitCode.USAGE)
    assert "model.copy is true" in line and "pointer-generator" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("damage", "words"), [
    ("truncated weights", "model.safetensors"),
    ("config field", "config.json"),
    ("missing", "no such checkpoint directory"),
])
def test_a_damaged_checkpoint_is_one_line_with_exit_code_4(bpe_run: Path, tmp_path: Path, damage: str,
                                                           words: str) -> None:
    ckpt = tmp_path / "ckpt"
    if damage != "missing":
        shutil.copytree(bpe_run / "best", ckpt)
    if damage == "truncated weights":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "config field":
        config = json.loads((ckpt / "config.json").read_text())
        config["model"]["d_model"] = 24
        (ckpt / "config.json").write_text(json.dumps(config))
    line = _one_error(["export", "--checkpoint", str(ckpt), "--format", "ctranslate2", "--out", str(tmp_path / "out")],
                      ExitCode.CHECKPOINT)
    assert words in line
    assert not (tmp_path / "out").exists()


def test_bad_requests_exit_2(bpe_run: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    line = _one_error(["export", "--checkpoint", str(bpe_run), "--format", "ctranslate2", "--out",
                       str(tmp_path / "full")], ExitCode.USAGE)
    assert "already exists" in line and (tmp_path / "full" / "keep.txt").read_text() == "mine"
    res = run_cli(["export", "--checkpoint", str(bpe_run), "--format", "onnx", "--out", str(tmp_path / "o")])
    assert res.rc == ExitCode.USAGE and "invalid choice: 'onnx'" in res.err
