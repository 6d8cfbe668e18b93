"""translate_sentences: text round trip through a copy model, input order kept, length-sorted batches."""

from __future__ import annotations

import pytest
import torch
from decode_toy_models import CopyModel

from attnlab.data.tokenize import CharTokenizer, WordTokenizer
from attnlab.data.vocab import Vocab
from attnlab.decode import translate_sentences

SENTENCES = [
    "The cat sat on the mat.",
    "",
    "A dog!",
    "the mat, the cat and the dog sat on a hat",
    "Cat?",
    "the dog sat",
]


class RecordingCopy(CopyModel):
    """Records the source batches the model is asked to encode."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__(vocab_size)
        self.batches: list[tuple[int, int]] = []  # (rows, padded length)

    def encode(self, src, src_lens):
        self.batches.append(tuple(src.shape))
        assert int(src_lens.max()) == src.shape[1]  # padded to the batch's longest source only
        return super().encode(src, src_lens)


@pytest.fixture
def setup() -> tuple[WordTokenizer, Vocab]:
    tok = WordTokenizer()
    vocab = Vocab.build([tok.tokenize(s) for s in SENTENCES[:3]])  # "hat", "and", ... stay unknown
    return tok, vocab


@pytest.mark.parametrize("beam_size", [1, 3])
def test_copy_model_round_trip_in_input_order(setup: tuple[WordTokenizer, Vocab], beam_size: int) -> None:
    tok, vocab = setup
    model = RecordingCopy(len(vocab))
    out = translate_sentences(model, SENTENCES, tok, vocab, tok, vocab, beam_size=beam_size, n_best=beam_size,
                              batch_size=2, return_attention=True)
    assert [t.source for t in out] == SENTENCES
    for t, sentence in zip(out, SENTENCES, strict=True):
        expected = [w if w in vocab else "<unk>" for w in tok.tokenize(sentence)]
        assert t.tokens == expected
        assert t.src_tokens == tok.tokenize(sentence)
        if not sentence:
            assert t.text == "" and t.hypotheses == [] and t.best is None
            continue
        assert t.text == tok.detokenize(expected)
        assert len(t.hypotheses) == beam_size
        att = t.best.cross_attention
        assert att.shape == (len(t.tokens) + 1, len(t.src_tokens))
        assert att[:-1].argmax(-1).tolist() == list(range(len(t.tokens)))  # the copy model's alignment
    assert torch.is_grad_enabled()  # decoding switched gradients off only inside its own calls
    # 5 non-empty sentences in batches of 2, longest first: padded lengths never grow.
    assert [rows for rows, _ in model.batches] == [2, 2, 1]
    lengths = [n for _, n in model.batches]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] == 12


def test_unknown_words_and_cased_text(setup: tuple[WordTokenizer, Vocab]) -> None:
    tok, vocab = setup
    (t,) = translate_sentences(CopyModel(len(vocab)), ["THE zebra SAT."], tok, vocab, tok, vocab)
    assert t.text == "the <unk> sat."


def test_character_level_and_max_lengths() -> None:
    tok = CharTokenizer()
    vocab = Vocab.build([tok.tokenize("hello world")])
    out = translate_sentences(CopyModel(len(vocab)), ["hello world", "low"], tok, vocab, tok, vocab, max_len=4)
    assert [t.text for t in out] == ["hell", "low"]
    out = translate_sentences(CopyModel(len(vocab)), ["hello world"], tok, vocab, tok, vocab, max_src_len=5)
    assert out[0].text == "hello" and out[0].src_tokens == list("hello")


def test_rejects_bad_arguments(setup: tuple[WordTokenizer, Vocab]) -> None:
    tok, vocab = setup
    model = CopyModel(len(vocab))
    with pytest.raises(ValueError, match="batch_size"):
        translate_sentences(model, ["a"], tok, vocab, tok, vocab, batch_size=0)
    with pytest.raises(ValueError, match="n_best"):
        translate_sentences(model, ["a"], tok, vocab, tok, vocab, beam_size=2, n_best=3)
    assert translate_sentences(model, [], tok, vocab, tok, vocab) == []
