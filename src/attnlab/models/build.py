"""``build_model``: a model config (or its dict) -> the module it describes, after checking its size.

Before a module is instantiated, :func:`estimate_parameters` counts from the config alone (no allocation) the
values it would hold; a model beyond :data:`MAX_PARAMETERS` is refused with a :class:`ConfigError` that names the
field responsible, so a typo (``d_model: 10240000``) or a hostile checkpoint config (``num_layers: 1000000``)
fails at once instead of exhausting memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from attnlab.core.errors import ConfigError, short_repr
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

__all__ = ["MAX_PARAMETERS", "build_model", "check_model_size", "estimate_parameters", "largest_term"]

MAX_PARAMETERS = 2**31
"""The most values (parameters and buffers) :func:`build_model` allocates: 2,147,483,648, 8 GiB of float32
weights and 32 GiB with AdamW's moments and the gradients -- far above any attnlab recipe (the largest holds a few
million), so only a typo or a hostile config reaches it."""

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per recurrent cell


def _rnn(gates: int, inputs: int, hidden: int, layers: int, dirs: int) -> int:
    """Weight matrices of a stacked (bi)directional RNN/GRU/LSTM (biases left out)."""
    return dirs * gates * hidden * (inputs + hidden) + (layers - 1) * dirs * gates * hidden * (dirs * hidden + hidden)


def _conv_stem(inputs: int, d: int, patch: int) -> int:
    """Kernels of :class:`attnlab.models.vit.ConvStem`: a 3x3 convolution to 32 channels, log2(P) strided, one 1x1."""
    total, channels = 9 * inputs * 32, 32
    for _ in range(patch.bit_length() - 1):
        out = min(2 * channels, d)
        total, channels = total + 9 * channels * out, out
    return total + channels * d


def _pooling(inputs: int, queries: int) -> int:
    """Attention pooling: its queries and at least one ``inputs x inputs`` projection."""
    return (queries + inputs) * inputs


def _count(v: dict[str, Any], stored_only: bool) -> int:
    """Values of the model ``v`` describes (a config's fields plus ``src_vocab_size``/``tgt_vocab_size``).

    Counted: weight matrices, embedding and positional tables -- each tied table once; left out: biases, norms and
    small extras, so the count is a lower bound within a few percent of the truth. ``stored_only`` leaves out
    what a checkpoint does not hold (the fixed sinusoidal tables, rebuilt from ``max_len``).
    """
    kind, vs, vt = v["kind"], v["src_vocab_size"], v["tgt_vocab_size"]
    if kind == "seq2seq":
        g, e, h, n = _GATES[v["rnn"]], v["embed_dim"], v["hidden_size"], v["num_layers"]
        encoder = _rnn(g, e, h, n, 2 if v["bidirectional"] else 1)
        decoder = g * h * (e + 2 * h) + (n - 1) * g * h * 2 * h  # layer 0 reads [embedding; context]
        return vs * e + vt * e + encoder + decoder + vt * h
    d = v.get("d_model", 0)
    block = 4 * d * d + 2 * d * v.get("ffn_dim", 0)  # self-attention q, k, v, o + feed-forward
    if kind == "rnn_classifier":
        dirs = 2 if v["bidirectional"] else 1
        encoder = _rnn(_GATES[v["rnn"]], v["embed_dim"], v["hidden_size"], v["num_layers"], dirs)
        width, queries = dirs * v["hidden_size"], v["pooling_queries"]
        return vs * v["embed_dim"] + encoder + _pooling(width, queries) + v["num_classes"] * queries * width
    positions = v.get("max_len", 0) * d
    if kind == "transformer":
        learned = v["positional"] == "learned"
        tables = (vt + (0 if v["share_embeddings"] else vs) + (0 if v["tie_output"] else vt)) * d
        pos = 2 * positions if learned or not stored_only else 0
        return tables + pos + v["encoder_layers"] * block + v["decoder_layers"] * (block + 4 * d * d)
    if kind == "transformer_classifier":
        pos = positions if v["positional"] == "learned" or not stored_only else 0
        queries = v["pooling_queries"]
        return vs * d + pos + v["num_layers"] * block + _pooling(d, queries) + v["num_classes"] * queries * d
    patches = (v["image_size"] // v["patch_size"]) ** 2
    stem = v["in_channels"] * v["patch_size"] ** 2 * d if v["stem"] == "linear" else \
        _conv_stem(v["in_channels"], d, v["patch_size"])
    if kind == "vit":
        return stem + (patches + 1) * d + v["num_layers"] * block + v["num_classes"] * d
    if kind == "captioner":
        decoder = v["decoder_layers"] * (block + 4 * d * d) if v["decoder"] == "transformer" else 9 * d * d
        tables = vt * d * (1 if v["tie_embeddings"] else 2) + positions
        return stem + patches * d + v["encoder_layers"] * block + decoder + tables
    raise ConfigError(f"build_model: cannot size a model of kind {short_repr(kind)}")  # pragma: no cover


def _values(config: ModelConfig, src_vocab_size: int | None, tgt_vocab_size: int | None) -> dict[str, Any]:
    # An unknown vocabulary counts as the smallest possible one (the four special tokens).
    return {**dataclasses.asdict(config), "src_vocab_size": src_vocab_size or 4, "tgt_vocab_size": tgt_vocab_size or 4}


def estimate_parameters(config: ModelConfig, src_vocab_size: int | None = None, tgt_vocab_size: int | None = None,
                        *, stored_only: bool = False) -> int:
    """The values (parameters and buffers) of the model ``config`` describes, counted without building it.

    A lower bound within a few percent (biases and norms are left out). With ``stored_only`` only what a checkpoint
    holds (``model.safetensors``) is counted, so that a real checkpoint always stores at least this many. An
    unknown vocabulary size counts as 4.
    """
    return _count(_values(config, src_vocab_size, tgt_vocab_size), stored_only)


def largest_term(config: ModelConfig, src_vocab_size: int | None = None, tgt_vocab_size: int | None = None, *,
                 stored_only: bool = False) -> tuple[str, int]:
    """The size field (or vocabulary size) that contributes most to :func:`estimate_parameters`, with its value:
    the one whose setting to 1 shrinks the estimate most."""
    values = _values(config, src_vocab_size, tgt_vocab_size)
    sizes = [k for k, x in values.items() if isinstance(x, int) and not isinstance(x, bool) and x > 1]
    if not sizes:
        return "kind", values["kind"]
    name = min(sizes, key=lambda k: _count({**values, k: 1}, stored_only))
    return name, values[name]


def describe_field(name: str, value: Any) -> str:
    """``model.d_model=1000000000`` (vocabulary sizes, which come from the data, keep their own names)."""
    return f"{name if name.endswith('vocab_size') else 'model.' + name}={short_repr(value)}"


def check_model_size(config: ModelConfig, src_vocab_size: int | None = None, tgt_vocab_size: int | None = None, *,
                     limit: int = MAX_PARAMETERS) -> int:
    """Refuse a model of over ``limit`` values before anything is allocated; return the estimate.

    Raises:
        ConfigError: one line naming the field that makes the model so large, e.g.
            ``model.num_layers=1000000: the model would hold about 3.2e+11 values, more than ...``.
    """
    estimate = estimate_parameters(config, src_vocab_size, tgt_vocab_size)
    if estimate > limit:
        name, value = largest_term(config, src_vocab_size, tgt_vocab_size)
        raise ConfigError(f"{describe_field(name, value)}: the {config.kind} model would hold about {estimate:.2g} "
                          f"values, more than the {limit:,} attnlab builds (MAX_PARAMETERS); lower {name}")
    return estimate


def _vocab(kind: str, name: str, size: int | None) -> int:
    if size is None:
        raise ConfigError(f"build_model: a {kind} model needs {name} (the vocabulary size from the data)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ConfigError(f"build_model: {name} must be an integer >= 4 (<pad> <bos> <eos> <unk> are reserved), "
                          f"got {short_repr(size)}")
    return size


def build_model(config: ModelConfig | dict[str, Any], src_vocab_size: int | None = None,
                tgt_vocab_size: int | None = None) -> nn.Module:
    """Instantiate the model ``config.kind`` names.

    Args:
        config: a model config, or its :func:`attnlab.core.config.to_dict` form (as saved in checkpoints).
        src_vocab_size: source (or input text) vocabulary size; needed by every text model, ignored by image models.
        tgt_vocab_size: target vocabulary size; needed by encoder-decoder models (the captioner's caption vocabulary).

    Raises:
        ConfigError: an unknown ``kind``, an invalid config, a missing vocabulary size, or a model of over
            :data:`MAX_PARAMETERS` values (checked before anything is allocated).
    """
    if isinstance(config, dict):
        if not isinstance(config.get("kind"), str):
            raise ConfigError(f"model.kind: got {short_repr(config.get('kind'))}, expected one of "
                              f"{', '.join(MODEL_CONFIGS)}")
        config = model_config_from_dict(config)
    kind = getattr(config, "kind", None)
    if not isinstance(kind, str) or kind not in MODEL_CONFIGS or not isinstance(config, MODEL_CONFIGS[kind]):
        raise ConfigError(f"build_model: unknown model kind {short_repr(kind)} ({type(config).__name__}); "
                          f"expected one of {', '.join(MODEL_CONFIGS)}")
    # Which vocabularies the model reads: text input (src), text output (tgt); image models have neither/only tgt.
    src = None if isinstance(config, (ViTConfig, CaptionerConfig)) else _vocab(kind, "src_vocab_size", src_vocab_size)
    tgt = _vocab(kind, "tgt_vocab_size", tgt_vocab_size) \
        if isinstance(config, (Seq2SeqConfig, TransformerConfig, CaptionerConfig)) else None
    check_model_size(config, src, tgt)  # before anything is allocated
    if isinstance(config, Seq2SeqConfig):
        return Seq2Seq(config, src, tgt)
    if isinstance(config, TransformerConfig):
        return Transformer(config, src, tgt)
    if isinstance(config, RNNClassifierConfig):
        return RNNAttentionClassifier(config, src)
    if isinstance(config, TransformerClassifierConfig):
        return TransformerClassifier(config, src)
    if isinstance(config, ViTConfig):
        return VisionTransformer(config)
    if isinstance(config, CaptionerConfig):
        return Captioner(config, tgt)
    raise ConfigError(f"build_model: no model registered for kind {short_repr(kind)}")  # pragma: no cover
