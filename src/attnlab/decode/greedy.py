"""Batched greedy decoding, with the model's incremental state (KV cache / RNN state) or by full recompute.

At every step each unfinished row takes the arg-max token. Rows that emit ``<eos>`` are removed from the
decoder state with :meth:`~attnlab.models.base.DecoderState.reorder`, so later steps only pay for the
rows that are still running.

``use_cache=False`` is the reference implementation: each step re-runs the teacher-forced
:meth:`~attnlab.models.base.EncoderDecoder.forward` on the whole prefix and keeps the last position.
It costs ``O(Tt^2)`` decoder work instead of ``O(Tt)`` and exists for tests and the speed benchmark.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from attnlab.attention import native
from attnlab.decode.search import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Hypothesis,
    check_inputs,
    logits_are_ours,
    normalize,
    step_log_probs,
)
from attnlab.models.base import EncoderDecoder

__all__ = ["greedy_decode", "eval_mode"]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Switch ``model`` to eval mode (no dropout) and gradients off; restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def last_step_cross_weights(model_out_attention: object) -> torch.Tensor:
    """Cross-attention of the last target position from a teacher-forced pass.

    Takes :class:`~attnlab.models.base.AttentionMaps` with ``cross``: ``(L, B, H, Tt, Ts)`` and returns
    ``(B, Ts)``: the last layer, averaged over heads -- the same convention as ``decode_step``.
    """
    cross = getattr(model_out_attention, "cross", None)
    if cross is None:
        raise ValueError("the model returned no cross-attention although need_weights=True was passed")
    return cross[-1, :, :, -1, :].mean(dim=1)  # (B, Ts)


def greedy_decode(
    model: EncoderDecoder,
    src: torch.Tensor,
    src_lens: torch.Tensor,
    *,
    max_len: int,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    length_penalty: float = 1.0,
    return_attention: bool = False,
    use_cache: bool = True,
) -> list[Hypothesis]:
    """Decode every source sentence of a padded batch by taking the most likely token at each step.

    Args:
        model: an :class:`~attnlab.models.base.EncoderDecoder`; put in eval mode for the call.
        src: ``(B, Ts)`` source ids, padded with 0, or ``(B, C, H, W)`` images for a captioner.
        src_lens: ``(B,)`` real source lengths (a captioner: its number of patches ``N``).
        max_len: at most this many scored tokens per sentence (``<eos>`` included).
        bos_id, eos_id: special ids of the target vocabulary.
        length_penalty: ``alpha`` of :func:`~attnlab.decode.search.length_penalty`; only used to fill
            ``Hypothesis.normalized_score`` (greedy choices do not depend on it).
        return_attention: fill ``Hypothesis.cross_attention`` with ``(num_steps, src_len)`` weights.
        use_cache: step with ``model.decode_step`` (incremental); ``False`` recomputes the prefix.

    Returns:
        one :class:`~attnlab.decode.search.Hypothesis` per source row, in input order.
    """
    check_inputs(src, src_lens, max_len)
    batch_size = src.shape[0]
    if batch_size == 0:
        return []
    device = src.device
    with eval_mode(model):
        # 1. Buffers indexed by the original row; `rows` maps live rows to original rows.
        out_tokens = torch.full((batch_size, max_len), PAD_ID, dtype=torch.long, device=device)
        scores = torch.zeros(batch_size, dtype=torch.float32, device=device)
        num_steps = torch.zeros(batch_size, dtype=torch.long, device=device)
        ended = torch.zeros(batch_size, dtype=torch.bool, device=device)
        attn = None  # (B, max_len, Ts), made at the first step: Ts is the model's memory length (tokens or patches)
        rows = torch.arange(batch_size, device=device)
        tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)

        # 2. Start: the encoder state (cached) or the source plus a growing prefix (uncached).
        state = model.encode(src, src_lens) if use_cache else None
        live_src, live_lens = src, src_lens
        prefix = tokens.unsqueeze(1)  # (B, 1)

        own_logits = logits_are_ours(model)  # then each step's log-probabilities are written over its logits
        for step in range(max_len):
            # 3. Score the next token of every live row.
            if use_cache:
                out = model.decode_step(tokens, state, need_weights=return_attention)
                logits, weights, state = out.logits, out.cross_weights, out.state
            else:
                full = model.forward(live_src, live_lens, prefix, need_weights=return_attention)
                logits = full.logits[:, -1]  # (B_live, V)
                weights = last_step_cross_weights(full.attention) if return_attention else None
            picked = native.greedy_pick(logits, pad_id=PAD_ID, bos_id=bos_id)  # None: no compiled kernels
            if picked is None:
                picked = step_log_probs(logits, bos_id=bos_id, inplace=own_logits).max(dim=-1)
            best_logp, best = picked  # (B_live,), (B_live,)

            # 4. Record the choice for the original rows; keep: the live rows that did not end.
            if return_attention:
                if attn is None:
                    attn = torch.zeros(batch_size, max_len, weights.shape[-1], device=device)
                attn[rows, step] = weights.float()
            keep = native.greedy_record(best, best_logp, rows, step, eos_id, out_tokens=out_tokens, scores=scores,
                                        num_steps=num_steps, ended=ended)  # None: no compiled kernels
            if keep is None:
                scores[rows] += best_logp
                out_tokens[rows, step] = best
                num_steps[rows] = step + 1
                done = best == eos_id
                ended[rows[done]] = True
                keep = (~done).nonzero().squeeze(1)  # (B_live',)
            if step == max_len - 1 or keep.shape[0] == 0:
                break

            # 5. Drop finished rows from the state so later steps only compute live ones.
            if keep.shape[0] < best.shape[0]:
                rows, best = rows[keep], best[keep]
                if use_cache:
                    state = state.reorder(keep)
                else:
                    live_src, live_lens, prefix = live_src[keep], live_lens[keep], prefix[keep]
            tokens = best
            if not use_cache:
                prefix = torch.cat([prefix, best.unsqueeze(1)], dim=1)  # (B_live, step + 2)

    # 6. Unpack into hypotheses (tokens without <eos>, attention cut to the real source).
    hyps: list[Hypothesis] = []
    steps_list, ended_list, scores_list = num_steps.tolist(), ended.tolist(), scores.tolist()
    lens_list = src_lens.tolist()
    for b in range(batch_size):
        n = steps_list[b]
        toks = out_tokens[b, :n].tolist()
        if ended_list[b]:
            toks = toks[:-1]
        cross = attn[b, :n, : lens_list[b]].clone() if attn is not None else None
        score = scores_list[b]
        hyps.append(Hypothesis(tokens=toks, score=score, normalized_score=normalize(score, n, length_penalty),
                               cross_attention=cross, ended=ended_list[b]))
    return hyps
