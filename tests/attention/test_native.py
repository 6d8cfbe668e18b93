"""The compiled decoding kernels (attnlab.attention.native) against PyTorch's own operations, and their build."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import native
from attnlab.core.model_config import TransformerConfig
from attnlab.decode import beam_search, greedy_decode
from attnlab.decode.search import step_log_probs
from attnlab.models import build_model

HAS_CC = native._compiler() is not None
needs_kernels = pytest.mark.skipif(not HAS_CC, reason="no C compiler here: the kernels cannot be built")


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty kernel cache and a forgotten library; the process's own state comes back afterwards."""
    saved = dict(native._state)
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    native._reset()
    yield tmp_path
    native._reset()
    native._state.update(saved)


def test_kernels_build_where_a_compiler_exists() -> None:
    """A machine with a C compiler gets the kernels (else every test below would pass on PyTorch's path)."""
    if shutil.which("cc") or shutil.which("gcc"):
        assert native.available(), native.status()
        assert native.status().startswith("compiled (")


def sdpa_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor | None, beams: int) -> torch.Tensor:
    """The reference: PyTorch's attention with a key-padding mask, ``(N, H, Dh)`` queries -> ``(N, 1, H * Dh)``."""
    N, H, Dh = q.shape
    B, T = k.shape[0], k.shape[2]
    q4 = q.reshape(B, beams, H, Dh).transpose(1, 2)  # (B, H, beams, Dh)
    mask = None if lens is None else (torch.arange(T) < lens[:, None])[:, None, None, :]  # (B, 1, 1, T)
    out = F.scaled_dot_product_attention(q4.double(), k.double(), v.double(), attn_mask=mask)  # (B, H, beams, Dh)
    return out.transpose(1, 2).reshape(N, 1, H * Dh).float()


@needs_kernels
@pytest.mark.parametrize("Dh", [32, 64, 12])
def test_self_attention_over_cache_buffers(Dh: int) -> None:
    """Strided queries (a slice of the fused projection) and keys/values that are views of larger buffers."""
    g = torch.Generator().manual_seed(Dh)
    B, H, T, cap = 5, 3, 9, 20
    kb, vb = torch.randn(B, H, cap, Dh, generator=g), torch.randn(B, H, cap, Dh, generator=g)
    k, v = kb[:, :, :T], vb[:, :, :T]
    q = torch.randn(B, 1, 3 * H * Dh, generator=g)[..., : H * Dh].view(B, H, Dh)
    got = native.one_query_attention(q, k, v)
    assert got is not None and got.shape == (B, 1, H * Dh)
    torch.testing.assert_close(got, sdpa_rows(q, k, v, None, 1), atol=2e-6, rtol=1e-5)


@needs_kernels
@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 4), beams=st.integers(1, 3), H=st.integers(1, 4), Dh=st.sampled_from([1, 8, 32, 64]),
       T=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_beams_over_padded_memory_equal_sdpa(B: int, beams: int, H: int, Dh: int, T: int, seed: int) -> None:
    """Every row's beams attend to its first ``lens[b]`` keys; the keys past it may hold anything."""
    g = torch.Generator().manual_seed(seed)
    k, v = torch.randn(B, H, T, Dh, generator=g) * 3, torch.randn(B, H, T, Dh, generator=g)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    q = torch.randn(B * beams, H, Dh, generator=g)
    got = native.one_query_attention(q, k, v, lens, beams)
    assert got is not None
    torch.testing.assert_close(got, sdpa_rows(q, k, v, lens, beams), atol=3e-6, rtol=1e-5)


@needs_kernels
def test_attention_declines_what_it_does_not_do() -> None:
    q, k = torch.randn(2, 2, 4), torch.randn(2, 2, 3, 4)
    assert native.one_query_attention(q.double(), k.double(), k.double()) is None  # float64
    assert native.one_query_attention(q, k, k[..., :3]) is None  # values of another size
    assert native.one_query_attention(q, k.transpose(-1, -2).contiguous().transpose(-1, -2), k) is None  # strided Dh
    assert native.one_query_attention(q, k, k, torch.tensor([1, 2, 3])) is None  # lengths of another batch
    assert native.one_query_attention(q, k, k, beams=2) is None  # 2 rows cannot be 2 sources x 2 beams
    with torch.enable_grad():
        assert native.one_query_attention(q.requires_grad_(), k, k) is None  # autograd keeps PyTorch's path


