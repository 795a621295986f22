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
        deg_inv_sqrt: ``[N]`` float32 ``(in_degree + 1) ** -0.5``, GCN's symmetric scaling with
            the implicit self loop.

    Duplicate edges are kept as multi-edges and self loops as ordinary edges, as PyG does.
    """

    def __init__(self, rowptr, col, edge_perm, num_nodes, in_degree=None, deg_inv_sqrt=None):
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
        self._transposed = None
        self._row = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edge_index(cls, edge_index, num_nodes: int | None = None) -> "Graph":
        """Validate ``edge_index`` ``[2, E]`` (row 0 source, row 1 destination) and build CSR.

        Args:
            edge_index: ``[2, E]`` integer tensor.
            num_nodes: number of nodes; defaults to ``max(edge_index) + 1`` (0 when E = 0).

        Raises:
            TypeError: ``edge_index`` is not an integer tensor, or ``num_nodes`` not an int.
            ValueError: wrong shape, negative or out-of-range indices.
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
        return cls(rowptr.to(index_dtype), col.to(index_dtype).contiguous(), perm, num_nodes, in_degree=counts)

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
            t.edge_perm = self.edge_perm[t.edge_perm]
            t._transposed = self
            self._transposed = t
        return self._transposed

    def to(self, device) -> "Graph":
        device = torch.device(device)
        if device == self.device:
            return self
        return Graph(self.rowptr.to(device), self.col.to(device), self.edge_perm.to(device),
                     self.num_nodes, self.in_degree.to(device), self.deg_inv_sqrt.to(device))

    def to_torch_sparse_csr(self, values: torch.Tensor | None = None, dtype=torch.float32) -> torch.Tensor:
        """The adjacency as a ``torch.sparse_csr_tensor`` ``[N, N]`` (for baselines and tests)."""
        if values is None:
            values = torch.ones(self.num_edges, dtype=dtype, device=self.device)
        return torch.sparse_csr_tensor(self.rowptr.to(torch.int64), self.col.to(torch.int64), values,
                                       (self.num_nodes, self.num_nodes))

    def __repr__(self) -> str:
        return (f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"index_dtype={self.index_dtype}, device={self.device})")


def as_graph(graph, num_nodes: int | None = None, name: str = "graph") -> Graph:
    """Accept a :class:`Graph`, an ``edge_index`` tensor or a PyG ``Data`` and return a Graph.

    Raw ``edge_index`` tensors are converted on every call; build the Graph once for speed.
    """
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, torch.Tensor):
        return Graph.from_edge_index(graph, num_nodes)
    edge_index = getattr(graph, "edge_index", None)
    if isinstance(edge_index, torch.Tensor):  # torch_geometric.data.Data and friends
        return Graph.from_edge_index(edge_index, getattr(graph, "num_nodes", num_nodes))
    raise TypeError(f"{name} must be an ffkernels.Graph, an edge_index tensor or a PyG Data, "
                    f"got {type(graph).__name__}")
