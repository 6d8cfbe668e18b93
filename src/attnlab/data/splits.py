"""Seeded train/valid/test splits of a corpus that has none (Tatoeba), saved to disk for reproducibility.

A split is a JSON file listing the 1-based *line numbers* of the validation and test pairs (training is every
other pair line), together with the name, SHA-256 and line count of each corpus file it was made from. Line
numbers do not depend on reading options, so the same split serves any normalization. Loading a split
checks it against the corpus files and raises :class:`~attnlab.core.errors.DataError` if they differ.

Tatoeba repeats sentences (the same English with several translations and vice versa). Pairs that share a
source or a target sentence (compared case-folded) are kept in the same part, so no test sentence is
seen in training; this is why the split is drawn over groups of pairs, not single pairs. Other corpora group
by other keys (:data:`GroupKeys`): a sentiment corpus by its text alone (its "target" is a label shared by
thousands), package descriptions by their source-package family.

Where splits are kept (:func:`split_path`): by default the project's committed ``configs/splits/``, found from
the package and not from the current directory, so a run from ``notebooks/`` uses the same test set.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attnlab
from attnlab.core.errors import ConfigError, DataError
from attnlab.data.corpus import Corpus
from attnlab.data.download import sha256_file

log = logging.getLogger(__name__)

SPLIT_FORMAT = "attnlab-split/1"
PARTS = ("train", "valid", "test")

GroupKeys = Callable[[int, tuple[str, str]], Iterable[Hashable]]
"""``(index, pair) -> keys``: pairs that share any key are kept in the same part of a split."""


def either_side(index: int, pair: tuple[str, str]) -> tuple[Hashable, ...]:
    """The default grouping: pairs sharing a (case-folded) source or target sentence go together."""
    return (0, pair[0].casefold()), (1, pair[1].casefold())


def source_side(index: int, pair: tuple[str, str]) -> tuple[Hashable, ...]:
    """Group by the (case-folded) source text alone, e.g. a review whose "target" is its label."""
    return (pair[0].casefold(),)


def _project_splits_dir() -> Path | None:
    """``configs/splits`` of the source tree attnlab is imported from, or ``None`` for an installed package."""
    root = Path(attnlab.__file__).resolve().parents[2]  # src/attnlab/__init__.py -> the repository (src layout)
    return root / "configs" / "splits" if (root / "configs").is_dir() else None


def default_split_path(name: str) -> Path:
    """Where the split ``name`` (e.g. ``"tatoeba-cmn-seed0"``) is kept when no split file is given.

    The project's ``configs/splits/{name}.json``, located from the package, not from the current directory: a
    run started elsewhere (a notebook in ``notebooks/``) reads the committed split instead of silently drawing
    and saving a new one there, whose test set need not be the committed one. When attnlab is not imported from
    its source tree (an installed package has no ``configs/``): ``configs/splits/{name}.json`` in the current
    directory, as logged.
    """
    folder = _project_splits_dir()
    if folder is None:
        folder = Path("configs") / "splits"
        log.info("attnlab is not run from its source tree (no configs/ beside src/): split %s is kept in %s",
                 name, folder.resolve())
    return folder / f"{name}.json"


def split_path(split_file: str | os.PathLike[str] | None, name: str) -> Path:
    """``split_file`` as given (a relative path is relative to the current directory, as for any path a user
    types), or :func:`default_split_path` ``(name)`` when it is ``None`` or empty."""
    return Path(split_file) if split_file else default_split_path(name)


GROUPINGS = {either_side: "pairs sharing a source or target sentence (case-folded) are in the same part",
             source_side: "pairs sharing a source text (case-folded) are in the same part"}


@dataclass(frozen=True)
class CorpusFile:
    """Identity of one corpus file: base name, SHA-256 and number of lines."""

    name: str
    sha256: str
    lines: int


@dataclass(frozen=True)
class CorpusSplit:
    """A train/valid/test split given as line numbers of the corpus' pairs.

    Attributes:
        files: the corpus files the split was made from.
        seed: seed of the shuffle.
        num_pairs: number of pairs in the corpus when the split was made (sum of the three parts).
        valid: line numbers of the validation pairs, ascending.
        test: line numbers of the test pairs, ascending.
        grouping: how pairs were grouped before drawing (recorded in the file for the reader).
    """

    files: tuple[CorpusFile, ...]
    seed: int
    num_pairs: int
    valid: tuple[int, ...]
    test: tuple[int, ...]
    grouping: str = GROUPINGS[either_side]

    @property
    def num_train(self) -> int:
        return self.num_pairs - len(self.valid) - len(self.test)

    def apply(self, corpus: Corpus) -> dict[str, Corpus]:
        """Split ``corpus`` into ``{"train", "valid", "test"}``.

        Validation and test pairs must all be present (read the corpus without ``max_chars`` so that they
        are); training pairs are every other pair of ``corpus``, so a length filter applies to them only.

        Raises:
            DataError: the corpus lacks a validation or test line.
        """
        held_out = set(self.valid) | set(self.test)
        train = [n for n in corpus.line_numbers if n not in held_out]
        return {"train": corpus.select(train), "valid": corpus.select(list(self.valid)),
                "test": corpus.select(list(self.test))}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "files": [{"name": f.name, "sha256": f.sha256, "lines": f.lines} for f in self.files],
            "seed": self.seed,
            "num_pairs": self.num_pairs,
            "sizes": {"train": self.num_train, "valid": len(self.valid), "test": len(self.test)},
            "grouping": self.grouping,
            "valid": list(self.valid),
            "test": list(self.test),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusSplit:
        if data.get("format") != SPLIT_FORMAT:
            raise DataError(f"not an attnlab split (format {data.get('format')!r}, expected {SPLIT_FORMAT!r})")
        try:
            files = tuple(CorpusFile(str(f["name"]), str(f["sha256"]), int(f["lines"])) for f in data["files"])
            split = cls(files, int(data["seed"]), int(data["num_pairs"]),
                        tuple(int(n) for n in data["valid"]), tuple(int(n) for n in data["test"]),
                        str(data.get("grouping", GROUPINGS[either_side])))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed split: {exc!r}") from exc
        if set(split.valid) & set(split.test):
            raise DataError("malformed split: validation and test share lines")
        return split


def _content_identity(path: str) -> tuple[str, str]:
    """``(name, sha256)`` of a corpus file's content: a gzip file counts as the text inside it (``pos.txt.gz`` and a
    downloaded ``pos.txt`` with the same text are the same corpus file)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        return Path(path).name, sha256_file(path)
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return Path(path).name.removesuffix(".gz"), digest.hexdigest()


