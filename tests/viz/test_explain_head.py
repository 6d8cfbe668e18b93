"""explain_head: every step's numbers are the module's own (against its forward and a loop oracle); views are safe."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from attnlab.attention import MultiHeadAttention
from attnlab.core.errors import ConfigError
from attnlab.viz.head_steps import (
    explain_attention,
    explain_head,
    explain_head_html,
    format_table,
    write_explain_head_html,
)

B, TQ, TK, D, H = 2, 5, 6, 8, 2
DH = D // H
HOSTILE = "</script><img src=x onerror=1>"


def _module(seed: int = 0, **kwargs: object) -> MultiHeadAttention:
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D, H, **kwargs).eval()
    with torch.no_grad():  # nonzero biases, so that a bias mix-up cannot hide behind zeros
        for p in (mha.in_proj_bias, mha.out_proj.bias):
            if p is not None:
                p.normal_()
    return mha


def _oracle(mha: MultiHeadAttention, xq: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor, head: int, i: int,
            allowed: list[bool]) -> tuple[list[float], list[float]]:
    """Weights and head output of one head and one query with Python loops in float64 (Vaswani et al., eq. 1)."""
    rows = range(head * DH, (head + 1) * DH)
    if mha.same_dims:
        w = [mha.in_proj_weight[n * D:(n + 1) * D].detach().double() for n in range(3)]
    else:
        w = [p.detach().double() for p in (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)]
    bias = [None if mha.in_proj_bias is None else mha.in_proj_bias[n * D:(n + 1) * D].detach().double()
            for n in range(3)]

    def project(n: int, x: torch.Tensor) -> list[float]:
        x = x.double()
        return [sum(float(w[n][r, c]) * float(x[c]) for c in range(x.shape[0]))
                + (0.0 if bias[n] is None else float(bias[n][r])) for r in rows]

    q = project(0, xq[i])
    scores = [sum(a * b for a, b in zip(q, project(1, xk[j]), strict=True)) / math.sqrt(DH)
              for j in range(xk.shape[0])]
    top = max((s for s, ok in zip(scores, allowed, strict=True) if ok), default=0.0)
    exps = [math.exp(s - top) if ok else 0.0 for s, ok in zip(scores, allowed, strict=True)]
    total = sum(exps)
    weights = [e / total if total else 0.0 for e in exps]
    out = [0.0] * DH
    for j, wj in enumerate(weights):
        if wj:
            for r, vr in enumerate(project(2, xv[j])):
                out[r] += wj * vr
    return weights, out


def _random_mask(*shape: int, seed: int, keep: float = 0.7) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < keep


CASES = {
    "self": ({}, False, {}),
    "self, padding": ({}, False, {"valid_lens": torch.tensor([TQ, 3])}),
    "self, causal": ({}, False, {"is_causal": True}),
    "self, padding + causal, no bias": ({"bias": False}, False,
                                        {"valid_lens": torch.tensor([2, 4]), "is_causal": True}),
    "cross, kdim/vdim, padding": ({"kdim": 5, "vdim": 3}, True, {"valid_lens": torch.tensor([TK, 4])}),
    "cross, (B, Tq, Tk) mask": ({}, True, {"mask": _random_mask(B, TQ, TK, seed=1)}),
    "cross, per-head mask": ({}, True, {"mask": _random_mask(B, H, TQ, TK, seed=2, keep=0.6)}),
}


def _allowed(kw: dict, b: int, h: int, i: int, tk: int, tq: int) -> list[bool]:
    """What the module's conventions allow, written out independently of the library."""
    out = []
    for j in range(tk):
        ok = True
        if "valid_lens" in kw:
            ok &= j < int(kw["valid_lens"][b])
        if kw.get("is_causal"):
            ok &= j <= i + tk - tq
        if "mask" in kw:
            m = kw["mask"]
            ok &= bool(m[b, i, j] if m.dim() == 3 else m[b, h, i, j])
        out.append(ok)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_number_is_the_modules_own(case: str) -> None:
    make, cross, kw = CASES[case]
    mha = _module(**make)
    gen = torch.Generator().manual_seed(3)
    xq = torch.randn(B, TQ, D, generator=gen)
    xk = torch.randn(B, TK, mha.kdim, generator=gen) if cross else None
    xv = torch.randn(B, TK, mha.vdim, generator=gen) if cross else None
    with torch.no_grad():
        out, weights = mha(xq, xk, xv, need_weights=True, **kw)  # (B, Tq, D), (B, H, Tq, Tk)
    tk = TK if cross else TQ
    for b in range(B):
        steps = explain_attention(mha, xq, xk, xv, batch_index=b, **kw)
        assert steps.shapes["scores"] == (B, H, TQ, tk) and steps.shapes["q_heads"] == (B, H, TQ, DH)
        for h in range(H):
            for i in range(TQ):
                e = steps.explain(h, i)
                assert_close(e.weights, weights[b, h, i])
                assert_close(e.output, out[b, i])
                allowed = _allowed(kw, b, h, i, tk, TQ)
                assert e.allowed.tolist() == allowed
                oracle_w, oracle_out = _oracle(mha, xq[b], (xq if xk is None else xk)[b],
                                               (xq if xv is None else xv)[b], h, i, allowed)
                assert_close(e.weights.double(), torch.tensor(oracle_w, dtype=torch.float64), rtol=1e-5, atol=1e-6)
                assert_close(e.head_output.double(), torch.tensor(oracle_out, dtype=torch.float64), rtol=1e-5,
                             atol=1e-5)
                # The output row is the heads' contributions plus the bias, and this head's is W_o[:, slice] head.
                bias = 0.0 if e.out_bias is None else e.out_bias
                assert_close(e.contributions.sum(0) + bias, out[b, i])
                assert_close(e.contribution, e.w_o @ e.head_output)
                assert_close(e.scaled_scores, e.scores / math.sqrt(DH))
                assert e.max_abs_diff < 1e-5


