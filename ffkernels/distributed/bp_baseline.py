"""A full-graph backpropagation GCN on a node-partitioned graph: the distributed BP baseline.

This is how published full-graph systems (CAGNET, BNS-GCN without boundary sampling, the
``partition-parallel'' family) train a GCN, written here on our own pieces so that the
distributed benchmark compares forward learning with backpropagation on the SAME partition
files, the same halo exchange and the same byte accounting:

- every rank holds its part (:func:`~ffkernels.distributed.load_partition`) and a replica of
  the model (``layers`` GCN convolutions of width ``hidden`` with ReLU, then a linear
  classifier; no dropout, so that it is exactly comparable with one process);
- **every epoch, every layer, forward**: the halo rows of the layer's input come from the
  owners (:meth:`HaloExchange.exchange`, one ``all_to_all_single``), the rank aggregates its
  owned rows (``Agg_gcn`` with the global degrees, :func:`local_gcn_operator`) and applies
  the layer;
- **every epoch, every layer, backward**: the gradient of the halo rows of the layer's input
  goes back to the owners, who add it into their rows' gradients
  (:meth:`HaloExchange.reverse`, one ``all_to_all_single``). Both exchanges live inside
  autograd (:class:`HaloRows`, a ``torch.autograd.Function``). The first layer's input, the
  features, needs no gradient, so its backward exchange does not happen (as in every system
  above);
- the loss is the cross-entropy of the owned training rows, summed and divided by the GLOBAL
  number of training nodes, so the ranks' parameter gradients sum to the single-process
  gradient: **one coalesced all-reduce** of every parameter's gradient and the loss, then the
  same Adam step on every rank (the replicas stay identical).

What each rank communicates is counted per kind (``halo forward``, ``halo backward``,
``gradient all-reduce``; ``evaluation`` at the end) through :class:`DistContext`, with the
payload bytes this rank hands to the collective, as the SF trainer counts them. Per layer:
``halo_bytes_by_layer = {"forward": [...], "backward": [...]}`` of one epoch.

Rank side: :func:`fit_bp_distributed` (``partitions=DIR`` in every rank of a process group,
e.g. under :func:`~ffkernels.distributed.run_ranks`); the pieces (:class:`BPGCN`,
:func:`make_model`, :func:`local_gcn_operator`, :class:`PartitionedBPGCN`) are public for
tests and experiments. ``tests/benchmarking/test_distributed_suite.py`` checks that the loss,
the gradients and the parameters after some Adam steps on 2 ranks equal a single-process
autograd GCN on the full graph.
"""
from __future__ import annotations

import math
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .halo import HaloExchange
from .partition import Partition

__all__ = ["BPGCN", "make_model", "local_gcn_operator", "HaloRows", "PartitionedBPGCN", "train_partitioned",
           "fit_bp_distributed", "PER_EPOCH_KINDS"]

#: the kinds of communication that happen every epoch (everything else is counted apart)
PER_EPOCH_KINDS = ("halo forward", "halo backward", "gradient all-reduce")


class BPGCN(nn.Module):
    """``layers`` GCN convolutions (``Agg_gcn(H) W^T + b``, ReLU) and a linear classifier."""

    def __init__(self, num_features: int, hidden: int, num_classes: int, layers: int):
        super().__init__()
        widths = [num_features] + [hidden] * layers
        self.convs = nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(layers))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x, aggregate):
        """``aggregate(layer_index, h_owned) -> Agg(h)`` of the rows this process computes."""
        h = x
        for i, conv in enumerate(self.convs):
            h = torch.relu(conv(aggregate(i, h)))
        return self.head(h)


