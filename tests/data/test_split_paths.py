"""Default split files are the project's committed ones whatever the current directory; a split file the user
names is relative to the current directory; an installed package falls back to ./configs/splits and says so."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from attnlab.core.run_config import DataConfig
from attnlab.data import splits
from attnlab.data.corpus import read_tsv
from attnlab.data.debian import load_debian_split, read_translation_file
from attnlab.data.prepare import load_pairs
from attnlab.data.sentiment import load_sentiment_split
from attnlab.data.splits import default_split_path, load_split, split_path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "configs" / "splits"
SHARED = REPO.parent / "shared" / "data"


def small_tsv(path: Path, n: int = 40) -> Path:
    path.write_text("".join(f"Sentence {i}.\t句子{i}。\tCC\n" for i in range(n)), encoding="utf-8")
    return path


def small_debian(path: Path, n: int = 30) -> Path:
    words = " ".join(f"word{i}" for i in range(20))
    names = [f"{chr(97 + i % 26)}{chr(97 + i // 26)}tool" for i in range(n)]  # one package family each
    path.write_text("".join(f"Package: {name}\nDescription-md5: {i:032x}\nDescription-en: synopsis {i}\n"
                            f" Long description {i} of {words}.\n\n" for i, name in enumerate(names)),
                    encoding="utf-8")
    return path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory outside the repository, e.g. a notebook's."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the project's configs/splits, so that tests making new splits never write into the repo."""
    folder = tmp_path / "project" / "configs" / "splits"
    monkeypatch.setattr(splits, "_project_splits_dir", lambda: folder)
    return folder


@pytest.mark.parametrize("name", ["tatoeba-cmn-seed0", "rotten-tomatoes-seed0", "chinese-reviews-seed0",
                                  "debian-descriptions-seed0"])
def test_default_split_is_the_committed_file_from_any_directory(elsewhere: Path, name: str) -> None:
    path = default_split_path(name)
    assert path == COMMITTED / f"{name}.json" and path.is_absolute() and path.is_file()
    assert split_path(None, name) == split_path("", name) == path
    assert os.listdir(elsewhere) == []


def test_a_split_file_the_user_names_is_relative_to_the_current_directory(elsewhere: Path, project: Path) -> None:
    assert split_path("my-split.json", "tatoeba-cmn-seed0") == Path("my-split.json")
    corpus = read_tsv(small_tsv(elsewhere.parent / "pairs.tsv"))
    load_sentiment_split("rotten-tomatoes", corpus, seed=1, split_file="my-split.json", valid=4, test=4)
    assert os.listdir(elsewhere) == ["my-split.json"] and not project.exists()


def test_sentiment_and_debian_defaults_go_to_the_project_not_the_current_directory(elsewhere: Path,
                                                                                   project: Path) -> None:
    corpus = read_tsv(small_tsv(elsewhere.parent / "pairs.tsv"))
    parts = load_sentiment_split("rotten-tomatoes", corpus, seed=7, valid=4, test=4)
    assert [len(p) for p in parts] == [32, 4, 4]
    debian = read_translation_file(small_debian(elsewhere.parent / "Translation-en"))
    train, valid, test = load_debian_split(debian, seed=7, valid=3, test=3)
    assert (len(train), len(valid), len(test)) == (24, 3, 3)
    assert sorted(os.listdir(project)) == ["debian-descriptions-seed7.json", "rotten-tomatoes-seed7.json"]
    assert load_split(project / "rotten-tomatoes-seed7.json").seed == 7
    assert os.listdir(elsewhere) == []


def test_an_installed_package_keeps_splits_in_the_current_directory_and_says_so(
        elsewhere: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(splits, "_project_splits_dir", lambda: None)
    with caplog.at_level(logging.INFO, logger="attnlab.data.splits"):
        path = default_split_path("rotten-tomatoes-seed3")
    assert path == Path("configs/splits/rotten-tomatoes-seed3.json")
    assert "not run from its source tree" in caplog.text and str(elsewhere / "configs" / "splits") in caplog.text
    corpus = read_tsv(small_tsv(elsewhere.parent / "pairs.tsv"))
    load_sentiment_split("rotten-tomatoes", corpus, seed=3, valid=4, test=4)
    assert (elsewhere / "configs" / "splits" / "rotten-tomatoes-seed3.json").is_file()


@pytest.mark.skipif(not (SHARED / "tatoeba").is_dir(), reason="../shared/data not present")
def test_preparing_tatoeba_from_another_directory_uses_the_committed_split(elsewhere: Path) -> None:
    """Before the fix this drew and saved a new split under ./configs/splits: another test set."""
    committed = COMMITTED / "tatoeba-cmn-seed0.json"
    before = committed.read_bytes()
    cfg = DataConfig(source="tatoeba-cmn", src_lang="en", tgt_lang="zh", data_dir=str(SHARED))
    train, valid, test = load_pairs(cfg)
    assert os.listdir(elsewhere) == []
    assert committed.read_bytes() == before
    from attnlab.data.corpus import read_tatoeba

    corpus = read_tatoeba("cmn", SHARED)
    expected = corpus.select(list(load_split(committed, corpus).test)).pairs
    assert test == expected and len(valid) == len(test) == 1000
