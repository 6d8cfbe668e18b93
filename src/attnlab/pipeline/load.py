"""Load a trained checkpoint for inference: model + tokenizers + vocabularies + run config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.core.run_config import RunConfig
from attnlab.data.prepare import TextPipeline, restore_text_pipeline
from attnlab.decode.translate import Translation, translate_sentences
from attnlab.models.base import EncoderDecoder
from attnlab.models.build import build_model
from attnlab.train.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a checkpoint; for a run directory, its ``best/`` (else ``last/``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory; train one with `attnlab train --out DIR` "
                              f"and pass DIR/best")
    if not (path / "meta.json").exists():
        for sub in ("best", "last"):
            if (path / sub / "meta.json").exists():
                log.info("using %s", path / sub)
                return path / sub
    return path


@dataclass
class Translator:
    """A trained model ready to translate text.

    Attributes:
        model: in eval mode.
        text: its tokenizers and vocabularies.
        config: the run configuration it was trained with.
        step: training step of the checkpoint.
        path: the checkpoint directory.
    """

    model: EncoderDecoder
    text: TextPipeline
    config: RunConfig
    step: int
    path: Path

    def translate(self, sentences: list[str], *, beam_size: int | None = None, n_best: int = 1,
                  return_attention: bool = False, max_len: int | None = None) -> list[Translation]:
        """Translate ``sentences`` (input order kept); beam size defaults to the run's ``decode.beam_size``."""
        cfg = self.config.decode
        with torch.inference_mode():
            return translate_sentences(
                self.model, sentences, self.text.src_tokenizer, self.text.src_vocab, self.text.tgt_tokenizer,
                self.text.tgt_vocab, beam_size=cfg.beam_size if beam_size is None else beam_size, n_best=n_best,
                batch_size=cfg.batch_size, max_len=max_len if max_len is not None else cfg.max_len,
                max_src_len=self.config.data.max_len, length_penalty=cfg.length_penalty,
                return_attention=return_attention)


def load_translator(path: str | Path) -> Translator:
    """Read a checkpoint written by ``attnlab train`` (a ``best/``/``last/`` directory, or a run directory)."""
    return translator_from_checkpoint(load_checkpoint(resolve_checkpoint(path)))


def translator_from_checkpoint(ckpt: Checkpoint) -> Translator:
    """Build the model of an already-read checkpoint from its own config, and load its weights."""
    path = ckpt.path
    try:
        config = RunConfig.from_dict({k: v for k, v in ckpt.config.items() if k in ("data", "model", "train",
                                                                                   "decode")})
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: its config is not an attnlab run config ({exc})") from None
    text = restore_text_pipeline(ckpt.extra, str(path))
    model = build_model(config.model, len(text.src_vocab), len(text.tgt_vocab))
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: weights do not fit its own model config ({first})") from None
    model.eval()
    return Translator(model, text, config, ckpt.step, ckpt.path)