def make_model(num_features: int, hidden: int, num_classes: int, layers: int, seed: int = 0) -> BPGCN:
    """The model every rank builds: the same seeded initialisation everywhere (a private RNG
    stream, the caller's global RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return BPGCN(num_features, hidden, num_classes, layers)


def local_gcn_operator(part: Partition, dtype=torch.float32):
    """``(A, A^T)``: this rank's rows of the GCN operator as sparse CSR matrices.

    ``A`` is ``[n_k, n_k + h_k]``: row ``i`` (an owned node) holds ``d_i d_j`` for every local
    in-edge ``j -> i`` plus the self loop ``d_i^2``, with ``d = (1 + global in-degree) ** -0.5``
    (with the partition's edge weights: ``w_ji d_i d_j`` and the weighted degrees), so
    ``A @ cat(owned rows, halo rows)`` is the owned rows of the single-process
    ``ops.aggregate(graph, x, "gcn")``. ``A^T`` (``[n_k + h_k, n_k]``) is the backward."""
    n, num_local = part.num_owned, part.num_local
    rowptr = part.rowptr.to(torch.int64)
    col = part.col.to(torch.int64)
    counts = rowptr[1:] - rowptr[:-1]
    row = torch.repeat_interleave(torch.arange(n, device=col.device), counts, output_size=col.numel())
    if part.edge_weight is not None:
        d = part.weighted_deg_inv_sqrt.to(dtype)
        w = part.edge_weight.to(dtype)
    else:
        d = (part.in_degree.to(dtype) + 1.0).rsqrt()
        w = None
    values = d[row] * d[col]
    if w is not None:
        values = values * w
    loops = torch.arange(n, device=col.device)
    rows = torch.cat([row, loops])
    cols = torch.cat([col, loops])
    values = torch.cat([values, d[:n] * d[:n]])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        a = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, num_local),
                                    check_invariants=False).coalesce()
        at = torch.sparse_coo_tensor(torch.stack([cols, rows]), values, (num_local, n),
                                     check_invariants=False).coalesce()
        return a.to_sparse_csr(), at.to_sparse_csr()


class _SpMM(torch.autograd.Function):
    """``A @ x`` with the backward ``A^T @ grad`` (both precomputed CSR matrices)."""

    @staticmethod
    def forward(fctx, x, a, at):
        fctx.at = at
        return torch.sparse.mm(a, x) if x.shape[0] else x.new_zeros((a.shape[0], x.shape[1]))

    @staticmethod
    def backward(fctx, grad):
        at = fctx.at
        if grad.shape[0] == 0 or at.shape[0] == 0:
            return grad.new_zeros((at.shape[0], grad.shape[1])), None, None
        return torch.sparse.mm(at, grad.contiguous()), None, None


class HaloRows(torch.autograd.Function):
    """``halo rows = exchange(owned rows)`` forward, ``owned grads += reverse(halo grads)`` backward.

    ``comm`` is the :class:`PartitionedBPGCN` (it owns the exchange and counts the bytes);
    ``layer`` is the layer index (for the per-layer byte counts)."""

    @staticmethod
    def forward(fctx, owned, comm, layer):
        fctx.comm, fctx.layer = comm, layer
        return comm.exchange(owned, layer)

    @staticmethod
    def backward(fctx, grad_halo):
        return fctx.comm.reverse(grad_halo, fctx.layer), None, None


class PartitionedBPGCN:
    """One rank's full-graph BP training of :class:`BPGCN` on its part (see the module docstring).

    Args:
        part: this rank's :class:`Partition`.
        ctx: the run's :class:`~ffkernels.distributed.context.DistContext`.
        hidden, layers, lr, weight_decay, seed: the model and Adam's settings.
    """

    def __init__(self, part: Partition, ctx, hidden: int = 128, layers: int = 2, lr: float = 1e-2,
                 weight_decay: float = 5e-4, seed: int = 0):
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be an int >= 1, got {layers!r}")
        self.part, self.ctx = part, ctx
        self.halo = HaloExchange(part)
        self.model = make_model(part.num_features, hidden, part.num_classes, layers, seed).to(part.x.device)
        self.a, self.at = local_gcn_operator(part)
        self.params = [p for p in self.model.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=lr, weight_decay=weight_decay)
        self.n_train = int(part.global_counts["num_train"])
        self.train_idx = part.train_idx
        self.y_train = part.y[part.train_idx]
        self.evaluating = False        # evaluation passes are counted apart from the epochs
        self.halo_bytes_by_layer = {"forward": [0] * layers, "backward": [0] * layers}
        self._count_layers = True

    # -- communication (collectives: every rank calls them in the same order)
    def _kind(self, kind: str) -> str:
        return "evaluation" if self.evaluating else kind

    def exchange(self, owned: torch.Tensor, layer: int) -> torch.Tensor:
        nbytes = self.halo.num_send * math.prod(owned.shape[1:]) * owned.element_size()
        out = self.ctx.run(self._kind("halo forward"), lambda: self.halo.exchange(owned.contiguous()), nbytes)
        if self._count_layers and not self.evaluating:
            self.halo_bytes_by_layer["forward"][layer] = nbytes
        return out

    def reverse(self, grad_halo: torch.Tensor, layer: int) -> torch.Tensor:
        nbytes = grad_halo.numel() * grad_halo.element_size()
        out = self.ctx.run(self._kind("halo backward"), lambda: self.halo.reverse(grad_halo.contiguous()), nbytes)
        if self._count_layers and not self.evaluating:
            self.halo_bytes_by_layer["backward"][layer] = nbytes
        return out

    def _aggregate(self, layer: int, h_owned: torch.Tensor) -> torch.Tensor:
        local = torch.cat([h_owned, HaloRows.apply(h_owned, self, layer)])
        return _SpMM.apply(local, self.a, self.at)

    def logits(self) -> torch.Tensor:
        """The owned rows' logits (forward with the per-layer halo exchanges)."""
        return self.model(self.part.x, self._aggregate)

    # -- training
    def loss_and_grads(self):
        """Forward, backward (the reverse exchanges happen inside) and the gradient
        all-reduce: returns the global loss; every parameter's ``.grad`` is the global gradient."""
        for p in self.params:
            p.grad = None
        out = self.logits()
        loss = F.cross_entropy(out[self.train_idx], self.y_train, reduction="sum") / max(self.n_train, 1)
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)])
        import torch.distributed as dist
        self.ctx.run("gradient all-reduce", lambda: dist.all_reduce(flat, async_op=True),
                     flat.numel() * flat.element_size())
        offset = 0
        for p in self.params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return float(flat[-1])

    def train_epoch(self) -> float:
        loss = self.loss_and_grads()
        self.optimizer.step()
        self._count_layers = False  # one epoch's per-layer bytes are kept
        return loss

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Accuracy of the train / val / test rows over all ranks (counted as ``evaluation``)."""
        import torch.distributed as dist
        self.evaluating = True
        try:
            pred = self.logits().argmax(1)
            y = self.part.y
            counts = torch.tensor([[float((pred[idx] == y[idx]).sum()), float(idx.numel())]
                                   for idx in (self.part.train_idx, self.part.val_idx, self.part.test_idx)],
                                  dtype=torch.float64)
            self.ctx.run("evaluation", lambda: dist.all_reduce(counts, async_op=True),
                         counts.numel() * counts.element_size())
        finally:
            self.evaluating = False
        return {f"{k}_accuracy": float(counts[i, 0] / counts[i, 1]) if counts[i, 1] > 0 else 0.0
                for i, k in enumerate(("train", "val", "test"))}


def _warm_up_adam():
    """The first ``Adam.step()`` of a process pays seconds of lazy imports: keep them out of the timing."""
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.ones_like(p)
    torch.optim.Adam([p]).step()


def train_partitioned(part: Partition, ctx, *, hidden: int = 128, layers: int = 2, epochs: int = 10,
                      lr: float = 1e-2, weight_decay: float = 5e-4, seed: int = 0, capture: bool = False,
                      warm_up: bool = True) -> dict:
    """Train on this rank's part for ``epochs`` full-batch epochs; return this rank's record.

    Record: ``losses`` (global, per epoch), ``epoch_seconds``, ``train_seconds``,
    ``setup_seconds`` (operators, model), the final ``*_accuracy``, ``comm_seconds``,
    ``bytes_by_kind``, ``bytes_per_epoch`` (the :data:`PER_EPOCH_KINDS` divided by the epochs),
    ``halo_bytes_by_layer``; with ``capture``: ``first_grads`` (the global gradients of the
    first epoch, by parameter name) and ``state`` (the parameters at the end). ``warm_up``: one
    Adam step on a dummy parameter first (the first step of a process pays seconds of lazy
    imports, which would count in the first epoch).
    """
    if warm_up:
        _warm_up_adam()
    t0 = time.perf_counter()
    trainer = PartitionedBPGCN(part, ctx, hidden=hidden, layers=layers, lr=lr, weight_decay=weight_decay, seed=seed)
    setup = time.perf_counter() - t0
    comm0 = ctx.comm_seconds
    losses, epoch_seconds, first_grads = [], [], None
    start = time.perf_counter()
    for epoch in range(int(epochs)):
        e0 = time.perf_counter()
        if capture and epoch == 0:
            loss = trainer.loss_and_grads()
            first_grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters()}
            trainer.optimizer.step()
            trainer._count_layers = False
        else:
            loss = trainer.train_epoch()
        losses.append(loss)
        epoch_seconds.append(time.perf_counter() - e0)
    train_seconds = time.perf_counter() - start
    comm_train = ctx.comm_seconds - comm0
    metrics = trainer.evaluate()
    by_kind = dict(ctx.bytes_by_kind)
    per_epoch = sum(by_kind.get(k, 0) for k in PER_EPOCH_KINDS) / max(int(epochs), 1)
    out = {"rank": ctx.rank, "losses": losses, "epoch_seconds": epoch_seconds, "train_seconds": train_seconds,
           "setup_seconds": setup, "epochs": int(epochs),
           "seconds_per_epoch": train_seconds / max(int(epochs), 1), "comm_seconds": comm_train,
           "comm_seconds_fraction": comm_train / train_seconds if train_seconds > 0 else None,
           "bytes_by_kind": by_kind, "bytes_per_epoch": per_epoch,
           "halo_bytes_by_layer": trainer.halo_bytes_by_layer, "num_owned": part.num_owned,
           "num_halo": part.num_halo, **metrics}
    if capture:
        out["first_grads"] = first_grads
        out["state"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return out


def fit_bp_distributed(partitions, *, hidden: int = 128, layers: int = 2, epochs: int = 10, lr: float = 1e-2,
                       weight_decay: float = 5e-4, seed: int = 0, timeout: float = 180.0, capture: bool = False,
                       warm_up: bool = True, device="cpu") -> dict:
    """This rank's part of a distributed BP run (call it on every rank of a process group).

    Loads part ``rank`` of ``partitions`` (the directory ``ffkernels partition`` or
    :func:`~ffkernels.distributed.partition_graph` wrote), trains, and returns a report shaped
    like ``ffkernels.fit(..., distributed=...)``'s ``distributed`` entry: ``world_size``,
    ``ranks`` (every rank's record of :func:`train_partitioned` plus ``peak_memory_bytes``,
    the growth of the peak resident memory over the memory in use once the part was loaded,
    and ``peak_total_bytes``), ``bytes_per_epoch_per_rank`` and ``comm_seconds_fraction``.
    Identical on every rank (all-gathered).
    """
    from ..train.metrics import PeakMemory
    from .context import DistContext
    from .partition import load_partition
    ctx = DistContext(timeout, device)
    try:
        part = load_partition(partitions, ctx.rank, ctx.world_size).to(ctx.device)
        with PeakMemory(ctx.device) as mem:
            mine = train_partitioned(part, ctx, hidden=hidden, layers=layers, epochs=epochs, lr=lr,
                                     weight_decay=weight_decay, seed=seed, capture=capture, warm_up=warm_up)
        mine.update(peak_memory_bytes=int(mem.peak_bytes), peak_total_bytes=int(mem.peak_total_bytes),
                    base_memory_bytes=int(mem.base_bytes), memory_method=mem.method)
        state = (mine.pop("first_grads", None), mine.pop("state", None))
        ranks = ctx.all_gather_object(mine)
    finally:
        ctx.close()
    report = {"algo": "bp-gcn (distributed, full graph)", "world_size": len(ranks), "partitions": str(partitions),
              "options": {"hidden": hidden, "layers": layers, "epochs": epochs, "lr": lr,
                          "weight_decay": weight_decay, "seed": seed},
              "ranks": ranks, "bytes_per_epoch_per_rank": [r["bytes_per_epoch"] for r in ranks],
              "comm_seconds_fraction": [r["comm_seconds_fraction"] for r in ranks],
              "losses": ranks[0]["losses"], "test_accuracy": ranks[0]["test_accuracy"]}
    if capture:
        report["first_grads"], report["state"] = state
    return report
