"""Image captioning that shows where it looks: scenes of Fashion-MNIST items, captioned word by word.

Data: scenes made by :func:`attnlab.data.scenes.make_scenes` from Fashion-MNIST items (training and validation
scenes from disjoint parts of the training images, test scenes from the test images only). Every scene knows
each item's box, so the decoder's attention at an item's noun can be scored against it
(:mod:`attnlab.evaluate.grounding`). Model: :class:`attnlab.models.Captioner` (patch encoder + Transformer
decoder), decoded greedily or by beam search with :mod:`attnlab.decode`. Metrics: exact match, BLEU, grounding.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnlab.core.errors import CheckpointError, ConfigError, short_repr
from attnlab.core.run_config import RunConfig
from attnlab.core.types import Batch
from attnlab.data.images import ImageBatches, holdout_split, load_fashion_mnist, pixel_stats
from attnlab.data.scenes import Scene, make_scenes
from attnlab.data.vocab import BOS_ID, EOS_ID, Vocab
from attnlab.decode.beam import beam_search
from attnlab.decode.greedy import greedy_decode
from attnlab.evaluate.grounding import grounding_report
from attnlab.models.build import build_model
from attnlab.tasks.base import Task, TestReport, register_task
from attnlab.tasks.image import ImagePipeline
from attnlab.tasks.text_to_text import exact_match, load_weights, spread_sample
from attnlab.train.checkpoint import Checkpoint
from attnlab.train.loss import loss_evaluator, teacher_forced_loss
from attnlab.train.trainer import BatchSource, Evaluate, LossFn

log = logging.getLogger(__name__)

__all__ = ["Caption", "CaptionPipeline", "CaptioningTask", "ImageCaptioner", "SceneSet", "ground"]

ITEM_HOLDOUT = 5000
"""Fashion-MNIST training images kept for the validation scenes (never used in a training scene)."""

_DEFAULTS: dict[str, Any] = {
    "data": {"num_train": 20000, "num_valid": 500, "num_test": 1000},
    "model": {"kind": "captioner", "image_size": 64, "patch_size": 8, "in_channels": 1, "d_model": 128,
              "num_heads": 4, "ffn_dim": 256, "encoder_layers": 1, "decoder_layers": 2, "dropout": 0.1},
    "train": {"lr": 0.001, "weight_decay": 0.01, "warmup_steps": 200, "schedule": "cosine", "max_steps": 2000,
              "label_smoothing": 0.0, "batch_size": 64, "eval_every": 250, "save_every": 250,
              "best_metric": "val_exact_match", "best_mode": "max"},
    "decode": {"eval_sentences": 500},
}


# ------------------------------------------------------------------------------------------- data


@dataclass
class CaptionPipeline:
    """How pixels become model input and words become ids (saved in every checkpoint's ``extra.json``)."""

    image: ImagePipeline
    vocab: Vocab

    def to_dict(self) -> dict[str, Any]:
        return {**self.image.to_dict(), "vocab": self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, extra: Mapping[str, Any], where: str = "checkpoint") -> CaptionPipeline:
        if not isinstance(extra, Mapping) or not isinstance(extra.get("vocab"), Mapping):
            raise CheckpointError(f"{where}: holds no caption vocabulary; it is not a captioning checkpoint")
        return cls(ImagePipeline.from_dict(extra, where, labelled=False), Vocab.from_dict(dict(extra["vocab"])))

    @property
    def image_size(self) -> int:
        return self.image.image_size

    @property
    def channels(self) -> int:
        return self.image.channels


@dataclass
class SceneSet:
    """Scenes with their images ``(N, 1, S, S)`` uint8 and caption ids ``(N, T)`` (``y1 .. yn <eos>``, 0-padded)."""

    scenes: list[Scene]
    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.scenes)

    def example(self, index: int) -> tuple[str, np.ndarray, str, Callable[[Sequence[str]], list[Any]]]:
        """``(name, pixels (1, S, S), caption, boxes_of)``; ``boxes_of(words)`` gives each generated word the box
        of the item whose noun it is (the noun at that item's caption position), else ``None``."""
        scene = self.scenes[index]
        return f"test scene {index}", scene.image[None], scene.caption, functools.partial(_boxes, scene)


