"""``attnlab export --format hf``: the written directory loads with ``from_pretrained`` offline and decodes as attnlab
does; models M2M100 cannot compute exactly (attnlab's default sinusoids, post-LN, recurrent seq2seq) end in one
error line with exit code 2 and leave no output directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import export_error, run_cli, train_bpe_dates

from attnlab.core.errors import ExitCode

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

FAIRSEQ = ["--set", "model.positional=fairseq", "--set", "model.share_embeddings=true"]


_train = train_bpe_dates


_one_error = export_error


def test_export_hf_writes_a_model_that_from_pretrained_loads_and_decodes_like_attnlab(tmp_path: Path) -> None:
    from transformers import M2M100ForConditionalGeneration

    from attnlab.decode import greedy_decode
    from attnlab.export.hf import hf_generate_options
    from attnlab.pipeline import load_translator

    run = _train(tmp_path / "run", *FAIRSEQ)
    out = tmp_path / "hf"
    res = run_cli(["export", "--checkpoint", str(run), "--format", "hf", "--out", str(out)])
    assert res.rc == 0, res.err
    first, second = res.out.splitlines()
    assert first.startswith(f"exported {run / 'best'} (step 2) to hf -> {out}: ") and "model.safetensors" in first
    assert second == f"how to translate with it: {out / 'README.md'}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left
    hf = M2M100ForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    tr = load_translator(run)
    ids = [tr.text.src_vocab.encode(tr.text.src_tokenizer.tokenize(s)) for s in ["21 Nov 2026", "1/1/01"]]
    src = torch.zeros(2, max(map(len, ids)), dtype=torch.long)
    for row, seq in enumerate(ids):
        src[row, :len(seq)] = torch.tensor(seq)
    hyps = greedy_decode(tr.model, src, torch.tensor([len(s) for s in ids]), max_len=8)
    with torch.no_grad():
        gen = hf.generate(input_ids=src, attention_mask=src.ne(0), **hf_generate_options(max_len=8))
    for row, hyp in zip(gen.tolist(), hyps, strict=True):
        while row[-1] == 0:  # generate pads the finished rows
            row.pop()
        assert row == [1, *hyp.tokens] + [2] * hyp.ended and hyp.tokens  # <bos>, attnlab's tokens, <eos> if ended


def test_help_lists_hf_and_what_it_needs() -> None:
    res = run_cli(["export", "--help"])
    assert res.rc == 0
    text = " ".join(res.out.split())
    for words in ("{ctranslate2,hf}", "M2M100ForConditionalGeneration", "model.positional=fairseq", "pre-LN",
                  "pip install 'attnlab[hf]'"):
        assert words in text, words


@pytest.mark.parametrize(("extra", "model", "words"), [
    (["--set", "model.share_embeddings=true"], "transformer", "model.positional is 'sinusoidal', attnlab's "
                                                              "interleaved sin/cos table"),
    ([*FAIRSEQ, "--set", "model.norm_first=false"], "transformer", "model.norm_first is false (post-LN)"),
    (["--set", "model.rnn=gru"], "seq2seq", "a seq2seq model cannot be exported to Hugging Face M2M100 (it has no "
                                            "recurrent layers)"),
])
def test_inexact_models_are_refused_in_one_line_with_exit_code_2(tmp_path: Path, extra: list[str], model: str,
                                                                  words: str) -> None:
    run = _train(tmp_path / "run", *extra, model=model)
    line = _one_error(["export", "--checkpoint", str(run), "--format", "hf", "--out", str(tmp_path / "out")],
                      ExitCode.USAGE)
    assert words in line
    if model == "transformer":
        assert "--set model.positional=fairseq" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
