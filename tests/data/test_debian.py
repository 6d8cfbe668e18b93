"""Debian Translation-en reader: parsing, filters, strict errors with file:line, package families, leak-free splits."""

from __future__ import annotations

import bz2
import logging
import re
from pathlib import Path

import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.debian import (
    check_split,
    debian_group_keys,
    describe,
    load_debian_split,
    package_family,
    read_debian_descriptions,
    read_translation_file,
)
from attnlab.data.splits import CorpusSplit, load_split, make_split

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
REAL = SHARED / "debian-descriptions" / "Translation-en.bz2"

WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"

SAMPLE = f"""Package: foo
Description-md5: 0123456789abcdef0123456789abcdef
Description-en: Foo   does things
 Foo is a tool that does many things for you,
 quickly and  well.
 .
 Features:
  * one
  * two
  .
 The end {WORDS}

Package: foo-dev
Description-md5: 1123456789abcdef0123456789abcdef
Description-en: Foo does things (headers)
 This package contains the headers.

Package: foo-data
Description-md5: 2123456789abcdef0123456789abcdef
Description-en: Foo does things (data)
 Foo is a tool that does many things for you,
 quickly and  well.
 .
 Features:
  * one
  * two
  .
 The end {WORDS}

Package: cafe
X-Unknown: ignored
 and its continuation too
Description-en: Cafe\u0301 synopsis
 {WORDS} cafe\u0301
Description-md5: 3123456789abcdef0123456789abcdef
"""


def write(path: Path, text: str | bytes, *, compress: bool = True) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(bz2.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [True, False], ids=["bz2", "plain"])
def test_reads_pairs_paragraphs_and_line_numbers(tmp_path, compress):
    debian = read_translation_file(write(tmp_path / "Translation-en", SAMPLE, compress=compress))
    sources, targets = debian.corpus.sources, debian.corpus.targets
    assert debian.packages == ["foo", "cafe"]
    assert debian.corpus.line_numbers == [1, 30]
    assert targets == ["Foo does things", "Caf\u00e9 synopsis"]  # NFC
    # Lines and paragraphs joined by one space; bullets and the indented "  ." break read as text and a break.
    first = "Foo is a tool that does many things for you, quickly and well."
    assert sources[0] == f"{first} Features: * one * two The end {WORDS}"
    assert debian.first_paragraphs[0] == first
    assert sources[1] == f"{WORDS} caf\u00e9"
    stats = debian.stats
    assert (stats.entries, stats.kept, stats.dropped_short, stats.dropped_duplicate) == (4, 2, 1, 1)
    assert stats.lines == SAMPLE.count("\n")
    assert debian.corpus.stats.lines == stats.lines and debian.corpus.stats.pairs == 2


def test_data_dir_layout_prefers_bz2_and_accepts_plain(tmp_path):
    folder = tmp_path / "debian-descriptions"
    folder.mkdir()
    write(folder / "Translation-en", SAMPLE, compress=False)
    assert len(read_debian_descriptions(tmp_path)) == 2
    write(folder / "Translation-en.bz2", SAMPLE.replace("Package: foo-dev", "Package: bar"))
    assert read_debian_descriptions(tmp_path).stats.path.endswith("Translation-en.bz2")
    with pytest.raises(DataError, match="attnlab data fetch debian-descriptions"):
        read_debian_descriptions(tmp_path / "elsewhere")


def entry(name: str, synopsis: str, *lines: str) -> str:
    return "\n".join([f"Package: {name}", "Description-md5: 0", f"Description-en: {synopsis}",
                      *(f" {line}" for line in lines)]) + "\n"


def test_min_words_and_duplicates_are_counted_and_logged(tmp_path, caplog):
    long_a = " ".join(f"a{i}" for i in range(15))
    long_b = " ".join(f"b{i}" for i in range(15))
    text = "\n".join([
        entry("p1", "first", long_a),
        entry("p2", "short", "only fourteen words " + " ".join(f"c{i}" for i in range(11))),
        entry("p3", "copy of p1", *long_a.split(" ", 5)),  # same words over several lines: still a duplicate
        entry("p4", "no long description"),
        entry("p5", "second", long_b),
        entry("p6", "copy of p5", long_b),
    ])
    path = write(tmp_path / "t.bz2", text)
    with caplog.at_level(logging.INFO, logger="attnlab.data.debian"):
        debian = read_translation_file(path)
    assert debian.packages == ["p1", "p5"]  # the first of each duplicate is kept
    assert (debian.stats.dropped_short, debian.stats.dropped_duplicate, debian.stats.kept) == (2, 2, 2)
    [record] = [r for r in caplog.records if r.name == "attnlab.data.debian"]
    assert "6 entries, 2 kept" in record.getMessage() and "2 with fewer than 15 words" in record.getMessage()
    loose = read_translation_file(path, min_words=0)
    assert loose.packages == ["p1", "p2", "p5"]  # an empty long description is dropped even so
    assert loose.stats.dropped_short == 1
    with pytest.raises(ConfigError):
        read_translation_file(path, min_words=-1)


