"""The halo exchange and the local aggregation of a partitioned graph.

Each rank owns the rows of its part; the edges into its owned nodes also read the rows of its
*halo* nodes (in-neighbours owned by other ranks). :class:`HaloExchange` fetches those rows
with one ``torch.distributed.all_to_all_single`` per tensor, and :func:`local_aggregate`
computes the owned rows of the single-process :func:`ffkernels.ops.aggregate` from
``cat(owned rows, halo rows)``, using the global degrees stored in the partition.
"""
from __future__ import annotations

import time

import torch

from ..backends import resolve as _resolve_backend
from .. import ops
from ..ops import AGGREGATE_REDUCES
from .partition import Partition

__all__ = ["HaloExchange", "local_aggregate", "simulate_exchange"]


def _check_rows(name: str, rows, count: int, what: str):
    if not isinstance(rows, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(rows).__name__}")
    if rows.dim() < 1 or rows.shape[0] != count:
        raise ValueError(f"{name} must have {count} rows ({what}), got shape {tuple(rows.shape)}")


class HaloExchange:
    """Sends each rank's owned rows that other ranks need as halo rows, and back.

    Built once per partition (and process group). Every call is one collective: all ranks
    must call it in the same order with tensors of the same trailing shape and dtype.

    Attributes:
        bytes_sent / bytes_received: cumulative payload bytes (rows x row size) of every
            :meth:`exchange` and :meth:`reverse` call; a rank never sends to itself.
        seconds: cumulative wall time spent in those calls (on CUDA the call waits for the
            exchange to finish when ``synchronize`` is true, so this is the transfer time).
        calls: number of collectives issued.
    """

    def __init__(self, partition: Partition, group=None, synchronize: bool = True):
        import torch.distributed as dist
        if not isinstance(partition, Partition):
            raise TypeError(f"partition must be an ffkernels.distributed.Partition, got {type(partition).__name__}")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("HaloExchange needs an initialised torch.distributed process group "
                               "(torch.distributed.init_process_group, or launch with torchrun)")
        world = dist.get_world_size(group)
        rank = dist.get_rank(group)
        if world != partition.world_size or rank != partition.rank:
            raise ValueError(f"partition is part {partition.rank} of {partition.world_size} but this process is "
                             f"rank {rank} of {world} in the process group")
        self.partition = partition
        self.group = group
        self.synchronize = bool(synchronize)
        self.send_splits = [int(c) for c in partition.send_counts.tolist()]
        self.recv_splits = [int(c) for c in partition.recv_counts.tolist()]
        self.num_send = sum(self.send_splits)
        self.num_recv = sum(self.recv_splits)
        self._send_index = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.seconds = 0.0
        self.calls = 0

    def _index(self, device) -> torch.Tensor:
        key = str(device)
        if key not in self._send_index:
            self._send_index[key] = self.partition.send_index.to(device, torch.int64)
        return self._send_index[key]

    def _all_to_all(self, out, send, out_splits, in_splits):
        import torch.distributed as dist
        start = time.perf_counter()
        dist.all_to_all_single(out, send, output_split_sizes=out_splits, input_split_sizes=in_splits,
                               group=self.group)
        if self.synchronize and out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.bytes_sent += send.numel() * send.element_size()
        self.bytes_received += out.numel() * out.element_size()

    def exchange(self, owned_rows: torch.Tensor) -> torch.Tensor:
        """The halo rows ``[h_k, ...]`` (in halo order) from every rank's ``owned_rows``
        ``[n_k, ...]``; exact copies (bitwise) of the owners' rows."""
        part = self.partition
        _check_rows("owned_rows", owned_rows, part.num_owned, "one per owned node")
        send = owned_rows.index_select(0, self._index(owned_rows.device)).contiguous()
        out = owned_rows.new_empty((self.num_recv,) + tuple(owned_rows.shape[1:]))
        self._all_to_all(out, send, self.recv_splits, self.send_splits)
        return out

    def with_halo(self, owned_rows: torch.Tensor) -> torch.Tensor:
        """``cat(owned_rows, exchange(owned_rows))``: the ``[num_local, ...]`` input of
        :func:`local_aggregate`."""
        return torch.cat([owned_rows, self.exchange(owned_rows)], dim=0)

    def reverse(self, halo_grads: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The transposed exchange: every rank's ``halo_grads`` ``[h_k, ...]`` go back to the
        owners and are summed into ``[n_k, ...]`` owned rows (into ``out`` when given, else a
        new zero tensor). Rows a node receives from several ranks are added in rank order."""
        part = self.partition
        _check_rows("halo_grads", halo_grads, part.num_halo, "one per halo node")
        send = halo_grads.contiguous()
        buf = halo_grads.new_empty((self.num_send,) + tuple(halo_grads.shape[1:]))
        self._all_to_all(buf, send, self.send_splits, self.recv_splits)
        if out is None:
            out = halo_grads.new_zeros((part.num_owned,) + tuple(halo_grads.shape[1:]))
        else:
            _check_rows("out", out, part.num_owned, "one per owned node")
        out.index_add_(0, self._index(out.device), buf.to(out.dtype))
        return out

    def gcn_deg_inv_sqrt(self, edge_weight: torch.Tensor) -> torch.Tensor:
        """GCN's ``D ** -0.5`` (PyG's weighted degree) of every local node for ``edge_weight``
        (``[e_k]``, local CSR order), for :func:`local_aggregate` with weights the partition
        does not store. Collective (one exchange); owned degrees are summed locally."""
        part = self.partition
        graph = part.local_graph(edge_weight.device)
        if part.gcn_uses_loop_graph:  # PyG: an owned node's self loops (local edges) become one
            deg = graph.self_loop_structure().degree(edge_weight.to(torch.float32), torch.float32)[:part.num_owned]
        else:
            deg = torch.ones(part.num_owned, dtype=torch.float32, device=edge_weight.device)
            deg.index_add_(0, graph.row.to(torch.int64), edge_weight.to(torch.float32))
        owned = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
        return torch.cat([owned, self.exchange(owned)])

    def stats(self) -> dict:
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received, "seconds": self.seconds,
                "calls": self.calls}

    def __repr__(self) -> str:
        return (f"HaloExchange(rank={self.partition.rank}, send={self.num_send} rows, recv={self.num_recv} rows, "
                f"calls={self.calls}, bytes_sent={self.bytes_sent})")


def _same_weights(a, b: torch.Tensor | None) -> bool:
    if b is None or not isinstance(a, torch.Tensor):
        return False
    if a is b:
        return True
    return a.shape == b.shape and a.device == b.device and bool(torch.equal(a.to(b.dtype), b))


def local_aggregate(partition: Partition, x_local: torch.Tensor, reduce: str = "sum",
                    edge_weight: torch.Tensor | None = None, *, deg_inv_sqrt: torch.Tensor | None = None,
                    backend: str | None = None) -> torch.Tensor:
    """The owned rows of ``ops.aggregate(full_graph, x, reduce, edge_weight)`` on one rank.

    Args:
        partition: this rank's :class:`Partition`.
        x_local: ``[num_local, D]`` = ``cat(owned rows, halo rows)`` (e.g.
            :meth:`HaloExchange.with_halo`).
        reduce: ``sum``, ``mean`` (divided by the global in-degree; every in-edge of an owned
            node is local), ``max`` or ``gcn`` (global GCN factors of owned and halo nodes;
            PyG's normalisation: an owned node's self loops, all local edges, are replaced by
            one, as in single-process :func:`ffkernels.ops.aggregate`).
        edge_weight: optional ``[e_k]`` weights in the local CSR order (``partition.edge_weight``
            is the dataset's). With ``gcn`` the degrees become weighted: for the partition's own
            weights they are stored in the part file; for other weights pass ``deg_inv_sqrt``.
        deg_inv_sqrt: optional ``[num_local]`` GCN factors overriding the stored ones (see
            :meth:`HaloExchange.gcn_deg_inv_sqrt`); ``gcn`` only.
        backend: as in :func:`ffkernels.ops.aggregate`.

    Returns:
        ``[num_owned, D]``; with the same backend, bitwise equal to the single-process rows
        for the kernel backends (each row's edges are summed in the same order).
    """
    if not isinstance(partition, Partition):
        raise TypeError(f"partition must be an ffkernels.distributed.Partition, got {type(partition).__name__}")
    if reduce not in AGGREGATE_REDUCES:
        raise ValueError(f"reduce must be one of {list(AGGREGATE_REDUCES)}, got {reduce!r}")
    _check_rows("x_local", x_local, partition.num_local, "owned rows then halo rows")
    graph = partition.local_graph(x_local.device)
    n_k = partition.num_owned
    if deg_inv_sqrt is not None and reduce != "gcn":
        raise ValueError("deg_inv_sqrt is only used with reduce='gcn'")
    if reduce == "gcn":
        partition.check_self_loop_semantics()
    loop_graph = reduce == "gcn" and partition.gcn_uses_loop_graph
    if reduce == "gcn" and (edge_weight is not None or deg_inv_sqrt is not None or loop_graph):
        if deg_inv_sqrt is None and edge_weight is not None:
            if partition.weighted_deg_inv_sqrt is None or not _same_weights(edge_weight, partition.edge_weight):
                raise ValueError("local_aggregate(reduce='gcn', edge_weight=...) with weights other than the "
                                 "partition's own needs the weighted degrees of the halo nodes: pass "
                                 "deg_inv_sqrt=HaloExchange.gcn_deg_inv_sqrt(edge_weight)")
            deg_inv_sqrt = partition.weighted_deg_inv_sqrt
        elif deg_inv_sqrt is None:
            deg_inv_sqrt = graph.deg_inv_sqrt  # the unweighted global factors
        _check_rows("deg_inv_sqrt", deg_inv_sqrt, partition.num_local, "one per local node")
        # ops.aggregate would derive the weighted degrees from the local edges only (wrong for
        # halo nodes): validate like it does, then call the backend with the global factors.
        acc = torch.float64 if x_local.dtype == torch.float64 else torch.float32
        if edge_weight is not None:
            if not isinstance(edge_weight, torch.Tensor) or edge_weight.dim() != 1 or \
                    edge_weight.numel() != graph.num_edges or not edge_weight.is_floating_point():
                raise ValueError(f"edge_weight must be a float tensor of shape [{graph.num_edges}] (local CSR "
                                 f"order), got {getattr(edge_weight, 'shape', edge_weight)}")
            if edge_weight.device != x_local.device:
                raise ValueError(f"edge_weight is on {edge_weight.device} but x_local is on {x_local.device}")
            edge_weight = edge_weight.to(acc).contiguous()
        if not x_local.is_floating_point() or x_local.dim() != 2:
            raise ValueError(f"x_local must be a 2-D float tensor, got {x_local.dtype} {tuple(x_local.shape)}")
        impl = _resolve_backend("aggregate", backend, x_local.device, x_local.dtype)
        scale = deg_inv_sqrt.to(x_local.device, acc).contiguous()
        if loop_graph:  # the graph has self loops: PyG's loop graph (as ops.aggregate), global factors
            loops = graph.self_loop_structure()
            values = loops.edge_values(scale, edge_weight, acc)
            out = impl.aggregate(loops.graph.rowptr, loops.graph.col, x_local.contiguous(), values, "sum", None)
        else:
            out = impl.aggregate(graph.rowptr, graph.col, x_local.contiguous(), edge_weight, "gcn", scale)
        return out[:n_k]
    return ops.aggregate(graph, x_local, reduce, edge_weight, backend)[:n_k]


def simulate_exchange(partitions: list, owned_rows: list) -> list:
    """What :meth:`HaloExchange.exchange` returns on each rank, computed in one process from
    all the partitions and every rank's owned rows (a reference for tests)."""
    world = len(partitions)
    out = []
    for k, part in enumerate(partitions):
        pieces = []
        for r in range(world):
            src = partitions[r]
            lo = int(src.send_counts[:k].sum())
            idx = src.send_index[lo:lo + int(src.send_counts[k])]
            pieces.append(owned_rows[r].index_select(0, idx.to(owned_rows[r].device)))
        out.append(torch.cat(pieces) if pieces else owned_rows[k].new_empty((0,) + tuple(owned_rows[k].shape[1:])))
    return out
