"""MultiHeadAttention against nn.MultiheadAttention and SDPA; every path == the explicit one; cache == full pass."""

from dataclasses import FrozenInstanceError, replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnlab.attention import KVCache, MultiHeadAttention, causal_mask, trace
from attnlab.attention.functional import explicit_attention, fused_attention
from attnlab.attention.multihead import DEFAULT_POLICY, PathPolicy

_NEVER = 2**62
# Policies that force each path wherever it is allowed, whatever the sizes (the head-group path: inference without
# weights or cache only; elsewhere that policy takes the fused path).
POLICIES = {
    "explicit": PathPolicy(small_scores=_NEVER, small_scores_one_query=_NEVER, long_scores=_NEVER),
    "fused": PathPolicy(small_scores=0, small_scores_one_query=0, long_scores=_NEVER),
    "head_groups": PathPolicy(small_scores=0, small_scores_one_query=0, long_scores=0),
}


def _spy_paths(monkeypatch) -> list[str]:
    """The paths that ``MultiHeadAttention.forward`` takes from now on, in order (appended to the returned list)."""
    taken = []
    for path in ("explicit", "fused", "head_groups", "traced"):
        real = getattr(MultiHeadAttention, f"_forward_{path}")
        monkeypatch.setattr(MultiHeadAttention, f"_forward_{path}",
                            lambda self, *a, _real=real, _path=path, **k: taken.append(_path) or _real(self, *a, **k))
    return taken


def _torch_pair(d_model=16, heads=4, kdim=None, vdim=None, bias=True, batch_first=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d_model, heads, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first).eval()
    if bias:  # nn initializes biases to zero; randomize so that copying them is tested
        with torch.no_grad():
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
    return ref, MultiHeadAttention.from_torch(ref).eval()


def _call_torch(ref, q, k, v, attn_mask=None, kpm=None, batch_first=True):
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    out, w = ref(q, k, v, attn_mask=attn_mask, key_padding_mask=kpm, need_weights=True, average_attn_weights=False)
    return (out if batch_first else out.transpose(0, 1)), w


def _torch_case(kind, masking, batch_first=True):
    """``(ref, ours, (q, k, v), torch masks, our (key, value), our keyword arguments)`` for one comparison."""
    kdim = vdim = None
    if kind == "cross_kdim":
        kdim, vdim = 6, 10
    ref, ours = _torch_pair(kdim=kdim, vdim=vdim, batch_first=batch_first)
    B, Tq = 3, 5
    Tk = Tq if kind == "self" else 7
    q = torch.randn(B, Tq, 16)
    k = q if kind == "self" else torch.randn(B, Tk, kdim or 16)
    v = q if kind == "self" else (k if vdim is None else torch.randn(B, Tk, vdim))
    lens = torch.tensor([Tk, 2, Tk - 1])
    kpm = None
    attn_mask = None
    our_kwargs = {}
    if masking in ("padding", "both"):
        kpm = torch.arange(Tk)[None, :] >= lens[:, None]  # True = blocked (PyTorch convention)
        our_kwargs["valid_lens"] = lens
    if masking in ("causal", "both"):
        attn_mask = ~causal_mask(Tq, Tk)
        our_kwargs["is_causal"] = True
    ours_kv = (None, None) if kind == "self" else (k, v)
    return ref, ours, (q, k, v), (attn_mask, kpm), ours_kv, our_kwargs


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["self", "cross", "cross_kdim"])
@pytest.mark.parametrize("masking", ["none", "padding", "causal", "both"])
def test_matches_nn_multihead_attention(batch_first, kind, masking):
    ref, ours, (q, k, v), (attn_mask, kpm), (key, value), our_kwargs = _torch_case(kind, masking, batch_first)
    ref_out, ref_w = _call_torch(ref, q, k, v, attn_mask, kpm, batch_first)
    out, w = ours(q, key, value, need_weights=True, **our_kwargs)
    finite = torch.isfinite(ref_out).all(-1)
    torch.testing.assert_close(out[finite], ref_out[finite])
    torch.testing.assert_close(w, ref_w)
    fast, none_w = ours(q, key, value, **our_kwargs)
    assert none_w is None
    torch.testing.assert_close(fast, out)


