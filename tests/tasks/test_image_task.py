"""The image tasks' pieces: pipelines saved in checkpoints, caption batches, grounding of captions, and the
constructed case whose answer is known (a ViT must look at the bright square that decides its label)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from attnlab.core.errors import CheckpointError
from attnlab.core.model_config import ViTConfig
from attnlab.data.images import make_squares
from attnlab.data.scenes import make_scenes
from attnlab.data.vocab import BOS_ID, EOS_ID, Vocab
from attnlab.models.vit import VisionTransformer
from attnlab.tasks.captioning import Caption, CaptionBatches, CaptionPipeline, _scene_set, ground
from attnlab.tasks.image import ImagePipeline
from attnlab.viz.image import vit_attention_maps


def test_image_pipeline_round_trips_and_refuses_damaged_state() -> None:
    pipe = ImagePipeline(("a", "b"), 28, 1, 0.25, 0.5)
    assert ImagePipeline.from_dict(pipe.to_dict()) == pipe
    for damage in ({"labels": "ab"}, {"image_size": -1}, {"std": 0.0}, {"mean": float("nan")}, {"channels": True}):
        bad = {"image": {**pipe.to_dict()["image"], **damage}}
        with pytest.raises(CheckpointError):
            ImagePipeline.from_dict(bad)
    with pytest.raises(CheckpointError, match="holds no image pipeline"):
        ImagePipeline.from_dict({"vocab": {}})
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert pipe.encode(images).tolist() == [[[[-0.5, 1.5]]]]


def _scenes(count: int = 12):
    rng = np.random.default_rng(0)
    items = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    return make_scenes(items, np.arange(30) % 10, count, seed=1)


def test_caption_batches_teacher_force_bos_words_eos() -> None:
    scenes = _scenes()
    vocab = Vocab.build(s.caption.split() for s in scenes)
    pipeline = CaptionPipeline(ImagePipeline((), 64, 1, 0.1, 0.2), vocab)
    batches = CaptionBatches(_scene_set(scenes, vocab), 5, pipeline=pipeline, num_patches=64, shuffle=False)
    batch = next(iter(batches))
    assert batch.src.shape == (5, 1, 64, 64) and batch.src_lens.tolist() == [64] * 5
    for row in range(5):
        words = scenes[row].caption.split()
        n = len(words)
        assert vocab.decode(batch.tgt_out[row, :n].tolist()) == words
        assert batch.tgt_out[row, n] == EOS_ID and int(batch.tgt_lens[row]) == n + 1
        assert batch.tgt_in[row, 0] == BOS_ID and torch.equal(batch.tgt_in[row, 1:n + 1], batch.tgt_out[row, :n])
        assert not (batch.tgt_in[row, n + 1:] != 0).any() and not (batch.tgt_out[row, n + 1:] != 0).any()


def test_a_scene_set_holds_each_scenes_pixels_once() -> None:
    scenes = _scenes()
    copies = [s.image.copy() for s in scenes]
    data = _scene_set(scenes, Vocab.build(s.caption.split() for s in scenes))
    stack = data.images.numpy()
    assert data.images.shape == (len(scenes), 1, 64, 64)
    for i, scene in enumerate(data.scenes):
        assert np.array_equal(scene.image, copies[i]) and np.shares_memory(scene.image, stack)
        assert scene.caption == scenes[i].caption and scene.items == scenes[i].items


def test_grounding_scores_only_nouns_at_their_item_positions() -> None:
    scene = _scenes(40)[0]
    words = scene.caption.split()
    grid = 8
    attention = torch.full((len(words), grid * grid), 1.0 / grid ** 2)
    top, left, bottom, right = scene.items[0].box
    first = torch.zeros(grid, grid)
    first[top // 8:(bottom - 1) // 8 + 1, left // 8:(right - 1) // 8 + 1] = 1.0
    attention[scene.noun_positions[0]] = (first / first.sum()).flatten()  # all mass on patches touching the box
    report = ground([Caption(scene.caption, words, 0.0, attention)], [scene], patch_size=8, image_size=64)
    assert report.count == len(scene.items)
    assert report.per_noun[scene.items[0].noun].score > 0.5
    wrong = [w if i != scene.noun_positions[0] else "zzz" for i, w in enumerate(words)]
    report = ground([Caption(" ".join(wrong), wrong, 0.0, attention)], [scene], patch_size=8, image_size=64)
    assert (report.count if report else 0) == len(scene.items) - 1  # a wrong noun is not scored


def _train_a_vit_on_squares(num_train: int, epochs: int) -> float:
    """A one-layer ViT trained on ``num_train`` images of the squares set; its accuracy on 200 held-out ones,
    after checking that its attention maps are well-formed distributions over the 49 patches."""
    torch.manual_seed(0)
    train_x, train_y, _ = make_squares(num_train, seed=0)
    test_x, test_y, _ = make_squares(200, seed=1)
    model = VisionTransformer(ViTConfig(image_size=28, patch_size=4, in_channels=1, num_classes=4, d_model=32,
                                        num_heads=2, ffn_dim=64, num_layers=1, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.from_numpy(train_x).float() / 255.0
    y = torch.from_numpy(train_y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]).logits, y[idx])
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(test_x).float() / 255.0, need_weights=True)
    assert out.logits.shape == (200, 4) and out.encoder_self.shape == (1, 200, 2, 50, 50)
    cls_maps, rollout = vit_attention_maps(out.encoder_self[:, 0], grid=(7, 7))
    assert cls_maps.shape == (1, 2, 7, 7) and np.isclose(rollout.sum(), 1.0)
    rows = out.encoder_self[0, :, :, 0]  # (B, H, 50): the class token's attention, one distribution per head
    assert torch.allclose(rows.sum(-1), torch.ones(()), atol=1e-5)
    return float((out.logits.argmax(-1) == torch.from_numpy(test_y)).float().mean())


@pytest.mark.slow
def test_a_vit_learns_the_squares_set_and_its_attention_is_measured_not_assumed() -> None:
    """A ViT learns which quadrant holds the bright square. Whether its class token *looks* at the square is an
    empirical question, not a given: on this set a one-layer ViT reaches 100% while its class-token attention peaks
    on the square in about half of the images (it can read the quadrant from where the square is *not*), so
    the test pins the learning and that the attention maps are well-formed distributions over the 49 patches.
    The constructed case whose attention answer is known is the captioner's (tests/models), where it holds."""
    assert _train_a_vit_on_squares(2000, epochs=3) >= 0.95


