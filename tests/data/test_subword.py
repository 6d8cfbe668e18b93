"""SentencePiece (BPE/unigram) and the character-level Chinese tokenizer: round trips, serialization, Chinese."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.core.errors import CheckpointError, ConfigError
from attnlab.data.chinese import SPACE_TOKEN, ChineseCharTokenizer, contains_cjk, is_cjk
from attnlab.data.corpus import read_multi30k, read_tatoeba
from attnlab.data.subword import SentencePieceTokenizer, train_sentencepiece
from attnlab.data.tokenize import TOKENIZERS, tokenizer_from_dict

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="../shared/data not present")
CJK_SPACE_CJK = re.compile(r"[\u4e00-\u9fff] [\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def multi30k_small():
    if not (SHARED / "multi30k").is_dir():
        pytest.skip("../shared/data not present")
    train = read_multi30k("train", "en", "de", SHARED)
    test = read_multi30k("test_2016_flickr", "en", "de", SHARED)
    return train.pairs[:4000], test.pairs[:200]


@pytest.fixture(scope="module")
def tatoeba_zh():
    if not (SHARED / "tatoeba").is_dir():
        pytest.skip("../shared/data not present")
    return read_tatoeba("cmn", SHARED).targets


# ----------------------------------------------------------------------------------------------- SentencePiece


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_round_trip_and_json_serialization(multi30k_small, model_type):
    train, test = multi30k_small
    tok = train_sentencepiece([s for s, _ in train], 600, model_type=model_type)
    assert tok.vocab_size == 600
    pieces = tok.vocab_pieces()
    assert len(pieces) == 599 and "<unk>" not in pieces  # <unk> belongs to the project's Vocab
    for src, _ in test:
        tokens = tok.tokenize(src)
        assert len(tokens) < len(src.split()) * 4
        assert tok.detokenize(tokens) == src
    data = json.loads(json.dumps(tok.to_dict()))
    assert data["kind"] == "sentencepiece" and TOKENIZERS["sentencepiece"] is SentencePieceTokenizer
    again = tokenizer_from_dict(data)
    assert again == tok and again.tokenize(test[0][0]) == tok.tokenize(test[0][0])


def test_joint_vocabulary_covers_both_sides(multi30k_small):
    train, test = multi30k_small
    tok = train_sentencepiece([s for s, _ in train] + [t for _, t in train], 1000)
    vocab = set(tok.vocab_pieces())
    src_seen = sum(p in vocab for s, _ in test for p in tok.tokenize(s))
    tgt_seen = sum(p in vocab for _, t in test for p in tok.tokenize(t))
    src_total = sum(len(tok.tokenize(s)) for s, _ in test)
    tgt_total = sum(len(tok.tokenize(t)) for _, t in test)
    assert src_seen / src_total > 0.995 and tgt_seen / tgt_total > 0.995
    assert any("ä" in p or "ü" in p for p in vocab) and "▁the" in vocab


def test_training_is_deterministic(multi30k_small):
    train, _ = multi30k_small
    sentences = [s for s, _ in train[:1500]]
    assert train_sentencepiece(sentences, 300).model_proto == train_sentencepiece(sentences, 300).model_proto


def test_chinese_sentencepiece_reads_naturally(tatoeba_zh):
    tok = train_sentencepiece(tatoeba_zh[:-300], 3000)
    held_out = tatoeba_zh[-300:]
    outputs = [tok.detokenize(tok.tokenize(s)) for s in held_out]
    assert sum(o == s for o, s in zip(outputs, held_out, strict=True)) >= 290  # rare characters may be <unk>
    assert not any(CJK_SPACE_CJK.search(o) for o in outputs)
    assert "，" in "".join(outputs)  # full-width punctuation kept (no NFKC folding)


def test_byte_fallback_restores_unseen_characters():
    sentences = ["一个男人在街上走。", "两个女人在公园里。", "孩子们在玩。"] * 20
    tok = train_sentencepiece(sentences, 300, byte_fallback=True, hard_vocab_limit=False, character_coverage=1.0)
    tokens = tok.tokenize("猫在玩。")
    assert any(t.startswith("<0x") for t in tokens)
    assert tok.detokenize(tokens) == "猫在玩。"


def test_sentencepiece_errors():
    with pytest.raises(ConfigError, match=r"Vocabulary size too high .*<= \d+"):
        train_sentencepiece(["a b c", "d e f"], 5000)
    with pytest.raises(ConfigError, match="no non-empty"):
        train_sentencepiece(["", "  "], 100)
    with pytest.raises(ConfigError, match="model_type"):
        train_sentencepiece(["a"], 100, model_type="word")  # type: ignore[arg-type]
    good = train_sentencepiece(["a b c d e f g"] * 5, 20, hard_vocab_limit=False).to_dict()
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        tokenizer_from_dict({**good, "sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="unknown settings"):
        tokenizer_from_dict({**good, "extra": 1})
    with pytest.raises(CheckpointError, match="not a valid SentencePiece model"):
        SentencePieceTokenizer(b"garbage")


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_model_type_is_read_from_the_model(multi30k_small, model_type):
    tok = train_sentencepiece([s for s, _ in multi30k_small[0][:1000]], 300, model_type=model_type)
    assert tok.model_type == model_type
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))).model_type == model_type


# ----------------------------------------------------------------------------------------------- zh-char


@pytest.mark.parametrize(("text", "tokens", "restored"), [
    ("我叫Tom。", ["我", "叫", "Tom", "。"], "我叫Tom。"),
    ("他是一个 DJ 。", ["他", "是", "一", "个", "DJ", "。"], "他是一个DJ。"),
    ("Tom是加拿大人吗?", ["Tom", "是", "加", "拿", "大", "人", "吗", "?"], "Tom是加拿大人吗?"),
    ("我有3.5公斤，iPhone5 and an iPad。", ["我", "有", "3", ".", "5", "公", "斤", "，", "iPhone5", "and", "an", "iPad",
                                        "。"], "我有3.5公斤，iPhone5 and an iPad。"),
    ("Hello, world!", ["Hello", ",", SPACE_TOKEN, "world", "!"], "Hello, world!"),
    ("a ▁ b", ["a", SPACE_TOKEN, "<▁>", SPACE_TOKEN, "b"], "a ▁ b"),
])
def test_zh_char_examples(text, tokens, restored):
    tok = ChineseCharTokenizer()
    assert tok.tokenize(text) == tokens
    assert tok.detokenize(tokens) == restored


def test_zh_char_keep_cjk_spaces_and_serialization():
    tok = ChineseCharTokenizer(keep_cjk_spaces=True)
    assert tok.detokenize(tok.tokenize("他是一个 DJ 。")) == "他是一个 DJ 。"
    data = json.loads(json.dumps(tok.to_dict()))
    assert data == {"kind": "zh-char", "keep_cjk_spaces": True}
    assert tokenizer_from_dict(data) == tok
    with pytest.raises(CheckpointError, match="unknown settings"):
        tokenizer_from_dict({"kind": "zh-char", "lowercase": True})


def canonical(text: str) -> str:
    """Whitespace collapsed, and no space next to a CJK character: what zh-char detokenization restores."""
    text = " ".join(text.split())
    return "".join(ch for i, ch in enumerate(text)
                   if not (ch == " " and (is_cjk(text[i - 1]) or is_cjk(text[i + 1]))))


ZH_CHAR_ALPHABET = list("ab1Z é\u0301,.!?'-▁<>\t\u3000中文你好。，？ｆ\u00a0")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(ZH_CHAR_ALPHABET), max_size=30))
def test_zh_char_round_trip_property(text):
    tok = ChineseCharTokenizer()
    tokens = tok.tokenize(text)
    assert tok.detokenize(tokens) == canonical(text)
    assert tok.tokenize(tok.detokenize(tokens)) == tokens
    assert all(t and not t.isspace() for t in tokens)


def test_zh_char_on_all_tatoeba_chinese(tatoeba_zh):
    tok = ChineseCharTokenizer()
    types: set[str] = set()
    for sentence in tatoeba_zh:
        tokens = tok.tokenize(sentence)
        types.update(tokens)
        assert tok.detokenize(tokens) == canonical(sentence)
    assert 2000 < len(types) < 6000
    assert all(len(t) == 1 for t in types if contains_cjk(t))


def test_training_works_when_stderr_has_no_file_descriptor():
    import contextlib
    import io

    from attnlab.data.subword import train_sentencepiece

    with contextlib.redirect_stderr(io.StringIO()):
        tok = train_sentencepiece(["a cat sat on the mat"] * 40 + ["the dog ran far"] * 40, 30)
    assert tok.detokenize(tok.tokenize("the cat ran")) == "the cat ran"