GOOD = entry("ok", "fine", WORDS)


@pytest.mark.parametrize(("text", "line", "what"), [
    (" starts with a continuation\n", 1, "continuation line"),
    (GOOD + "\nPackage: p\n continued package\n", 7, "single-line field package"),
    (GOOD + "\n\n continuation between entries\n", 7, "start of an entry"),
    (GOOD + "\nDescription-md5: 0\nDescription-en: no package\n", 6, "no Package field"),
    (GOOD + "\nPackage: p\nDescription-md5: 0\n", 6, "no Description-en field"),
    (GOOD + "\nPackage:\nDescription-en: empty package\n", 6, "an empty Package field"),
    (GOOD + "\nPackage: p\nDescription-en: a\nPackage: q\n", 8, "given twice"),
    (GOOD + "\nPackage: p\ndescription-en: a\nDescription-EN: b\n", 8, "given twice"),
    (GOOD + "\nno colon on this line\n", 6, "expected 'Field: value'"),
    (GOOD.encode() + b"\nPackage: p\xff\n", 6, "invalid UTF-8"),
])
@pytest.mark.parametrize("compress", [True, False], ids=["bz2", "plain"])
def test_malformed_files_raise_data_error_with_file_and_line(tmp_path, text, line, what, compress):
    path = write(tmp_path / "Translation-en", text, compress=compress)
    with pytest.raises(DataError, match=what) as info:
        read_translation_file(path)
    assert f"{path}:{line}:" in str(info.value)


def test_quoted_content_is_cut(tmp_path):
    path = write(tmp_path / "t", "x" * 5000 + "\n")
    with pytest.raises(DataError) as info:
        read_translation_file(path)
    assert len(str(info.value)) < len(str(path)) + 150 and "…" in str(info.value)


