"""Distributed (multi-process) training support: graph partitioning, the halo exchange and
local aggregation on ``torch.distributed`` (gloo on CPU, NCCL on GPUs, launched with torchrun).

- :func:`partition_graph` / :func:`load_partition` / :class:`Partition`: split a graph into
  one part per rank and load a rank's part (``docs/distributed.md``, "Partitioning");
- :class:`HaloExchange`: fetch the rows of remote in-neighbours with one
  ``all_to_all_single`` per tensor, and the transposed exchange ("Halo exchange");
- :func:`local_aggregate`: a rank's rows of :func:`ffkernels.ops.aggregate` on the full graph;
- :func:`run_ranks` (``ffkernels.distributed.harness``): run a function on N local processes
  (tests, experiments).

``pymetis`` (``pip install 'ffkernels[distributed]'``) is optional: without it, ``metis``
partitioning falls back to ``bfs``.
"""
from __future__ import annotations

from .halo import HaloExchange, local_aggregate, simulate_exchange
from .harness import RankError, free_port, run_ranks
from .partition import (MANIFEST_FORMAT, METHODS, PART_FORMAT, Partition, assign_parts, load_partition,
                        partition_graph, read_manifest)

__all__ = ["partition_graph", "load_partition", "read_manifest", "Partition", "assign_parts", "METHODS",
           "MANIFEST_FORMAT", "PART_FORMAT", "HaloExchange", "local_aggregate", "simulate_exchange", "run_ranks",
           "free_port", "RankError"]
