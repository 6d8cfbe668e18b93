"""Images as command-line input: ``--image FILE`` (any PNG/JPEG, converted to the model's input) and
``--test-index N`` (an image of the test split the checkpoint's run was scored on); shared by predict and viz."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlab.core.errors import ConfigError


@dataclass
class ImageInput:
    """One image to run: its name, pixels ``(C, S, S)`` uint8, and what is known about it (test split only)."""

    name: str
    pixels: np.ndarray
    truth: str | None = None
    boxes: Any = None


def add_image_options(p: argparse.ArgumentParser, group: Any, *, many: bool) -> None:
    nargs = "+" if many else None
    group.add_argument("--image", nargs=nargs, metavar="FILE",
                       help="image models: PNG/JPEG file(s), converted to the model's size and channels (the "
                            "conversion is printed)")
    group.add_argument("--test-index", nargs=nargs, type=int, metavar="N",
                       help="image models: image(s) N (0-based) of the test split of the checkpoint's own run")
    p.add_argument("--invert", action=argparse.BooleanOptionalAction, default=None,
                   help="--image: invert the gray levels (the models learn light items on black; default: invert "
                        "when the image's border is mostly light)")


def image_inputs(predictor: Any, args: argparse.Namespace) -> list[ImageInput]:
    """The images named by ``--image`` or ``--test-index`` for an image ``predictor`` (notes go to stderr)."""
    from attnlab.data.images import load_image_file

    files = args.image if isinstance(args.image, list) else [args.image] if args.image else []
    indices = args.test_index if isinstance(args.test_index, list) else (
        [args.test_index] if args.test_index is not None else [])
    pipeline = predictor.pipeline
    out = []
    for path in files:
        pixels, note = load_image_file(path, size=pipeline.image_size, channels=pipeline.channels, invert=args.invert)
        print(note, file=sys.stderr)
        out.append(ImageInput(str(path), pixels))
    if indices:
        out += test_images(predictor, indices)
    return out


def test_images(predictor: Any, indices: list[int]) -> list[ImageInput]:
    """Images of the test split of the predictor's run (read again with its data options)."""
    from attnlab.tasks import get_task

    cfg = predictor.config
    data = get_task(cfg.task_name).prepare(cfg, predictor.pipeline.to_dict(), where=str(predictor.path))
    test = data.test
    out = []
    for index in indices:
        if not 0 <= index < len(test):
            raise ConfigError(f"--test-index {index}: the test split holds images 0 to {len(test) - 1}")
        out.append(test_input(test, index, predictor))
    return out


def test_input(test: Any, index: int, predictor: Any) -> ImageInput:
    if hasattr(test, "example"):  # captioning scenes know their caption and boxes
        return ImageInput(*test.example(index))
    return ImageInput(f"test image {index}", test.images[index].numpy(),
                      predictor.pipeline.labels[int(test.labels[index])])
