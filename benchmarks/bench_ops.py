"""CPU micro-benchmarks of the ops against the baselines a user would otherwise pick.

Two ways to run (sizes: N=100k, E=2M, F=128 and goodness on [1M, 128]; ``FFKERNELS_BENCH_SMALL=1``
or ``--small`` for a quick check at 1/10 of that):

    python benchmarks/bench_ops.py [--small] [--out results.md]   # one table, ratios, GB/s
    pytest benchmarks/bench_ops.py --benchmark-columns=min,median  # pytest-benchmark suite

Baselines: aggregate vs ``torch.sparse.mm`` on the same CSR (``torch.sparse_csr_tensor``), vs
PyG-style gather + ``index_add_``, vs torch-scatter when importable; goodness_loss_grad vs
the eager torch expression (the reference backend) and vs one ``h.clone()`` (the physical
limit: the fused kernel must read h and write grad_z, exactly what a copy does). Effective
GB/s count the bytes that must move: the x row of every edge + the output (aggregate), read h
+ write grad_z (goodness); next to it, the copy bandwidth measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import pytest
import torch

import ffkernels
from ffkernels import Graph, ops

SMALL = os.environ.get("FFKERNELS_BENCH_SMALL") == "1"


def sizes(small: bool):
    if small:
        return dict(N=10_000, E=200_000, F=128, GN=100_000, GD=128)
    return dict(N=100_000, E=2_000_000, F=128, GN=1_000_000, GD=128)


def make_inputs(small: bool, seed: int = 0):
    s = sizes(small)
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, s["N"], (2, s["E"]), generator=gen)
    graph = Graph.from_edge_index(edge_index, s["N"])
    x = torch.randn(s["N"], s["F"], generator=gen)
    h = torch.relu(torch.randn(s["GN"], s["GD"], generator=gen))
    positive = torch.rand(s["GN"], generator=gen) < 0.5
    return dict(graph=graph, edge_index=edge_index, x=x, h=h, positive=positive)


def sparse_csr(graph: Graph, values=None):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graph.to_torch_sparse_csr(values)


def gcn_values(graph: Graph):
    """Edge values of D^-1/2 A D^-1/2 (the self loop is added separately)."""
    s = graph.deg_inv_sqrt
    return s[graph.row.long()] * s[graph.col.long()]


def baseline_fns(inputs, reduce):
    """The baselines for one reduce: name -> zero-argument callable."""
    graph, x, ei = inputs["graph"], inputs["x"], inputs["edge_index"]
    n = graph.num_nodes
    src, dst = ei[0], ei[1]
    deg = graph.in_degree.clamp_min(1).to(x.dtype).unsqueeze(1)
    s = graph.deg_inv_sqrt.unsqueeze(1)
    if reduce == "sum":
        a = sparse_csr(graph)
        fns = {"torch.sparse.mm": lambda: torch.sparse.mm(a, x),
               "gather+index_add_": lambda: x.new_zeros(n, x.shape[1]).index_add_(0, dst, x[src])}
    elif reduce == "mean":
        a = sparse_csr(graph)
        fns = {"torch.sparse.mm": lambda: torch.sparse.mm(a, x) / deg,
               "gather+index_add_": lambda: x.new_zeros(n, x.shape[1]).index_add_(0, dst, x[src]) / deg}
    else:  # gcn
        a = sparse_csr(graph, gcn_values(graph))
        w = graph.deg_inv_sqrt[src] * graph.deg_inv_sqrt[dst]
        fns = {"torch.sparse.mm": lambda: torch.sparse.mm(a, x) + s * s * x,
               "gather+index_add_": lambda: x.new_zeros(n, x.shape[1]).index_add_(0, dst, x[src] * w[:, None])
               + s * s * x}
    try:
        import torch_scatter  # noqa: F401

        if reduce in ("sum", "mean"):
            fns["torch_scatter"] = lambda: torch_scatter.scatter(x[src], dst, 0, dim_size=n, reduce=reduce)
    except ImportError:
        pass
    return fns


def aggregate_bytes(inputs, reduce):
    g, x = inputs["graph"], inputs["x"]
    row = x.shape[1] * x.element_size()
    return g.num_edges * row + g.num_nodes * row * (2 if reduce == "gcn" else 1)


def timeit(fn, repeat=5, warmup=1):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(inputs, repeat=5):
    """GB/s of a copy into a preallocated buffer (read + write): the practical memory
    bandwidth; and the time of ``h.clone()``, which also pays for a fresh output buffer
    (page faults), as every op that returns a new tensor does."""
    h = inputs["h"]
    dst = torch.empty_like(h)
    t_copy = timeit(lambda: dst.copy_(h), repeat)
    t_clone = timeit(lambda: h.clone(), repeat)
    return 2 * h.numel() * h.element_size() / t_copy / 1e9, t_clone


def table(small: bool, repeat: int = 5) -> str:
    inputs = make_inputs(small)
    s = sizes(small)
    bw, t_copy = copy_bandwidth(inputs, repeat)
    lines = [f"ffkernels CPU micro-benchmarks ({platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, cpu_isa "
             f"{ffkernels._C.cpu_isa() if ffkernels.available_backends()['cpu']['available'] else 'n/a'})",
             f"aggregate: N={s['N']:,} E={s['E']:,} F={s['F']} float32; goodness: [{s['GN']:,}, {s['GD']}] float32; "
             f"best of {repeat}",
             f"copy bandwidth (dst.copy_(h), read+write, preallocated): {bw:.1f} GB/s",
             "",
             "| op | implementation | time (ms) | effective GB/s | % of copy bw | speed-up of ffkernels cpu |",
             "|---|---|---|---|---|---|"]
    g, x = inputs["graph"], inputs["x"]
    for reduce in ("sum", "mean", "gcn"):
        nbytes = aggregate_bytes(inputs, reduce)
        t_ff = timeit(lambda: ops.aggregate(g, x, reduce, backend="cpu"), repeat)
        rows = [("ffkernels cpu", t_ff)]
        for name, fn in baseline_fns(inputs, reduce).items():
            rows.append((name, timeit(fn, max(2, repeat // 2) if "index_add" in name else repeat)))
        for name, t in rows:
            lines.append(f"| aggregate {reduce} | {name} | {t * 1e3:.1f} | {nbytes / t / 1e9:.2f} | "
                         f"{100 * nbytes / t / 1e9 / bw:.0f}% | {t / t_ff:.2f}x |")
    h, positive = inputs["h"], inputs["positive"]
    nbytes = 2 * h.numel() * h.element_size()
    for loss in ("ff", "symba"):
        pairs = None
        if loss == "symba":
            half = h.shape[0] // 2
            pairs = torch.stack([torch.arange(half), torch.arange(half) + half], 1)
        t_ff = timeit(lambda: ops.goodness_loss_grad(h, positive, loss=loss, pairs=pairs, backend="cpu"), repeat)
        t_ref = timeit(lambda: ops.goodness_loss_grad(h, positive, loss=loss, pairs=pairs, backend="reference"),
                       max(2, repeat // 2))
        for name, t in (("ffkernels cpu", t_ff), ("eager torch (reference)", t_ref), ("h.clone() (limit)", t_copy)):
            lines.append(f"| goodness_loss_grad {loss} | {name} | {t * 1e3:.1f} | {nbytes / t / 1e9:.2f} | "
                         f"{100 * nbytes / t / 1e9 / bw:.0f}% | {t / t_ff:.2f}x |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def inputs():
    if not ffkernels.available_backends()["cpu"]["available"]:
        pytest.skip(ffkernels.available_backends()["cpu"]["reason"])
    return make_inputs(SMALL)


@pytest.mark.parametrize("reduce", ["sum", "mean", "gcn"])
@pytest.mark.parametrize("impl", ["ffkernels_cpu", "torch.sparse.mm", "gather+index_add_", "torch_scatter"])
def test_aggregate(benchmark, inputs, reduce, impl):
    if impl == "ffkernels_cpu":
        fn = lambda: ops.aggregate(inputs["graph"], inputs["x"], reduce, backend="cpu")  # noqa: E731
    else:
        fns = baseline_fns(inputs, reduce)
        if impl not in fns:
            pytest.skip(f"{impl} not importable / not applicable")
        fn = fns[impl]
    benchmark.group = f"aggregate-{reduce}"
    benchmark.extra_info["bytes"] = aggregate_bytes(inputs, reduce)
    benchmark.pedantic(fn, rounds=3 if "index_add" in impl else 5, warmup_rounds=1)
    benchmark.extra_info["GB/s"] = benchmark.extra_info["bytes"] / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("impl", ["ffkernels_cpu", "reference", "copy"])
def test_goodness_loss_grad(benchmark, inputs, impl):
    h, positive = inputs["h"], inputs["positive"]
    if impl == "copy":
        fn = h.clone
    else:
        fn = lambda: ops.goodness_loss_grad(h, positive, backend="cpu" if impl == "ffkernels_cpu" else impl)  # noqa: E731
    benchmark.group = "goodness_loss_grad-ff"
    benchmark.extra_info["bytes"] = 2 * h.numel() * h.element_size()
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
    benchmark.extra_info["GB/s"] = benchmark.extra_info["bytes"] / benchmark.stats.stats.min / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", default=SMALL, help="1/10 sizes (quick check)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    text = table(args.small, args.repeat)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
