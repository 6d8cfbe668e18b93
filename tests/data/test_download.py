"""Corpus downloads against a local HTTP server on 127.0.0.1 that serves ../shared/data (no other network)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import time
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

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_http import FaultServer, serve  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
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


def test_fashion_mnist_is_fetched_byte_for_byte_and_read_back(shared_server, tmp_path):
    from attnlab.data.images import load_fashion_mnist

    result = fetch_corpus("fashion-mnist", tmp_path, mirror=shared_server.url, progress=False)
    assert len(result.downloaded) == 4
    assert sorted(shared_server.requests) == sorted(f"/{e.name}" for e in CORPORA["fashion-mnist"])
    for entry in CORPORA["fashion-mnist"]:
        assert entry.url.startswith("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/")
        assert sha256_file(tmp_path / entry.name) == entry.sha256
    images, labels = load_fashion_mnist("test", tmp_path)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


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


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_interrupt_mid_download_leaves_no_partial_file(tmp_path, monkeypatch, stop):
    class Response(io.BytesIO):
        headers = {"Content-Length": "200000"}

        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise stop
            return super().read(size)

        read1 = read  # what the download loop calls (see _stream_to)

    monkeypatch.setattr(download, "_open_url", lambda url, timeout: Response(b"x" * 200000))
    with pytest.raises(stop):
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
    with pytest.raises(ConfigError, match="known: chinese-reviews, debian-descriptions, fashion-mnist, multi30k"):
        fetch_corpus("wmt14", tmp_path)


# ----------------------------------------------------------------------------------------------- slow servers

BLOB = RemoteFile("blob.bin", "https://example.invalid/blob.bin", None)


@pytest.fixture
def site(tmp_path) -> Path:
    """A folder served by the tests below: ``blob.bin`` (20,000 seeded random bytes)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "blob.bin").write_bytes(random.Random(0).randbytes(20_000))
    return root


@pytest.mark.timeout(20)
def test_deadline_stops_a_trickling_download(site, tmp_path):
    with serve(site) as server:
        server.faults["blob.bin"] = "trickle"  # one byte every 0.2 s: each read succeeds, none times out
        start = time.monotonic()
        with pytest.raises(DataError) as info:
            fetch_corpus("x", tmp_path / "d", mirror=server.url, files=(BLOB,), progress=False, deadline=1.0,
                         min_rate=0)
        elapsed = time.monotonic() - start
    message = str(info.value)
    assert 1.0 <= elapsed < 3.0, elapsed
    assert "\n" not in message and f"{server.url}/blob.bin" in message
    assert "deadline of 1 s" in message and "--deadline SECONDS" in message
    received = int(re.search(r"after (\d+) of 20000 bytes", message).group(1))
    assert 2 <= received <= 10  # about 5 bytes in 1 s
    assert leftovers(tmp_path / "d") == []


@pytest.mark.timeout(20)
def test_min_rate_stops_a_trickling_download(site, tmp_path):
    with serve(site) as server:
        server.faults["blob.bin"] = "trickle"
        start = time.monotonic()
        with pytest.raises(DataError) as info:
            fetch_corpus("x", tmp_path / "d", mirror=server.url, files=(BLOB,), progress=False, min_rate=100,
                         rate_grace=0.5)
        elapsed = time.monotonic() - start
    message = str(info.value)
    assert 0.5 <= elapsed < 2.5, elapsed
    assert re.search(r"after \d+ of 20000 bytes in \d+ s: the average rate of \d+ B/s is below the minimum of "
                     r"100 B/s .*--min-rate BYTES_PER_S", message), message
    assert leftovers(tmp_path / "d") == []


@pytest.mark.timeout(20)
def test_deadline_also_bounds_a_zip_archive_download(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "cmn-eng.zip", "w") as zf:
        zf.writestr("cmn.txt", "Hi.\t嗨。\n")
    with serve(site) as server:
        server.faults["cmn-eng.zip"] = "trickle"
        with pytest.raises(DataError, match=r"cmn-eng\.zip stopped after \d+ of \d+ bytes .*deadline of 0\.6 s"):
            download_file(f"{server.url}/cmn-eng.zip", tmp_path / "d" / "cmn.txt", member="cmn.txt", deadline=0.6,
                          progress=False)
    assert leftovers(tmp_path / "d") == []


@pytest.mark.timeout(20)
def test_stall_mid_body_reports_the_bytes_that_arrived(site, tmp_path):
    with serve(site) as server:
        server.faults["blob.bin"] = "stall"  # 1000 bytes, then silence
        stalled = r"blob\.bin stalled after 1000 of 20000 bytes: no data for 0\.5 s .*--timeout SECONDS"
        with pytest.raises(DataError, match=stalled):
            download_file(f"{server.url}/blob.bin", tmp_path / "d" / "blob.bin", timeout=0.5, progress=False)
    assert leftovers(tmp_path / "d") == []


@pytest.mark.timeout(20)
def test_long_url_is_cut_in_the_message(site, tmp_path):
    with serve(site) as server:
        server.faults["blob.bin"] = "stall"
        url = f"{server.url}/blob.bin?token={'q' * 300}"
        with pytest.raises(DataError) as info:
            download_file(url, tmp_path / "d" / "blob.bin", timeout=0.3, progress=False)
    message = str(info.value)
    assert f"{server.url}/blob.bin?token=" in message and "q" * 100 not in message and "..." in message
    assert len(message) < 250


