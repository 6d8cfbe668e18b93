"""The chunked projection + cross-entropy (``linear_cross_entropy``) equals the logits path, loss and gradients,
and never holds more than one chunk's logits."""

from __future__ import annotations

import datetime
import multiprocessing
import queue
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch.utils._python_dispatch import TorchDispatchMode
from train_fixtures import make_model

from attnlab.attention import native
from attnlab.core.model_config import Seq2SeqConfig, TransformerConfig
from attnlab.core.types import Batch
from attnlab.models import Seq2Seq, Transformer
from attnlab.train.loss import linear_cross_entropy, masked_cross_entropy, teacher_forced_loss

V = 23
SMALL = {"d_model": 16, "num_heads": 4, "ffn_dim": 32, "encoder_layers": 2, "decoder_layers": 2, "dropout": 0.1,
         "max_len": 64}


def _rows(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """``hidden (3, 5, 4)``, ``weight (7, 4)``, ``bias (7,)`` and a target with 9 real tokens (ragged chunks)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 5, 4, generator=g, dtype=dtype)
    weight = torch.randn(7, 4, generator=g, dtype=dtype)
    bias = torch.randn(7, generator=g, dtype=dtype)
    target = torch.randint(1, 7, (3, 5), generator=g)
    target[0, 3:] = 0
    target[2, 1:] = 0
    return hidden, weight, bias, target


def _batch(seed: int = 0, batch: int = 6, vocab: int = V) -> Batch:
    """A padded batch: source and target lengths vary, so a third of the target positions are padding."""
    g = torch.Generator().manual_seed(seed)
    src_lens = torch.randint(3, 10, (batch,), generator=g)
    tgt_lens = torch.randint(2, 12, (batch,), generator=g)
    src = torch.randint(4, vocab, (batch, int(src_lens.max())), generator=g)
    src[torch.arange(src.shape[1])[None, :] >= src_lens[:, None]] = 0
    tgt = torch.randint(4, vocab, (batch, int(tgt_lens.max()) + 1), generator=g)
    tgt[:, 0] = 1
    tgt[torch.arange(tgt.shape[1])[None, :] > tgt_lens[:, None]] = 0
    return Batch(src, src_lens, tgt[:, :-1], tgt[:, 1:], tgt_lens, torch.arange(batch))


def _transformer(**overrides: object) -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(**{**SMALL, "share_embeddings": True, "tie_output": True, **overrides})
    return Transformer(cfg, V, V).train()


def _loss_and_grads(model: torch.nn.Module, batch: Batch, *, bf16: bool = False,
                    **kwargs: object) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """``teacher_forced_loss`` and the gradients of its token mean, dropout seeded alike for every call."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss_sum, n = teacher_forced_loss(model, batch, **kwargs)
    (loss_sum / n).backward()
    return loss_sum.detach(), n, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


class _LogitsShapes(TorchDispatchMode):
    """Records the shapes of the logits-like tensors (last dimension ``V``) that matrix products produce; no other
    tensor of the small models here ends in ``V``."""

    MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)

    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if func in self.MATMULS and t.shape[-1] == V:
                self.shapes.add(tuple(t.shape))
        return out


# ------------------------------------------------------------------------------------------ the function


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradcheck_in_float64_and_equal_to_torch_cross_entropy(smoothing: float) -> None:
    hidden, weight, bias, target = _rows()
    for t in (hidden, weight, bias):
        t.requires_grad_(True)

    def loss(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(h, w, target, bias=b, label_smoothing=smoothing, chunk_tokens=2)[0]

    assert torch.autograd.gradcheck(loss, (hidden, weight, bias))
    loss_sum, n = linear_cross_entropy(hidden, weight, target, bias=bias, label_smoothing=smoothing, chunk_tokens=2)
    ref = F.cross_entropy(F.linear(hidden, weight, bias).reshape(-1, 7), target.reshape(-1), ignore_index=0,
                          label_smoothing=smoothing, reduction="sum")
    assert n == 9 and loss_sum.dtype == torch.float64
    torch.testing.assert_close(loss_sum, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 4, 9, 1000])
