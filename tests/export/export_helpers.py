"""A tiny Transformer trained in seconds on the synthetic dates task with BPE tokenizers, for the export tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnlab.core.run_config import RunConfig
from attnlab.pipeline import train_run

BPE = {"src_tokenizer": "bpe", "tgt_tokenizer": "bpe", "vocab_size": 60}


def train_tiny(out: Path, model: dict[str, Any], *, steps: int, data: dict[str, Any] | None = None) -> Path:
    """Train ``steps`` steps into ``out``; ``model``/``data`` override the tiny defaults. Returns ``out/last``."""
    cfg = RunConfig.from_dict({
        "data": {"source": "task", "task": "dates", "num_train": 2000, "num_valid": 20, "num_test": 0, **BPE,
                 **(data or {})},
        "model": {"kind": "transformer", "d_model": 32, "num_heads": 2, "ffn_dim": 64, "encoder_layers": 1,
                  "decoder_layers": 1, **model},
        "train": {"max_steps": steps, "lr": 0.005, "warmup_steps": 20, "tokens_per_batch": 2048, "eval_every": 1000,
                  "save_every": 1000, "best_metric": "val_loss", "best_mode": "min"},
        "decode": {"eval_sentences": 0}})
    train_run(cfg, out, progress=False)
    return out / "last"