def _boxes(scene: Scene, words: Sequence[str]) -> list[Any]:
    out: list[Any] = [None] * len(words)
    for item, pos in zip(scene.items, scene.noun_positions, strict=True):
        if pos < len(words) and words[pos] == item.noun:
            out[pos] = item.box
    return out


def _scene_set(scenes: list[Scene], vocab: Vocab) -> SceneSet:
    if scenes:
        pixels = np.stack([s.image for s in scenes])  # (N, S, S)
        # each scene's image becomes a view of the stack, so the pixels are held once, not twice
        scenes = [dataclasses.replace(s, image=pixels[i]) for i, s in enumerate(scenes)]
        images = torch.from_numpy(pixels[:, None])
    else:
        images = torch.zeros((0, 1, 1, 1), dtype=torch.uint8)
    ids = [vocab.encode(s.caption.split(), add_eos=True) for s in scenes]
    width = max((len(i) for i in ids), default=1)
    targets = torch.tensor([i + [0] * (width - len(i)) for i in ids], dtype=torch.int64).reshape(len(ids), width)
    return SceneSet(scenes, images, targets)


@dataclass
class SceneData:
    """A captioning run's data: the three scene sets and the pipeline.

    ``train`` may be given as a function that makes it (``make_train``), called on first use: scoring or showing
    a checkpoint's test scenes (``attnlab evaluate``, ``predict``/``viz --test-index``) then never composes the
    training scenes (180,000 of them in the recipe), which only training and the vocabulary need.
    """

    valid: SceneSet
    test: SceneSet
    pipeline: CaptionPipeline
    stats: dict[str, Any] = field(default_factory=dict)
    make_train: Callable[[], SceneSet] | None = None
    _train: SceneSet | None = None

    @property
    def train(self) -> SceneSet:
        if self._train is None:
            if self.make_train is None:
                raise ValueError("SceneData: neither a training set nor a way to make it")
            self._train, self.make_train = self.make_train(), None
        return self._train

    def extra_state(self) -> dict[str, Any]:
        return self.pipeline.to_dict()


def _init_normalization(cfg: RunConfig, pool_size: int, valid_idx: np.ndarray) -> tuple[float, float] | None:
    """With ``train.init_from`` an image model, its pixel normalization (so that its copied stem sees the values
    it learned on), after checking that it never trained on the items of this run's validation scenes."""
    if cfg.train.init_from is None:
        return None
    from attnlab.pipeline.init import init_checkpoint  # the pipeline layer imports the tasks

    ckpt = init_checkpoint(cfg)
    info = ckpt.extra.get("image")
    if not isinstance(info, Mapping):
        return None
    image = ImagePipeline.from_dict(ckpt.extra, str(ckpt.path), labelled=False)
    data = ckpt.config.get("data") if isinstance(ckpt.config.get("data"), Mapping) else {}
    if data.get("source") == "fashion-mnist":
        held = ITEM_HOLDOUT if ckpt.config.get("task") == "captioning" else data.get("num_valid")
        seed = data.get("seed")
        if not (isinstance(held, int) and isinstance(seed, int) and 0 < held < pool_size and
                set(valid_idx.tolist()) <= set(holdout_split(pool_size, held, seed)[1].tolist())):
            raise ConfigError(f"train.init_from: {ckpt.path} trained on Fashion-MNIST items that this run's "
                              f"validation scenes are made of (its data.num_valid {short_repr(held)}, seed "
                              f"{short_repr(seed)}); train it with data.num_valid: {ITEM_HOLDOUT} and data.seed: "
                              f"{cfg.data.seed}")
    log.info("pixels normalized as %s was: mean %.4f, std %.4f", ckpt.path, image.mean, image.std)
    return image.mean, image.std


