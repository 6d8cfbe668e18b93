"""The attention core: masks, pure math, scoring modules, multi-head attention, positions, tracing."""

from attnlab.attention.cache import KVCache
from attnlab.attention.functional import explicit_attention, fused_attention, masked_softmax
from attnlab.attention.masks import causal_mask, from_torch_masks, lengths_to_mask
from attnlab.attention.multihead import MultiHeadAttention
from attnlab.attention.positional import (
    FairseqSinusoidalPositionalEncoding,
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
)
from attnlab.attention.scoring import (
    AdditiveAttention,
    DotProductAttention,
    GeneralAttention,
    ScaledDotProductAttention,
    ScoringAttention,
)
from attnlab.attention.trace import Trace, TraceStep, active_trace, trace

__all__ = [
    "AdditiveAttention",
    "DotProductAttention",
    "FairseqSinusoidalPositionalEncoding",
    "GeneralAttention",
    "KVCache",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "ScaledDotProductAttention",
    "ScoringAttention",
    "SinusoidalPositionalEncoding",
    "Trace",
    "TraceStep",
    "active_trace",
    "causal_mask",
    "explicit_attention",
    "from_torch_masks",
    "fused_attention",
    "lengths_to_mask",
    "masked_softmax",
    "trace",
]
