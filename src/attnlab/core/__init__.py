"""Shared types, errors and conventions used by every other layer of attnlab."""

from attnlab.core.errors import (
    AttnlabError,
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    ExitCode,
)
from attnlab.core.types import AttentionOutput, Batch

__all__ = [
    "AttentionOutput",
    "AttnlabError",
    "Batch",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergedError",
    "ExitCode",
]
