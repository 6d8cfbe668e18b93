"""Images for the vision tasks: Fashion-MNIST's IDX files, seeded splits, a constructed "bright square" set,
image files from users, and resumable training batches with seeded augmentation.

Images are kept as ``uint8`` tensors ``(N, C, H, W)`` and become normalized floats only when batched, so the
60,000 Fashion-MNIST training images take 47 MB of memory instead of 188 MB.

IDX (LeCun et al., the MNIST format): a big-endian header, two zero bytes, a type byte (``0x08`` = unsigned
byte), the number of dimensions, then each dimension as a 32-bit unsigned integer, then the values in
row-major order. Fashion-MNIST's image files have the magic number ``0x00000803`` (3 dimensions: count, rows,
columns) and its label files ``0x00000801``.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.download import resolve_data_dir

log = logging.getLogger(__name__)

__all__ = ["AUGMENTATIONS", "FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "SQUARES_LABELS", "ImageBatch",
           "ImageBatches", "ImageSet", "describe", "holdout_split", "load_fashion_mnist", "load_image_file",
           "make_squares", "pixel_stats", "read_idx"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
"""Fashion-MNIST's class names, in label order (Xiao, Rasul & Vollgraf, 2017)."""

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""The image and label file of each split, as published (``{data_dir}/fashion-mnist/...``)."""

AUGMENTATIONS = ("none", "crop", "crop-flip")
"""Training-image augmentation: none; a random shift of up to ``pad`` pixels (pad with the background, then
crop back to size); the shift and a horizontal flip with probability 1/2."""

_IDX_TYPES: dict[int, tuple[str, np.dtype]] = {
    0x08: ("unsigned byte", np.dtype(">u1")), 0x09: ("signed byte", np.dtype(">i1")),
    0x0B: ("short", np.dtype(">i2")), 0x0C: ("int", np.dtype(">i4")),
    0x0D: ("float", np.dtype(">f4")), 0x0E: ("double", np.dtype(">f8")),
}
_IDX_MAX_BYTES = 1 << 31  # 2 GiB: far above any IDX file attnlab reads; a header asking for more is an error


# ------------------------------------------------------------------------------------------- IDX files


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head != b"\x1f\x8b":
                return f.read()
            with gzip.GzipFile(fileobj=f) as gz:
                return gz.read(_IDX_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:100]
        raise DataError(f"{path}: cannot read it ({reason})") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into an array of its shape, in native byte order.

    Raises:
        DataError: the file is missing, not gzip/IDX (wrong magic number), or its size disagrees with its header
            (truncated, or with trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    zero, type_code, ndim = raw[0] | raw[1], raw[2], raw[3]
    if zero or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file: magic number 0x{magic:08x}, expected 0x0000TTDD "
                        f"(TT a type code such as 08, DD the number of dimensions), e.g. 0x00000803 for images")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated: the header of a {ndim}-dimensional IDX file needs {header} bytes, "
                        f"the file holds {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    name, dtype = _IDX_TYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    body = len(raw) - header
    if expected > _IDX_MAX_BYTES:
        raise DataError(f"{path}: the header describes {'x'.join(map(str, dims))} values ({expected} bytes), "
                        f"more than attnlab reads from one IDX file")
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: the header describes {'x'.join(map(str, dims))} {name} values "
                        f"({expected} bytes of data), the file holds {body}")
    return np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims).astype(
        dtype.newbyteorder("="))


def _fashion_path(name: str, root: Path) -> Path:
    path = root / "fashion-mnist" / name
    if path.is_file():
        return path
    plain = path.with_suffix("")  # the uncompressed file, as some mirrors serve it
    if plain.is_file():
        return plain
    raise DataError(f"{path}: no such file; fetch the corpus with `attnlab data fetch fashion-mnist --dest {root}`")


def load_fashion_mnist(split: str, data_dir: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of Fashion-MNIST's ``train`` or ``test`` split.

    Raises:
        ConfigError: an unknown split.
        DataError: a missing file, a file of the wrong kind (an image file where labels are expected, ...), image
            and label counts that differ, or a label outside 0-9.
    """
    if split not in FASHION_MNIST_FILES:
        raise ConfigError(f"unknown Fashion-MNIST split {split!r}; known: {', '.join(FASHION_MNIST_FILES)}")
    root = resolve_data_dir(data_dir)
    image_path, label_path = (_fashion_path(name, root) for name in FASHION_MNIST_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{image_path}: expected unsigned-byte images (IDX magic 0x00000803), got "
                        f"{images.ndim} dimensions of {images.dtype}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{label_path}: expected unsigned-byte labels (IDX magic 0x00000801), got "
                        f"{labels.ndim} dimensions of {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{image_path}: {len(images)} images but {label_path.name} holds {len(labels)} labels")
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        bad = int(np.argmax(labels >= len(FASHION_MNIST_CLASSES)))
        raise DataError(f"{label_path}: label {int(labels[bad])} of item {bad} is outside 0-9")
    return images, labels.astype(np.int64)


