"""A seeded random graph with learnable labels (for scaling benchmarks and tests)."""
from __future__ import annotations

import torch

from ..graph import Graph
from .dataset import Dataset


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
                 {"seed": seed, "avg_degree": avg_degree}, source="synthetic")
    return ds.to(device)
