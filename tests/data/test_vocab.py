"""Vocab: fixed special ids, deterministic order, min_freq/max_size, encode/decode, exact restore."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.core.errors import CheckpointError, ConfigError, DataError
from attnlab.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab

SENTENCES = [["b", "a", "c"], ["a", "b"], ["a", "d", "<eos>"], ["e"]]


def test_specials_have_fixed_ids():
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    vocab = Vocab()
    assert len(vocab) == 4 and vocab.tokens == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert [vocab.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3]


def test_order_is_frequency_then_token_and_filters_apply():
    vocab = Vocab.build(SENTENCES)
    assert vocab.tokens[4:] == ["a", "b", "c", "d", "e"]  # a:3, b:2, then ties alphabetically
    assert Vocab.build(SENTENCES, min_freq=2).tokens[4:] == ["a", "b"]
    assert Vocab.build(SENTENCES, max_size=6).tokens[4:] == ["a", "b"]
    assert len(Vocab.build(SENTENCES, max_size=4)) == 4
    assert Vocab.build(reversed(SENTENCES)) == vocab  # input order does not matter


def test_encode_decode():
    vocab = Vocab.build(SENTENCES)
    ids = vocab.encode(["a", "zzz", "e"], add_bos=True, add_eos=True)
    assert ids == [BOS_ID, 4, UNK_ID, 8, EOS_ID]
    assert vocab.decode(ids) == ["a", "<unk>", "e"]
    assert vocab.decode(ids + [5, PAD_ID]) == ["a", "<unk>", "e"]  # stops at the first <eos>
    assert vocab.decode([PAD_ID, 4, PAD_ID, 5]) == ["a", "b"]
    assert vocab.decode(ids, strip_special=False) == ["<bos>", "a", "<unk>", "e", "<eos>"]
    assert vocab.decode(torch.tensor([4, 5, EOS_ID, 6])) == ["a", "b"]
    with pytest.raises(DataError, match="id 99 is out of range"):
        vocab.decode([99])
    with pytest.raises(DataError, match="list of tokens"):
        vocab.encode("abc")


def test_bad_arguments():
    with pytest.raises(ConfigError, match="min_freq"):
        Vocab.build(SENTENCES, min_freq=0)
    with pytest.raises(ConfigError, match="max_size"):
        Vocab.build(SENTENCES, max_size=3)
    with pytest.raises(DataError, match="tokenize it first"):
        Vocab.build(["a sentence"])
    with pytest.raises(ConfigError, match="twice"):
        Vocab(["a", "a"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.text(alphabet="abcdé▁<>", min_size=1, max_size=3), max_size=6), max_size=8),
       st.integers(1, 3), st.one_of(st.none(), st.integers(4, 10)))
def test_json_round_trip_restores_the_same_ids(sentences, min_freq, max_size):
    vocab = Vocab.build(sentences, min_freq=min_freq, max_size=max_size)
    restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab and restored.tokens == vocab.tokens
    for sentence in sentences:
        assert restored.encode(sentence) == vocab.encode(sentence)
        ids = vocab.encode(sentence)
        assert all(0 <= i < len(vocab) for i in ids)
        known = [t if t in vocab else "<unk>" for t in sentence if t not in ("<pad>", "<bos>")]
        if "<eos>" not in sentence:
            assert vocab.decode(ids) == known
    if max_size is not None:
        assert len(vocab) <= max_size


def test_from_dict_rejects_foreign_data():
    good = Vocab.build(SENTENCES).to_dict()
    with pytest.raises(CheckpointError, match="not a saved vocabulary"):
        Vocab.from_dict({"tokens": good["tokens"]})
    with pytest.raises(CheckpointError, match="starting with"):
        Vocab.from_dict({**good, "tokens": good["tokens"][1:]})
    with pytest.raises(CheckpointError, match="corrupt"):
        Vocab.from_dict({**good, "tokens": good["tokens"] + ["a"]})
    with pytest.raises(CheckpointError, match="version"):
        Vocab.from_dict({**good, "version": 99})
