"""Readers for parallel corpora: two-file (one sentence per line, plain or gzip) and Tatoeba/Anki TSV.

Reading rules, the same for every reader:

* Bytes are split on ``b"\\n"`` only. A stray ``"\\r"``, ``"\\x85"`` or ``"\\u2028"`` inside a sentence does not
  split it (``str.splitlines`` and text-mode universal newlines would, silently misaligning the two sides).
  A ``"\\r"`` right before the ``"\\n"`` (CRLF ending) and a UTF-8 byte-order mark on the first line are removed.
* Gzip is detected from the file's first bytes, not its name.
* Strict where silence would lose data: a different number of lines on the two sides, invalid UTF-8, a
  truncated or corrupt gzip file, or a TSV line without a tab raise :class:`~attnlab.core.errors.DataError`
  (CLI exit code 3), naming the file, the line number and what was found.
* Unicode is normalized to NFC by default (``normalization="NFC"``): the same text typed with precomposed or
  combining accents then maps to the same tokens. ``"NFKC"`` also folds compatibility forms (full-width
  letters and punctuation, ligatures), ``None`` keeps the text as it is.
* For training, sentences are stripped of surrounding whitespace; pairs with an empty side and, if
  ``max_chars`` is set, pairs with a side longer than ``max_chars`` characters are skipped; the counts are
  reported in :class:`CorpusStats`. :func:`read_lines` (used for evaluation) keeps every line.
"""

from __future__ import annotations

import gzip
import logging
import os
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO, Literal

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.download import resolve_data_dir

log = logging.getLogger(__name__)

Normalization = Literal["NFC", "NFKC", "NFD", "NFKD"] | None
NORMALIZATIONS = ("NFC", "NFKC", "NFD", "NFKD", None)

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
MULTI30K_LANGS = ("en", "de", "fr")

_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class CorpusStats:
    """Counts from reading a corpus.

    Attributes:
        files: the files read (as given).
        lines: lines read from each file.
        pairs: pairs kept.
        skipped_empty: pairs skipped because a side was empty (or whitespace only).
        skipped_too_long: pairs skipped because a side had more than ``max_chars`` characters.
    """

    files: tuple[str, ...]
    lines: int = 0
    pairs: int = 0
    skipped_empty: int = 0
    skipped_too_long: int = 0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (f"{self.lines} lines, {self.pairs} pairs kept, {self.skipped_empty} skipped as empty, "
                f"{self.skipped_too_long} skipped as too long")


@dataclass
class Corpus:
    """Sentence pairs read from a corpus, with the line each came from and the reading statistics.

    Attributes:
        pairs: ``(source, target)`` sentences.
        stats: what was read and skipped.
        line_numbers: 1-based line number of each pair in the file(s), aligned with ``pairs``.
        attributions: Tatoeba only: the attribution column of each pair (kept for the record, never trained on).
    """

    pairs: list[tuple[str, str]]
    stats: CorpusStats
    line_numbers: list[int]
    attributions: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def sources(self) -> list[str]:
        return [s for s, _ in self.pairs]

    @property
    def targets(self) -> list[str]:
        return [t for _, t in self.pairs]

    def swapped(self) -> Corpus:
        """The same corpus in the other direction (target -> source)."""
        return Corpus([(t, s) for s, t in self.pairs], self.stats, list(self.line_numbers), self.attributions)

    def select(self, line_numbers: list[int]) -> Corpus:
        """The pairs whose line numbers are listed, in the order given (used by splits).

        Raises:
            DataError: a line number that is not a pair of this corpus.
        """
        where = {n: i for i, n in enumerate(self.line_numbers)}
        missing = [n for n in line_numbers if n not in where]
        if missing:
            raise DataError(f"{len(missing)} selected lines are not pairs of {', '.join(self.stats.files)} "
                            f"(first: line {missing[0]})")
        idx = [where[n] for n in line_numbers]
        attributions = None if self.attributions is None else [self.attributions[i] for i in idx]
        stats = CorpusStats(self.stats.files, self.stats.lines, len(idx))
        return Corpus([self.pairs[i] for i in idx], stats, list(line_numbers), attributions)


# ----------------------------------------------------------------------------------------------- low level


