"""Corpus readers: real Multi30k/Tatoeba files, and every strictness rule on small generated files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.core.errors import ConfigError, DataError, ExitCode
from attnlab.data.corpus import (
    iter_lines,
    multi30k_path,
    read_lines,
    read_multi30k,
    read_parallel,
    read_tatoeba,
    read_tsv,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="../shared/data not present")


def write(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ----------------------------------------------------------------------------------------------- real data


@needs_shared
def test_multi30k_test_split_reads_whole_and_aligned():
    corpus = read_multi30k("test_2016_flickr", "en", "de", SHARED)
    assert len(corpus) == 1000
    assert corpus.stats.lines == 1000 and corpus.stats.skipped_empty == 0
    assert corpus.line_numbers[:3] == [1, 2, 3]
    src, tgt = corpus.pairs[0]
    assert src.startswith("A man in an orange hat")
    assert "Mann" in tgt


@needs_shared
def test_tatoeba_bom_attribution_and_trailing_empty_line():
    corpus = read_tatoeba("cmn", SHARED)
    assert corpus.stats.lines == 29156
    assert len(corpus) == 29155 and corpus.stats.skipped_empty == 1
    assert corpus.pairs[0] == ("Hi.", "嗨。")  # BOM stripped from the first line
    assert corpus.attributions is not None and len(corpus.attributions) == len(corpus)
    assert corpus.attributions[0].startswith("CC-BY 2.0 (France) Attribution: tatoeba.org #538123")
    assert all("tatoeba.org" not in s and "tatoeba.org" not in t for s, t in corpus.pairs[:500])
    assert corpus.swapped().pairs[0] == ("嗨。", "Hi.")


def test_missing_multi30k_file_says_how_to_fetch(tmp_path):
    with pytest.raises(DataError, match="attnlab data fetch multi30k"):
        multi30k_path("train", "en", tmp_path)
    with pytest.raises(ConfigError, match="split"):
        multi30k_path("test2016", "en", tmp_path)


# ----------------------------------------------------------------------------------------------- line rules


def test_only_newline_splits_lines(tmp_path):
    text = "a\rb\x85c\u2028d\u2029e\x0bf\x0cg\x1ch\r\nsecond\n".encode()
    path = write(tmp_path / "weird.txt", text)
    assert read_lines(path) == ["a\rb\x85c\u2028d\u2029e\x0bf\x0cg\x1ch", "second"]


def test_crlf_bom_and_missing_final_newline(tmp_path):
    path = write(tmp_path / "crlf.txt", b"\xef\xbb\xbfone\r\ntwo\r\nthree")
    assert read_lines(path) == ["one", "two", "three"]
    assert [n for n, _ in iter_lines(path)] == [1, 2, 3]


def test_bom_only_stripped_on_first_line(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfa\n\xef\xbb\xbfb\n")
    assert read_lines(path) == ["a", "\ufeffb"]


def test_gzip_detected_by_content_not_name(tmp_path):
    path = write(tmp_path / "plain-name.txt", "Grüße\nzwei\n".encode(), gz=True)
    assert read_lines(path) == ["Grüße", "zwei"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                        max_size=12).filter(lambda s: not s.endswith("\r")), min_size=1, max_size=8),
       st.booleans())
def test_lines_round_trip(tmp_path_factory, lines, gz):
    if lines[0].startswith("\ufeff"):
        lines[0] = "x" + lines[0]
    path = tmp_path_factory.mktemp("rt") / "lines"
    write(path, "".join(line + "\n" for line in lines).encode(), gz=gz)
    assert read_lines(path) == lines


# ----------------------------------------------------------------------------------------------- strictness


def test_line_count_mismatch_names_files_and_counts(tmp_path):
    src = write(tmp_path / "a.en", b"one\ntwo\nthree\n")
    tgt = write(tmp_path / "a.de", b"eins\nzwei\n")
    with pytest.raises(DataError) as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert "a.en has 3 lines" in message and "a.de has 2" in message
    assert info.value.exit_code == ExitCode.DATA


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.de", b"gut\nschlecht \xff\xfe hier\n")
    with pytest.raises(DataError, match=r"bad\.de:2: invalid UTF-8 at byte 10 .*\\xff"):
        read_lines(path)


@pytest.mark.parametrize("cut", [10, -12, -4])
def test_truncated_gzip_is_an_error(tmp_path, cut):
    data = gzip.compress("".join(f"line {i}\n" for i in range(500)).encode())
    path = write(tmp_path / "cut.en.gz", data[:cut])
    with pytest.raises(DataError, match=r"cut\.en\.gz: truncated or corrupt gzip data after line \d+"):
        read_lines(path)


def test_corrupt_gzip_crc_is_an_error(tmp_path):
    data = bytearray(gzip.compress(b"hello\nworld\n"))
    data[-6] ^= 0xFF  # inside the CRC32 trailer
    path = write(tmp_path / "crc.gz", bytes(data))
    with pytest.raises(DataError, match="crc.gz"):
        read_lines(path)


def test_tsv_line_without_tab_names_line(tmp_path):
    path = write(tmp_path / "fra.txt", b"Hi.\tSalut.\tCC-BY\nGo away no tab here\n")
    with pytest.raises(DataError, match=r"fra\.txt:2: expected English<TAB>translation.*'Go away no tab here'"):
        read_tsv(path)


def test_tsv_too_many_columns_is_an_error(tmp_path):
    path = write(tmp_path / "x.txt", b"a\tb\tc\td\n")
    with pytest.raises(DataError, match=r"x\.txt:1: expected at most 3"):
        read_tsv(path)


def test_tsv_two_columns_and_empty_sides(tmp_path):
    path = write(tmp_path / "y.txt", "\ufeffHi.\t嗨。\n\t空\t attr \n\nYes.\t是。\tCC #2 \n".encode())
    corpus = read_tsv(path)
    assert corpus.pairs == [("Hi.", "嗨。"), ("Yes.", "是。")]
    assert corpus.attributions == ["", "CC #2"]
    assert corpus.line_numbers == [1, 4]
    assert (corpus.stats.lines, corpus.stats.skipped_empty) == (4, 2)


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_lines(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------------------- normalization, skips


def test_nfc_by_default_and_options(tmp_path):
    src = write(tmp_path / "n.en", "cafe\u0301 \uff46\n".encode())
    tgt = write(tmp_path / "n.de", b"x\n")
    assert read_parallel(src, tgt).pairs[0][0] == "caf\u00e9 \uff46"
    assert read_parallel(src, tgt, normalization=None).pairs[0][0] == "cafe\u0301 \uff46"
    assert read_parallel(src, tgt, normalization="NFKC").pairs[0][0] == "caf\u00e9 f"
    with pytest.raises(ConfigError, match="normalization"):
        read_parallel(src, tgt, normalization="nfc")  # type: ignore[arg-type]


def test_empty_and_long_pairs_skipped_and_counted(tmp_path):
    src = write(tmp_path / "s.en", b"keep one\n\n  \nthis side is far too long\nok\nkeep two  \n")
    tgt = write(tmp_path / "s.de", b"behalten\nleer links\nauch\nkurz\n\n zwei\n")
    corpus = read_parallel(src, tgt, max_chars=12)
    assert corpus.pairs == [("keep one", "behalten"), ("keep two", "zwei")]
    assert corpus.line_numbers == [1, 6]
    stats = corpus.stats
    assert (stats.lines, stats.pairs, stats.skipped_empty, stats.skipped_too_long) == (6, 2, 3, 1)
    assert "2 pairs kept" in stats.summary()


def test_select_keeps_order_and_rejects_unknown_lines(tmp_path):
    src = write(tmp_path / "s.en", b"a\nb\nc\n")
    tgt = write(tmp_path / "s.de", b"A\nB\nC\n")
    corpus = read_parallel(src, tgt)
    assert corpus.select([3, 1]).pairs == [("c", "C"), ("a", "A")]
    with pytest.raises(DataError, match="first: line 7"):
        corpus.select([1, 7])


def test_skipped_lines_are_reported_at_the_default_level(tmp_path, caplog):
    """A blank line left out of training is said at INFO (the CLI's default level), not only with -v."""
    import logging

    from attnlab.data.corpus import read_parallel

    (tmp_path / "a.txt").write_text("one\n\nthree\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="attnlab.data.corpus"):
        corpus = read_parallel(tmp_path / "a.txt", tmp_path / "b.txt")
    assert len(corpus) == 2
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("1 skipped as empty" in m for m in said), said
