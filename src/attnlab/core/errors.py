"""Error types with the process exit code each one maps to (used by every CLI command)."""

from __future__ import annotations

from enum import IntEnum


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
