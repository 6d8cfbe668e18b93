"""Typed, validated model configurations; :func:`attnlab.models.build_model` turns one into a module.

Every config is a frozen dataclass with a ``kind`` field naming the model class, a help text per field
(shown by ``--help``), and validation in ``__post_init__`` that raises :class:`ConfigError` naming the
field, the value and what is expected. Configs round-trip through JSON with :func:`to_dict` and
:func:`model_config_from_dict`, so a checkpoint can rebuild its model. Vocabulary sizes are not part
of the config: they come from the data and are passed to ``build_model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from attnlab.core.config import check_range, from_dict, option, to_dict, validate_types
from attnlab.core.errors import ConfigError

RNNKind = Literal["rnn", "lstm", "gru"]
ScoringKind = Literal["additive", "dot", "scaled_dot", "general"]
PositionalKind = Literal["sinusoidal", "fairseq", "learned"]
_FAIRSEQ_HELP = ("fairseq (fairseq's fixed sinusoids: a sine block then a cosine block, frequencies "
                 "10000^(-i/(D/2-1)), rows from <pad>+1, as Hugging Face's M2M100 rebuilds them; needed by "
                 "attnlab export --format hf; d_model >= 4)")
ActivationKind = Literal["relu", "gelu"]
PoolingKind = Literal["additive", "scaled_dot"]
_POOLING_HELP = ("attention pooling scoring: additive (Bahdanau/Yang et al.; can saturate into uniform weights) or "
                 "scaled_dot (a trained query . projected positions)")
_QUERIES_HELP = ("trained pooling queries Q; the classifier reads their Q pooled vectors side by side (Lin et al. "
                 "2017's multi-hop pooling); the shown word weights are their mean")
_WORD_DROPOUT_HELP = ("training only: the probability that a whole token's embedding is zeroed (the rest rescaled), "
                      "so the model cannot rest on a few memorised words")

__all__ = [
    "MODEL_CONFIGS",
    "CaptionerConfig",
    "ModelConfig",
    "RNNClassifierConfig",
    "Seq2SeqConfig",
    "TransformerClassifierConfig",
    "TransformerConfig",
    "ViTConfig",
    "model_config_from_dict",
    "to_dict",
]


StemKind = Literal["linear", "conv"]
_STEM_HELP = ("how patches become vectors: linear (ViT's one linear map per patch) or conv (3x3 convolutions with "
              "stride 2 down to the patch grid, Xiao et al. 2021; each vector sees a 2P+1 pixel window; patch_size a "
              "power of 2)")


_STEM_BLOCKS_HELP = ("conv stem: ConvNeXt blocks on the patch grid after it (Liu et al. 2022: depthwise 7x7 "
                     "convolution, LayerNorm, pointwise MLP, residual); each widens what a vector sees by 6 patches, "
                     "so it can recognize a whole object, not a 2P+1 pixel piece of it")


def _check_stem(owner: str, stem: str, patch_size: int, stem_blocks: int = 0) -> None:
    if stem == "conv" and (patch_size < 2 or patch_size & (patch_size - 1)):
        raise ConfigError(f"{owner}.patch_size: the conv stem halves the image per layer, so patch_size must be a "
                          f"power of 2 (2, 4, 8, ...), got {patch_size}")
    check_range(owner, "stem_blocks", stem_blocks, low=0, high=64)
    if stem_blocks and stem != "conv":
        raise ConfigError(f"{owner}.stem_blocks: blocks follow the convolutional stem; set stem: conv or "
                          f"stem_blocks: 0 (got stem {stem!r})")


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        check_range(owner, name, value, low=1)


def _check_dropout(owner: str, **values: float) -> None:
    for name, value in values.items():
        # 1.0 zeroes every activation, which is never what anyone means.
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{owner}.{name}: got {value!r}, expected a probability in [0, 1)")


def _check_heads(owner: str, d_model: int, num_heads: int) -> None:
    if d_model % num_heads != 0:
        raise ConfigError(f"{owner}.d_model: got {d_model}, expected a multiple of num_heads={num_heads} "
                          f"(each head gets d_model / num_heads dimensions)")


@dataclass(frozen=True)
class Seq2SeqConfig:
    """RNN encoder-decoder with attention (Bahdanau et al., 2015, "Neural Machine Translation by Jointly
    Learning to Align and Translate"; the d2l.ai Bahdanau-attention design)."""

    kind: Literal["seq2seq"] = option("seq2seq", help="model family; selects attnlab.models.Seq2Seq")
    rnn: RNNKind = option("gru", help="recurrent cell of encoder and decoder: rnn (Elman), lstm or gru")
    embed_dim: int = option(64, help="token embedding size of encoder and decoder")
    hidden_size: int = option(128, help="hidden size of every recurrent layer (per direction)")
    num_layers: int = option(2, help="stacked recurrent layers in the encoder and in the decoder")
    bidirectional: bool = option(False, help="bidirectional encoder; its final states are bridged to the decoder")
    dropout: float = option(0.1, help="dropout on embeddings, between recurrent layers and before the output layer")
    attention: ScoringKind = option("additive", help="attention scoring: additive (Bahdanau), dot, scaled_dot "
                                                     "or general (Luong)")
    attention_hidden: int | None = option(None, help="hidden size of additive attention (default: hidden_size)")

    def __post_init__(self) -> None:
        validate_types(self)
        owner = type(self).__name__
        _check_positive(owner, embed_dim=self.embed_dim, hidden_size=self.hidden_size, num_layers=self.num_layers)
        if self.attention_hidden is not None:
            _check_positive(owner, attention_hidden=self.attention_hidden)
        _check_dropout(owner, dropout=self.dropout)


@dataclass(frozen=True)
class TransformerConfig:
    """Transformer encoder-decoder (Vaswani et al., 2017, "Attention Is All You Need"); pre-LN variant
    from Xiong et al., 2020, "On Layer Normalization in the Transformer Architecture"."""

    kind: Literal["transformer"] = option("transformer", help="model family; selects attnlab.models.Transformer")
    d_model: int = option(256, help="model (embedding) dimension D")
    num_heads: int = option(4, help="attention heads H per layer; must divide d_model")
    ffn_dim: int = option(1024, help="hidden size of the position-wise feed-forward network")
    encoder_layers: int = option(3, help="number of encoder layers")
    decoder_layers: int = option(3, help="number of decoder layers")
    dropout: float = option(0.1, help="dropout on embeddings, residual branches and the feed-forward hidden layer")
    attention_dropout: float = option(0.0, help="dropout on attention probabilities")
    activation: ActivationKind = option("relu", help="feed-forward activation: relu (the paper) or gelu")
    norm_first: bool = option(True, help="pre-LN (LayerNorm before each sublayer) if true, else post-LN (paper)")
    positional: PositionalKind = option("sinusoidal", help="positional encoding: sinusoidal (fixed, Vaswani et al.'s "
                                                           "interleaved sin/cos), learned, or " + _FAIRSEQ_HELP)
    share_embeddings: bool = option(False, help="one embedding table for source and target (needs equal vocabs)")
    tie_output: bool = option(True, help="tie the output projection to the target embedding (Press & Wolf, 2017)")
    max_len: int = option(512, help="longest source or target sequence (size of the positional table)")
    copy: bool = option(False, help="pointer-generator output (See et al., 2017): a gate mixes the vocabulary "
                                    "distribution with a copy attention over the source tokens; needs "
                                    "share_embeddings (one vocabulary for both sides)")

    def __post_init__(self) -> None:
        validate_types(self)
        owner = type(self).__name__
        _check_positive(owner, d_model=self.d_model, num_heads=self.num_heads, ffn_dim=self.ffn_dim,
                        encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers, max_len=self.max_len)
        _check_heads(owner, self.d_model, self.num_heads)
        _check_dropout(owner, dropout=self.dropout, attention_dropout=self.attention_dropout)
        _check_fairseq(owner, self.positional, self.d_model)
        if self.copy and not self.share_embeddings:
            raise ConfigError(f"{owner}.copy: copying a source token means emitting the same id on the target "
                              f"side, so it needs share_embeddings=true (one vocabulary for both sides)")


def _check_fairseq(owner: str, positional: str, d_model: int) -> None:
    """fairseq's table divides by D/2 - 1: it needs d_model >= 4."""
    if positional == "fairseq" and d_model < 4:
        raise ConfigError(f"{owner}.positional: fairseq's sinusoids need d_model >= 4, got d_model={d_model}")


@dataclass(frozen=True)
class RNNClassifierConfig:
    """Recurrent text classifier with attention pooling over its outputs (Yang et al., 2016,
    "Hierarchical Attention Networks for Document Classification")."""

    kind: Literal["rnn_classifier"] = option("rnn_classifier", help="selects attnlab.models.RNNAttentionClassifier")
    num_classes: int = option(2, help="number of output classes")
    rnn: RNNKind = option("lstm", help="recurrent cell: rnn, lstm or gru")
    embed_dim: int = option(64, help="token embedding size")
    hidden_size: int = option(64, help="hidden size per direction")
    num_layers: int = option(1, help="stacked recurrent layers")
    bidirectional: bool = option(True, help="read the text in both directions")
    dropout: float = option(0.1, help="dropout on embeddings and before the classifier")
    pooling: PoolingKind = option("additive", help=_POOLING_HELP)
    pooling_queries: int = option(1, help=_QUERIES_HELP)
    word_dropout: float = option(0.0, help=_WORD_DROPOUT_HELP)
    bigram_buckets: int = option(0, help="0 = off; else each position's embedding adds a hashed embedding of the "
                                         "bigram ending there (fastText-style features; buckets x embed_dim more "
                                         "parameters), so the pooled position stands for a word pair")

    def __post_init__(self) -> None:
        validate_types(self)
        owner = type(self).__name__
        _check_positive(owner, num_classes=self.num_classes, embed_dim=self.embed_dim,
                        hidden_size=self.hidden_size, num_layers=self.num_layers,
                        pooling_queries=self.pooling_queries)
        check_range(owner, "bigram_buckets", self.bigram_buckets, low=0, high=10_000_000)
        _check_dropout(owner, dropout=self.dropout, word_dropout=self.word_dropout)


@dataclass(frozen=True)
class TransformerClassifierConfig:
    """Transformer-encoder text classifier with attention pooling (Vaswani et al., 2017; pooling as in
    Lin et al., 2017, "A Structured Self-attentive Sentence Embedding")."""

    kind: Literal["transformer_classifier"] = option("transformer_classifier",
                                                     help="selects attnlab.models.TransformerClassifier")
    num_classes: int = option(2, help="number of output classes")
    d_model: int = option(64, help="model dimension D")
    num_heads: int = option(4, help="attention heads; must divide d_model")
    ffn_dim: int = option(128, help="feed-forward hidden size")
    num_layers: int = option(2, help="encoder layers")
    dropout: float = option(0.1, help="dropout on embeddings, residual branches and feed-forward")
    attention_dropout: float = option(0.0, help="dropout on attention probabilities")
    activation: ActivationKind = option("gelu", help="feed-forward activation: relu or gelu")
    norm_first: bool = option(True, help="pre-LN if true, else post-LN")
    positional: PositionalKind = option("learned",
                                        help="positional encoding: sinusoidal, learned or " + _FAIRSEQ_HELP)
    max_len: int = option(512, help="longest input sequence")
    pooling: PoolingKind = option("additive", help=_POOLING_HELP)
    pooling_queries: int = option(1, help=_QUERIES_HELP)
    word_dropout: float = option(0.0, help=_WORD_DROPOUT_HELP)

    def __post_init__(self) -> None:
        validate_types(self)
        owner = type(self).__name__
        _check_positive(owner, num_classes=self.num_classes, d_model=self.d_model, num_heads=self.num_heads,
                        ffn_dim=self.ffn_dim, num_layers=self.num_layers, max_len=self.max_len,
                        pooling_queries=self.pooling_queries)
        _check_heads(owner, self.d_model, self.num_heads)
        _check_dropout(owner, dropout=self.dropout, attention_dropout=self.attention_dropout,
                       word_dropout=self.word_dropout)
        _check_fairseq(owner, self.positional, self.d_model)


@dataclass(frozen=True)
class ViTConfig:
    """Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words")."""

    kind: Literal["vit"] = option("vit", help="selects attnlab.models.VisionTransformer")
    image_size: int = option(32, help="height and width of the (square) input images")
    patch_size: int = option(4, help="side of the square patches; must divide image_size")
    in_channels: int = option(3, help="image channels")
    num_classes: int = option(10, help="number of output classes")
    d_model: int = option(128, help="model dimension D")
    num_heads: int = option(4, help="attention heads; must divide d_model")
    ffn_dim: int = option(256, help="MLP hidden size")
    num_layers: int = option(4, help="encoder layers")
    dropout: float = option(0.1, help="dropout on embeddings, residual branches and the MLP")
    attention_dropout: float = option(0.0, help="dropout on attention probabilities")
    stem: StemKind = option("linear", help=_STEM_HELP)
    stem_blocks: int = option(0, help=_STEM_BLOCKS_HELP)

    def __post_init__(self) -> None:
        validate_types(self)
        owner = type(self).__name__
        _check_positive(owner, image_size=self.image_size, patch_size=self.patch_size, in_channels=self.in_channels,
                        num_classes=self.num_classes, d_model=self.d_model, num_heads=self.num_heads,
                        ffn_dim=self.ffn_dim, num_layers=self.num_layers)
        if self.image_size % self.patch_size != 0:
            raise ConfigError(f"{owner}.patch_size: got {self.patch_size}, expected a divisor of "
                              f"image_size={self.image_size}")
        _check_stem(owner, self.stem, self.patch_size, self.stem_blocks)
        _check_heads(owner, self.d_model, self.num_heads)
        _check_dropout(owner, dropout=self.dropout, attention_dropout=self.attention_dropout)


@dataclass(frozen=True)
class CaptionerConfig:
    """Image captioner: a ViT-style patch encoder (Dosovitskiy et al., 2021) and a Transformer decoder that
    attends over the patches while it writes (the attention-over-regions captioning of Xu et al., 2015,
    "Show, Attend and Tell")."""

    kind: Literal["captioner"] = option("captioner", help="selects attnlab.models.Captioner")
    image_size: int = option(64, help="height and width of the (square) input images")
    patch_size: int = option(8, help="side of the square patches; must divide image_size")
    in_channels: int = option(1, help="image channels")
    d_model: int = option(128, help="model dimension D")
    num_heads: int = option(4, help="attention heads H per layer; must divide d_model")
    ffn_dim: int = option(256, help="hidden size of the position-wise feed-forward networks")
    encoder_layers: int = option(2, help="encoder layers over the patches; 0 lets the decoder attend over the "
                                         "patch embeddings themselves")
    decoder_layers: int = option(2, help="decoder layers")
    dropout: float = option(0.1, help="dropout on embeddings, residual branches and the feed-forward hidden layer")
    attention_dropout: float = option(0.0, help="dropout on attention probabilities")
    max_len: int = option(32, help="longest caption in tokens, <bos> and <eos> included (decoder positions)")
    tie_embeddings: bool = option(True, help="tie the output projection to the caption embedding (Press & Wolf, "
                                             "2017)")
    norm_first: bool = option(True, help="pre-LN (LayerNorm before each sublayer) if true, else post-LN")
    stem: StemKind = option("linear", help=_STEM_HELP)
    stem_blocks: int = option(0, help=_STEM_BLOCKS_HELP)
    decoder: Literal["transformer", "gru"] = option("transformer", help="transformer (decoder_layers layers of "
                                                    "causal self-attention and multi-head cross-attention) or gru "
                                                    "(Show, Attend and Tell: a GRU with one additive attention over "
                                                    "the patches per word and a deep output layer; decoder_layers, "
                                                    "num_heads and ffn_dim then apply to the encoder only)")

    def __post_init__(self) -> None:
        validate_types(self)
        owner = type(self).__name__
        _check_positive(owner, image_size=self.image_size, patch_size=self.patch_size, in_channels=self.in_channels,
                        d_model=self.d_model, num_heads=self.num_heads, ffn_dim=self.ffn_dim,
                        decoder_layers=self.decoder_layers, max_len=self.max_len)
        _check_stem(owner, self.stem, self.patch_size, self.stem_blocks)
        check_range(owner, "encoder_layers", self.encoder_layers, low=0)
        if self.image_size % self.patch_size != 0:
            raise ConfigError(f"{owner}.patch_size: got {self.patch_size}, expected a divisor of "
                              f"image_size={self.image_size}")
        _check_heads(owner, self.d_model, self.num_heads)
        _check_dropout(owner, dropout=self.dropout, attention_dropout=self.attention_dropout)


ModelConfig = (Seq2SeqConfig | TransformerConfig | RNNClassifierConfig | TransformerClassifierConfig | ViTConfig
               | CaptionerConfig)

MODEL_CONFIGS: dict[str, type[Any]] = {
    "seq2seq": Seq2SeqConfig,
    "transformer": TransformerConfig,
    "rnn_classifier": RNNClassifierConfig,
    "transformer_classifier": TransformerClassifierConfig,
    "vit": ViTConfig,
    "captioner": CaptionerConfig,
}


def model_config_from_dict(data: dict[str, Any], *, where: str = "model") -> ModelConfig:
    """Rebuild a model config from :func:`to_dict` output; ``data["kind"]`` picks the class.

    Raises:
        ConfigError: ``kind`` missing or unknown, unknown keys, or invalid values (the message names ``where``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of model options, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in MODEL_CONFIGS:
        raise ConfigError(f"{where}.kind: got {kind!r}, expected one of {', '.join(map(repr, MODEL_CONFIGS))}")
    return from_dict(MODEL_CONFIGS[kind], data, where=where)
