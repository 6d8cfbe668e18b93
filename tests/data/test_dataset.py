"""encode_pairs: ids with <eos>, max_len skipping or truncation with counts, empty pairs; vocab helper."""

from __future__ import annotations

import pytest

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.dataset import Example, build_vocabs, encode_pairs, encode_sources
from attnlab.data.synthetic import make_pairs
from attnlab.data.tokenize import CharTokenizer, WordTokenizer
from attnlab.data.vocab import EOS_ID, UNK_ID

CHAR = CharTokenizer()
WORD = WordTokenizer()
PAIRS = [("ab", "x"), ("abcd", "xyz"), ("", "x"), ("a", ""), ("abcdefg", "xy"), ("b", "xyzxyzx")]


def _vocabs():
    return build_vocabs(PAIRS, CHAR, CHAR)


def test_build_vocabs_separate_and_shared():
    src_vocab, tgt_vocab = _vocabs()
    assert src_vocab.tokens[4:] == ["a", "b", "c", "d", "e", "f", "g"]  # a, b: 4 each; c, d: 2; e, f, g: 1
    assert set(tgt_vocab.tokens[4:]) == {"x", "y", "z"}
    shared_src, shared_tgt = build_vocabs(PAIRS, CHAR, CHAR, shared=True)
    assert shared_src is shared_tgt and {"a", "x"} <= set(shared_src.tokens)


def test_encode_pairs_appends_eos_and_skips_empty():
    src_vocab, tgt_vocab = _vocabs()
    examples, stats = encode_pairs(PAIRS, CHAR, CHAR, src_vocab, tgt_vocab)
    assert stats == {"total": 6, "kept": 4, "skipped_too_long": 0, "truncated": 0, "skipped_empty": 2}
    assert [ex.index for ex in examples] == [0, 1, 4, 5]  # positions in the input list
    first = examples[0]
    assert first.src_ids == src_vocab.encode(["a", "b"])
    assert first.tgt_ids == tgt_vocab.encode(["x"]) + [EOS_ID]
    assert all(ex.tgt_ids[-1] == EOS_ID for ex in examples)


def test_max_len_skips_or_truncates():
    src_vocab, tgt_vocab = _vocabs()
    kept, stats = encode_pairs(PAIRS, CHAR, CHAR, src_vocab, tgt_vocab, max_len=4)
    # lengths (src, tgt+eos): (2,2) (4,4) (7,3) (1,8): two too long
    assert [ex.index for ex in kept] == [0, 1]
    assert stats["skipped_too_long"] == 2 and stats["kept"] == 2 and stats["truncated"] == 0
    cut, stats = encode_pairs(PAIRS, CHAR, CHAR, src_vocab, tgt_vocab, max_len=4, truncate=True)
    assert stats["truncated"] == 2 and stats["kept"] == 4 and stats["skipped_too_long"] == 0
    by_index = {ex.index: ex for ex in cut}
    assert by_index[4].src_ids == src_vocab.encode(list("abcd"))
    assert by_index[5].tgt_ids == tgt_vocab.encode(list("xyz")) + [EOS_ID]
    assert all(len(ex.src_ids) <= 4 and len(ex.tgt_ids) <= 4 for ex in cut)
    with pytest.raises(ConfigError, match="max_len"):
        encode_pairs(PAIRS, CHAR, CHAR, src_vocab, tgt_vocab, max_len=1)


def test_unknown_tokens_and_bad_pairs():
    src_vocab, tgt_vocab = _vocabs()
    examples, _ = encode_pairs([("aq", "x")], CHAR, CHAR, src_vocab, tgt_vocab)
    assert examples[0].src_ids[1] == UNK_ID
    with pytest.raises(DataError, match="pair 0"):
        encode_pairs([("only source",)], CHAR, CHAR, src_vocab, tgt_vocab)


def test_word_level_task_end_to_end():
    pairs = make_pairs("reverse", 100, seed=0)
    src_vocab, tgt_vocab = build_vocabs(pairs, WORD, WORD)
    examples, stats = encode_pairs(pairs, WORD, WORD, src_vocab, tgt_vocab)
    assert stats["kept"] == 100
    for (src, tgt), ex in zip(pairs, examples, strict=True):
        assert src_vocab.decode(ex.src_ids) == src.split()
        assert tgt_vocab.decode(ex.tgt_ids) == tgt.split()


def test_encode_sources_keeps_every_line():
    src_vocab, _ = _vocabs()
    examples = encode_sources(["abc", "", "abcdefg"], CHAR, src_vocab, max_len=5)
    assert [ex.index for ex in examples] == [0, 1, 2]
    assert examples[1].src_ids == [] and len(examples[2].src_ids) == 5
    assert all(ex.tgt_ids == [EOS_ID] for ex in examples)
    assert isinstance(examples[0], Example) and examples[0].src_len == 3 and examples[0].tgt_len == 1
