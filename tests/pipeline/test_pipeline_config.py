"""build_run_config: a recipe plus overrides gives the RunConfig ``attnlab train`` builds from the same flags."""

from __future__ import annotations

from pathlib import Path

import pytest

import attnlab.cli as cli
from attnlab.cli._run_options import run_config_from_args
from attnlab.core.config import to_dict
from attnlab.core.errors import ConfigError
from attnlab.pipeline import build_run_config, parse_overrides

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "rotten-tomatoes-sentiment.yaml"


def _cli(*argv: str) -> dict:
    args = cli.build_parser().parse_args(["train", "--out", "unused", *argv])
    return to_dict(run_config_from_args(args))


def test_a_recipe_with_overrides_equals_the_cli_run() -> None:
    cfg = build_run_config(RECIPE, overrides=["train.lr=0.01", "model.hidden_size=64"])
    assert to_dict(cfg) == _cli("--config", str(RECIPE), "--set", "train.lr=0.01", "--set", "model.hidden_size=64")
    assert cfg.train.lr == 0.01 and cfg.model.hidden_size == 64
    assert cfg.model.num_layers == 2  # the rest of the recipe is kept
    assert to_dict(build_run_config(RECIPE, overrides={"train": {"lr": 0.01}, "model": {"hidden_size": 64}})) \
        == to_dict(cfg)


def test_defaults_alone_are_the_task_defaults_of_the_cli() -> None:
    assert to_dict(build_run_config(flags={"data": {"source": "task", "task": "reverse"}}, model="seq2seq")) \
        == _cli("--task", "reverse", "--model", "seq2seq")


def test_switching_the_model_family_drops_the_recipe_model_options() -> None:
    cfg = build_run_config(RECIPE, model="transformer_classifier")
    assert cfg.model.kind == "transformer_classifier"
    assert to_dict(cfg) == _cli("--config", str(RECIPE), "--model", "transformer_classifier")


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lr"], "expected SECTION.KEY=VALUE"),
    (["optim.lr=1"], "expected SECTION.KEY=VALUE"),
    (["train.lr=-1"], "lr: got -1"),
])
def test_bad_overrides_are_config_errors_naming_them(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_run_config(RECIPE, overrides=overrides)


def test_a_section_that_is_not_a_mapping_is_named() -> None:
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        build_run_config({"train": [1, 2]})


def test_parse_overrides_reads_yaml_values() -> None:
    assert parse_overrides(["train.betas=[0.9, 0.98]", "train.bf16=true", "data.src_lang=en"]) == {
        "train": {"betas": [0.9, 0.98], "bf16": True}, "data": {"src_lang": "en"}}
