"""The ``attnlab`` command: a thin dispatcher; each subcommand lives in its own module of this package.

Every subcommand module defines ``register(subparsers)`` that adds its parser and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code). Errors derived from
:class:`attnlab.core.errors.AttnlabError` become a one-line message and their exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from attnlab import __version__
from attnlab.core.errors import AttnlabError, ExitCode

# Subcommands, in the order shown by --help; each lives in attnlab.cli.<name, "-" spelled "_">.
COMMANDS = ("demo", "train", "predict", "translate", "evaluate", "average", "export", "viz", "data", "trace",
            "explain-head", "explain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnlab", description="Build, train, inspect and visualize attention models.")
    parser.add_argument("--version", action="version", version=f"attnlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"attnlab.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except AttnlabError as exc:
        print(f"attnlab {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(f"attnlab {args.command}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
