"""Graph partitioning for distributed training: assign nodes to ranks, write one file per rank.

:func:`partition_graph` assigns every node to one of P parts (METIS, a BFS order cut into
ranges, seeded random, or id ranges), and writes ``manifest.json`` plus ``part-K.pt`` per part
into a directory. Part K holds the rows rank K owns (features, labels, split positions), the
local CSR of the edges into its owned nodes, the list of its halo nodes (remote in-neighbours)
and the send/receive plan of the halo exchange. :func:`load_partition` reads the manifest and
only its own part, after checking that the part belongs to this partitioning (sha256 and
content hash) and to this run (world size, optional dataset fingerprint).

The file formats are described in ``docs/distributed.md``.
"""
from __future__ import annotations

import hashlib
import heapq
import io
import json
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

from ..graph import Graph, SelfLoops

__all__ = ["partition_graph", "load_partition", "Partition", "assign_parts", "METHODS",
           "MANIFEST_FORMAT", "PART_FORMAT"]

MANIFEST_FORMAT = "ffkernels-partitions-v1"
PART_FORMAT = "ffkernels-part-v1"
MANIFEST_NAME = "manifest.json"
METHODS = ("metis", "bfs", "random", "range")

_METIS_WARNED = False


# ============================================================================ assignment
def _undirected_csr(num_nodes: int, src: np.ndarray, dst: np.ndarray, with_weights: bool = False):
    """Symmetrised adjacency without self loops or duplicates: ``(indptr, indices[, mult])``.

    ``mult`` counts the directed edges (both directions, multi-edges) behind each undirected
    pair, so a cut weighted by it is the directed edge cut.
    """
    n = max(num_nodes, 1)
    u = np.concatenate([src, dst])
    v = np.concatenate([dst, src])
    keep = u != v
    key = u[keep] * n + v[keep]
    if with_weights:
        key, mult = np.unique(key, return_counts=True)
    else:
        key = np.unique(key)
        mult = None
    rows = key // n
    indices = key % n
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_nodes), out=indptr[1:])
    return indptr, indices.astype(np.int64), mult


def _gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple:
    """The CSR entry positions of ``rows`` (concatenated, in row order) and each row's count."""
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), counts
    offsets = np.cumsum(counts) - counts
    pos = np.repeat(starts - offsets, counts) + np.arange(total, dtype=np.int64)
    return pos, counts


def _bfs_levels(indptr, indices, degree, start, mark, stamp):
    """Cuthill-McKee BFS from ``start`` over nodes with ``mark != stamp``; marks them ``stamp``.

    Level by level (vectorised: one numpy pass per level); inside a level the nodes come in
    the order of their parents, each parent's new neighbours by increasing degree.
    Returns the visit order (int64 array) and the last level.
    """
    mark[start] = stamp
    frontier = np.array([start], dtype=np.int64)
    levels = [frontier]
    while True:
        pos, counts = _gather_rows(indptr, frontier)
        if pos.size == 0:
            break
        nb = indices[pos]
        parent = np.repeat(np.arange(frontier.size), counts)
        fresh = mark[nb] != stamp
        nb, parent = nb[fresh], parent[fresh]
        if nb.size == 0:
            break
        order = np.lexsort((nb, degree[nb], parent))  # by parent, then degree, then id
        nb = nb[order]
        _, first = np.unique(nb, return_index=True)
        nb = nb[np.sort(first)]
        mark[nb] = stamp
        levels.append(nb)
        frontier = nb
    return np.concatenate(levels), levels[-1]


#: Above this many undirected adjacency entries, ``bfs`` uses the vectorised Cuthill-McKee
#: order instead of the (better, but per-edge Python) maximum-adjacency search.
MAX_ADJACENCY_LIMIT = 4_000_000


def _max_adjacency_search(indptr, indices, start, placed_mask, score) -> np.ndarray:
    """Graph search from ``start``: always take next the reached node with the most already
    placed neighbours (ties: the one reached first, as in BFS). A dense community is finished
    before the search leaks through the few edges leaving it, so contiguous ranges of this
    order cut far fewer edges than plain BFS levels on graphs with community structure."""
    push, pop = heapq.heappush, heapq.heappop
    heap = [(0, 0, start)]
    counter = 1
    order = []
    while heap:
        neg, _, v = pop(heap)
        if placed_mask[v] or -neg != score[v]:
            continue  # already placed, or a stale entry (its score rose since)
        placed_mask[v] = True
        order.append(v)
        nb = indices[indptr[v]:indptr[v + 1]]
        nb = nb[~placed_mask[nb]]
        if nb.size:
            score[nb] += 1
            for u, sc in zip(nb.tolist(), score[nb].tolist()):
                push(heap, (-sc, counter, u))
                counter += 1
    return np.asarray(order, dtype=np.int64)


