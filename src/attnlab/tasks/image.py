"""Image classification with a Vision Transformer: which patches the class token looks at is visible.

Data: Fashion-MNIST (:func:`attnlab.data.images.load_fashion_mnist`; a seeded validation split is held out of
the training images, and the test split is the published one) or the constructed ``squares`` set, where one
bright square decides the label (:func:`attnlab.data.images.make_squares`). Model:
:class:`attnlab.models.VisionTransformer`. Metrics: accuracy and macro-F1.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.core.run_config import DataConfig, RunConfig
from attnlab.data.images import (
    FASHION_MNIST_CLASSES,
    SQUARES_LABELS,
    ImageBatch,
    ImageBatches,
    ImageSet,
    holdout_split,
    load_fashion_mnist,
    make_squares,
    normalize,
    pixel_stats,
)
from attnlab.evaluate.classification import classification_report
from attnlab.models.build import build_model
from attnlab.tasks.base import Task, TestReport, register_task
from attnlab.tasks.text_to_text import load_weights
from attnlab.train.checkpoint import Checkpoint
from attnlab.train.trainer import BatchSource, Evaluate, LossFn

log = logging.getLogger(__name__)

__all__ = ["ImageClassificationTask", "ImageClassifier", "ImageData", "ImagePipeline", "ImagePrediction",
           "image_classification_loss", "load_image_sets"]

_DEFAULTS: dict[str, Any] = {
    "model": {"kind": "vit", "image_size": 28, "patch_size": 4, "in_channels": 1, "d_model": 64, "num_heads": 4,
              "ffn_dim": 128, "num_layers": 4, "dropout": 0.0},
    "train": {"lr": 0.002, "weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8, "warmup_steps": 100,
              "schedule": "cosine", "max_steps": 1000, "label_smoothing": 0.1, "batch_size": 128, "eval_every": 200,
              "save_every": 200, "best_metric": "val_accuracy", "best_mode": "max"},
}
_SYNTHETIC = {"data": {"num_train": 4000, "num_valid": 500, "num_test": 500},
              "model": {"num_classes": len(SQUARES_LABELS), "num_layers": 2},
              "train": {"max_steps": 300, "eval_every": 100, "save_every": 100}}


# ------------------------------------------------------------------------------------------- data


@dataclass
class ImagePipeline:
    """How pixels become model input and class ids become names (saved in every checkpoint's ``extra.json``).

    Attributes:
        labels: class names in id order (empty for a captioner).
        image_size: side of the square images the model reads.
        channels: 1 (grayscale) or 3 (RGB).
        mean, std: the normalization ``(x / 255 - mean) / std``, measured on the training images.
    """

    labels: tuple[str, ...]
    image_size: int
    channels: int
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        return {"image": {"labels": list(self.labels), "image_size": self.image_size, "channels": self.channels,
                          "mean": self.mean, "std": self.std}}

    @classmethod
    def from_dict(cls, extra: Mapping[str, Any], where: str = "checkpoint", *, labelled: bool = True) -> ImagePipeline:
        """Read :meth:`to_dict` output back; ``labelled`` requires class names (a captioner has none)."""
        info = extra.get("image") if isinstance(extra, Mapping) else None
        if not isinstance(info, Mapping):
            raise CheckpointError(f"{where}: holds no image pipeline; it is not an image checkpoint written by "
                                  f"`attnlab train`")
        labels = info.get("labels")
        if not (isinstance(labels, list) and (len(labels) >= 2 or not labelled)
                and all(isinstance(x, str) for x in labels)):
            raise CheckpointError(f"{where}: image.labels must be a list of at least two class names")
        ints = {k: info.get(k) for k in ("image_size", "channels")}
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in ints.values()):
            raise CheckpointError(f"{where}: image.image_size and image.channels must be positive integers")
        floats = {k: info.get(k) for k in ("mean", "std")}
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in floats.values()) or floats["std"] <= 0:
            raise CheckpointError(f"{where}: image.mean and image.std must be finite numbers, std > 0")
        return cls(tuple(labels), ints["image_size"], ints["channels"], float(floats["mean"]), float(floats["std"]))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> the model's normalized float input."""
        return normalize(images, self.mean, self.std)


@dataclass
class ImageData:
    """An image run's data: the three splits and the pipeline."""

    train: ImageSet
    valid: ImageSet
    test: ImageSet
    pipeline: ImagePipeline
    stats: dict[str, Any] = field(default_factory=dict)

    def extra_state(self) -> dict[str, Any]:
        return self.pipeline.to_dict()


def load_image_sets(cfg: DataConfig) -> tuple[ImageSet, ImageSet, ImageSet, tuple[str, ...]]:
    """The train/valid/test images named by ``cfg`` and the class names."""
    if cfg.source == "task":
        if cfg.task != "squares":
            raise ConfigError(f"data.task: {cfg.task!r} is not an image dataset; image classification reads "
                              f"squares or a corpus (fashion-mnist)")
        sets = []
        for offset, count in enumerate((cfg.num_train, cfg.num_valid, cfg.num_test)):
            images, labels, boxes = make_squares(count, cfg.seed * 3 + offset)
            sets.append(ImageSet(torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(boxes)))
        train, valid, test = sets
        names = SQUARES_LABELS
    elif cfg.source == "fashion-mnist":
        images, labels = load_fashion_mnist("train", cfg.data_dir)
        pool = ImageSet(torch.from_numpy(images[:, None]), torch.from_numpy(labels))
        train_idx, valid_idx = holdout_split(len(pool), cfg.num_valid, cfg.seed)
        train, valid = pool.select(train_idx), pool.select(valid_idx)
        test_images, test_labels = load_fashion_mnist("test", cfg.data_dir)
        test = ImageSet(torch.from_numpy(test_images[:, None]), torch.from_numpy(test_labels))
        names = FASHION_MNIST_CLASSES
    else:
        raise ConfigError(f"data.source: {cfg.source!r} holds no images; image classification reads "
                          f"fashion-mnist or the synthetic squares")
    if cfg.max_train is not None:
        train = train.select(np.arange(min(cfg.max_train, len(train))))
    return train, valid, test, names


def prepare_images(cfg: DataConfig, pipeline: ImagePipeline | None = None) -> ImageData:
    """Read the splits and measure the training images' mean and standard deviation (unless ``pipeline`` given)."""
    train, valid, test, names = load_image_sets(cfg)
    if len(train) == 0:
        raise ConfigError("the training split is empty; check the data options")
    _, channels, height, width = train.images.shape
    if pipeline is None:
        pipeline = ImagePipeline(tuple(names), int(height), int(channels), *pixel_stats(train.images))
    elif tuple(names) != pipeline.labels or (pipeline.image_size, pipeline.channels) != (height, channels):
        raise CheckpointError(f"the checkpoint's images ({pipeline.image_size}x{pipeline.image_size}, "
                              f"{pipeline.channels} channel(s), {len(pipeline.labels)} classes) differ from the data's "
                              f"({height}x{width}, {channels} channel(s), {len(names)} classes)")
    counts = torch.bincount(train.labels, minlength=len(names)).tolist()
    log.info("data: %d train / %d valid / %d test images of %dx%d; %s", len(train), len(valid), len(test), height,
             width, ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True)))
    stats = {"train_images": len(train), "valid_images": len(valid), "test_images": len(test),
             "labels": dict(zip(names, counts, strict=True))}
    return ImageData(train, valid, test, pipeline, stats)