def holdout_split(count: int, num_valid: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_indices, valid_indices)`` of ``range(count)``: ``num_valid`` held out, both sorted."""
    if not 0 <= num_valid < count:
        raise ConfigError(f"data.num_valid: {num_valid} validation images must be fewer than the {count} "
                          f"training images")
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[num_valid:]), np.sort(order[:num_valid])


def describe(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Lines for ``attnlab data stats fashion-mnist``: images, sizes and images per class of each split."""
    lines = []
    for split in FASHION_MNIST_FILES:
        images, labels = load_fashion_mnist(split, data_dir)
        counts = np.bincount(labels, minlength=len(FASHION_MNIST_CLASSES))
        lines.append(f"{split}: {len(images)} images of {images.shape[1]}x{images.shape[2]}, mean pixel "
                     f"{images.mean() / 255:.4f}, std {images.std() / 255:.4f}")
        lines.append("  " + ", ".join(f"{name} {n}" for name, n in zip(FASHION_MNIST_CLASSES, counts, strict=True)))
    return lines


# ------------------------------------------------------------------------------------------- constructed set

SQUARES_LABELS = ("top-left", "top-right", "bottom-left", "bottom-right")
"""The classes of :func:`make_squares`: the quadrant that holds the bright square."""


def make_squares(count: int, seed: int, *, size: int = 28, square: int = 6,
                 distractors: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A constructed set whose answer is known: one bright square decides the label.

    Each ``size x size`` image holds dim noise, ``distractors`` dim squares and one bright ``square``-pixel
    square; the label is the quadrant the bright square lies in (:data:`SQUARES_LABELS`; it never crosses the
    middle lines). A model that solves the task must find the bright square, so its attention can be checked
    against the square's box.

    Returns:
        images ``(count, 1, size, size)`` uint8, labels ``(count,)`` int64, boxes ``(count, 4)`` int64 of the bright
        square as ``(top, left, bottom, right)`` pixels (bottom and right exclusive).
    """
    if size < 4 * square or square < 1:
        raise ConfigError(f"make_squares: size {size} must be at least 4 x square ({square})")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(count, 1, size, size), dtype=np.int64)
    labels = rng.integers(0, 4, size=count)
    half = size // 2
    boxes = np.zeros((count, 4), dtype=np.int64)
    for i in range(count):
        for _ in range(distractors):
            top, left = rng.integers(0, size - square + 1, size=2)
            images[i, 0, top:top + square, left:left + square] = rng.integers(70, 110)
        row, col = divmod(int(labels[i]), 2)
        top = row * half + int(rng.integers(0, half - square + 1))
        left = col * half + int(rng.integers(0, half - square + 1))
        images[i, 0, top:top + square, left:left + square] = 255
        boxes[i] = (top, left, top + square, left + square)
    return images.astype(np.uint8), labels.astype(np.int64), boxes


# ------------------------------------------------------------------------------------------- image files


def load_image_file(path: str | os.PathLike[str], *, size: int, channels: int,
                    invert: bool | None = None) -> tuple[np.ndarray, str]:
    """Read a PNG/JPEG (any size or mode) as the model's input: ``(channels, size, size)`` uint8.

    The image is converted to grayscale (``channels=1``) or RGB, its longer side scaled to ``size`` (bicubic,
    aspect ratio kept) and centred on a square of the background colour. Fashion-MNIST shows light items on
    a black background; a photo usually shows a dark item on a light one, so with ``invert=None`` an image whose
    border is mostly light is inverted. Returns the array and one line stating the conversion.

    Raises:
        DataError: the file is missing or not an image PIL can read.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({str(exc)[:100]})") from None
    mode, (width, height) = image.mode, image.size
    converted = image.convert("L" if channels == 1 else "RGB")
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = converted.resize((new_w, new_h), Image.Resampling.BICUBIC)
    pixels = np.asarray(resized, dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels  # (h, w, C)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).astype(np.float64)
    if invert is None:
        invert = bool(border.mean() > 127)
    if invert:
        pixels = 255 - pixels
    canvas = np.zeros((size, size, pixels.shape[2]), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = pixels
    what = "grayscale" if channels == 1 else "RGB"
    note = (f"{path.name}: {width}x{height} {mode} -> {size}x{size} {what} (scaled by {scale:.3g}, centred"
            f"{', inverted to light-on-dark' if invert else ''})")
    return canvas.transpose(2, 0, 1).copy(), note


# ------------------------------------------------------------------------------------------- batches


@dataclass
class ImageSet:
    """Images ``(N, C, H, W)`` uint8 with class ids ``(N,)`` int64 (and the box of each one's evidence, if known)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise ValueError(f"ImageSet: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageSet: labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return ImageSet(self.images[idx], self.labels[idx], None if self.boxes is None else self.boxes[idx])


@dataclass
class ImageBatch:
    """Normalized images ``(B, C, H, W)`` float32, their labels ``(B,)`` and positions in the dataset ``(B,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


STATS_CHUNK = 4096
"""Images counted at a time by :func:`pixel_stats` (bounds its working memory to a few of their sizes)."""


def pixel_stats(images: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (unbiased, as ``torch.std``) of uint8 ``images / 255``, rounded to 6 decimals as
    checkpoints store them.

    Counted from a histogram of the 256 byte values, a few thousand images at a time, so the memory it needs is
    that of one chunk, where ``images.double().std()`` needs two float64 copies of them all (5.9 GB each for
    180,000 scenes of 64x64, which a training process would then keep: :mod:`attnlab.train.allocator`).
    """
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8:
        raise TypeError(f"pixel_stats: expected uint8 images, got {images.dtype}")
    if images.numel() < 2:
        raise ValueError("pixel_stats: needs at least two pixels")
    counts = torch.zeros(256, dtype=torch.float64)
    for start in range(0, len(images), STATS_CHUNK):
        counts += torch.bincount(images[start:start + STATS_CHUNK].reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    var = (counts * (values - mean) ** 2).sum() / (total - 1)
    return round(float(mean), 6), round(float(var.sqrt()), 6)


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 ``(..., H, W)`` -> float32 ``(x / 255 - mean) / std``."""
    return (images.float() / 255.0 - mean) / std


def shift_and_flip(images: torch.Tensor, generator: torch.Generator, *, pad: int, flip: bool) -> torch.Tensor:
    """Shift each image ``(B, C, H, W)`` by a random ``(dy, dx)`` in ``[-pad, pad]`` (filling with 0) and, with
    ``flip``, mirror it left-right with probability 1/2; the draws come from ``generator``."""
    b, c, h, w = images.shape
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        rows = (torch.arange(h)[None, :] + dy[:, None])[:, :, None]  # (B, H, 1)
        cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, :]  # (B, 1, W)
        batch = torch.arange(b)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
    return images


class ImageBatches:
    """Shuffled batches of an :class:`ImageSet`, augmented with seeded draws, resumable exactly.

    Each epoch visits every image once, in an order drawn from a generator seeded by ``(seed, epoch)``; the
    augmentation of the batch at ``position`` is drawn from a generator seeded by ``(seed, epoch, position)``,
    so a run resumed from :meth:`state_dict` sees the same pixels as one that never stopped. The last batch of
    an epoch may be smaller.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, mean: float, std: float, seed: int = 0,
                 shuffle: bool = True, augment: str = "none", pad: int = 2) -> None:
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"augment: got {augment!r}, expected one of {', '.join(AUGMENTATIONS)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size: got {batch_size}, expected at least 1")
        self.data, self.batch_size, self.mean, self.std = data, batch_size, mean, std
        self.seed, self.shuffle, self.augment, self.pad = seed, shuffle, augment, pad
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.data))
        return torch.randperm(len(self.data), generator=torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.epoch) % 2**63))

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> ImageBatch:
        images = self.data.images[index]
        if self.augment != "none" and generator is not None:
            images = shift_and_flip(images, generator, pad=self.pad, flip=self.augment == "crop-flip")
        return ImageBatch(normalize(images, self.mean, self.std), self.data.labels[index], index)

    def __iter__(self) -> Iterator[ImageBatch]:
        order = self._order()
        while self.position < len(self):
            start = self.position * self.batch_size
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 100_003 % 2**62 + self.position)
            self.position += 1
            yield self.batch(order[start:start + self.batch_size], generator)
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ConfigError(f"the checkpoint's data seed {state.get('seed')} differs from train.seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
