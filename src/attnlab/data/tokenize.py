"""Tokenizers: text -> list of string tokens -> text. Ids are the vocabulary's job (see vocab.py).

Every tokenizer has a ``kind`` registered in :data:`TOKENIZERS`, serializes to a JSON-ready dict with
:meth:`Tokenizer.to_dict` and is restored exactly by :func:`tokenizer_from_dict` (no pickle).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from attnlab.core.errors import CheckpointError, ConfigError

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


# ------------------------------------------------------------------------------------- word level

PUNCTUATION = ",.!?;:\"()[]{}"
"""Characters that always become tokens of their own in :class:`WordTokenizer` (``.`` and ``,`` between
two digits stay inside the number, as in ``3.14`` or ``1,000``)."""

_OPENING = frozenset("([{")
_CLOSING = frozenset(",.!?;:)]}")
_NBSP = ("\u00a0", "\u202f", "\u2007")  # non-breaking spaces, as d2l's preprocessing replaces them
_PUNCT_CLASS = re.escape(PUNCTUATION)
_WORD_RE = re.compile(rf"(?:[^\s{_PUNCT_CLASS}]|(?<=\d)[.,](?=\d))+|[{_PUNCT_CLASS}]")


class WordTokenizer(Tokenizer):
    """Word-level tokenizer with d2l-style preprocessing.

    Steps: non-breaking spaces become spaces; the text is lower-cased when ``lower`` is true; then
    tokens are runs of non-space characters, with each character of :data:`PUNCTUATION` split off as a
    token of its own (``"Hi, you!" -> ["hi", ",", "you", "!"]``). Apostrophes and hyphens stay inside
    words (``"don't"``, ``"well-known"``).

    :meth:`detokenize` joins tokens with single spaces except before closing punctuation
    (``, . ! ? ; : ) ] }``), after opening brackets, and inside double quotes, so
    ``detokenize(tokenize(s)) == s.lower()`` for ordinarily written text, and ``tokenize`` of a
    detokenized list gives the list back.
    """

    kind = "word"

    def __init__(self, lower: bool = True) -> None:
        if not isinstance(lower, bool):
            raise ConfigError(f"WordTokenizer.lower must be a bool, got {lower!r}")
        self.lower = lower

    def tokenize(self, text: str) -> list[str]:
        for space in _NBSP:
            text = text.replace(space, " ")
        if self.lower:
            text = text.lower()
        return _WORD_RE.findall(text)

    def detokenize(self, tokens: list[str]) -> str:
        out: list[str] = []
        glue_next = True  # no space before the first token
        open_quote = False
        for token in tokens:
            if token == '"':
                # An opening quote takes a space before it and none after; a closing quote the reverse.
                glue = glue_next or open_quote
                glue_after = not open_quote
                open_quote = not open_quote
            else:
                glue = glue_next or token in _CLOSING
                glue_after = token in _OPENING
            if out and not glue:
                out.append(" ")
            out.append(token)
            glue_next = glue_after
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lower": self.lower}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        check_tokenizer_dict(cls, data, {"lower"})
        return cls(lower=data.get("lower", True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and other.lower == self.lower

    def __hash__(self) -> int:
        return hash((self.kind, self.lower))

    def __repr__(self) -> str:
        return f"WordTokenizer(lower={self.lower})"


# ------------------------------------------------------------------------------------ char level

SPACE_TOKEN = "\u2581"
"""The visible token that stands for a space in :class:`CharTokenizer` ("▁", as in SentencePiece)."""

LITERAL_SPACE_TOKEN = "<\u2581>"
"""The token for a literal "▁" character in the text, so that the round trip stays exact."""


class CharTokenizer(Tokenizer):
    """Character-level tokenizer: one token per Unicode code point.

    A space becomes :data:`SPACE_TOKEN` ("▁") so it is visible in vocabularies and heatmaps; a literal
    "▁" in the text becomes :data:`LITERAL_SPACE_TOKEN`. Nothing is normalized, so
    ``detokenize(tokenize(s)) == s`` for every string ``s``.
    """

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return [SPACE_TOKEN if c == " " else LITERAL_SPACE_TOKEN if c == SPACE_TOKEN else c for c in text]

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(" " if t == SPACE_TOKEN else SPACE_TOKEN if t == LITERAL_SPACE_TOKEN else t for t in tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        check_tokenizer_dict(cls, data, set())
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer)

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return "CharTokenizer()"


def check_tokenizer_dict(cls: type[Tokenizer], data: dict[str, Any], allowed: set[str]) -> None:
    """Reject a dict written by another tokenizer kind or with settings this version does not know."""
    if data.get("kind") != cls.kind:
        raise CheckpointError(f"{cls.__name__}.from_dict: expected kind {cls.kind!r}, got {data.get('kind')!r}")
    unknown = set(data) - allowed - {"kind"}
    if unknown:
        raise CheckpointError(f"{cls.__name__}.from_dict: unknown settings {sorted(unknown)}; "
                              f"expected only {sorted(allowed)}")