def test_masked_keys_get_exactly_zero_weight_and_a_blocked_query_gives_the_bias() -> None:
    mha = _module()
    x = torch.randn(B, TQ, D, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(TQ, TQ, dtype=torch.bool)
    mask[2] = False  # query 2 may attend to nothing
    steps = explain_attention(mha, x, valid_lens=torch.tensor([TQ, 3]), batch_index=1, is_causal=True, mask=mask)
    assert steps.mask_kinds == ("key padding (valid_lens)", "explicit mask", "causal")
    blocked = ~steps.allowed
    assert blocked.any()
    assert torch.equal(steps.weights[blocked], torch.zeros(int(blocked.sum())))  # exactly 0, not just small
    assert (steps.masked_scores[blocked] == torch.finfo(torch.float32).min).all()
    assert not steps.allowed[:, 2].any()
    assert torch.equal(steps.context[:, 2], torch.zeros(H, DH))
    assert_close(steps.output[2], mha.out_proj.bias.detach())
    assert_close(steps.module_output[2], mha.out_proj.bias.detach())


def test_nan_in_padding_stays_out_as_in_the_module() -> None:
    mha = _module()
    x = torch.randn(1, TQ, D, generator=torch.Generator().manual_seed(5))
    x[0, 3:] = float("nan")  # padding rows
    kw = {"valid_lens": torch.tensor([3])}
    steps = explain_attention(mha, x, **kw)
    with torch.no_grad():
        out, _ = mha(x, **kw)
    assert torch.isfinite(steps.output[:3]).all()
    assert_close(steps.output[:3], out[0, :3])


def test_torch_module_sequence_first_with_kdim_vdim_matches_torch() -> None:
    torch.manual_seed(6)
    ref = nn.MultiheadAttention(D, H, kdim=5, vdim=3, batch_first=False).eval()
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    gen = torch.Generator().manual_seed(7)
    q, k, v = torch.randn(TQ, B, D, generator=gen), torch.randn(TK, B, 5, generator=gen), torch.randn(TK, B, 3,
                                                                                                  generator=gen)
    with torch.no_grad():
        out, weights = ref(q, k, v, need_weights=True, average_attn_weights=False)  # (Tq, B, D), (B, H, Tq, Tk)
    for head, i in ((0, 0), (1, TQ - 1)):
        e = explain_head(ref, q, k, v, head=head, query_index=i, batch_index=1)
        assert_close(e.weights, weights[1, head, i])
        assert_close(e.output, out[i, 1])
        assert e.w_k.shape == (DH, 5) and e.w_v.shape == (DH, 3) and not e.is_self


def test_unbatched_input_negative_indexes_and_bad_ones() -> None:
    mha = _module()
    x = torch.randn(TQ, D, generator=torch.Generator().manual_seed(8))
    e = explain_head(mha, x, head=-1, query_index=-1)
    assert (e.head, e.query_index, e.batch_index) == (H - 1, TQ - 1, 0)
    with torch.no_grad():
        assert_close(e.output, mha(x[None])[0][0, -1])
    for kw, message in (({"head": H}, "head 2 is out of range"), ({"query_index": TQ}, "query 5 is out of range"),
                        ({"batch_index": 1}, "batch_index 1 is out of range")):
        with pytest.raises(ConfigError, match=message):
            explain_head(mha, x, **kw)
    with pytest.raises(ConfigError, match="training mode"):
        explain_head(MultiHeadAttention(D, H, dropout=0.1), x)


def test_table_prints_shapes_numbers_and_elides_long_rows() -> None:
    mha = _module()
    x = torch.randn(1, TQ, D, generator=torch.Generator().manual_seed(9))
    tokens = ["the", "cat", "sat", "on", "mats"]
    e = explain_head(mha, x, head=1, query_index=1, valid_lens=torch.tensor([4]))
    text = format_table(e, query_tokens=tokens, decimals=4)
    for shape in ("(D,) = (8,)", "(Dh,) = (4,)", "(Tk, Dh) = (5, 4)", "(Dh, D) = (4, 8)",
                  "(B, H, Tq, Tk) = (1, 2, 5, 5)", "(B, H, Tq, Dh) = (1, 2, 5, 4)", "(B, Tq, D) = (1, 5, 8)"):
        assert shape in text, shape
    assert "head 1 of 2, query 1 'cat'" in text and "rows 4:8 of W_q" in text and "'mats'" in text
    assert f"{float(e.weights[0]):.4f}" in text and f"{float(e.scores[2]):.4f}" in text
    assert "key padding (valid_lens)" in text and "-inf (min)" in text  # key 4 is padding
    assert "…" not in text
    short = format_table(e, query_tokens=tokens, max_items=4)
    x_line = next(line for line in short.splitlines() if line.strip().startswith("x_1 "))
    assert "…" in x_line and len(re.findall(r"-?\d+\.\d{3}", x_line)) == 4
    with pytest.raises(ConfigError, match="max_items"):
        format_table(e, max_items=1)


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attnlab-explain-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_page_keeps_hostile_tokens_inert_and_is_offline(tmp_path: Path) -> None:
    mha = _module()
    x = torch.randn(1, 4, D, generator=torch.Generator().manual_seed(10))
    steps = explain_attention(mha, x, is_causal=True)
    tokens = [HOSTILE, "a & b", "{{JS}}", "我"]
    page = explain_head_html(steps, query_tokens=tokens, title="<i>t</i>", head=1, query_index=2)
    assert HOSTILE not in page and "<img" not in page and "<i>" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the page's script
    assert not re.search(r"https?://|//cdn|\bsrc=|@import|url\(", page.replace("\\u003cimg src=x", ""))
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert banned not in scripts[0]
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    for kind, source in (("script", scripts[0]), ("style", styles[0])):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp
    data = _data(page)
    assert data["queryTokens"] == tokens and data["keyTokens"] == tokens and data["title"] == "<i>t</i>"
    assert (data["head"], data["query"], data["numHeads"], data["headDim"]) == (1, 2, H, DH)
    # Rounded only on screen: the data holds float32 exactly.
    assert torch.equal(torch.tensor(data["output"], dtype=torch.float32), steps.output)
    assert torch.equal(torch.tensor(data["heads"][1]["weights"], dtype=torch.float32), steps.weights[1])
    assert data["heads"][0]["allowed"] == steps.allowed[0].tolist()
    path = write_explain_head_html(steps, tmp_path / "sub" / "e.html", query_tokens=tokens)
    assert HOSTILE in json.dumps(_data(path.read_text(encoding="utf-8")), ensure_ascii=False)
    with pytest.raises(ConfigError, match="expected a list of 4 tokens"):
        explain_head_html(steps, query_tokens=["only", "three", "tokens"])