def test_a_vit_takes_a_few_steps_on_the_squares_set_and_its_attention_maps_are_well_formed() -> None:
    """The few-step smoke test of the slow test above: the same model and loop, 2 steps on 128 images."""
    assert 0.0 <= _train_a_vit_on_squares(128, epochs=1) <= 1.0


@pytest.mark.parametrize("which", ["vit", "captioner-transformer", "captioner-gru"])
def test_capture_records_the_image_models_own_attention(which: str) -> None:
    """``attnlab.viz.capture`` hooks the image models like any other: the weights it records are the ones the
    models return with ``need_weights``, while the forward pass itself runs the fused path."""
    from attnlab.core.model_config import CaptionerConfig
    from attnlab.models.captioner import Captioner
    from attnlab.viz.capture import capture

    torch.manual_seed(0)
    if which == "vit":
        model = VisionTransformer(ViTConfig(image_size=28, patch_size=7, in_channels=1, d_model=16, num_heads=2,
                                            ffn_dim=16, num_layers=2)).eval()
        images = torch.rand(2, 1, 28, 28)
        with torch.no_grad(), capture(model) as maps:
            model(images)
        expected = model(images, need_weights=True).encoder_self  # (L, B, H, 17, 17)
    else:
        decoder = which.split("-")[1]
        model = Captioner(CaptionerConfig(image_size=32, patch_size=8, d_model=16, num_heads=2, ffn_dim=16,
                                          encoder_layers=1, decoder_layers=2, decoder=decoder), 10).eval()
        images, lens, tgt = torch.rand(2, 1, 32, 32), torch.full((2,), 16), torch.tensor([[1, 5, 6], [1, 7, 4]])
        with torch.no_grad(), capture(model) as maps:
            model(images, lens, tgt)
        expected = model(images, lens, tgt, need_weights=True).attention.cross  # (Ld, B, H, Tt, N)
        maps = [m for m in maps if m.kind == "cross"]
    assert len(maps) == expected.shape[0]
    for record, weights in zip(maps, expected, strict=True):
        assert torch.allclose(record.weights, weights, atol=1e-6), record.name


def test_a_checkpoints_scenes_make_the_training_scenes_only_when_used() -> None:
    from pathlib import Path

    from attnlab.pipeline.config import build_run_config
    from attnlab.tasks.captioning import prepare_scenes

    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (shared / "fashion-mnist").is_dir():
        pytest.skip("../shared/data/fashion-mnist not present")
    cfg = build_run_config({"task": "captioning", "data": {
        "source": "fashion-mnist", "data_dir": str(shared), "num_train": 40, "num_valid": 8, "num_test": 8,
        "max_train": 30}})
    fresh = prepare_scenes(cfg)
    assert fresh._train is not None and len(fresh.train) == 30 and fresh.stats["train_scenes"] == 30
    again = prepare_scenes(cfg, fresh.pipeline)  # as evaluate, predict and viz read a checkpoint's test scenes
    assert again._train is None and again.stats == fresh.stats
    assert torch.equal(again.test.images, fresh.test.images) and torch.equal(again.valid.targets, fresh.valid.targets)
    assert torch.equal(again.train.images, fresh.train.images)  # made on first use (a resumed run), the same scenes
    assert torch.equal(again.train.targets, fresh.train.targets) and again._train is not None
