"""attnlab.models: RNN encoders, Seq2Seq with attention, the Transformer, attention classifiers, ViT, captioner."""

from attnlab.models.base import AttentionMaps, DecoderState, EncoderDecoder, EncoderDecoderOutput, StepOutput
from attnlab.models.build import build_model
from attnlab.models.captioner import Captioner, patch_grid
from attnlab.models.classifier import (
    AttentionPooling,
    ClassifierOutput,
    RNNAttentionClassifier,
    TransformerClassifier,
)
from attnlab.models.rnn import RNNEncoder, RNNEncoderOutput
from attnlab.models.seq2seq import Seq2Seq, Seq2SeqState
from attnlab.models.transformer import (
    PositionwiseFeedForward,
    Transformer,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    TransformerState,
)
from attnlab.models.vit import PatchEmbedding, VisionTransformer

__all__ = [
    "AttentionMaps",
    "AttentionPooling",
    "Captioner",
    "ClassifierOutput",
    "DecoderState",
    "EncoderDecoder",
    "EncoderDecoderOutput",
    "PatchEmbedding",
    "PositionwiseFeedForward",
    "RNNAttentionClassifier",
    "RNNEncoder",
    "RNNEncoderOutput",
    "Seq2Seq",
    "Seq2SeqState",
    "StepOutput",
    "Transformer",
    "TransformerClassifier",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "TransformerState",
    "VisionTransformer",
    "build_model",
    "patch_grid",
]
