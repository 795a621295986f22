"""What the graph algorithms share: virtual nodes, building a layer by model name, and the
memory-light forward of a frozen layer.

- :func:`augment_with_virtual_nodes`: ForwardGNN's virtual-node graph (``docs/algorithms.md#sf``);
- :func:`build_layer`: one forward-learning layer by model name (``gcn``, ``sage``, ``gat``, ``mlp``);
- :func:`project_forward`: ``layer(x, graph)`` computed projection-first, without ``[N, F_in]`` temporaries.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops
from ..graph import Graph, as_graph
from ..nn import FFGCNConv, FFSAGEConv
from ..nn.linear import sage_mean
from ..nn.optim import optimizer_factory

GRAPH_MODELS = ("gcn", "sage", "gat")


@dataclass
class VirtualGraph:
    """A graph augmented with ``C`` virtual nodes (ids ``N .. N + C - 1``).

    Attributes:
        x: ``[N + C, F]`` features: the original rows, then the virtual nodes' fixed features.
        graph: the augmented :class:`ffkernels.Graph` (CSR by destination), built once.
        edge_index: ``[2, E + 2 L]`` int64: the original edges, then ``node -> virtual`` and
            ``virtual -> node`` for each of the ``L`` linked nodes.
        virtual_idx: ``[C]`` int64, ``arange(N, N + C)``: row ``c`` is class ``c``'s node.
        num_real: ``N``, the number of original nodes.
        edge_weight: ``[E + 2 L]`` weights in :attr:`edge_index` order (the original edges'
            weights, then 1 for every virtual link), or None for an unweighted graph; the
            :attr:`graph` carries them (so every layer aggregates with them).
    """
    x: torch.Tensor
    graph: Graph
    edge_index: torch.Tensor
    virtual_idx: torch.Tensor
    num_real: int
    edge_weight: torch.Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_virtual(self) -> int:
        return int(self.virtual_idx.numel())


def virtual_node_features(num_classes: int, num_features: int, seed: int = 0, device="cpu",
                          dtype=torch.float32) -> torch.Tensor:
    """Fixed N(0, 1) features ``[C, F]`` for the virtual nodes, drawn from their own generator.

    A dedicated ``torch.Generator`` keeps them independent of the global RNG (so parameter
    initialisation and these features do not shift each other when one changes).
    """
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    return torch.randn(num_classes, num_features, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def augment_with_virtual_nodes(x: torch.Tensor, edge_index: torch.Tensor, link_idx: torch.Tensor,
                               link_class: torch.Tensor, num_classes: int, *,
                               virtual_features: torch.Tensor | None = None, seed: int = 0,
                               edge_weight: torch.Tensor | None = None) -> VirtualGraph:
    """Add one virtual node per class and link ``link_idx[k] <-> v_{link_class[k]}`` (both ways).

    ``docs/algorithms.md#sf`` (SF: ``link_idx`` = training nodes, ``link_class`` = their labels) and
    ``#ff-vn`` (the negative graph passes wrong classes as ``link_class``).

    Args:
        x: ``[N, F]`` node features.
        edge_index: ``[2, E]`` original edges (source, destination).
        link_idx: ``[L]`` int node ids to connect to a virtual node.
        link_class: ``[L]`` int class of each linked node, in ``[0, num_classes)``.
        num_classes: ``C``, the number of virtual nodes.
        virtual_features: optional ``[C, F]`` features for the virtual nodes; default
            :func:`virtual_node_features` with ``seed``.
        seed: seed of the default virtual features.
        edge_weight: optional ``[E]`` weights of the original edges (``edge_index`` order); the
            virtual links get weight 1 (PyG's fill value for added self loops: a virtual link
            counts like one unit edge in every degree).

    Returns:
        a :class:`VirtualGraph` (the graph is built once; reuse it for every layer).

    Raises:
        ValueError: shapes or class ids inconsistent.
    """
    n, f = x.shape
    link_idx = link_idx.to(torch.int64).reshape(-1)
    link_class = link_class.to(torch.int64).reshape(-1)
    if link_idx.numel() != link_class.numel():
        raise ValueError(f"link_idx ({link_idx.numel()}) and link_class ({link_class.numel()}) must have "
                         f"the same length")
    if link_class.numel() and (int(link_class.min()) < 0 or int(link_class.max()) >= num_classes):
        raise ValueError(f"link_class must be in [0, {num_classes})")
    if link_idx.numel() and (int(link_idx.min()) < 0 or int(link_idx.max()) >= n):
        raise ValueError(f"link_idx must be in [0, {n})")
    if virtual_features is None:
        virtual_features = virtual_node_features(num_classes, f, seed, x.device, x.dtype)
    elif tuple(virtual_features.shape) != (num_classes, f):
        raise ValueError(f"virtual_features must have shape [{num_classes}, {f}], got "
                         f"{tuple(virtual_features.shape)}")
    device = x.device
    virtual_idx = torch.arange(n, n + num_classes, device=device)
    v = virtual_idx[link_class.to(device)]
    li = link_idx.to(device)
    edge_index_aug = torch.cat([edge_index.to(device=device, dtype=torch.int64),
                                torch.stack([li, v]), torch.stack([v, li])], dim=1)
    x_aug = torch.cat([x, virtual_features.to(device=device, dtype=x.dtype)], dim=0)
    weight_aug = None
    if edge_weight is not None:
        edge_weight = edge_weight.to(device).reshape(-1)
        if edge_weight.numel() != edge_index.shape[1] or not edge_weight.is_floating_point():
            raise ValueError(f"edge_weight must be a float tensor with one weight per edge ({edge_index.shape[1]}), "
                             f"got {edge_weight.dtype} {tuple(edge_weight.shape)}")
        weight_aug = torch.cat([edge_weight, torch.ones(2 * li.numel(), dtype=edge_weight.dtype, device=device)])
    graph = Graph.from_edge_index(edge_index_aug, n + num_classes, edge_weight=weight_aug)
    return VirtualGraph(x_aug, graph, edge_index_aug, virtual_idx, n, weight_aug)


def build_layer(model: str, in_features: int, out_features: int, *, lr: float = 1e-3,
                weight_decay: float = 5e-4, normalize: str | None = "l2", heads: int = 4):
    """One forward-learning layer by model name: ``gcn`` (FFGCNConv), ``sage`` (FFSAGEConv),
    ``gat`` (FFGATConv, ``heads`` heads) or ``mlp`` (FFLinear), with its own Adam optimiser."""
    from .. import nn as ffnn
    opt = optimizer_factory("adam", lr, weight_decay)
    if model == "gcn":
        return ffnn.FFGCNConv(in_features, out_features, normalize=normalize, optimizer=opt)
    if model == "sage":
        return ffnn.FFSAGEConv(in_features, out_features, normalize=normalize, optimizer=opt)
    if model == "gat":
        return ffnn.FFGATConv(in_features, out_features, heads=heads, normalize=normalize, optimizer=opt)
    if model == "mlp":
        return ffnn.FFLinear(in_features, out_features, normalize=normalize, optimizer=opt)
    raise ValueError(f"model must be one of ['gat', 'gcn', 'mlp', 'sage'], got {model!r}")


def _row_scale(x: torch.Tensor, kind: str | None, eps: float = 1e-8) -> torch.Tensor | None:
    """``[N, 1]`` factors with ``n(x) = scale * x`` (None: no normalisation)."""
    if kind is None or kind == "none":
        return None
    if kind == "l2":
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    elif kind == "rms":
        norm = x.pow(2).mean(dim=1, keepdim=True).sqrt_()
    else:
        raise ValueError(f"normalize must be 'l2', 'rms' or None, got {kind!r}")
    return norm.add_(eps).reciprocal_()


@torch.no_grad()
def project_forward(layer, x: torch.Tensor, graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x, graph, edge_weight)`` computed projection-first: ``Agg(n(x)) W^T = Agg(s * (x W^T))``.

    The row normalisation ``n(x) = s * x`` commutes with the projection, so the only temporaries
    are ``[N, D_out]`` (never ``[N, F_in]``: 2,879 columns on Cora-ML) and the aggregation moves
    ``D_out`` columns instead of ``F_in``. Equal to ``layer(x, graph)`` up to float rounding.
    The aggregation uses the graph's edge weights, or ``edge_weight`` (``edge_index`` order).
    GAT (whose aggregation has weights) runs its own forward.
    """
    if not isinstance(layer, (FFGCNConv, FFSAGEConv)):
        return layer(x, graph) if edge_weight is None else layer(x, graph, edge_weight)
    graph = as_graph(graph, x.shape[0])
    scale = _row_scale(x, layer.normalize)
    w = layer.weight
    if isinstance(layer, FFGCNConv):
        u = x @ w.t()
        if scale is not None:
            u.mul_(scale)
        z = ops.aggregate(graph, u, reduce="gcn", edge_weight=edge_weight)
    else:
        f = layer.in_features
        z = x @ w[:, :f].t()
        u = x @ w[:, f:].t()
        if scale is not None:
            z.mul_(scale)
            u.mul_(scale)
        z += sage_mean(graph, u, edge_weight)
    if layer.bias is not None:
        z += layer.bias
    return z.relu_()


__all__ = ["GRAPH_MODELS", "VirtualGraph", "virtual_node_features", "augment_with_virtual_nodes", "build_layer",
           "project_forward"]