def bfs_order(num_nodes: int, edge_index: torch.Tensor, kind: str | None = None, return_kind: bool = False):
    """A locality-preserving node order over the undirected graph (self loops and duplicate
    edges ignored), one connected component after the other (in order of their lowest node
    id), isolated nodes last. Each component starts at a pseudo-peripheral node (the
    lowest-degree node of the last BFS level from the component's lowest id) and is ordered by

    - ``"max-adjacency"`` (default up to :data:`MAX_ADJACENCY_LIMIT` adjacency entries): a BFS
      whose queue is prioritised by the number of already-placed neighbours;
    - ``"cuthill-mckee"`` (beyond): Cuthill-McKee BFS levels (parents in order, each parent's
      new neighbours by increasing degree), vectorised level by level.

    Consecutive nodes of the order are mostly neighbours, so contiguous ranges cut few edges.
    Returns the order (``[N]`` int64 numpy), and the kind used with ``return_kind=True``.
    """
    ei = edge_index.detach().to("cpu", torch.int64).numpy()
    indptr, indices, _ = _undirected_csr(num_nodes, ei[0], ei[1])
    if kind is None:
        kind = bfs_order_kind(int(indices.size))
    if kind not in ("max-adjacency", "cuthill-mckee"):
        raise ValueError(f"kind must be 'max-adjacency' or 'cuthill-mckee', got {kind!r}")
    degree = np.diff(indptr)
    # 0: not placed; 1: seen by the probe BFS of the current component; 2: placed. Components
    # are disjoint, so a search from an unplaced node never meets a placed one.
    mark = np.zeros(num_nodes, dtype=np.int8)
    if kind == "max-adjacency":
        placed_mask = np.zeros(num_nodes, dtype=bool)
        score = np.zeros(num_nodes, dtype=np.int64)
    placed = []
    candidates = np.flatnonzero(degree > 0)
    p = 0
    while True:
        while p < candidates.size:  # the next unplaced node, scanning in vectorised blocks
            hits = np.flatnonzero(mark[candidates[p:p + 4096]] != 2)
            if hits.size:
                p += int(hits[0])
                break
            p += 4096
        if p >= candidates.size:
            break
        seed = candidates[p]
        # Probe BFS to find a far-away start (George-Liu pseudo-peripheral node, one round).
        comp, last = _bfs_levels(indptr, indices, degree, int(seed), mark, 1)
        start = int(last[np.argmin(degree[last])])
        if kind == "max-adjacency":
            order = _max_adjacency_search(indptr, indices, start, placed_mask, score)
            mark[comp] = 2
        else:
            mark[comp] = 0
            order, _ = _bfs_levels(indptr, indices, degree, start, mark, 2)
        placed.append(order)
    placed.append(np.flatnonzero(degree == 0))
    order = np.concatenate(placed).astype(np.int64)
    return (order, kind) if return_kind else order


def bfs_order_kind(num_adjacency_entries: int) -> str:
    """Which order :func:`bfs_order` uses for a graph of that many undirected adjacency entries."""
    return "max-adjacency" if num_adjacency_entries <= MAX_ADJACENCY_LIMIT else "cuthill-mckee"


def _ranges_of_order(order: np.ndarray, num_nodes: int, num_parts: int) -> np.ndarray:
    """Cut ``order`` into ``num_parts`` contiguous, balanced ranges (sizes differ by <= 1)."""
    assign = np.empty(num_nodes, dtype=np.int64)
    assign[order] = (np.arange(num_nodes, dtype=np.int64) * num_parts) // max(num_nodes, 1)
    return assign


def _import_pymetis():
    import pymetis  # noqa: F401  (optional dependency: pip install ffkernels[distributed])
    return pymetis


def _metis_assign(num_nodes: int, edge_index: torch.Tensor, num_parts: int, seed: int) -> np.ndarray:
    pymetis = _import_pymetis()
    ei = edge_index.detach().to("cpu", torch.int64).numpy()
    indptr, indices, mult = _undirected_csr(num_nodes, ei[0], ei[1], with_weights=True)
    if indices.size == 0:  # nothing to cut: balanced id ranges
        return _ranges_of_order(np.arange(num_nodes, dtype=np.int64), num_nodes, num_parts)
    options = pymetis.Options(seed=int(seed))
    eweights = mult.astype(np.int64)
    if hasattr(pymetis, "CSRAdjacency"):
        result = pymetis.part_graph(num_parts, pymetis.CSRAdjacency(indptr, indices), eweights=eweights,
                                    options=options)
    else:  # older pymetis
        result = pymetis.part_graph(num_parts, xadj=indptr, adjncy=indices, eweights=eweights, options=options)
    membership = result[1] if isinstance(result, tuple) else result.vertex_part
    return np.asarray(membership, dtype=np.int64)


