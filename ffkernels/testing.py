"""Helpers for testing code that uses ffkernels (and for ffkernels' own tests).

- :func:`usable_backends` / :func:`require_backend`: which kernel backends can run an op for a
  device and dtype here, so one test can check every usable backend against the reference;
- :data:`DEVICES`: ``["cpu"]`` plus ``"cuda"`` when a GPU is present.

Importing this module does not import triton; to run the Triton backend on a CPU-only machine,
set ``TRITON_INTERPRET=1`` before anything imports triton (ffkernels' ``tests/conftest.py`` does).
"""
from __future__ import annotations

import torch

from . import backends as _registry
from .graph import Graph
from .backends import BACKEND_NAMES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNEL_BACKENDS = tuple(name for name in BACKEND_NAMES if name != "reference")


def backend_module(name: str):
    """The module implementing backend ``name`` (``NAME``, ``supports``, the op functions)."""
    return _registry._module(name)


def usable_backends(op: str, device, dtype, include_reference: bool = False) -> list:
    """Backends that are available here and support ``op`` for ``dtype`` tensors on ``device``."""
    device = torch.device(device)
    names = []
    for name, info in _registry.available().items():
        if not info["available"] or (name == "reference" and not include_reference):
            continue
        if backend_module(name).supports(op, device, dtype):
            names.append(name)
    return names


def require_backend(backend: str, op: str, device, dtype) -> None:
    """Skip the calling pytest test when ``backend`` cannot run ``op`` here (with the reason)."""
    import pytest

    info = _registry.available()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend} unavailable: {info['reason']}")
    if not backend_module(backend).supports(op, torch.device(device), dtype):
        pytest.skip(f"backend {backend} does not support {op} for {dtype} on {torch.device(device).type}")


# ----------------------------------------------------------------------------- test inputs
# Inputs shared by the op test-suites: random and adversarial graphs (no edges, isolated nodes,
# a hub of huge in-degree, duplicate edges and self loops), features of any layout.

HALF_TOL = {torch.float16: dict(rtol=2e-3, atol=1e-2), torch.bfloat16: dict(rtol=1.6e-2, atol=5e-2)}


def tolerance(dtype):
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10)
    if dtype == torch.float32:
        return dict(rtol=1e-4, atol=1e-4)
    return HALF_TOL[dtype]


def assert_close(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, expected.dtype,
                                                                               actual.shape, expected.shape)
    torch.testing.assert_close(actual.double(), expected.double(), **tolerance(dtype))


# ----------------------------------------------------------------------------- graphs
def interpreted(backend, device) -> bool:
    """Triton on CPU tensors runs under its (slow) interpreter: such runs get smaller inputs."""
    return backend == "triton" and torch.device(device).type == "cpu"


def make_graph(kind: str, device="cpu", seed=0, small=False) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    if small:  # same shapes of trouble, fewer nodes and edges
        n = {"random": 48, "empty": 5, "isolated": 40, "hub": 40, "dup_self": 20}[kind]
        if kind == "random":
            ei = torch.randint(0, n, (2, 400), generator=gen)
        elif kind == "empty":
            ei = torch.zeros(2, 0, dtype=torch.int64)
        elif kind == "isolated":
            ei = torch.stack([torch.randint(0, 30, (100,), generator=gen), torch.randint(0, 12, (100,), generator=gen)])
        elif kind == "hub":
            hub = torch.stack([torch.randint(0, n, (700,), generator=gen), torch.full((700,), 5)])
            ei = torch.cat([hub, torch.randint(0, n, (2, 60), generator=gen)], 1)
        else:
            base = torch.randint(0, n, (2, 50), generator=gen)
            loops = torch.arange(0, n, 3).repeat(2, 1)
            ei = torch.cat([base, base[:, :20], loops, loops], 1)
        return Graph.from_edge_index(ei.to(device), n)
    if kind == "random":
        n, ei = 200, torch.randint(0, 200, (2, 2000), generator=gen)
    elif kind == "empty":  # nodes but no edges
        n, ei = 12, torch.zeros(2, 0, dtype=torch.int64)
    elif kind == "isolated":  # only the first 30 of 90 nodes receive edges, the last 20 send none
        n = 90
        ei = torch.stack([torch.randint(0, 70, (300,), generator=gen), torch.randint(0, 30, (300,), generator=gen)])
    elif kind == "hub":  # node 5 has in-degree 2500: one row dominates the work
        n = 150
        hub = torch.stack([torch.randint(0, n, (2500,), generator=gen), torch.full((2500,), 5)])
        ei = torch.cat([hub, torch.randint(0, n, (2, 300), generator=gen)], 1)
    elif kind == "dup_self":  # duplicate edges and self loops, kept as multi-edges
        n = 40
        base = torch.randint(0, n, (2, 150), generator=gen)
        loops = torch.arange(0, n, 3).repeat(2, 1)
        ei = torch.cat([base, base[:, :60], loops, loops], 1)
    else:
        raise ValueError(kind)
    return Graph.from_edge_index(ei.to(device), n)


GRAPHS = ("random", "empty", "isolated", "hub", "dup_self")


def features(n, f, dtype=torch.float32, device="cpu", seed=1, layout="contiguous"):
    gen = torch.Generator().manual_seed(seed)
    if layout == "transposed":  # a non-contiguous view of the same values
        return torch.randn(f, n, generator=gen).to(dtype).to(device).t()
    if layout == "sliced":
        return torch.randn(n, 2 * f, generator=gen).to(dtype).to(device)[:, ::2]
    return torch.randn(n, f, generator=gen).to(dtype).to(device)


def edge_weights(graph, dtype=torch.float32, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(graph.num_edges, generator=gen).to(dtype).to(graph.device) + 0.5


def goodness_inputs(n, d, dtype=torch.float32, device="cpu", seed=0, positives="mixed", num_pairs=None):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, d, generator=gen, dtype=torch.float64) * (1.5 / max(d, 1) ** 0.5))
    positive = {"mixed": torch.rand(n, generator=gen) < 0.5, "all": torch.ones(n, dtype=torch.bool),
                "none": torch.zeros(n, dtype=torch.bool)}[positives]
    num_pairs = n if num_pairs is None else num_pairs
    pairs = torch.randint(0, max(n, 1), (num_pairs, 2), generator=gen) if n > 0 else torch.zeros(0, 2, dtype=torch.int64)
    return z.to(dtype).to(device), positive.to(device), pairs.to(device)


def linear_inputs(n, din, dout, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, din, generator=gen, dtype=torch.float64).to(dtype).to(device)
    w = (torch.randn(dout, din, generator=gen, dtype=torch.float64) / din ** 0.5).to(dtype).to(device)
    b = (torch.randn(dout, generator=gen, dtype=torch.float64) * 0.1).to(dtype).to(device)
    positive = (torch.rand(n, generator=gen) < 0.5).to(device)
    pairs = torch.randint(0, max(n, 1), (n, 2), generator=gen).to(device)
    return x, w, b, positive, pairs


__all__ = ["DEVICES", "KERNEL_BACKENDS", "GRAPHS", "HALF_TOL", "assert_close", "backend_module", "edge_weights",
           "features", "goodness_inputs", "interpreted", "linear_inputs", "make_graph", "require_backend",
           "tolerance", "usable_backends"]
