"""Hostile config files: an alias bomb, huge or deep values, wrong section types end in one bounded line with exit
code 2 through ``attnlab train --config FILE`` -- never a traceback, never an echo of the whole input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from attnlab.cli import main
from attnlab.core.config import load_file, yaml_loads
from attnlab.core.errors import ConfigError, ExitCode

MAX_MESSAGE = 600  # the file (a tmp path), the field, what it expects (maybe all known options); ~80 chars of input


def _bomb(levels: int, width: int, section: str, key: str) -> str:
    """A "billion laughs" YAML: ``width ** levels`` values from a few hundred bytes, all of them the value of
    ``section.key`` (so that validating it, or quoting it in an error, would walk them all)."""
    lines = [f"{section}:", f"  {key}:", f"    - &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"    - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _train_error(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``attnlab train --config CONFIG``: assert exit 2 and one bounded line naming the file; return that line."""
    capsys.readouterr()
    data = [] if "source:" in config.read_text(encoding="utf-8", errors="replace") else ["--task", "dates"]
    rc = main(["train", *data, "--config", str(config), "--out", str(config.parent / "out"), "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == ExitCode.USAGE, err[:2000]
    assert len(lines) == 1 and "Traceback" not in err, err[:2000]
    assert len(lines[0]) <= MAX_MESSAGE, lines[0][:2000]
    assert not (config.parent / "out").exists()  # refused before anything was written
    return lines[0]


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("section", "key"), [("data", "src_lang"), ("train", "lr"), ("train", "betas")])
def test_an_alias_bomb_fails_fast_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str,
                                              key: str) -> None:
    """8**7 = 2 million values from 300 bytes (a larger one would take a current machine down): refused at once."""
    config = _write(tmp_path, _bomb(levels=7, width=8, section=section, key=key))
    start = time.perf_counter()
    line = _train_error(config, capsys)
    assert time.perf_counter() - start < 5
    assert str(config) in line and "alias" in line and "line 3" in line, line


def test_a_billion_laughs_is_refused_while_parsing() -> None:
    """9**9 = 387 million values: the anchor is refused before any structure exists (so this returns at once)."""
    with pytest.raises(yaml.YAMLError, match="anchors and aliases"):
        yaml_loads(_bomb(levels=9, width=9, section="train", key="lr"))
    with pytest.raises(yaml.YAMLError, match="anchors and aliases"):
        yaml_loads("a: &x 1\nb: 2\n")  # an anchor alone is refused too: no alias can follow it
    assert yaml_loads("a: '&x *y'\nb: 1e-3\n") == {"a": "&x *y", "b": 0.001}  # quoted, they are text


@pytest.mark.parametrize(("text", "needles"), [
    ("train: {lr: '" + "x" * 100_000 + "'}\n", ["TrainConfig.lr", "expected a number"]),
    ("model: {kind: seq2seq, rnn: '" + "r" * 100_000 + "'}\n", ["Seq2SeqConfig.rnn", "expected one of"]),
    ("data: {source: multi30k, src_lang: '" + "l" * 10_000 + "', tgt_lang: '" + "l" * 10_000 + "'}\n",
     ["src_lang and tgt_lang"]),
    ("train: {betas: [" + ", ".join(["0.5"] * 10_000) + "]}\n", ["TrainConfig.betas"]),
    ("task: '" + "t" * 10_000 + "'\n", ["task"]),
    ("model: {kind: [seq2seq]}\n", ["model.kind"]),
    ("model: {kind: '" + "k" * 10_000 + "'}\n", ["model.kind"]),
    ("train: {1: 2, lr: 0.1, '" + "o" * 1000 + "': 3}\n", ["unknown option", "TrainConfig"]),
    ("1: 2\nfoo: 3\n", ["unknown section"]),
])
def test_values_are_quoted_short(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                 needles: list[str]) -> None:
    line = _train_error(_write(tmp_path, text), capsys)
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("deep.yaml", "train: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ("deep.json", '{"train": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
    ("big.yaml", "train: {seed: " + "7" * 5000 + "}\n", "digits"),
    ("big.json", '{"train": {"seed": ' + "7" * 5000 + "}}", "digits"),
    ("date.yaml", "train: {lr: 2026-13-45}\n", "month"),
    ("syntax.yaml", "train: [unclosed\n", "line 2 column 1"),
    ("syntax.json", '{"train": [1, }', "line 1 column 15"),
    ("binary.yaml", "train: {lr: 1}\n\udcff", "UTF-8"),
])
def test_unreadable_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str,
                                       needle: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    line = _train_error(path, capsys)
    assert str(path) in line and needle in line, line


@pytest.mark.parametrize(("text", "section"), [("model: 5\n", "model"), ("train: [1, 2]\n", "train"),
                                               ("data: text\n", "data"), ("decode: [1]\n", "decode")])
def test_a_section_of_the_wrong_type_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                              section: str) -> None:
    line = _train_error(_write(tmp_path, text), capsys)
    assert f"'{section}'" in line and "mapping" in line, line


def test_load_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = _write(tmp_path, "a: 1\nb: [unclosed\n  c: 2\n")
    with pytest.raises(ConfigError) as info:
        load_file(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value) and "line " in str(info.value)


def test_short_repr_is_bounded_in_length_and_time() -> None:
    from attnlab.core.errors import short_repr

    value: list = ["lol"] * 9
    for _ in range(40):  # 9**41 elements if it were expanded
        value = [value] * 9
    start = time.perf_counter()
    assert len(short_repr(value)) <= 80 and len(short_repr("x" * 10**6)) <= 80
    assert time.perf_counter() - start < 1
    assert short_repr(10**5000) == "a 16610-bit integer" and short_repr([10**5000]) == "[a 16610-bit integer]"
    assert short_repr("ab") == "'ab'" and short_repr(1.5) == "1.5"


@pytest.mark.parametrize(("text", "field"), [
    ("data: {num_train: 1000000000000}\n", "DataConfig.num_train"),
    ("data: {num_test: 1000000000000}\n", "DataConfig.num_test"),
    ("decode: {beam_size: 1000000000}\n", "DecodeConfig.beam_size"),
])
def test_sizes_beyond_any_run_are_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, text: str, field: str) -> None:
    """10**12 synthetic pairs or a beam of 10**9 would exhaust memory long after the run started."""
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was generated before the config was checked")
    monkeypatch.setattr("attnlab.data.prepare.make_pairs", no_data)
    line = _train_error(_write(tmp_path, text), capsys)
    assert field in line and "<=" in line, line
