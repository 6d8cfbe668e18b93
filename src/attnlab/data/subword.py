"""SentencePiece subword tokenization (BPE or unigram; Sennrich et al., 2016; Kudo, 2018; Kudo & Richardson, 2018).

:func:`train_sentencepiece` trains a model in memory on the *training* sentences only; train it on one side
for separate vocabularies, or on both sides (source + target sentences) for a joint vocabulary. The
tokenizer only produces and consumes string pieces; ids are the job of :class:`attnlab.data.vocab.Vocab`,
which reserves ``<pad>``, ``<bos>``, ``<eos>`` and ``<unk>`` itself: the SentencePiece model therefore has an
``<unk>`` piece only (no BOS/EOS/PAD), and :meth:`SentencePieceTokenizer.vocab_pieces` lists the pieces that
the Vocab should hold.

The model is saved inside the checkpoint as its serialized protobuf, base64-encoded in a JSON-ready dict
(:meth:`SentencePieceTokenizer.to_dict`), with a SHA-256 to catch corruption; no pickle.

Text normalization: SentencePiece's default rule (``nmt_nfkc``) would turn Chinese full-width punctuation
(``，？！``) into ASCII, so detokenized output would no longer match the references; the default here is
``"identity"`` (the corpus readers have already applied NFC). Detokenized Chinese reads naturally: pieces are
joined and ``▁`` becomes a space only where the input had one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import sys
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.data.chinese import contains_cjk
from attnlab.data.tokenize import Tokenizer, check_tokenizer_dict

SPIECE_UNDERLINE = "\u2581"  # "▁", SentencePiece's whitespace marker
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def _require_sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError as exc:  # optional dependency
        raise ConfigError("SentencePiece tokenization needs the sentencepiece package: "
                          "pip install 'attnlab[subword]'") from exc
    return sentencepiece


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model as an attnlab :class:`~attnlab.data.tokenize.Tokenizer`.

    Args:
        model_proto: the serialized ``ModelProto`` (what ``model_writer`` received during training).
    """

    kind: ClassVar[str] = "sentencepiece"

    def __init__(self, model_proto: bytes):
        spm = _require_sentencepiece()
        self.model_proto = bytes(model_proto)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except (RuntimeError, OSError, TypeError) as exc:
            raise CheckpointError(f"not a valid SentencePiece model: {exc}") from exc

    @property
    def vocab_size(self) -> int:
        """Number of pieces in the SentencePiece model (``<unk>`` included)."""
        return int(self._sp.get_piece_size())

    def vocab_pieces(self) -> list[str]:
        """The model's pieces in id order, without ``<unk>`` and control symbols: the entries of the Vocab."""
        sp = self._sp
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_unknown(i) or sp.is_control(i))]

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into pieces; characters unseen in training come out as their own surface pieces."""
        return list(self._sp.encode(text, out_type=str))

    @property
    def model_type(self) -> str:
        """The model's algorithm as its training spec records it: ``"unigram"``, ``"bpe"``, ``"word"`` or ``"char"``."""
        return _MODEL_TYPES.get(_model_type_number(self.model_proto), "unigram")

    def merge_scores(self) -> dict[str, float]:
        """Score of every normal piece (not ``<unk>``, control, user-defined, byte or unused ones) by piece text.

        In a BPE model a piece's score orders the merge that makes it: higher merges first."""
        sp = self._sp
        types = _piece_types(self.model_proto)
        return {sp.id_to_piece(i): float(sp.get_score(i)) for i in range(sp.get_piece_size()) if types[i] == 1}

    def detokenize(self, tokens: list[str]) -> str:
        """Join pieces into text: ``▁`` becomes a space, byte pieces (``<0xE4>``) are decoded as UTF-8."""
        if any(_BYTE_PIECE.fullmatch(t) for t in tokens):
            return str(self._sp.decode_pieces(list(tokens)))
        return "".join(tokens).replace(SPIECE_UNDERLINE, " ").strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_proto_base64": base64.b64encode(self.model_proto).decode("ascii"),
            "sha256": hashlib.sha256(self.model_proto).hexdigest(),
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SentencePieceTokenizer:
        check_tokenizer_dict(cls, data, {"model_proto_base64", "sha256", "vocab_size"})
        try:
            proto = base64.b64decode(data["model_proto_base64"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"sentencepiece tokenizer: missing or malformed model_proto_base64 ({exc})") from exc
        expected = data.get("sha256")
        if expected is not None and hashlib.sha256(proto).hexdigest() != expected:
            raise CheckpointError("sentencepiece tokenizer: the model's SHA-256 does not match; the checkpoint is "
                                  "corrupt")
        return cls(proto)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``.model`` file that the ``spm_encode``/``spm_decode`` tools read."""
        with open(path, "wb") as f:
            f.write(self.model_proto)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SentencePieceTokenizer) and other.model_proto == self.model_proto

    def __hash__(self) -> int:
        return hash((self.kind, self.model_proto))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}  # sentencepiece_model.proto, TrainerSpec.ModelType


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> Iterable[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of each field of a serialized protobuf message (wire types 0-5)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _model_type_number(proto: bytes) -> int:
    """``ModelProto.trainer_spec.model_type`` (fields 2 and 3 of sentencepiece_model.proto; 1 when unset).

    Read from the wire format directly: the generated protobuf module would need the protobuf package."""
    try:
        for number, wire, value in _fields(proto):
            if number == 2 and wire == 2 and isinstance(value, bytes):
                for inner, inner_wire, inner_value in _fields(value):
                    if inner == 3 and inner_wire == 0 and isinstance(inner_value, int):
                        return inner_value
    except (IndexError, ValueError) as exc:
        raise CheckpointError(f"sentencepiece model: cannot read its training spec ({exc})") from None
    return 1


def _piece_types(proto: bytes) -> list[int]:
    """``ModelProto.pieces[i].type`` for every piece (field 1, its field 3; NORMAL = 1 when unset)."""
    types = []
    try:
        for number, wire, value in _fields(proto):
            if number == 1 and wire == 2 and isinstance(value, bytes):
                types.append(next((v for n, w, v in _fields(value) if n == 3 and w == 0 and isinstance(v, int)), 1))
    except (IndexError, ValueError) as exc:
        raise CheckpointError(f"sentencepiece model: cannot read its pieces ({exc})") from None
    return types


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False
    return True


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, *,
                        model_type: Literal["bpe", "unigram"] = "bpe",
                        character_coverage: float | None = None,
                        normalization_rule_name: str = "identity",
                        byte_fallback: bool = False,
                        split_digits: bool = False,
                        user_defined_symbols: Iterable[str] = (),
                        max_sentence_length: int = 4192,
                        hard_vocab_limit: bool = True,
                        num_threads: int = 1) -> SentencePieceTokenizer:
    """Train a SentencePiece model in memory on ``sentences`` (the training side only).

    Args:
        sentences: training sentences; pass both sides for a joint vocabulary.
        vocab_size: number of pieces, ``<unk>`` included.
        model_type: ``"bpe"`` or ``"unigram"``.
        character_coverage: share of characters covered by single-character pieces; ``None`` picks 0.9995 when
            the text contains CJK characters (rare characters then become ``<unk>`` or bytes) and 1.0 otherwise.
        normalization_rule_name: SentencePiece normalization (``"identity"``, ``"nmt_nfkc"``, ``"nfkc"`` ...).
        byte_fallback: decompose unknown characters into UTF-8 byte pieces instead of ``<unk>``.
        split_digits: split numbers into single digits.
        user_defined_symbols: pieces that are never split (e.g. language tags).
        max_sentence_length: longer sentences (in bytes) are ignored in training.
        hard_vocab_limit: if ``False``, ``vocab_size`` is a soft limit (a smaller vocabulary is not an error).
        num_threads: training threads; 1 keeps training deterministic.

    Raises:
        ConfigError: no sentences, a bad option, or a vocabulary too large for the text (with the maximum).
    """
    spm = _require_sentencepiece()
    if model_type not in ("bpe", "unigram"):
        raise ConfigError(f"model_type: got {model_type!r}, expected 'bpe' or 'unigram'")
    if vocab_size < 2:
        raise ConfigError(f"vocab_size: got {vocab_size}, expected at least 2")
    data = [s for s in sentences if s.strip()]
    if not data:
        raise ConfigError("train_sentencepiece: no non-empty training sentences")
    if character_coverage is None:
        character_coverage = 0.9995 if any(contains_cjk(s) for s in data[:5000]) else 1.0
    if not 0.0 < character_coverage <= 1.0:
        raise ConfigError(f"character_coverage: got {character_coverage}, expected a value in (0, 1]")
    model = io.BytesIO()
    try:
        with open(os.devnull, "w") as quiet:
            # SentencePiece's logstream redirect needs sys.stderr.fileno(); under capture (pytest capsys,
            # redirect_stderr) there is none, and minloglevel=2 alone keeps its log quiet enough.
            silence = {"logstream": quiet} if _has_fileno(sys.stderr) else {}
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(data), model_writer=model, **silence,
                vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
                normalization_rule_name=normalization_rule_name, byte_fallback=byte_fallback,
                split_digits=split_digits, user_defined_symbols=list(user_defined_symbols),
                max_sentence_length=max_sentence_length, hard_vocab_limit=hard_vocab_limit,
                num_threads=num_threads, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, unk_piece="<unk>",
                minloglevel=2)
    except RuntimeError as exc:
        message = str(exc).split("] ", 1)[-1]
        raise ConfigError(f"SentencePiece training failed: {message}") from exc
    return SentencePieceTokenizer(model.getvalue())
