"""Error types with the process exit code each one maps to (used by every CLI command), and the helpers that
quote user input in their messages.

A message is one line and never echoes unbounded input: values are quoted with :func:`short_repr` (at most
:data:`QUOTE_LIMIT` characters, an ellipsis marking the cut) and foreign exception texts with :func:`one_line`.
"""

from __future__ import annotations

import reprlib
from enum import IntEnum
from typing import Any

QUOTE_LIMIT = 80
"""The most characters of user input an error message quotes."""


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2  # usage or config error
    DATA = 3  # unreadable or inconsistent data
    CHECKPOINT = 4  # missing, truncated or foreign checkpoint
    DIVERGED = 5  # NaN/inf loss during training
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM


class AttnlabError(Exception):
    """Base class: a one-line, user-facing message and the exit code the CLI returns."""

    exit_code: ExitCode = ExitCode.USAGE


class ConfigError(AttnlabError, ValueError):
    exit_code = ExitCode.USAGE


class DataError(AttnlabError, ValueError):
    exit_code = ExitCode.DATA


class CheckpointError(AttnlabError):
    exit_code = ExitCode.CHECKPOINT


class DivergedError(AttnlabError):
    exit_code = ExitCode.DIVERGED


def short_repr(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` of at most ``limit`` characters, in bounded time.

    Containers are abbreviated level by level (:mod:`reprlib`), so a structure built from YAML aliases that
    expands to billions of elements costs no more than a short one; a huge integer is named by its size (its
    repr may be megabytes long, and Python refuses to print one of over 4,300 digits).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"a {value.bit_length()}-bit integer"
    text = _QUOTER.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def one_line(text: object, limit: int = 2 * QUOTE_LIMIT) -> str:
    """``str(text)`` (an exception, say) with its whitespace runs collapsed to one space, cut to ``limit``."""
    flat = " ".join(str(text).split()) or type(text).__name__
    return flat if len(flat) <= limit else flat[:limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


class _Quoter(reprlib.Repr):
    """reprlib with limits that keep any repr short; huge integers are handled by :func:`short_repr`."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 6
        self.maxarray = 6
        self.maxstring = self.maxother = QUOTE_LIMIT
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        return short_repr(x) if x.bit_length() > 100 else repr(x)


_QUOTER = _Quoter()