@pytest.mark.parametrize("path", list(POLICIES))
@pytest.mark.parametrize("kind", ["self", "cross", "cross_kdim"])
@pytest.mark.parametrize("masking", ["none", "padding", "causal", "both"])
def test_every_path_matches_nn_multihead_attention(monkeypatch, path, kind, masking):
    ref, ours, (q, k, v), (attn_mask, kpm), (key, value), our_kwargs = _torch_case(kind, masking)
    ref_out, _ = _call_torch(ref, q, k, v, attn_mask, kpm)
    ours.policy = POLICIES[path]
    taken = _spy_paths(monkeypatch)
    with torch.no_grad():
        out, w = ours(q, key, value, **our_kwargs)
    assert taken == [path] and w is None
    finite = torch.isfinite(ref_out).all(-1)  # PyTorch gives NaN where a query sees no key; we give the bias
    torch.testing.assert_close(out[finite], ref_out[finite])


def test_fully_masked_rows_differ_from_pytorch_by_design():
    ref, ours = _torch_pair()
    q = torch.randn(2, 3, 16)
    kpm = torch.tensor([[True, True, True], [False, False, True]])
    ref_out, _ = _call_torch(ref, q, q, q, kpm=kpm)
    assert torch.isnan(ref_out[0]).all()  # PyTorch: NaN for a batch row with no key
    out, w = ours(q, valid_lens=torch.tensor([0, 2]), need_weights=True)
    assert torch.all(w[0] == 0)
    torch.testing.assert_close(out[0], ours.out_proj.bias.expand(3, 16))  # zero context -> just the bias
    torch.testing.assert_close(out[1], ref_out[1])


def test_no_bias_round_trip_and_to_torch():
    ref, ours = _torch_pair(bias=False)
    assert ours.in_proj_bias is None and ours.out_proj.bias is None
    back = ours.to_torch(batch_first=False)
    x = torch.randn(2, 4, 16)
    torch.testing.assert_close(back(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1))[0].transpose(0, 1),
                               ours(x).output)


