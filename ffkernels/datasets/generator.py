"""A seeded random graph with learnable labels (for scaling benchmarks and tests)."""
from __future__ import annotations

import torch

from ..graph import Graph
from .dataset import Dataset


def synthetic(num_nodes: int = 10_000, avg_degree: float = 10.0, num_classes: int = 8, num_features: int = 128,
              seed: int = 0, homophily: float = 0.7, feature_noise: float = 1.0, train_fraction: float = 0.1,
              val_fraction: float = 0.1, device="cpu", locality: float = 0.0,
              community_size: int = 1000) -> Dataset:
    """A seeded random graph with learnable labels, from 10^3 to 10^7 nodes.

    Labels are uniform over ``num_classes``. Features are a class centroid plus Gaussian noise
    (``feature_noise`` times a unit-norm centroid scale). Edges: each node draws a skewed
    (Zipf-like) number of out-edges averaging ``avg_degree / 2``; with probability
    ``homophily`` the target is a node of the same class, else a uniform node; every edge is
    stored in both directions (so the average in-degree is about ``avg_degree``).
    Memory: about ``4 * num_nodes * num_features`` bytes of features plus 24 bytes per edge.

    ``locality`` (default 0: the graph above, bitwise) plants communities, as real graphs have
    them: the nodes are cut into contiguous id blocks of ``community_size`` nodes, and each
    edge's target is, with probability ``locality``, redrawn inside the source's block (a
    same-class node of the block with probability ``homophily``, else a uniform node of the
    block); the other edges keep the target drawn above (anywhere in the graph). Labels stay
    uniform in every block, so partitions along the blocks keep every class.
    """
    for arg, val, lo in (("num_nodes", num_nodes, 2), ("num_classes", num_classes, 2), ("num_features", num_features, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{arg} must be an int >= {lo}, got {val!r}")
    if not (avg_degree > 0):
        raise ValueError(f"avg_degree must be > 0, got {avg_degree!r}")
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily!r}")
    if isinstance(locality, bool) or not isinstance(locality, (int, float)) or not 0.0 <= locality <= 1.0:
        raise ValueError(f"locality must be in [0, 1], got {locality!r}")
    if isinstance(community_size, bool) or not isinstance(community_size, int) or community_size < 1:
        raise ValueError(f"community_size must be an int >= 1, got {community_size!r}")
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
    if locality > 0:  # planted communities; with locality 0 no extra number is drawn (bitwise as before)
        dst = _community_targets(src, dst, y, c, n, homophily, locality, community_size, gen)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)

    perm = torch.randperm(n, generator=gen)
    n_train = max(int(train_fraction * n), c)
    n_val = max(int(val_fraction * n), c)
    train_idx, val_idx, test_idx = perm[:n_train].sort()[0], perm[n_train:n_train + n_val].sort()[0], perm[n_train + n_val:].sort()[0]
    graph = Graph.from_edge_index(edge_index, n)
    extra = {"seed": seed, "avg_degree": avg_degree}
    name = f"synthetic-{n}"
    if locality > 0:
        extra.update(locality=locality, community_size=community_size)
        name += f"-local{locality:g}"
    ds = Dataset(name, x, y, train_idx, val_idx, test_idx, c, graph, edge_index, 0, extra, source="synthetic")
    return ds.to(device)


def _community_targets(src, dst, y, c, n, homophily, locality, community_size, gen):
    """``dst`` with a ``locality`` share of the targets redrawn inside the source's id block."""
    num_edges = src.numel()
    block = torch.arange(n) // community_size
    key = block * c + y                       # (block, class) groups
    order = torch.argsort(key, stable=True)
    count = torch.bincount(key, minlength=int(key.max()) + 1)
    start = torch.cumsum(count, 0) - count
    ks = key[src]                             # the source's own group is never empty
    same = order[start[ks] + (torch.rand(num_edges, generator=gen) * count[ks]).to(torch.int64)
                 .clamp_max(count[ks] - 1)]
    first = block[src] * community_size
    size = (n - first).clamp_max(community_size)
    anywhere = first + (torch.rand(num_edges, generator=gen) * size).to(torch.int64).clamp_max(size - 1)
    local = torch.where(torch.rand(num_edges, generator=gen) < homophily, same, anywhere)
    return torch.where(torch.rand(num_edges, generator=gen) < locality, local, dst)
