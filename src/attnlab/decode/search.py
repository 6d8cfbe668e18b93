"""Types and small helpers shared by greedy decoding and beam search.

Conventions used by every decoder in :mod:`attnlab.decode`:

* A *step* consumes one token per row and scores the next one; the first step consumes ``<bos>``.
* ``max_len`` bounds the number of steps, so a hypothesis has at most ``max_len`` scored tokens
  (its ``<eos>`` included when it has one). A row that reaches ``max_len`` without ``<eos>`` ends there.
* Scores are sums of natural-log probabilities of the scored tokens (``<eos>`` included).
* ``<pad>`` and ``<bos>`` are never generated: their log-probabilities are set to ``-inf`` after the
  softmax, so the scores of the other tokens stay the model's true log-probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnlab.attention.scoring import is_observed

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2


@dataclass
class Hypothesis:
    """One decoded target sentence.

    Attributes:
        tokens: generated ids without ``<bos>`` and ``<eos>``.
        score: sum of the log-probabilities of every scored token (``<eos>`` included when generated).
        normalized_score: ``score / length_penalty(num_steps, alpha)`` (see :func:`length_penalty`);
            what beam search ranks by. Greedy decoding fills it with the same formula.
        cross_attention: ``(num_steps, Ts)`` attention over the *real* source tokens (padding cut off), or
            over a captioner's ``Ts = N`` image patches; one row per scored token -- so ``len(tokens) + 1``
            rows when the hypothesis ended with ``<eos>``, else ``len(tokens)``; ``None`` unless
            ``return_attention=True``.
        ended: ``True`` when the hypothesis ended with ``<eos>``, ``False`` when ``max_len`` cut it.
    """

    tokens: list[int]
    score: float
    normalized_score: float
    cross_attention: torch.Tensor | None = None
    ended: bool = True

    @property
    def num_steps(self) -> int:
        """Number of scored tokens (``len(tokens)`` plus one for ``<eos>``)."""
        return len(self.tokens) + int(self.ended)


NBestList = list[Hypothesis]
"""The hypotheses of one source sentence, best first (by ``normalized_score``)."""


def length_penalty(length: int | float | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT length penalty ``lp(Y) = ((5 + |Y|) / 6) ** alpha`` (Wu et al., 2016, eq. 14).

    ``|Y|`` is the number of scored tokens (``<eos>`` included). ``alpha = 0`` ranks by the raw
    log-probability; larger ``alpha`` favours longer outputs (``lp(1) = 1`` for every ``alpha``).
    """
    return ((5.0 + length) / 6.0) ** alpha


def normalize(score: float, length: int, alpha: float) -> float:
    """``score / length_penalty(length, alpha)``."""
    return score / float(length_penalty(length, alpha))


def logits_are_ours(model: torch.nn.Module) -> bool:
    """Whether a decoder may write over the logits ``model.decode_step`` returns (``step_log_probs(...,
    inplace=True)``): nothing watches any of its modules, so no hook (capture, explanation) may hold them."""
    return not any(is_observed(m) for m in model.modules())


def step_log_probs(logits: torch.Tensor, *, bos_id: int, pad_id: int = PAD_ID, inplace: bool = False) -> torch.Tensor:
    """Log-softmax in float32 with ``<pad>``/``<bos>`` made impossible.

    ``logits``: ``(B, V)`` -> ``(B, V)`` log-probabilities (the other tokens keep their true values).
    ``inplace``: write them over ``logits`` when those are contiguous float32 (the same numbers without a second
    (B, V) tensor, which cost beam search ~10% of its time). Only for logits nobody else holds (no autograd, no
    hook kept them). PyTorch's kernel must not write over a strided view of its own input: that gave NaN.
    """
    if inplace and logits.dtype == torch.float32 and logits.is_contiguous():
        logp = torch.ops.aten._log_softmax.out(logits, -1, False, out=logits)
    else:
        logp = torch.log_softmax(logits.float(), dim=-1)
    logp[:, pad_id] = -math.inf
    logp[:, bos_id] = -math.inf
    return logp


def check_inputs(src: torch.Tensor, src_lens: torch.Tensor, max_len: int) -> None:
    """Validate the shapes shared by every decoder.

    ``src`` is ``(B, Ts)`` token ids or ``(B, C, H, W)`` images (a captioner's source; the model checks the
    rest), ``src_lens`` is ``(B,)``: source tokens per row, or the number of attended image regions.
    """
    if src.dim() not in (2, 4):
        raise ValueError(f"src must be (B, Ts) token ids or (B, C, H, W) images, got shape {tuple(src.shape)}")
    if src_lens.shape != (src.shape[0],):
        raise ValueError(f"src_lens must be (B,) = ({src.shape[0]},), got {tuple(src_lens.shape)}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