def _check_normalization(normalization: Normalization) -> None:
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization: got {normalization!r}, expected one of {NORMALIZATIONS}")


def _open_binary(path: Path) -> BinaryIO:
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if f.read(2) == _GZIP_MAGIC:
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def iter_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of a plain or gzip UTF-8 file, 1-based.

    Splits on ``b"\\n"`` only; strips a CRLF's ``"\\r"`` and the first line's BOM; no other change.

    Raises:
        DataError: missing file, invalid UTF-8, or a truncated/corrupt gzip stream (naming file and line).
    """
    path = Path(path)
    f = _open_binary(path)
    lineno = 0
    try:
        with f:
            while True:
                try:
                    raw = f.readline()
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise DataError(f"{path}: truncated or corrupt gzip data after line {lineno}: {exc}") from exc
                if not raw:
                    return
                lineno += 1
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start:exc.start + 4]
                    raise DataError(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start + 1} of the line "
                                    f"(found {bad!r}); the file must be UTF-8") from exc
                yield lineno, text
    except OSError as exc:
        raise DataError(f"{path}: read error after line {lineno}: {exc}") from exc


def _normalize(text: str, normalization: Normalization) -> str:
    return unicodedata.normalize(normalization, text) if normalization else text


def read_lines(path: str | os.PathLike[str], *, normalization: Normalization = None) -> list[str]:
    """Every line of a file (empty ones included), e.g. a hypothesis or reference file for scoring.

    Args:
        path: plain or gzip UTF-8 file.
        normalization: Unicode normalization form, or ``None`` (default here) to keep the text as it is.
    """
    _check_normalization(normalization)
    return [_normalize(text, normalization) for _, text in iter_lines(path)]


class _Filter:
    """Shared skip logic: normalize, strip, count empty and over-long pairs."""

    def __init__(self, files: tuple[str, ...], normalization: Normalization, max_chars: int | None):
        _check_normalization(normalization)
        if max_chars is not None and max_chars < 1:
            raise ConfigError(f"max_chars: got {max_chars}, expected a positive number or None")
        self.normalization = normalization
        self.max_chars = max_chars
        self.stats = CorpusStats(files)

    def __call__(self, src: str, tgt: str) -> tuple[str, str] | None:
        src = _normalize(src, self.normalization).strip()
        tgt = _normalize(tgt, self.normalization).strip()
        if not src or not tgt:
            self.stats.skipped_empty += 1
            return None
        if self.max_chars is not None and max(len(src), len(tgt)) > self.max_chars:
            self.stats.skipped_too_long += 1
            return None
        self.stats.pairs += 1
        return src, tgt


# ----------------------------------------------------------------------------------------------- readers


def read_parallel(src_path: str | os.PathLike[str], tgt_path: str | os.PathLike[str], *,
                  normalization: Normalization = "NFC", max_chars: int | None = None) -> Corpus:
    """Read a two-file parallel corpus: line N of ``src_path`` translates line N of ``tgt_path``.

    Args:
        src_path: source-language file (plain or gzip).
        tgt_path: target-language file (plain or gzip).
        normalization: Unicode normalization form (default NFC) or ``None``.
        max_chars: skip pairs with a side longer than this many characters (``None``: keep all).

    Raises:
        DataError: the files have different numbers of lines, or either is unreadable (see :func:`iter_lines`).
    """
    keep = _Filter((str(src_path), str(tgt_path)), normalization, max_chars)
    pairs: list[tuple[str, str]] = []
    numbers: list[int] = []
    n_src = n_tgt = 0
    for a, b in zip_longest(iter_lines(src_path), iter_lines(tgt_path)):
        n_src += a is not None
        n_tgt += b is not None
        if a is None or b is None:
            continue  # keep counting the longer side for the error message
        pair = keep(a[1], b[1])
        if pair is not None:
            pairs.append(pair)
            numbers.append(a[0])
    if n_src != n_tgt:
        raise DataError(f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}: the two sides of a parallel "
                        "corpus must have the same number of lines")
    keep.stats.lines = n_src
    _log_stats(f"{src_path} + {tgt_path}", keep.stats)
    return Corpus(pairs, keep.stats, numbers)


def _log_stats(where: str, stats: CorpusStats) -> None:
    """What was read, at the default log level whenever something was left out (silent drops lose data)."""
    skipped = stats.skipped_empty + stats.skipped_too_long
    (log.info if skipped else log.debug)("%s: %s", where, stats.summary())


def read_tsv(path: str | os.PathLike[str], *, normalization: Normalization = "NFC",
             max_chars: int | None = None) -> Corpus:
    """Read a Tatoeba/Anki file: ``English<TAB>translation<TAB>attribution`` per line (attribution optional).

    Pairs are ``(English, translation)``; use :meth:`Corpus.swapped` for the other direction. The attribution
    column is returned in :attr:`Corpus.attributions` (CC-BY: it must be kept with any redistribution) and is
    never part of the pairs.

    Raises:
        DataError: a non-empty line without a tab or with more than three columns, or an unreadable file.
    """
    keep = _Filter((str(path),), normalization, max_chars)
    pairs: list[tuple[str, str]] = []
    numbers: list[int] = []
    attributions: list[str] = []
    lines = 0
    for lineno, text in iter_lines(path):
        lines = lineno
        if not text.strip():
            keep.stats.skipped_empty += 1
            continue
        fields = text.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: expected English<TAB>translation[<TAB>attribution], "
                            f"found no tab in {text[:60]!r}")
        if len(fields) > 3:
            raise DataError(f"{path}:{lineno}: expected at most 3 tab-separated columns, found {len(fields)} "
                            f"in {text[:60]!r}")
        pair = keep(fields[0], fields[1])
        if pair is not None:
            pairs.append(pair)
            numbers.append(lineno)
            attributions.append(fields[2].strip() if len(fields) == 3 else "")
    keep.stats.lines = lines
    _log_stats(str(path), keep.stats)
    return Corpus(pairs, keep.stats, numbers, attributions)


# ----------------------------------------------------------------------------------------------- named corpora


def multi30k_path(split: str, lang: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of a Multi30k file, ``{data_dir}/multi30k/{split}.{lang}.gz``.

    Raises:
        ConfigError: unknown split or language.
        DataError: the file is missing (with the command that fetches it).
    """
    if split not in MULTI30K_SPLITS:
        raise ConfigError(f"unknown Multi30k split {split!r}; known: {', '.join(MULTI30K_SPLITS)}")
    if lang not in MULTI30K_LANGS:
        raise ConfigError(f"unknown Multi30k language {lang!r}; known: {', '.join(MULTI30K_LANGS)}")
    root = resolve_data_dir(data_dir)
    path = root / "multi30k" / f"{split}.{lang}.gz"
    if not path.is_file():
        raise DataError(f"{path}: no such file; fetch the corpus with `attnlab data fetch multi30k --dest {root}`")
    return path