def assign_parts(num_nodes: int, edge_index: torch.Tensor, num_parts: int, method: str = "metis",
                 seed: int = 0, details: dict | None = None) -> tuple:
    """The part of every node: ``(assignment [N] int64 numpy, method actually used)``.

    ``metis`` falls back to ``bfs`` (with one warning per process) when pymetis is missing.
    ``details``, when given, receives ``{"bfs_order": kind}`` for ``bfs``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    details = {} if details is None else details
    if method == "metis":
        try:
            if num_parts == 1 or num_nodes == 0:
                _import_pymetis()
                return np.zeros(num_nodes, dtype=np.int64), "metis"
            return _metis_assign(num_nodes, edge_index, num_parts, seed), "metis"
        except ImportError:
            global _METIS_WARNED
            if not _METIS_WARNED:
                _METIS_WARNED = True
                warnings.warn("pymetis is not installed (pip install 'ffkernels[distributed]'): partitioning "
                              "with the 'bfs' fallback instead of METIS", RuntimeWarning, stacklevel=3)
            method = "bfs"
    if method == "bfs":
        order, kind = bfs_order(num_nodes, edge_index, return_kind=True)
        details["bfs_order"] = kind
        return _ranges_of_order(order, num_nodes, num_parts), "bfs"
    if method == "random":
        gen = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(num_nodes, generator=gen).numpy()
        return _ranges_of_order(perm, num_nodes, num_parts), "random"
    return _ranges_of_order(np.arange(num_nodes, dtype=np.int64), num_nodes, num_parts), "range"


# ============================================================================ writing
def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(fingerprint: str, num_parts: int, method: str, seed: int, assignment: np.ndarray) -> str:
    """sha256 over the dataset fingerprint, P, the method used, the seed and the assignment."""
    digest = hashlib.sha256()
    digest.update(f"{MANIFEST_FORMAT};fingerprint={fingerprint};parts={int(num_parts)};method={method};"
                  f"seed={int(seed)};".encode())
    digest.update(np.ascontiguousarray(assignment, dtype="<i8").tobytes())
    return digest.hexdigest()


def _write_json_atomic(obj, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _prepare_out_dir(out_dir, overwrite: bool, new_hash: str) -> str:
    if out_dir is None or not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(f"out_dir must be a directory path, got {out_dir!r}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir: {out_dir!r} exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    entries = [e for e in os.listdir(out_dir) if not e.startswith(".ckpt-") and not e.startswith(".manifest-")]
    if not entries:
        return out_dir
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    old = None
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path) as fh:
                old = json.load(fh)
        except (OSError, ValueError):
            old = None
    same = isinstance(old, dict) and old.get("content_hash") == new_hash
    if not same and not overwrite:
        if isinstance(old, dict) and old.get("format") == MANIFEST_FORMAT:
            what = (f"another partitioning ({old.get('num_parts')} parts, method {old.get('method')!r}, "
                    f"dataset {old.get('dataset', {}).get('name')!r}, "
                    f"content_hash {str(old.get('content_hash'))[:12]}...)")
        else:
            what = f"{len(entries)} other file(s), e.g. {sorted(entries)[0]!r}"
        raise ValueError(f"out_dir {out_dir!r} is not empty: it holds {what}; choose an empty directory or "
                         "pass overwrite=True (--overwrite)")
    # Remove our own files of the previous partitioning (never anything else): the manifest
    # first, so an interrupted rewrite leaves no manifest pointing at half-replaced parts.
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    for entry in entries:
        if entry.startswith("part-") and entry.endswith(".pt"):
            os.remove(os.path.join(out_dir, entry))
    return out_dir


def _resolve_data(data, split):
    from ..datasets import resolve
    data = resolve(data, split=split, device="cpu")  # a Dataset: checked against split, moved to the CPU
    if data.edge_index is None:
        raise ValueError(f"{data.source}: partitioning needs a graph dataset (this one has no edge_index)")
    return data


def partition_graph(data, num_parts: int, method: str = "metis", out_dir=None, seed: int = 0, *, split: int = 0,
                    overwrite: bool = False, assignment=None) -> dict:
    """Partition a graph dataset into ``num_parts`` parts and write them to ``out_dir``.

    Args:
        data: a :class:`ffkernels.datasets.Dataset` or anything
            :func:`ffkernels.datasets.resolve` accepts (bundled name, path, PyG Data).
        num_parts: P >= 1 (one part per rank). Parts may be empty (e.g. P > N).
        method: ``metis`` (pymetis on the undirected graph, minimising the directed edge cut;
            without pymetis: ``bfs``, recorded as ``"method": "bfs", "requested": "metis"``),
            ``bfs`` (a locality-preserving BFS-like order, :func:`bfs_order`, cut into P
            balanced contiguous ranges; the manifest's ``bfs_order`` says which), ``random``
            (a seeded random permutation cut into P balanced ranges) or ``range`` (node ids cut
            into P balanced contiguous ranges).
        out_dir: the directory to write (created). A non-empty directory is refused unless it
            holds this very partitioning (same content hash: rewritten) or ``overwrite=True``
            (our previous ``manifest.json``/``part-*.pt`` files are removed; nothing else is).
        seed: METIS / random seed (recorded, and part of the content hash).
        split: the split to load when ``data`` is not a Dataset.
        overwrite: replace another partitioning in ``out_dir``.
        assignment: optional ``[N]`` part id per node (any values in ``0..P-1``), overriding
            ``method`` (recorded as ``"method": "custom"``); for experiments and tests.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        ValueError: bad arguments, a non-graph dataset, or a non-empty ``out_dir``.
    """
    from .. import __version__
    from ..ops import gcn_deg_inv_sqrt
    from ..train.checkpoint import atomic_save

    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f"num_parts must be an int >= 1, got {num_parts!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if assignment is None and method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if out_dir is None:
        raise ValueError("out_dir is required: the directory to write the partition files to")
    data = _resolve_data(data, split)
    n = data.num_nodes
    edge_index = data.edge_index.to(torch.int64)
    num_edges = int(edge_index.shape[1])

    requested = method
    details = {}
    if assignment is not None:
        assign = np.asarray(assignment.cpu() if isinstance(assignment, torch.Tensor) else assignment)
        if assign.shape != (n,) or not np.issubdtype(assign.dtype, np.integer):
            raise ValueError(f"assignment must be an integer array of shape [{n}], got "
                             f"{assign.dtype} {tuple(assign.shape)}")
        if n and (assign.min() < 0 or assign.max() >= num_parts):
            raise ValueError(f"assignment values must be in [0, {num_parts}), got [{assign.min()}, {assign.max()}]")
        assign = assign.astype(np.int64)
        method = requested = "custom"
    else:
        assign, method = assign_parts(n, edge_index, num_parts, method, seed, details)
    fingerprint = data.fingerprint()
    chash = content_hash(fingerprint, num_parts, method, seed, assign)
    out_dir = _prepare_out_dir(out_dir, overwrite, chash)

    # ---- the global CSR (by destination, sources sorted: the single-process Graph's order)
    graph = data.graph if isinstance(data.graph, Graph) and data.graph.num_nodes == n else \
        Graph.from_edge_index(edge_index, n)
    rowptr = graph.rowptr.to(torch.int64).numpy()
    col = graph.col.to(torch.int64).numpy()
    in_degree = graph.in_degree.to(torch.int64)
    weight_csr = None
    wdeg = None
    if data.edge_weight is not None:
        weight_csr = data.edge_weight.index_select(0, graph.edge_perm).to(torch.float32).contiguous()
        wdeg = gcn_deg_inv_sqrt(graph, weight_csr, torch.float32)  # the single-process GCN factors
    # PyG's GCN replaces a node's self loops by one: its GCN degree is its non-loop in-degree + 1.
    # Stored (for owned and halo nodes) only for a graph with self loops (else it is in_degree).
    num_self_loops = int((graph.col.to(torch.int64) == graph.row.to(torch.int64)).sum()) if graph.num_edges else 0
    nonloop_in_degree = None
    if num_self_loops:
        nonloop_in_degree = in_degree - graph.self_loop_structure().loop_count

    # ---- owners, positions inside the owner, halos
    order = np.argsort(assign, kind="stable")  # nodes grouped by part, ids ascending in a part
    sizes = np.bincount(assign, minlength=num_parts)
    part_start = np.cumsum(sizes) - sizes
    pos_in_part = np.empty(n, dtype=np.int64)
    pos_in_part[order] = np.arange(n, dtype=np.int64) - np.repeat(part_start, sizes)

    owned_of, edges_of, halo_of, halo_owner_of = [], [], [], []
    for k in range(num_parts):
        owned = order[part_start[k]:part_start[k] + sizes[k]]
        eids, _ = _gather_rows(rowptr, owned)
        src = col[eids]
        remote = np.unique(src[assign[src] != k])
        halo = remote[np.argsort(assign[remote], kind="stable")]  # by (owner, global id)
        owned_of.append(owned)
        edges_of.append(eids)
        halo_of.append(halo)
        halo_owner_of.append(assign[halo])

    recv_counts = np.zeros((num_parts, num_parts), dtype=np.int64)  # [k, r]: rows k receives from r
    for k in range(num_parts):
        recv_counts[k] = np.bincount(halo_owner_of[k], minlength=num_parts)
    recv_start = np.cumsum(recv_counts, axis=1) - recv_counts  # where each owner's block starts

    splits = {key: getattr(data, f"{key}_idx").to(torch.int64).numpy() for key in ("train", "val", "test")}
    y = data.y.to(torch.int64)
    train_class_counts = torch.bincount(y[torch.from_numpy(splits["train"])].clamp_min(0),
                                        minlength=int(data.num_classes)).tolist()
    src_all = edge_index[0].numpy()
    dst_all = edge_index[1].numpy()
    edge_cut = int(np.count_nonzero(assign[src_all] != assign[dst_all])) if num_edges else 0

    parts_meta = []
    for k in range(num_parts):
        owned, eids, halo = owned_of[k], edges_of[k], halo_of[k]
        n_k, h_k = owned.size, halo.size
        src = col[eids]
        local_col = np.empty(src.size, dtype=np.int64)
        mine = assign[src] == k
        local_col[mine] = pos_in_part[src[mine]]
        if h_k:
            halo_key = assign[halo] * max(n, 1) + halo
            other = ~mine
            local_col[other] = n_k + np.searchsorted(halo_key, assign[src[other]] * max(n, 1) + src[other])
        local_rowptr = np.zeros(n_k + 1, dtype=np.int64)
        np.cumsum(rowptr[owned + 1] - rowptr[owned], out=local_rowptr[1:])
        send_index = []
        for r in range(num_parts):  # r's halo nodes that k owns (a block of r's halo, in r's order)
            lo = int(recv_start[r, k])
            send_index.append(pos_in_part[halo_of[r][lo:lo + int(recv_counts[r, k])]])
        send_index = np.concatenate(send_index) if send_index else np.zeros(0, dtype=np.int64)
        local_ids = np.concatenate([owned, halo])
        ltensor = torch.from_numpy(local_ids)
        split_pos = {}
        for key, idx in splits.items():
            sel = idx[assign[idx] == k]
            split_pos[key] = torch.from_numpy(pos_in_part[sel].astype(np.int64))
        owned_t = torch.from_numpy(owned.astype(np.int64))
        part = {
            "format": PART_FORMAT,
            "part": k,
            "num_parts": num_parts,
            "content_hash": chash,
            "owned": owned_t,
            "halo": torch.from_numpy(halo.astype(np.int64)),
            "halo_owner": torch.from_numpy(halo_owner_of[k].astype(np.int64)),
            "x": data.x.index_select(0, owned_t).to(torch.float32).contiguous(),
            "y": y.index_select(0, owned_t).contiguous(),
            "train_idx": split_pos["train"],
            "val_idx": split_pos["val"],
            "test_idx": split_pos["test"],
            "rowptr": torch.from_numpy(local_rowptr),
            "col": torch.from_numpy(local_col),
            "in_degree": in_degree.index_select(0, ltensor).contiguous(),
            "send_counts": torch.from_numpy(recv_counts[:, k].copy()),
            "send_index": torch.from_numpy(send_index.astype(np.int64)),
            "recv_counts": torch.from_numpy(recv_counts[k].copy()),
        }
        if weight_csr is not None:
            part["edge_weight"] = weight_csr.index_select(0, torch.from_numpy(eids)).contiguous()
            part["weighted_deg_inv_sqrt"] = wdeg.index_select(0, ltensor).contiguous()
        if nonloop_in_degree is not None:
            part["nonloop_in_degree"] = nonloop_in_degree.index_select(0, ltensor).contiguous()
        name = f"part-{k}.pt"
        path = os.path.join(out_dir, name)
        atomic_save(part, path)
        parts_meta.append({
            "file": name,
            "num_owned": int(n_k),
            "num_halo": int(h_k),
            "num_local_edges": int(eids.size),
            "num_train": int(split_pos["train"].numel()),
            "num_val": int(split_pos["val"].numel()),
            "num_test": int(split_pos["test"].numel()),
            "num_send": int(send_index.size),
            "sha256": _sha256_file(path),
        })

    manifest = {
        "format": MANIFEST_FORMAT,
        "num_parts": num_parts,
        "method": method,
        "requested": requested,
        "seed": seed,
        **details,
        "dataset": {
            "source": str(data.source),
            "name": str(data.name),
            "fingerprint": fingerprint,
            "num_nodes": int(n),
            "num_edges": num_edges,
            "num_features": int(data.num_features),
            "num_classes": int(data.num_classes),
            "split": data.split if isinstance(data.split, (int, str)) else str(data.split),
            "weighted": data.edge_weight is not None,
            "self_loops": num_self_loops,
        },
        "global": {
            "num_train": int(splits["train"].size),
            "num_val": int(splits["val"].size),
            "num_test": int(splits["test"].size),
            "train_class_counts": [int(c) for c in train_class_counts],
        },
        "edge_cut": edge_cut,
        "edge_cut_fraction": edge_cut / num_edges if num_edges else 0.0,
        "total_halo": int(sum(h.size for h in halo_of)),
        "parts": parts_meta,
        "content_hash": chash,
        "ffkernels_version": __version__,
    }
    _write_json_atomic(manifest, os.path.join(out_dir, MANIFEST_NAME))
    return manifest


# ============================================================================ reading
_TENSOR_KEYS = ("owned", "halo", "halo_owner", "x", "y", "train_idx", "val_idx", "test_idx", "rowptr", "col",
                "in_degree", "send_counts", "send_index", "recv_counts")
_OPTIONAL_KEYS = ("edge_weight", "weighted_deg_inv_sqrt", "nonloop_in_degree")


class Partition:
    """One rank's part of a partitioned graph (see :func:`load_partition`).

    Attributes: ``owned`` ``[n_k]`` (sorted global ids), ``halo`` / ``halo_owner`` ``[h_k]``,
    ``x`` ``[n_k, F]``, ``y`` ``[n_k]``, ``train_idx`` / ``val_idx`` / ``test_idx`` (positions
    into ``owned``), the local CSR ``rowptr`` ``[n_k + 1]`` / ``col`` ``[e_k]`` (sources in
    local ids: ``0..n_k-1`` owned, ``n_k..`` halo), ``edge_weight`` ``[e_k]`` or None,
    ``in_degree`` ``[n_k + h_k]`` (global in-degrees), ``weighted_deg_inv_sqrt`` (GCN factors
    of the stored edge weights, PyG's normalisation, or None), ``nonloop_in_degree`` (global
    in-degrees without self loops; only for a graph with self loops, else None: GCN replaces a
    node's self loops by one, as PyG's ``GCNConv``), ``send_counts`` / ``send_index`` / ``recv_counts``;
    plus ``manifest``, ``rank``, ``world_size``, ``num_owned``, ``num_halo``, ``num_local``,
    ``num_features``, ``num_classes``, ``source``, ``name``, ``global_counts``, ``directory``.
    """

    def __init__(self, tensors: dict, manifest: dict, rank: int, world_size: int, directory: str = ""):
        for key in _TENSOR_KEYS:
            setattr(self, key, tensors[key])
        for key in _OPTIONAL_KEYS:
            setattr(self, key, tensors.get(key))
        self.manifest = manifest
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.directory = directory
        self._graphs = {}

    # ------------------------------------------------------------------ sizes and metadata
    @property
    def num_owned(self) -> int:
        return int(self.owned.numel())

    @property
    def num_halo(self) -> int:
        return int(self.halo.numel())

    @property
    def num_local(self) -> int:
        return self.num_owned + self.num_halo

    @property
    def num_local_edges(self) -> int:
        return int(self.col.numel())

    @property
    def num_features(self) -> int:
        return int(self.manifest["dataset"]["num_features"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["dataset"]["num_classes"])

    @property
    def num_nodes(self) -> int:
        """Nodes of the whole graph."""
        return int(self.manifest["dataset"]["num_nodes"])

    @property
    def source(self) -> str:
        return str(self.manifest["dataset"]["source"])

    @property
    def name(self) -> str:
        return str(self.manifest["dataset"]["name"])

    @property
    def global_counts(self) -> dict:
        return self.manifest["global"]

    @property
    def device(self) -> torch.device:
        return self.owned.device

    def fingerprint(self) -> str:
        """The partitioning's content hash (dataset fingerprint, P, method, seed, assignment)."""
        return str(self.manifest["content_hash"])

    @property
    def dataset_fingerprint(self) -> str:
        return str(self.manifest["dataset"]["fingerprint"])

    # ------------------------------------------------------------------ local graph
    @property
    def gcn_in_degree(self) -> torch.Tensor:
        """``[n_k + h_k]`` int64 global in-degrees of GCN's graph minus its one self loop per node:
        ``nonloop_in_degree`` for a graph with self loops, else ``in_degree``."""
        return self.in_degree if self.nonloop_in_degree is None else self.nonloop_in_degree

    @property
    def gcn_uses_loop_graph(self) -> bool:
        """Whether GCN aggregation runs on PyG's loop graph (the whole graph has self loops)."""
        return self.nonloop_in_degree is not None or self.local_graph().has_self_loops

    def check_self_loop_semantics(self) -> None:
        """Raise when this partition was written before GCN replaced self loops (PyG's
        normalisation) and its graph may have self loops: its GCN factors would be stale."""
        if "self_loops" not in self.manifest["dataset"]:
            local = self.local_graph()
            if local.has_self_loops:
                raise ValueError(f"partition directory {self.directory!r} was written by an older ffkernels whose "
                                 f"GCN counted self loops twice; partition the graph again")

    def local_graph(self, device=None) -> Graph:
        """The local CSR as a square :class:`ffkernels.Graph` over the ``num_local`` local nodes
        (halo rows have no incoming edges), with GCN factors from the GLOBAL in-degrees
        (``(gcn_in_degree + 1) ** -0.5``: a node's self loops count once, as PyG's GCN).
        Built once per device and cached."""
        device = self.device if device is None else torch.device(device)
        key = str(device)
        if key not in self._graphs:
            n_k, h_k = self.num_owned, self.num_halo
            e_k = self.num_local_edges
            rowptr = self.rowptr.to(device, torch.int64)
            rowptr = torch.cat([rowptr, rowptr[-1:].expand(h_k)]) if h_k else rowptr
            index_dtype = torch.int32 if max(n_k + h_k, e_k) <= 2**31 - 1 else torch.int64
            counts = torch.cat([rowptr[1:n_k + 1] - rowptr[:n_k],
                                torch.zeros(h_k, dtype=torch.int64, device=device)])
            deg_inv_sqrt = (self.gcn_in_degree.to(device, torch.int64).to(torch.float32) + 1.0).rsqrt()
            graph = Graph(rowptr.to(index_dtype).contiguous(), self.col.to(device, index_dtype).contiguous(),
                          torch.arange(e_k, dtype=torch.int64, device=device),
                          n_k + h_k, in_degree=counts, deg_inv_sqrt=deg_inv_sqrt)
            if self.nonloop_in_degree is not None or graph.has_self_loops:
                # the whole graph has self loops: GCN runs on PyG's loop graph, as single-process
                # ops.aggregate does, with the rows in the single-process (global id) order
                graph._topology["self_loops"] = SelfLoops(graph, torch.cat([self.owned, self.halo]).to(device))
            self._graphs[key] = graph
        return self._graphs[key]

    def to(self, device) -> "Partition":
        """The same partition with every tensor on ``device`` (self when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        tensors = {}
        for key in _TENSOR_KEYS + _OPTIONAL_KEYS:
            value = getattr(self, key)
            tensors[key] = value.to(device) if isinstance(value, torch.Tensor) else value  # a dropped x stays None
        moved = Partition(tensors, self.manifest, self.rank, self.world_size, self.directory)
        moved._graphs = self._graphs  # the cache is keyed by device
        return moved

    def __repr__(self) -> str:
        return (f"Partition({self.name!r}, rank={self.rank}/{self.world_size}, owned={self.num_owned}, "
                f"halo={self.num_halo}, local_edges={self.num_local_edges}, method={self.manifest['method']!r})")


def _mismatch(directory, what, expected, got) -> ValueError:
    return ValueError(f"partition directory {directory!r}: {what} mismatch: expected {expected!r}, got {got!r}")


def read_manifest(out_dir) -> dict:
    """Read and check ``out_dir/manifest.json`` (format and structure); ``ValueError`` if bad."""
    directory = os.fspath(out_dir)
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"partition directory {directory!r}: no {MANIFEST_NAME} (write one with "
                         "ffkernels partition / partition_graph)")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"partition directory {directory!r}: cannot read {MANIFEST_NAME}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise _mismatch(directory, "manifest format", MANIFEST_FORMAT, got)
    for key in ("num_parts", "parts", "content_hash", "dataset", "global"):
        if key not in manifest:
            raise ValueError(f"partition directory {directory!r}: {MANIFEST_NAME} has no {key!r} entry")
    if len(manifest["parts"]) != manifest["num_parts"]:
        raise ValueError(f"partition directory {directory!r}: {MANIFEST_NAME} lists {len(manifest['parts'])} parts "
                         f"but num_parts is {manifest['num_parts']}")
    return manifest


def _check_part_tensors(directory, rank, t: dict, entry: dict, manifest: dict) -> None:
    def bad(msg):
        return ValueError(f"partition directory {directory!r}: part {rank} ({entry['file']}): {msg}")

    for key in _TENSOR_KEYS:
        if not isinstance(t.get(key), torch.Tensor):
            raise bad(f"missing tensor {key!r}")
    n_k, h_k, e_k = t["owned"].numel(), t["halo"].numel(), t["col"].numel()
    world = manifest["num_parts"]
    expected = {
        "owned": (n_k,), "halo": (h_k,), "halo_owner": (h_k,), "x": (n_k, manifest["dataset"]["num_features"]),
        "y": (n_k,), "rowptr": (n_k + 1,), "col": (e_k,), "in_degree": (n_k + h_k,), "send_counts": (world,),
        "recv_counts": (world,),
    }
    for key, shape in expected.items():
        if tuple(t[key].shape) != shape:
            raise bad(f"{key} has shape {tuple(t[key].shape)}, expected {shape}")
    for key, count in (("num_owned", n_k), ("num_halo", h_k), ("num_local_edges", e_k)):
        if entry.get(key) != count:
            raise _mismatch(directory, f"part {rank} {key} (manifest vs file)", entry.get(key), count)
    if int(t["rowptr"][0]) != 0 or int(t["rowptr"][-1]) != e_k:
        raise bad("rowptr must start at 0 and end at the number of local edges")
    if e_k and (int(t["col"].min()) < 0 or int(t["col"].max()) >= n_k + h_k):
        raise bad(f"col must index local nodes in [0, {n_k + h_k})")
    if int(t["recv_counts"].sum()) != h_k:
        raise bad(f"recv_counts sum to {int(t['recv_counts'].sum())}, expected the {h_k} halo nodes")
    if int(t["send_counts"].sum()) != t["send_index"].numel():
        raise bad("send_counts do not sum to the length of send_index")
    if t["send_index"].numel() and (int(t["send_index"].min()) < 0 or int(t["send_index"].max()) >= n_k):
        raise bad(f"send_index must hold owned positions in [0, {n_k})")
    for key in ("train_idx", "val_idx", "test_idx"):
        idx = t[key]
        if idx.dim() != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_k)):
            raise bad(f"{key} must hold owned positions in [0, {n_k})")
    if t.get("edge_weight") is not None and tuple(t["edge_weight"].shape) != (e_k,):
        raise bad(f"edge_weight has shape {tuple(t['edge_weight'].shape)}, expected ({e_k},)")
    if t.get("weighted_deg_inv_sqrt") is not None and tuple(t["weighted_deg_inv_sqrt"].shape) != (n_k + h_k,):
        raise bad("weighted_deg_inv_sqrt must have one entry per local node")
    if t.get("nonloop_in_degree") is not None and tuple(t["nonloop_in_degree"].shape) != (n_k + h_k,):
        raise bad("nonloop_in_degree must have one entry per local node")


def load_partition(out_dir, rank: int, world_size: int, expect: dict | None = None, device="cpu") -> Partition:
    """Load part ``rank`` of the partitioning in ``out_dir`` (reads the manifest and that part only).

    Checks, each failure a ``ValueError`` naming the directory, the field and both values:
    the manifest's format; ``num_parts == world_size``; ``0 <= rank < world_size``; the part
    file's sha256 against the manifest (a tampered, truncated or replaced file); the part's
    format, part number, part count and content hash against the manifest (a part of another
    partitioning); the tensors' shapes and index ranges; and every ``expect`` entry against the
    manifest's ``dataset`` entry (e.g. ``{"fingerprint": data.fingerprint()}``; keys not in
    ``dataset`` are compared with the top level: ``content_hash``, ``method``, ``seed``...).

    Args:
        out_dir: the directory :func:`partition_graph` wrote.
        rank, world_size: this process's rank and the number of ranks.
        expect: optional dict of values the manifest must hold.
        device: where to put the tensors.
    """
    directory = os.fspath(out_dir)
    manifest = read_manifest(directory)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if manifest["num_parts"] != world_size:
        raise ValueError(f"partition directory {directory!r}: num_parts mismatch: it holds {manifest['num_parts']} "
                         f"parts but the world size is {world_size} (partition again with --parts {world_size})")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    if expect:
        for key, want in expect.items():
            if key in manifest["dataset"]:
                have, where = manifest["dataset"][key], f"dataset {key}"
            elif key in manifest:
                have, where = manifest[key], key
            else:
                raise ValueError(f"partition directory {directory!r}: expect names {key!r}, which the manifest "
                                 "does not record")
            if have != want:
                raise ValueError(f"partition directory {directory!r}: {where} mismatch: the partitioning has "
                                 f"{have!r}, expected {want!r} (partition this data again)")
    entry = manifest["parts"][rank]
    path = os.path.join(directory, entry["file"])
    if not os.path.isfile(path):
        raise ValueError(f"partition directory {directory!r}: part {rank} file {entry['file']!r} is missing")
    with open(path, "rb") as fh:
        raw = fh.read()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != entry.get("sha256"):
        raise ValueError(f"partition directory {directory!r}: part {rank} file {entry['file']!r} sha256 mismatch: "
                         f"manifest has {entry.get('sha256')}, file has {sha} (the file was modified or belongs to "
                         "another partitioning)")
    try:
        tensors = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ValueError(f"partition directory {directory!r}: cannot read {entry['file']!r}: {reason}") from None
    del raw
    if not isinstance(tensors, dict) or tensors.get("format") != PART_FORMAT:
        got = tensors.get("format") if isinstance(tensors, dict) else type(tensors).__name__
        raise _mismatch(directory, f"part {rank} format", PART_FORMAT, got)
    if tensors.get("content_hash") != manifest["content_hash"]:
        raise ValueError(f"partition directory {directory!r}: part {rank} content_hash mismatch: manifest has "
                         f"{manifest['content_hash']}, {entry['file']} has {tensors.get('content_hash')} (a part "
                         "file of another partitioning)")
    if tensors.get("part") != rank or tensors.get("num_parts") != world_size:
        raise _mismatch(directory, f"{entry['file']} part/num_parts", (rank, world_size),
                        (tensors.get("part"), tensors.get("num_parts")))
    _check_part_tensors(directory, rank, tensors, entry, manifest)
    part = Partition(tensors, manifest, rank, world_size, directory)
    return part.to(device) if torch.device(device).type != "cpu" else part


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `ffkernels partition` or ffkernels.distributed.partition_graph")
