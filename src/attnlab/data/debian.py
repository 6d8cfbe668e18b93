"""Debian package descriptions as a summarization (headline generation) corpus: long description -> synopsis.

The file is Debian's English description index, ``dists/bookworm/main/i18n/Translation-en`` (bzip2 or plain),
in the control-file syntax of Debian Policy §5.1 with the description rules of §5.6.13:

* Entries are separated by empty lines (a line of only spaces and tabs separates entries too, as §5.1 allows
  no such line inside an entry). Each entry has ``Package:``, ``Description-md5:`` and ``Description-en:``;
  field names are matched case-insensitively, other fields are allowed and ignored.
* The first line of ``Description-en`` is the synopsis (the target). The following lines start with a space and
  form the long description (the source); a line holding only ``" ."`` is a paragraph break. Eighteen lines of
  bookworm indent the dot further (``"  ."``), clearly meant as breaks too, so a continuation line whose only
  non-space character is ``"."`` is read as a break.
* The source is one line: every line and paragraph joined with a single space (no separator token, so any
  tokenizer sees plain prose), NFC-normalized, whitespace runs collapsed to one space. Verbatim lines (two or
  more leading spaces, e.g. bullet lists) are joined the same way.

Strict where silence would lose data, as :mod:`attnlab.data.corpus`: a continuation line at the start of an
entry or after a single-line field (``Package``, ``Description-md5``), an entry without ``Package`` or
``Description-en``, a field given twice in one entry, a line that is neither a field nor a continuation,
invalid UTF-8 and a truncated or corrupt bzip2 stream raise :class:`~attnlab.core.errors.DataError` naming the
file and line (quoted content is cut to 40 characters). Continuation lines of unknown fields are ignored.

For training, entries whose long description has fewer than ``min_words`` whitespace-separated words are
dropped (many ``-dev``/``-doc`` packages only say "This package contains the headers"), then entries repeating
an earlier long description exactly (``foo`` and ``foo-data`` often share one) keep only the first; each drop is
counted in :class:`DebianStats`. Many packages share a source package and near-identical text, so
:func:`load_debian_split` keeps every :func:`package_family` and every first paragraph in one part.
"""

from __future__ import annotations

import bz2
import logging
import os
import re
import statistics
import unicodedata
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.corpus import Corpus, CorpusStats
from attnlab.data.download import resolve_data_dir
from attnlab.data.splits import CorpusSplit, GroupKeys, load_or_make_split, split_path

log = logging.getLogger(__name__)

DEBIAN_DIR = "debian-descriptions"
DEBIAN_FILES = ("Translation-en.bz2", "Translation-en")
DEBIAN_GROUPING = ("pairs sharing a source-package family (attnlab.data.debian.package_family) or the case-folded "
                   "first paragraph of their long description are in the same part")

_BZ2_MAGIC = b"BZh"
_BOM = b"\xef\xbb\xbf"
_QUOTE_CHARS = 40
_CHUNK = 1 << 20
_FIELD = re.compile(r"([^\s:]+):(.*)")
_SINGLE_LINE = frozenset({"package", "description-md5"})

Pairs = list[tuple[str, str]]


@dataclass
class DebianStats:
    """Counts from reading a description index.

    Attributes:
        path: the file read.
        lines: lines in the (decompressed) file.
        entries: entries (packages) in the file.
        kept: entries kept as pairs.
        dropped_short: entries whose long description has fewer than ``min_words`` words.
        dropped_duplicate: entries repeating the long description of an earlier kept entry.
        dropped_empty_synopsis: entries with an empty synopsis (none in bookworm).
        min_words: the threshold used.
    """

    path: str
    lines: int = 0
    entries: int = 0
    kept: int = 0
    dropped_short: int = 0
    dropped_duplicate: int = 0
    dropped_empty_synopsis: int = 0
    min_words: int = 15

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (f"{Path(self.path).name}: {self.entries} entries, {self.kept} kept; dropped "
                f"{self.dropped_short} with fewer than {self.min_words} words, {self.dropped_duplicate} repeating "
                f"an earlier long description, {self.dropped_empty_synopsis} with an empty synopsis")


@dataclass
class DebianCorpus:
    """The kept entries: ``corpus.pairs`` are ``(long_description, synopsis)``.

    Attributes:
        corpus: the pairs, with ``line_numbers`` = the line of each entry's ``Package:`` field.
        packages: the package name of each pair, aligned with ``corpus.pairs``.
        first_paragraphs: the first paragraph of each long description (normalized like the source).
        stats: what was read and dropped, and why.
    """

    corpus: Corpus
    packages: list[str]
    first_paragraphs: list[str]
    stats: DebianStats

    def __len__(self) -> int:
        return len(self.corpus)