def test_float32_loss_and_gradients_equal_the_logits_path_for_every_chunk_size(chunk: int) -> None:
    hidden, weight, bias, target = (t.float() if t.is_floating_point() else t for t in _rows(1))
    inputs = [t.requires_grad_(True) for t in (hidden, weight, bias)]
    ref, n_ref = masked_cross_entropy(F.linear(hidden, weight, bias), target, label_smoothing=0.1)
    ref_grads = torch.autograd.grad(ref, inputs)
    loss_sum, n = linear_cross_entropy(hidden, weight, target, bias=bias, label_smoothing=0.1, chunk_tokens=chunk)
    grads = torch.autograd.grad(loss_sum, inputs)
    assert n == n_ref == 9 and loss_sum.dtype == torch.float32
    torch.testing.assert_close(loss_sum, ref, rtol=1e-6, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_padding_is_never_projected_and_gets_no_gradient() -> None:
    hidden, weight, _, target = _rows(2)
    clean, _ = linear_cross_entropy(hidden, weight, target)
    poisoned = hidden.clone()
    poisoned[target == 0] = float("nan")
    poisoned.requires_grad_(True)
    loss_sum, _ = linear_cross_entropy(poisoned, weight, target)
    loss_sum.backward()
    torch.testing.assert_close(loss_sum.detach(), clean)
    assert torch.all(poisoned.grad[target == 0] == 0) and torch.all(poisoned.grad[target != 0].abs().sum(-1) > 0)


def test_a_batch_of_padding_gives_zero_loss_count_and_gradients() -> None:
    hidden, weight, _, target = _rows(4)
    weight.requires_grad_(True)
    loss_sum, n = linear_cross_entropy(hidden, weight, torch.zeros_like(target))
    loss_sum.backward()
    assert n == 0 and float(loss_sum.detach()) == 0.0 and torch.all(weight.grad == 0)


def test_without_grad_only_the_loss_is_computed() -> None:
    hidden, weight, _, target = (t.float() if t.is_floating_point() else t for t in _rows(3))
    weight.requires_grad_(True)
    with torch.no_grad():
        loss_sum, _ = linear_cross_entropy(hidden, weight, target, label_smoothing=0.1)
    assert not loss_sum.requires_grad
    torch.testing.assert_close(loss_sum, masked_cross_entropy(F.linear(hidden, weight), target,
                                                              label_smoothing=0.1)[0].detach())


def test_bad_shapes_and_chunk_sizes_are_clear_errors() -> None:
    hidden, weight, _, target = _rows()
    with pytest.raises(ValueError, match="does not match target"):
        linear_cross_entropy(hidden, weight, target[:, :4])
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
        linear_cross_entropy(hidden, weight, target, chunk_tokens=0)


# ---------------------------------------------------------------------------- through teacher_forced_loss

# float32: equal up to the order of float sums. bf16 autocast: both paths round the same bf16 logits; the
# gradients of the logits are rounded to bf16 per element in both (2^-8 relative), so the parameter gradients
# differ by a few bf16 ulps of their largest entries; the chunked path accumulates the weight gradient in float32.
FP32_TOL = {"rtol": 1e-5, "atol": 1e-6}
BF16_LOSS_TOL = {"rtol": 1e-4, "atol": 1e-4}
BF16_GRAD_REL = 3e-2  # of the largest |gradient| of each parameter; measured 1.1-1.3e-2


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_transformer_gradients_equal_the_logits_path(smoothing: float, bf16: bool) -> None:
    model, batch = _transformer(), _batch()
    assert float((batch.tgt_out == 0).float().mean()) > 0.25  # a length-bucketed batch's share of padding
    ref_loss, ref_n, ref_grads = _loss_and_grads(model, batch, bf16=bf16, label_smoothing=smoothing,
                                                 chunk_tokens=None)
    loss, n, grads = _loss_and_grads(model, batch, bf16=bf16, label_smoothing=smoothing, chunk_tokens=7)
    assert n == ref_n and grads.keys() == ref_grads.keys()
    assert "tgt_embedding.weight" in grads and model.output.weight is model.tgt_embedding.weight  # tied
    torch.testing.assert_close(loss, ref_loss, **(BF16_LOSS_TOL if bf16 else FP32_TOL))
    for name, want in ref_grads.items():
        if bf16:
            scale = float(want.abs().max())
            torch.testing.assert_close(grads[name], want, rtol=0.0, atol=BF16_GRAD_REL * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")
        else:
            torch.testing.assert_close(grads[name], want, **FP32_TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_seq2seq_with_an_output_bias_equals_the_logits_path() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(embed_dim=8, hidden_size=12, num_layers=1, dropout=0.1), V, V).train()
    batch = _batch(1)
    ref_loss, _, ref_grads = _loss_and_grads(model, batch, label_smoothing=0.1, chunk_tokens=None)
    loss, _, grads = _loss_and_grads(model, batch, label_smoothing=0.1, chunk_tokens=5)
    assert "output.bias" in grads
    torch.testing.assert_close(loss, ref_loss, **FP32_TOL)
    for name, want in ref_grads.items():
        torch.testing.assert_close(grads[name], want, **FP32_TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_only_one_chunk_of_logits_ever_exists_and_every_chunk_has_the_same_shape() -> None:
    model, batch = _transformer(), _batch(2, batch=8)
    shapes = {}
    for chunk in (None, 7):
        with _LogitsShapes() as spy:
            loss_sum, n = teacher_forced_loss(model, batch, label_smoothing=0.1, chunk_tokens=chunk)
            (loss_sum / n).backward()
        shapes[chunk] = spy.shapes
    assert shapes[None] == {(batch.tgt_out.numel(), V)}  # the logits path: all B * Tt logits, padding included
    assert n % 7 != 0  # a ragged last chunk: it overlaps the one before, so the matmuls keep one shape
    assert shapes[7] == {(7, V)}


def test_models_without_a_linear_projection_keep_the_logits_path() -> None:
    batch = _batch(3)
    model = make_model(vocab=V).eval()  # the training tests' GRU model: no output_projection(), no sliced_output()
    assert model.output_projection() is None and not model.sliced_output()
    loss_sum, n = teacher_forced_loss(model, batch, label_smoothing=0.1)
    logits = model(batch.src, batch.src_lens, batch.tgt_in).logits  # (B, Tt, V)
    ref, ref_n = masked_cross_entropy(logits, batch.tgt_out, label_smoothing=0.1)
    assert n == ref_n
    torch.testing.assert_close(loss_sum, ref)


def _ddp_chunked_grads(model: torch.nn.Module, batch: Batch, store: str, out: Any) -> None:
    """In a fresh process: the chunked loss's gradients through a one-rank gloo DDP wrapper, put on ``out``."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        _, _, grads = _loss_and_grads(ddp, batch, label_smoothing=0.1, chunk_tokens=7)
    finally:
        dist.destroy_process_group()
    out.put({k: g.numpy() for k, g in grads.items()})


def whole_and_ddp_chunked_grads(model: torch.nn.Module, batch: Batch,
                                tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The gradients of the whole-logits loss, and of the chunked one through a one-rank gloo DDP wrapper (names
    without ``module.``).

    The DDP part runs in a spawned process, bounded: fresh clones twice hung in a futex inside gloo's setup of a
    second process group in the test process (pytest's timeout cannot interrupt that), once for 20 minutes."""
    _, _, ref_grads = _loss_and_grads(model, batch, label_smoothing=0.1, chunk_tokens=None)
    model.zero_grad(set_to_none=True)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    worker = ctx.Process(target=_ddp_chunked_grads, args=(model, batch, str(tmp_path / "store"), out))
    worker.start()
    try:
        arrays = out.get(timeout=240)
    except queue.Empty:
        worker.kill()
        pytest.fail("the one-rank gloo DDP process gave no gradients in 240 s (killed)")
    finally:
        worker.join(timeout=30)
    grads = {k: torch.from_numpy(a) for k, a in arrays.items()}
    assert all(k.startswith("module.") for k in grads)
    return ref_grads, {k.removeprefix("module."): g for k, g in grads.items()}


def test_through_distributed_data_parallel_the_gradients_are_unchanged(tmp_path: Path) -> None:
    """One gloo rank: the loss calls the DDP wrapper (``project=False`` passes through) and reads the model's head."""
    ref_grads, grads = whole_and_ddp_chunked_grads(_transformer(dropout=0.0), _batch(4), tmp_path)
    assert ref_grads.keys() == grads.keys()
    for name, want in ref_grads.items():
        torch.testing.assert_close(grads[name], want, **FP32_TOL)


def test_validation_loss_is_the_same_on_both_paths() -> None:
    model, batch = _transformer().eval(), _batch(5)
    with torch.no_grad():
        chunked = teacher_forced_loss(model, batch, label_smoothing=0.1)
        full = teacher_forced_loss(model, batch, label_smoothing=0.1, chunk_tokens=None)
    assert chunked[1] == full[1]
    torch.testing.assert_close(chunked[0], full[0], **FP32_TOL)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_compiled_row_kernel_equals_pytorchs_operators(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    """The loss's rows go through attention/kernels.c where it is built; PyTorch's operators give the same."""
    if native._compiler() is None:
        pytest.skip("no C compiler here: the kernels cannot be built")
    used = []
    real = native.cross_entropy_rows

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        used.append(out is not None)
        return out

    model, batch = _transformer(), _batch(3)
    monkeypatch.setattr(native, "cross_entropy_rows", spy)
    loss, n, grads = _loss_and_grads(model, batch, bf16=bf16, label_smoothing=0.1, chunk_tokens=7)
    assert used and all(used)
    monkeypatch.setattr(native, "cross_entropy_rows", lambda *args, **kwargs: None)
    ref_loss, ref_n, ref_grads = _loss_and_grads(model, batch, bf16=bf16, label_smoothing=0.1, chunk_tokens=7)
    assert n == ref_n and grads.keys() == ref_grads.keys()
    torch.testing.assert_close(loss, ref_loss, **FP32_TOL)
    for name, want in ref_grads.items():
        # bf16: both round the same float32 gradient of the logits to bf16; a last-bit difference in float32 can
        # round the other way, so a few entries differ by one bf16 step
        tol = {"rtol": 0.0, "atol": 1e-2 * float(want.abs().max())} if bf16 else FP32_TOL
        torch.testing.assert_close(grads[name], want, **tol, msg=lambda m, name=name: f"{name}: {m}")
