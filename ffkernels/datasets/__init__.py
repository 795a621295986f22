"""Bundled datasets (shipped inside the package: nothing is ever downloaded) and a generator.

- Graphs: ``cora``, ``citeseer`` (Planetoid public splits) and ``cora_ml`` (the ForwardGNN
  paper's five 64/16/20 splits, features row-normalised as the paper does).
- MLP data: ``digits`` (the 8x8 digits scikit-learn ships, from the UCI optdigits test set,
  BSD-3 licence; stored here as uint8 with a fixed seeded 80/20 train/test split, so
  scikit-learn is not needed).
- :func:`synthetic`: a seeded graph with learnable labels, 10^3 to 10^7 nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..graph import Graph

DATA_DIR = Path(__file__).resolve().parent / "data"
GRAPH_DATASETS = ("cora", "citeseer", "cora_ml")
MLP_DATASETS = ("digits",)
DATASETS = GRAPH_DATASETS + MLP_DATASETS
NUM_SPLITS = {"cora": 1, "citeseer": 1, "cora_ml": 5, "digits": 1}


@dataclass
class Dataset:
    """A node-classification (or MLP) dataset on one device.

    Attributes:
        name: dataset name.
        x: ``[N, F]`` float32 dense features.
        y: ``[N]`` int64 labels (-1 = unlabelled).
        train_idx, val_idx, test_idx: int64 node indices of the split (``val_idx`` may be
            empty for MLP data).
        num_classes: number of classes.
        graph: the :class:`ffkernels.Graph` (None for MLP data).
        edge_index: ``[2, E]`` int64 (None for MLP data).
        split: which split the indices belong to.
    """
    name: str
    x: torch.Tensor
    y: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int
    graph: Graph | None = None
    edge_index: torch.Tensor | None = None
    split: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def to(self, device) -> "Dataset":
        device = torch.device(device)
        return Dataset(self.name, self.x.to(device), self.y.to(device), self.train_idx.to(device),
                       self.val_idx.to(device), self.test_idx.to(device), self.num_classes,
                       None if self.graph is None else self.graph.to(device),
                       None if self.edge_index is None else self.edge_index.to(device), self.split,
                       dict(self.extra))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, split={self.split}, nodes={self.num_nodes}, features={self.num_features}, "
                f"classes={self.num_classes}, edges={0 if self.graph is None else self.graph.num_edges}, "
                f"train/val/test={len(self.train_idx)}/{len(self.val_idx)}/{len(self.test_idx)})")


def _dense_features(data) -> np.ndarray:
    indptr, indices, values = data["x_indptr"], data["x_indices"], data["x_data"]
    n, f = (int(v) for v in data["x_shape"])
    x = np.zeros((n, f), dtype=np.float32)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    x[rows, indices] = values
    return x


def load(name: str, split: int = 0, device="cpu") -> Dataset:
    """Load a bundled dataset.

    Args:
        name: ``cora``, ``citeseer``, ``cora_ml`` or ``digits``.
        split: split number (``cora_ml``: 0..4; others: 0).
        device: where to put the tensors.

    Raises:
        ValueError: unknown name or split out of range.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < NUM_SPLITS[name]:
        raise ValueError(f"split must be an int in [0, {NUM_SPLITS[name]}) for {name}, got {split!r}")
    with np.load(DATA_DIR / f"{name}.npz") as data:
        if name == "digits":
            x = torch.from_numpy(data["x"].astype(np.float32) / 16.0)
            y = torch.from_numpy(data["y"])
            ds = Dataset(name, x, y, torch.from_numpy(data["train_idx"]), torch.empty(0, dtype=torch.int64),
                         torch.from_numpy(data["test_idx"]), int(y.max()) + 1)
            return ds.to(device)
        x = _dense_features(data)
        if name == "cora_ml":
            # The ForwardGNN paper row-normalises the raw binary features (row / row sum).
            sums = x.sum(axis=1, keepdims=True)
            x = x / np.where(sums > 0, sums, 1.0)
        y = torch.from_numpy(data["y"].astype(np.int64))
        suffix = f"_{split}" if name == "cora_ml" else ""
        idx = {k: torch.from_numpy(data[f"{k}_idx{suffix}"].astype(np.int64)) for k in ("train", "val", "test")}
        edge_index = torch.from_numpy(data["edge_index"].astype(np.int64))
    graph = Graph.from_edge_index(edge_index, x.shape[0])
    ds = Dataset(name, torch.from_numpy(x), y, idx["train"], idx["val"], idx["test"], int(y.max()) + 1,
                 graph, edge_index, split)
    return ds.to(device)


