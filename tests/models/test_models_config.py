"""Model configs: validation messages, JSON round trip, build_model for every kind."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from attnlab.core.config import field_help, to_dict
from attnlab.core.errors import ConfigError
from attnlab.core.model_config import (
    MODEL_CONFIGS,
    CaptionerConfig,
    RNNClassifierConfig,
    Seq2SeqConfig,
    TransformerClassifierConfig,
    TransformerConfig,
    ViTConfig,
    model_config_from_dict,
)
from attnlab.models import (
    Captioner,
    RNNAttentionClassifier,
    Seq2Seq,
    Transformer,
    TransformerClassifier,
    VisionTransformer,
    build_model,
)

SMALL = {
    "seq2seq": Seq2SeqConfig(embed_dim=8, hidden_size=8, num_layers=1, bidirectional=True, attention="general"),
    "transformer": TransformerConfig(d_model=16, num_heads=2, ffn_dim=16, encoder_layers=1, decoder_layers=1,
                                     positional="learned", max_len=32),
    "rnn_classifier": RNNClassifierConfig(num_classes=3, embed_dim=8, hidden_size=8, rnn="gru"),
    "transformer_classifier": TransformerClassifierConfig(d_model=16, num_heads=2, ffn_dim=16, num_layers=1,
                                                          max_len=32),
    "vit": ViTConfig(image_size=8, patch_size=4, in_channels=1, num_classes=3, d_model=16, num_heads=2, ffn_dim=16,
                     num_layers=1),
    "captioner": CaptionerConfig(image_size=8, patch_size=4, in_channels=1, d_model=16, num_heads=2, ffn_dim=16,
                                 encoder_layers=1, decoder_layers=1, max_len=32),
}
CLASSES = {"seq2seq": Seq2Seq, "transformer": Transformer, "rnn_classifier": RNNAttentionClassifier,
           "transformer_classifier": TransformerClassifier, "vit": VisionTransformer, "captioner": Captioner}


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (Seq2SeqConfig, {"rnn": "transformer"}, r"Seq2SeqConfig\.rnn: got 'transformer', expected one of"),
    (Seq2SeqConfig, {"attention": "multiplicative"}, r"Seq2SeqConfig\.attention: got 'multiplicative'"),
    (Seq2SeqConfig, {"hidden_size": 0}, r"Seq2SeqConfig\.hidden_size: got 0, expected a value >= 1"),
    (Seq2SeqConfig, {"dropout": 1.0}, r"Seq2SeqConfig\.dropout: got 1\.0, expected a probability in \[0, 1\)"),
    (Seq2SeqConfig, {"num_layers": 2.5}, r"Seq2SeqConfig\.num_layers: expected an integer, got 2\.5"),
    (Seq2SeqConfig, {"bidirectional": "yes"}, r"Seq2SeqConfig\.bidirectional: expected bool"),
    (TransformerConfig, {"d_model": 30, "num_heads": 4}, r"TransformerConfig\.d_model: got 30, expected a multiple"),
    (TransformerConfig, {"positional": "rotary"}, r"TransformerConfig\.positional: got 'rotary'"),
    (TransformerConfig, {"attention_dropout": -0.1}, r"TransformerConfig\.attention_dropout: got -0\.1"),
    (TransformerConfig, {"max_len": 0}, r"TransformerConfig\.max_len: got 0"),
    (ViTConfig, {"image_size": 30, "patch_size": 4}, r"ViTConfig\.patch_size: got 4, expected a divisor"),
    (RNNClassifierConfig, {"num_classes": 0}, r"RNNClassifierConfig\.num_classes: got 0"),
    (TransformerClassifierConfig, {"activation": "swish"}, r"TransformerClassifierConfig\.activation: got 'swish'"),
])
def test_invalid_values_name_field_value_and_expectation(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("kind", sorted(MODEL_CONFIGS))
def test_round_trip_through_json(kind: str) -> None:
    config = SMALL[kind]
    assert config.kind == kind
    restored = model_config_from_dict(json.loads(json.dumps(to_dict(config))))
    assert restored == config and type(restored) is type(config)
    for f in dataclasses.fields(config):
        assert field_help(type(config), f.name), f"{type(config).__name__}.{f.name} has no help text"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kind = "other"  # type: ignore[misc]


def test_from_dict_rejects_unknown_kinds_and_keys() -> None:
    with pytest.raises(ConfigError, match=r"model\.kind: got 'lstm_lm', expected one of"):
        model_config_from_dict({"kind": "lstm_lm"})
    with pytest.raises(ConfigError, match="model.kind: got None"):
        model_config_from_dict({"d_model": 8})
    with pytest.raises(ConfigError, match="unknown option.*hidden"):
        model_config_from_dict({"kind": "transformer", "hidden": 8})
    with pytest.raises(ConfigError, match=r"Seq2SeqConfig\.embed_dim"):
        model_config_from_dict({"kind": "seq2seq", "embed_dim": -1})


@pytest.mark.parametrize("kind", sorted(MODEL_CONFIGS))
def test_build_model_rebuilds_identical_model_from_saved_config(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(SMALL[kind], 11, 13)
    assert isinstance(model, CLASSES[kind])
    rebuilt = build_model(json.loads(json.dumps(to_dict(SMALL[kind]))), 11, 13)  # as from a checkpoint
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    if kind == "vit":
        inputs: tuple = (torch.randn(2, 1, 8, 8),)
    elif kind == "captioner":
        inputs = (torch.randn(2, 1, 8, 8), torch.tensor([4, 4]), torch.tensor([[1, 9], [1, 10]]))
    elif kind.endswith("classifier"):
        inputs = (torch.tensor([[4, 5, 6], [7, 8, 0]]),)
    else:
        inputs = (torch.tensor([[4, 5, 6], [7, 8, 0]]), torch.tensor([3, 2]), torch.tensor([[1, 9], [1, 10]]))
    torch.testing.assert_close(rebuilt(*inputs).logits, model(*inputs).logits)


def test_build_model_errors() -> None:
    with pytest.raises(ConfigError, match="needs tgt_vocab_size"):
        build_model(SMALL["transformer"], 11)
    with pytest.raises(ConfigError, match="needs src_vocab_size"):
        build_model(SMALL["rnn_classifier"])
    with pytest.raises(ConfigError, match="integer >= 4"):
        build_model(SMALL["seq2seq"], 2, 11)

    @dataclasses.dataclass(frozen=True)
    class AlienConfig:
        kind: str = "mamba"

    with pytest.raises(ConfigError, match="unknown model kind 'mamba'"):
        build_model(AlienConfig())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="model.kind"):
        build_model({"kind": "mamba"}, 11, 11)
