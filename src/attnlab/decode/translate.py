"""Text in, text out: tokenize, batch by length, decode (greedy or beam), restore order, detokenize.

Sources are encoded as in training (:func:`attnlab.data.dataset.encode_pairs`): the tokenizer's tokens
mapped by the source vocabulary, no ``<bos>``/``<eos>``. Sentences are sorted by length so each batch
pads little; the results come back in the input order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from attnlab.data.tokenize import Tokenizer
from attnlab.data.vocab import Vocab
from attnlab.decode.beam import beam_search
from attnlab.decode.greedy import greedy_decode
from attnlab.decode.search import Hypothesis, NBestList
from attnlab.models.base import EncoderDecoder

log = logging.getLogger(__name__)

__all__ = ["Translation", "default_max_len", "translate_sentences"]


@dataclass
class Translation:
    """The translation of one source sentence.

    Attributes:
        source: the input text.
        text: the detokenized best hypothesis (``""`` for an empty source).
        src_tokens: the source tokens the model saw (columns of ``cross_attention``).
        tokens: the target tokens of the best hypothesis; ``tokens + ["<eos>"]`` label the rows of its
            ``cross_attention`` when it ended with ``<eos>``.
        hypotheses: the n-best list, best first (empty for an empty source).
    """

    source: str
    text: str
    src_tokens: list[str]
    tokens: list[str]
    hypotheses: NBestList = field(default_factory=list)

    @property
    def best(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None


def default_max_len(src_len: int) -> int:
    """Default decoding bound for a batch whose longest source has ``src_len`` tokens: ``2 * src_len + 10``."""
    return 2 * src_len + 10


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def translate_sentences(
    model: EncoderDecoder,
    sentences: list[str],
    src_tokenizer: Tokenizer,
    src_vocab: Vocab,
    tgt_tokenizer: Tokenizer,
    tgt_vocab: Vocab,
    *,
    beam_size: int = 1,
    n_best: int = 1,
    batch_size: int = 64,
    max_len: int | None = None,
    max_src_len: int | None = None,
    warn_cut: bool = False,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    return_attention: bool = False,
) -> list[Translation]:
    """Translate ``sentences`` with ``model``; one :class:`Translation` per sentence, in input order.

    Args:
        model: the trained model (moved nowhere; batches go to its device).
        sentences: source texts, one sentence each.
        src_tokenizer, src_vocab: how the model's source side was encoded in training.
        tgt_tokenizer, tgt_vocab: how to turn target ids back into text.
        beam_size: 1 uses :func:`~attnlab.decode.greedy.greedy_decode`, more uses
            :func:`~attnlab.decode.beam.beam_search`.
        n_best: hypotheses kept per sentence (beam search only; ``<= beam_size``).
        batch_size: sentences per decoding batch (after sorting by length).
        max_len: maximum target tokens per sentence (``<eos>`` included); ``None``:
            :func:`default_max_len` of the longest source in each batch.
        max_src_len: cut longer sources to this many tokens (``None``: no cut).
        warn_cut: log a warning with the number of sources cut (for user-facing calls).
        length_penalty: GNMT ``alpha`` (see :func:`~attnlab.decode.search.length_penalty`).
        early_stopping: beam search stops a sentence at ``beam_size`` finished hypotheses instead of when
            they cannot be beaten (faster; see :func:`~attnlab.decode.beam.beam_search`).
        return_attention: keep each hypothesis's ``(num_steps, src_len)`` cross-attention.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best}")
    device = _model_device(model)

    # 1. Tokenize and encode; empty sources are answered without the model.
    src_tokens = [src_tokenizer.tokenize(s) for s in sentences]
    if max_src_len is not None:
        cut = sum(len(toks) > max_src_len for toks in src_tokens)
        if cut and warn_cut:
            log.warning("%d of %d inputs are longer than the model's %d source tokens; only their first %d are read",
                        cut, len(sentences), max_src_len, max_src_len)
        src_tokens = [toks[:max_src_len] for toks in src_tokens]
    src_ids = [src_vocab.encode(toks) for toks in src_tokens]
    results: list[Translation | None] = [
        Translation(source=s, text="", src_tokens=[], tokens=[]) if not ids else None
        for s, ids in zip(sentences, src_ids, strict=True)]

    # 2. Longest first (stable), so each batch holds similar lengths and the first batch shows peak memory.
    order = sorted((i for i, ids in enumerate(src_ids) if ids), key=lambda i: -len(src_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        lens = [len(src_ids[i]) for i in chunk]
        src = torch.zeros(len(chunk), max(lens), dtype=torch.long)
        for row, i in enumerate(chunk):
            src[row, : lens[row]] = torch.tensor(src_ids[i], dtype=torch.long)
        src_lens = torch.tensor(lens, dtype=torch.long)
        src, src_lens = src.to(device), src_lens.to(device)
        limit = max_len if max_len is not None else default_max_len(max(lens))

        # 3. Decode the batch.
        if beam_size == 1:
            nbests = [[h] for h in greedy_decode(model, src, src_lens, max_len=limit, length_penalty=length_penalty,
                                                 return_attention=return_attention)]
        else:
            nbests = beam_search(model, src, src_lens, beam_size=beam_size, max_len=limit, n_best=n_best,
                                 length_penalty=length_penalty, early_stopping=early_stopping,
                                 return_attention=return_attention)

        # 4. Back to text, in the input order.
        for i, hyps in zip(chunk, nbests, strict=True):
            tokens = tgt_vocab.decode(hyps[0].tokens)
            results[i] = Translation(source=sentences[i], text=tgt_tokenizer.detokenize(tokens),
                                     src_tokens=src_tokens[i], tokens=tokens, hypotheses=hyps)
    return [r for r in results if r is not None]
