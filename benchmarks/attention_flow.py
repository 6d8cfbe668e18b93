"""Attention flow speed: attnlab (scipy's maximum_flow on integer capacities) against plain-Python Edmonds-Karp.

Run: .venv/bin/python benchmarks/attention_flow.py [--layers 6] [--tokens 64] [--heads 4] [--repeats 5]
     [--ref-sinks 2] [--seed 0]

The graph: ``--layers`` layers of ``--tokens`` positions, random head-averaged attention (softmax of N(0, 3^2)
scores, so rows are peaked as in trained models), residual 0.5, capacities scaled by 2^20 to integers, exactly
as :func:`attnlab.explain.attention_flow` builds it (:func:`attnlab.explain.flow_graph`). The timed task is one
read-out row: the max flow from the last layer's position 0 (a class token) to every input token, ``--tokens``
max-flow problems.

Candidates, each on the same integer graph: ``attnlab`` (``attention_flow(source=0)``, scipy's Dinic, graph
construction included), scipy's ``edmonds_karp`` method, networkx's ``edmonds_karp`` (when networkx is
installed) and a plain-Python Edmonds-Karp written here (BFS on a dict of residual capacities). The Python
references solve only the first ``--ref-sinks`` sinks per repeat (a whole row takes them minutes); the table
compares time *per sink* and says how many each one solved. Every candidate's flows are checked equal.
Warm-up, then interleaved repeats; medians.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median_times  # noqa: E402

from attnlab.explain.flow import DEFAULT_SCALE, attention_flow, flow_graph, fuse_layers  # noqa: E402


def python_edmonds_karp(graph: dict[int, dict[int, int]], source: int, sink: int) -> int:
    """Maximum flow by shortest augmenting paths (Edmonds & Karp, 1972) on ``{u: {v: capacity}}``."""
    residual = {u: dict(vs) for u, vs in graph.items()}
    for u, vs in graph.items():
        for v in vs:
            residual.setdefault(v, {}).setdefault(u, 0)
    total = 0
    while True:
        parent = {source: source}
        queue = deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, cap in residual[u].items():
                if cap > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return total
        bottleneck, v = None, sink
        while v != source:
            u = parent[v]
            bottleneck = residual[u][v] if bottleneck is None else min(bottleneck, residual[u][v])
            v = u
        v = sink
        while v != source:
            u = parent[v]
            residual[u][v] -= bottleneck
            residual[v][u] += bottleneck
            v = u
        total += bottleneck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-sinks", type=int, default=2, help="sinks the Python references solve per repeat")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from scipy.sparse.csgraph import maximum_flow

    L, T = args.layers, args.tokens
    g = torch.Generator().manual_seed(args.seed)
    weights = torch.softmax(3 * torch.randn(L, args.heads, T, T, generator=g, dtype=torch.float64), dim=-1)
    graph = flow_graph(fuse_layers(weights), scale=DEFAULT_SCALE)  # csr, int32 capacities
    source, sinks = L * T, list(range(T))
    coo = graph.tocoo()
    adjacency: dict[int, dict[int, int]] = {}
    for u, v, c in zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist(), strict=True):
        adjacency.setdefault(u, {})[v] = c
    ref_sinks = sinks[:args.ref_sinks]

    expected = attention_flow(weights, source=0)
    want = [round(float(x) * DEFAULT_SCALE) for x in expected]
    assert [maximum_flow(graph, source, s, method="edmonds_karp").flow_value for s in sinks] == want
    assert [python_edmonds_karp(adjacency, source, s) for s in ref_sinks] == want[:len(ref_sinks)]
    candidates: dict[str, tuple[Callable[[], object], int]] = {
        "attnlab attention_flow (scipy Dinic)": (lambda: attention_flow(weights, source=0), T),
        "scipy maximum_flow edmonds_karp": (lambda: [maximum_flow(graph, source, s, method="edmonds_karp")
                                                     for s in sinks], T),
    }
    try:
        import networkx as nx
        from networkx.algorithms.flow import edmonds_karp

        nxg = nx.DiGraph()
        for u, vs in adjacency.items():
            for v, c in vs.items():
                nxg.add_edge(u, v, capacity=c)
        got = [nx.maximum_flow_value(nxg, source, s, flow_func=edmonds_karp) for s in ref_sinks]
        assert got == want[:len(ref_sinks)]
        candidates[f"networkx {nx.__version__} edmonds_karp"] = (
            lambda: [nx.maximum_flow_value(nxg, source, s, flow_func=edmonds_karp) for s in ref_sinks],
            len(ref_sinks))
    except ImportError:
        pass
    candidates["plain Python Edmonds-Karp (reference)"] = (
        lambda: [python_edmonds_karp(adjacency, source, s) for s in ref_sinks], len(ref_sinks))

    t0 = time.perf_counter()
    times = median_times({k: fn for k, (fn, _) in candidates.items()}, warmup=1, repeats=args.repeats)
    elapsed = time.perf_counter() - t0
    ref_name = "plain Python Edmonds-Karp (reference)"
    ref_per_sink = times[ref_name] / candidates[ref_name][1]
    print(f"attention flow: {L} layers x {T} tokens ({args.heads} heads averaged), {graph.nnz} edges, "
          f"{graph.shape[0]} nodes, capacities x {DEFAULT_SCALE}; median of {args.repeats} interleaved repeats")
    print(environment())
    print(f"all candidates' flows equal attnlab's (scipy on all {T} sinks, the Python references on "
          f"{len(ref_sinks)})\n")
    rows = [["candidate", "sinks per call", "median s per call", "ms per sink", "vs reference"]]
    for name, (_, count) in candidates.items():
        per = times[name] / count
        rows.append([name, str(count), f"{times[name]:.4f}", f"{1000 * per:.2f}", f"{per / ref_per_sink:.4f}x"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n(whole benchmark: {elapsed:.1f} s; 'vs reference' = time per sink / the plain-Python reference's)")


if __name__ == "__main__":
    main()