def prepare_scenes(cfg: RunConfig, pipeline: CaptionPipeline | None = None) -> SceneData:
    """Make the train/valid/test scenes of ``cfg.data`` and the caption vocabulary (unless ``pipeline`` given)."""
    data = cfg.data
    if data.source != "fashion-mnist":
        raise ConfigError(f"data.source: captioning composes scenes of Fashion-MNIST items; got {data.source!r}")
    if data.augment != "none":
        raise ConfigError("data.augment: captions name where items are ('left of', 'above'); shifting or mirroring "
                          "scenes would change that, so captioning takes augment: none")
    images, labels = load_fashion_mnist("train", data.data_dir)
    train_idx, valid_idx = holdout_split(len(images), ITEM_HOLDOUT, data.seed)
    test_images, test_labels = load_fashion_mnist("test", data.data_dir)
    kwargs = {"size": data.canvas_size, "max_items": data.max_items}
    num_train = data.num_train if data.max_train is None else min(data.num_train, data.max_train)

    def train_scenes() -> list[Scene]:  # the first m scenes of a seed are the same for any count (make_scenes)
        return make_scenes(images[train_idx], labels[train_idx], num_train, seed=data.seed * 3, **kwargs)

    valid = make_scenes(images[valid_idx], labels[valid_idx], data.num_valid, seed=data.seed * 3 + 1, **kwargs)
    test = make_scenes(test_images, test_labels, data.num_test, seed=data.seed * 3 + 2, **kwargs)
    if pipeline is not None and pipeline.image_size != data.canvas_size:
        raise CheckpointError(f"the checkpoint's scenes are {pipeline.image_size} pixels wide, the data's "
                              f"{data.canvas_size}")
    if pipeline is None:  # the vocabulary and the pixel statistics come from the training scenes: make them now
        train = train_scenes()
        vocab = Vocab.build(s.caption.split() for s in train)
        train_set: SceneSet | None = _scene_set(train, vocab)  # it holds the scenes' pixels once
        del train
        inherited = _init_normalization(cfg, len(images), valid_idx)
        image = ImagePipeline((), data.canvas_size, 1, *(inherited or pixel_stats(train_set.images)))
        pipeline = CaptionPipeline(image, vocab)
    else:
        vocab, train_set = pipeline.vocab, None
    sets = [_scene_set(s, vocab) for s in (valid, test)]
    del valid, test
    log.info("data: %d train / %d valid / %d test scenes of %dx%d, up to %d items; vocabulary %d words",
             num_train, len(sets[0]), len(sets[1]), data.canvas_size, data.canvas_size, data.max_items, len(vocab))
    stats = {"train_scenes": num_train, "valid_scenes": len(sets[0]), "test_scenes": len(sets[1]),
             "vocab": len(vocab)}
    if train_set is not None:
        return SceneData(*sets, pipeline, stats, _train=train_set)
    return SceneData(*sets, pipeline, stats, make_train=lambda: _scene_set(train_scenes(), vocab))


