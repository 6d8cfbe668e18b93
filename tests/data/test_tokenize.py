"""Word and character tokenizers: d2l-style splitting, exact round trips, serialization."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.data.tokenize import (
    LITERAL_SPACE_TOKEN,
    SPACE_TOKEN,
    TOKENIZERS,
    CharTokenizer,
    WordTokenizer,
    tokenizer_from_dict,
)

FAST = settings(max_examples=150, deadline=None)


def test_word_tokenizer_splits_punctuation_and_lowercases():
    tok = WordTokenizer()
    assert tok.tokenize("Go.") == ["go", "."]
    assert tok.tokenize("Hi,  you! Ready?") == ["hi", ",", "you", "!", "ready", "?"]
    assert tok.tokenize("Va\u00a0!\u202fOui;non:(x)") == ["va", "!", "oui", ";", "non", ":", "(", "x", ")"]
    assert tok.tokenize("I don't know 3.14 or 1,000.") == ["i", "don't", "know", "3.14", "or", "1,000", "."]
    assert WordTokenizer(lower=False).tokenize("Hello World!") == ["Hello", "World", "!"]
    assert tok.tokenize("") == [] and tok.tokenize("   ") == []


def test_word_detokenize_places_spaces_like_written_text():
    tok = WordTokenizer()
    assert tok.detokenize(["hi", ",", "you", "!"]) == "hi, you!"
    assert tok.detokenize(["he", "said", '"', "go", "(", "now", ")", '"', "."]) == 'he said "go (now)".'
    assert tok.detokenize([]) == ""


WORD = st.text(alphabet="abcxyzABC'-0123456789", min_size=1, max_size=6)
PUNCT_AFTER = st.sampled_from(["", ",", ".", "!", "?", ";", ":"])


@FAST
@given(st.lists(st.tuples(WORD, PUNCT_AFTER), min_size=1, max_size=8))
def test_word_round_trip_on_written_text(words):
    text = " ".join(w + p for w, p in words)
    tok = WordTokenizer()
    assert tok.detokenize(tok.tokenize(text)) == text.lower()
    assert WordTokenizer(lower=False).detokenize(WordTokenizer(lower=False).tokenize(text)) == text


@FAST
@given(st.text(alphabet="ab1 2.,!?;:\"()[]{}'-\u00a0X", max_size=30))
def test_word_tokenize_is_stable_through_detokenize(text):
    tok = WordTokenizer()
    tokens = tok.tokenize(text)
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    assert tok.tokenize(tok.detokenize(tokens)) == tokens


def test_char_tokenizer_makes_spaces_visible():
    tok = CharTokenizer()
    assert tok.tokenize("21 nov") == ["2", "1", SPACE_TOKEN, "n", "o", "v"]
    assert tok.tokenize(f"a{SPACE_TOKEN}") == ["a", LITERAL_SPACE_TOKEN]
    assert tok.detokenize(["a", SPACE_TOKEN, LITERAL_SPACE_TOKEN]) == f"a {SPACE_TOKEN}"


@FAST
@given(st.text(max_size=40))
def test_char_round_trip_is_exact_for_any_string(text):
    tok = CharTokenizer()
    tokens = tok.tokenize(text)
    assert len(tokens) == len(text)
    assert " " not in tokens
    assert tok.detokenize(tokens) == text


@pytest.mark.parametrize("tok", [WordTokenizer(), WordTokenizer(lower=False), CharTokenizer()])
def test_registry_and_json_round_trip(tok):
    assert TOKENIZERS[tok.kind] is type(tok)
    data = json.loads(json.dumps(tok.to_dict()))
    restored = tokenizer_from_dict(data)
    assert restored == tok and type(restored) is type(tok)
    text = "Hello, World 21 Nov!"
    assert restored.tokenize(text) == tok.tokenize(text)


def test_bad_dicts_and_settings_are_rejected():
    with pytest.raises(CheckpointError, match="unknown tokenizer kind 'bpe'"):
        tokenizer_from_dict({"kind": "bpe"})
    with pytest.raises(CheckpointError, match="expected kind 'word'"):
        WordTokenizer.from_dict({"kind": "char"})
    with pytest.raises(CheckpointError, match="unknown settings"):
        tokenizer_from_dict({"kind": "char", "lower": True})
    with pytest.raises(ConfigError, match="lower"):
        WordTokenizer(lower="yes")
