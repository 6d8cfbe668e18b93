"""Captioning scenes: layout (in the canvas, no overlap), caption = f(layout), pixels, determinism, arguments."""

from __future__ import annotations

import numpy as np
import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.scenes import NOUNS, make_scenes, scene_vocabulary

# Written out independently of the module: Fashion-MNIST class -> caption noun.
EXPECTED_NOUNS = {"T-shirt/top": "top", "Trouser": "trousers", "Pullover": "top", "Dress": "dress", "Coat": "top",
                  "Sandal": "sandal", "Shirt": "top", "Sneaker": "sneaker", "Bag": "bag", "Ankle boot": "boot"}
CLASS_NAMES = list(EXPECTED_NOUNS)


def article(noun: str) -> str:
    return "some" if noun == "trousers" else "a"


def make_pool(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random items: a noisy rectangle of random extent inside each 28x28 square; item 0 is all zero, item 1 full."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(1, n):
        top, left = (0, 0) if i == 1 else rng.integers(0, 20, size=2)
        bottom, right = (28, 28) if i == 1 else (rng.integers(top + 1, 29), rng.integers(left + 1, 29))
        images[i, top:bottom, left:right] = rng.integers(1, 256, size=(bottom - top, right - left))
    labels = np.arange(n) % 10
    return images, labels


def tight_crop(item: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(item)
    if rows.size == 0:
        return item
    return item[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


POOL = make_pool()


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(*POOL, 500, seed=3, max_items=4)


def test_nouns_merge_the_four_look_alike_tops():
    assert {c: NOUNS[c] for c in range(10)} == {c: EXPECTED_NOUNS[name] for c, name in enumerate(CLASS_NAMES)}
    assert all(len(noun.split()) == 1 and noun == noun.lower() for noun in NOUNS.values())


@pytest.mark.parametrize("size", [56, 64, 71])
def test_boxes_lie_in_the_canvas_in_one_cell_and_never_overlap(size):
    cell = size // 2
    for scene in make_scenes(*POOL, 500, seed=size, size=size, max_items=4):
        assert scene.image.shape == (size, size) and scene.image.dtype == np.uint8
        covered = np.zeros((size, size), dtype=int)
        for item in scene.items:
            top, left, bottom, right = item.box
            assert all(isinstance(v, int) for v in item.box)
            assert 0 <= top < bottom <= size and 0 <= left < right <= size
            assert bottom - top <= 28 and right - left <= 28
            assert top // cell == (bottom - 1) // cell and left // cell == (right - 1) // cell  # within one cell
            covered[top:bottom, left:right] += 1
        assert covered.max() <= 1


def test_caption_matches_the_layout(scenes):
    cell = 64 // 2
    for scene in scenes:
        rows_cols = [(item.box[0] // cell, item.box[1] // cell) for item in scene.items]
        assert rows_cols == sorted(rows_cols)  # items are listed in reading order
        assert len(set(rows_cols)) == len(rows_cols)  # one item per cell
        words = [article(scene.items[0].noun), scene.items[0].noun]
        for (row_a, _), (row_b, _), item in zip(rows_cols, rows_cols[1:], scene.items[1:], strict=False):
            words += ["left", "of"] if row_a == row_b else ["above"]
            words += [article(item.noun), item.noun]
        assert scene.caption == " ".join(words)
        for item in scene.items:
            assert item.noun == EXPECTED_NOUNS[CLASS_NAMES[item.label]]


def test_caption_examples():
    images, labels = POOL
    seen = {scene.caption for scene in make_scenes(images, labels, 2000, seed=0)}
    assert "a bag" in seen
    assert any(c.startswith("a ") and " left of a " in c and " above a " in c for c in seen)
    assert all(c == c.strip() and "  " not in c and c == c.lower() for c in seen)


def test_noun_positions_point_at_the_nouns(scenes):
    nouns = set(NOUNS.values())
    for scene in scenes:
        words = scene.caption.split()
        assert len(scene.noun_positions) == len(scene.items)
        for pos, item in zip(scene.noun_positions, scene.items, strict=True):
            assert words[pos] == item.noun and words[pos - 1] == article(item.noun)
        assert [i for i, w in enumerate(words) if w in nouns] == list(scene.noun_positions)


def test_pixels_in_each_box_are_the_source_items_and_the_rest_is_black(scenes):
    images, labels = POOL
    crops = [(int(label), tight_crop(item)) for item, label in zip(images, labels, strict=True)]
    for scene in scenes:
        outside = np.ones(scene.image.shape, dtype=bool)
        for item in scene.items:
            top, left, bottom, right = item.box
            patch = scene.image[top:bottom, left:right]
            assert any(label == item.label and np.array_equal(patch, crop) for label, crop in crops)
            outside[top:bottom, left:right] = False
        assert not scene.image[outside].any()


def test_an_empty_item_gets_its_full_square_and_a_full_item_a_28x28_box():
    images, labels = POOL
    for index in (0, 1):  # all zero, all nonzero
        scenes = make_scenes(images[index:index + 1], labels[index:index + 1], 50, seed=1)
        for scene in scenes:
            for item in scene.items:
                top, left, bottom, right = item.box
                assert (bottom - top, right - left) == (28, 28)
                assert np.array_equal(scene.image[top:bottom, left:right], images[index])


def test_boxes_are_tight():
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, 5:9, 10:20] = 200
    scene = make_scenes(images, np.array([8]), 1, seed=0)[0]
    top, left, bottom, right = scene.items[0].box
    assert (bottom - top, right - left) == (4, 10)
    assert (scene.image[top:bottom, left:right] == 200).all()


def test_same_seed_same_scenes_and_different_seed_different_scenes():
    a = make_scenes(*POOL, 30, seed=5)
    b = make_scenes(*POOL, 30, seed=5)
    c = make_scenes(*POOL, 30, seed=6)
    assert all(np.array_equal(x.image, y.image) and x.items == y.items and x.caption == y.caption
               and x.noun_positions == y.noun_positions for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    prefix = make_scenes(*POOL, 10, seed=5)
    assert all(np.array_equal(x.image, y.image) and x.items == y.items for x, y in zip(prefix, a, strict=False))


def test_make_scenes_leaves_global_numpy_random_state_alone():
    np.random.seed(0)
    expected = np.random.random()
    np.random.seed(0)
    make_scenes(*POOL, 5, seed=1)
    assert np.random.random() == expected


@pytest.mark.parametrize("max_items", [1, 2, 3, 4])
def test_every_item_count_occurs(max_items):
    scenes = make_scenes(*POOL, 400, seed=max_items, max_items=max_items)
    assert {len(scene.items) for scene in scenes} == set(range(1, max_items + 1))


def test_default_counts_labels_and_cells_all_occur(scenes):
    default = make_scenes(*POOL, 300, seed=9)
    assert {len(s.items) for s in default} == {1, 2, 3}
    assert {item.label for s in scenes for item in s.items} == set(range(10))
    assert {(item.box[0] // 32, item.box[1] // 32) for s in scenes for item in s.items} == {(0, 0), (0, 1), (1, 0),
                                                                                          (1, 1)}


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"count": -1}, "count"),
    ({"count": 2.0}, "count"),
    ({"seed": "x"}, "seed"),
    ({"seed": -3}, "seed"),
    ({"size": 55}, "size"),
    ({"size": True}, "size"),
    ({"max_items": 0}, "max_items"),
    ({"max_items": 5}, "max_items"),
])
def test_bad_arguments_raise_config_error_naming_the_argument(kwargs, name):
    args = {"count": 3, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=rf"\b{name} must be"):
        make_scenes(*POOL, args.pop("count"), **args)


@pytest.mark.parametrize(("images", "labels", "match"), [
    (POOL[0].astype(np.float32), POOL[1], "uint8"),
    (POOL[0][:, :27], POOL[1], r"\(N, 28, 28\)"),
    (POOL[0][:0], POOL[1][:0], "N >= 1"),
    (POOL[0].tolist(), POOL[1], "numpy array"),
    (POOL[0], POOL[1][:-1], "labels must have shape"),
    (POOL[0], POOL[1] + 1, "label 10 is outside"),
    (POOL[0], POOL[1].astype(float), "integer class ids"),
])
def test_bad_inputs_raise_data_error(images, labels, match):
    with pytest.raises(DataError, match=match):
        make_scenes(images, labels, 3, seed=0)


def test_caption_words_are_exactly_the_vocabulary(scenes):
    vocab = scene_vocabulary()
    assert vocab == sorted(set(vocab))
    used = {word for scene in scenes for word in scene.caption.split()}
    assert used == set(vocab)
