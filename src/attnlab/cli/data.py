"""``attnlab data``: fetch the public corpora, describe them, and make the seeded Tatoeba split.

(The other corpora without an official split -- rotten-tomatoes, chinese-reviews, debian-descriptions -- make
theirs under ``configs/splits/`` the first time a run reads them.)

Examples::

    attnlab data fetch multi30k --dest ~/data          # 9 files, verified by SHA-256
    ATTNLAB_DATA_MIRROR=http://127.0.0.1:8000 attnlab data fetch tatoeba-cmn
    attnlab data stats multi30k
    attnlab data split tatoeba-cmn --out splits/tatoeba-cmn.json --valid 1000 --test 1000 --seed 0
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from attnlab.cli._run_options import SEED_MAX, int_in
from attnlab.core.errors import DataError, ExitCode
from attnlab.data.corpus import MULTI30K_LANGS, MULTI30K_SPLITS, Corpus, iter_lines, multi30k_path, read_tatoeba
from attnlab.data.download import (
    CORPORA,
    DATA_DIR_ENV,
    DEFAULT_DEADLINE,
    DEFAULT_MIN_RATE,
    DEFAULT_TIMEOUT,
    MIN_RATE_GRACE,
    MIRROR_ENV,
    fetch_corpus,
    resolve_data_dir,
)
from attnlab.data.splits import load_or_make_split


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="fetch and inspect corpora",
                                   description="Fetch the public corpora, describe them, split Tatoeba.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    fetch = sub.add_parser("fetch", help="download a corpus (cached, checksummed)",
                           description="Download a corpus into DEST with SHA-256 checks; files already present and "
                                       "verified are not downloaded again.")
    fetch.add_argument("corpus", choices=sorted(CORPORA), help="which corpus")
    fetch.add_argument("--dest", type=Path, default=None,
                       help=f"data directory (default: ${DATA_DIR_ENV}, else ../shared/data beside the repository, "
                            "else ~/.cache/attnlab/data)")
    fetch.add_argument("--mirror", default=None,
                       help=f"base URL or folder serving the data-directory layout (default: ${MIRROR_ENV}, else "
                            "the corpora's public homes)")
    fetch.add_argument("--no-verify", action="store_true",
                       help="accept files whose checksum differs (e.g. a newer Tatoeba export)")
    fetch.add_argument("--force", action="store_true", help="download again even if the files are present")
    fetch.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help=f"longest wait for the connection or for any data (default {DEFAULT_TIMEOUT:g})")
    fetch.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE, metavar="SECONDS",
                       help=f"longest time for each file; 0 for none (default {DEFAULT_DEADLINE:g})")
    fetch.add_argument("--min-rate", type=float, default=DEFAULT_MIN_RATE, metavar="BYTES_PER_S",
                       help=f"stop a file whose average rate is below this after the first {MIN_RATE_GRACE:g} s; "
                            f"0 for none (default {DEFAULT_MIN_RATE:g})")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=run_fetch)

    stats = sub.add_parser("stats", help="line, word and character counts of a corpus",
                           description="Read every file of a corpus with the strict readers and print counts.")
    stats.add_argument("corpus", choices=sorted(CORPORA), help="which corpus")
    stats.add_argument("--data-dir", type=Path, default=None, help="data directory (default as for fetch)")
    stats.set_defaults(func=run_stats)

    split = sub.add_parser("split", help="make (or check) the seeded Tatoeba train/valid/test split",
                           description="Write the split as JSON line numbers; if the file exists, check that it "
                                       "matches the corpus and the settings.")
    split.add_argument("corpus", choices=["tatoeba-cmn"], help="which corpus")
    split.add_argument("--out", type=Path, required=True, help="split file (JSON)")
    split.add_argument("--valid", type=int, default=1000, help="validation pairs (default 1000)")
    split.add_argument("--test", type=int, default=1000, help="test pairs (default 1000)")
    split.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="shuffle seed (default 0)")
    split.add_argument("--data-dir", type=Path, default=None, help="data directory (default as for fetch)")
    split.set_defaults(func=run_split)


def run_fetch(args: argparse.Namespace) -> int:
    # SIGTERM's default action ends the process at once, before the download's cleanup can remove its partial
    # file; while fetching, the first SIGTERM raises SystemExit instead (a second one kills at once, as before).
    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        raise SystemExit(ExitCode.TERMINATED)

    handle = threading.current_thread() is threading.main_thread()  # Python's rule for signal handlers
    previous = (signal.signal(signal.SIGTERM, terminate) if handle else None) or signal.SIG_DFL
    try:
        result = fetch_corpus(args.corpus, args.dest, mirror=args.mirror, verify=not args.no_verify,
                              force=args.force, timeout=args.timeout, deadline=args.deadline or None,
                              min_rate=args.min_rate, progress=not args.no_progress and sys.stderr.isatty())
    except SystemExit as exc:
        if exc.code == ExitCode.TERMINATED:
            print("attnlab data: terminated (SIGTERM)", file=sys.stderr)
        raise
    finally:
        if handle:
            signal.signal(signal.SIGTERM, previous)
    for name in result.downloaded:
        print(f"downloaded  {result.dest / name}")
    for name in result.cached:
        print(f"up to date  {result.dest / name}")
    print(f"{args.corpus}: {len(result.downloaded)} downloaded, {len(result.cached)} already present in {result.dest}")
    return 0


def _describe(label: str, sentences: list[str]) -> str:
    words = [len(s.split()) for s in sentences]
    chars = [len(s) for s in sentences]
    n = max(len(sentences), 1)
    return (f"{label:<28} {len(sentences):>8} {sum(words):>9} {sum(words) / n:>7.1f} {sum(chars) / n:>8.1f} "
            f"{max(chars, default=0):>6}")


_HEADER = f"{'file':<28} {'lines':>8} {'words':>9} {'words/l':>7} {'chars/l':>8} {'max':>6}"


def run_stats(args: argparse.Namespace) -> int:
    root = resolve_data_dir(args.data_dir)
    if args.corpus in ("rotten-tomatoes", "chinese-reviews"):
        from attnlab.data.sentiment import describe

        print("\n".join(describe(args.corpus, root)))
        return 0
    if args.corpus == "fashion-mnist":
        from attnlab.data.images import describe as describe_images

        print("\n".join(describe_images(root)))
        return 0
    if args.corpus == "debian-descriptions":
        from attnlab.data.debian import describe as describe_debian

        print("\n".join(describe_debian(root)))
        return 0
    print(_HEADER)
    if args.corpus == "multi30k":
        for split in MULTI30K_SPLITS:
            counts = set()
            for lang in MULTI30K_LANGS:
                lines = [text for _, text in iter_lines(multi30k_path(split, lang, root))]
                counts.add(len(lines))
                print(_describe(f"{split}.{lang}", lines))
            if len(counts) != 1:
                raise DataError(f"Multi30k {split}: the language files have different line counts {sorted(counts)}")
    else:
        corpus: Corpus = read_tatoeba("cmn", root)
        print(_describe("cmn.txt English", corpus.sources))
        print(_describe("cmn.txt Chinese", corpus.targets))
        print(corpus.stats.summary())
    return 0


def run_split(args: argparse.Namespace) -> int:
    corpus = read_tatoeba("cmn", args.data_dir)
    existed = args.out.exists()
    split = load_or_make_split(args.out, corpus, valid=args.valid, test=args.test, seed=args.seed)
    verb = "verified" if existed else "wrote"
    print(f"{verb} {args.out}: train {split.num_train}, valid {len(split.valid)}, test {len(split.test)} "
          f"(seed {split.seed}, {split.files[0].name} sha256 {split.files[0].sha256[:12]})")
    return 0
