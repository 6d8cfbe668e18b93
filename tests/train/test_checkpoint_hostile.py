"""Hostile checkpoints: valid JSON of the wrong shape, paths outside the directory and impossible model configs
end in one bounded line with exit code 4 -- never a traceback, never a large allocation.

Each case tampers with one file of a small valid checkpoint, re-signs it (size and SHA-256 in ``meta.json``, as
an attacker can) and runs ``attnlab translate`` on it in-process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from attnlab.cli import main
from attnlab.core.errors import CheckpointError, ExitCode
from attnlab.core.model_config import MODEL_CONFIGS
from attnlab.core.run_config import RunConfig
from attnlab.data.prepare import TextPipeline
from attnlab.data.tokenize import CharTokenizer
from attnlab.data.vocab import Vocab
from attnlab.models.build import build_model
from attnlab.train.checkpoint import load_checkpoint, save_checkpoint

MAX_MESSAGE = 400  # an error line names the checkpoint (a tmp path) and the field; never the whole input
SEQ2SEQ = {"kind": "seq2seq", "hidden_size": 16, "embed_dim": 8, "num_layers": 1}


def _write_checkpoint(path: Path, model_section: dict[str, Any] | None = None) -> Path:
    cfg = RunConfig.from_dict({"data": {"source": "task", "task": "dates"}, "model": model_section or SEQ2SEQ})
    text = TextPipeline(CharTokenizer(), CharTokenizer(), Vocab(list("0123456789 -")), Vocab(list("0123456789-")))
    torch.manual_seed(0)
    model = build_model(cfg.model, len(text.src_vocab), len(text.tgt_vocab))
    return save_checkpoint(path, model=model, step=1, config=cfg.to_dict(), extra=text.to_dict())


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return _write_checkpoint(tmp_path / "ck")


def _resign(path: Path) -> None:
    """Make ``meta.json`` match the files again (sizes and SHA-256), as someone tampering would."""
    meta = json.loads((path / "meta.json").read_text())
    for name in list(meta["files"]):
        data = (path / name).read_bytes()
        meta["files"][name] = len(data)
        meta["sha256"][name] = hashlib.sha256(data).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


def _tamper(path: Path, name: str, change: Callable[[Any], Any]) -> None:
    obj = json.loads((path / name).read_text())
    (path / name).write_text(json.dumps(change(obj)))
    if name != "meta.json":
        _resign(path)


def _set(*keys: str, value: Any) -> Callable[[Any], Any]:
    def change(obj: Any) -> Any:
        inner = obj
        for key in keys[:-1]:
            inner = inner[key]
        if value is _DELETE:
            del inner[keys[-1]]
        else:
            inner[keys[-1]] = value
        return obj
    return change


_DELETE = object()


def _translate_error(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``attnlab translate`` on ``path``; assert exit 4 and one bounded line on stderr; return that line."""
    source = tmp_path / "in.txt"
    source.write_text("4 July 1976\n", encoding="utf-8")
    capsys.readouterr()
    rc = main(["translate", "--checkpoint", str(path), "--input", str(source)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == ExitCode.CHECKPOINT, captured.err[:2000]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err[:2000]
    assert len(lines[0]) <= MAX_MESSAGE, lines[0][:2000]
    assert str(path) in lines[0]
    return lines[0]


def test_the_untampered_checkpoint_translates(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_text("4 July 1976\n", encoding="utf-8")
    assert main(["translate", "--checkpoint", str(ckpt), "--input", str(source)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


WRONG_SHAPES = [
    # (file, change, words the message must hold)
    ("meta.json", _set("sha256", value=["x"]), ["meta.json", "sha256"]),
    ("meta.json", _set("sha256", "model.safetensors", value=5), ["meta.json", "sha256", "model.safetensors"]),
    ("meta.json", _set("files", "model.safetensors", value="24716"), ["meta.json", "files", "model.safetensors"]),
    ("meta.json", _set("files", value=["model.safetensors"]), ["meta.json", "files"]),
    ("meta.json", _set("step", value="one"), ["meta.json", "step"]),
    ("meta.json", _set("format", value="f" * 100_000), ["meta.json", "format"]),
    ("meta.json", _set("version", value=[1]), ["meta.json", "version"]),
    ("state.json", _set("model_aliases", value=[1]), ["state.json", "model_aliases"]),
    ("state.json", _set("model_aliases", value={"a": 7}), ["state.json", "model_aliases"]),
    ("state.json", _set("optimizer", value=[1]), ["state.json", "optimizer"]),
    ("state.json", _set("optimizer", value={"param_groups": "x", "scalar_state": {}, "state_ids": []}),
     ["state.json", "param_groups"]),
    ("state.json", _set("optimizer", value={"param_groups": [], "scalar_state": {}, "state_ids": ["a"]}),
     ["state.json", "state_ids"]),
    ("state.json", _set("optimizer", value={"param_groups": [], "scalar_state": {"x": {}}, "state_ids": []}),
     ["state.json", "scalar_state"]),
    ("state.json", _set("scheduler", value=[1]), ["state.json", "scheduler"]),
    ("state.json", _set("rng", value="x"), ["state.json", "rng"]),
    ("state.json", _set("step", value=-3), ["state.json", "step"]),
    ("config.json", lambda obj: [obj], ["config.json"]),
    ("config.json", _set("model", value=[1]), ["config.json", "model"]),
    ("config.json", _set("model", "kind", value=["seq2seq"]), ["config.json", "kind"]),
    # an unknown kind is left to the run config (a test's toy model has one): "its config ... model.kind"
    ("config.json", _set("model", "kind", value="k" * 100_000), ["config", "model.kind"]),
    ("config.json", _set("model", "rnn", value="r" * 100_000), ["config.json", "rnn"]),
    ("config.json", _set("model", "hidden_size", value="big"), ["config.json", "hidden_size"]),
    ("extra.json", lambda obj: [obj], ["extra.json"]),
    ("extra.json", _set("src_tokenizer", value=[1]), ["extra.json", "src_tokenizer"]),
    # the message lists the kinds the tokenizer registry knows ("sentencepiece" for bpe/unigram)
    ("extra.json", _set("src_tokenizer", "kind", value=[1]), ["extra.json", "src_tokenizer.kind", "sentencepiece"]),
    ("extra.json", _set("src_tokenizer", "kind", value="t" * 100_000),
     ["extra.json", "src_tokenizer.kind", "sentencepiece"]),
    ("extra.json", _set("src_vocab", value=["<pad>"]), ["extra.json", "src_vocab"]),
    ("extra.json", _set("src_vocab", "tokens", value=["<pad>", "<bos>", "<eos>", "<unk>", 5]),
     ["extra.json", "src_vocab", "tokens"]),
    ("extra.json", _set("tgt_vocab", "tokens", value="0123"), ["extra.json", "tgt_vocab", "tokens"]),
]


@pytest.mark.parametrize(("name", "change", "needles"), WRONG_SHAPES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(WRONG_SHAPES)])
def test_json_of_the_wrong_shape_is_one_line_exit_4(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    name: str, change: Callable[[Any], Any],
                                                    needles: list[str]) -> None:
    _tamper(ckpt, name, change)
    line = _translate_error(ckpt, tmp_path, capsys)
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"step": ' + "7" * 5000 + "}"])
def test_json_too_deep_or_with_a_huge_number_is_one_line(ckpt: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], text: str) -> None:
    (ckpt / "state.json").write_text(text)
    _resign(ckpt)
    line = _translate_error(ckpt, tmp_path, capsys)
    assert "state.json" in line


# ------------------------------------------------------------------------------- entries of meta.json

def _spy_on_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every path whose bytes are read or whose metadata is looked at through pathlib."""
    seen: list[str] = []
    for method in ("read_bytes", "read_text", "stat", "open"):
        original = getattr(Path, method)

        def spy(self: Path, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append(str(self))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(Path, method, spy)
    return seen


@pytest.mark.parametrize("how", ["absolute", "dotdot", "dotdot-inside", "symlink", "symlink-dir"])
def test_meta_lists_only_files_inside_the_checkpoint(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours" * 100)
    entry = {"absolute": str(outside), "dotdot": "../secret.bin", "dotdot-inside": "sub/../../secret.bin",
             "symlink": "link.bin", "symlink-dir": "linkdir/secret.bin"}[how]
    if how == "symlink":
        (ckpt / "link.bin").symlink_to(outside)
    if how == "symlink-dir":
        (ckpt / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["files"][entry] = outside.stat().st_size
    meta["sha256"][entry] = hashlib.sha256(outside.read_bytes()).hexdigest()
    (ckpt / "meta.json").write_text(json.dumps(meta))
    seen = _spy_on_reads(monkeypatch)
    line = _translate_error(ckpt, tmp_path, capsys)
    assert entry[:30] in line and "meta.json" in line, line
    assert not [p for p in seen if "secret.bin" in p], seen  # refused before it was opened, hashed or stat'ed
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="outside"):
        load_checkpoint(ckpt)


def test_a_file_of_the_checkpoint_may_not_be_a_symlink_out(ckpt: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Replacing config.json itself with a link to a file elsewhere is refused, even when the hashes match."""
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((ckpt / "config.json").read_bytes())
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").symlink_to(outside)
    line = _translate_error(ckpt, tmp_path, capsys)
    assert "config.json" in line and "outside" in line


# --------------------------------------------------------------------------------- impossible models

IMPOSSIBLE = [
    (SEQ2SEQ, ("model", "hidden_size"), 10**9),
    (SEQ2SEQ, ("model", "num_layers"), 10**6),
    (SEQ2SEQ, ("model", "embed_dim"), 10**12),
    ({"kind": "transformer", "d_model": 16, "num_heads": 2, "ffn_dim": 32, "encoder_layers": 1,
      "decoder_layers": 1}, ("model", "d_model"), 10**9),
    ({"kind": "transformer", "d_model": 16, "num_heads": 2, "ffn_dim": 32, "encoder_layers": 1,
      "decoder_layers": 1}, ("model", "max_len"), 10**12),
    ({"kind": "transformer", "d_model": 16, "num_heads": 2, "ffn_dim": 32, "encoder_layers": 1,
      "decoder_layers": 1}, ("model", "decoder_layers"), 10**6),
]


@pytest.mark.parametrize(("section", "keys", "value"), IMPOSSIBLE,
                         ids=[f"{s['kind']}-{k[-1]}" for s, k, _ in IMPOSSIBLE])
def test_an_impossible_model_config_is_refused_before_building(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch, section: dict,
                                                               keys: tuple[str, ...], value: int) -> None:
    path = _write_checkpoint(tmp_path / "ck", section)
    _tamper(path, "config.json", _set(*keys, value=value))

    def no_building(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built from an impossible config")
    for cls in ("Seq2Seq", "Transformer"):
        monkeypatch.setattr(f"attnlab.models.build.{cls}.__init__", no_building)
    line = _translate_error(path, tmp_path, capsys)
    assert "config.json" in line and f"{keys[-1]}=" in line, line


def test_a_label_vocabulary_of_10_12_classes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``num_classes`` is the output vocabulary of a classifier: 10**12 of them cannot be built."""
    path = _write_checkpoint(tmp_path / "ck")
    _tamper(path, "config.json", _set("model", value={"kind": "rnn_classifier", "num_classes": 10**12}))
    line = _translate_error(path, tmp_path, capsys)
    assert "config.json" in line and "num_classes=" in line, line


def test_a_config_larger_than_its_weights_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under the ceiling but far beyond what model.safetensors holds (read from its header, not its data)."""
    path = _write_checkpoint(tmp_path / "ck")
    _tamper(path, "config.json", _set("model", "hidden_size", value=1024))
    line = _translate_error(path, tmp_path, capsys)
    assert "config.json" in line and "hidden_size=1024" in line and "model.safetensors" in line, line


def test_a_config_without_kind_is_checked_as_its_task_default(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_checkpoint(tmp_path / "ck")
    _tamper(path, "config.json", _set("model", value={"hidden_size": 10**9}))
    line = _translate_error(path, tmp_path, capsys)
    assert "config.json" in line and "hidden_size=" in line, line


def _stored_values(model: torch.nn.Module) -> int:
    """What ``save_checkpoint`` writes: every state tensor once (tied ones share storage)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    total = 0
    for value in model.state_dict().values():
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if key not in seen:
            seen.add(key)
            total += value.numel()
    return total


VARIANTS = {
    "seq2seq": [{}, {"rnn": "lstm", "bidirectional": True, "num_layers": 3}, {"rnn": "rnn", "attention": "dot"}],
    "transformer": [{}, {"share_embeddings": True, "tie_output": False, "positional": "learned"},
                    {"tie_output": False, "norm_first": False}],
    "rnn_classifier": [{}, {"rnn": "gru", "bidirectional": False, "num_layers": 2}],
    "transformer_classifier": [{}, {"positional": "sinusoidal"}],
    "vit": [{}, {"stem": "conv", "patch_size": 8}],
    "captioner": [{}, {"decoder": "gru", "tie_embeddings": False}, {"encoder_layers": 0}],
}


@pytest.mark.parametrize("kind", list(MODEL_CONFIGS))
def test_the_estimate_is_a_close_lower_bound_of_what_is_stored(kind: str) -> None:
    """The checkpoint check compares the estimate with the safetensors header, so it must never exceed what a
    real model stores; and it must be close enough (here: within 25%) to be a useful ceiling."""
    from attnlab.models.build import estimate_parameters

    for changes in VARIANTS[kind]:
        config = MODEL_CONFIGS[kind](**changes)
        model = build_model(config, 50, 50)
        stored = _stored_values(model)
        estimate = estimate_parameters(config, 50, 50, stored_only=True)
        assert 0.75 * stored <= estimate <= stored, (kind, changes, estimate, stored)
        assert estimate_parameters(config, 50, 50) >= estimate


def test_build_model_refuses_a_model_over_the_ceiling_before_allocating() -> None:
    from attnlab.core.errors import ConfigError
    from attnlab.core.model_config import TransformerConfig
    from attnlab.models.build import MAX_PARAMETERS

    with pytest.raises(ConfigError, match=r"model\.d_model=") as info:
        build_model(TransformerConfig(d_model=2**20, num_heads=1), 100, 100)
    assert str(MAX_PARAMETERS) in str(info.value).replace(",", "") and len(str(info.value)) < 300
    with pytest.raises(ConfigError, match="tgt_vocab_size=") as info:
        build_model(TransformerConfig(d_model=1024, num_heads=1), 100, 10**9)
