"""Decoding: batched greedy search and beam search over any :class:`~attnlab.models.base.EncoderDecoder`.

* :func:`greedy_decode` -- arg-max per step; incremental (KV cache / RNN state) or full recompute.
* :func:`beam_search` -- ``B * K`` rows, GNMT length penalty, n-best lists, early stop per sentence.
* :func:`translate_sentences` -- text in, text out, sorted into length-homogeneous batches.

Every hypothesis can carry its cross-attention, ``(num_steps, src_len)``.
"""

from attnlab.decode.beam import beam_search
from attnlab.decode.greedy import greedy_decode
from attnlab.decode.search import Hypothesis, NBestList, length_penalty
from attnlab.decode.translate import Translation, translate_sentences

__all__ = [
    "Hypothesis",
    "NBestList",
    "Translation",
    "beam_search",
    "greedy_decode",
    "length_penalty",
    "translate_sentences",
]
