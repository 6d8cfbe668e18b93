"""Vocabulary: string tokens <-> integer ids, with four reserved specials at fixed ids.

``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3 in every attnlab vocabulary, so padding is
always id 0 (see :class:`attnlab.core.types.Batch`). The other tokens follow in a deterministic order:
by frequency (descending), ties broken by the token string. A vocabulary serializes to a JSON-ready
dict and is restored with the same ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from attnlab.core.errors import CheckpointError, ConfigError, DataError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_FORMAT_VERSION = 1


class Vocab:
    """An ordered token <-> id mapping whose first four ids are :data:`SPECIALS`.

    Build one from tokenized sentences with :meth:`build`; ``Vocab(tokens)`` takes the non-special
    tokens already in id order (id 4 first).
    """

    def __init__(self, tokens: Sequence[str] = ()) -> None:
        itos = list(SPECIALS)
        stoi = {t: i for i, t in enumerate(itos)}
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise ConfigError(f"Vocab: tokens must be non-empty strings, got {token!r}")
            if token in stoi:
                raise ConfigError(f"Vocab: token {token!r} appears twice (or is a reserved special)")
            stoi[token] = len(itos)
            itos.append(token)
        self._itos = itos
        self._stoi = stoi

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """A vocabulary of the tokens of ``sentences`` seen at least ``min_freq`` times.

        Args:
            sentences: tokenized sentences (lists of string tokens). Tokens equal to a special are not
                counted.
            min_freq: minimum count for a token to get an id (>= 1).
            max_size: maximum total size, the four specials included (>= 4); the most frequent tokens
                are kept. ``None``: no limit.
        """
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ConfigError(f"Vocab.build: min_freq must be an int >= 1, got {min_freq!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)
                                     or max_size < len(SPECIALS)):
            raise ConfigError(f"Vocab.build: max_size must be None or an int >= {len(SPECIALS)} "
                              f"(the specials count), got {max_size!r}")
        counts: Counter[str] = Counter()
        for sentence in sentences:
            if isinstance(sentence, str):
                raise DataError(f"Vocab.build: expected tokenized sentences (lists of tokens), got the string "
                                f"{sentence[:40]!r}; tokenize it first")
            counts.update(sentence)
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted((tok for tok, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(ranked)

    # ------------------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other._itos == self._itos

    def __hash__(self) -> int:
        return hash(tuple(self._itos))

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """Every token in id order, specials first (a copy)."""
        return list(self._itos)

    def token_to_id(self, token: str) -> int:
        """The id of ``token``, :data:`UNK_ID` when it is not in the vocabulary."""
        return self._stoi.get(token, UNK_ID)

    def id_to_token(self, index: int) -> str:
        """The token with id ``index``; DataError when the id is out of range."""
        if not 0 <= index < len(self._itos):
            raise DataError(f"Vocab: id {index} is out of range for a vocabulary of size {len(self)}")
        return self._itos[index]

    def encode(self, tokens: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of ``tokens`` (unknown ones map to :data:`UNK_ID`), optionally framed by <bos>/<eos>."""
        if isinstance(tokens, str):
            raise DataError(f"Vocab.encode: expected a list of tokens, got the string {tokens[:40]!r}")
        ids = [self._stoi.get(t, UNK_ID) for t in tokens]
        if add_bos:
            ids.insert(0, BOS_ID)
        if add_eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Tokens of ``ids`` (a list, or a 1-D tensor).

        With ``strip_special`` the output stops at the first ``<eos>`` and drops ``<pad>`` and ``<bos>``;
        ``<unk>`` is kept because it stands for a real token. Without it every id is decoded.
        """
        out: list[str] = []
        for raw in ids:
            index = int(raw)
            if strip_special:
                if index == EOS_ID:
                    break
                if index in (PAD_ID, BOS_ID):
                    continue
            out.append(self.id_to_token(index))
        return out

    # ------------------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` rebuilds the vocabulary with the same ids."""
        return {"kind": "vocab", "version": _FORMAT_VERSION, "tokens": list(self._itos)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`; CheckpointError when ``data`` is not a saved attnlab vocabulary."""
        if not isinstance(data, dict) or data.get("kind") != "vocab":
            raise CheckpointError("Vocab.from_dict: not a saved vocabulary (expected a dict with kind 'vocab')")
        if data.get("version") != _FORMAT_VERSION:
            raise CheckpointError(f"Vocab.from_dict: unsupported format version {data.get('version')!r}, "
                                  f"expected {_FORMAT_VERSION}")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise CheckpointError(f"Vocab.from_dict: 'tokens' must be a list starting with {list(SPECIALS)}")
        try:
            return cls(tokens[len(SPECIALS):])
        except ConfigError as exc:
            raise CheckpointError(f"Vocab.from_dict: corrupt token list ({exc})") from exc