def test_from_torch_rejects_unsupported_modules():
    with pytest.raises(TypeError, match="expected torch.nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))


def _mask_kinds(B, H, Tq, Tk):
    g = torch.Generator().manual_seed(3)
    lens = torch.randint(1, Tk + 1, (B,), generator=g)
    lens[0] = 0  # a batch row with nothing to attend to
    per_query = torch.randint(0, Tk + 1, (B, Tq), generator=g)
    rand2 = torch.rand(Tq, Tk, generator=g) > 0.3
    rand3 = torch.rand(B, Tq, Tk, generator=g) > 0.3
    rand4 = torch.rand(B, H, Tq, Tk, generator=g) > 0.3
    rand4[1, 0, 2] = False  # one fully masked (row, head, query)
    return {
        "none": {},
        "lens": {"valid_lens": lens},
        "lens_per_query": {"valid_lens": per_query},
        "mask2d": {"mask": rand2},
        "mask3d": {"mask": rand3},
        "mask4d": {"mask": rand4},
        "key_padding_4d": {"mask": (torch.arange(Tk) < lens[:, None])[:, None, None, :]},
        "causal": {"is_causal": True},
        "causal_lens": {"is_causal": True, "valid_lens": lens},
        "causal_mask3d": {"is_causal": True, "mask": rand3},
    }


def _call_on_path(mha, policy, x, kwargs, *, need_weights, grad, seed=1):
    """Output, weights and gradients (parameters and input; none without ``grad``) of one seeded call."""
    mha.policy = policy
    mha.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(grad)
    torch.manual_seed(seed)
    with torch.set_grad_enabled(grad):
        out, weights = mha(x, need_weights=need_weights, **kwargs)
    grads = {}
    if grad:
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
        grads = {name: p.grad for name, p in mha.named_parameters()} | {"input": x.grad}
    return out, weights, grads


@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("T", [6, 48])
@pytest.mark.parametrize("kind", list(_mask_kinds(3, 4, 6, 6)))
@pytest.mark.parametrize("path", list(POLICIES))
def test_every_path_equals_the_explicit_path_under_every_mask_kind(monkeypatch, path, kind, T, dropout):
    """Each path, forced by its policy without weights, gives the explicit path's output and gradients."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, dropout=dropout).train(dropout > 0)
    x = torch.randn(3, T, 16)
    kwargs = _mask_kinds(3, 4, T, T)[kind]
    grad = path != "head_groups"  # that path is for inference: without autograd
    # With dropout, the same seed gives the same mask: on the CPU, SDPA's dropout (its math backend) and the explicit
    # path's F.dropout both draw one Bernoulli mask over the (B, H, Tq, Tk) weights. (CUDA kernels draw theirs
    # inside the kernel; there only the statistics of test_attention_dropout_is_unbiased_on_every_path hold.) The
    # head-group path draws one mask per group: one group of every head draws the fused path's mask.
    policy = replace(POLICIES[path], group_heads=4) if dropout else POLICIES[path]
    expected, weights, expected_grads = _call_on_path(mha, DEFAULT_POLICY, x, kwargs, need_weights=True, grad=grad)
    taken = _spy_paths(monkeypatch)
    out, none, grads = _call_on_path(mha, policy, x, kwargs, need_weights=False, grad=grad)
    assert taken == [path] and none is None
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    for name, grad_value in grads.items():
        torch.testing.assert_close(grad_value, expected_grads[name], atol=1e-5, rtol=1e-4,
                                   msg=lambda m, n=name: f"{n}.grad: {m}")
    assert torch.isfinite(weights).all()
    if kind in ("lens", "causal_lens"):
        assert (weights[0].sum(-1) == 0).all()  # batch row 0 has no keys: zero weights everywhere


def test_path_policy_rules_weights_first_then_size_and_head_groups_only_for_plain_inference():
    choose = PathPolicy(small_scores=100, small_scores_one_query=10, long_scores=1000, group_heads=2).choose
    assert choose(10, 10) == "explicit"  # up to small_scores entries: the explicit path
    assert choose(10, 11) == "fused"
    assert choose(1, 10) == "explicit"  # one query (cached decoding): its own threshold
    assert choose(1, 11) == "fused"
    assert choose(40, 40, grad=False) == "head_groups"  # from long_scores, inference only
    assert choose(40, 40, grad=True) == "fused"
    assert choose(40, 40, grad=False, cached=True) == "fused"
    assert choose(40, 40, grad=False, need_weights=True) == "explicit"  # weights exist on the explicit path only
    assert choose(40, 40, grad=False, hooked=True) == "explicit"
    with pytest.raises(ValueError, match="small_scores"):
        PathPolicy(small_scores=-1)
    with pytest.raises(ValueError, match="group_heads"):
        PathPolicy(group_heads=0)
    with pytest.raises(FrozenInstanceError):
        DEFAULT_POLICY.small_scores = 0
    with pytest.raises(TypeError, match="PathPolicy"):
        MultiHeadAttention(16, 4, policy={"small_scores": 0})
    mha = MultiHeadAttention(16, 4)
    assert mha.policy is DEFAULT_POLICY and "policy" not in repr(mha)
    assert "small_scores=0" in repr(MultiHeadAttention(16, 4, policy=POLICIES["fused"]))
    assert set(mha.state_dict()) == set(MultiHeadAttention(16, 4, policy=POLICIES["fused"]).state_dict())


@pytest.mark.parametrize("train", [False, True])
def test_forward_takes_the_path_its_policy_chooses(monkeypatch, train):
    taken = _spy_paths(monkeypatch)
    policy = PathPolicy(small_scores=64, small_scores_one_query=4, long_scores=400)
    mha = MultiHeadAttention(16, 4, policy=policy).train(train)

    def path(*args, **kwargs):
        taken.clear()
        with torch.set_grad_enabled(train):
            mha(*args, **kwargs)
        return taken[0] if len(taken) == 1 else taken

    assert path(torch.randn(2, 8, 16)) == "explicit"  # 8 x 8 = 64 entries
    assert path(torch.randn(2, 9, 16)) == "fused"
    assert path(torch.randn(2, 8, 16), torch.randn(2, 9, 16)) == "fused"  # 8 x 9 = 72
    assert path(torch.randn(2, 8, 16), valid_lens=torch.tensor([3, 8]), is_causal=True) == "explicit"
    assert path(torch.randn(2, 1, 16), torch.randn(2, 4, 16)) == "explicit"  # one query: 4 entries
    assert path(torch.randn(2, 1, 16), torch.randn(2, 5, 16)) == "fused"
    assert path(torch.randn(2, 20, 16)) == ("fused" if train else "head_groups")  # 400 entries: inference only
    assert path(torch.randn(2, 20, 16), need_weights=True) == "explicit"
    cache = KVCache()
    assert path(torch.randn(2, 20, 16), cache=cache, is_causal=True) == "fused"
    assert path(torch.randn(2, 1, 16), cache=cache, is_causal=True) == "fused"  # 1 x 21 cached keys
    with trace():
        assert path(torch.randn(2, 20, 16)) == "traced"
    handle = mha.register_weights_hook(lambda module, weights: None)
    assert path(torch.randn(2, 20, 16)) == "explicit"
    handle.remove()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", list(_mask_kinds(3, 4, 6, 6)))
def test_inference_weights_path_in_place_softmax_equals_the_autograd_path(kind, dtype):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).to(dtype).eval()
    x = torch.randn(3, 6, 16, dtype=dtype)
    kwargs = _mask_kinds(3, 4, 6, 6)[kind]
    with torch.no_grad():
        kept = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        x_before = x.clone()
        out, weights = mha(x, need_weights=True, **kwargs)  # softmax written over the scores
        assert torch.equal(x, x_before) and all(torch.equal(kept[k], v) for k, v in kwargs.items()
                                                if isinstance(v, torch.Tensor))
    ref_out, ref_weights = mha(x, need_weights=True, **kwargs)  # parameters need grad: a fresh softmax buffer
    assert ref_weights.requires_grad and not weights.requires_grad
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=0)
    allowed = weights > 0
    if kind in ("lens", "causal_lens"):
        assert not allowed[0].any()  # fully masked batch row: zeros, not a uniform row


@pytest.mark.parametrize("path", ["fused", "head_groups"])
@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_every_path_equals_explicit_in_half_precision_within_documented_bounds(monkeypatch, dtype, atol, path):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).to(dtype).eval()
    x = torch.randn(2, 48, 32).to(dtype)
    lens = torch.tensor([48, 30])
    slow, _ = mha(x, valid_lens=lens, need_weights=True)
    mha.policy = POLICIES[path]
    taken = _spy_paths(monkeypatch)
    with torch.set_grad_enabled(path != "head_groups"):
        fast, _ = mha(x, valid_lens=lens)
    assert taken == [path]
    torch.testing.assert_close(fast.float(), slow.float(), atol=atol, rtol=atol)


def test_functional_paths_match_sdpa_directly():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 5)
    mask = torch.rand(2, 1, 10, 12) > 0.2
    mask[..., 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ctx, w = explicit_attention(q, k, v, mask)
    torch.testing.assert_close(ctx, ref)
    torch.testing.assert_close(fused_attention(q, k, v, mask), ref)
    ref_causal = F.scaled_dot_product_attention(q[:, :, :10], k[:, :, :10], v[:, :, :10], is_causal=True)
    torch.testing.assert_close(fused_attention(q[:, :, :10], k[:, :, :10], v[:, :, :10], is_causal=True),
                               ref_causal)


@pytest.mark.parametrize("path", list(POLICIES))
@pytest.mark.parametrize("T", [7, 45])
def test_kv_cache_step_by_step_equals_full_causal_pass(T, path):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, T, 16)
    reference, _ = mha(x, is_causal=True, need_weights=True)  # the explicit path, without a cache
    mha.policy = POLICIES[path]  # the head-group path has no cache: its policy sends cached calls to the kernel
    with torch.no_grad():
        full, _ = mha(x, is_causal=True)
    torch.testing.assert_close(full, reference, atol=1e-6, rtol=1e-5)
    cache = KVCache()
    steps = [mha(x[:, t:t + 1], is_causal=True, cache=cache).output for t in range(T)]
    assert len(cache) == T
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)
    # Several positions at once after a cached prefix also agree.
    cache = KVCache()
    first = mha(x[:, :3], is_causal=True, cache=cache).output
    rest = mha(x[:, 3:], is_causal=True, cache=cache).output
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("path", ["explicit", "fused"])
def test_static_cross_attention_cache_projects_memory_once_and_reorders(path):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, kdim=8, vdim=8).eval()
    mem = torch.randn(3, 5, 8)
    lens = torch.tensor([5, 3, 1])
    q = torch.randn(3, 4, 16)
    full, w_full = mha(q, mem, valid_lens=lens, need_weights=True)
    mha.policy = POLICIES[path]
    cache = KVCache(static=True)
    outs = [mha(q[:, t:t + 1], mem, valid_lens=lens, cache=cache).output for t in range(4)]
    torch.testing.assert_close(torch.cat(outs, 1), full)
    key_before = cache.key
    mha(q[:, :1], mem * 100, valid_lens=lens, cache=cache)  # ignored once filled
    assert cache.key is key_before
    index = torch.tensor([2, 0])
    cache.reorder(index)
    out, _ = mha(q[index, :1], None if False else mem[index], valid_lens=lens[index], cache=cache)
    torch.testing.assert_close(out, full[index, :1])


def test_gradcheck_float64_both_paths_with_fully_masked_rows():
    torch.manual_seed(0)
    mha = MultiHeadAttention(4, 2).double()
    for T, need, path in ((3, True, "explicit"), (41, False, "fused")):
        mha.policy = POLICIES[path]
        x = torch.randn(2, T, 4, dtype=torch.float64, requires_grad=True)
        lens = torch.tensor([0, T - 1])
        def fn(x, lens=lens, need=need):
            return mha(x, valid_lens=lens, need_weights=need).output

        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)
    mem = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 3, 5) > 0.4
    mask[0, 1] = False
    assert torch.autograd.gradcheck(lambda q, m: mha(q, m, mask=mask, is_causal=True, need_weights=True).output,
                                    (q, mem))


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 8), pad=st.integers(1, 50), seed=st.integers(0, 10_000))
def test_property_padding_does_not_change_real_token_outputs(length, pad, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, length, 8)
    alone, _ = mha(x, is_causal=False)
    padded = torch.cat([x, torch.randn(1, pad, 8) * 1e4], dim=1)
    out, _ = mha(padded, valid_lens=torch.tensor([length]))
    torch.testing.assert_close(out[:, :length], alone, atol=1e-5, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(2, 50), seed=st.integers(0, 10_000))
def test_property_self_attention_is_permutation_equivariant(length, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, length, 8)
    perm = torch.randperm(length)
    out, _ = mha(x)
    out_perm, _ = mha(x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-4)


@settings(max_examples=20, deadline=None)
@given(length=st.integers(1, 6), pad=st.integers(1, 45), poison=st.sampled_from([float("nan"), float("inf"), 1e30]),
       need=st.booleans())
def test_property_poison_in_masked_keys_and_values_never_reaches_output(length, pad, poison, need):
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    q = torch.randn(2, 4, 8)
    mem = torch.randn(2, length + pad, 8)
    mem[:, length:] = poison
    lens = torch.tensor([length, length])
    out, _ = mha(q, mem, valid_lens=lens, need_weights=need)
    assert torch.isfinite(out).all()
    clean, _ = mha(q, mem[:, :length])
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda m: MultiHeadAttention(10, 3), ValueError, ["d_model=10", "num_heads=3", "divisible"]),
        (lambda m: m(torch.randn(2, 3, 16), mask=torch.ones(3, 4, dtype=torch.bool)), ValueError,
         ["mask", "(3, 4)", "(2, 4, 3, 3)"]),
        (lambda m: m(torch.randn(2, 3, 16), mask=torch.ones(3, 3, dtype=torch.int32)), TypeError,
         ["mask", "torch.bool", "int32"]),
        (lambda m: m(torch.randn(2, 3, 16), valid_lens=torch.tensor([1, 4])), ValueError,
         ["valid_lens", "[0, 3]", "max 4"]),
        (lambda m: m(torch.randn(2, 3, 12)), ValueError, ["query", "last dim 16", "(2, 3, 12)"]),
        (lambda m: m(torch.randn(2, 3, 16), value=torch.randn(2, 3, 16)), ValueError, ["value was given without key"]),
        (lambda m: m(torch.randn(2, 3, 16), torch.randn(2, 4, 16), torch.randn(2, 5, 16)), ValueError,
         ["one value per key"]),
        (lambda m: m(torch.randn(3, 16)), ValueError, ["query", "3-dim", "(3, 16)"]),
    ],
)
def test_bad_input_errors_name_argument_shape_and_expectation(call, exc, words):
    mha = MultiHeadAttention(16, 4)
    with pytest.raises(exc) as info:
        call(mha)
    for word in words:
        assert word in str(info.value)


def test_dropout_only_in_training_and_weights_are_pre_dropout():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 5, 16)
    mha.train()
    _, w = mha(x, need_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5))
    a, _ = mha(x)
    b, _ = mha(x)
    assert not torch.allclose(a, b)
    mha.eval()
    torch.testing.assert_close(mha(x).output, mha(x).output)


def test_trace_records_every_step_in_order_and_is_off_outside():
    mha = MultiHeadAttention(16, 4)
    x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    plain = mha(x, mem, is_causal=True).output
    with trace() as t:
        traced = mha(x, mem, is_causal=True).output
    names = [s.name for s in t.steps]
    assert names == ["query_input", "key_input", "value_input", "q_proj", "k_proj", "v_proj", "q_heads", "k_heads",
                     "v_heads", "scores", "scaled_scores", "masked_scores", "weights", "context", "merged", "output"]
    shapes = {s.name: s.shape for s in t.steps}
    assert shapes["scores"] == (2, 4, 5, 7) and shapes["merged"] == (2, 5, 16) and shapes["q_heads"] == (2, 4, 5, 4)
    torch.testing.assert_close(traced, plain)
    mha(x)
    assert len(t.steps) == len(names)  # nothing recorded after the block
    table = t.table()
    assert "masked_scores" in table and "(B, H, Tq, Tk)" in table and "(2, 4, 5, 7)" in table


def test_traced_calls_equal_untraced_ones_with_caches_and_a_weights_hook():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mha.register_weights_hook(lambda module, w: torch.full_like(w, 1 / w.shape[-1]))  # uniform over every key

    def decode():
        self_cache, cross_cache = KVCache(), KVCache(static=True)
        return [(mha(x[:, t:t + 1], is_causal=True, cache=self_cache, need_weights=True),
                 mha(x[:, t:t + 1], mem, cache=cross_cache, need_weights=True)) for t in range(5)]

    plain = decode()
    with trace() as t:
        traced = decode()
    torch.testing.assert_close(traced, plain, rtol=0, atol=0)
    torch.testing.assert_close(plain[4][0].weights, torch.full((2, 4, 1, 5), 0.2))  # the hook's weights, returned
    names = [s.name for s in t.steps]
    assert names.count("k_cached") == 10 and names.count("k_proj") == 5 + 1  # the static cache projects mem once
    assert names.count("key_input") == 5 and names.count("output") == 10


@pytest.mark.parametrize("group_heads", [1, 3])  # 3 of 4 heads: a last, smaller group
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", list(_mask_kinds(2, 4, 6, 6)))
def test_long_sequence_head_group_path_equals_the_standard_path(monkeypatch, kind, bias, group_heads):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, bias=bias).eval()
    if bias:
        nn.init.normal_(mha.out_proj.bias)
    x = torch.randn(2, 6, 16)
    kwargs = _mask_kinds(2, 4, 6, 6)[kind]
    expected, _ = mha(x, need_weights=True, **kwargs)
    with torch.no_grad():
        cross_expected = mha(x[:, :3], x, valid_lens=torch.tensor([6, 2])).output
    mha.policy = replace(POLICIES["head_groups"], group_heads=group_heads)  # every input counts as long
    taken = _spy_paths(monkeypatch)
    with torch.no_grad():
        grouped, weights = mha(x, **kwargs)
        cross, _ = mha(x[:, :3], x, valid_lens=torch.tensor([6, 2]))
    assert taken == ["head_groups", "head_groups"] and weights is None
    torch.testing.assert_close(grouped, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cross, cross_expected, atol=1e-6, rtol=1e-5)


def _padded_inputs(kind, masking, Tq, Tk, poison, dtype=torch.float32):
    """Inputs whose padded positions hold ``poison``, and the keyword arguments that mask them out.

    Self-attention: a padded position is also a query, so it is masked both ways (it sees nothing and nobody sees
    it); a NaN query that may attend keys would rightly give a NaN output. Cross-attention: key padding only.
    """
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([Tk, Tk // 2 + 1, 0])  # full, half, nothing (all queries of row 2 see no key)
    key_ok = torch.arange(Tk) < lens[:, None]  # (B, Tk)
    if kind == "self":
        x = torch.randn(3, Tk, 16, generator=g).masked_fill(~key_ok[..., None], poison).to(dtype)
        per_query = torch.where(key_ok, lens[:, None], 0)  # (B, Tq): padded queries see no key
        masking_kwargs = {"lens": {"valid_lens": per_query}, "mask": {"mask": key_ok[:, :, None] & key_ok[:, None]}}
        return (x,), masking_kwargs[masking]
    kdim, vdim = (6, 10) if kind == "cross_kdim" else (16, 16)
    q, key, value = (torch.randn(3, T, dim, generator=g) for T, dim in ((Tq, 16), (Tk, kdim), (Tk, vdim)))
    key, value = (x.masked_fill(~key_ok[..., None], poison) for x in (key, value))
    q, key, value = q.to(dtype), key.to(dtype), value.to(dtype)
    value = key if kind == "cross" else value  # one tensor: the fused key/value projection
    masking_kwargs = {"lens": {"valid_lens": lens}, "mask": {"mask": key_ok[:, None, :]}}  # mask: (B, 1, Tk)
    return (q, key, value), masking_kwargs[masking]


def _output_and_grads(mha, inputs, kwargs, need_weights):
    """Output and every gradient (parameters by name, then inputs) of a fixed random linear loss."""
    mha.zero_grad(set_to_none=True)
    leaves = {id(x): x.detach().clone().requires_grad_() for x in inputs}  # key is value stays one tensor
    out = mha(*(leaves[id(x)] for x in inputs), need_weights=need_weights, **kwargs).output
    loss_weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out.float() * loss_weights).sum().backward()
    grads = {name: p.grad for name, p in mha.named_parameters()}
    grads.update({f"input{i}": leaf.grad for i, leaf in enumerate(leaves.values())})
    return out, grads


@pytest.mark.parametrize("masking", ["lens", "mask"])
@pytest.mark.parametrize("kind", ["self", "cross", "cross_kdim"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("path", "need_weights"), [("explicit", True), ("explicit", False), ("fused", False)],
                         ids=["explicit", "explicit_no_weights", "fused"])
def test_poisoned_padding_never_reaches_a_parameter_gradient(path, need_weights, dtype, kind, masking):
    Tq, Tk = (5, 6) if need_weights else (20, 24)
    torch.manual_seed(0)
    kdim, vdim = (6, 10) if kind == "cross_kdim" else (None, None)
    mha = MultiHeadAttention(16, 4, kdim=kdim, vdim=vdim, policy=POLICIES[path]).to(dtype)
    nn.init.normal_(mha.in_proj_bias)
    poisoned, kwargs = _padded_inputs(kind, masking, Tq, Tk, float("nan"), dtype)
    clean, _ = _padded_inputs(kind, masking, Tq, Tk, 0.0, dtype)
    out, grads = _output_and_grads(mha, poisoned, kwargs, need_weights)
    ref_out, ref_grads = _output_and_grads(mha, clean, kwargs, need_weights)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), f"{name}.grad has NaN/inf"
        # The padded rows are replaced before anything reads them: the same arithmetic runs, in every dtype.
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n}.grad: {m}")


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_poisoned_padding_never_reaches_head_group_or_cached_outputs(monkeypatch, kind):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    poisoned, kwargs = _padded_inputs(kind, "lens", 7, 7, float("nan"))
    clean, _ = _padded_inputs(kind, "lens", 7, 7, 0.0)
    expected = mha(*clean, **kwargs).output
    mha.policy = POLICIES["head_groups"]  # every input counts as long: one head at a time
    taken = _spy_paths(monkeypatch)
    with torch.no_grad():
        grouped = mha(*poisoned, **kwargs).output
    assert taken == ["head_groups"]
    torch.testing.assert_close(grouped, expected, atol=1e-6, rtol=1e-5)
    if kind == "cross":  # a static cache projects the poisoned memory once; every step stays finite
        cache = KVCache(static=True)
        q, mem, _ = poisoned
        steps = [mha(q[:, t:t + 1], mem, valid_lens=kwargs["valid_lens"], cache=cache).output for t in range(7)]
        torch.testing.assert_close(torch.cat(steps, 1), expected, atol=1e-6, rtol=1e-5)


def _dropout_runs(mha, x, kwargs, runs):
    """Outputs ``(runs, B, T, D)`` of ``runs`` calls without autograd, seeded ``0 .. runs - 1``."""
    outputs = []
    with torch.no_grad():
        for seed in range(runs):
            torch.manual_seed(seed)
            outputs.append(mha(x, **kwargs).output)
    return torch.stack(outputs)


@pytest.mark.parametrize("kind", ["none", "lens", "mask4d", "causal"])  # kernel causality, padding, per head
def test_attention_dropout_is_unbiased_on_every_path(monkeypatch, kind):
    """Train mode without autograd: explicit, fused and long-sequence head-group paths drop weights alike."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, dropout=0.3)
    x = torch.randn(2, 24, 16)
    kwargs = _mask_kinds(2, 4, 24, 24)[kind]
    no_dropout = mha.eval()(x, **kwargs).output
    mha.train()
    taken = _spy_paths(monkeypatch)
    paths = {}
    for path, policy in POLICIES.items():  # the head-group path one head at a time
        mha.policy = policy
        paths[path] = _dropout_runs(mha, x, kwargs, 100)
        assert set(taken) == {path}
        taken.clear()
    for name, runs in paths.items():
        assert (runs[0] - no_dropout).abs().max() > 0.1, f"{name}: no dropout in train mode"
        # Dropout is unbiased (kept weights are scaled by 1 / (1 - p)): the mean over seeds is the no-dropout
        # output within 5 standard errors per element (exactly, where nothing varies: a row with no keys).
        error = (runs.mean(0) - no_dropout).abs()
        assert (error <= 5 * runs.std(0) / len(runs) ** 0.5 + 1e-5).all(), f"{name}: biased"
        # The same spread: per-element variances, averaged, within 10% of the explicit path's.
        torch.testing.assert_close(runs.var(0).mean(), paths["explicit"].var(0).mean(), rtol=0.1, atol=0)
    # One group of every head is forward's own SDPA call: the same seed draws the same mask. Smaller groups each
    # draw their own (one call per group), so the per-seed outputs differ while their distribution is the same.
    mha.policy = replace(POLICIES["head_groups"], group_heads=4)
    torch.testing.assert_close(_dropout_runs(mha, x, kwargs, 3), paths["fused"][:3], atol=1e-6, rtol=1e-5)


def test_training_in_bfloat16_on_the_cpu_runs_the_fused_kernel_in_float32():
    """Under autograd, bf16 inputs are attended in float32 (PyTorch's bf16 CPU backward is slow); the result and
    the gradients keep bf16 and equal the float32 computation rounded once."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 6, 8, generator=g).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    for m, causal in ((None, True), (mask, False)):
        out = fused_attention(q, k, v, m, is_causal=causal, training=True)
        q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
        ref = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=m, is_causal=causal)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, ref.bfloat16(), rtol=0, atol=0)
        grad = torch.randn(out.shape, generator=g).bfloat16()
        got = torch.autograd.grad(out, (q, k, v), grad)
        want = torch.autograd.grad(ref, (q32, k32, v32), grad.float())
        for a, b in zip(got, want, strict=True):
            assert a.dtype == torch.bfloat16
            torch.testing.assert_close(a, b.bfloat16(), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast does not cast the float32 copies back
        out = fused_attention(q, k, v, None, training=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q.float(), k.float(), v.float()).bfloat16(),
                               rtol=0, atol=0)


def test_training_in_bfloat16_saves_the_bfloat16_inputs_not_their_float32_copies(monkeypatch) -> None:
    """The float32 copies of q, k and v that the kernel saves are stored as the bf16 originals (half the bytes
    until backward) and widened again when backward unpacks them; the gradients stay exact (test above)."""
    from attnlab.attention import functional

    stored = []

    class Spy(functional._UpcastSaved):
        def __init__(self, narrow, wide):
            super().__init__(narrow, wide)
            pack = self.pack_hook
            self.pack_hook = lambda t: stored.append(pack(t)) or stored[-1]

    monkeypatch.setattr(functional, "_UpcastSaved", Spy)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    out = fused_attention(q, k, v, mask, training=True)
    narrow = [p[0] for p in stored if isinstance(p, tuple)]
    assert len(narrow) == 3 and all(t.dtype == torch.bfloat16 and t.shape == q.shape for t in narrow)
    assert any(t is q for t in narrow)
    wide = [p for p in stored if isinstance(p, torch.Tensor) and p.dtype == torch.float32 and p.shape == q.shape]
    assert len(wide) == 1  # the output, which backward needs in float32
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (q, k, v))