class FullDisk(io.BytesIO):
    def write(self, data: bytes) -> int:  # type: ignore[override]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.timeout(20)
def test_write_error_is_not_reported_as_a_network_error(site):
    with serve(site) as server, pytest.raises(DataError, match=r"cannot write blob\.bin: No space left.*--dest"):
        download._stream_to(f"{server.url}/blob.bin", FullDisk(), timeout=5, progress=False, desc="blob.bin")


def test_write_error_while_extracting_is_not_reported_as_a_bad_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("cmn.txt", "Hi.\t嗨。\n")
    with pytest.raises(DataError, match=r"cannot write cmn\.txt .*: No space left.*--dest"):
        download._extract_member(tmp_path / "a.zip", "cmn.txt", FullDisk(), "http://127.0.0.1:9/a.zip")


def test_corrupt_compressed_member_is_data_error(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cmn.txt", "Hi.\t嗨。\n" * 2000)
    archive = bytearray(buffer.getvalue())
    start = 30 + len("cmn.txt")  # the local header, then the deflate stream
    archive[start + 5 : start + 40] = bytes(b ^ 0x5A for b in archive[start + 5 : start + 40])
    (tmp_path / "a.zip").write_bytes(bytes(archive))
    with pytest.raises(DataError, match=r"archive from http://127\.0\.0\.1:9/a\.zip is not a valid zip file"):
        download._extract_member(tmp_path / "a.zip", "cmn.txt", io.BytesIO(), "http://127.0.0.1:9/a.zip")


@pytest.mark.timeout(20)
def test_stall_past_a_short_deadline_is_reported_as_the_deadline(site, tmp_path):
    with serve(site) as server:
        server.faults["blob.bin"] = "stall"
        with pytest.raises(DataError, match=r"stopped after 1000 of 20000 bytes in \d+ s: .*deadline of 0\.7 s"):
            download_file(f"{server.url}/blob.bin", tmp_path / "d" / "blob.bin", timeout=30, deadline=0.7,
                          progress=False)


# ----------------------------------------------------------------------------------------------- temporary files


def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part"))


def wait_for(predicate, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def test_stale_temporary_files_of_the_target_are_removed_by_the_next_fetch(site, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    stale = [dest / ".blob.bin.k1lled_1.part", dest / ".blob.bin.unzip.k1lled_2.part"]
    other = dest / ".other.bin.k1lled_3.part"  # another target's: its own next fetch judges it
    fresh = dest / ".blob.bin.justmade.part"  # newer than this attempt: a concurrent fetch may have just made it
    hour_ago, soon = time.time() - 3600, time.time() + 60
    for path in (*stale, other, fresh):
        path.write_bytes(b"partial")
        os.utime(path, (soon, soon) if path == fresh else (hour_ago, hour_ago))
    with serve(site) as server:
        fetch_corpus("x", dest, mirror=server.url, files=(BLOB,), progress=False)
        assert leftovers(dest) == [".blob.bin.justmade.part", ".other.bin.k1lled_3.part", "blob.bin"]
        planted = dest / ".blob.bin.again.part"  # left beside a complete file (e.g. by a killed --force fetch)
        planted.write_bytes(b"partial")
        os.utime(planted, (hour_ago, hour_ago))
        result = fetch_corpus("x", dest, mirror=server.url, files=(BLOB,), progress=False)
    assert result.cached == ("blob.bin",) and not planted.exists()


FETCH_BLOB = ("import sys; from attnlab.data.download import RemoteFile, fetch_corpus; "
              "fetch_corpus('x', sys.argv[1], mirror=sys.argv[2], progress=False, timeout=60, "
              "files=(RemoteFile('blob.bin', 'https://example.invalid/blob.bin', None),))")


@pytest.mark.timeout(60)
def test_temporary_file_of_a_killed_fetch_is_removed_but_not_that_of_a_live_one(site, tmp_path):
    dest = tmp_path / "d"
    with serve(site) as slow, serve(site) as fast:
        slow.faults["blob.bin"] = "stall"
        proc = subprocess.Popen([sys.executable, "-c", FETCH_BLOB, str(dest), slow.url])
        try:
            wait_for(lambda: parts(dest) != [])
            (part,) = parts(dest)
            time.sleep(0.1)  # older than the next attempt: only its lock says that its owner is alive
            fetch_corpus("x", dest, mirror=fast.url, files=(BLOB,), progress=False)
            assert part.exists() and proc.poll() is None
        finally:
            proc.send_signal(signal.SIGKILL)  # no handler runs: the temporary file stays
            proc.wait(10)
        assert part.exists()
        fetch_corpus("x", dest, mirror=fast.url, files=(BLOB,), progress=False, force=True)
    assert leftovers(dest) == ["blob.bin"]


def test_library_installs_no_signal_handler(site, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with serve(site) as server:
        fetch_corpus("x", tmp_path / "d", mirror=server.url, files=(BLOB,), progress=False)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


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