def reference_pick(logits: torch.Tensor, pad_id: int, bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    return step_log_probs(logits.clone(), bos_id=bos_id, pad_id=pad_id).max(dim=-1)


@needs_kernels
@pytest.mark.parametrize("V, pad_id, bos_id", [(7795, 0, 1), (300, 1, 0), (513, 255, 256), (5, 3, 4), (2049, 2048, 7)])
def test_greedy_pick_equals_log_softmax_then_max(V: int, pad_id: int, bos_id: int) -> None:
    g = torch.Generator().manual_seed(V)
    logits = torch.randn(9, V, generator=g) * 4
    logits[0, pad_id] = logits[1, bos_id] = 100.0  # the largest logit is never chosen when it is <pad> or <bos>
    logits[2, 3] = logits[2, V - 1] = 50.0  # a tie: the first id
    logits[3, :] = 0.0  # all equal: the first allowed id
    logits[4, : V // 2] = float("-inf")  # impossible ids take part as zeros
    got = native.greedy_pick(logits, pad_id=pad_id, bos_id=bos_id)
    assert got is not None
    want_logp, want_id = reference_pick(logits, pad_id, bos_id)
    assert torch.equal(got[1], want_id)
    torch.testing.assert_close(got[0], want_logp, atol=2e-6, rtol=1e-6)
    assert not bool(((got[1] == pad_id) | (got[1] == bos_id)).any())


@needs_kernels
def test_greedy_pick_leaves_nan_and_other_layouts_to_pytorch() -> None:
    logits = torch.randn(3, 50)
    logits[1, 7] = float("nan")
    assert native.greedy_pick(logits, pad_id=0, bos_id=1) is None
    logits[1, 7] = float("inf")
    assert native.greedy_pick(logits, pad_id=0, bos_id=1) is None
    assert native.greedy_pick(torch.randn(50, 3).t(), pad_id=0, bos_id=1) is None  # columns not contiguous
    assert native.greedy_pick(torch.randn(3, 50).bfloat16(), pad_id=0, bos_id=1) is None
    assert native.greedy_pick(torch.randn(3, 50), pad_id=0, bos_id=50) is None  # an id outside the vocabulary
    rows = torch.randn(3, 80)[:, :50]  # rows of a wider matrix: the row stride is honoured
    got = native.greedy_pick(rows, pad_id=0, bos_id=1)
    assert got is not None and torch.equal(got[1], reference_pick(rows, 0, 1)[1])


def reference_topk(logits: torch.Tensor, scores: torch.Tensor, n_cand: int, pad_id: int, bos_id: int):
    Ba, K = scores.shape
    logp = step_log_probs(logits.clone(), bos_id=bos_id, pad_id=pad_id).view(Ba, K, -1) + scores.unsqueeze(2)
    return logp.view(Ba, -1).topk(n_cand, dim=1)


@needs_kernels
@pytest.mark.parametrize("Ba, K, V, n_cand, pad_id, bos_id",
                         [(7, 5, 7795, 10, 0, 1), (3, 4, 300, 8, 1, 0), (2, 3, 513, 6, 256, 255), (4, 2, 3, 6, 0, 2),
                          (1, 1, 1000, 2, 5, 999)])
def test_beam_topk_equals_log_softmax_plus_scores_then_topk(Ba: int, K: int, V: int, n_cand: int, pad_id: int,
                                                            bos_id: int) -> None:
    g = torch.Generator().manual_seed(V + K)
    logits = torch.randn(Ba * K, V, generator=g) * 4
    logits[0, pad_id] = 100.0  # never a candidate (-inf, ranked last)
    scores = -torch.rand(Ba, K, generator=g) * 10
    scores[0, 1:] = float("-inf")  # the first step: only beam 0 is real
    got = native.beam_topk(logits, scores, n_cand, pad_id=pad_id, bos_id=bos_id)
    assert got is not None
    want = reference_topk(logits, scores, n_cand, pad_id, bos_id)
    finite = torch.isfinite(want.values)
    assert torch.equal(torch.isfinite(got[0]), finite)
    assert torch.equal(got[1][finite], want.indices[finite])  # -inf candidates: any order (topk's is unspecified)
    torch.testing.assert_close(got[0][finite], want.values[finite], atol=3e-6, rtol=1e-6)
    assert bool((got[0][:, :-1] >= got[0][:, 1:]).all())  # best first


@needs_kernels
@settings(max_examples=80, deadline=None)
@given(Ba=st.integers(1, 3), K=st.integers(1, 5), V=st.integers(3, 700), seed=st.integers(0, 2**16),
       integer_logits=st.booleans())
def test_beam_topk_equals_a_sorted_list(Ba: int, K: int, V: int, seed: int, integer_logits: bool) -> None:
    """Against a plain oracle: every candidate's score, sorted by (score descending, flat id), the first 2K kept.
    Integer logits make ties (the lower flat id first); some beams start at -inf, as at the first step."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(Ba * K, V, generator=g) * 5
    if integer_logits:
        logits = logits.round()
    scores = -torch.randint(0, 4, (Ba, K), generator=g).float()
    scores[torch.rand(Ba, K, generator=g) < 0.3] = float("-inf")
    scores[:, 0] = 0.0
    n_cand = min(2 * K, K * V)
    got = native.beam_topk(logits, scores, n_cand, pad_id=0, bos_id=1)
    assert got is not None
    values = (step_log_probs(logits.clone(), bos_id=1).view(Ba, K, V) + scores.unsqueeze(2)).view(Ba, K * V)
    for i in range(Ba):
        row = values[i].tolist()
        want = sorted(range(K * V), key=lambda f: (-row[f], f))[:n_cand]
        finite = [f for f in want if row[f] > float("-inf")]
        assert got[1][i, : len(finite)].tolist() == finite
        torch.testing.assert_close(got[0][i, : len(finite)], values[i, finite], atol=3e-6, rtol=1e-6)


@needs_kernels
def test_beam_topk_ties_and_declines() -> None:
    logits = torch.zeros(2, 6)  # all equal: the lower flat ids first, <pad> and <bos> last
    got = native.beam_topk(logits, torch.zeros(1, 2), 12, pad_id=0, bos_id=1)
    assert got is not None and got[1].tolist() == [[2, 3, 4, 5, 8, 9, 10, 11, 0, 1, 6, 7]]
    assert native.beam_topk(logits, torch.zeros(1, 2), 13, pad_id=0, bos_id=1) is None  # more than K * V
    assert native.beam_topk(logits, torch.zeros(2, 2), 2, pad_id=0, bos_id=1) is None  # 2 rows, not 2 x 2
    assert native.beam_topk(logits, torch.zeros(1, 2).double(), 2, pad_id=0, bos_id=1) is None
    logits[1, 3] = float("nan")
    assert native.beam_topk(logits, torch.zeros(1, 2), 2, pad_id=0, bos_id=1) is None


def decode_both(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Greedy and beam search with the kernels and without, on a random pre-LN Transformer."""
    torch.manual_seed(3)
    model = build_model(TransformerConfig(d_model=64, num_heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=2),
                        41, 41)
    src = torch.randint(3, 41, (6, 9))
    lens = torch.tensor([9, 4, 7, 1, 9, 5])
    src[torch.arange(9) >= lens[:, None]] = 0
    out = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("ATTNLAB_NATIVE", mode)
        native._reset()
        greedy = greedy_decode(model, src, lens, max_len=12)
        beams = beam_search(model, src, lens, beam_size=3, max_len=12)
        out[mode] = [(h.tokens, h.score) for h in greedy] + [(h.tokens, h.score) for nb in beams for h in nb]
    return out


@needs_kernels
def test_decoding_with_kernels_equals_decoding_without(monkeypatch: pytest.MonkeyPatch, fresh_state: Path) -> None:
    calls = {"attention": 0, "pick": 0, "topk": 0, "decoder_layer_step": 0, "encoder_layer": 0, "greedy_record": 0}
    attend, pick, topk = native.one_query_attention, native.greedy_pick, native.beam_topk
    layers = {name: getattr(native, name) for name in ("decoder_layer_step", "encoder_layer", "greedy_record")}

    def counted_layer(name: str):
        def counted(*args, **kwargs):
            out = layers[name](*args, **kwargs)
            calls[name] += out is not None
            return out
        return counted

    def counted_attention(*args, **kwargs):
        out = attend(*args, **kwargs)
        calls["attention"] += out is not None
        return out

    def counted_pick(*args, **kwargs):
        out = pick(*args, **kwargs)
        calls["pick"] += out is not None
        return out

    def counted_topk(*args, **kwargs):
        out = topk(*args, **kwargs)
        calls["topk"] += out is not None
        return out

    monkeypatch.setattr(native, "one_query_attention", counted_attention)
    monkeypatch.setattr(native, "beam_topk", counted_topk)
    monkeypatch.setattr(native, "greedy_pick", counted_pick)
    for name in layers:
        monkeypatch.setattr(native, name, counted_layer(name))
    out = decode_both(monkeypatch)
    if native._blas_sgemm() is None:  # the layer kernels need PyTorch's BLAS (test_native_layers.py)
        del calls["decoder_layer_step"], calls["encoder_layer"]
    assert min(calls.values()) > 0  # the kernels did run on the "1" side
    assert [t for t, _ in out["1"]] == [t for t, _ in out["0"]]
    assert [s for _, s in out["1"]] == pytest.approx([s for _, s in out["0"]], abs=1e-4)


def test_without_a_compiler_decoding_keeps_pytorch(monkeypatch: pytest.MonkeyPatch, fresh_state: Path) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not native.available()
    assert native.status() == "unavailable: no C compiler found (set CC)"
    assert native.one_query_attention(torch.randn(2, 1, 4), torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)) is None
    assert native.greedy_pick(torch.randn(2, 9), pad_id=0, bos_id=1) is None
    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=16, num_heads=2, ffn_dim=16, encoder_layers=1, decoder_layers=1),
                        11, 11)
    hyps = greedy_decode(model, torch.randint(3, 11, (2, 4)), torch.tensor([4, 4]), max_len=5)
    assert len(hyps) == 2