# ----------------------------------------------------------------------------------------------- reading


def _quote(text: str) -> str:
    """``repr`` of at most 40 characters of ``text`` (an error never echoes unbounded input)."""
    return repr(text[:_QUOTE_CHARS]) + ("…" if len(text) > _QUOTE_CHARS else "")


def _open(path: Path) -> BinaryIO:
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    magic = f.read(3)
    f.seek(0)
    return bz2.BZ2File(f, "rb") if magic == _BZ2_MAGIC else f  # type: ignore[return-value]


def _read_lines(path: Path) -> list[str]:
    """The lines of a plain or bzip2 UTF-8 file, split on ``"\\n"`` only, as :func:`attnlab.data.corpus.iter_lines`.

    The file is decompressed and decoded whole (30 MB for bookworm): twice as fast as line by line.
    """
    chunks: list[bytes] = []
    lines = 0
    f = _open(path)
    try:
        with f:
            while chunk := f.read(_CHUNK):
                chunks.append(chunk)
                lines += chunk.count(b"\n")
    except EOFError as exc:  # bz2: the stream ends before its end-of-stream marker
        raise DataError(f"{path}: truncated bzip2 data after line {lines}") from exc
    except OSError as exc:  # bz2: "Invalid data stream"
        raise DataError(f"{path}: corrupt bzip2 data or read error after line {lines}: {exc}") from exc
    data = b"".join(chunks).removeprefix(_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        bad = data[exc.start:exc.start + 4]
        raise DataError(f"{path}:{lineno}: invalid UTF-8 at byte {column + 1} of the line (found {bad!r}); "
                        "the file must be UTF-8") from exc
    result = text.split("\n")
    if result[-1] == "":
        result.pop()  # the newline ending the last line
    return [line.removesuffix("\r") for line in result]


def _normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass
class _Entry:
    """One entry being parsed: its fields (name -> value, line) and its long description's paragraphs."""

    first_line: int
    fields: dict[str, tuple[str, int]]
    paragraphs: list[list[str]]
    last_field: str | None = None


def _iter_entries(path: Path, stats: DebianStats) -> Iterator[_Entry]:
    """Parse the file into entries, checking the syntax described in the module docstring."""
    entry: _Entry | None = None
    lines = _read_lines(path)
    stats.lines = len(lines)
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():  # entry separator
            if entry is not None:
                yield _finish(entry, path)
                entry = None
            continue
        if text[0] in " \t":  # continuation of the previous field
            if entry is None or entry.last_field is None or entry.last_field in _SINGLE_LINE:
                after = "the start of an entry" if entry is None else f"the single-line field {entry.last_field}"
                raise DataError(f"{path}:{lineno}: continuation line {_quote(text)} after {after}; only a "
                                "description continues on lines starting with a space")
            if entry.last_field == "description-en":
                if text.strip() == ".":
                    entry.paragraphs.append([])
                else:
                    entry.paragraphs[-1].append(text)
            continue
        match = _FIELD.fullmatch(text)
        if match is None:
            raise DataError(f"{path}:{lineno}: expected 'Field: value' or a continuation line, found {_quote(text)}")
        name = match.group(1).casefold()
        if entry is None:
            entry = _Entry(lineno, {}, [[]])
        if name in entry.fields:
            raise DataError(f"{path}:{lineno}: field {match.group(1)} given twice in the entry starting at line "
                            f"{entry.first_line} (first at line {entry.fields[name][1]})")
        entry.fields[name] = (match.group(2).strip(), lineno)
        entry.last_field = name
    if entry is not None:
        yield _finish(entry, path)


def _finish(entry: _Entry, path: Path) -> _Entry:
    for field, label in (("package", "Package"), ("description-en", "Description-en")):
        if not entry.fields.get(field, ("", 0))[0]:
            what = "an empty" if field in entry.fields else "no"
            raise DataError(f"{path}:{entry.first_line}: the entry starting here has {what} {label} field")
    return entry


def debian_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``{data_dir}/debian-descriptions/Translation-en.bz2`` (or the uncompressed ``Translation-en``).

    Raises:
        DataError: neither file exists (with the command that fetches it).
    """
    root = resolve_data_dir(data_dir)
    for name in DEBIAN_FILES:
        path = root / DEBIAN_DIR / name
        if path.is_file():
            return path
    raise DataError(f"{root / DEBIAN_DIR / DEBIAN_FILES[0]}: no such file; fetch it with "
                    f"`attnlab data fetch debian-descriptions --dest {root}`")


def read_translation_file(path: str | os.PathLike[str], *, min_words: int = 15) -> DebianCorpus:
    """Read one ``Translation-en`` file (bzip2 or plain) into ``(long_description, synopsis)`` pairs.

    Args:
        path: the file; bzip2 is detected from its first bytes, not its name.
        min_words: drop entries whose long description has fewer whitespace-separated words (an empty one is
            dropped even with ``min_words=0``).

    Raises:
        ConfigError: a negative ``min_words``.
        DataError: unreadable or malformed file (see the module docstring), naming the file and line.
    """
    if min_words < 0:
        raise ConfigError(f"min_words: got {min_words}, expected a count >= 0")
    path = Path(path)
    stats = DebianStats(str(path), min_words=min_words)
    pairs: Pairs = []
    numbers: list[int] = []
    packages: list[str] = []
    first_paragraphs: list[str] = []
    seen: set[str] = set()
    for entry in _iter_entries(path, stats):
        stats.entries += 1
        synopsis = _normalize(entry.fields["description-en"][0])
        paragraphs = [p for p in (_normalize(" ".join(lines)) for lines in entry.paragraphs) if p]
        source = " ".join(paragraphs)
        if not source or len(source.split()) < min_words:
            stats.dropped_short += 1
        elif not synopsis:
            stats.dropped_empty_synopsis += 1
        elif source in seen:
            stats.dropped_duplicate += 1
        else:
            seen.add(source)
            pairs.append((source, synopsis))
            numbers.append(entry.fields["package"][1])
            packages.append(entry.fields["package"][0])
            first_paragraphs.append(paragraphs[0])
    stats.kept = len(pairs)
    corpus_stats = CorpusStats((str(path),), stats.lines, len(pairs), skipped_empty=stats.dropped_empty_synopsis)
    log.info("%s", stats.summary())
    return DebianCorpus(Corpus(pairs, corpus_stats, numbers), packages, first_paragraphs, stats)


def read_debian_descriptions(data_dir: str | os.PathLike[str] | None = None, *,
                             min_words: int = 15) -> DebianCorpus:
    """Read ``debian-descriptions/Translation-en.bz2`` under the data directory; see :func:`read_translation_file`."""
    return read_translation_file(debian_path(data_dir), min_words=min_words)


# ----------------------------------------------------------------------------------------------- families

# Binary-package suffixes stripped repeatedly: roles named by Debian Policy (§8.4 -dev, §12.3 -doc) and by common
# practice (-data, -common, -dbg, ...), language bindings and common sub-package names.
_SUFFIXES = ("-dev", "-doc", "-docs", "-data", "-common", "-dbg", "-dbgsym", "-bin", "-utils", "-tools",
             "-examples", "-tests", "-runtime", "-headers", "-static", "-base", "-core", "-client", "-server",
             "-daemon", "-plugins", "-plugin", "-extra", "-extras", "-all", "-cli", "-perl", "-java", "-cil",
             "-ocaml")
# Prefixes naming an ecosystem (Perl/Python/Go/... team naming policies) or a library, stripped once.
_PREFIXES = ("python3-", "python-", "pypy3-", "golang-", "ruby-", "node-", "libjs-", "r-cran-", "r-bioc-",
             "r-other-", "php-", "lua-", "elpa-", "fonts-", "texlive-", "haskell-", "libghc-", "librust-",
             "ocaml-", "gir1.2-", "lib")
# A trailing soname or version: "libssl3" -> "ssl", "libglib2.0-0" -> "glib", "gcc-12" -> "gcc".
_VERSION = re.compile(r"[-.+~]?\d[\d.+~-]*$")


def _strip_suffixes(name: str, *, versions: bool = True) -> str:
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, changed = name[:-len(suffix)], True
        stem = _VERSION.sub("", name) if versions else name
        if stem and stem != name:
            name, changed = stem, True
    return name


def package_family(name: str) -> str:
    """A source-package family key for a binary package name, for grouping a split (never shown to a model).

    Rule: lower-case; (1) strip the role suffixes of ``_SUFFIXES`` (``-dev``, ``-doc``, ``-data``, ``-common``,
    ``-dbg``, ...) repeatedly; (2) strip one ecosystem or library prefix of ``_PREFIXES`` (``python3-``,
    ``golang-``, ``r-cran-``, ``gir1.2-``, ``lib``, ...); (3) strip suffixes and any trailing soname or version
    (``1``, ``2.0-0``, ``-12``) repeatedly. A strip that would leave nothing is skipped (``2048`` stays
    ``2048``). Versions go after the prefix so that ``python3-base58`` is ``base``, not ``python``. So ``foo``,
    ``foo-dev``, ``foo-doc``, ``foo-data``, ``foo-common``, ``libfoo1``, ``libfoo-dev``, ``python3-foo`` and
    ``foo-dbg`` all map to ``foo``.

    Limits: it sees names only (Translation-en has no ``Source:`` field). It merges unrelated names that differ
    by a version or a role word (``gtk2``/``gtk3`` -> ``gtk``; ``x11``, ``x86``, ``x509`` -> ``x``;
    ``python3-extras`` -> ``python``), which only makes a split's groups larger. It misses families whose
    binaries are named apart (``bzip2`` vs ``libbz2-1.0``, ``curl`` vs ``libcurl4-openssl-dev``,
    ``libreoffice-l10n-de``), which is why :func:`load_debian_split` also groups by first paragraph.
    """
    family = _strip_suffixes(name.strip().lower(), versions=False)
    for prefix in _PREFIXES:
        if family.startswith(prefix) and len(family) > len(prefix):
            family = family[len(prefix):]
            break
    return _strip_suffixes(family)


# ----------------------------------------------------------------------------------------------- split


def debian_group_keys(debian: DebianCorpus) -> GroupKeys:
    """Group keys for :func:`attnlab.data.splits.make_split`: the package family and the case-folded first paragraph."""
    families = [package_family(p) for p in debian.packages]
    paragraphs = [p.casefold() for p in debian.first_paragraphs]

    def keys(index: int, pair: tuple[str, str]) -> tuple[Hashable, ...]:
        return ("family", families[index]), ("paragraph", paragraphs[index])

    return keys


def check_split(debian: DebianCorpus, split: CorpusSplit) -> None:
    """Raise :class:`DataError` if a package family or a (case-folded) long description is in two parts."""
    part_of = dict.fromkeys(split.valid, "valid") | dict.fromkeys(split.test, "test")
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for i, ((source, _), line) in enumerate(zip(debian.corpus.pairs, debian.corpus.line_numbers, strict=True)):
        part = part_of.get(line, "train")
        for kind, key in (("family", package_family(debian.packages[i])), ("description", source.casefold())):
            other = seen.setdefault((kind, key), (part, debian.packages[i]))
            if other[0] != part:
                raise DataError(f"the split puts {kind} {_quote(key)} in {other[0]} ({other[1]}) and in {part} "
                                f"({debian.packages[i]}); make a new split")


def load_debian_split(corpus: DebianCorpus, *, seed: int = 0, split_file: str | os.PathLike[str] | None = None,
                      valid: int | float = 2000, test: int | float = 2000) -> tuple[Pairs, Pairs, Pairs]:
    """Train, validation and test pairs, from the split saved at ``split_file`` or a new one saved there.

    The default file is the project's ``configs/splits/debian-descriptions-seed{seed}.json``, whatever the
    current directory (:func:`~attnlab.data.splits.split_path`; a relative ``split_file`` is relative to it).
    Groups are drawn whole (:func:`debian_group_keys`), and the result is checked (:func:`check_split`): no
    package family and no long description is in two parts.

    Raises:
        DataError: a split file made from another file, ``min_words`` or settings, or one that leaks.
    """
    path = split_path(split_file, f"debian-descriptions-seed{seed}")
    split = load_or_make_split(path, corpus.corpus, valid=valid, test=test, seed=seed,
                               group_keys=debian_group_keys(corpus), grouping=DEBIAN_GROUPING)
    check_split(corpus, split)
    parts = split.apply(corpus.corpus)
    return parts["train"].pairs, parts["valid"].pairs, parts["test"].pairs


def describe(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Lines for ``attnlab data stats debian-descriptions``: entries, kept, drops by reason, median lengths."""
    debian = read_debian_descriptions(data_dir)
    stats = debian.stats
    src_words = [len(s.split()) for s in debian.corpus.sources] or [0]
    tgt_words = [len(t.split()) for t in debian.corpus.targets] or [0]
    return [
        f"{stats.path}: {stats.lines} lines, {stats.entries} entries",
        f"kept {stats.kept} pairs (long description -> synopsis)",
        f"dropped {stats.dropped_short} with a long description of fewer than {stats.min_words} words",
        f"dropped {stats.dropped_duplicate} repeating an earlier long description",
        f"dropped {stats.dropped_empty_synopsis} with an empty synopsis",
        f"source words: median {statistics.median(src_words):g}, max {max(src_words)}",
        f"target words: median {statistics.median(tgt_words):g}, max {max(tgt_words)}",
        f"package families: {len({package_family(p) for p in debian.packages})}",
    ]
