"""The backpropagation baseline, ``bp`` (docs/algorithms.md#bp): autograd, for comparison only.

``layers`` graph convolutions (GCN, SAGE-mean or 4-head GAT) of width ``hidden`` with ReLU and
dropout, then a linear classifier; cross-entropy on the training nodes, full batch, Adam, early
stopping on validation accuracy (the engine's). The first layer's aggregation of the fixed input
features is computed once (``A (X W) = (A X) W``), the way a user would write a fast baseline.

Edge weights (``Dataset.edge_weight``) are used by GCN and SAGE with the forward layers'
semantics (the sparse operators equal ``ops.aggregate(graph, x, "gcn")`` — PyG's ``GCNConv``
normalisation — and :func:`ffkernels.nn.linear.sage_mean`); GAT does not use them and raises.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..nn.linear import sage_mean
from ..nn.optim import optimizer_factory
from ..train.metrics import accuracy
from ..train.options import Option
from ..train.registry import Model, Trainer, register

BP_MODELS = ("gcn", "sage", "gat")


def _sparse_operator(graph, reduce: str, dtype=torch.float32) -> torch.Tensor:
    """``Agg`` as a sparse COO matrix ``[N, N]`` (autograd flows to the dense operand), with the
    graph's edge weights if it has them: ``gcn`` is ``ops.aggregate(graph, ., "gcn")`` (PyG's
    ``GCNConv`` normalisation, self loops replaced by one per node), ``mean`` is
    :func:`~ffkernels.nn.linear.sage_mean` (the weighted mean with weights)."""
    n = graph.num_nodes
    row = graph.row.to(torch.int64)
    col = graph.col.to(torch.int64)
    w = None if graph.edge_weight is None else graph.edge_weight.to(dtype)
    if reduce == "gcn":
        if graph.has_self_loops:
            loop_graph, values = ops.gcn_edge_norm(graph, w, dtype)
            row, col = loop_graph.row.to(torch.int64), loop_graph.col.to(torch.int64)
        else:
            d = ops.gcn_deg_inv_sqrt(graph, w, dtype).to(dtype)
            values = d[row] * d[col] if w is None else d[row] * w * d[col]
            loops = torch.arange(n, device=row.device)
            row, col = torch.cat([row, loops]), torch.cat([col, loops])
            values = torch.cat([values, d * d])
    elif reduce == "mean":
        if w is None:
            deg = graph.in_degree.to(dtype).clamp_min(1)
            values = 1.0 / deg[row]
        else:
            total = torch.zeros(n, dtype=dtype, device=row.device).index_add(0, row, w)
            inv = torch.where(total != 0, 1.0 / torch.where(total != 0, total, torch.ones_like(total)),
                              torch.zeros_like(total))
            values = w * inv[row]
    else:
        raise ValueError(f"reduce must be 'gcn' or 'mean', got {reduce!r}")
    return torch.sparse_coo_tensor(torch.stack([row, col]), values, (n, n), check_invariants=False).coalesce()


class _GCN(nn.Module):
    def __init__(self, fin, fout):
        super().__init__()
        self.lin = nn.Linear(fin, fout)

    def forward(self, x, ops_, pre_aggregated=False):
        if pre_aggregated:
            return self.lin(x)
        return torch.sparse.mm(ops_["gcn"], x @ self.lin.weight.t()) + self.lin.bias


class _SAGE(nn.Module):
    def __init__(self, fin, fout):
        super().__init__()
        self.lin_self = nn.Linear(fin, fout)
        self.lin_neigh = nn.Linear(fin, fout, bias=False)

    def forward(self, x, ops_, pre_aggregated=False):
        if pre_aggregated:  # x = [x | mean(x)]
            f = x.shape[1] // 2
            return self.lin_self(x[:, :f]) + self.lin_neigh(x[:, f:])
        return self.lin_self(x) + torch.sparse.mm(ops_["mean"], x @ self.lin_neigh.weight.t())


class _GAT(nn.Module):
    """Four-head GAT with concatenated heads (autograd through the same edge ops as FFGATConv)."""

    def __init__(self, fin, fout, heads=4):
        super().__init__()
        self.heads, self.dh = heads, fout // heads
        self.lin = nn.Linear(fin, fout, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, self.dh))
        self.att_dst = nn.Parameter(torch.empty(heads, self.dh))
        self.bias = nn.Parameter(torch.zeros(fout))
        for a in (self.att_src, self.att_dst):
            bound = math.sqrt(6.0 / (a.shape[0] + a.shape[1]))
            nn.init.uniform_(a, -bound, bound)

    def forward(self, x, ops_, pre_aggregated=False):
        src, dst = ops_["gat_edges"]
        n = x.shape[0]
        xh = self.lin(x).view(n, self.heads, self.dh)
        u = (xh * self.att_src).sum(-1)[src] + (xh * self.att_dst).sum(-1)[dst]
        e = F.leaky_relu(u, 0.2)
        emax = torch.full((n, self.heads), float("-inf"), dtype=e.dtype, device=e.device).scatter_reduce(
            0, dst.unsqueeze(1).expand_as(e), e.detach(), "amax", include_self=True)
        p = (e - emax[dst]).exp()
        alpha = p / torch.zeros(n, self.heads, dtype=e.dtype, device=e.device).index_add(0, dst, p)[dst]
        out = torch.zeros_like(xh).index_add(0, dst, xh[src] * alpha.unsqueeze(-1))
        return out.reshape(n, -1) + self.bias


def _graph_operators(model, graph, device):
    out = {}
    if model == "gcn":
        out["gcn"] = _sparse_operator(graph, "gcn").to(device)
    elif model == "sage":
        out["mean"] = _sparse_operator(graph, "mean").to(device)
    else:
        if graph.edge_weight is not None:
            raise ValueError("bp with model='gat': GAT does not use edge weights (its attention replaces them, as "
                             "in PyG's GATConv), and the dataset has edge_weight; use model='gcn' or 'sage', or "
                             "drop the weights (Dataset.edge_weight = None)")
        src, dst = graph.col.to(torch.int64), graph.row.to(torch.int64)
        keep = src != dst
        loops = torch.arange(graph.num_nodes, device=src.device)
        out["gat_edges"] = (torch.cat([src[keep], loops]).to(device), torch.cat([dst[keep], loops]).to(device))
    return out


def _first_input(model, graph, x):
    """The first layer's aggregated constant input (None for GAT, whose aggregation has weights)."""
    with torch.no_grad():
        if model == "gcn":
            return ops.aggregate(graph, x, reduce="gcn")
        if model == "sage":
            return torch.cat([x, sage_mean(graph, x)], dim=1)
    return None