def read_multi30k(split: str, src_lang: str, tgt_lang: str, data_dir: str | os.PathLike[str] | None = None, *,
                  normalization: Normalization = "NFC", max_chars: int | None = None) -> Corpus:
    """Read one Multi30k split (``train``, ``val`` or ``test_2016_flickr``) for ``src_lang`` -> ``tgt_lang``."""
    if src_lang == tgt_lang:
        raise ConfigError(f"source and target language are both {src_lang!r}")
    return read_parallel(multi30k_path(split, src_lang, data_dir), multi30k_path(split, tgt_lang, data_dir),
                         normalization=normalization, max_chars=max_chars)


def tatoeba_path(lang: str = "cmn", data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of a Tatoeba/Anki file, ``{data_dir}/tatoeba/{lang}.txt``; DataError if it is missing."""
    root = resolve_data_dir(data_dir)
    path = root / "tatoeba" / f"{lang}.txt"
    if not path.is_file():
        raise DataError(f"{path}: no such file; fetch it with `attnlab data fetch tatoeba-{lang} --dest {root}`")
    return path


def read_tatoeba(lang: str = "cmn", data_dir: str | os.PathLike[str] | None = None, *,
                 normalization: Normalization = "NFC", max_chars: int | None = None) -> Corpus:
    """Read the Tatoeba English–``lang`` pairs (English first); see :func:`read_tsv`."""
    return read_tsv(tatoeba_path(lang, data_dir), normalization=normalization, max_chars=max_chars)
