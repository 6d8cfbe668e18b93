"""What every export format shares: the result it returns and the all-or-nothing writing of its output directory."""

from __future__ import annotations

import importlib
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from attnlab.core.errors import CheckpointError, ConfigError, short_repr

__all__ = ["Export", "Source", "check_out_dir", "check_sentencepiece", "open_source", "require", "write_directory"]


@dataclass(frozen=True)
class Export:
    """What an export wrote.

    Attributes:
        out_dir: the directory written.
        checkpoint: the checkpoint directory read.
        step: its training step.
        files: the file names in ``out_dir``, sorted.
    """

    out_dir: Path
    checkpoint: Path
    step: int
    files: tuple[str, ...]


def check_out_dir(out: Path) -> None:
    """Refuse an output path that exists, unless it is an empty directory.

    Raises:
        ConfigError: ``out`` is a file or a non-empty directory.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists; export never overwrites: remove it or choose another output "
                          f"directory")


def write_directory(out: Path, fill: Callable[[Path], None]) -> tuple[str, ...]:
    """Let ``fill`` write a new directory beside ``out``, then rename it to ``out``: the directory appears complete
    or not at all (an error removes the partial one). Returns the names of the files written, sorted.

    Raises:
        ConfigError: ``out`` exists (checked again after ``fill``, which may take a while).
    """
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()  # with the umask's permissions (tempfile.mkdtemp's are owner-only)
    try:
        fill(tmp)
        check_out_dir(out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tuple(sorted(p.name for p in out.iterdir()))


def require(module: str, what: str, extra: str) -> ModuleType:
    """Import an optional dependency, or a one-line :class:`ConfigError` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the {module} package: pip install 'attnlab[{extra}]'") from exc


def check_sentencepiece(src: Any, tgt: Any, where: str, why: str) -> None:
    """Refuse tokenizers other than SentencePiece (bpe, unigram): they exist in attnlab only. ``why``: what the
    format ships instead, e.g. "a CTranslate2 model is served with SentencePiece models"."""
    from attnlab.data.subword import SentencePieceTokenizer

    for side, tok in (("src", src), ("tgt", tgt)):
        if not isinstance(tok, SentencePieceTokenizer):
            raise ConfigError(f"checkpoint {where}: data.{side}_tokenizer is {short_repr(tok.kind)}, a tokenizer of "
                              f"attnlab's own; {why}, so export needs bpe or unigram (retrain with --set "
                              f"data.src_tokenizer=bpe --set data.tgt_tokenizer=bpe)")


@dataclass
class Source:
    """What an exporter reads: the checkpoint, its run config, text pipeline and Transformer, checked."""

    checkpoint: Any
    run: Any
    text: Any
    model: Any

    @property
    def where(self) -> str:
        return str(self.checkpoint.path)


def open_source(checkpoint_dir: str | Path, out: Path, check_model: Callable[[Any, str], None], why: str) -> Source:
    """Check ``out`` is free, load the checkpoint, and refuse what the format cannot take: the model config
    (``check_model(config, where)``), attnlab-only tokenizers (``why``: see :func:`check_sentencepiece`), and a
    built model that is no Transformer.

    Raises:
        ConfigError: an existing ``out`` or what the checks refuse. CheckpointError: a damaged checkpoint.
    """
    from attnlab.models.transformer import Transformer
    from attnlab.pipeline.load import predictor_from_checkpoint, resolve_checkpoint, run_config_of
    from attnlab.train.checkpoint import load_checkpoint

    check_out_dir(out)
    ckpt = load_checkpoint(resolve_checkpoint(checkpoint_dir))
    run = run_config_of(ckpt)
    where = str(ckpt.path)
    check_model(run.model, where)
    predictor = predictor_from_checkpoint(ckpt)
    text, model = predictor.text, predictor.model
    check_sentencepiece(text.src_tokenizer, text.tgt_tokenizer, where, why)
    if not isinstance(model, Transformer):  # the config said transformer; a registry change would land here
        raise CheckpointError(f"checkpoint {where}: built a {type(model).__name__}, expected a Transformer")
    return Source(ckpt, run, text, model)
