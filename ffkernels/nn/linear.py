"""Autograd-free layers of the form ``ReLU(prepare(x) W^T + b)``: MLP, GCN and SAGE.

Edge weights: a graph layer reads them from its graph (a weighted :class:`ffkernels.Graph`, or a
PyG ``Data`` with ``edge_weight``), or from an explicit ``edge_weight=`` (``[E]`` in the graph's
``edge_index`` order, overriding the graph's) of ``forward`` / ``prepare`` / ``local_step``.
"""
from __future__ import annotations

import torch

from .. import ops
from ..graph import Graph, as_graph
from .base import LinearLocalLayer
from .functional import normalize_rows


def sage_mean(graph: Graph, x: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """SAGE's neighbour mean ``[N, F]``.

    Unweighted: ``ops.aggregate(graph, x, "mean")`` (``sum_j x_j / in-degree``, 0 for isolated
    nodes). Weighted (``edge_weight``, else the graph's own weights): the weighted mean
    ``sum_j w_ij x_j / sum_j w_ij`` (0 where the incoming weights sum to 0): a convex
    combination of the neighbours for non-negative weights, invariant to the weights' scale,
    equal to the unweighted mean for unit weights. (PyG's ``SAGEConv`` takes no weights;
    ``ops.aggregate(..., "mean", w)`` divides by the edge count instead.)
    """
    if edge_weight is None and graph.edge_weight is None:
        return ops.aggregate(graph, x, reduce="mean")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = ops._resolve_weight(graph, edge_weight, acc)
    row = graph.row.to(torch.int64)
    total = torch.zeros(graph.num_nodes, dtype=acc, device=graph.device).index_add(0, row, w)
    nonzero = total != 0
    inv = torch.where(nonzero, 1.0 / torch.where(nonzero, total, torch.ones_like(total)), torch.zeros_like(total))
    return ops.aggregate(graph._view((w * inv.index_select(0, row)).contiguous()), x, reduce="sum")


class FFLinear(LinearLocalLayer):
    """Forward-learning linear layer: ``h = ReLU(n(x) W^T + b)`` (an MLP layer).

    Args:
        in_features, out_features: sizes; ``weight`` is ``[out_features, in_features]``.
        bias: learn a bias.
        normalize: row normalisation of the input: ``"l2"`` (default), ``"rms"`` or None.
        optimizer: ``params -> torch.optim.Optimizer`` (default Adam lr 1e-3, wd 5e-4).

    Example::

        layer = FFLinear(784, 500, normalize="rms")
        result = layer.local_step(x, positive=is_positive, theta=500.0)  # fused FF step
        h = layer(x)                                                     # inference
    """

    def prepare(self, x: torch.Tensor, graph=None, edge_weight=None) -> torch.Tensor:
        if edge_weight is not None:
            raise ValueError("FFLinear uses no graph, so it has no use for edge_weight")
        return normalize_rows(x, self.normalize)


class FFGCNConv(LinearLocalLayer):
    """Forward-learning GCN layer: ``h = ReLU(Agg_gcn(n(x)) W^T + b)``.

    ``Agg_gcn`` is ``torch_geometric.nn.GCNConv``'s normalised propagation (``normalize=True``,
    ``add_self_loops=True``): ``D^-1/2 (A + I) D^-1/2`` with ``D`` = 1 + weighted in-degree,
    where a node's existing self loops are replaced by one (keeping its weight) instead of adding
    a second; see :func:`ffkernels.ops.aggregate`. ``graph`` is an :class:`ffkernels.Graph`
    (build it once; a weighted one carries its ``edge_weight``), an ``edge_index`` or a PyG
    ``Data`` (its ``edge_weight`` is used). ``edge_weight=`` (``[E]``, ``edge_index`` order)
    overrides the graph's weights.

    Example::

        conv = FFGCNConv(dataset.num_features, 128)
        h = conv(x, graph)                             # or conv(x, graph, edge_weight=w)
        conv.local_step(x, graph, objective=my_loss)   # my_loss(h) -> (loss, dloss/dh)
    """

    def prepare(self, x: torch.Tensor, graph=None, edge_weight=None) -> torch.Tensor:
        graph = as_graph(graph, x.shape[0])
        return ops.aggregate(graph, normalize_rows(x, self.normalize), reduce="gcn", edge_weight=edge_weight)


class FFSAGEConv(LinearLocalLayer):
    """Forward-learning GraphSAGE (mean) layer: ``h = ReLU(n(x) W_self^T + Agg_mean(n(x)) W_neigh^T + b)``.

    The two weights are stored side by side as ``weight = [W_self | W_neigh]``
    (``[out_features, 2 * in_features]``) so the update is one GEMM over ``[n(x) | Agg_mean(n(x))]``.
    With edge weights (the graph's, or ``edge_weight=``) ``Agg_mean`` is the weighted mean
    ``sum_j w_ij x_j / sum_j w_ij`` (:func:`sage_mean`). Self loops and duplicate edges are
    ordinary neighbours (as in PyG's ``SAGEConv``, which adds no self loops).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, normalize: str | None = "l2",
                 optimizer=None):
        super().__init__(in_features, out_features, bias, normalize, optimizer,
                         weight_in_features=2 * in_features if isinstance(in_features, int) else None)

    def prepare(self, x: torch.Tensor, graph=None, edge_weight=None) -> torch.Tensor:
        graph = as_graph(graph, x.shape[0])
        xn = normalize_rows(x, self.normalize)
        return torch.cat([xn, sage_mean(graph, xn, edge_weight)], dim=1)
