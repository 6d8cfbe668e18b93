"""Synthetic tasks: determinism, correctness of every task, unambiguous dates, leak-free splits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re

import pytest

from attnlab.core.errors import ConfigError
from attnlab.data.synthetic import (
    DATE_FORMATS,
    MONTHS,
    TASKS,
    WEEKDAYS,
    format_date,
    get_task,
    make_pairs,
    split_pairs,
)


def parse_human_date(text: str) -> tuple[dt.date, str | None]:
    """Independent oracle: read a generated date back (day-first numerics, pivot-50 two-digit years)."""
    words = re.findall(r"[a-z]+", text.lower())
    nums = [int(n) for n in re.findall(r"\d+", text)]
    month_words = [w for w in words if w[:3] in {m[:3] for m in MONTHS} and w not in ("the", "of")]
    weekday = next((w for w in words if w[:3] in {d[:3] for d in WEEKDAYS} and w[:3] != "the"), None)
    first_token = re.findall(r"\d+", text)[0]
    if month_words:
        month = next(i + 1 for i, m in enumerate(MONTHS) if m.startswith(month_words[0]))
        day, year = nums[0], nums[-1]
    elif len(first_token) == 4:
        year, month, day = nums
    else:
        day, month, year = nums
    if year < 100:
        year += 2000 if year < 50 else 1900
    return dt.date(year, month, day), weekday


def test_every_task_is_deterministic_and_seed_dependent():
    for name in TASKS:
        a = make_pairs(name, 50, seed=7)
        assert a == make_pairs(name, 50, seed=7)
        assert make_pairs(name, 20, seed=7) == a[:20]
        if name != "hello":
            assert a != make_pairs(name, 50, seed=8)


def test_make_pairs_does_not_touch_global_random_state():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    make_pairs("dates", 10, seed=0)
    assert random.random() == expected


def test_unknown_task_names_task_and_known_ones():
    with pytest.raises(ConfigError, match=r"'nope'.*dates.*reverse.*copy.*sort.*hello"):
        make_pairs("nope", 3, seed=0)
    with pytest.raises(ConfigError, match="n must be"):
        make_pairs("copy", -1, seed=0)


def test_dates_map_to_the_iso_date_they_spell():
    pairs = make_pairs("dates", 3000, seed=1)
    for src, tgt in pairs:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", tgt)
        date = dt.date.fromisoformat(tgt)
        assert 1950 <= date.year <= 2049
        assert src.isascii() and src == src.strip() and "  " not in src
        parsed, weekday = parse_human_date(src)
        assert parsed == date, src
        if weekday is not None:
            assert WEEKDAYS[date.weekday()].startswith(weekday), (src, tgt)
    lower = sum(src == src.lower() and any(c.isalpha() for c in src) for src, _ in pairs)
    upper = sum(src == src.upper() and any(c.isalpha() for c in src) for src, _ in pairs)
    assert lower > 100 and upper > 100  # case variations occur


@pytest.mark.parametrize("fmt", DATE_FORMATS)
def test_each_date_format_is_readable_back(fmt):
    rng = random.Random(fmt)
    for date in (dt.date(2026, 11, 21), dt.date(1950, 1, 1), dt.date(2049, 12, 31), dt.date(2003, 2, 3)):
        text = format_date(date, fmt, rng)
        assert parse_human_date(text)[0] == date, (fmt, text)


def test_examples_from_the_brief():
    date = dt.date(2026, 11, 21)  # a Saturday
    seen = {format_date(date, fmt, random.Random(s)) for fmt in DATE_FORMATS for s in range(12)}
    for expected in ("21 November 2026", "Nov 21, 2026", "November 21, 2026", "21/11/26", "21.11.2026",
                     "2026/11/21", "saturday 21 nov 2026", "Saturday, November 21, 2026", "21 nov 26"):
        assert expected in seen
    with pytest.raises(ConfigError, match="year"):
        format_date(dt.date(2050, 1, 1), "dd/mm/yy", random.Random(0))


def test_sequence_tasks():
    for src, tgt in make_pairs("reverse", 200, seed=3):
        tokens = src.split(" ")
        assert 3 <= len(tokens) <= 10 and all(len(t) == 1 and t.isalnum() for t in tokens)
        assert tgt.split(" ") == tokens[::-1]
    for src, tgt in make_pairs("copy", 50, seed=3):
        assert src == tgt
    for src, tgt in make_pairs("sort", 200, seed=3):
        assert tgt.split(" ") == sorted(src.split(" "))
    assert make_pairs("hello", 4, seed=0) == [("hello", "ohlol")] * 4
    long = dataclasses.replace(TASKS["reverse"], min_len=12, max_len=12, alphabet="ab")
    pairs = make_pairs(long, 20, seed=0)
    assert all(len(s.split()) == 12 and set(s.split()) <= {"a", "b"} for s, _ in pairs)
    assert get_task(long) is long
    with pytest.raises(ConfigError, match="min_len"):
        dataclasses.replace(TASKS["sort"], min_len=5, max_len=2)


def test_tokenizer_hints():
    assert TASKS["dates"].tokenizer == "char" and TASKS["hello"].tokenizer == "char"
    assert TASKS["sort"].tokenizer == "word"


def test_split_pairs_never_leaks_a_source():
    pairs = make_pairs("sort", 2000, seed=5)  # short sequences: many repeated sources
    pairs = pairs + pairs[:100]
    train, valid, test = split_pairs(pairs, valid_frac=0.1, test_frac=0.2, seed=0)
    sources = [{s for s, _ in part} for part in (train, valid, test)]
    assert not sources[0] & sources[1] and not sources[0] & sources[2] and not sources[1] & sources[2]
    distinct = len({s for s, _ in pairs})
    assert len(train) + len(valid) + len(test) == distinct
    assert len(test) == round(0.2 * distinct) and len(valid) == round(0.1 * distinct)
    assert split_pairs(pairs, 0.1, 0.2, seed=0) == (train, valid, test)
    assert split_pairs(pairs, 0.1, 0.2, seed=1)[2] != test
    with pytest.raises(ConfigError, match="valid_frac"):
        split_pairs(pairs, 0.6, 0.5)
