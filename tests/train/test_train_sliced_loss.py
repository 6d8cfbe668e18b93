"""The pointer-generator's sliced loss (``sliced_cross_entropy``) equals the whole-logits path, loss and
gradients, and holds one slice of positions' logits at a time, in the forward and in the recomputing backward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_linear_loss import (
    BF16_GRAD_REL,
    FP32_TOL,
    V,
    _batch,
    _LogitsShapes,
    _loss_and_grads,
    whole_and_ddp_chunked_grads,
)

from attnlab.core.model_config import TransformerConfig
from attnlab.models import Transformer
from attnlab.train.loss import masked_cross_entropy, sliced_cross_entropy, teacher_forced_loss

SMALL = {"d_model": 16, "num_heads": 4, "ffn_dim": 32, "encoder_layers": 2, "decoder_layers": 2, "dropout": 0.1,
         "max_len": 64}


def _copy_model(**overrides: object) -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(**{**SMALL, "share_embeddings": True, "tie_output": True, "copy": True, **overrides})
    return Transformer(cfg, V, V).train()


def _assert_grads_equal(grads: dict[str, torch.Tensor], want: dict[str, torch.Tensor], **tol: float) -> None:
    assert grads.keys() == want.keys()
    assert {"copy_query.weight", "copy_key.weight", "copy_gate.weight", "tgt_embedding.weight"} <= grads.keys()
    for name, ref in want.items():
        torch.testing.assert_close(grads[name], ref, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 6, 13, 10_000])
def test_loss_and_gradients_equal_the_whole_logits_path(smoothing: float, chunk: int) -> None:
    """Dropout on: the slices recompute only the projection, so both paths draw the same masks."""
    model, batch = _copy_model(), _batch(0)  # float32: the mixture is float32 by design
    ref_loss, ref_n, ref_grads = _loss_and_grads(model, batch, label_smoothing=smoothing, chunk_tokens=None)
    loss, n, grads = _loss_and_grads(model, batch, label_smoothing=smoothing, chunk_tokens=chunk)
    assert n == ref_n
    torch.testing.assert_close(loss, ref_loss, **FP32_TOL)
    _assert_grads_equal(grads, ref_grads, **FP32_TOL)


def test_bf16_autocast_equals_the_whole_logits_path_within_rounding() -> None:
    model, batch = _copy_model(), _batch(1)
    ref_loss, _, ref_grads = _loss_and_grads(model, batch, bf16=True, label_smoothing=0.1, chunk_tokens=None)
    loss, _, grads = _loss_and_grads(model, batch, bf16=True, label_smoothing=0.1, chunk_tokens=8)
    torch.testing.assert_close(loss, ref_loss, **FP32_TOL)  # the same bf16 matmuls, float32 mixture either way
    # the weight gradients of the bf16 projections are summed over slices instead of in one matmul
    assert grads.keys() == ref_grads.keys()
    for name, want in ref_grads.items():
        torch.testing.assert_close(grads[name], want, rtol=0.0, atol=BF16_GRAD_REL * float(want.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_only_one_slice_of_logits_exists_forward_and_backward() -> None:
    model, batch = _copy_model(), _batch(2, batch=8)
    shapes = {}
    for chunk in (None, 17):
        with _LogitsShapes() as spy:
            loss_sum, n = teacher_forced_loss(model, batch, label_smoothing=0.1, chunk_tokens=chunk)
            (loss_sum / n).backward()
        shapes[chunk] = spy.shapes
    assert shapes[None] == {(batch.tgt_out.numel(), V)}  # all B * Tt logits at once
    rows = 8 * (17 // 8)  # B rows x 2 positions per slice
    assert batch.tgt_out.shape[1] % 2 == 1  # a shorter last slice
    assert shapes[17] == {(rows, V), (8, V)}


def test_slices_of_padding_are_skipped_and_all_padding_is_zero_loss() -> None:
    model, batch = _copy_model(), _batch(3)
    out = model(batch.src, batch.src_lens, batch.tgt_in, project=False)
    calls: list[int] = []

    def counting(part: torch.Tensor) -> torch.Tensor:
        calls.append(part.shape[1])
        return out.project(part)

    target = batch.tgt_out.clone()
    target[:, 2:4] = 0  # two positions of padding in every row: the slice [2, 4) is never projected
    loss, n = sliced_cross_entropy(counting, out.hidden, target, chunk_tokens=2 * target.shape[0])
    assert n == int((target != 0).sum()) and len(calls) == -(-target.shape[1] // 2) - 1
    ref, ref_n = masked_cross_entropy(out.project(out.hidden), target)
    torch.testing.assert_close(loss, ref, **FP32_TOL)
    zero, zero_n = sliced_cross_entropy(out.project, out.hidden, torch.zeros_like(target))
    zero.backward()
    assert zero_n == 0 and float(zero.detach()) == 0.0
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.parameters())


def test_without_grad_the_loss_is_the_same_and_nothing_is_kept() -> None:
    model, batch = _copy_model().eval(), _batch(4)
    with torch.no_grad():
        sliced = teacher_forced_loss(model, batch, label_smoothing=0.1)
        full = teacher_forced_loss(model, batch, label_smoothing=0.1, chunk_tokens=None)
    assert not sliced[0].requires_grad and sliced[1] == full[1]
    torch.testing.assert_close(sliced[0], full[0], **FP32_TOL)


def test_bad_shapes_and_chunk_sizes_are_clear_errors() -> None:
    hidden, target = torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"hidden \(2, 3, 4\) does not match target \(2, 4\)"):
        sliced_cross_entropy(lambda h: h, hidden, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1, got 0"):
        sliced_cross_entropy(lambda h: h, hidden, target, chunk_tokens=0)


def test_through_distributed_data_parallel_the_gradients_are_unchanged(tmp_path: Path) -> None:
    """One gloo rank: ``project=False`` and the returned ``project`` pass through the DDP wrapper."""
    ref_grads, grads = whole_and_ddp_chunked_grads(_copy_model(dropout=0.0), _batch(5), tmp_path)
    _assert_grads_equal(grads, ref_grads, **FP32_TOL)
