"""Helpers of the CLI tests: run ``attnlab`` in-process, tiny model/data options, directory snapshots."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlab.cli import main

# Tiny models and data: each training run takes a second or two on one core.
DATES_STEPS = 5  # steps of the shared `dates_run` fixture
TINY_SEQ2SEQ = ["--set", "model.hidden_size=16", "--set", "model.embed_dim=8"]
TINY_TRANSFORMER = ["--set", "model.d_model=16", "--set", "model.num_heads=2", "--set", "model.ffn_dim=32",
                    "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1"]
SMALL_DATA = ["--set", "data.num_train=200", "--set", "data.num_valid=20", "--set", "data.num_test=20",
              "--set", "decode.eval_sentences=5", "--no-progress"]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        """The lines of stderr that carry an error message (log lines excluded)."""
        return [line for line in self.err.splitlines() if "error:" in line]


def run_cli(argv: list[str], stdin: bytes | None = None) -> CliResult:
    """``attnlab ARGV`` in this process, with stdout/stderr captured and ``stdin`` (bytes) as standard input.

    argparse errors (``SystemExit``) become their exit code, like in a real process; any other exception
    propagates, so a traceback a user would see fails the test.
    """
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    # Real files, not StringIO: SentencePiece training needs sys.stderr.fileno().
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out, tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exc:
                    rc = exc.code if isinstance(exc.code, int) else 2
        finally:
            sys.stdin = old_stdin
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read())
    return CliResult(rc, *texts)


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root`` (hidden ones included): relative path -> (mtime in ns, contents)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def checkpoint_step(ckpt_dir: Path) -> int:
    return int(json.loads((ckpt_dir / "meta.json").read_text(encoding="utf-8"))["step"])


def assert_resumed_equals_straight(resumed: Path, straight: Path, steps: int) -> None:
    """``resumed`` (N steps, then --resume to ``steps``) equals ``straight`` (``steps`` in one go): parameters,
    optimizer moments and every logged training loss, bit for bit."""
    import torch
    from safetensors.torch import load_file

    assert checkpoint_step(resumed / "last") == steps
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(resumed / "last" / name)
        b = load_file(straight / "last" / name)
        assert a.keys() == b.keys() and a
        assert not [k for k in a if not torch.equal(a[k], b[k])], name
    losses = [[(r["step"], r["loss"]) for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
              for run in (resumed, straight)]
    assert losses[0] == losses[1] and len(losses[0]) == steps


BPE = ["--set", "data.src_tokenizer=bpe", "--set", "data.tgt_tokenizer=bpe", "--set", "data.vocab_size=80"]


def train_bpe_dates(out: Path, *extra: str, model: str = "transformer") -> Path:
    """Two steps of a tiny ``model`` on the dates task with BPE tokenizers (for export tests); returns ``out``."""
    tiny = TINY_TRANSFORMER if model == "transformer" else TINY_SEQ2SEQ
    res = run_cli(["train", "--task", "dates", "--model", model, "--max-steps", "2", *tiny, *BPE, *SMALL_DATA,
                   *extra, "--out", str(out)])
    assert res.rc == 0, res.err
    return out


def export_error(argv: list[str], rc: int) -> str:
    """Run ``attnlab ARGV``; assert exit ``rc``, one bounded ``attnlab export: error:`` line and no stdout."""
    res = run_cli(argv)
    lines = res.error_lines()
    assert res.rc == rc, res.err[-2000:]
    assert len(lines) == 1 and "Traceback" not in res.err and not res.out, res.err[-2000:]
    assert lines[0].startswith("attnlab export: error: ") and len(lines[0]) < 600, lines[0]
    return lines[0]
