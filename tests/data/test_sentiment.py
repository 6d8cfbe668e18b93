"""Sentiment corpora: strict CSV (bzip2) and one-review-per-line readers, deduplication, line numbers, splits."""

from __future__ import annotations

import bz2
import gzip
import json
import re
from pathlib import Path

import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.sentiment import (
    LABELS,
    SENTIMENT_CORPORA,
    describe,
    load_sentiment_split,
    read_chinese_reviews,
    read_polarity_files,
    read_review_csv,
    read_rotten_tomatoes,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not all((SHARED / name).is_dir() for name in ("rotten-tomatoes", "chinese-reviews")),
                                  reason="../shared/data (rotten-tomatoes, chinese-reviews) not present")

HEADER = b"category,text,movie_name,has_plot_and_reviews\n"
RT_NAME = "rotten_tomatoes_corpus_full.csv.bz2"


def write_rt(data_dir: Path, body: bytes, *, header: bytes = HEADER) -> Path:
    path = data_dir / "rotten-tomatoes" / RT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bz2.compress(header + body))
    return path


def write_reviews(data_dir: Path, pos: list[str], neg: list[str], *, gz: bool = True) -> tuple[Path, Path]:
    folder = data_dir / "chinese-reviews"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, lines in (("pos", pos), ("neg", neg)):
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path = folder / (f"{name}.txt.gz" if gz else f"{name}.txt")
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        paths.append(path)
    return paths[0], paths[1]


# ----------------------------------------------------------------------------------------------- Rotten Tomatoes

RT_BODY = (b'fresh,"Funny, warm, and ""wise"".",movie_a,False\n'  # line 2
           b'rotten,"Line one\nline two",movie_b,True\n'  # lines 3-4
           b'plot,"A plot, with commas\n\nand a blank line",movie_c,True\n'  # lines 5-7
           b'fresh,   ,movie_d,False\n'  # line 8: empty text
           b'rotten,  Plain text  ,movie_e,False\n'  # line 9
           b'fresh,"Funny, warm, and ""wise"".",movie_f,False\n'  # line 10: duplicate of line 2
           b'fresh,Both ways,movie_g,False\n'  # line 11: contradictory with line 12
           b'rotten,Both ways,movie_h,False\n')  # line 12


def test_rotten_tomatoes_quoting_skips_and_line_numbers(tmp_path, caplog):
    write_rt(tmp_path, RT_BODY)
    with caplog.at_level("INFO", logger="attnlab.data.sentiment"):
        corpus = read_rotten_tomatoes(tmp_path)
    assert corpus.pairs == [('Funny, warm, and "wise".', "fresh"), ("Line one\nline two", "rotten"),
                            ("Plain text", "rotten")]
    assert corpus.line_numbers == [2, 3, 9]
    stats = corpus.stats
    assert (stats.lines, stats.records, stats.pairs) == (12, 8, 3)
    skipped = (stats.skipped_plot, stats.skipped_empty, stats.skipped_duplicate, stats.skipped_contradictory)
    assert skipped == (1, 1, 1, 2)
    assert stats.read_per_label == {"fresh": 3, "rotten": 3}
    assert "1 plot summaries" in caplog.text and "1 exact duplicates" in caplog.text


def test_plain_csv_with_bom_and_crlf_is_read(tmp_path):
    path = tmp_path / "reviews.csv"
    body = b'fresh,"a\r\nb",m,False\r\nrotten,c,m,True\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.replace(b"\n", b"\r\n") + body)
    corpus = read_review_csv(path)
    assert corpus.pairs == [("a\r\nb", "fresh"), ("c", "rotten")]
    assert corpus.line_numbers == [2, 4]


@pytest.mark.parametrize(("header", "body", "where", "found"), [
    (b"category,text,movie\n", b"fresh,x,m\n", ":1:", "'category,text,movie'"),
    (HEADER, b'fresh,"two\nlines",m,False\nrotten,x,m\n', ":4:", "found 3"),
    (HEADER, b"fresh,x,m,False\nrotten,x,m,False,extra\n", ":3:", "found 5"),
    (HEADER, b'fresh,"a\nb",m,False\nmeh,x,m,False\n', ":4:", "unknown category 'meh'"),
    (HEADER, b'fresh,"abc"def,m,False\n', ":2:", "malformed CSV record"),
    (HEADER, b'fresh,x,m,False\nrotten,"never closed,m,False\nfresh,y,m,False\n', ":3:", "malformed CSV record"),
])
def test_malformed_csv_raises_naming_file_and_record_line(tmp_path, header, body, where, found):
    path = write_rt(tmp_path, body, header=header)
    with pytest.raises(DataError) as info:
        read_rotten_tomatoes(tmp_path)
    message = str(info.value)
    assert f"{path}{where}" in message and found in message


