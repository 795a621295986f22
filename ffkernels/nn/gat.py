"""Autograd-free graph attention layer (GAT, multi-head, concatenated) with a closed-form update.

Forward (docs/algorithms.md#notation), per head ``k`` with ``W_k x_j`` the head's slice of
``x W^T`` (``x`` row-normalised):

- logits ``e_ij = LeakyReLU_0.2(a_src,k . W_k x_j + a_dst,k . W_k x_i)`` on every edge ``j -> i``
  of the graph with self loops added (an SDDMM-shaped gather);
- ``alpha_ij = softmax_j(e_ij)`` over the incoming edges of ``i`` (a segment softmax);
- ``out_i = sum_j alpha_ij W_k x_j`` (an SpMM with per-edge values), heads concatenated,
  ``h = ReLU(out + b)``.

Backward, by hand, from ``dZ`` (``dloss/dh`` masked by ``h > 0``), with ``g_i = dZ_i`` per head:

- ``dalpha_ij = g_i . W_k x_j``; ``de_ij = alpha_ij (dalpha_ij - sum_l alpha_il dalpha_il)``;
- ``du_ij = de_ij * (1 if u_ij > 0 else 0.2)`` with ``u_ij`` the pre-LeakyReLU logit;
- ``ds_j = sum_i du_ij`` (scatter to sources), ``dt_i = sum_j du_ij`` (scatter to destinations);
- ``d(W x)_j = sum_i alpha_ij g_i + ds_j a_src + dt_j a_dst``;
- ``da_src = sum_j ds_j W_k x_j``, ``da_dst = sum_i dt_i W_k x_i``, ``dW = d(W x)^T n(x)``, ``db = sum_i dZ_i``.

Everything runs on CSR arrays with ``index_select`` / ``index_add_`` / ``scatter_reduce`` (no
autograd); the tests check it against autograd in float64.

Edge weights: none. Like PyG's ``GATConv`` (which has no ``edge_weight`` argument: its attention
coefficients are the edge weights it learns), the layer does not use them, and rather than
ignore them silently it raises ``ValueError`` for a weighted graph (a weighted
:class:`ffkernels.Graph` or a PyG ``Data`` with ``edge_weight``) or an explicit ``edge_weight``.
Pass ``graph.with_edge_weight(None)`` to run it on the unweighted topology on purpose.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .. import ops
from .._validation import check_float, check_positive_int
from ..graph import Graph, as_graph
from .base import LocalLayer, StepResult
from .functional import check_normalize, normalize_rows


class _AttentionEdges:
    """Edge lists of a graph with its self loops replaced by one self loop per node (PyG's
    ``remove_self_loops`` + ``add_self_loops``), sorted by destination; built once per graph."""

    def __init__(self, graph: Graph):
        src = graph.col.to(torch.int64)
        dst = graph.row.to(torch.int64)
        keep = src != dst
        n = graph.num_nodes
        loop = torch.arange(n, device=src.device)
        src = torch.cat([src[keep], loop])
        dst = torch.cat([dst[keep], loop])
        order = torch.sort(dst * max(n, 1) + src, stable=True)[1]
        self.src = src[order].contiguous()
        self.dst = dst[order].contiguous()
        self.num_nodes = n


class FFGATConv(LocalLayer):
    """Forward-learning GAT layer: ``heads`` attention heads of ``out_features / heads`` each, concatenated.

    Args:
        in_features, out_features: sizes; ``out_features`` must be divisible by ``heads``.
        heads: number of heads (default 4).
        bias: learn a bias.
        normalize: input row normalisation ``"l2"`` (default), ``"rms"`` or None.
        negative_slope: LeakyReLU slope of the attention logits (0.2).
        optimizer: ``params -> torch.optim.Optimizer`` (default Adam lr 1e-3, wd 5e-4).

    Parameters: ``weight`` ``[out_features, in_features]``, ``att_src`` and ``att_dst``
    ``[heads, out_features / heads]``, ``bias`` ``[out_features]``.

    Example::

        conv = FFGATConv(dataset.num_features, 128, heads=4)
        h = conv(x, graph)                               # graph: Graph or edge_index
        conv.local_step(x, graph, objective=my_loss)     # my_loss(h) -> (loss, dloss/dh)
    """

    def __init__(self, in_features: int, out_features: int, heads: int = 4, bias: bool = True,
                 normalize: str | None = "l2", negative_slope: float = 0.2, optimizer=None):
        super().__init__(optimizer)
        for name, value in (("in_features", in_features), ("out_features", out_features), ("heads", heads)):
            check_positive_int(value, name)
        if out_features % heads:
            raise ValueError(f"out_features ({out_features}) must be divisible by heads ({heads})")
        check_normalize(normalize)
        self.in_features = in_features
        self.out_features = out_features
        self.heads = heads
        self.head_dim = out_features // heads
        self.normalize = normalize
        self.negative_slope = float(negative_slope)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.att_src = nn.Parameter(torch.empty(heads, self.head_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, self.head_dim))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self._edges_cache: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyG GATConv: glorot for the projection and attention vectors, zero bias.
        nn.init.xavier_uniform_(self.weight)
        for att in (self.att_src, self.att_dst):
            bound = math.sqrt(6.0 / (att.shape[0] + att.shape[1]))
            nn.init.uniform_(att, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _reject_weights(graph, edge_weight=None) -> None:
        if edge_weight is not None or (isinstance(graph, Graph) and graph.edge_weight is not None):
            raise ValueError("FFGATConv does not use edge weights (its attention coefficients replace them, as "
                             "in PyG's GATConv, which takes no edge_weight); got a weighted graph or edge_weight="
                             ". Pass graph.with_edge_weight(None) to use the unweighted topology on purpose")

    def _edges(self, graph: Graph) -> _AttentionEdges:
        self._reject_weights(graph)
        if self._edges_cache is None or self._edges_cache[0] is not graph:
            self._edges_cache = (graph, _AttentionEdges(graph))
        return self._edges_cache[1]

    def _check_input(self, x) -> torch.Tensor:
        check_float(x, "x", ndim=2)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} columns, got shape {tuple(x.shape)}")
        return x

    def prepare(self, x: torch.Tensor, graph=None, edge_weight=None) -> torch.Tensor:
        """The parameter-free part: row normalisation (the attention depends on the weights)."""
        self._reject_weights(graph, edge_weight)
        return normalize_rows(x, self.normalize)

    def _attention(self, xw: torch.Tensor, edges: _AttentionEdges):
        """Per-edge pre-activation logits ``u`` ``[E, H]`` and attention ``alpha`` ``[E, H]``."""
        n, heads = xw.shape[0], self.heads
        xh = xw.view(n, heads, self.head_dim)
        s = (xh * self.att_src).sum(-1)              # [N, H] source term
        t = (xh * self.att_dst).sum(-1)              # [N, H] destination term
        u = s.index_select(0, edges.src) + t.index_select(0, edges.dst)
        e = torch.where(u > 0, u, u * self.negative_slope)
        emax = torch.full((n, heads), float("-inf"), dtype=e.dtype, device=e.device)
        emax = emax.scatter_reduce(0, edges.dst.unsqueeze(1).expand_as(e), e, "amax", include_self=True)
        p = (e - emax.index_select(0, edges.dst)).exp_()
        denom = torch.zeros((n, heads), dtype=e.dtype, device=e.device).index_add_(0, edges.dst, p)
        alpha = p.div_(denom.index_select(0, edges.dst))
        return u, alpha

    def _propagate(self, xw: torch.Tensor, alpha: torch.Tensor, edges: _AttentionEdges) -> torch.Tensor:
        n = xw.shape[0]
        xh = xw.view(n, self.heads, self.head_dim)
        msg = xh.index_select(0, edges.src) * alpha.unsqueeze(-1)
        out = torch.zeros_like(xh).index_add_(0, edges.dst, msg)
        return out.view(n, self.out_features)

    @torch.no_grad()
    def transform(self, prepared: torch.Tensor, graph) -> torch.Tensor:
        """``ReLU(GAT(prepared) + b)`` for an already normalised input."""
        graph = as_graph(graph, prepared.shape[0])
        edges = self._edges(graph)
        xw = prepared @ self.weight.t()
        _, alpha = self._attention(xw, edges)
        z = self._propagate(xw, alpha, edges)
        if self.bias is not None:
            z = z + self.bias
        return torch.relu_(z)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, graph, edge_weight=None) -> torch.Tensor:
        graph = as_graph(graph, x.shape[0])
        self._reject_weights(graph, edge_weight)
        if x.shape[0] != graph.num_nodes:
            raise ValueError(f"x has {x.shape[0]} rows but graph has {graph.num_nodes} nodes")
        return self.transform(self.prepare(self._check_input(x), graph), graph)

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def gradients(self, prepared: torch.Tensor, graph, objective: Callable):
        """Forward, ``objective(h) -> (loss, dloss/dh)``, closed-form gradients (no update).

        Returns ``(loss, h, grads)`` with ``grads`` a ``{parameter name: gradient}`` dict.
        """
        graph = as_graph(graph, prepared.shape[0])
        edges = self._edges(graph)
        n, heads, dh = prepared.shape[0], self.heads, self.head_dim
        xw = prepared @ self.weight.t()
        u, alpha = self._attention(xw, edges)
        z = self._propagate(xw, alpha, edges)
        if self.bias is not None:
            z = z + self.bias
        h = torch.relu(z)
        total, grad_h = objective(h)
        grad_z = grad_h * (z > 0)
        g = grad_z.view(n, heads, dh)
        xh = xw.view(n, heads, dh)
        xh_src = xh.index_select(0, edges.src)                                  # [E, H, dh]
        g_dst = g.index_select(0, edges.dst)                                    # [E, H, dh]
        dalpha = (g_dst * xh_src).sum(-1)                                       # [E, H]
        weighted = torch.zeros((n, heads), dtype=z.dtype, device=z.device).index_add_(
            0, edges.dst, alpha * dalpha)
        de = alpha * (dalpha - weighted.index_select(0, edges.dst))
        du = torch.where(u > 0, de, de * self.negative_slope)
        ds = torch.zeros((n, heads), dtype=z.dtype, device=z.device).index_add_(0, edges.src, du)
        dt = torch.zeros((n, heads), dtype=z.dtype, device=z.device).index_add_(0, edges.dst, du)
        dxh = torch.zeros_like(xh).index_add_(0, edges.src, g_dst * alpha.unsqueeze(-1))
        dxh += ds.unsqueeze(-1) * self.att_src + dt.unsqueeze(-1) * self.att_dst
        grads = {
            "weight": dxh.view(n, self.out_features).t() @ prepared,
            "att_src": (ds.unsqueeze(-1) * xh).sum(0),
            "att_dst": (dt.unsqueeze(-1) * xh).sum(0),
            "bias": grad_z.sum(0) if self.bias is not None else None,
        }
        return total, h, grads

    @torch.no_grad()
    def step_prepared(self, prepared: torch.Tensor, graph, objective: Callable | None = None, *,
                      positive: torch.Tensor | None = None, theta: float = 2.0, goodness: str = "sum",
                      loss: str = "ff", temperature: float = 1.0, pairs: torch.Tensor | None = None,
                      alpha: float = 4.0) -> StepResult:
        """One local update from a normalised input: ``objective(h) -> (loss, grad_h)``, or the
        goodness losses via ``positive`` (FF / SymBa, see :func:`ffkernels.ops.goodness_loss_grad`)."""
        good = None
        if objective is None:
            if positive is None:
                raise ValueError("local_step needs either an objective or positive flags")

            def objective(h):
                nonlocal good
                total, good, grad = ops.goodness_loss_grad(h, positive, theta=theta, goodness=goodness, loss=loss,
                                                           temperature=temperature, pairs=pairs, alpha=alpha)
                return total, grad
        total, h, grads = self.gradients(prepared, graph, objective)
        self.apply_gradients(grads)
        return StepResult(float(total), h, good)

    def local_step(self, x: torch.Tensor, graph, objective: Callable | None = None, *, edge_weight=None,
                   **kwargs) -> StepResult:
        """Normalise ``x`` and take one local update; see :meth:`step_prepared`."""
        graph = as_graph(graph, x.shape[0])
        self._reject_weights(graph, edge_weight)
        return self.step_prepared(self.prepare(self._check_input(x), graph), graph, objective, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, heads={self.heads}, normalize={self.normalize!r}"
