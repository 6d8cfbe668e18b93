"""TrainConfig: defaults, JSON round trip, validation messages, help texts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from attnlab.core.config import field_help, to_dict
from attnlab.core.errors import ConfigError
from attnlab.core.train_config import TrainConfig, train_config_from_dict


def test_defaults_round_trip_through_json() -> None:
    cfg = TrainConfig(betas=[0.8, 0.9], max_epochs=3, early_stopping_patience=2)  # type: ignore[arg-type]
    assert cfg.betas == (0.8, 0.9)
    data = json.loads(json.dumps(to_dict(cfg)))
    assert train_config_from_dict(data) == cfg
    assert TrainConfig().schedule == "inverse_sqrt" and TrainConfig().bf16 is False


def test_every_field_has_help() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert field_help(TrainConfig, f.name).strip(), f.name


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"lr": 0.0}, "lr"),
    ({"betas": (1.0, 0.9)}, "betas[0]"),
    ({"betas": (0.9,)}, "betas"),
    ({"schedule": "linear"}, "schedule"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"early_stopping_patience": 0}, "early_stopping_patience"),
    ({"max_steps": 0}, "max_steps"),
    ({"clip_grad_norm": -1.0}, "clip_grad_norm"),
    ({"best_mode": "lowest"}, "best_mode"),
    ({"num_threads": 0}, "num_threads"),
    ({"bf16": "yes"}, "bf16"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ({"decay_fraction": 0.0}, "decay_fraction"),
    ({"decay_fraction": 1.5}, "decay_fraction"),
])
def test_bad_values_name_the_field(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    assert f"TrainConfig.{needle}" in str(info.value)


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown option.*learning_rate"):
        train_config_from_dict({"learning_rate": 0.1})
