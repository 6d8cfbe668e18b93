"""``build_model``: a model config (or its dict) -> the module it describes."""

from __future__ import annotations

from typing import Any

from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.core.model_config import (
    MODEL_CONFIGS,
    CaptionerConfig,
    ModelConfig,
    RNNClassifierConfig,
    Seq2SeqConfig,
    TransformerClassifierConfig,
    TransformerConfig,
    ViTConfig,
    model_config_from_dict,
)
from attnlab.models.captioner import Captioner
from attnlab.models.classifier import RNNAttentionClassifier, TransformerClassifier
from attnlab.models.seq2seq import Seq2Seq
from attnlab.models.transformer import Transformer
from attnlab.models.vit import VisionTransformer

__all__ = ["build_model"]


def _vocab(kind: str, name: str, size: int | None) -> int:
    if size is None:
        raise ConfigError(f"build_model: a {kind} model needs {name} (the vocabulary size from the data)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ConfigError(f"build_model: {name} must be an integer >= 4 (<pad> <bos> <eos> <unk> are reserved), "
                          f"got {size!r}")
    return size


def build_model(config: ModelConfig | dict[str, Any], src_vocab_size: int | None = None,
                tgt_vocab_size: int | None = None) -> nn.Module:
    """Instantiate the model ``config.kind`` names.

    Args:
        config: a model config, or its :func:`attnlab.core.config.to_dict` form (as saved in checkpoints).
        src_vocab_size: source (or input text) vocabulary size; needed by every text model, ignored by image models.
        tgt_vocab_size: target vocabulary size; needed by encoder-decoder models (the captioner's caption vocabulary).

    Raises:
        ConfigError: an unknown ``kind``, an invalid config, or a missing vocabulary size.
    """
    if isinstance(config, dict):
        config = model_config_from_dict(config)
    kind = getattr(config, "kind", None)
    if kind not in MODEL_CONFIGS or not isinstance(config, MODEL_CONFIGS[kind]):
        raise ConfigError(f"build_model: unknown model kind {kind!r} ({type(config).__name__}); "
                          f"expected one of {', '.join(MODEL_CONFIGS)}")
    if isinstance(config, Seq2SeqConfig):
        return Seq2Seq(config, _vocab(kind, "src_vocab_size", src_vocab_size),
                       _vocab(kind, "tgt_vocab_size", tgt_vocab_size))
    if isinstance(config, TransformerConfig):
        return Transformer(config, _vocab(kind, "src_vocab_size", src_vocab_size),
                           _vocab(kind, "tgt_vocab_size", tgt_vocab_size))
    if isinstance(config, RNNClassifierConfig):
        return RNNAttentionClassifier(config, _vocab(kind, "src_vocab_size", src_vocab_size))
    if isinstance(config, TransformerClassifierConfig):
        return TransformerClassifier(config, _vocab(kind, "src_vocab_size", src_vocab_size))
    if isinstance(config, ViTConfig):
        return VisionTransformer(config)
    if isinstance(config, CaptionerConfig):
        return Captioner(config, _vocab(kind, "tgt_vocab_size", tgt_vocab_size))
    raise ConfigError(f"build_model: no model registered for kind {kind!r}")  # pragma: no cover
