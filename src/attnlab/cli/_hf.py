"""Local Hugging Face model folders for ``--hf-model`` (``attnlab viz``, ``attnlab explain``): checks, quiet loading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attnlab.core.errors import CheckpointError, ConfigError


def open_folder(folder: str) -> tuple[Path, Any, Any]:
    """``(path, transformers, config)`` of a local model folder.

    Raises:
        CheckpointError: no folder, no ``config.json``, or a config transformers cannot read.
        ConfigError: transformers is not installed.
    """
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"no model folder at {path}")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a Hugging Face model folder (it has no config.json)")
    try:
        import transformers
    except ImportError:
        raise ConfigError("--hf-model needs the transformers package: pip install 'attnlab[hf]'") from None
    with quiet(transformers), load_errors(path):
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    return path, transformers, config


@contextmanager
def load_errors(path: Path) -> Iterator[None]:
    """transformers' loading errors as one :class:`CheckpointError` line naming the folder."""
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        raise CheckpointError(f"cannot load the Hugging Face model in {path}: {first}") from None


@contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """No progress bars or info chatter from transformers on the terminal while loading (restored after)."""
    hf_logging = transformers.utils.logging
    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
