"""Export a trained checkpoint to another inference engine's format.

:data:`FORMATS` lists the formats and :data:`EXPORTERS` maps each to its function ``(checkpoint_dir, out_dir) ->
Export``; a new format is one more module with one such function (writing through
:func:`attnlab.export.base.write_directory`) and one more entry here (``attnlab export --format`` offers every key).

* ``ctranslate2`` (:func:`export_ctranslate2`, :mod:`attnlab.export.ct2`): a Transformer translation model as a
  CTranslate2 model directory with its SentencePiece models; :class:`ExportedTranslator` and
  :func:`translate_ctranslate2` translate text with it.
* ``hf`` (:func:`export_hf`, :mod:`attnlab.export.hf`): a pre-LN Transformer trained with ``model.positional:
  fairseq`` as a Hugging Face ``M2M100ForConditionalGeneration`` directory (``from_pretrained``) with its
  SentencePiece models and vocabularies; exact (same logits, same greedy ids), so every other layout is refused.

This package sits after :mod:`attnlab.pipeline` in the import chain (it loads checkpoints with it); ``ctranslate2``
itself is an optional dependency (``pip install 'attnlab[export]'``), as is ``transformers`` (``pip install
'attnlab[hf]'``); each is imported only when a function needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attnlab.core.errors import ConfigError, short_repr
from attnlab.export.base import Export
from attnlab.export.ct2 import ExportedTranslator, export_ctranslate2, translate_ctranslate2
from attnlab.export.hf import export_hf

__all__ = ["EXPORTERS", "FORMATS", "Export", "ExportedTranslator", "export_checkpoint", "export_ctranslate2",
           "export_hf", "translate_ctranslate2"]

EXPORTERS: dict[str, Callable[[str | Path, str | Path], Export]] = {
    "ctranslate2": export_ctranslate2,
    "hf": export_hf,
}
FORMATS: tuple[str, ...] = tuple(EXPORTERS)
"""The formats ``attnlab export --format`` accepts."""


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, format: str) -> Export:
    """Export ``checkpoint_dir`` (a checkpoint or a run directory) to ``out_dir`` in ``format``.

    Raises:
        ConfigError: an unknown format, or a model the format cannot represent (see the format's function).
        CheckpointError: a missing, truncated or corrupt checkpoint.
    """
    if format not in EXPORTERS:
        raise ConfigError(f"export format {short_repr(format)} unknown; expected one of {', '.join(FORMATS)}")
    return EXPORTERS[format](checkpoint_dir, out_dir)
