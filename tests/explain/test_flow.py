"""Attention flow against a linear-programming oracle on small random layer graphs, and its known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from attnlab.core.errors import ConfigError, DataError
from attnlab.explain import attention_flow, attention_methods
from attnlab.explain.flow import DEFAULT_SCALE
from attnlab.viz.analysis import attention_rollout
from attnlab.viz.capture import capture


def _random_attention(L: int, H: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(L, H, T, T, generator=g, dtype=torch.float64), dim=-1)  # (L, H, T, T)


def _lp_max_flow(weights: torch.Tensor, residual: float, source: int | torch.Tensor) -> list[float]:
    """The oracle: max flow as a linear program over edge flows, on a graph built here from the definition.

    Edges (l, i) -> (l - 1, j) carry at most A'_l[i, j] with A' = r I + (1 - r) mean_h A, rows renormalized; a
    read-out distribution becomes a super-source. Maximize what leaves the source subject to conservation.
    """
    L, _, T, _ = weights.shape
    a = weights.mean(1).numpy()
    a = residual * np.eye(T) + (1 - residual) * a
    a = a / a.sum(-1, keepdims=True)
    edges, caps = [], []
    for layer in range(1, L + 1):
        for i in range(T):
            for j in range(T):
                edges.append(((layer, i), (layer - 1, j)))
                caps.append(a[layer - 1, i, j])
    if isinstance(source, torch.Tensor):
        src = ("s", 0)
        for i in range(T):
            edges.append((src, (L, i)))
            caps.append(float(source[i]))
    else:
        src = (L, source)
    nodes = sorted({n for e in edges for n in e}, key=str)
    flows = []
    for j in range(T):
        sink = (0, j)
        inner = [n for n in nodes if n not in (src, sink)]
        a_eq = np.zeros((len(inner), len(edges)))
        for k, (u, v) in enumerate(edges):
            if u in inner:
                a_eq[inner.index(u), k] -= 1
            if v in inner:
                a_eq[inner.index(v), k] += 1
        c = np.array([-1.0 if u == src else 0.0 for u, _ in edges])
        res = linprog(c, A_eq=a_eq, b_eq=np.zeros(len(inner)), bounds=list(zip([0.0] * len(caps), caps, strict=True)),
                      method="highs")
        assert res.status == 0
        flows.append(-res.fun)
    return flows


@pytest.mark.parametrize(("L", "H", "T", "seed"), [(1, 1, 3, 0), (2, 2, 3, 1), (3, 2, 4, 2), (2, 3, 5, 3)])
@pytest.mark.parametrize("residual", [0.0, 0.5])
def test_flow_matches_linear_program(L: int, H: int, T: int, seed: int, residual: float) -> None:
    w = _random_attention(L, H, T, seed)
    tol = L * T * T / DEFAULT_SCALE + 1e-9  # rounding: at most half a unit per edge of a minimum cut
    for source in range(T):
        got = attention_flow(w, source=source, residual=residual)
        want = _lp_max_flow(w, residual, source)
        assert got.min() >= 0
        np.testing.assert_allclose(got.numpy(), want, atol=tol, rtol=0)
    read = torch.softmax(torch.randn(T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)
    np.testing.assert_allclose(attention_flow(w, source=read, residual=residual).numpy(),
                               _lp_max_flow(w, residual, read), atol=tol + T / DEFAULT_SCALE, rtol=0)


def test_full_matrix_rows_are_the_single_sources() -> None:
    w = _random_attention(2, 2, 4, 7)
    full = attention_flow(w)
    assert full.shape == (4, 4) and bool((full >= 0).all())
    for i in range(4):
        torch.testing.assert_close(full[i], attention_flow(w, source=i))


def test_one_layer_flow_is_the_attention_row() -> None:
    """One layer: the only path from (1, i) to (0, j) is one edge, so the flow is A'[i, j] (A itself at r = 0)."""
    w = _random_attention(1, 3, 5, 11)
    mean = w.mean(1)[0]  # (T, T)
    for i in range(5):
        torch.testing.assert_close(attention_flow(w, source=i, residual=0.0), mean[i], atol=1 / DEFAULT_SCALE, rtol=0)
        mixed = 0.5 * torch.eye(5, dtype=torch.float64)[i] + 0.5 * mean[i]
        torch.testing.assert_close(attention_flow(w, source=i, residual=0.5), mixed, atol=1 / DEFAULT_SCALE, rtol=0)


def test_flow_follows_the_narrowest_cut_unlike_rollout() -> None:
    """A single path: flow and rollout agree. Two parallel paths of 0.5 each: rollout multiplies and sums (0.5),
    while each token alone can take the source's whole unit of flow (1.0): flows are not a distribution."""
    T = 3
    layer1 = torch.eye(T, dtype=torch.float64)[[2, 1, 0]]  # position 0 attends to token 2
    layer2 = torch.zeros(T, T, dtype=torch.float64)
    layer2[:, 0] = 1.0  # everyone attends to position 0
    w = torch.stack([layer1, layer2])[:, None]  # (L, 1, T, T)
    flow = attention_flow(w, source=1, residual=0.0)
    torch.testing.assert_close(flow, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(attention_rollout(w, residual=0.0)[1].double(), flow)
    half = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    torch.testing.assert_close(attention_flow(half, source=0, residual=0.0), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(attention_rollout(half, residual=0.0)[0].double(),
                               torch.full((2,), 0.5, dtype=torch.float64))


def test_flow_on_a_captured_torch_encoder() -> None:
    """Attention-only methods take maps captured from any model, here nn.TransformerEncoder."""
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0), 2,
                                  enable_nested_tensor=False).eval()
    with torch.no_grad(), capture(model) as maps:
        model(torch.randn(1, 5, 16))
    stack = maps.stack("self")[:, 0]  # (L, H, T, T)
    scores = attention_methods(stack, 0)
    assert set(scores) == {"attention", "rollout", "flow"}
    assert all(s.shape == (5,) for s in scores.values())
    torch.testing.assert_close(attention_flow(maps, source=0), scores["flow"])
    torch.testing.assert_close(scores["attention"], stack[-1].double().mean(0)[0])


def test_bad_inputs_are_one_line_errors() -> None:
    w = _random_attention(2, 2, 3, 0)
    with pytest.raises(ConfigError, match="residual"):
        attention_flow(w, source=0, residual=1.5)
    with pytest.raises(ConfigError, match="source"):
        attention_flow(w, source=3)
    with pytest.raises(DataError, match="shape"):
        attention_flow(w, source=torch.ones(4))
    with pytest.raises(DataError, match="self-attention"):
        attention_flow(torch.rand(2, 2, 3, 4), source=0)
    with pytest.raises(ConfigError, match="scale"):
        attention_flow(w, source=0, scale=0)
