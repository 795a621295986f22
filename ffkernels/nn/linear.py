"""Autograd-free layers of the form ``ReLU(prepare(x) W^T + b)``: MLP, GCN and SAGE."""
from __future__ import annotations

import torch

from .. import ops
from ..graph import as_graph
from .base import LinearLocalLayer
from .functional import normalize_rows


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

    def prepare(self, x: torch.Tensor, graph=None) -> torch.Tensor:
        return normalize_rows(x, self.normalize)


class FFGCNConv(LinearLocalLayer):
    """Forward-learning GCN layer: ``h = ReLU(Agg_gcn(n(x)) W^T + b)``.

    ``Agg_gcn = D^-1/2 (A + I) D^-1/2`` is applied on the fly by the fused kernel. ``graph``
    is an :class:`ffkernels.Graph` (build it once), an ``edge_index`` or a PyG ``Data``.

    Example::

        conv = FFGCNConv(dataset.num_features, 128)
        h = conv(x, graph)
        conv.local_step(x, graph, objective=my_loss)   # my_loss(h) -> (loss, dloss/dh)
    """

    def prepare(self, x: torch.Tensor, graph=None) -> torch.Tensor:
        graph = as_graph(graph, x.shape[0])
        return ops.aggregate(graph, normalize_rows(x, self.normalize), reduce="gcn")


class FFSAGEConv(LinearLocalLayer):
    """Forward-learning GraphSAGE (mean) layer: ``h = ReLU(n(x) W_self^T + Agg_mean(n(x)) W_neigh^T + b)``.

    The two weights are stored side by side as ``weight = [W_self | W_neigh]``
    (``[out_features, 2 * in_features]``) so the update is one GEMM over ``[n(x) | Agg_mean(n(x))]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, normalize: str | None = "l2",
                 optimizer=None):
        super().__init__(in_features, out_features, bias, normalize, optimizer,
                         weight_in_features=2 * in_features if isinstance(in_features, int) else None)

    def prepare(self, x: torch.Tensor, graph=None) -> torch.Tensor:
        graph = as_graph(graph, x.shape[0])
        xn = normalize_rows(x, self.normalize)
        return torch.cat([xn, ops.aggregate(graph, xn, reduce="mean")], dim=1)