@pytest.mark.parametrize("setting", ["0", "false", "Off", "no"])
def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch, fresh_state: Path, setting: str) -> None:
    monkeypatch.setenv("ATTNLAB_NATIVE", setting)
    native._reset()
    assert not native.available() and native.status() == f"off (ATTNLAB_NATIVE={setting})"
    assert not list(fresh_state.rglob("*.so"))  # nothing was built


@needs_kernels
def test_a_damaged_cached_library_is_built_again(fresh_state: Path) -> None:
    built = native._library_path(native._compiler(), native._SOURCE_TEXT)
    built.parent.mkdir(parents=True)
    built.write_bytes(b"not a shared object")  # e.g. a copy cut short
    assert native.available(), native.status()
    assert built.read_bytes()[:4] == b"\x7fELF"


def test_a_compiler_that_fails_is_reported_in_one_line(monkeypatch: pytest.MonkeyPatch, fresh_state: Path) -> None:
    fake = fresh_state / "cc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo fake 1.0; exit 0; }\n"
                    "echo 'error: no space' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    assert not native.available()
    assert native.status() == "unavailable: cc failed: error: no space"


@needs_kernels
def test_an_unusable_cache_directory_keeps_pytorch(monkeypatch: pytest.MonkeyPatch, fresh_state: Path) -> None:
    blocker = fresh_state / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(blocker))  # a file where the directory should be
    assert not native.available()
    assert native.status().startswith("unavailable: ") and "\n" not in native.status()