def _identify(paths: tuple[str, ...], lines: int) -> tuple[CorpusFile, ...]:
    return tuple(CorpusFile(*_content_identity(p), lines) for p in paths)


def _resolve_size(size: int | float, total: int, name: str) -> int:
    if isinstance(size, float):
        if not 0.0 <= size < 1.0:
            raise ConfigError(f"{name}: a fraction must be in [0, 1), got {size}")
        return round(size * total)
    if size < 0:
        raise ConfigError(f"{name}: got {size}, expected a count >= 0 or a fraction")
    return int(size)


def _groups(corpus: Corpus, keys: GroupKeys = either_side) -> list[list[int]]:
    """Indices of pairs grouped so that pairs sharing any key of ``keys`` are together (union-find)."""
    parent = list(range(len(corpus)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[Hashable, int] = {}
    for i, pair in enumerate(corpus.pairs):
        for key in keys(i, pair):
            j = first_seen.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(corpus)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def make_split(corpus: Corpus, *, valid: int | float = 1000, test: int | float = 1000, seed: int = 0,
               group_keys: GroupKeys = either_side, grouping: str | None = None) -> CorpusSplit:
    """Draw a seeded split of ``corpus`` (read without ``max_chars``) into train/valid/test.

    Args:
        corpus: the whole corpus, e.g. :func:`attnlab.data.corpus.read_tatoeba` ``()``.
        valid: number of validation pairs, or a fraction of all pairs if a float.
        test: number of test pairs, or a fraction of all pairs if a float.
        seed: seed of the shuffle of the groups of pairs.
        group_keys: pairs sharing a key stay in one part (default :func:`either_side`).
        grouping: a sentence describing ``group_keys`` for the split file (known groupings describe themselves).

    Raises:
        ConfigError: sizes that leave no training data.
    """
    total = len(corpus)
    n_valid = _resolve_size(valid, total, "valid")
    n_test = _resolve_size(test, total, "test")
    if n_valid + n_test >= total:
        raise ConfigError(f"valid ({n_valid}) + test ({n_test}) leave no training pairs out of {total}")
    groups = _groups(corpus, group_keys)
    random.Random(seed).shuffle(groups)
    parts: dict[str, list[int]] = {"valid": [], "test": []}
    wanted = {"valid": n_valid, "test": n_test}
    for group in groups:
        for part in ("test", "valid"):
            if len(parts[part]) + len(group) <= wanted[part]:
                parts[part].extend(corpus.line_numbers[i] for i in group)
                break
        if all(len(parts[p]) == wanted[p] for p in parts):
            break
    description = grouping or GROUPINGS.get(group_keys, getattr(group_keys, "__doc__", None) or "custom grouping")
    split = CorpusSplit(_identify(corpus.stats.files, corpus.stats.lines), seed, total,
                        tuple(sorted(parts["valid"])), tuple(sorted(parts["test"])), description)
    log.info("split of %d pairs (seed %d): train %d, valid %d, test %d", total, seed, split.num_train,
             len(split.valid), len(split.test))
    return split


def save_split(split: CorpusSplit, path: str | os.PathLike[str]) -> Path:
    """Write ``split`` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; a split file is shared like any config file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(split.to_dict(), f, indent=None, separators=(",", ":"))
            f.write("\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_split(path: str | os.PathLike[str], corpus: Corpus | None = None) -> CorpusSplit:
    """Read a split saved by :func:`save_split`; if ``corpus`` is given, check that it was made from it.

    Raises:
        DataError: unreadable file, or a corpus whose files (name, SHA-256, line count) or number of pairs
            differ from those the split was made from.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such split file") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read split: {exc}") from exc
    try:
        split = CorpusSplit.from_dict(data)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    if corpus is not None:
        verify_split(split, corpus, where=str(path))
    return split


def verify_split(split: CorpusSplit, corpus: Corpus, *, where: str = "split") -> None:
    """Raise :class:`DataError` unless ``split`` was made from the files and pairs of ``corpus``."""
    actual = _identify(corpus.stats.files, corpus.stats.lines)
    if actual != split.files:
        def show(files: tuple[CorpusFile, ...]) -> str:
            return "; ".join(f"{f.name} ({f.lines} lines, sha256 {f.sha256[:12]}…)" for f in files)
        raise DataError(f"{where} was made from {show(split.files)} but the corpus is {show(actual)}; "
                        "use the original corpus file or make a new split")
    if len(corpus) != split.num_pairs:
        raise DataError(f"{where} was made from {split.num_pairs} pairs but the corpus has {len(corpus)}; "
                        "read the corpus without a length filter (max_chars) before splitting")


def load_or_make_split(path: str | os.PathLike[str], corpus: Corpus, *, valid: int | float = 1000,
                       test: int | float = 1000, seed: int = 0, group_keys: GroupKeys = either_side,
                       grouping: str | None = None) -> CorpusSplit:
    """Load the split at ``path`` (verified against ``corpus``), or make it and save it there.

    An existing split made with a different seed or sizes is an error rather than silently reused.
    """
    path = Path(path)
    if not path.exists():
        split = make_split(corpus, valid=valid, test=test, seed=seed, group_keys=group_keys, grouping=grouping)
        save_split(split, path)
        log.info("saved split to %s", path)
        return split
    split = load_split(path, corpus)
    n_valid = _resolve_size(valid, len(corpus), "valid")
    n_test = _resolve_size(test, len(corpus), "test")
    if (split.seed, len(split.valid), len(split.test)) != (seed, n_valid, n_test):
        raise DataError(f"{path} holds a split with seed {split.seed}, valid {len(split.valid)}, test "
                        f"{len(split.test)}, not the requested seed {seed}, valid {n_valid}, test {n_test}; "
                        "request those settings or remove the file to make a new split")
    return split
