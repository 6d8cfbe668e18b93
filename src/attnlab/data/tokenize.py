"""Tokenizers: text -> list of string tokens -> text. Ids are the vocabulary's job (see vocab.py).

Every tokenizer has a ``kind`` registered in :data:`TOKENIZERS`, serializes to a JSON-ready dict with
:meth:`Tokenizer.to_dict` and is restored exactly by :func:`tokenizer_from_dict` (no pickle).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from attnlab.core.errors import CheckpointError

TOKENIZERS: dict[str, type[Tokenizer]] = {}


class Tokenizer(ABC):
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            TOKENIZERS[cls.kind] = cls

    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """Split one sentence into tokens."""

    @abstractmethod
    def detokenize(self, tokens: list[str]) -> str:
        """Join tokens back into readable text."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``"kind"`` and every setting needed to rebuild this tokenizer."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """Inverse of :meth:`to_dict`."""


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    kind = data.get("kind")
    if kind not in TOKENIZERS:
        raise CheckpointError(f"unknown tokenizer kind {kind!r}; known: {', '.join(sorted(TOKENIZERS))}")
    return TOKENIZERS[kind].from_dict(data)