def test_a_huge_cache_path_is_not_echoed_whole(monkeypatch: pytest.MonkeyPatch, fresh_state: Path) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", "/proc/" + "x" * 3000)  # cannot be created
    assert not native.available()
    assert len(native.status()) <= len("unavailable: ") + 200


@needs_kernels
def test_greedy_record_equals_indexed_writes() -> None:
    g = torch.Generator().manual_seed(5)
    N, max_len, step, eos = 9, 6, 3, 2
    rows = torch.tensor([0, 2, 3, 5, 8])
    best = torch.tensor([2, 7, 2, 4, 11])
    best_logp = torch.randn(5, generator=g)
    state = [torch.randint(0, 50, (N, max_len), generator=g), torch.randn(N, generator=g),
             torch.randint(0, 4, (N,), generator=g), torch.rand(N, generator=g) < 0.3]
    want = [t.clone() for t in state]
    want[0][rows, step] = best
    want[1][rows] += best_logp
    want[2][rows] = step + 1
    want[3][rows[best == eos]] = True
    keep = native.greedy_record(best, best_logp, rows, step, eos, out_tokens=state[0], scores=state[1],
                                num_steps=state[2], ended=state[3])
    assert keep.tolist() == [1, 3, 4]
    for got, expected in zip(state, want, strict=True):
        assert torch.equal(got, expected)
    before = [t.clone() for t in state]
    for bad_rows, bad_step in ((torch.tensor([0, 2, 3, 5, 9]), step), (torch.tensor([-1, 2, 3, 5, 8]), step),
                               (rows, max_len)):
        assert native.greedy_record(best, best_logp, bad_rows, bad_step, eos, out_tokens=state[0], scores=state[1],
                                    num_steps=state[2], ended=state[3]) is None
    assert native.greedy_record(best, best_logp.double(), rows, step, eos, out_tokens=state[0], scores=state[1],
                                num_steps=state[2], ended=state[3]) is None
    for got, expected in zip(state, before, strict=True):
        assert torch.equal(got, expected)  # nothing written by the declined calls


