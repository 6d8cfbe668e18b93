"""BPE-dropout: SentencePiece's segmentation at p = 0, reproducible draws, the pieces it may use, epochs of pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attnlab.core.errors import ConfigError
from attnlab.data.bpe_dropout import BPEDropout, ExampleDropout
from attnlab.data.corpus import read_multi30k, read_tatoeba
from attnlab.data.dataset import encode_pairs
from attnlab.data.subword import train_sentencepiece
from attnlab.data.tokenize import CharTokenizer, tokenizer_from_dict
from attnlab.data.vocab import EOS_ID, UNK_ID, Vocab

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def multi30k():
    if not (SHARED / "multi30k").is_dir():
        pytest.skip("../shared/data not present")
    return read_multi30k("train", "en", "de", SHARED).pairs


@pytest.fixture(scope="module")
def joint(multi30k):
    """A joint 2,000-piece BPE model of the first 6,000 pairs, and those pairs."""
    pairs = multi30k[:6000]
    return train_sentencepiece([s for s, _ in pairs] + [t for _, t in pairs], 2000), pairs


def test_p_0_is_sentencepiece_on_every_training_sentence(multi30k):
    texts = [s for s, _ in multi30k] + [t for _, t in multi30k]
    tok = train_sentencepiece(texts, 8000)  # the En-De recipe's model
    assert BPEDropout(tok, texts).sample(0.0, seed=0) == [tok.tokenize(t) for t in texts]


def test_p_0_is_sentencepiece_on_chinese_and_with_bytes():
    if not (SHARED / "tatoeba").is_dir():
        pytest.skip("../shared/data not present")
    zh = read_tatoeba("cmn", SHARED).targets
    tok = train_sentencepiece(zh[:-500], 3000)  # a whole Chinese sentence is one "word": long merge loops
    assert BPEDropout(tok, zh[-500:]).sample(0.0, seed=0) == [tok.tokenize(t) for t in zh[-500:]]
    small = train_sentencepiece(["一个男人在街上走。", "两个女人在公园里。"] * 20, 300, byte_fallback=True,
                                hard_vocab_limit=False, character_coverage=1.0)
    texts = ["猫在街上走。", "一个男人"]  # 猫 is unseen: byte pieces, which BPE-dropout leaves as they are
    sampled = BPEDropout(small, texts).sample(0.5, seed=1)
    assert [small.detokenize(p) for p in sampled] == texts
    def byte_pieces(pieces: list[str]) -> list[str]:
        return [p for p in pieces if p.startswith("<0x")]

    assert byte_pieces(sampled[0]) == byte_pieces(small.tokenize(texts[0]))


def test_user_defined_symbols_stay_whole():
    texts = ["<2de> a man walks his dog", "two dogs play <2de> in the park", "a woman reads"] * 30
    tok = train_sentencepiece(texts, 60, hard_vocab_limit=False, user_defined_symbols=["<2de>"])
    assert "<2de>" not in tok.merge_scores() and "▁man" in tok.merge_scores()
    held_out = ["<2de> a man reads in the park", "the dog<2de>walks"]
    sampler = BPEDropout(tok, held_out)
    assert sampler.sample(0.0, seed=0) == [tok.tokenize(t) for t in held_out]
    for sampled in sampler.sample(0.5, seed=1) + sampler.sample(0.5, seed=2):
        assert "<2de>" in sampled
    # a word holding the symbol ("▁dog<2de>walks") keeps all its pieces
    assert all(s[-4:] == tok.tokenize(held_out[1])[-4:] for s in (sampler.sample(0.9, seed=k)[1] for k in range(5)))


def test_samples_keep_the_text_use_model_pieces_and_resegment(joint):
    tok, pairs = joint
    texts = [t for _, t in pairs[:300]]
    sampled = BPEDropout(tok, texts).sample(0.1, seed=3)
    # The same text as the deterministic pieces say (SentencePiece's normalization folds repeated spaces).
    assert [tok.detokenize(p) for p in sampled] == [tok.detokenize(tok.tokenize(t)) for t in texts]
    assert {p for s in sampled for p in s} <= set(tok.vocab_pieces())
    changed = sum(s != tok.tokenize(t) for s, t in zip(sampled, texts, strict=True))
    assert changed > 100  # most sentences have a dropped merge somewhere at p = 0.1


def test_the_dropout_probability_sets_how_much_is_split(joint):
    tok, pairs = joint
    texts = [s for s, _ in pairs[:300]]
    sampler = BPEDropout(tok, texts)
    counts = [sum(map(len, sampler.sample(p, seed=1))) for p in (0.0, 0.05, 0.2, 0.9999)]
    assert counts[0] < counts[1] < counts[2] < counts[3]
    # Dropping (nearly) every merge leaves the characters, each word's "▁" one of them (1e-4 of ~18k merges stay).
    characters = sum(len(t.replace(" ", "")) + len(t.split()) for t in texts)
    assert characters - 10 <= counts[3] <= characters


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize(("corpus", "word", "whole", "split"), [
    ("xab yab zab", "xab", ("▁", "x", "ab"), ("▁", "x", "a", "b")),  # a word of four characters
    ("a a a b", "a", ("▁a",), ("▁", "a")),  # a word of two
])
def test_a_merge_is_skipped_with_probability_p(p, corpus, word, whole, split):
    """A model with one merge: the word stays split in a share p of the draws."""
    tok = train_sentencepiece([corpus] * 50, len({*corpus}) + 2, hard_vocab_limit=False)
    assert tuple(tok.tokenize(word)) == whole and len(tok.vocab_pieces()) == len({*corpus.replace(" ", "")}) + 2
    n = 4000
    draws = BPEDropout(tok, [word] * n).sample(p, seed=11)
    assert {tuple(d) for d in draws} == {whole, split}
    count = sum(tuple(d) == split for d in draws)
    assert abs(count - n * p) < 5 * (n * p * (1 - p)) ** 0.5  # binomial: 5 standard deviations


def test_draws_depend_on_the_seed_alone_in_any_process(joint):
    tok, pairs = joint
    texts = [s for s, _ in pairs[:200]]
    sampler = BPEDropout(tok, texts)
    first = sampler.sample(0.1, seed="0:3")
    assert sampler.sample(0.1, seed="0:4") != first
    assert sampler.sample(0.1, seed="0:3") == first  # the draws of another seed in between change nothing
    assert BPEDropout(tok, texts).sample(0.1, seed="0:3") == first
    # A new process (as a data-parallel rank or a resumed run is) draws the same.
    script = ("import json, sys; from attnlab.data.tokenize import tokenizer_from_dict; "
              "from attnlab.data.bpe_dropout import BPEDropout; d = json.load(sys.stdin); "
              "print(json.dumps(BPEDropout(tokenizer_from_dict(d['tok']), d['texts']).sample(0.1, seed='0:3')))")
    res = subprocess.run([sys.executable, "-c", script], input=json.dumps({"tok": tok.to_dict(), "texts": texts}),
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(res.stdout) == first


@pytest.mark.parametrize("p", [-0.1, 1.0, True, "0.1", float("nan")])
def test_bad_probabilities_are_refused(joint, p):
    tok, pairs = joint
    with pytest.raises(ConfigError, match=r"data.bpe_dropout: .*expected a merge-skip probability in \[0, 1\)"):
        BPEDropout(tok, ["a text"]).sample(p, seed=0)


def test_only_bpe_models_are_resampled(multi30k):
    texts = [s for s, _ in multi30k[:1000]]
    unigram = train_sentencepiece(texts, 300, model_type="unigram")
    with pytest.raises(ConfigError, match="data.bpe_dropout: needs a bpe tokenizer, got unigram"):
        BPEDropout(unigram, texts)
    pairs = multi30k[:50]
    chars = CharTokenizer()
    vocab = Vocab.build(chars.tokenize(s) for s, _ in pairs)
    examples, _ = encode_pairs(pairs, chars, chars, vocab, vocab)
    with pytest.raises(ConfigError, match="at least one side, got char and char"):
        ExampleDropout(examples, pairs, (chars, chars), (vocab, vocab), 0.1)


def _vocab_with_all_pieces(tok, pairs):
    return Vocab.build([*(tok.tokenize(s) for s, _ in pairs), *(tok.tokenize(t) for _, t in pairs),
                        tok.vocab_pieces()])


def test_example_epochs_keep_every_pair_and_its_index(joint):
    tok, pairs = joint
    pairs = pairs[:500]
    vocab = _vocab_with_all_pieces(tok, pairs)
    examples, _ = encode_pairs(pairs, tok, tok, vocab, vocab)
    dropout = ExampleDropout(examples, pairs, (tok, tok), (vocab, vocab), 0.1)
    epoch, stats = dropout.examples("0:1")
    assert [e.index for e in epoch] == [e.index for e in examples]
    assert stats == {"sampled": 500, "kept_deterministic": 0, "truncated": 0}
    for ex in epoch:
        src, tgt = (tok.detokenize(tok.tokenize(t)) for t in pairs[ex.index])
        assert tok.detokenize(vocab.decode(ex.src_ids)) == src
        assert tok.detokenize(vocab.decode(ex.tgt_ids)) == tgt and ex.tgt_ids[-1] == EOS_ID
        assert UNK_ID not in ex.src_ids and UNK_ID not in ex.tgt_ids
    assert dropout.examples("0:1")[0] == epoch and dropout.examples("0:2")[0] != epoch
    # A character side keeps its ids while the bpe side is resampled.
    chars = CharTokenizer()
    char_vocab = Vocab.build(chars.tokenize(s) for s, _ in pairs)
    mixed, _ = encode_pairs(pairs, chars, tok, char_vocab, vocab)
    resampled, _ = ExampleDropout(mixed, pairs, (chars, tok), (char_vocab, vocab), 0.3).examples(0)
    assert [e.src_ids for e in resampled] == [e.src_ids for e in mixed]
    assert [e.tgt_ids for e in resampled] != [e.tgt_ids for e in mixed]


def test_a_pair_made_too_long_keeps_its_ids_or_is_cut(joint):
    tok, pairs = joint
    vocab = _vocab_with_all_pieces(tok, pairs[:300])
    lengths = [max(len(tok.tokenize(s)), len(tok.tokenize(t)) + 1) for s, t in pairs[:300]]
    max_len = max(lengths)  # every pair fits deterministically; many sampled ones will not
    examples, stats = encode_pairs(pairs[:300], tok, tok, vocab, vocab, max_len=max_len)
    assert stats["kept"] == 300
    kept, kept_stats = ExampleDropout(examples, pairs, (tok, tok), (vocab, vocab), 0.5, max_len=max_len).examples(0)
    assert kept_stats["kept_deterministic"] > 0 and kept_stats["sampled"] + kept_stats["kept_deterministic"] == 300
    assert all(max(len(e.src_ids), len(e.tgt_ids)) <= max_len for e in kept)
    assert sum(e is orig for e, orig in zip(kept, examples, strict=True)) == kept_stats["kept_deterministic"]
    cut, cut_stats = ExampleDropout(examples, pairs, (tok, tok), (vocab, vocab), 0.5, max_len=max_len,
                                    truncate=True).examples(0)
    assert cut_stats["truncated"] == kept_stats["kept_deterministic"]
    assert all(max(len(e.src_ids), len(e.tgt_ids)) <= max_len and e.tgt_ids[-1] == EOS_ID for e in cut)


def test_a_restored_tokenizer_samples_the_same(joint):
    tok, pairs = joint
    texts = [t for _, t in pairs[:100]]
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert BPEDropout(again, texts).sample(0.1, seed=5) == BPEDropout(tok, texts).sample(0.1, seed=5)


def test_the_prepared_vocabulary_holds_every_piece_only_with_dropout(multi30k):
    from attnlab.core.run_config import DataConfig
    from attnlab.data.prepare import prepare_data

    common = {"source": "multi30k", "src_lang": "en", "tgt_lang": "de", "vocab_size": 2000, "max_train": 3000,
              "data_dir": str(SHARED)}
    plain = prepare_data(DataConfig(**common)).text
    dropout = prepare_data(DataConfig(**common, bpe_dropout=0.1)).text
    pieces = set(dropout.src_tokenizer.vocab_pieces())
    assert pieces <= set(dropout.src_vocab.tokens) and dropout.src_vocab is dropout.tgt_vocab
    assert not pieces <= set(plain.src_vocab.tokens)  # intermediate merges the deterministic segmentation never outputs
