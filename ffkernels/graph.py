"""The one graph container: CSR by destination node, built once from ``edge_index``.

Every op takes a :class:`Graph`, never a raw ``edge_index``: validation, sorting and the
degree/normalisation factors are paid once per graph, not once per call.
"""
from __future__ import annotations

import torch

from ._validation import check_tensor

_INT32_MAX = 2**31 - 1


class Graph:
    """A directed graph stored as CSR rows = destination nodes (PyG's ``edge_index[1]``).

    Attributes (all on :attr:`device`):
        rowptr: ``[N + 1]`` offsets into :attr:`col`; int32 when N and E fit, else int64.
        col: ``[E]`` source node of each edge, sorted by (destination, source).
        edge_perm: ``[E]`` int64, the position in the original ``edge_index`` of each CSR edge
            (so per-edge data given in the user's order can be permuted to CSR order).
        in_degree: ``[N]`` int64 number of incoming edges (duplicates and self loops count).
        deg_inv_sqrt: ``[N]`` float32 ``(in_degree + 1) ** -0.5``: the kernel-level factor of
            the ``gcn`` reduce for the graph as stored (every edge plus one implicit self loop).
            For a graph without self loops it is exactly GCN's symmetric scaling; a graph with
            self loops gets PyG's normalisation instead (see below), whose factors are
            :func:`ffkernels.ops.gcn_deg_inv_sqrt`.
        edge_weight: ``[E]`` float weight of each edge in CSR order, or None (unweighted). Every
            op on the graph (:func:`ffkernels.ops.aggregate`) and every layer uses it unless
            given other weights; :meth:`with_edge_weight` makes a weighted / unweighted view.

    Duplicate edges are kept as multi-edges and self loops as ordinary edges, as PyG does: the
    ``sum``, ``mean`` and ``max`` reduces see them as edges. The ``gcn`` reduce follows
    ``torch_geometric.nn.GCNConv`` (``add_remaining_self_loops``): the existing self loops of a
    node are replaced by ONE self loop whose weight is that of its (last) existing self loop, or
    1 if it has none, and the degree is the weighted in-degree of that graph. A graph without
    self loops therefore gets ``D^-1/2 (A + I) D^-1/2`` as before.
    """

    def __init__(self, rowptr, col, edge_perm, num_nodes, in_degree=None, deg_inv_sqrt=None, edge_weight=None):
        self.rowptr = rowptr
        self.col = col
        self.edge_perm = edge_perm
        self.num_nodes = int(num_nodes)
        if in_degree is None:
            in_degree = (rowptr[1:] - rowptr[:-1]).to(torch.int64)
        self.in_degree = in_degree
        if deg_inv_sqrt is None:
            deg_inv_sqrt = (in_degree.to(torch.float32) + 1.0).rsqrt()
        self.deg_inv_sqrt = deg_inv_sqrt
        if edge_weight is not None and edge_weight.numel() != col.numel():
            raise ValueError(f"edge_weight has {edge_weight.numel()} entries but the graph has {col.numel()} edges")
        self.edge_weight = edge_weight
        self._transposed = None
        self._row = None
        # what depends on the edges only (shared by the views of with_edge_weight)
        self._topology = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edge_index(cls, edge_index, num_nodes: int | None = None, edge_weight=None) -> "Graph":
        """Validate ``edge_index`` ``[2, E]`` (row 0 source, row 1 destination) and build CSR.

        Args:
            edge_index: ``[2, E]`` integer tensor.
            num_nodes: number of nodes; defaults to ``max(edge_index) + 1`` (0 when E = 0).
            edge_weight: optional ``[E]`` float weights in ``edge_index`` order (``[E, 1]`` is
                accepted); kept as :attr:`edge_weight` in CSR order. PyG's convention: a
                weight multiplies the edge's message, duplicates are separate weighted edges.

        Raises:
            TypeError: ``edge_index`` is not an integer tensor, ``num_nodes`` not an int, or
                ``edge_weight`` not a float tensor.
            ValueError: wrong shape, negative or out-of-range indices, or an ``edge_weight``
                of the wrong length or device.

        A graph with self loops also gets its :class:`SelfLoops` structure (PyG's GCN graph)
        here, once, so that no op builds it later (e.g. inside a ``torch.compile`` trace).
        """
        check_tensor(edge_index, "edge_index")
        if edge_index.dtype == torch.bool or edge_index.is_floating_point() or edge_index.is_complex():
            raise TypeError(f"edge_index must have an integer dtype, got {edge_index.dtype}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        num_edges = edge_index.shape[1]
        if num_nodes is not None:
            if isinstance(num_nodes, bool) or not isinstance(num_nodes, int):
                if isinstance(num_nodes, torch.Tensor) and num_nodes.numel() == 1 and not num_nodes.is_floating_point():
                    num_nodes = int(num_nodes)
                else:
                    raise TypeError(f"num_nodes must be an int, got {type(num_nodes).__name__}")
            if num_nodes < 0:
                raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        edge_index = edge_index.to(torch.int64)
        if num_edges > 0:
            lo = int(edge_index.min())
            hi = int(edge_index.max())
            if lo < 0:
                raise ValueError(f"edge_index contains a negative node index ({lo})")
            if num_nodes is None:
                num_nodes = hi + 1
            elif hi >= num_nodes:
                raise ValueError(
                    f"edge_index contains node index {hi} but num_nodes is {num_nodes} "
                    f"(indices must be in [0, num_nodes))"
                )
        elif num_nodes is None:
            num_nodes = 0

        src, dst = edge_index[0], edge_index[1]
        # Sort by (destination, source): rows become contiguous and each row reads its
        # neighbours in increasing address order. Stable, so the order is deterministic.
        key = dst * max(num_nodes, 1) + src
        _, perm = torch.sort(key, stable=True)
        col = src[perm]
        counts = torch.bincount(dst, minlength=num_nodes) if num_edges > 0 else torch.zeros(
            num_nodes, dtype=torch.int64, device=edge_index.device)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64, device=edge_index.device)
        torch.cumsum(counts, 0, out=rowptr[1:])
        index_dtype = torch.int32 if max(num_nodes, num_edges) <= _INT32_MAX else torch.int64
        weight_csr = None
        if edge_weight is not None:
            weight_csr = _check_edge_weight(edge_weight, num_edges, edge_index.device).index_select(0, perm)
        g = cls(rowptr.to(index_dtype), col.to(index_dtype).contiguous(), perm, num_nodes, in_degree=counts,
                edge_weight=None if weight_csr is None else weight_csr.contiguous())
        g._topology["has_self_loops"] = bool((src == dst).any()) if num_edges else False
        if g._topology["has_self_loops"]:
            g.self_loop_structure()
        return g

    def with_edge_weight(self, edge_weight) -> "Graph":
        """The same graph with other edge weights: ``[E]`` in the order of the ``edge_index`` it
        was built from (like ``ops.aggregate``'s ``edge_weight``), or None for an unweighted
        view. Shares the CSR arrays and the topology caches (no copy, no sort)."""
        weight_csr = None
        if edge_weight is not None:
            weight_csr = _check_edge_weight(edge_weight, self.num_edges, self.device).index_select(
                0, self.edge_perm).contiguous()
        return self._view(weight_csr)

    def _view(self, weight_csr) -> "Graph":
        """A view with ``weight_csr`` (CSR order, or None) as its weights."""
        g = Graph(self.rowptr, self.col, self.edge_perm, self.num_nodes, self.in_degree, self.deg_inv_sqrt,
                  edge_weight=weight_csr)
        g._row = self._row
        g._topology = self._topology
        return g

    # ------------------------------------------------------------------ properties
    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @property
    def device(self) -> torch.device:
        return self.col.device

    @property
    def index_dtype(self) -> torch.dtype:
        return self.col.dtype

    @property
    def is_weighted(self) -> bool:
        """Whether the graph carries :attr:`edge_weight`."""
        return self.edge_weight is not None

    @property
    def has_self_loops(self) -> bool:
        """Whether any edge ``i -> i`` exists (computed once: one device sync)."""
        flag = self._topology.get("has_self_loops")
        if flag is None:
            flag = bool((self.col.to(torch.int64) == self.row.to(torch.int64)).any()) if self.num_edges else False
            self._topology["has_self_loops"] = flag
        return flag

    def self_loop_structure(self) -> "SelfLoops":
        """The :class:`SelfLoops` structure of PyG's GCN normalisation (built once, cached)."""
        loops = self._topology.get("self_loops")
        if loops is None:
            loops = SelfLoops(self)
            self._topology["self_loops"] = loops
        return loops

    @property
    def row(self) -> torch.Tensor:
        """``[E]`` destination node of each CSR edge (built lazily, cached)."""
        if self._row is None:
            self._row = torch.repeat_interleave(
                torch.arange(self.num_nodes, device=self.device, dtype=self.col.dtype), self.in_degree,
                output_size=self.num_edges)
        return self._row

    def edge_index(self) -> torch.Tensor:
        """``[2, E]`` int64 edge_index in CSR order (source, destination)."""
        return torch.stack([self.col.to(torch.int64), self.row.to(torch.int64)])

    def transposed(self) -> "Graph":
        """The reversed graph (CSR by source node), built lazily and cached."""
        if self._transposed is None:
            ei = self.edge_index().flip(0)
            t = Graph.from_edge_index(ei, self.num_nodes)
            if self.edge_weight is not None:  # t.edge_perm still indexes this graph's CSR order here
                t.edge_weight = self.edge_weight.index_select(0, t.edge_perm).contiguous()
            t.edge_perm = self.edge_perm[t.edge_perm]
            t._transposed = self
            self._transposed = t
        return self._transposed

    def to(self, device) -> "Graph":
        device = torch.device(device)
        if device == self.device:
            return self
        g = Graph(self.rowptr.to(device), self.col.to(device), self.edge_perm.to(device),
                  self.num_nodes, self.in_degree.to(device), self.deg_inv_sqrt.to(device),
                  edge_weight=None if self.edge_weight is None else self.edge_weight.to(device))
        g._topology["has_self_loops"] = self.has_self_loops
        if self.has_self_loops:
            g.self_loop_structure()
        return g

    def to_torch_sparse_csr(self, values: torch.Tensor | None = None, dtype=torch.float32) -> torch.Tensor:
        """The adjacency as a ``torch.sparse_csr_tensor`` ``[N, N]`` (for baselines and tests):
        ``values`` in CSR order, default the graph's :attr:`edge_weight` (ones if unweighted).
        Multi-edges stay separate entries (``to_dense`` adds them)."""
        if values is None:
            values = torch.ones(self.num_edges, dtype=dtype, device=self.device) if self.edge_weight is None \
                else self.edge_weight.to(dtype)
        return torch.sparse_csr_tensor(self.rowptr.to(torch.int64), self.col.to(torch.int64), values,
                                       (self.num_nodes, self.num_nodes))

    def __repr__(self) -> str:
        weighted = ", weighted" if self.edge_weight is not None else ""
        return (f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"index_dtype={self.index_dtype}, device={self.device}{weighted})")