def test_truncated_and_corrupt_bz2(tmp_path):
    data = bz2.compress("\n".join(entry(f"p{i}", f"s{i}", WORDS, str(i)) for i in range(2000)).encode())
    assert len(data) > 1000
    path = write(tmp_path / "truncated.bz2", data[: len(data) // 2], compress=False)
    with pytest.raises(DataError, match=re.escape(f"{path}: truncated bzip2 data after line ")):
        read_translation_file(path)
    corrupt = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
    path = write(tmp_path / "corrupt.bz2", corrupt, compress=False)
    with pytest.raises(DataError, match=re.escape(f"{path}: corrupt bzip2 data")):
        read_translation_file(path)


def test_crlf_and_bom_are_tolerated(tmp_path):
    crlf = "\ufeff" + SAMPLE.replace("\n", "\r\n")
    assert read_translation_file(write(tmp_path / "t", crlf)).corpus.pairs == \
        read_translation_file(write(tmp_path / "u", SAMPLE)).corpus.pairs


# Real names from bookworm's Translation-en (checked against the file in test_real_file).
FAMILIES = {
    "0ad": "0ad", "0ad-data": "0ad", "0ad-data-common": "0ad",
    "openssl": "openssl", "libssl3": "ssl", "libssl-dev": "ssl", "libssl-doc": "ssl",
    "libgtk-3-0": "gtk", "libgtk-3-dev": "gtk", "libgtk-3-common": "gtk", "gir1.2-gtk-3.0": "gtk",
    "libglib2.0-0": "glib", "libglib2.0-dev": "glib", "libglib2.0-data": "glib",
    "python3-numpy": "numpy", "python3-aioftp": "aioftp", "python-aioftp-doc": "aioftp",
    "python3": "python", "python3-dev": "python", "libpython3-dev": "python", "python3-base58": "base",
    "gcc-12": "gcc", "gcc-12-base": "gcc",
    "libboost1.74-dev": "boost", "libboost-dev": "boost",
    "r-cran-ggplot2": "ggplot", "golang-github-spf13-cobra-dev": "github-spf13-cobra",
    "libwww-perl": "www", "libc6": "c", "libc6-dev": "c", "libc-bin": "c",
    "2048": "2048", "libx11-6": "x", "libx11-dev": "x", "x11-common": "x",
    "postgresql-15": "postgresql", "postgresql-client-15": "postgresql", "postgresql-common": "postgresql",
}


@pytest.mark.parametrize(("name", "family"), sorted(FAMILIES.items()))
def test_package_family(name, family):
    assert package_family(name) == family


def family_corpus(tmp_path: Path) -> Path:
    """40 families of 3 packages, unique text each; families 0 and 1 share a first paragraph."""
    entries = []
    for f in range(40):
        for name in (f"fam{chr(97 + f % 26)}{chr(97 + f // 26)}", f"libfam{chr(97 + f % 26)}{chr(97 + f // 26)}1",
                     f"fam{chr(97 + f % 26)}{chr(97 + f // 26)}-doc"):
            intro = "Shared intro paragraph for two families." if f < 2 else f"Intro {name}."
            entries.append(entry(name, f"synopsis of {name}", intro, ".", f"{WORDS} {name}"))
    return write(tmp_path / "Translation-en.bz2", "\n".join(entries))


def test_split_keeps_families_and_first_paragraphs_together(tmp_path):
    debian = read_translation_file(family_corpus(tmp_path))
    assert len(debian) == 120
    split_file = tmp_path / "split.json"
    train, valid, test = load_debian_split(debian, seed=3, split_file=split_file, valid=12, test=12)
    assert (len(train), len(valid), len(test)) == (96, 12, 12)
    parts = {}
    for part, pairs in (("train", train), ("valid", valid), ("test", test)):
        for source, _ in pairs:
            parts.setdefault(package_family(source.split()[-1]), set()).add(part)
    assert len(parts) == 40 and all(len(p) == 1 for p in parts.values())
    # Reloading gives the same parts; the file records the grouping.
    assert load_debian_split(debian, seed=3, split_file=split_file, valid=12, test=12) == (train, valid, test)
    assert "package_family" in load_split(split_file).grouping


def test_first_paragraph_links_families_across_seeds(tmp_path):
    debian = read_translation_file(family_corpus(tmp_path))
    keys = debian_group_keys(debian)
    index = {name: i for i, name in enumerate(debian.packages)}
    line = dict(zip(debian.packages, debian.corpus.line_numbers, strict=True))
    places = set()
    for seed in range(20):
        split = make_split(debian.corpus, valid=12, test=12, seed=seed, group_keys=keys)
        part = {n: "valid" for n in split.valid} | {n: "test" for n in split.test}
        where = {name: part.get(line[name], "train") for name in ("famaa", "libfamaa1", "famba", "famba-doc")}
        assert len(set(where.values())) == 1, (seed, where)
        places.add(where["famaa"])
    assert places == {"train", "valid", "test"}  # the linked group moved, so a separation would have shown
    assert keys(index["famaa"], ("", ""))[1] == keys(index["famba"], ("", ""))[1]


def test_check_split_detects_a_family_in_two_parts(tmp_path):
    debian = read_translation_file(family_corpus(tmp_path))
    line_of = dict(zip(debian.packages, debian.corpus.line_numbers, strict=True))
    leaky = CorpusSplit((), 0, len(debian), valid=(line_of["famca"],), test=())  # famca-doc stays in train
    with pytest.raises(DataError, match="family 'famca' in"):
        check_split(debian, leaky)


def test_describe(tmp_path):
    (tmp_path / "debian-descriptions").mkdir()
    write(tmp_path / "debian-descriptions" / "Translation-en.bz2", SAMPLE)
    lines = describe(tmp_path)
    assert "4 entries" in lines[0] and "kept 2 pairs" in lines[1]
    assert any("dropped 1 with a long description of fewer than 15 words" in line for line in lines)
    assert any(line.startswith("source words: median ") for line in lines)


@pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL} is missing (fetch: attnlab data fetch debian-descriptions)")
def test_real_file_and_committed_split():
    debian = read_debian_descriptions(SHARED)
    stats = debian.stats
    assert stats.entries == 63956  # as ../shared/data/README.md says
    assert (stats.lines, stats.kept, stats.dropped_short, stats.dropped_duplicate) == (725641, 58285, 2853, 2818)
    raw = "\n" + bz2.decompress(REAL.read_bytes()).decode()
    assert [name for name in FAMILIES if f"\nPackage: {name}\n" not in raw] == []
    train, valid, test = load_debian_split(debian, split_file=REPO / "configs/splits/debian-descriptions-seed0.json")
    assert (len(train), len(valid), len(test)) == (54285, 2000, 2000)
    held_out = {s.casefold() for s, _ in valid + test}
    assert not any(s.casefold() in held_out for s, _ in train)