def test_error_messages_do_not_echo_unbounded_input(tmp_path):
    write_rt(tmp_path, b"x" * 5000 + b",text,m,False\n")
    with pytest.raises(DataError, match="unknown category") as info:
        read_rotten_tomatoes(tmp_path)
    assert "x" * 41 not in str(info.value) and len(str(info.value)) < 300
    write_rt(tmp_path, b"", header=b"y" * 5000 + b"\n")
    with pytest.raises(DataError, match="expected the header") as info:
        read_rotten_tomatoes(tmp_path)
    assert len(str(info.value)) < 300


def test_invalid_utf8_names_the_physical_line_and_the_record(tmp_path):
    path = write_rt(tmp_path, b"fresh,ok,m,False\nrotten,bad \xff byte,m,False\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: invalid UTF-8 at byte 12 of line 3")):
        read_rotten_tomatoes(tmp_path)
    path = write_rt(tmp_path, b'fresh,"first\nsecond \xc3(",m,False\n')
    with pytest.raises(DataError, match=re.escape(f"{path}:3: invalid UTF-8") + ".*record starting at line 2"):
        read_rotten_tomatoes(tmp_path)


def test_truncated_or_corrupt_bz2_raises(tmp_path):
    path = write_rt(tmp_path, RT_BODY * 50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(f"{path}: truncated or corrupt bzip2 data after line ") + r"\d+"):
        read_rotten_tomatoes(tmp_path)
    path.write_bytes(data[:10] + b"\x00" * 50 + data[60:])
    with pytest.raises(DataError, match="truncated or corrupt bzip2"):
        read_rotten_tomatoes(tmp_path)


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(DataError, match="attnlab data fetch rotten-tomatoes"):
        read_rotten_tomatoes(tmp_path)
    write_rt(tmp_path, b"", header=b"")
    with pytest.raises(DataError, match="empty file"):
        read_rotten_tomatoes(tmp_path)


# ----------------------------------------------------------------------------------------------- Chinese reviews


def test_chinese_reviews_dedupe_contradictions_and_line_numbers(tmp_path, caplog):
    pos, neg = write_reviews(tmp_path, ["好书", "好书", "", "一般", "  好书  ", "赞"], ["差", "一般", "差", "太差了"])
    with caplog.at_level("INFO", logger="attnlab.data.sentiment"):
        corpus = read_chinese_reviews(tmp_path)
    assert corpus.pairs == [("好书", "positive"), ("赞", "positive"), ("差", "negative"), ("太差了", "negative")]
    assert corpus.line_numbers == [1, 6, 7, 10]  # neg line n is 6 + n: pos has 6 lines
    stats = corpus.stats
    assert stats.files == (str(pos), str(neg))
    assert (stats.lines, stats.records, stats.pairs) == (10, 10, 4)
    assert (stats.skipped_empty, stats.skipped_duplicate, stats.skipped_contradictory) == (1, 3, 2)
    assert "3 exact duplicates, 2 copies of texts with contradictory labels, 1 empty" in caplog.text


def test_plain_text_files_and_nfc_dedupe(tmp_path):
    write_reviews(tmp_path, ["caf\u00e9", "cafe\u0301", "ok"], ["bad"], gz=False)
    corpus = read_chinese_reviews(tmp_path)
    assert corpus.pairs == [("café", "positive"), ("ok", "positive"), ("bad", "negative")]
    assert corpus.line_numbers == [1, 3, 4]
    assert corpus.stats.skipped_duplicate == 1


def test_gzip_preferred_and_errors(tmp_path):
    write_reviews(tmp_path, ["plain"], ["plain neg"], gz=False)
    pos, _ = write_reviews(tmp_path, ["gz"], ["gz neg"], gz=True)
    assert read_chinese_reviews(tmp_path).pairs == [("gz", "positive"), ("gz neg", "negative")]
    data = pos.read_bytes()
    pos.write_bytes(data[:-6])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_chinese_reviews(tmp_path)
    pos.write_bytes(gzip.compress(b"ok\nbad \xff\n"))
    with pytest.raises(DataError, match=r"pos.txt.gz:2: invalid UTF-8"):
        read_chinese_reviews(tmp_path)
    with pytest.raises(DataError, match="attnlab data fetch chinese-reviews"):
        read_chinese_reviews(tmp_path / "nowhere")


