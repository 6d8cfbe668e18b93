"""Images: the IDX reader on hand-made files, Fashion-MNIST loading, splits, the squares set, image files and
resumable augmented batches."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.core.errors import ConfigError, DataError, ExitCode
from attnlab.data.images import (
    FASHION_MNIST_CLASSES,
    ImageBatches,
    ImageSet,
    holdout_split,
    load_fashion_mnist,
    load_image_file,
    make_squares,
    pixel_stats,
    read_idx,
    shift_and_flip,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write(path: Path, data: bytes, *, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_images_labels_and_wider_types(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5).astype(np.uint8)
    ints = rng.integers(-1000, 1000, size=(2, 3)).astype(np.int32)
    floats = rng.standard_normal(4).astype(np.float32)
    for name, array, code in (("i", images, 0x08), ("l", labels, 0x08), ("n", ints, 0x0C), ("f", floats, 0x0D)):
        got = read_idx(write(tmp_path / name, idx_bytes(array, code), compress=compress))
        assert got.shape == array.shape and got.dtype.isnative
        np.testing.assert_array_equal(got, array)
    raw = idx_bytes(images)
    assert int.from_bytes(raw[:4], "big") == 0x00000803  # the magic number Fashion-MNIST's image files carry


@pytest.mark.parametrize(("make", "words"), [
    (lambda good: b"\x00\x00\x08", "truncated: 3 bytes"),
    (lambda good: b"\x01\x02" + good[2:], "not an IDX file: magic number 0x01020803"),
    (lambda good: good[:2] + b"\x07" + good[3:], "not an IDX file"),
    (lambda good: good[:3] + b"\x00" + good[4:], "not an IDX file"),
    (lambda good: good[:10], "truncated: the header of a 3-dimensional IDX file needs 16 bytes"),
    (lambda good: good[:-1], "truncated: the header describes 5x3x4 unsigned byte values (60 bytes of data), "
                             "the file holds 59"),
    (lambda good: good + b"\x00", "has trailing bytes"),
])
def test_read_idx_refuses_bad_files_with_one_line(tmp_path: Path, make, words: str) -> None:
    good = idx_bytes(np.zeros((5, 3, 4), dtype=np.uint8))
    path = write(tmp_path / "bad-idx", make(good))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert words in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.DATA


def test_read_idx_refuses_a_broken_gzip_and_a_missing_file(tmp_path: Path) -> None:
    broken = write(tmp_path / "x.gz", gzip.compress(idx_bytes(np.zeros((4, 4), np.uint8)))[:-9])
    with pytest.raises(DataError, match="cannot read it"):
        read_idx(broken)
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "missing")


def fake_fashion(root: Path, *, train: int = 30, test: int = 10, labels_of=None) -> Path:
    rng = np.random.default_rng(1)
    for split, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (labels_of or (lambda n: np.arange(n) % 10))(count).astype(np.uint8)
        write(root / "fashion-mnist" / f"{split}-images-idx3-ubyte.gz", idx_bytes(images), compress=True)
        write(root / "fashion-mnist" / f"{split}-labels-idx1-ubyte.gz", idx_bytes(labels), compress=True)
    return root


def test_load_fashion_mnist_from_a_data_dir(tmp_path: Path) -> None:
    fake_fashion(tmp_path)
    images, labels = load_fashion_mnist("train", tmp_path)
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [i % 10 for i in range(30)]
    assert load_fashion_mnist("test", tmp_path)[0].shape == (10, 28, 28)
    with pytest.raises(ConfigError, match="unknown Fashion-MNIST split"):
        load_fashion_mnist("valid", tmp_path)


def test_load_fashion_mnist_refuses_inconsistent_files(tmp_path: Path) -> None:
    root = fake_fashion(tmp_path / "a")
    write(root / "fashion-mnist" / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(29, np.uint8)), compress=True)
    with pytest.raises(DataError, match="30 images but train-labels-idx1-ubyte.gz holds 29 labels"):
        load_fashion_mnist("train", root)
    root = fake_fashion(tmp_path / "b", labels_of=lambda n: np.full(n, 10))
    with pytest.raises(DataError, match="label 10 of item 0 is outside 0-9"):
        load_fashion_mnist("train", root)
    root = fake_fashion(tmp_path / "c")  # an image file where the labels belong
    images = (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    (root / "fashion-mnist" / "train-labels-idx1-ubyte.gz").write_bytes(images)
    with pytest.raises(DataError, match="expected unsigned-byte labels"):
        load_fashion_mnist("train", root)
    with pytest.raises(DataError, match="attnlab data fetch fashion-mnist"):
        load_fashion_mnist("train", tmp_path / "empty")


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="../shared/data/fashion-mnist not present")
def test_the_real_fashion_mnist_has_its_published_shape() -> None:
    images, labels = load_fashion_mnist("train", SHARED)
    assert images.shape == (60000, 28, 28) and np.bincount(labels).tolist() == [6000] * 10
    images, labels = load_fashion_mnist("test", SHARED)
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10


def test_holdout_split_is_seeded_disjoint_and_complete() -> None:
    train, valid = holdout_split(100, 10, seed=3)
    assert len(valid) == 10 and len(train) == 90 and not set(train) & set(valid)
    assert sorted([*train, *valid]) == list(range(100))
    again = holdout_split(100, 10, seed=3)
    assert (again[1] == valid).all() and not (holdout_split(100, 10, seed=4)[1] == valid).all()
    with pytest.raises(ConfigError, match="num_valid"):
        holdout_split(10, 10, seed=0)


def test_squares_put_the_bright_square_in_the_labelled_quadrant() -> None:
    images, labels, boxes = make_squares(200, seed=5)
    assert images.shape == (200, 1, 28, 28) and images.dtype == np.uint8
    assert set(labels.tolist()) == {0, 1, 2, 3}
    for image, label, (top, left, bottom, right) in zip(images, labels, boxes, strict=True):
        assert (image[0, top:bottom, left:right] == 255).all()
        assert (image == 255).sum() == (bottom - top) * (right - left)  # the only bright pixels
        row, col = divmod(int(label), 2)
        assert top >= 14 * row and bottom <= 14 * (row + 1) and left >= 14 * col and right <= 14 * (col + 1)
    again = make_squares(200, seed=5)
    assert (again[0] == images).all() and not (make_squares(200, seed=6)[0] == images).all()


def dataset(n: int = 37) -> ImageSet:
    images = torch.arange(n * 2 * 5 * 5, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(n, 2, 5, 5)
    return ImageSet(images, torch.arange(n) % 3)


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_image_batches_resume_exactly_mid_epoch(augment: str) -> None:
    def make() -> ImageBatches:
        return ImageBatches(dataset(), 8, mean=0.5, std=0.25, seed=7, augment=augment)

    straight = make()
    expected = [b for _ in range(3) for b in straight]
    first = make()
    seen = []
    for _ in range(2):  # one epoch and three batches of the next
        for batch in first:
            seen.append(batch)
            if len(seen) in (5, 8):
                break
        if len(seen) == 8:
            break
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b for b in resumed] + [b for _ in range(1) for b in resumed]
    got = seen + rest
    assert len(got) == len(expected) == 15
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.images, b.images)
    epoch0 = sorted(i for b in expected[:5] for i in b.index.tolist())
    assert epoch0 == list(range(37))  # every image once per epoch


def test_shift_and_flip_moves_pixels_by_at_most_pad() -> None:
    images = torch.arange(1, 3 * 1 * 6 * 6 + 1, dtype=torch.float32).reshape(3, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    out = shift_and_flip(images, gen, pad=2, flip=True)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(3):
        candidates = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    flips = [shift_and_flip(images, torch.Generator().manual_seed(s), pad=0, flip=True) for s in range(20)]
    assert any(torch.equal(f[0], images[0].flip(-1)) for f in flips)
    assert any(torch.equal(f[0], images[0]) for f in flips)


def test_load_image_file_converts_and_states_it(tmp_path: Path) -> None:
    from PIL import Image

    picture = np.full((30, 50, 3), 230, dtype=np.uint8)  # a light background...
    picture[10:20, 20:30] = 10  # ... with a dark item in the middle
    Image.fromarray(picture).save(tmp_path / "item.png")
    pixels, note = load_image_file(tmp_path / "item.png", size=28, channels=1)
    assert pixels.shape == (1, 28, 28) and pixels.dtype == np.uint8
    assert "50x30 RGB -> 28x28 grayscale" in note and "inverted" in note
    assert pixels[0, 14, 14] > 200 and pixels[0, 14, 2] < 60  # light item on black, as the models learned
    kept, note = load_image_file(tmp_path / "item.png", size=28, channels=1, invert=False)
    assert kept[0, 14, 14] < 60 and "inverted" not in note
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_image_file(tmp_path / "text.png", size=28, channels=1)
    with pytest.raises(DataError, match="no such file"):
        load_image_file(tmp_path / "none.png", size=28, channels=1)


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_pixel_stats_equal_torchs_mean_and_std_whatever_the_chunk(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr("attnlab.data.images.STATS_CHUNK", chunk)
    images = torch.randint(0, 256, (10, 1, 7, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images[:4] //= 8  # skewed: most pixels dark, as in Fashion-MNIST
    pixels = images.double() / 255.0
    expected = round(float(pixels.mean()), 6), round(float(pixels.std()), 6)
    assert pixel_stats(images) == expected
    assert pixel_stats(images.numpy()) == expected
    assert pixel_stats(images[:1]) == (round(float(pixels[0].mean()), 6), round(float(pixels[0].std()), 6))


def test_pixel_stats_refuse_what_they_cannot_count() -> None:
    with pytest.raises(TypeError, match="uint8"):
        pixel_stats(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="two pixels"):
        pixel_stats(torch.zeros(1, dtype=torch.uint8))