# ------------------------------------------------------------------------------------------- predictor


@dataclass
class ImagePrediction:
    """The prediction for one image.

    Attributes:
        label: the predicted class; ``probability`` its softmax probability.
        probabilities: per class name, in the pipeline's order.
        attention: ``(L, H, N + 1, N + 1)`` self-attention of every layer and head (token 0 is the class token,
            then the patches in row-major order); ``None`` unless requested.
    """

    label: str
    probability: float
    probabilities: dict[str, float]
    attention: torch.Tensor | None = None


@dataclass
class ImageClassifier:
    """A trained ViT ready to label images (model in eval mode + its image pipeline)."""

    model: nn.Module
    pipeline: ImagePipeline
    config: RunConfig
    step: int
    path: Path

    @property
    def patch_size(self) -> int:
        return int(self.config.model.patch_size)

    def predict(self, images: torch.Tensor | np.ndarray, *, return_attention: bool = False,
                batch_size: int | None = None) -> list[ImagePrediction]:
        """Label uint8 images ``(B, C, S, S)`` (``S`` and ``C`` as the model was trained on)."""
        images = torch.as_tensor(images)
        expected = (self.pipeline.channels, self.pipeline.image_size, self.pipeline.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected or images.dtype != torch.uint8:
            raise ConfigError(f"images must be uint8 (B, {', '.join(map(str, expected))}), got {images.dtype} "
                              f"{tuple(images.shape)}")
        batch_size = batch_size or self.config.decode.batch_size
        out: list[ImagePrediction] = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                result = self.model(self.pipeline.encode(images[start:start + batch_size]),
                                    need_weights=return_attention)
                probs = F.softmax(result.logits.float(), dim=-1)  # (B, K)
                for row in range(probs.shape[0]):
                    best = int(probs[row].argmax())
                    attention = result.encoder_self[:, row].float() if return_attention else None  # (L, H, N+1, N+1)
                    out.append(ImagePrediction(self.pipeline.labels[best], float(probs[row, best]),
                                               dict(zip(self.pipeline.labels, probs[row].tolist(), strict=True)),
                                               attention))
        return out


# ------------------------------------------------------------------------------------------- task


def image_classification_loss(model: nn.Module, batch: ImageBatch, *,
                              label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Cross-entropy of the model's logits ``(B, K)`` against ``batch.labels``, summed over the B images."""
    logits = model(batch.images).logits  # (B, K)
    loss_sum = F.cross_entropy(logits.float(), batch.labels, reduction="sum", label_smoothing=label_smoothing)
    return loss_sum, int(batch.labels.numel())


def _line(count: int, report: Mapping[str, Any]) -> str:
    return (f"test ({count} images): accuracy {100 * report['accuracy']:.2f}%, "
            f"macro-F1 {100 * report['macro_f1']:.2f}")


@register_task
class ImageClassificationTask(Task):
    """Image -> one label (see the module docstring)."""

    name = "image_classification"

    def defaults(self, model_kind: str, *, synthetic: bool) -> dict[str, Any]:
        out = {"model": dict(_DEFAULTS["model"]), "train": dict(_DEFAULTS["train"]),
               "data": {"num_valid": 5000} if not synthetic else {}}
        if synthetic:
            for section, values in _SYNTHETIC.items():
                out[section] = {**out.get(section, {}), **values}
        return out

    def prepare(self, cfg: RunConfig, saved: Mapping[str, Any] | None = None, *,
                where: str = "checkpoint") -> ImageData:
        pipeline = ImagePipeline.from_dict(saved, where) if saved is not None else None
        return prepare_images(cfg.data, pipeline)

    def _check_model(self, cfg: RunConfig, pipeline: ImagePipeline) -> None:
        model = cfg.model
        wanted = {"num_classes": len(pipeline.labels), "image_size": pipeline.image_size,
                  "in_channels": pipeline.channels}
        for name, value in wanted.items():
            if getattr(model, name) != value:
                raise ConfigError(f"model.{name} is {getattr(model, name)} but the images need {value}; set "
                                  f"model.{name}: {value}")

    def build_model(self, cfg: RunConfig, data: ImageData) -> nn.Module:
        self._check_model(cfg, data.pipeline)
        return build_model(cfg.model)

    def train_batches(self, data: ImageData, cfg: RunConfig) -> BatchSource:
        return ImageBatches(data.train, cfg.train.batch_size, mean=data.pipeline.mean, std=data.pipeline.std,
                            seed=cfg.train.seed, augment=cfg.data.augment)

    def loss(self, cfg: RunConfig) -> LossFn:
        return functools.partial(image_classification_loss, label_smoothing=cfg.train.label_smoothing)

    def evaluator(self, data: ImageData, cfg: RunConfig) -> Evaluate:
        """``val_loss`` (mean cross-entropy per image), ``val_accuracy`` and ``val_macro_f1`` on every validation
        image, in one pass."""
        batches = ImageBatches(data.valid, 500, mean=data.pipeline.mean, std=data.pipeline.std, shuffle=False)
        labels = data.pipeline.labels

        @torch.no_grad()
        def evaluate(model: nn.Module) -> dict[str, float]:
            model.eval()
            total, truth, preds = 0.0, [], []
            batches.epoch, batches.position = 0, 0
            for batch in batches:
                logits = model(batch.images).logits.float()  # (B, K)
                total += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
                truth += batch.labels.tolist()
                preds += logits.argmax(-1).tolist()
            if not truth:
                return {"val_loss": math.nan}
            report = classification_report(truth, preds, list(labels)).to_dict()
            return {"val_loss": total / len(truth), "val_accuracy": report["accuracy"],
                    "val_macro_f1": report["macro_f1"]}

        return evaluate

    def load(self, ckpt: Checkpoint, cfg: RunConfig) -> ImageClassifier:
        pipeline = ImagePipeline.from_dict(ckpt.extra, str(ckpt.path))
        self._check_model(cfg, pipeline)
        model = load_weights(build_model(cfg.model), ckpt)
        return ImageClassifier(model, pipeline, cfg, ckpt.step, ckpt.path)

    def score(self, predictor: ImageClassifier, examples: ImageSet, cfg: RunConfig, *,
              beams: Sequence[int] = (1,), baseline_data: Any = None) -> list[TestReport]:
        labels = predictor.pipeline.labels
        predictions = predictor.predict(examples.images, batch_size=500)
        index = {name: i for i, name in enumerate(labels)}
        report = classification_report(examples.labels.tolist(), [index[p.label] for p in predictions],
                                       list(labels)).to_dict()
        return [TestReport("model", report, _line(len(examples), report), [p.label for p in predictions])]
