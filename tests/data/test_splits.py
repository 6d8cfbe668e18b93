"""Seeded Tatoeba splits: sizes, no leakage of repeated sentences, saved to disk and verified on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.corpus import read_tatoeba, read_tsv
from attnlab.data.splits import CorpusSplit, load_or_make_split, load_split, make_split, save_split

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "tatoeba").is_dir(), reason="../shared/data not present")


def small_tsv(path: Path, n: int = 60) -> Path:
    rows = [f"Sentence {i}.\t句子{i}。\tCC #{i}" for i in range(n)]
    rows[10] = "Repeated.\t重复一。\tCC"
    rows[20] = "repeated.\t重复二。\tCC"  # same English, case-folded
    rows[30] = "Other.\t重复二。\tCC"  # same Chinese as row 20
    path.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@needs_shared
def test_tatoeba_split_sizes_disjoint_and_without_leakage():
    corpus = read_tatoeba("cmn", SHARED)
    split = make_split(corpus, valid=1000, test=1000, seed=0)
    parts = split.apply(corpus)
    assert (len(parts["train"]), len(parts["valid"]), len(parts["test"])) == (27155, 1000, 1000)
    lines = [set(parts[p].line_numbers) for p in ("train", "valid", "test")]
    assert not (lines[0] & lines[1] or lines[0] & lines[2] or lines[1] & lines[2])
    assert set.union(*lines) == set(corpus.line_numbers)
    train_src = {s.casefold() for s in parts["train"].sources}
    train_tgt = {t.casefold() for t in parts["train"].targets}
    for s, t in parts["test"].pairs + parts["valid"].pairs:
        assert s.casefold() not in train_src and t.casefold() not in train_tgt
    # Drawn over the whole file, not its (short-sentence) beginning or (long-sentence) end.
    assert min(split.test) < 3000 and max(split.test) > 26000


def test_same_seed_same_split_other_seed_differs(tmp_path):
    corpus = read_tsv(small_tsv(tmp_path / "cmn.txt"))
    a = make_split(corpus, valid=8, test=8, seed=3)
    assert a == make_split(corpus, valid=8, test=8, seed=3)
    assert a.test != make_split(corpus, valid=8, test=8, seed=4).test
    assert (len(a.valid), len(a.test), a.num_train) == (8, 8, 44)


def test_repeated_sentences_stay_in_one_part(tmp_path):
    corpus = read_tsv(small_tsv(tmp_path / "cmn.txt"))
    for seed in range(12):
        split = make_split(corpus, valid=10, test=10, seed=seed)
        where = ["valid" if n in split.valid else "test" if n in split.test else "train" for n in (11, 21, 31)]
        assert len(set(where)) == 1, (seed, where)


def test_fractions(tmp_path):
    corpus = read_tsv(small_tsv(tmp_path / "cmn.txt"))
    split = make_split(corpus, valid=0.1, test=0.2, seed=0)
    assert (len(split.valid), len(split.test)) == (6, 12)
    with pytest.raises(ConfigError, match="no training pairs"):
        make_split(corpus, valid=30, test=30)


def test_save_load_round_trip_and_verification(tmp_path):
    path = small_tsv(tmp_path / "cmn.txt")
    corpus = read_tsv(path)
    split = make_split(corpus, valid=5, test=5, seed=1)
    saved = save_split(split, tmp_path / "splits" / "cmn.json")
    data = json.loads(saved.read_text())
    assert data["format"] == "attnlab-split/1" and data["files"][0]["name"] == "cmn.txt"
    assert data["sizes"] == {"train": 50, "valid": 5, "test": 5}
    assert load_split(saved, corpus) == split
    assert not list((tmp_path / "splits").glob("*.part"))

    path.write_text(path.read_text(encoding="utf-8").replace("Sentence 5.", "Sentence five."), encoding="utf-8")
    with pytest.raises(DataError, match=r"cmn\.json was made from cmn\.txt \(60 lines, sha256 .*make a new split"):
        load_split(saved, read_tsv(path))


def test_length_filter_may_drop_train_but_not_held_out(tmp_path):
    path = small_tsv(tmp_path / "cmn.txt")
    split = make_split(read_tsv(path), valid=5, test=5, seed=1)
    held = split.test[0]
    rows = path.read_text(encoding="utf-8").split("\n")
    rows[held - 1] = "A much longer English sentence than the rest.\t长。\tCC"
    path.write_text("\n".join(rows), encoding="utf-8")
    split = make_split(read_tsv(path), valid=5, test=5, seed=1)
    assert held in split.test
    filtered = read_tsv(path, max_chars=20)
    assert len(split.apply(read_tsv(path))["test"]) == 5
    with pytest.raises(DataError, match=f"1 selected lines are not pairs .* line {held}"):
        split.apply(filtered)
    with pytest.raises(DataError, match="without a length filter"):
        load_split(save_split(split, tmp_path / "s.json"), filtered)


def test_load_or_make_split_refuses_other_settings(tmp_path):
    corpus = read_tsv(small_tsv(tmp_path / "cmn.txt"))
    target = tmp_path / "split.json"
    first = load_or_make_split(target, corpus, valid=5, test=5, seed=0)
    assert target.is_file()
    assert load_or_make_split(target, corpus, valid=5, test=5, seed=0) == first
    with pytest.raises(DataError, match="not the requested seed 1"):
        load_or_make_split(target, corpus, valid=5, test=5, seed=1)


def test_malformed_split_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="cannot read split"):
        load_split(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not an attnlab split"):
        load_split(bad)
    with pytest.raises(DataError, match="no such split file"):
        load_split(tmp_path / "none.json")
    record = {"format": "attnlab-split/1", "files": [], "seed": 0, "num_pairs": 4, "valid": [1], "test": [1]}
    with pytest.raises(DataError, match="share lines"):
        CorpusSplit.from_dict(record)


def test_a_gzip_corpus_file_is_identified_by_its_text(tmp_path):
    """A split made from ``x.tsv.gz`` verifies against a downloaded plain ``x.tsv`` holding the same text, and
    not against a changed one; split files are readable by everyone (not mkstemp's owner-only mode)."""
    import gzip

    (tmp_path / "plain").mkdir()
    plain = small_tsv(tmp_path / "plain" / "x.tsv")
    packed = tmp_path / "packed" / "x.tsv.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    split = make_split(read_tsv(packed), valid=5, test=5, seed=0)
    saved = save_split(split, tmp_path / "split.json")
    assert saved.stat().st_mode & 0o044 == 0o044
    assert [f.name for f in split.files] == ["x.tsv"]
    assert load_split(saved, read_tsv(plain)) == split
    plain.write_text(plain.read_text(encoding="utf-8").replace("\t", "\t~", 1), encoding="utf-8")
    with pytest.raises(DataError, match="was made from"):
        load_split(saved, read_tsv(plain))
