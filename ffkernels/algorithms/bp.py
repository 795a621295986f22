"""The backpropagation baseline (autograd; for comparison only), same architectures as SF.

``bp``: ``config.layers`` graph convolutions (GCN, SAGE-mean or 4-head GAT) of width
``config.hidden`` with ReLU and dropout, then a linear classifier; cross-entropy on the training
nodes, full batch, Adam (lr 1e-2 unless ``--lr`` is given, weight decay ``config.weight_decay``),
early stopping on validation accuracy every ``config.val_every`` epochs with ``config.patience``
validations, best state restored. The first layer's aggregation of the fixed input features is
computed once (``A (X W) = (A X) W``), the way a user would write a fast baseline.

``config.extra``: ``dropout`` (0.5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .checkpoint import load_checkpoint, optimizer_state_to, save_checkpoint
from .common import accuracy, rng_state, seed_everything, set_rng_state
from .early_stopping import EarlyStopping
from .greedy import train_layer
from .progress import Progress
from .registry import TrainConfig, register_algorithm

BP_MODELS = ("gcn", "sage", "gat")
DEFAULT_LR = 1e-2


def _sparse_operator(graph, reduce: str, dtype=torch.float32) -> torch.Tensor:
    """``Agg`` as a sparse COO matrix ``[N, N]`` (autograd flows to the dense operand)."""
    n = graph.num_nodes
    row = graph.row.to(torch.int64)
    col = graph.col.to(torch.int64)
    if reduce == "gcn":
        d = graph.deg_inv_sqrt.to(dtype)
        loops = torch.arange(n, device=row.device)
        row, col = torch.cat([row, loops]), torch.cat([col, loops])
        values = d[row] * d[col]
    elif reduce == "mean":
        deg = graph.in_degree.to(dtype).clamp_min(1)
        values = 1.0 / deg[row]
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


class BPModel(nn.Module):
    """``layers`` convolutions of width ``hidden`` (ReLU, dropout) and a linear classifier."""

    def __init__(self, model: str, in_features: int, hidden: int, num_classes: int, layers: int, dropout: float):
        super().__init__()
        cls = {"gcn": _GCN, "sage": _SAGE, "gat": _GAT}[model]
        dims = [in_features] + [hidden] * layers
        self.model = model
        self.convs = nn.ModuleList(cls(dims[i], dims[i + 1]) for i in range(layers))
        self.head = nn.Linear(hidden, num_classes)
        self.dropout = dropout

    def forward(self, x, ops_, first_input=None):
        h = x
        for i, conv in enumerate(self.convs):
            if i == 0 and first_input is not None:
                h = conv(first_input, ops_, pre_aggregated=True)
            else:
                h = conv(h, ops_)
            h = F.dropout(F.relu(h), self.dropout, self.training)
        return self.head(h)


def _graph_operators(model, graph, device):
    out = {}
    if model == "gcn":
        out["gcn"] = _sparse_operator(graph, "gcn").to(device)
    elif model == "sage":
        out["mean"] = _sparse_operator(graph, "mean").to(device)
    else:
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
            return torch.cat([x, ops.aggregate(graph, x, reduce="mean")], dim=1)
    return None


@register_algorithm("bp", task="node", models=BP_MODELS,
                    description="backpropagation baseline (autograd) with the same architectures, for comparison")
def run_bp(config: TrainConfig, data, progress: Progress) -> dict:
    return _run_bp(config, data, progress)


def _run_bp(config: TrainConfig, data, progress: Progress) -> dict:
    if config.model not in BP_MODELS:
        raise ValueError(f"model must be one of {list(BP_MODELS)} for algo 'bp', got {config.model!r}")
    if data.graph is None:
        raise ValueError(f"dataset {data.name!r} has no graph; algo 'bp' needs a graph dataset")
    seed_everything(config.seed)
    lr = DEFAULT_LR if config.extra.get("default_lr") else config.lr
    dropout = float(config.extra.get("dropout", 0.5))
    device = data.x.device
    model = BPModel(config.model, data.num_features, config.hidden, data.num_classes, config.layers, dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    ops_ = _graph_operators(config.model, data.graph, device)
    first = _first_input(config.model, data.graph, data.x)
    y_train = data.y[data.train_idx]
    stopper = EarlyStopping(config.patience)
    start_epoch, total = 1, 0
    run = {k: getattr(config, k) for k in ("dataset", "model", "layers", "hidden", "split", "seed")}
    if config.resume:
        ckpt = load_checkpoint(config.resume, "bp", run)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(optimizer_state_to(ckpt["optimizer"], device))
        stopper.load_state_dict(ckpt["stopper"])
        start_epoch = total = ckpt["epoch"]
        start_epoch += 1
        set_rng_state(ckpt["rng"])

    def step(epoch):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(data.x, ops_, first)
        loss = F.cross_entropy(out[data.train_idx], y_train)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate():
        model.eval()
        return model(data.x, ops_, first)

    def validate():
        return accuracy(evaluate(), data.y, data.val_idx)

    interrupted = []

    def on_epoch_end(epoch, stopper):
        nonlocal total
        total += 1
        if config.stop_after_epochs is not None and total >= config.stop_after_epochs:
            if config.save:
                save_checkpoint(config.save, {"algo": "bp", "run": run, "epoch": epoch, "model": model.state_dict(),
                                              "optimizer": optimizer.state_dict(), "stopper": stopper.state_dict(),
                                              "rng": rng_state()})
            interrupted.append(epoch)
            return True
        return False

    report = train_layer(step, validate, model, epochs=config.epochs, val_every=config.val_every,
                         patience=config.patience, progress=progress, label="bp", start_epoch=start_epoch,
                         stopper=stopper, on_epoch_end=on_epoch_end)
    if interrupted:
        progress.close()
        return {"epochs_per_layer": [report.epochs], "total_epochs": total, "stopped": True,
                "val_accuracy": float("nan"), "test_accuracy": float("nan")}
    out = evaluate()
    return {"epochs_per_layer": [report.epochs], "total_epochs": report.epochs, "stopped": False,
            "val_accuracy": accuracy(out, data.y, data.val_idx), "test_accuracy": accuracy(out, data.y, data.test_idx),
            "train_accuracy": accuracy(out, data.y, data.train_idx), "lr": lr, "dropout": dropout}
