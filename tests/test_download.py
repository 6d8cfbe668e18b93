"""Corpus downloads against a local HTTP server on 127.0.0.1 that serves ../shared/data (no other network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.data import download
from attnlab.data.download import (
    CORPORA,
    MIRROR_ENV,
    RemoteFile,
    default_data_dir,
    download_file,
    fetch_corpus,
    sha256_file,
)

if str(Path(__file__).resolve().parent) not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_http import FaultServer, serve  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="../shared/data not present")


@pytest.fixture
def shared_server() -> Iterator[FaultServer]:
    if not (SHARED / "multi30k").is_dir():
        pytest.skip("../shared/data not present")
    with serve(SHARED) as server:
        yield server


SMALL = (
    RemoteFile("multi30k/val.en.gz", "https://example.invalid/val.en.gz",
               dict((e.name, e.sha256) for e in CORPORA["multi30k"])["multi30k/val.en.gz"]),
    RemoteFile("multi30k/val.de.gz", "https://example.invalid/val.de.gz",
               dict((e.name, e.sha256) for e in CORPORA["multi30k"])["multi30k/val.de.gz"]),
)


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------- checksums


@needs_shared
def _shared_sha256(name: str) -> str:
    """The checksum of a shared file; a file kept there gzip-compressed is checked by its uncompressed bytes."""
    path = SHARED / name
    if path.exists():
        return sha256_file(path)
    return hashlib.sha256(gzip.decompress((SHARED / (name + ".gz")).read_bytes())).hexdigest()


def test_recorded_checksums_match_the_shared_files():
    for entries in CORPORA.values():
        for entry in entries:
            assert _shared_sha256(entry.name) == entry.sha256, entry.name
    assert {e.name for e in CORPORA["multi30k"]} == {f"multi30k/{p.name}" for p in (SHARED / "multi30k").iterdir()}


def test_upstream_urls_point_at_the_public_homes():
    assert all(e.url.startswith("https://raw.githubusercontent.com/multi30k/dataset/") for e in CORPORA["multi30k"])
    (cmn,) = CORPORA["tatoeba-cmn"]
    assert cmn.url == "https://www.manythings.org/anki/cmn-eng.zip" and cmn.member == "cmn.txt"


# ----------------------------------------------------------------------------------------------- fetch


def test_fetch_verifies_then_second_fetch_downloads_nothing(shared_server, tmp_path):
    result = fetch_corpus("multi30k", tmp_path, mirror=shared_server.url, progress=False)
    assert len(result.downloaded) == 9 and result.cached == ()
    for entry in CORPORA["multi30k"]:
        assert (tmp_path / entry.name).read_bytes() == (SHARED / entry.name).read_bytes()
    assert len(shared_server.requests) == 9
    again = fetch_corpus("multi30k", tmp_path, mirror=shared_server.url, progress=False)
    assert again.downloaded == () and len(again.cached) == 9
    assert len(shared_server.requests) == 9  # nothing was requested the second time
    assert not [p for p in leftovers(tmp_path) if p.endswith(".part")]


def test_mirror_from_environment(shared_server, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, shared_server.url + "/")
    result = fetch_corpus("tatoeba-cmn", tmp_path, progress=False)
    assert result.downloaded == ("tatoeba/cmn.txt",)
    assert shared_server.requests == ["/tatoeba/cmn.txt"]
    assert sha256_file(tmp_path / "tatoeba" / "cmn.txt") == CORPORA["tatoeba-cmn"][0].sha256


def test_present_but_corrupt_file_is_downloaded_again(shared_server, tmp_path):
    (tmp_path / "multi30k").mkdir()
    (tmp_path / "multi30k" / "val.en.gz").write_bytes(b"not the file")
    result = fetch_corpus("x", tmp_path, mirror=shared_server.url, progress=False, files=SMALL)
    assert result.downloaded == ("multi30k/val.en.gz", "multi30k/val.de.gz")
    assert sha256_file(tmp_path / "multi30k" / "val.en.gz") == SMALL[0].sha256


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_is_data_error_and_leaves_nothing(shared_server, tmp_path, status):
    shared_server.faults["multi30k/val.de.gz"] = status
    with pytest.raises(DataError, match=rf"val\.de\.gz failed: HTTP {status}"):
        fetch_corpus("x", tmp_path, mirror=shared_server.url, progress=False, files=SMALL)
    assert leftovers(tmp_path) == ["multi30k/val.en.gz"]  # the file before it is complete and verified


def test_truncated_response_is_data_error_and_leaves_nothing(shared_server, tmp_path):
    shared_server.faults["multi30k/val.en.gz"] = "truncate"
    with pytest.raises(DataError, match=r"truncated: received \d+ of \d+ bytes"):
        fetch_corpus("x", tmp_path, mirror=shared_server.url, progress=False, files=SMALL)
    assert leftovers(tmp_path) == []


def test_bad_checksum_is_data_error_and_leaves_nothing(shared_server, tmp_path):
    shared_server.faults["multi30k/val.en.gz"] = "corrupt"
    with pytest.raises(DataError, match=r"checksum mismatch for val\.en\.gz.*--no-verify"):
        fetch_corpus("x", tmp_path, mirror=shared_server.url, progress=False, files=SMALL)
    assert leftovers(tmp_path) == []


def test_no_verify_accepts_a_different_file(shared_server, tmp_path):
    shared_server.faults["multi30k/val.en.gz"] = "corrupt"
    fetch_corpus("x", tmp_path, mirror=shared_server.url, progress=False, files=SMALL[:1], verify=False)
    assert sha256_file(tmp_path / "multi30k" / "val.en.gz") != SMALL[0].sha256


def test_connection_refused_is_data_error(tmp_path):
    with serve(tmp_path) as server:
        url = server.url
    with pytest.raises(DataError, match="download of .* failed"):
        fetch_corpus("x", tmp_path / "dest", mirror=url, progress=False, files=SMALL[:1], timeout=5)
    assert leftovers(tmp_path) == []


def test_interrupt_mid_download_leaves_no_partial_file(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": "200000"}

        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise KeyboardInterrupt
            return super().read(size)

    monkeypatch.setattr(download, "_open_url", lambda url, timeout: Response(b"x" * 200000))
    with pytest.raises(KeyboardInterrupt):
        download_file("http://127.0.0.1:9/file", tmp_path / "file.gz", progress=False)
    assert leftovers(tmp_path) == []


def test_zip_member_is_extracted_and_verified(tmp_path):
    content = "Hi.\t嗨。\tCC-BY 2.0 (France)\n".encode()
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "cmn-eng.zip", "w") as zf:
        zf.writestr("_about.txt", "about")
        zf.writestr("cmn.txt", content)
    with serve(site) as server:
        dest = tmp_path / "data" / "tatoeba" / "cmn.txt"
        download_file(f"{server.url}/cmn-eng.zip", dest, sha256=hashlib.sha256(content).hexdigest(),
                      member="cmn.txt", progress=False)
        assert dest.read_bytes() == content
        with pytest.raises(DataError, match="no member 'fra.txt'"):
            download_file(f"{server.url}/cmn-eng.zip", tmp_path / "data" / "fra.txt", member="fra.txt",
                          progress=False)
    assert leftovers(tmp_path / "data") == ["tatoeba/cmn.txt"]


def test_local_folder_as_mirror(tmp_path):
    if not (SHARED / "multi30k").is_dir():
        pytest.skip("../shared/data not present")
    result = fetch_corpus("x", tmp_path, mirror=str(SHARED), progress=False, files=SMALL)
    assert len(result.downloaded) == 2


def test_unknown_corpus_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="known: chinese-reviews, debian-descriptions, multi30k"):
        fetch_corpus("wmt14", tmp_path)


# ----------------------------------------------------------------------------------------------- data dir


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.delenv("ATTNLAB_DATA_DIR")
    repo = tmp_path / "work" / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(repo / "sub")
    assert default_data_dir() == tmp_path / "work" / "shared" / "data"
    monkeypatch.setattr(download, "_repo_root", lambda start: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "attnlab" / "data"