def test_custom_labels(tmp_path):
    pos, neg = write_reviews(tmp_path, ["a"], ["b"])
    assert read_polarity_files(pos, neg, labels=("good", "bad")).pairs == [("a", "good"), ("b", "bad")]


# ----------------------------------------------------------------------------------------------- splits


def case_variant_corpus(tmp_path: Path):
    rows = [f"fresh,Review number {i},m,False\n".encode() for i in range(60)]
    rows[5] = b"fresh,Great film,m,False\n"
    rows[25] = b"fresh,great FILM,m,False\n"
    rows[45] = b"rotten,GREAT FILM,m,False\n"  # same text case-folded, another label: still one group
    write_rt(tmp_path, b"".join(rows))
    return read_rotten_tomatoes(tmp_path)


@pytest.mark.parametrize("seed", range(6))
def test_split_keeps_case_variants_in_one_part(tmp_path, seed):
    corpus = case_variant_corpus(tmp_path)
    split_file = tmp_path / f"split-{seed}.json"
    parts = load_sentiment_split("rotten-tomatoes", corpus, seed=seed, split_file=split_file, valid=0.2, test=0.2)
    assert [len(p) for p in parts] == [36, 12, 12]
    keys = [{text.casefold() for text, _ in part} for part in parts]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    holding = [i for i, part in enumerate(parts) if any(t.casefold() == "great film" for t, _ in part)]
    assert len(holding) == 1 and sum(t.casefold() == "great film" for t, _ in parts[holding[0]]) == 3
    again = load_sentiment_split("rotten-tomatoes", corpus, seed=seed, split_file=split_file, valid=0.2, test=0.2)
    assert again == parts


def test_split_default_path_and_checks(tmp_path, monkeypatch):
    import attnlab.data.splits

    corpus = case_variant_corpus(tmp_path)
    # The default split lives in the project's configs/splits: point that at tmp_path, not at the repository.
    monkeypatch.setattr(attnlab.data.splits, "_project_splits_dir", lambda: tmp_path / "configs" / "splits")
    train, valid, test = load_sentiment_split("rotten-tomatoes", corpus, seed=3)
    saved = json.loads((tmp_path / "configs" / "splits" / "rotten-tomatoes-seed3.json").read_text())
    assert saved["seed"] == 3 and saved["sizes"] == {"train": len(train), "valid": len(valid), "test": len(test)}
    with pytest.raises(DataError, match="seed 3"):
        load_sentiment_split("rotten-tomatoes", corpus, seed=3, valid=0.3)
    with pytest.raises(ConfigError, match="unknown sentiment corpus"):
        load_sentiment_split("imdb", corpus)


def test_describe(tmp_path):
    write_rt(tmp_path, RT_BODY)
    lines = describe("rotten-tomatoes", tmp_path)
    assert "1 plot summaries" in lines[0]
    assert lines[2].split()[:3] == ["rotten", "2", "66.7%"] and lines[3].split()[:3] == ["fresh", "1", "33.3%"]
    assert set(SENTIMENT_CORPORA) == set(LABELS)


# ----------------------------------------------------------------------------------------------- the real files


@needs_shared
def test_real_corpora_match_the_data_readme(tmp_path):
    rt = read_rotten_tomatoes(SHARED)
    assert rt.stats.read_per_label == {"fresh": 7403, "rotten": 5405}  # review rows before dedupe
    assert (rt.stats.records, rt.stats.skipped_plot, rt.stats.skipped_empty) == (13905, 1097, 0)
    assert len(rt) + rt.stats.skipped_duplicate + rt.stats.skipped_contradictory == 7403 + 5405
    assert len(set(rt.line_numbers)) == len(rt)
    zh = read_chinese_reviews(SHARED)
    assert zh.stats.records == 16548 + 18576 and len(set(zh.line_numbers)) == len(zh)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    pos_only = read_polarity_files(Path(zh.stats.files[0]), empty)
    assert len(pos_only) == 8379  # distinct positive lines
    for name, corpus in (("rotten-tomatoes", rt), ("chinese-reviews", zh)):
        split_file = REPO / "configs" / "splits" / f"{name}-seed0.json"
        if not split_file.is_file():
            pytest.fail(f"{split_file} is missing: it is committed with the code")
        parts = load_sentiment_split(name, corpus, seed=0, split_file=split_file)
        assert sum(map(len, parts)) == len(corpus) and len(parts[1]) == len(parts[2]) == round(0.1 * len(corpus))
        keys = [{text.casefold() for text, _ in part} for part in parts]
        assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
