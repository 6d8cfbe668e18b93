"""Text pairs -> encoded examples: tokenize, map to ids, append ``<eos>``, enforce a maximum length.

This is the only place where examples are truncated or dropped (batching never drops any); what was
done is counted in the stats dict that :func:`encode_pairs` returns, and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.tokenize import Tokenizer
from attnlab.data.vocab import EOS_ID, Vocab

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One encoded pair.

    Attributes:
        src_ids: source token ids, no ``<bos>``/``<eos>`` (length ``Ts`` of this example).
        tgt_ids: target token ids ending in ``<eos>`` (length ``Tt`` of this example); ``<bos>`` is
            prepended by :func:`attnlab.data.batching.collate` for the decoder input.
        index: position of the pair in the list given to :func:`encode_pairs` (stable when pairs are
            skipped, so outputs can be matched to inputs).
        label: the class id of a classification example (whose ``tgt_ids`` are empty), else ``None``.
    """

    src_ids: list[int]
    tgt_ids: list[int]
    index: int
    label: int | None = None

    @property
    def src_len(self) -> int:
        return len(self.src_ids)

    @property
    def tgt_len(self) -> int:
        return len(self.tgt_ids)


def _check_max_len(max_len: int | None, minimum: int) -> None:
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < minimum):
        raise ConfigError(f"max_len must be None or an int >= {minimum}, got {max_len!r}")


def encode_pairs(
    pairs: Sequence[tuple[str, str]],
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    max_len: int | None = None,
    truncate: bool = False,
) -> tuple[list[Example], dict[str, int]]:
    """Encode ``(source_text, target_text)`` pairs into :class:`Example` s.

    Args:
        pairs: the text pairs.
        src_tokenizer, tgt_tokenizer: tokenizers of each side.
        src_vocab, tgt_vocab: vocabularies of each side (unknown tokens map to ``<unk>``).
        max_len: maximum number of ids per side, the target's ``<eos>`` included (>= 2). ``None``: no limit.
        truncate: when true, over-long sides are cut to ``max_len`` (the target keeps its ``<eos>``);
            when false, pairs with an over-long side are skipped.

    Returns:
        ``(examples, stats)`` where ``stats`` counts ``total``, ``kept``, ``skipped_too_long``,
        ``truncated`` (pairs with at least one side cut) and ``skipped_empty`` (empty source or target
        after tokenization; always skipped).
    """
    _check_max_len(max_len, 2)
    stats = {"total": 0, "kept": 0, "skipped_too_long": 0, "truncated": 0, "skipped_empty": 0}
    examples: list[Example] = []
    for index, pair in enumerate(pairs):
        stats["total"] += 1
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise DataError(f"encode_pairs: pair {index} must be a (source, target) tuple of strings, got {pair!r}")
        src_tokens = src_tokenizer.tokenize(pair[0])
        tgt_tokens = tgt_tokenizer.tokenize(pair[1])
        if not src_tokens or not tgt_tokens:
            stats["skipped_empty"] += 1
            continue
        src_ids = src_vocab.encode(src_tokens)
        tgt_ids = tgt_vocab.encode(tgt_tokens, add_eos=True)
        if max_len is not None and (len(src_ids) > max_len or len(tgt_ids) > max_len):
            if not truncate:
                stats["skipped_too_long"] += 1
                continue
            stats["truncated"] += 1
            src_ids = src_ids[:max_len]
            tgt_ids = tgt_ids[: max_len - 1] + [EOS_ID] if len(tgt_ids) > max_len else tgt_ids
        examples.append(Example(src_ids, tgt_ids, index))
        stats["kept"] += 1
    dropped = stats["skipped_too_long"] + stats["skipped_empty"]
    if dropped or stats["truncated"]:
        logger.info("encode_pairs: kept %d of %d pairs (%d too long, %d empty skipped; %d truncated)",
                    stats["kept"], stats["total"], stats["skipped_too_long"], stats["skipped_empty"],
                    stats["truncated"])
    return examples, stats


def encode_sources(
    texts: Iterable[str], tokenizer: Tokenizer, vocab: Vocab, max_len: int | None = None
) -> list[Example]:
    """Encode source sentences for translation: one :class:`Example` per text, none skipped.

    Sources longer than ``max_len`` are truncated; an empty text gives an empty ``src_ids`` (callers
    should output an empty translation for it). The target is the placeholder ``[<eos>]`` so that
    :func:`attnlab.data.batching.collate` can batch these examples.
    """
    _check_max_len(max_len, 1)
    examples = []
    for index, text in enumerate(texts):
        ids = vocab.encode(tokenizer.tokenize(text))
        examples.append(Example(ids if max_len is None else ids[:max_len], [EOS_ID], index))
    return examples


def build_vocabs(
    pairs: Sequence[tuple[str, str]],
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    min_freq: int = 1,
    max_size: int | None = None,
    shared: bool = False,
) -> tuple[Vocab, Vocab]:
    """Source and target vocabularies of ``pairs`` (build them on the training split only).

    With ``shared`` one vocabulary is built from both sides and returned twice (for tied embeddings).
    """
    src_sentences = [src_tokenizer.tokenize(s) for s, _ in pairs]
    tgt_sentences = [tgt_tokenizer.tokenize(t) for _, t in pairs]
    if shared:
        vocab = Vocab.build(src_sentences + tgt_sentences, min_freq=min_freq, max_size=max_size)
        return vocab, vocab
    return (Vocab.build(src_sentences, min_freq=min_freq, max_size=max_size),
            Vocab.build(tgt_sentences, min_freq=min_freq, max_size=max_size))


def encode_labelled(
    pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, vocab: Vocab, labels: Sequence[str], max_len: int | None
) -> tuple[list[Example], dict[str, int]]:
    """Encode ``(text, label_name)`` pairs for classification: one :class:`Example` with ``label`` set per pair.

    Texts longer than ``max_len`` tokens are cut to their first ``max_len`` (counted as ``truncated``); texts
    with no token are skipped (``skipped_empty``). Both counts are logged at the default level.

    Raises:
        DataError: a label that is not one of ``labels``.
    """
    _check_max_len(max_len, 1)
    ids = {name: i for i, name in enumerate(labels)}
    stats = {"total": 0, "kept": 0, "truncated": 0, "skipped_empty": 0}
    examples: list[Example] = []
    for index, (text, label) in enumerate(pairs):
        stats["total"] += 1
        if label not in ids:
            raise DataError(f"example {index}: label {str(label)[:40]!r} is not one of {', '.join(labels)}")
        tokens = vocab.encode(tokenizer.tokenize(text))
        if not tokens:
            stats["skipped_empty"] += 1
            continue
        if max_len is not None and len(tokens) > max_len:
            stats["truncated"] += 1
            tokens = tokens[:max_len]
        examples.append(Example(tokens, [], index, ids[label]))
        stats["kept"] += 1
    if stats["truncated"] or stats["skipped_empty"]:
        logger.warning("kept %d of %d texts: %d cut to max_len=%s tokens, %d skipped as empty", stats["kept"],
                       stats["total"], stats["truncated"], max_len, stats["skipped_empty"])
    return examples, stats