def synthetic(num_nodes: int = 10_000, avg_degree: float = 10.0, num_classes: int = 8, num_features: int = 128,
              seed: int = 0, homophily: float = 0.7, feature_noise: float = 1.0, train_fraction: float = 0.1,
              val_fraction: float = 0.1, device="cpu") -> Dataset:
    """A seeded random graph with learnable labels, from 10^3 to 10^7 nodes.

    Labels are uniform over ``num_classes``. Features are a class centroid plus Gaussian noise
    (``feature_noise`` times a unit-norm centroid scale). Edges: each node draws a skewed
    (Zipf-like) number of out-edges averaging ``avg_degree / 2``; with probability
    ``homophily`` the target is a node of the same class, else a uniform node; every edge is
    stored in both directions (so the average in-degree is about ``avg_degree``).
    Memory: about ``4 * num_nodes * num_features`` bytes of features plus 24 bytes per edge.
    """
    for arg, val, lo in (("num_nodes", num_nodes, 2), ("num_classes", num_classes, 2), ("num_features", num_features, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{arg} must be an int >= {lo}, got {val!r}")
    if not (avg_degree > 0):
        raise ValueError(f"avg_degree must be > 0, got {avg_degree!r}")
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily!r}")
    gen = torch.Generator().manual_seed(seed)
    n, c = num_nodes, num_classes
    y = torch.randint(0, c, (n,), generator=gen)
    centroids = torch.randn(c, num_features, generator=gen)
    centroids = centroids / centroids.norm(dim=1, keepdim=True)
    x = torch.randn(n, num_features, generator=gen).mul_(feature_noise / num_features ** 0.5)
    x.add_(centroids[y])

    # Skewed out-degrees: a Pareto-like draw rescaled to the requested mean.
    raw = torch.rand(n, generator=gen).clamp_min(1e-6).pow(-0.5)
    half = avg_degree / 2.0
    out_deg = torch.floor(raw * (half / raw.mean()) + torch.rand(n, generator=gen)).to(torch.int64)
    num_edges = int(out_deg.sum())
    src = torch.repeat_interleave(torch.arange(n), out_deg, output_size=num_edges)
    # Same-class targets: sort nodes by class and draw inside the class's range.
    order = torch.argsort(y, stable=True)
    class_count = torch.bincount(y, minlength=c)
    class_start = torch.cumsum(class_count, 0) - class_count
    ys = y[src]
    same = order[class_start[ys] + (torch.rand(num_edges, generator=gen) * class_count[ys]).to(torch.int64)
                 .clamp_max(class_count[ys] - 1)]
    uniform = torch.randint(0, n, (num_edges,), generator=gen)
    dst = torch.where(torch.rand(num_edges, generator=gen) < homophily, same, uniform)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)

    perm = torch.randperm(n, generator=gen)
    n_train = max(int(train_fraction * n), c)
    n_val = max(int(val_fraction * n), c)
    train_idx, val_idx, test_idx = perm[:n_train].sort()[0], perm[n_train:n_train + n_val].sort()[0], perm[n_train + n_val:].sort()[0]
    graph = Graph.from_edge_index(edge_index, n)
    ds = Dataset(f"synthetic-{n}", x, y, train_idx, val_idx, test_idx, c, graph, edge_index, 0,
                 {"seed": seed, "avg_degree": avg_degree})
    return ds.to(device)


__all__ = ["Dataset", "load", "synthetic", "DATASETS", "GRAPH_DATASETS", "MLP_DATASETS", "NUM_SPLITS"]
