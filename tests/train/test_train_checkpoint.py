"""Checkpoints: exact round trip without pickle, RNG states, atomic replacement, crash safety, clear errors."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import FakeBatches, make_model, tiny_config

from attnlab.core.errors import CheckpointError, ExitCode
from attnlab.train import checkpoint as ckpt_mod
from attnlab.train.checkpoint import capture_rng, load_checkpoint, replace_config, restore_rng, save_checkpoint
from attnlab.train.loss import masked_cross_entropy
from attnlab.train.trainer import build_optimizer


def _trained(seed: int = 0, steps: int = 3, **model_kwargs: object):
    model = make_model(seed, **model_kwargs)
    opt = build_optimizer(model, tiny_config())
    for batch in FakeBatches().all_batches()[:steps]:
        _step(model, opt, batch)
    return model, opt


def _step(model, opt, batch) -> None:
    opt.zero_grad()
    loss_sum, n = masked_cross_entropy(model(batch.src, batch.src_lens, batch.tgt_in).logits, batch.tgt_out)
    (loss_sum / n).backward()
    opt.step()


def _save(path: Path, model, opt, step: int = 3) -> Path:
    return save_checkpoint(path, model=model, optimizer=opt, scheduler_state={"step": step}, step=step,
                           data_state={"epoch": 1, "position": 2, "seed": 0}, config={"train": {"lr": 0.1}},
                           extra={"vocab": {"tokens": ["<pad>", "a"]}}, trainer_state={"best_value": 1.5})


def test_round_trip_restores_model_and_optimizer_exactly(tmp_path: Path) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ck", model, opt)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "extra.json", "meta.json", "model.safetensors",
                                                      "optimizer.safetensors", "state.json"]
    for p in path.glob("*.json"):
        json.loads(p.read_text())  # plain JSON, no pickle
    fresh_model, _ = _trained(seed=1, steps=1)
    fresh_opt = build_optimizer(fresh_model, tiny_config())
    ck = load_checkpoint(path, fresh_model, fresh_opt)
    assert ck.step == 3 and ck.scheduler_state == {"step": 3} and ck.trainer_state == {"best_value": 1.5}
    assert ck.data_state == {"epoch": 1, "position": 2, "seed": 0}
    assert ck.extra == {"vocab": {"tokens": ["<pad>", "a"]}} and ck.config == {"train": {"lr": 0.1}}
    for (name, a), b in zip(model.state_dict().items(), fresh_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert fresh_opt.param_groups[0]["betas"] == opt.param_groups[0]["betas"] == (0.9, 0.98)
    for pid, state in opt.state_dict()["state"].items():
        restored = fresh_opt.state_dict()["state"][pid]
        assert set(state) == set(restored)
        assert all(torch.equal(state[k], restored[k]) for k in state)
    batch = FakeBatches().all_batches()[5]
    model.eval()  # no dropout: both updates see the same forward pass
    fresh_model.eval()
    _step(model, opt, batch)
    _step(fresh_model, fresh_opt, batch)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True))


def test_rng_states_round_trip_through_json() -> None:
    state = json.loads(json.dumps(capture_rng()))
    first = (torch.rand(3), random.random(), np.random.rand(2))
    restore_rng(state)
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])
    with pytest.raises(CheckpointError, match="invalid RNG state"):
        restore_rng({"torch": state["torch"]})


def test_tied_weights_are_stored_once_and_restored(tmp_path: Path) -> None:
    model, opt = _trained(tie=True)
    path = _save(tmp_path / "ck", model, opt)
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as fh:
        stored = set(fh.keys())
    assert "tgt_embed.weight" in stored and "out.weight" not in stored
    fresh = make_model(5, tie=True)
    load_checkpoint(path, fresh)
    assert torch.equal(fresh.out.weight, model.out.weight) and fresh.out.weight is fresh.tgt_embed.weight


def test_replacing_a_checkpoint_leaves_no_leftovers(tmp_path: Path) -> None:
    model, opt = _trained()
    _save(tmp_path / "last", model, opt, step=1)
    _save(tmp_path / "last", model, opt, step=2)
    assert load_checkpoint(tmp_path / "last").step == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, opt = _trained()
    _save(tmp_path / "last", model, opt, step=1)
    real = ckpt_mod._write_bytes

    def failing(path: Path, data: bytes) -> None:
        if path.name == "meta.json":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt_mod, "_write_bytes", failing)
    with pytest.raises(CheckpointError, match="No space left"):
        _save(tmp_path / "last", model, opt, step=2)
    assert load_checkpoint(tmp_path / "last").step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def _crash_child(stage: str, path: Path, model, opt) -> None:
    """In a forked child: save step 2 over step 1 and die (``os._exit``) at ``stage``, running no cleanup."""
    if stage == "writing":
        real = ckpt_mod._write_bytes

        def write(p: Path, data: bytes) -> None:
            if p.name == "meta.json":
                os._exit(9)
            real(p, data)

        ckpt_mod._write_bytes = write
    elif stage == "renamed_aside":
        calls = []

        def rename(src: Path, dst: Path) -> None:
            calls.append(src)
            if len(calls) == 2:
                os._exit(9)
            os.rename(src, dst)

        ckpt_mod._rename = rename
    else:  # "renamed_in": both renames done, the old directory not yet removed
        ckpt_mod.shutil.rmtree = lambda *a, **k: os._exit(9)
    _save(path, model, opt, step=2)
    os._exit(0)


@pytest.mark.parametrize(("stage", "expected_step"), [("writing", 1), ("renamed_aside", 2), ("renamed_in", 2)])
def test_hard_crash_during_save_leaves_a_loadable_checkpoint(tmp_path: Path, stage: str, expected_step: int) -> None:
    model, opt = _trained()
    target = tmp_path / "last"
    _save(target, model, opt, step=1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            _crash_child(stage, target, model, opt)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9  # the child died at the chosen stage
    assert len(list(tmp_path.iterdir())) >= 2  # leftovers of the crashed save exist
    fresh = make_model(3)
    assert load_checkpoint(target, fresh).step == expected_step
    assert torch.equal(fresh.out.weight, model.out.weight)
    _save(target, model, opt, step=3)  # the next save succeeds and cleans up
    assert load_checkpoint(target).step == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def _corrupt(path: Path, how: str) -> None:
    if how == "missing_dir":
        for p in path.iterdir():
            p.unlink()
        path.rmdir()
    elif how == "missing_meta":
        (path / "meta.json").unlink()
    elif how == "bad_meta_json":
        (path / "meta.json").write_text('{"format": "attnlab-checkpoint", ')
    elif how == "foreign_format":
        (path / "meta.json").write_text(json.dumps({"format": "something-else", "version": 1}))
    elif how == "newer_version":
        meta = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    elif how == "truncated_model":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "broken_header":
        data = bytearray((path / "model.safetensors").read_bytes())
        data[8:16] = b"\x00garbage"
        (path / "model.safetensors").write_bytes(bytes(data))
        _rehash(path, "model.safetensors")  # a consistent but unparsable file reaches the header check
    elif how == "missing_optimizer":
        (path / "optimizer.safetensors").unlink()
    elif how == "bad_state_json":
        size = (path / "state.json").stat().st_size
        (path / "state.json").write_text("{" + " " * (size - 1))
        _rehash(path, "state.json")


def _rehash(path: Path, name: str) -> None:
    import hashlib

    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("how", "needle"), [
    ("missing_dir", "does not exist"),
    ("missing_meta", "missing meta.json"),
    ("bad_meta_json", "meta.json is not valid JSON"),
    ("foreign_format", "not an attnlab checkpoint"),
    ("newer_version", "version 99 is not supported"),
    ("truncated_model", "model.safetensors has"),
    ("broken_header", "model.safetensors is not a valid safetensors file"),
    ("missing_optimizer", "missing optimizer.safetensors"),
    ("bad_state_json", "state.json is not valid JSON"),
])
def test_broken_checkpoints_give_one_line_errors(tmp_path: Path, how: str, needle: str) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ck", model, opt)
    _corrupt(path, how)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model, opt)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert info.value.exit_code == ExitCode.CHECKPOINT
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # nothing modified


def test_replace_config_changes_config_json_alone(tmp_path: Path) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ck", model, opt)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    assert replace_config(path, lambda config: config.update(decode={"length_penalty": 1.4})) == path
    after = load_checkpoint(path, make_model(3), build_optimizer(make_model(3), tiny_config()))
    assert after.config == {"train": {"lr": 0.1}, "decode": {"length_penalty": 1.4}} and after.step == 3
    changed = [name for name in before if (path / name).read_bytes() != before[name]]
    assert sorted(changed) == ["config.json", "meta.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


@pytest.mark.parametrize("how", ["truncated_model", "bad_state_json"])
def test_replace_config_refuses_a_broken_checkpoint_and_leaves_it(tmp_path: Path, how: str) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ck", model, opt)
    _corrupt(path, how)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(CheckpointError) as info:
        replace_config(path, lambda config: config.update(decode={"length_penalty": 1.4}))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ck", model, opt)
    other = make_model(0, dim=8)
    with pytest.raises(CheckpointError, match=r"src_embed.weight has shape \(12, 16\) in the checkpoint but \(12, 8\)"):
        load_checkpoint(path, other)
    with pytest.raises(CheckpointError, match="does not match the model.*unexpected"):
        load_checkpoint(path, torch.nn.Linear(2, 2))


def test_inference_only_checkpoint_cannot_resume(tmp_path: Path) -> None:
    model, opt = _trained()
    save_checkpoint(tmp_path / "ck", model=model, step=4)
    assert load_checkpoint(tmp_path / "ck", make_model(1)).optimizer_state is None
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "ck", model, opt)


def test_same_size_corruption_of_the_weights_is_detected(tmp_path: Path) -> None:
    model = make_model()
    path = save_checkpoint(tmp_path / "ck", model=model, step=3)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor bytes; the size stays the same
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(path, make_model())