class SelfLoops:
    """PyG's GCN graph (``add_remaining_self_loops``) of a :class:`Graph`, built once per topology.

    ``graph``: the CSR :class:`Graph` of the edges that are not self loops plus ONE self loop
    per node (unweighted; its ``edge_perm`` is unused). Its edge ``e`` takes its weight from
    ``cat(w[nonloop_pos], loop_weight)[source_index[e]]`` where ``w`` is the parent's CSR
    weights and ``loop_weight`` ``[N]`` is 1, or for a node with self loops the weight of its
    last one in ``edge_index`` order (``loop_nodes`` / ``loop_last_pos``: those nodes and that
    edge's CSR position). ``loop_count`` ``[N]``: existing self loops per node.
    ``deg_inv_sqrt`` / ``norm``: the unweighted float32 GCN factors ``[N]`` and edge values
    ``[E']`` (``d_i^-1/2 d_j^-1/2``), precomputed.
    """

    def __init__(self, parent: Graph, source_order: torch.Tensor | None = None):
        """``source_order``: optional ``[N]`` int64 sort key of each node as a source (default
        its id): a row of :attr:`graph` lists its sources by it (a partition's local graph
        passes the global ids, so its rows sum in the single-process order)."""
        src = parent.col.to(torch.int64)
        dst = parent.row.to(torch.int64)
        n, device = parent.num_nodes, parent.device
        is_loop = src == dst
        self.nonloop_pos = torch.nonzero(~is_loop).view(-1)
        self.nonloop_row = dst.index_select(0, self.nonloop_pos)
        loop_pos = torch.nonzero(is_loop).view(-1)          # ascending CSR positions
        loop_node = dst.index_select(0, loop_pos)           # sorted (CSR rows are sorted)
        # CSR is sorted stably by (destination, source): a node's self loops keep their
        # edge_index order, so the last of each run is the last one given
        last = torch.ones_like(loop_node, dtype=torch.bool)
        if loop_node.numel() > 1:
            last[:-1] = loop_node[1:] != loop_node[:-1]
        self.loop_nodes = loop_node[last]
        self.loop_last_pos = loop_pos[last]
        self.loop_count = torch.zeros(n, dtype=torch.int64, device=device).index_add_(
            0, loop_node, torch.ones_like(loop_node))
        nodes = torch.arange(n, device=device)
        src2 = torch.cat([src.index_select(0, self.nonloop_pos), nodes])
        dst2 = torch.cat([self.nonloop_row, nodes])
        order = nodes if source_order is None else source_order.to(device, torch.int64)
        span = int(order.max()) + 1 if n else 1
        # sorted by (destination, source key), stably: Graph.from_edge_index's order for the default key
        self.source_index = torch.sort(dst2 * span + order.index_select(0, src2), stable=True)[1]
        counts = self.loop_count.new_ones(n).index_add_(0, self.nonloop_row, torch.ones_like(self.nonloop_row))
        rowptr = torch.zeros(n + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, 0, out=rowptr[1:])
        index_dtype = torch.int32 if max(n, src2.numel()) <= _INT32_MAX else torch.int64
        self.graph = Graph(rowptr.to(index_dtype), src2.index_select(0, self.source_index).to(index_dtype).contiguous(),
                           self.source_index, n, in_degree=counts)
        self.graph._topology["has_self_loops"] = n > 0
        self.num_nodes = n
        # (non-loop in-degree + 1) ** -0.5 in float32; NOT graph.deg_inv_sqrt, which adds another loop
        self.deg_inv_sqrt = self.degree(None, torch.float32).rsqrt()
        self.norm = self.edge_values(self.deg_inv_sqrt, None, torch.float32)

    def edge_values(self, deg_inv_sqrt: torch.Tensor, weight_csr: torch.Tensor | None, dtype) -> torch.Tensor:
        """``[E']`` ``d_i^-1/2 w_ij d_j^-1/2`` on :attr:`graph`'s edges (CSR order)."""
        g = self.graph
        row, col = g.row.to(torch.int64), g.col.to(torch.int64)
        d = deg_inv_sqrt.to(dtype)
        values = d.index_select(0, row) * d.index_select(0, col)
        if weight_csr is not None:
            values = values * self.weights(weight_csr, dtype)
        return values.contiguous()

    def loop_weight(self, weight_csr: torch.Tensor) -> torch.Tensor:
        """``[N]`` PyG's self-loop weight per node for the parent's CSR weights ``weight_csr``."""
        ones = torch.ones(self.num_nodes, dtype=weight_csr.dtype, device=weight_csr.device)
        return ones.index_copy(0, self.loop_nodes, weight_csr.index_select(0, self.loop_last_pos))

    def weights(self, weight_csr: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """``[E']`` the weights of :attr:`graph`'s edges (CSR order), differentiable in ``weight_csr``."""
        if weight_csr is None:
            return torch.ones(self.graph.num_edges, dtype=dtype, device=self.graph.device)
        w = weight_csr.to(dtype)
        return torch.cat([w.index_select(0, self.nonloop_pos), self.loop_weight(w)]).index_select(
            0, self.source_index)

    def degree(self, weight_csr: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """``[N]`` PyG's GCN degree: the weighted in-degree with the self loops replaced."""
        if weight_csr is None:
            return self.graph.in_degree.to(dtype)  # every node: its non-loop in-edges + its one loop
        w = weight_csr.to(dtype)
        return self.loop_weight(w).index_add(0, self.nonloop_row, w.index_select(0, self.nonloop_pos))


def _check_edge_weight(edge_weight, num_edges: int, device) -> torch.Tensor:
    """An ``[E]`` float tensor (``[E, 1]`` accepted) on ``device``, or a clear error."""
    check_tensor(edge_weight, "edge_weight")
    if not edge_weight.is_floating_point():
        raise TypeError(f"edge_weight must have a floating dtype, got {edge_weight.dtype}")
    if edge_weight.dim() == 2 and edge_weight.shape[1] == 1:
        edge_weight = edge_weight.view(-1)
    if edge_weight.dim() != 1 or edge_weight.shape[0] != num_edges:
        raise ValueError(f"edge_weight must have shape [{num_edges}] (one weight per edge, in edge_index "
                         f"order), got {tuple(edge_weight.shape)}")
    if edge_weight.device != torch.device(device):
        raise ValueError(f"edge_weight is on {edge_weight.device} but the graph is on {device}")
    return edge_weight


def as_graph(graph, num_nodes: int | None = None, name: str = "graph") -> Graph:
    """Accept a :class:`Graph`, an ``edge_index`` tensor or a PyG ``Data`` and return a Graph.

    A Graph keeps its own :attr:`Graph.edge_weight`; a PyG ``Data``'s ``edge_weight`` (if it has
    one) becomes the Graph's. Raw ``edge_index`` tensors and Data objects are converted on every
    call; build the Graph once for speed.
    """
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, torch.Tensor):
        return Graph.from_edge_index(graph, num_nodes)
    edge_index = getattr(graph, "edge_index", None)
    if isinstance(edge_index, torch.Tensor):  # torch_geometric.data.Data and friends
        weight = getattr(graph, "edge_weight", None)
        return Graph.from_edge_index(edge_index, getattr(graph, "num_nodes", num_nodes),
                                     edge_weight=weight if isinstance(weight, torch.Tensor) else None)
    raise TypeError(f"{name} must be an ffkernels.Graph, an edge_index tensor or a PyG Data, "
                    f"got {type(graph).__name__}")