class BPModel(Model):
    """``layers`` convolutions of width ``hidden`` (ReLU, dropout) and a linear classifier."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        cls = {"gcn": _GCN, "sage": _SAGE, "gat": _GAT}[options["model"]]
        widths = [dims["num_features"]] + [options["hidden"]] * options["layers"]
        self.layers = nn.ModuleList(cls(widths[i], widths[i + 1]) for i in range(options["layers"]))
        self.head = nn.Linear(options["hidden"], dims["num_classes"])
        self.dropout = options["dropout"]

    def forward(self, x, ops_, first_input=None, hidden: list | None = None):
        h = x
        for i, conv in enumerate(self.layers):
            if i == 0 and first_input is not None:
                h = conv(first_input, ops_, pre_aggregated=True)
            else:
                h = conv(h, ops_)
            h = F.dropout(F.relu(h), self.dropout, self.training)
            if hidden is not None:
                hidden.append(h)
        return self.head(h)

    def graph_inputs(self, data):
        """The sparse operators and the pre-aggregated first input of ``data`` (constants), with
        ``data.edge_weight`` if it has one."""
        graph = data.graph
        weight = getattr(data, "edge_weight", None)
        if weight is not None:
            graph = graph.with_edge_weight(weight.to(graph.device))
        return _graph_operators(self.options["model"], graph, data.x.device), \
            _first_input(self.options["model"], graph, data.x)

    @torch.no_grad()
    def logits(self, data, hidden: list | None = None) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            ops_, first = self.graph_inputs(data)
            return self(data.x, ops_, first, hidden)
        finally:
            self.train(was)

    @torch.no_grad()
    def predict(self, data) -> torch.Tensor:
        return self.logits(data).argmax(dim=1)

    @torch.no_grad()
    def embed(self, data) -> list:
        hidden = []
        self.logits(data, hidden)
        return hidden

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        out = self.logits(data)
        return {name: accuracy(out, data.y, idx) for name, idx in
                (("val_accuracy", data.val_idx), ("test_accuracy", data.test_idx), ("train_accuracy", data.train_idx))}




@register("bp", task="node", models=BP_MODELS, schedule="simultaneous", model=BPModel, edge_weights=True,
          defaults={"lr": 1e-2, "weight_decay": 5e-4},
          options=(Option("dropout", float, 0.5, "dropout after every convolution", minimum=0.0, maximum=0.99),),
          description="backpropagation baseline (autograd) with the same architectures, for comparison")
class BPTrainer(Trainer):
    """One stage: every epoch is one full-batch Adam step through autograd."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.optimizer = optimizer_factory("adam", options["lr"], options["weight_decay"], fused=False)(
            model.parameters())
        self.ops, self.first = model.graph_inputs(data)
        self.y_train = data.y[data.train_idx]

    def stage_module(self, stage):
        return self.model

    def stage_optimizers(self, stage):
        return [self.optimizer]

    def train_epoch(self, stage, epoch):
        model, data = self.model, self.data
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = model(data.x, self.ops, self.first)
        loss = F.cross_entropy(out[data.train_idx], self.y_train)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validate(self, stage):
        return self.model.evaluate(self.data)["val_accuracy"]

    def probe(self, stage):
        return self.model.evaluate(self.data)["test_accuracy"]


__all__ = ["BPModel", "BPTrainer", "BP_MODELS"]
