"""Helpers for testing code that uses ffkernels (and for ffkernels' own tests).

- :func:`usable_backends` / :func:`require_backend`: which kernel backends can run an op for a
  device and dtype here, so one test can check every usable backend against the reference;
- :data:`DEVICES`: ``["cpu"]`` plus ``"cuda"`` when a GPU is present;
- :func:`random_graph_data`: a small learnable graph as plain tensors, and
  :func:`write_npz` / :func:`write_ogb_dir` to put it on disk in the formats
  :func:`ffkernels.datasets.resolve` reads (for tests of code that loads user data);
- graphs, features and op inputs of the kernel tests (:func:`make_graph`, :data:`GRAPHS`, ...);
- :func:`build_trainer`: a registered algorithm's trainer without training it.

Importing this module does not import triton; to run the Triton backend on a CPU-only machine,
set ``TRITON_INTERPRET=1`` before anything imports triton (ffkernels' ``tests/conftest.py`` does).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from . import backends as _registry
from .backends import BACKEND_NAMES
from .graph import Graph

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
            hub = torch.stack([torch.randint(0, n, (300,), generator=gen), torch.full((300,), 5)])
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


def random_graph_data(num_nodes: int = 60, num_features: int = 8, num_classes: int = 3, seed: int = 0):
    """A small learnable graph: ``(x, edge_index, y, train_idx, val_idx, test_idx)`` tensors.

    Labels are balanced; features are a class centroid plus noise (so an MLP can learn them)
    and about 80% of the edges join nodes of one class (so aggregation helps). Edges are
    stored in both directions, without self loops or duplicates, sorted. Splits are
    stratified 40/20/40 per class, so every class has train, val and test nodes; each split is
    sorted. The same seed gives the same tensors.
    """
    if num_nodes < 3 * num_classes:
        raise ValueError(f"need num_nodes >= 3 * num_classes = {3 * num_classes}, got {num_nodes}")
    gen = torch.Generator().manual_seed(seed)
    n = num_nodes
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    centroids = 2.0 * torch.randn(num_classes, num_features, generator=gen)
    x = centroids[y] + 0.5 * torch.randn(n, num_features, generator=gen)

    src = torch.arange(n).repeat_interleave(3)
    order = torch.argsort(y, stable=True)
    count = torch.bincount(y, minlength=num_classes)
    start = torch.cumsum(count, 0) - count
    ys = y[src]
    same_class = order[start[ys] + (torch.rand(src.numel(), generator=gen) * count[ys]).long().clamp_max(count[ys] - 1)]
    anywhere = torch.randint(0, n, (src.numel(),), generator=gen)
    dst = torch.where(torch.rand(src.numel(), generator=gen) < 0.8, same_class, anywhere)
    keep = src != dst
    pairs = torch.cat([torch.stack([src[keep], dst[keep]]), torch.stack([dst[keep], src[keep]])], dim=1)
    key = torch.unique(pairs[0] * n + pairs[1])
    edge_index = torch.stack([key // n, key % n])

    parts = {"train": [], "val": [], "test": []}
    for c in range(num_classes):
        members = torch.nonzero(y == c).view(-1)
        members = members[torch.randperm(members.numel(), generator=gen)]
        n_train = max(1, int(0.4 * members.numel()))
        n_val = max(1, int(0.2 * members.numel()))
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    train_idx, val_idx, test_idx = (torch.cat(parts[k]).sort()[0] for k in ("train", "val", "test"))
    return x, edge_index, y, train_idx, val_idx, test_idx


def _numpy(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def write_npz(path, x, edge_index, y, train_idx, val_idx, test_idx, *, csr: bool = False, edge_weight=None) -> Path:
    """Write data in the bundled ``.npz`` key format; returns the path.

    ``csr=True`` stores the features as ``x_indptr``/``x_indices``/``x_data``/``x_shape``
    instead of a dense ``x``. ``edge_index=None`` (MLP data) and ``val_idx=None`` omit those
    keys. Give each of ``train_idx``/``val_idx``/``test_idx`` as a list of tensors to write
    several splits (``train_idx_0``, ``train_idx_1``, ...).
    """
    path = Path(path)
    arrays = {"y": _numpy(y).astype(np.int64)}
    x = _numpy(x).astype(np.float32)
    if csr:
        rows, cols = np.nonzero(x)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=x.shape[0]))])
        arrays.update(x_indptr=indptr.astype(np.int64),
                      x_indices=cols.astype(np.int64), x_data=x[rows, cols], x_shape=np.array(x.shape, dtype=np.int64))
    else:
        arrays["x"] = x
    if edge_index is not None:
        arrays["edge_index"] = _numpy(edge_index).astype(np.int64)
    if edge_weight is not None:
        arrays["edge_weight"] = _numpy(edge_weight).astype(np.float32)
    for kind, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        if idx is None:
            continue
        if isinstance(idx, (list, tuple)):
            for k, one in enumerate(idx):
                arrays[f"{kind}_idx_{k}"] = _numpy(one).astype(np.int64)
        else:
            arrays[f"{kind}_idx"] = _numpy(idx).astype(np.int64)
    np.savez(path, **arrays)
    return path


def write_ogb_dir(root, x, edge_index, y, train_idx, val_idx, test_idx, *, split_name: str = "random",
                  unlabelled: str = "") -> Path:
    """Write data as an OGB node-property-prediction directory (raw CSV layout); returns ``root``.

    ``raw/edge.csv.gz`` (``src,dst`` rows in ``edge_index`` order), ``raw/node-feat.csv.gz``
    (9 significant digits: float32 values read back exactly), ``raw/node-label.csv.gz`` (label
    -1 written as ``unlabelled``, e.g. ``""`` or ``"nan"``) and
    ``split/<split_name>/{train,valid,test}.csv.gz``. Calling it again with another
    ``split_name`` adds a second split directory.
    """
    root = Path(root)
    (root / "raw").mkdir(parents=True, exist_ok=True)
    split_dir = root / "split" / split_name
    split_dir.mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "raw" / "node-feat.csv.gz", _numpy(x).astype(np.float32), fmt="%.9g", delimiter=",")
    np.savetxt(root / "raw" / "edge.csv.gz", _numpy(edge_index).astype(np.int64).T.reshape(-1, 2), fmt="%d",
               delimiter=",")
    with gzip.open(root / "raw" / "node-label.csv.gz", "wt") as handle:
        handle.writelines(f"{unlabelled if v < 0 else v}\n" for v in _numpy(y).astype(np.int64).tolist())
    for stem, idx in (("train", train_idx), ("valid", val_idx), ("test", test_idx)):
        np.savetxt(split_dir / f"{stem}.csv.gz", _numpy(idx).astype(np.int64).reshape(-1), fmt="%d")
    return root


def build_trainer(algo: str, data, **options):
    """The registered ``algo``'s :class:`~ffkernels.train.Trainer` on ``data`` with its model
    built from ``options`` (resolved as ``ffkernels.fit`` resolves them), without training:
    for tests that drive or inspect single steps."""
    from .api import resolve_run_options
    from .train.registry import get_algorithm
    spec = get_algorithm(algo)
    resolved = resolve_run_options(algo, options)
    dims = {"num_features": data.num_features, "num_classes": data.num_classes}
    model = spec.model(resolved, dims, spec.variant).to(data.x.device)
    return spec.trainer(spec, resolved, data, model)


__all__ = ["DEVICES", "KERNEL_BACKENDS", "GRAPHS", "HALF_TOL", "assert_close", "backend_module", "edge_weights",
           "features", "goodness_inputs", "interpreted", "linear_inputs", "make_graph", "require_backend",
           "tolerance", "usable_backends", "random_graph_data", "write_npz", "write_ogb_dir", "build_trainer"]
