"""Greedy SF training's peak memory does not grow with depth; backprop's does (docs/algorithms.md#invariants).

Each run is a fresh process (``ffkernels.benchmarking.suite`` worker) that loads the graph,
warms up, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and reads ``VmHWM``
after the training call: the peak growth belongs to that training call alone. The graph is
large enough (20,000 nodes, 128 features) that one layer's activations (~10 MiB per ``N x 128``
tensor) dwarf allocator noise, so a trainer that kept each layer's tensors alive would fail.
"""
from __future__ import annotations

import sys

import pytest

from ffkernels.benchmarking import suite

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS via /proc is Linux-only")

GRAPH = "synthetic:20000:10"


def _peak(variant: str, layers: int) -> int:
    case = suite.Case(f"depth-{variant}-{layers}", "sf", GRAPH, layers, 2, patience=suite.NO_EARLY_STOP,
                      variants=(variant,))
    rec = suite.run_case_variant(case, variant, "cpu", timeout=120, threads=1, mmap_threshold=1 << 16)
    assert not rec.get("error"), rec.get("error")
    assert rec["memory_method"].startswith("VmHWM") or rec["memory_method"].startswith("VmRSS")
    return rec["peak_memory_bytes"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os
    path = tmp_path_factory.mktemp("bench-cache")
    old = os.environ.get("FFKERNELS_BENCH_CACHE")
    os.environ["FFKERNELS_BENCH_CACHE"] = str(path)
    suite.load_dataset(GRAPH)  # generate once; every worker loads the cached file
    yield path
    if old is None:
        os.environ.pop("FFKERNELS_BENCH_CACHE", None)
    else:
        os.environ["FFKERNELS_BENCH_CACHE"] = old


def test_greedy_sf_peak_memory_flat_with_depth_while_bp_grows(cache):
    sf1, sf16 = _peak("fused", 1), _peak("fused", 16)
    bp1, bp8 = _peak("bp", 1), _peak("bp", 8)
    activation = 20_000 * 128 * 4  # one N x hidden float32 tensor
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    seen = f"SF 1/16 layers: {mib(sf1)} / {mib(sf16)}; BP 1/8 layers: {mib(bp1)} / {mib(bp8)}"
    # A deeper layer consumes the cached output of the frozen layer below while building its
    # own input, so nothing accumulates: 16 layers within 1.2x of 1 layer (issue target).
    assert sf16 <= 1.2 * sf1, f"greedy SF peak grew with depth ({seen})"
    assert sf16 - sf1 < activation, f"greedy SF kept a tensor per layer ({seen})"
    # BP keeps every layer's activations for the backward pass: at least half an N x hidden
    # tensor more per added layer.
    assert bp8 - bp1 >= 7 * activation / 2, f"BP peak should grow with depth ({seen})"
    assert sf16 < bp8, seen