@needs_kernels
def test_the_library_is_built_from_the_source_read_with_the_module(monkeypatch: pytest.MonkeyPatch,
                                                                  fresh_state: Path) -> None:
    """A kernels.c changed on disk after import (an upgrade while a long run goes on) is not what the wrappers of this
    process get: a training run crashed when its first validation built the edited file against the old wrappers."""
    edited = fresh_state / "kernels.c"
    edited.write_text("int attnlab_greedy_pick(void) { return 0; }\n")  # another signature, no other kernel
    monkeypatch.setattr(native, "SOURCE", edited)
    assert native.available(), native.status()
    assert native.greedy_pick(torch.tensor([[0.0, 1.0, 2.0, 5.0]]), pad_id=0, bos_id=1)[1].tolist() == [3]


def test_a_missing_source_is_reported(monkeypatch: pytest.MonkeyPatch, fresh_state: Path) -> None:
    monkeypatch.setattr(native, "_SOURCE_TEXT", None)
    if native._compiler() is not None:
        assert not native.available()
        assert native.status() == "unavailable: kernels.c is missing from the installation"


def _row_losses(z: torch.Tensor, t: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference in float64: per-row label-smoothed cross-entropy and its gradient, from PyTorch's autograd."""
    z = z.double().requires_grad_()
    losses = F.cross_entropy(z, t, label_smoothing=eps, reduction="none")
    losses.sum().backward()
    return losses.detach(), z.grad


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("skip", [0, 3])
def test_cross_entropy_rows_equal_pytorchs_loss_and_gradient(dtype: torch.dtype, eps: float, skip: int) -> None:
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(9, 1001, generator=g) * 4).to(dtype)  # V not a multiple of any vector width
    t = torch.randint(0, 1001, (9,), generator=g)
    t[0], t[1] = 0, 1000
    ref_loss, ref_grad = _row_losses(z, t, eps)
    ref_grad[:skip] = 0.0
    loss, grad = native.cross_entropy_rows(z, t, label_smoothing=eps, skip=skip, grad_dtype=dtype)
    assert loss == pytest.approx(float(ref_loss[skip:].sum()), rel=1e-6)
    assert grad.dtype == dtype and grad.shape == z.shape
    # float32: float32 rounding; bfloat16: the float64 gradient rounded once to bfloat16, give or take one step
    tol = {"atol": 1e-7, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-7, "rtol": 2 ** -7}
    torch.testing.assert_close(grad.double(), ref_grad.to(dtype).double(), **tol)
    no_grad = native.cross_entropy_rows(z, t, label_smoothing=eps, skip=skip)
    assert no_grad[1] is None and no_grad[0] == loss


@needs_kernels
def test_cross_entropy_rows_read_strided_rows_and_write_a_bfloat16_gradient_from_float32() -> None:
    g = torch.Generator().manual_seed(6)
    wide = torch.randn(4, 300, generator=g)
    z, t = wide[:, :257], torch.tensor([3, 256, 0, 100])  # rows 300 apart
    loss, grad = native.cross_entropy_rows(z, t, label_smoothing=0.2, grad_dtype=torch.bfloat16)
    ref_loss, ref_grad = _row_losses(z, t, 0.2)
    assert loss == pytest.approx(float(ref_loss.sum()), rel=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad.to(torch.bfloat16).double(), atol=1e-7, rtol=2 ** -7)


@needs_kernels
def test_cross_entropy_rows_leave_what_they_do_not_do_to_pytorch() -> None:
    z, t = torch.randn(3, 10), torch.tensor([1, 2, 3])
    for bad in (float("nan"), float("inf"), -float("inf")):
        worse = z.clone()
        worse[1, 4] = bad
        assert native.cross_entropy_rows(worse, t, label_smoothing=0.1, grad_dtype=torch.float32) is None
    assert native.cross_entropy_rows(z, torch.tensor([1, 10, 3]), label_smoothing=0.0) is None  # out of range
    assert native.cross_entropy_rows(z, torch.tensor([1, -1, 3]), label_smoothing=0.0) is None
    assert native.cross_entropy_rows(z.double(), t, label_smoothing=0.0) is None
    assert native.cross_entropy_rows(z.half(), t, label_smoothing=0.0) is None
    assert native.cross_entropy_rows(z.t().contiguous().t(), t, label_smoothing=0.0) is None  # columns contiguous
    assert native.cross_entropy_rows(z, t, label_smoothing=0.0, grad_dtype=torch.float64) is None
    assert native.cross_entropy_rows(z, t[:2], label_smoothing=0.0) is None
    assert native.cross_entropy_rows(z, t, label_smoothing=0.0, skip=4) is None