class CaptionBatches(ImageBatches):
    """Shuffled, resumable batches of scenes for teacher forcing (:class:`attnlab.core.types.Batch` with images as
    ``src`` and the number of patches as every ``src_lens``)."""

    def __init__(self, data: SceneSet, batch_size: int, *, pipeline: CaptionPipeline, num_patches: int,
                 seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(data, batch_size, mean=pipeline.image.mean, std=pipeline.image.std, seed=seed,
                         shuffle=shuffle)
        self.pipeline, self.num_patches = pipeline, num_patches

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        targets = self.data.targets[index]  # (B, T): y1 .. yn <eos> 0 ..
        tgt_lens = (targets != 0).sum(dim=1)  # (B,)
        width = int(tgt_lens.max()) if len(index) else 1
        tgt_out = targets[:, :width]
        tgt_in = torch.cat([torch.full((len(index), 1), BOS_ID), tgt_out[:, :-1]], dim=1)
        tgt_in = tgt_in.masked_fill(tgt_in == EOS_ID, 0)  # (B, T): <bos> y1 .. yn 0 ..
        images = self.pipeline.image.encode(self.data.images[index])
        return Batch(images, torch.full((len(index),), self.num_patches), tgt_in, tgt_out, tgt_lens, index)


# ------------------------------------------------------------------------------------------- predictor


@dataclass
class Caption:
    """One generated caption.

    Attributes:
        text: the words joined by spaces; ``words`` the words.
        score: the sum of the words' log-probabilities (``<eos>`` included).
        attention: ``(len(words), N)`` the decoder's attention over the N patches at each word (last decoder
            layer, averaged over heads); ``None`` unless requested.
    """

    text: str
    words: list[str]
    score: float
    attention: torch.Tensor | None = None


@dataclass
class ImageCaptioner:
    """A trained captioner ready to describe images (model in eval mode + its pipeline)."""

    model: nn.Module
    pipeline: CaptionPipeline
    config: RunConfig
    step: int
    path: Path

    @property
    def patch_size(self) -> int:
        return int(self.config.model.patch_size)

    @property
    def num_patches(self) -> int:
        return (self.config.model.image_size // self.patch_size) ** 2

    def caption(self, images: torch.Tensor | np.ndarray, *, beam_size: int | None = None,
                return_attention: bool = False, batch_size: int | None = None) -> list[Caption]:
        """Caption uint8 images ``(B, 1, S, S)``: greedily, or by beam search with ``beam_size > 1``."""
        images = torch.as_tensor(images)
        size = self.pipeline.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.pipeline.channels, size, size) or \
                images.dtype != torch.uint8:
            raise ConfigError(f"images must be uint8 (B, {self.pipeline.channels}, {size}, {size}), got "
                              f"{images.dtype} {tuple(images.shape)}")
        beam = beam_size or self.config.decode.beam_size
        max_len = min(self.config.decode.max_len or self.config.model.max_len - 1, self.config.model.max_len - 1)
        batch_size = batch_size or self.config.decode.batch_size
        out: list[Caption] = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = self.pipeline.image.encode(images[start:start + batch_size])
                src_lens = torch.full((len(chunk),), self.num_patches)
                if beam > 1:
                    hyps = [n[0] for n in beam_search(self.model, chunk, src_lens, beam_size=beam, max_len=max_len,
                                                      length_penalty=self.config.decode.length_penalty,
                                                      early_stopping=self.config.decode.early_stopping,
                                                      return_attention=return_attention)]
                else:
                    hyps = greedy_decode(self.model, chunk, src_lens, max_len=max_len,
                                         return_attention=return_attention)
                for hyp in hyps:
                    words = self.pipeline.vocab.decode(hyp.tokens)
                    attention = hyp.cross_attention[:len(words)].float() if return_attention else None
                    out.append(Caption(" ".join(words), words, hyp.score, attention))
        return out


def ground(captions: Sequence[Caption], scenes: Sequence[Scene], *, patch_size: int, image_size: int) -> Any:
    """The grounding report of ``captions`` (with attention) on their ``scenes``: for every item whose noun the
    caption holds at that item's position, the share of the word's attention inside the item's box."""
    records = []
    for cap, scene in zip(captions, scenes, strict=True):
        for item, pos in zip(scene.items, scene.noun_positions, strict=True):
            if pos < len(cap.words) and cap.words[pos] == item.noun:
                records.append((item.noun, cap.attention[pos], item.box))
    if not records:
        return None
    return grounding_report(records, patch_size=patch_size, image_size=image_size)


# ------------------------------------------------------------------------------------------- task


@register_task
class CaptioningTask(Task):
    """Image -> caption (see the module docstring)."""

    name = "captioning"

    def defaults(self, model_kind: str, *, synthetic: bool) -> dict[str, Any]:
        return {section: dict(values) for section, values in _DEFAULTS.items()}

    def prepare(self, cfg: RunConfig, saved: Mapping[str, Any] | None = None, *,
                where: str = "checkpoint") -> SceneData:
        pipeline = CaptionPipeline.from_dict(saved, where) if saved is not None else None
        return prepare_scenes(cfg, pipeline)

    def _check_model(self, cfg: RunConfig, pipeline: CaptionPipeline, longest: int = 0) -> None:
        model = cfg.model
        for name, value in (("image_size", pipeline.image_size), ("in_channels", pipeline.channels)):
            if getattr(model, name) != value:
                raise ConfigError(f"model.{name} is {getattr(model, name)} but the scenes need {value}; set "
                                  f"model.{name}: {value}")
        if longest + 1 > model.max_len:  # <bos> + words + <eos> positions
            raise ConfigError(f"model.max_len: {model.max_len} positions cannot hold the longest caption "
                              f"({longest} tokens with <eos>, after <bos>); raise it")

    def build_model(self, cfg: RunConfig, data: SceneData) -> nn.Module:
        self._check_model(cfg, data.pipeline, int(data.train.targets.shape[1]))
        return build_model(cfg.model, tgt_vocab_size=len(data.pipeline.vocab))

    def _batches(self, data: SceneSet, cfg: RunConfig, pipeline: CaptionPipeline, **kwargs: Any) -> CaptionBatches:
        patches = (cfg.model.image_size // cfg.model.patch_size) ** 2
        return CaptionBatches(data, cfg.train.batch_size, pipeline=pipeline, num_patches=patches, **kwargs)

    def train_batches(self, data: SceneData, cfg: RunConfig) -> BatchSource:
        return self._batches(data.train, cfg, data.pipeline, seed=cfg.train.seed)

    def loss(self, cfg: RunConfig) -> LossFn:
        return functools.partial(teacher_forced_loss, label_smoothing=cfg.train.label_smoothing)

    def evaluator(self, data: SceneData, cfg: RunConfig) -> Evaluate:
        """``val_loss``/``val_ppl`` on every validation scene, and ``val_exact_match`` from greedy captions of
        ``decode.eval_sentences`` of them (spread evenly)."""
        loss_eval = loss_evaluator(self._batches(data.valid, cfg, data.pipeline, shuffle=False))
        sample = spread_sample(range(len(data.valid)), cfg.decode.eval_sentences)
        images = data.valid.images[sample] if sample else None
        refs = [data.valid.scenes[i].caption for i in sample]

        def evaluate(model: nn.Module) -> dict[str, float]:
            metrics = dict(loss_eval(model))
            if images is not None:
                captioner = ImageCaptioner(model, data.pipeline, cfg, 0, Path("."))
                hyps = [c.text for c in captioner.caption(images, beam_size=1)]
                metrics["val_exact_match"] = exact_match(hyps, refs)
            model.train()
            return metrics

        return evaluate

    def load(self, ckpt: Checkpoint, cfg: RunConfig) -> ImageCaptioner:
        pipeline = CaptionPipeline.from_dict(ckpt.extra, str(ckpt.path))
        self._check_model(cfg, pipeline)
        model = load_weights(build_model(cfg.model, tgt_vocab_size=len(pipeline.vocab)), ckpt)
        return ImageCaptioner(model, pipeline, cfg, ckpt.step, ckpt.path)

    def score(self, predictor: ImageCaptioner, examples: SceneSet, cfg: RunConfig, *,
              beams: Sequence[int] = (1,), baseline_data: Any = None) -> list[TestReport]:
        from attnlab.evaluate.bleu import corpus_bleu

        refs = [s.caption for s in examples.scenes]
        reports = []
        for beam in beams:
            captions = predictor.caption(examples.images, beam_size=beam, return_attention=True)
            hyps = [c.text for c in captions]
            metrics: dict[str, Any] = {"exact_match": exact_match(hyps, refs), "scenes": len(refs),
                                       "bleu": corpus_bleu(hyps, refs).score}
            grounding = ground(captions, examples.scenes, patch_size=predictor.patch_size,
                               image_size=predictor.pipeline.image_size)
            total = sum(len(s.items) for s in examples.scenes)
            line = (f"test ({len(refs)} scenes, beam {beam}): exact match {100 * metrics['exact_match']:.2f}%, "
                    f"BLEU {metrics['bleu']:.2f}")
            if grounding is not None:
                metrics["grounding"] = grounding.to_dict()
                metrics["grounded_nouns"] = {"scored": grounding.count, "items": total}
                line += (f", grounding {grounding.score:.3f} (uniform attention {grounding.baseline:.3f}) over "
                         f"{grounding.count} of {total} nouns")
            reports.append(TestReport(f"beam{beam}", metrics, line, hyps))
        return reports
