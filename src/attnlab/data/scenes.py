"""Captioning scenes: Fashion-MNIST items on a black canvas, with a caption whose every noun has a box.

A scene is a ``size`` x ``size`` uint8 canvas (default 64) split into a 2x2 grid of cells. It holds 1 to
``max_items`` items, each in its own cell at a seeded random offset inside that cell, so items never overlap
and never leave the canvas. Items are pasted with ``np.maximum`` onto a black canvas.

The caption is a deterministic function of the layout, so a model can learn it exactly: items are listed in
reading order (top row left to right, then the bottom row), each as ``"a <noun>"``, and consecutive items are
joined by ``"left of"`` when they share a row and by ``"above"`` otherwise::

    a bag
    a sneaker left of a bag
    a dress left of a top above a sandal

Nouns (:data:`NOUNS`): T-shirt/top, Pullover, Coat and Shirt (classes 0, 2, 4, 6) are all called ``"top"``.
At 28x28 in grey levels these four are hard to tell apart even for strong classifiers (most of the errors of
a ~93%-accurate Fashion-MNIST model are confusions among them), so asking a captioner to name them separately
would mostly measure label noise, not whether it looks at the right item.

Boxes are *tight*: the smallest box holding the item's nonzero pixels, in canvas pixels. An all-zero item has
no such box and gets its whole 28x28 square instead, so no box is ever empty.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from attnlab.core.errors import ConfigError, DataError

__all__ = ["ITEM_SIZE", "MAX_ITEMS", "NOUNS", "Scene", "SceneItem", "make_scenes", "scene_vocabulary"]

ITEM_SIZE = 28
"""Side of a Fashion-MNIST item in pixels."""

NOUNS: dict[int, str] = {
    0: "top",  # T-shirt/top
    1: "trousers",
    2: "top",  # Pullover
    3: "dress",
    4: "top",  # Coat
    5: "sandal",
    6: "top",  # Shirt
    7: "sneaker",
    8: "bag",
    9: "boot",  # Ankle boot
}
"""Fashion-MNIST class id -> the one-word noun the captions use (four look-alike classes share "top")."""

_ARTICLE = "a"
_ARTICLES = {"trousers": "some"}  # a plural noun takes "some" ("a bag above some trousers")
_SAME_ROW = ("left", "of")
_NEXT_ROW = ("above",)
_GRID = 2  # cells per side
MAX_ITEMS = _GRID * _GRID
"""Most items a scene can hold: one per cell of the 2x2 grid."""


@dataclass(frozen=True)
class SceneItem:
    """One item of a scene.

    Attributes:
        label: Fashion-MNIST class id (0..9).
        noun: ``NOUNS[label]``, as written in the caption.
        box: ``(top, left, bottom, right)`` in canvas pixels, bottom/right exclusive, tight around the item's
            nonzero pixels (the full 28x28 square for an all-zero item).
    """

    label: int
    noun: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)  # eq=False: comparing the image arrays with == has no single truth value
class Scene:
    """A canvas, its items in reading order, and their caption.

    Attributes:
        image: ``(size, size)`` uint8, white items on black.
        items: the items in reading order (the order their nouns appear in the caption).
        caption: lower-case words separated by single spaces.
        noun_positions: index in ``caption.split()`` of each item's noun, in ``items`` order.
    """

    image: np.ndarray
    items: tuple[SceneItem, ...]
    caption: str
    noun_positions: tuple[int, ...]


def scene_vocabulary() -> list[str]:
    """Every word a scene caption can contain, sorted."""
    return sorted({_ARTICLE, *_ARTICLES.values(), *_SAME_ROW, *_NEXT_ROW, *NOUNS.values()})


def _caption(cells: list[int], nouns: list[str]) -> tuple[str, tuple[int, ...]]:
    """Caption and noun word positions for items in reading order (``cells`` sorted, row = cell // 2)."""
    words: list[str] = []
    positions: list[int] = []
    for k, (cell, noun) in enumerate(zip(cells, nouns, strict=True)):
        if k:
            words.extend(_SAME_ROW if cell // _GRID == cells[k - 1] // _GRID else _NEXT_ROW)
        words.append(_ARTICLES.get(noun, _ARTICLE))
        positions.append(len(words))
        words.append(noun)
    return " ".join(words), tuple(positions)


def _tight_extent(item: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the nonzero pixels of a 28x28 item; the whole item if it is all zero."""
    rows = np.flatnonzero(item.any(axis=1))
    cols = np.flatnonzero(item.any(axis=0))
    if rows.size == 0:
        return 0, 0, ITEM_SIZE, ITEM_SIZE
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _int_arg(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or a ConfigError naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"make_scenes: {name} must be an int, got {value!r}") from None
    if number < low or (high is not None and number > high):
        expected = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"make_scenes: {name} must be {expected}, got {number}")
    return number


def _check_pool(images: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(images, np.ndarray):
        raise DataError(f"make_scenes: images must be a numpy array (N, 28, 28) of uint8, got {type(images).__name__}")
    if images.ndim != 3 or images.shape[1:] != (ITEM_SIZE, ITEM_SIZE) or images.shape[0] == 0:
        raise DataError(f"make_scenes: images must have shape (N, 28, 28) with N >= 1, got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"make_scenes: images must be uint8 (0..255), got {images.dtype}")
    ids = np.asarray(labels)
    if ids.shape != (images.shape[0],):
        raise DataError(f"make_scenes: labels must have shape ({images.shape[0]},) to match images, got {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise DataError(f"make_scenes: labels must be integer class ids, got dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() > 9:
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise DataError(f"make_scenes: label {int(bad)} is outside the Fashion-MNIST classes 0..9")
    return images, ids


def make_scenes(images: np.ndarray, labels: np.ndarray, count: int, *, seed: int, size: int = 64,
                max_items: int = 3) -> list[Scene]:
    """``count`` seeded scenes built from a pool of items.

    Args:
        images: ``(N, 28, 28)`` uint8 items, white on black (as in Fashion-MNIST).
        labels: ``(N,)`` integer class ids in 0..9.
        count: number of scenes (0 gives an empty list).
        seed: seeds ``numpy.random.default_rng``; the same inputs and seed give identical scenes, and the
            first ``m`` of ``count`` scenes equal ``make_scenes(..., m, seed=seed)``.
        size: canvas side, at least 56 so that each cell of the 2x2 grid (``size // 2``) fits an item.
        max_items: items per scene are drawn uniformly from ``1..max_items`` (at most 4, one per cell);
            each item is drawn uniformly, with replacement, from the pool.

    Raises:
        ConfigError: a bad ``count``, ``seed``, ``size`` or ``max_items`` (the message names it).
        DataError: ``images`` or ``labels`` of the wrong shape, dtype or range.
    """
    count = _int_arg("count", count, 0)
    seed = _int_arg("seed", seed, 0)
    size = _int_arg("size", size, 2 * ITEM_SIZE)
    max_items = _int_arg("max_items", max_items, 1, MAX_ITEMS)
    images, ids = _check_pool(images, labels)

    rng = np.random.default_rng(seed)
    cell = size // 2
    scenes = []
    for _ in range(count):
        # 1. draw the layout: how many items, which cells, which items, where inside each cell
        n_items = int(rng.integers(1, max_items + 1))
        cells = rng.choice(MAX_ITEMS, size=n_items, replace=False)
        picks = rng.integers(0, images.shape[0], size=n_items)
        offsets = rng.integers(0, cell - ITEM_SIZE + 1, size=(n_items, 2))  # (n_items, 2): row, column
        order = np.argsort(cells)  # reading order

        # 2. paste the items and record their boxes
        canvas = np.zeros((size, size), dtype=np.uint8)
        items = []
        for k in order:
            c, pick = int(cells[k]), int(picks[k])
            top = (c // _GRID) * cell + int(offsets[k, 0])
            left = (c % _GRID) * cell + int(offsets[k, 1])
            region = canvas[top:top + ITEM_SIZE, left:left + ITEM_SIZE]
            np.maximum(region, images[pick], out=region)
            t, l, b, r = _tight_extent(images[pick])
            label = int(ids[pick])
            items.append(SceneItem(label=label, noun=NOUNS[label], box=(top + t, left + l, top + b, left + r)))

        # 3. caption the layout
        caption, positions = _caption(sorted(int(c) for c in cells), [it.noun for it in items])
        scenes.append(Scene(image=canvas, items=tuple(items), caption=caption, noun_positions=positions))
    return scenes
