"""Config machinery: YAML numbers, unknown keys, type checks, run-config round trip."""

import pytest

from attnlab.core.config import from_dict, load_file, to_dict, yaml_loads
from attnlab.core.errors import ConfigError
from attnlab.core.run_config import DataConfig, RunConfig
from attnlab.core.train_config import TrainConfig


def test_yaml_reads_exponent_numbers_as_floats(tmp_path):
    assert yaml_loads("lr: 1e-3\nwd: 5E-2\nx: abc") == {"lr": 0.001, "wd": 0.05, "x": "abc"}
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\n  betas: [0.9, 0.98]\n")
    cfg = RunConfig.from_dict(load_file(path))
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.betas == (0.9, 0.98)


def test_unknown_keys_and_bad_types_name_the_field():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) lrr for TrainConfig"):
        from_dict(TrainConfig, {"lrr": 1.0}, where="train")
    with pytest.raises(ConfigError, match="TrainConfig.max_steps: expected an integer, got 'ten'"):
        TrainConfig(max_steps="ten")
    with pytest.raises(ConfigError, match="DataConfig.source: got 'wiki'"):
        DataConfig(source="wiki")
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_dict({"optim": {}})


def test_run_config_round_trips_through_json_dict():
    cfg = RunConfig.from_dict({"model": {"kind": "transformer", "d_model": 64, "num_heads": 4},
                               "data": {"source": "multi30k", "src_lang": "en", "tgt_lang": "fr"}})
    again = RunConfig.from_dict(to_dict(cfg))
    assert again == cfg and again.model.kind == "transformer"


def test_files_source_requires_its_files():
    with pytest.raises(ConfigError, match="--train-src, --train-tgt, --valid-src, --valid-tgt"):
        DataConfig(source="files")


def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="x.yaml: not valid YAML"):
        load_file(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_file(tmp_path / "missing.yaml")


def test_out_of_range_seed_is_one_short_line() -> None:
    """A seed beyond torch's signed 64 bits is refused up front; the message never echoes a huge number."""
    from attnlab.core.train_config import TrainConfig

    for seed in (2**63, -1, 10**5000):
        with pytest.raises(ConfigError, match="seed") as info:
            TrainConfig(seed=seed)
        assert len(str(info.value)) < 160
    with pytest.raises(ConfigError, match="16610-bit integer"):
        TrainConfig(seed=10**5000)
    TrainConfig(seed=2**63 - 1)


def test_fairseq_positions_need_d_model_4() -> None:
    from attnlab.core.errors import ConfigError
    from attnlab.core.model_config import TransformerConfig

    with pytest.raises(ConfigError, match="d_model >= 4"):
        TransformerConfig(d_model=2, num_heads=1, positional="fairseq")
    assert TransformerConfig(d_model=4, num_heads=1, positional="fairseq").positional == "fairseq"
