"""Seeded synthetic sequence-to-sequence tasks: the data of attnlab's embedded default.

Every task generates ``(source_text, target_text)`` pairs from a :class:`random.Random` that the caller
seeds; nothing reads or writes global random state, so ``make_pairs(task, n, seed)`` returns the same
pairs on every machine and every run.

Tasks (registered in :data:`TASKS`):

- ``"dates"``: date normalization, the classic task where attention alignments are easy to read
  (each output digit attends to the source characters it comes from). Many human formats map to ISO
  ``YYYY-MM-DD``, e.g. ``"Saturday, November 21, 2026" -> "2026-11-21"``. Character-level.
- ``"reverse"``, ``"copy"``, ``"sort"``: space-separated tokens (single digits or letters) reversed,
  copied, or sorted (by code point: digits before letters). Word-level.
- ``"hello"``: ``"hello" -> "ohlol"``, the classic RNN toy (every pair is the same). Character-level.
- ``"keywords"`` (classification): a sentence of neutral filler words with exactly one sentiment word, whose
  polarity is the label (``"the plot was superb and long" -> "positive"``). Where the model should look is
  known exactly, so attention pooling can be checked against it. Word-level.

Date formats are chosen so that no source is ambiguous:

- numeric dates with the year last are always day-month-year (``21/11/26``, ``21.11.2026``,
  ``21-11-2026``); dates with a four-digit year first are year-month-day (``2026/11/21``). The US
  month-day-year order (``11/21/2026``) is never generated, because ``05/11/2026`` would have two
  readings.
- years lie in 1950-2049, so a two-digit year has one reading with the pivot at 50: ``00-49`` means
  ``2000-2049`` and ``50-99`` means ``1950-1999``.
- weekday names are always the true weekday of the date (computed with :mod:`datetime`).
- month and weekday names are English (fixed tables, independent of the process locale) and appear in
  lower, Title or UPPER case at random.
"""

from __future__ import annotations

import datetime as dt
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from attnlab.core.errors import ConfigError

MONTHS: tuple[str, ...] = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)
"""English month names, index 0 = January (not ``calendar.month_name``, which follows the locale)."""

WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""English weekday names, index = :meth:`datetime.date.weekday` (0 = Monday)."""

FIRST_YEAR = 1950
LAST_YEAR = 2049
TWO_DIGIT_YEAR_PIVOT = 50
"""Two-digit years below the pivot are 20xx, the others 19xx (unambiguous for 1950-2049)."""

DIGITS = "0123456789"
LETTERS = "abcdefghijklmnopqrstuvwxyz"

TokenizerKind = Literal["char", "word"]


# ------------------------------------------------------------------------------------------ dates


def _ordinal_suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


@dataclass(frozen=True)
class _DateParts:
    """The pieces every date format is assembled from (names already case-styled)."""

    day: str  # "21" (or zero-padded "05" where the format allows it)
    month_num: str  # "11" or "5"/"05"
    month: str  # "November"
    mon: str  # "Nov"
    weekday: str  # "Saturday"
    wkd: str  # "Sat"
    year: str  # "2026"
    yy: str  # "26"
    th: str  # "21st"
    the: str  # "the" (case-styled like the names)
    of: str  # "of"


_DATE_FORMATS: dict[str, Callable[[_DateParts], str]] = {
    "d month yyyy": lambda p: f"{p.day} {p.month} {p.year}",  # 21 November 2026
    "d mon yyyy": lambda p: f"{p.day} {p.mon} {p.year}",  # 21 Nov 2026
    "d mon yy": lambda p: f"{p.day} {p.mon} {p.yy}",  # 21 nov 26
    "mon d, yyyy": lambda p: f"{p.mon} {p.day}, {p.year}",  # Nov 21, 2026
    "month d, yyyy": lambda p: f"{p.month} {p.day}, {p.year}",  # November 21, 2026
    "month dth, yyyy": lambda p: f"{p.month} {p.th}, {p.year}",  # November 21st, 2026
    "the dth of month yyyy": lambda p: f"{p.the} {p.th} {p.of} {p.month} {p.year}",  # the 21st of november 2026
    "weekday d mon yyyy": lambda p: f"{p.weekday} {p.day} {p.mon} {p.year}",  # saturday 21 nov 2026
    "weekday, month d, yyyy": lambda p: f"{p.weekday}, {p.month} {p.day}, {p.year}",  # Saturday, November 21, 2026
    "wkd, d mon yyyy": lambda p: f"{p.wkd}, {p.day} {p.mon} {p.year}",  # Sat, 21 Nov 2026
    "dd/mm/yy": lambda p: f"{p.day}/{p.month_num}/{p.yy}",  # 21/11/26
    "dd/mm/yyyy": lambda p: f"{p.day}/{p.month_num}/{p.year}",  # 21/11/2026
    "dd.mm.yyyy": lambda p: f"{p.day}.{p.month_num}.{p.year}",  # 21.11.2026
    "dd-mm-yyyy": lambda p: f"{p.day}-{p.month_num}-{p.year}",  # 21-11-2026
    "yyyy/mm/dd": lambda p: f"{p.year}/{p.month_num}/{p.day}",  # 2026/11/21
    "yyyy-mm-dd": lambda p: f"{p.year}-{p.month_num}-{p.day}",  # 2026-11-21 (already normal)
}
_NUMERIC_FORMATS = frozenset(name for name in _DATE_FORMATS if "/" in name or "." in name or "-" in name)

DATE_FORMATS: tuple[str, ...] = tuple(_DATE_FORMATS)
"""Names of the source formats of the ``"dates"`` task (each name spells its pattern)."""

_CASE_STYLES: tuple[Callable[[str], str], ...] = (str.lower, str.title, str.upper)


def format_date(date: dt.date, fmt: str, rng: random.Random) -> str:
    """Write ``date`` in the human format named ``fmt`` (one of :data:`DATE_FORMATS`).

    ``rng`` picks the letter case of month/weekday names and, in numeric formats, whether day and
    month are zero-padded. Raises ConfigError for an unknown format or a year outside 1950-2049.
    """
    if fmt not in _DATE_FORMATS:
        raise ConfigError(f"date format {fmt!r} is unknown; expected one of {list(DATE_FORMATS)}")
    if not FIRST_YEAR <= date.year <= LAST_YEAR:
        raise ConfigError(f"date {date.isoformat()}: year must lie in {FIRST_YEAR}-{LAST_YEAR} "
                          "(two-digit years would be ambiguous otherwise)")
    case = rng.choice(_CASE_STYLES)
    pad = fmt in _NUMERIC_FORMATS and (fmt.startswith("yyyy") or rng.random() < 0.5)
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    parts = _DateParts(
        day=f"{date.day:02d}" if pad else str(date.day),
        month_num=f"{date.month:02d}" if pad else str(date.month),
        month=case(month),
        mon=case(month[:3]),
        weekday=case(weekday),
        wkd=case(weekday[:3]),
        year=f"{date.year:04d}",
        yy=f"{date.year % 100:02d}",
        th=f"{date.day}{_ordinal_suffix(date.day)}",
        the=case("the"),
        of=case("of"),
    )
    return _DATE_FORMATS[fmt](parts)


def random_date(rng: random.Random, first_year: int = FIRST_YEAR, last_year: int = LAST_YEAR) -> dt.date:
    """A date drawn uniformly from 1 January ``first_year`` to 31 December ``last_year``."""
    start = dt.date(first_year, 1, 1).toordinal()
    end = dt.date(last_year, 12, 31).toordinal()
    return dt.date.fromordinal(rng.randint(start, end))


# ------------------------------------------------------------------------------------------ tasks


class Task(ABC):
    """A synthetic task: draws one ``(source, target)`` pair per call of :meth:`sample`."""

    name: str
    description: str
    tokenizer: ClassVar[TokenizerKind]
    """The tokenizer kind the task is meant for (``"char"`` or ``"word"``)."""

    @abstractmethod
    def sample(self, rng: random.Random) -> tuple[str, str]:
        """One ``(source_text, target_text)`` pair drawn with ``rng`` (and nothing else)."""


@dataclass(frozen=True)
class DateTask(Task):
    """Human-written dates -> ISO ``YYYY-MM-DD`` (see the module docstring for the formats)."""

    name: str = "dates"
    description: str = "date normalization: '21 November 2026', 'Nov 21, 2026', ... -> '2026-11-21'"
    formats: tuple[str, ...] = DATE_FORMATS
    first_year: int = FIRST_YEAR
    last_year: int = LAST_YEAR
    tokenizer: ClassVar[TokenizerKind] = "char"

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in _DATE_FORMATS]
        if not self.formats or unknown:
            raise ConfigError(f"DateTask.formats: got {list(self.formats)!r}, expected a non-empty subset of "
                              f"{list(DATE_FORMATS)}")
        if not FIRST_YEAR <= self.first_year <= self.last_year <= LAST_YEAR:
            raise ConfigError(f"DateTask years: got {self.first_year}-{self.last_year}, expected "
                              f"{FIRST_YEAR} <= first_year <= last_year <= {LAST_YEAR}")

    def sample(self, rng: random.Random) -> tuple[str, str]:
        date = random_date(rng, self.first_year, self.last_year)
        return format_date(date, rng.choice(self.formats), rng), date.isoformat()


def _reverse(tokens: list[str]) -> list[str]:
    return tokens[::-1]


def _copy(tokens: list[str]) -> list[str]:
    return list(tokens)


def _sort(tokens: list[str]) -> list[str]:
    return sorted(tokens)


@dataclass(frozen=True)
class SequenceTask(Task):
    """Random space-separated tokens -> ``transform(tokens)``, space-separated.

    Each source has a length drawn uniformly from ``[min_len, max_len]`` and tokens drawn uniformly
    (with repetition) from the characters of ``alphabet``. Variants: ``dataclasses.replace(TASKS["sort"],
    max_len=20)``.
    """

    name: str
    description: str
    transform: Callable[[list[str]], list[str]]
    min_len: int = 3
    max_len: int = 10
    alphabet: str = DIGITS + LETTERS
    tokenizer: ClassVar[TokenizerKind] = "word"

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(f"SequenceTask {self.name!r}: got min_len={self.min_len}, max_len={self.max_len}, "
                              "expected 1 <= min_len <= max_len")
        if not self.alphabet or any(c.isspace() for c in self.alphabet):
            raise ConfigError(f"SequenceTask {self.name!r}: alphabet {self.alphabet!r} must be non-empty "
                              "and contain no whitespace")

    def sample(self, rng: random.Random) -> tuple[str, str]:
        length = rng.randint(self.min_len, self.max_len)
        tokens = [rng.choice(self.alphabet) for _ in range(length)]
        return " ".join(tokens), " ".join(self.transform(tokens))


@dataclass(frozen=True)
class HelloTask(Task):
    """``"hello" -> "ohlol"``: predict the next character of "hello" from each one (the RNN toy)."""

    name: str = "hello"
    description: str = "'hello' -> 'ohlol' (the classic RNN toy; every pair is the same)"
    tokenizer: ClassVar[TokenizerKind] = "char"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        return "hello", "ohlol"


FILLER_WORDS: tuple[str, ...] = (
    "the", "a", "film", "plot", "cast", "story", "movie", "ending", "music", "scene", "was", "is", "and", "very",
    "quite", "long", "short", "old", "new", "its", "this", "that", "with", "of", "in", "on", "it", "felt", "seemed",
)
POSITIVE_WORDS: tuple[str, ...] = ("superb", "great", "moving", "brilliant", "charming", "delightful")
NEGATIVE_WORDS: tuple[str, ...] = ("awful", "dull", "tedious", "clumsy", "boring", "dreadful")


@dataclass(frozen=True)
class KeywordTask(Task):
    """Filler words plus one sentiment keyword at a random position -> its polarity (a classification label).

    Filler words never carry polarity, so the keyword alone decides the label; :meth:`keyword_position` says
    where it is (for checking where a classifier's attention goes).
    """

    name: str = "keywords"
    description: str = "one sentiment word among neutral filler words -> 'positive' or 'negative'"
    min_len: int = 4
    max_len: int = 12
    tokenizer: ClassVar[TokenizerKind] = "word"
    labels: ClassVar[tuple[str, str]] = ("negative", "positive")

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(f"KeywordTask: got min_len={self.min_len}, max_len={self.max_len}, expected "
                              "1 <= min_len <= max_len")

    def sample(self, rng: random.Random) -> tuple[str, str]:
        length = rng.randint(self.min_len, self.max_len)
        words = [rng.choice(FILLER_WORDS) for _ in range(length - 1)]
        label = rng.randrange(2)
        keyword = rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS)
        words.insert(rng.randint(0, len(words)), keyword)
        return " ".join(words), self.labels[label]

    @staticmethod
    def keyword_position(text: str) -> int:
        """Index (in whitespace words) of the sentiment keyword of a generated ``text``."""
        polar = set(POSITIVE_WORDS) | set(NEGATIVE_WORDS)
        return next(i for i, w in enumerate(text.split()) if w in polar)


TASKS: dict[str, Task] = {
    "dates": DateTask(),
    "reverse": SequenceTask("reverse", "reverse a sequence of digit/letter tokens", _reverse),
    "copy": SequenceTask("copy", "copy a sequence of digit/letter tokens", _copy),
    "sort": SequenceTask("sort", "sort a sequence of digit/letter tokens (digits before letters)", _sort),
    "hello": HelloTask(),
    "keywords": KeywordTask(),
}
"""Registered tasks by name (read-only by convention; build variants with :func:`dataclasses.replace`)."""


def get_task(task: str | Task) -> Task:
    """The registered task called ``task`` (a :class:`Task` instance is returned unchanged)."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return TASKS[task]


def make_pairs(task: str | Task, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` seeded ``(source_text, target_text)`` pairs of ``task`` (a name in :data:`TASKS` or a Task).

    The same ``(task, n, seed)`` always gives the same list, and the first ``m`` pairs of ``n > m`` equal
    ``make_pairs(task, m, seed)``. Raises ConfigError for an unknown task or a negative ``n``.
    """
    spec = get_task(task)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"make_pairs: n must be a non-negative int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"make_pairs: seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    return [spec.sample(rng) for _ in range(n)]


def split_pairs(
    pairs: Sequence[tuple[str, str]], valid_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Split ``pairs`` into ``(train, valid, test)`` with no source shared between splits.

    Pairs are first deduplicated by source (the first pair of each source is kept), then the distinct
    sources are shuffled with ``random.Random(seed)`` and ``round(frac * n_distinct)`` of them go to
    test and to valid; the rest is train. Within each split, pairs keep their original order. A held-out
    source is therefore never seen in training.
    """
    for name, frac in (("valid_frac", valid_frac), ("test_frac", test_frac)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"split_pairs: {name} must lie in [0, 1), got {frac!r}")
    if valid_frac + test_frac >= 1.0:
        raise ConfigError(f"split_pairs: valid_frac + test_frac must be < 1 to leave training data, "
                          f"got {valid_frac} + {test_frac}")
    first_of: dict[str, int] = {}
    for i, (src, _) in enumerate(pairs):
        first_of.setdefault(src, i)
    kept = list(first_of.values())  # positions of distinct sources, in order
    order = kept[:]
    random.Random(seed).shuffle(order)
    n_test = round(test_frac * len(order))
    n_valid = round(valid_frac * len(order))
    test_ids = set(order[:n_test])
    valid_ids = set(order[n_test:n_test + n_valid])
    train = [pairs[i] for i in kept if i not in test_ids and i not in valid_ids]
    valid = [pairs[i] for i in kept if i in valid_ids]
    test = [pairs[i] for i in kept if i in test_ids]
    return train, valid, test
