"""Character-level tokenization for Chinese (and text mixing Chinese with Latin words).

Chinese is written without spaces, and its word segmentation is itself ambiguous; characters are a strong,
simple unit for a small corpus (a few thousand types cover Tatoeba). :class:`ChineseCharTokenizer` (kind
``"zh-char"``) splits:

* every CJK character (Han ideographs, kana, bopomofo, CJK and full-width punctuation) into its own token;
* runs of other letters, digits and combining marks (``Tom``, ``iPhone5``, ``2024``) into one token;
* any other symbol or punctuation into its own token; whitespace separates tokens and is not a token.

Detokenization joins tokens without spaces, except between two word tokens (``"I" "am"`` -> ``"I am"``), so
Chinese reads naturally (``他是DJ。``). Where the input had a space that this rule would not restore between
two non-CJK tokens (``"Hello," "world"``), a ``"▁"`` token records it. Spaces next to a CJK character are
dropped (``他是一个 DJ 。`` -> ``他是一个DJ。``) unless ``keep_cjk_spaces=True``; a literal ``"▁"`` in the text
becomes ``"<▁>"``. So
``detokenize(tokenize(s))`` gives ``s`` with whitespace collapsed and, by default, spaces beside CJK removed.
"""

from __future__ import annotations

import unicodedata
from typing import Any, ClassVar

from attnlab.core.errors import CheckpointError
from attnlab.data.tokenize import Tokenizer, check_tokenizer_dict

SPACE_TOKEN = "\u2581"  # "▁", as in SentencePiece
LITERAL_SPACE_TOKEN = "<\u2581>"  # a literal "▁" in the text, so that it is not read back as a space

# Unicode blocks treated as CJK: one token per character, no spaces needed around them.
_CJK_RANGES = (
    (0x2E80, 0x2FDF),  # CJK radicals supplement, Kangxi radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation (。、「」)
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3100, 0x312F),  # bopomofo
    (0x31A0, 0x31BF),  # bopomofo extended
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms (，？！：)
    (0x20000, 0x3134F),  # extensions B-G, compatibility supplement
)


def is_cjk(ch: str) -> bool:
    """Whether the character ``ch`` belongs to a CJK block (ideographs, kana, CJK or full-width punctuation)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def contains_cjk(text: str) -> bool:
    """Whether ``text`` has at least one CJK character."""
    return any(is_cjk(ch) for ch in text)


def _is_word_char(ch: str) -> bool:
    """Letters, digits and combining marks outside the CJK blocks: these form multi-character word tokens."""
    return not is_cjk(ch) and (ch.isalnum() or unicodedata.category(ch).startswith("M"))


def _needs_space(left: str, right: str) -> bool:
    """Whether detokenization puts a space between tokens ``left`` and ``right`` by default."""
    return _is_word_char(left[-1]) and _is_word_char(right[0])


class ChineseCharTokenizer(Tokenizer):
    """CJK characters one by one, Latin words and numbers whole (see the module docstring).

    Args:
        keep_cjk_spaces: keep spaces next to CJK characters (as ``"▁"`` tokens) instead of dropping them.
    """

    kind: ClassVar[str] = "zh-char"

    def __init__(self, keep_cjk_spaces: bool = False):
        self.keep_cjk_spaces = bool(keep_cjk_spaces)

    def _pieces(self, text: str) -> list[tuple[str, bool]]:
        """Tokens of ``text``, each with whether whitespace preceded it."""
        out: list[tuple[str, bool]] = []
        word: list[str] = []
        space_before = False
        word_space = False
        for ch in text:
            if _is_word_char(ch):
                if not word:
                    word_space = space_before
                    space_before = False
                word.append(ch)
                continue
            if word:
                out.append(("".join(word), word_space))
                word = []
            if ch.isspace():
                space_before = bool(out)
                continue
            out.append((LITERAL_SPACE_TOKEN if ch == SPACE_TOKEN else ch, space_before))
            space_before = False
        if word:
            out.append(("".join(word), word_space))
        return out

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        prev: str | None = None
        for token, space_before in self._pieces(text):
            if space_before and prev is not None and not _needs_space(prev, token):
                beside_cjk = is_cjk(prev[-1]) or is_cjk(token[0])
                if self.keep_cjk_spaces or not beside_cjk:
                    tokens.append(SPACE_TOKEN)
            tokens.append(token)
            prev = token
        return tokens

    def detokenize(self, tokens: list[str]) -> str:
        parts: list[str] = []
        prev: str | None = None
        for token in tokens:
            if not token:
                continue
            if token == SPACE_TOKEN:
                if parts and parts[-1] != " ":
                    parts.append(" ")
                prev = None
                continue
            if prev is not None and _needs_space(prev, token):
                parts.append(" ")
            parts.append(SPACE_TOKEN if token == LITERAL_SPACE_TOKEN else token)
            prev = token
        return "".join(parts).strip()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "keep_cjk_spaces": self.keep_cjk_spaces}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChineseCharTokenizer:
        check_tokenizer_dict(cls, data, {"keep_cjk_spaces"})
        value = data.get("keep_cjk_spaces", False)
        if not isinstance(value, bool):
            raise CheckpointError(f"zh-char tokenizer: keep_cjk_spaces must be a boolean, got {value!r}")
        return cls(keep_cjk_spaces=value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChineseCharTokenizer) and other.keep_cjk_spaces == self.keep_cjk_spaces

    def __hash__(self) -> int:
        return hash((self.kind, self.keep_cjk_spaces))

    def __repr__(self) -> str:
        return f"ChineseCharTokenizer(keep_cjk_spaces={self.keep_cjk_spaces})"
