"""``data.bpe_dropout`` through ``attnlab train``: exact resume across epochs, one-line config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import BPE, SMALL_DATA, TINY_TRANSFORMER, assert_resumed_equals_straight, read_jsonl, run_cli

from attnlab.core.errors import ExitCode
from attnlab.pipeline import load_translator

N = 6
# 200 pairs in 600-token batches: a few batches an epoch, so 3N steps cross epochs (new segmentations).
ARGS = ["train", "--task", "dates", "--model", "transformer", *TINY_TRANSFORMER, *BPE, *SMALL_DATA,
        "--set", "data.num_test=0", "--set", "data.bpe_dropout=0.2", "--set", "train.log_every=1",
        "--set", "train.tokens_per_batch=600"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bpe-dropout")
    out = {"resumed": root / "resumed", "straight": root / "straight", "plain": root / "plain"}
    for argv in (["--max-steps", str(N), "--out", str(out["resumed"])],
                 ["--max-steps", str(3 * N), "--resume", "--out", str(out["resumed"])],
                 ["--max-steps", str(3 * N), "--out", str(out["straight"])],
                 ["--max-steps", str(3 * N), "--set", "data.bpe_dropout=0", "--out", str(out["plain"])]):
        res = run_cli(ARGS + argv)
        assert res.rc == 0, res.err
    return out


def test_resume_across_epochs_equals_the_uninterrupted_run(runs: dict[str, Path]) -> None:
    epochs = {r["epoch"] for r in read_jsonl(runs["straight"] / "metrics.jsonl") if r["kind"] == "train"}
    assert len(epochs) >= 2  # the runs cross into an epoch of a new segmentation
    assert_resumed_equals_straight(runs["resumed"], runs["straight"], 3 * N)


def test_dropout_changes_training_and_every_piece_has_an_id(runs: dict[str, Path]) -> None:
    losses = [[r["loss"] for r in read_jsonl(runs[k] / "metrics.jsonl") if r["kind"] == "train"]
              for k in ("straight", "plain")]
    assert losses[0] != losses[1]
    pipeline = load_translator(runs["straight"] / "last").text
    assert set(pipeline.src_tokenizer.vocab_pieces()) <= set(pipeline.src_vocab.tokens)


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "data.bpe_dropout=1.0"], "DataConfig.bpe_dropout: got 1.0, expected a merge-skip probability in [0, 1)"),
    (["--set", "data.bpe_dropout=-0.1"], "DataConfig.bpe_dropout: got -0.1"),
    (["--set", "data.src_tokenizer=char", "--set", "data.tgt_tokenizer=word"],
     "data.bpe_dropout: resegments bpe pieces; data.src_tokenizer and data.tgt_tokenizer are char and word"),
    (["--set", "data.src_tokenizer=unigram", "--set", "data.tgt_tokenizer=unigram"],
     "data.bpe_dropout: resegments bpe pieces; data.src_tokenizer and data.tgt_tokenizer are unigram and unigram"),
    # "auto" on a synthetic task is the task's own tokenizer (characters for dates): found once it is built
    (["--set", "data.src_tokenizer=auto", "--set", "data.tgt_tokenizer=auto"],
     "data.bpe_dropout: needs a bpe tokenizer on at least one side, got char and char"),
])
def test_bad_settings_are_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    res = run_cli(ARGS + ["--max-steps", "1", *extra, "--out", str(tmp_path / "run")])
    assert res.rc == ExitCode.USAGE and len(res.error_lines()) == 1 and "Traceback" not in res.err, res.err
    assert message in res.error_lines()[0]
    assert not (tmp_path / "run" / "last").exists()


def test_a_classifier_does_not_take_it(tmp_path: Path) -> None:
    res = run_cli(["train", "--task", "keywords", "--model", "rnn_classifier", "--max-steps", "1", *SMALL_DATA,
                   "--set", "data.bpe_dropout=0.1", "--out", str(tmp_path / "run")])
    assert res.rc == ExitCode.USAGE and len(res.error_lines()) == 1, res.err
    assert "data.bpe_dropout: resegments the text pairs of translation and summarization; the classification task" \
        in res.error_lines()[0]
