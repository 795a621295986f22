"""ForwardGNN's single-forward (SF) learning with virtual nodes: ``sf`` (docs/algorithms.md#sf).

Greedy layer-wise: each layer trains to its own early stop on the cached output of the frozen
layer below. Its prepared input (normalised + aggregated) is computed once per layer, and only
the ``n_train + C`` rows that carry the SF gradient are gathered for the step (a row-gathered
GEMM, no sparse op per step); the first layer's sparse input stays in a sparse + low-rank form.
Validation needs only the validation and virtual rows of the current layer's transform.
Inference: ``argmax sum_l softmax(H_l H_{l,V}^T / tau)`` on the graph where the training nodes
are linked to their class's virtual node.

Edge weights: a dataset's ``edge_weight`` is carried by the virtual-node graph (the virtual links
weigh 1), so GCN (PyG's ``GCNConv`` normalisation) and SAGE (the weighted mean) layers use it in
training and inference alike; GAT does not use edge weights and raises ``ValueError``.
"""
from __future__ import annotations

import warnings

import torch

from .. import ops
from ..nn.functional import draw_seed, keep_mask, normalize_rows
from ..nn.gat import FFGATConv
from ..ops.sf import sf_loss_grad_kernel
from ..train.metrics import accuracy, activation_sparsity
from ..train.options import Option, choice, positive_float
from ..train.registry import Model, Trainer, register
from .common import augment_with_virtual_nodes, build_layer, virtual_node_features

SF_MODELS = ("gcn", "sage", "gat")
#: The optimiser of every SF layer (ForwardGNN's): Adam, lr 1e-3, weight decay 5e-4.
SF_DEFAULTS = {"lr": 1e-3, "weight_decay": 5e-4}
#: ``sf``'s own: a larger rate with dropout (docs/algorithms.md#sf, "Beyond Cora-ML": measured on
#: every bundled dataset, the same defaults for all of them).
GREEDY_SF_DEFAULTS = {"lr": 1e-2, "weight_decay": 5e-4}
TAU = positive_float("tau", 1.0, "temperature of the logits against the virtual nodes")


class SFProblem:
    """The augmented graph and the index sets of one SF run, built once.

    Attributes: ``vg`` (:class:`~ffkernels.algorithms.common.VirtualGraph`), ``train_idx``, ``y_train``,
    ``val_idx``, ``test_idx``, ``num_classes``, ``step_rows`` = ``cat(train_idx, virtual_idx)``,
    ``val_rows`` = ``cat(val_idx, virtual_idx)`` and the local index sets into those gathers.
    ``data.edge_weight`` (if any) weighs the original edges of ``vg.graph``; the virtual links weigh 1.
    """

    def __init__(self, data, virtual_features: torch.Tensor):
        dev = data.x.device
        self.num_classes = data.num_classes
        self.y = data.y
        self.train_idx, self.val_idx, self.test_idx = data.train_idx, data.val_idx, data.test_idx
        self.y_train = data.y[data.train_idx]
        if self.y_train.numel() and int(self.y_train.min()) < 0:
            raise ValueError(f"dataset {data.name!r}: every training node needs a label (SF links it to its "
                             f"class's virtual node); found label -1 in train_idx")
        self.vg = augment_with_virtual_nodes(data.x, data.edge_index, data.train_idx, self.y_train,
                                             data.num_classes, virtual_features=virtual_features,
                                             edge_weight=getattr(data, "edge_weight", None))
        self.virtual_idx = self.vg.virtual_idx
        n_train, c = self.train_idx.numel(), self.num_classes
        self.step_rows = torch.cat([self.train_idx, self.virtual_idx])
        self.val_rows = torch.cat([self.val_idx, self.virtual_idx])
        self.local_train = torch.arange(n_train, device=dev)
        self.local_virtual = torch.arange(n_train, n_train + c, device=dev)
        self.num_real = self.vg.num_real
        # validate the index sets once with the public op; steps then call its unchecked core
        ops.sf_loss_grad(torch.zeros(n_train + c, 1, device=dev), self.local_train, self.y_train, self.local_virtual)

    def class_probs(self, h: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """``softmax(H_real H_V^T / tau)`` ``[N, C]`` (SF inference for one layer)."""
        return torch.softmax(ops.sf_logits(h, self.virtual_idx, tau, None)[: self.num_real], dim=1)


class _CSR:
    """A rectangular ``[R, F]`` CSR matrix multiplied by the library's own aggregation kernel.

    ``aggregate(sum)`` with per-edge weights is a CSR x dense product over a square structure:
    the matrix is padded to ``max(R, F)`` empty rows, so ``S @ X`` (``X`` ``[F, D]``) and, with
    the transposed structure (built on the first ``S^T`` product: only the training rows' operand
    needs it), ``S^T @ Y`` (``Y`` ``[R, D]``) run on the compiled kernels of the tensors' device
    (1.9x ``torch.sparse`` CSR on Cora-ML's first layer, one thread). The transpose's values are a
    permutation of ``S``'s, so a copy of ``S`` with other values (dropout) needs no conversion.
    """

    def __init__(self, csr: torch.Tensor):
        from .. import backends
        rows, cols = csr.shape
        self.shape, self.size = (rows, cols), max(rows, cols)
        self.index = torch.int32 if max(self.size, csr.values().numel()) < 2 ** 31 else torch.int64
        crow, col = csr.crow_indices(), csr.col_indices()
        self.values = csr.values().contiguous()
        self.rowptr = torch.cat([crow, crow[-1:].expand(self.size - rows)]).to(self.index).contiguous()
        self.col = col.to(self.index).contiguous()
        self._transposed = None
        self._buffers = {}
        self.kernel = backends.resolve("aggregate", None, self.values.device, self.values.dtype)

    def transposed(self):
        """``(rowptr_t, col_t, transpose_perm)``: the transposed structure (rows = features), a
        stable sort of the entries by column, built once."""
        if self._transposed is None:
            rows = self.shape[0]
            col = self.col.to(torch.int64)
            order = torch.argsort(col, stable=True)
            counts = torch.bincount(col, minlength=self.size)
            rowptr_t = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).to(self.index).contiguous()
            crow = self.rowptr[: rows + 1].to(torch.int64)
            row_of = torch.repeat_interleave(torch.arange(rows, device=col.device, dtype=self.index), crow.diff(),
                                             output_size=col.numel())
            self._transposed = (rowptr_t, row_of.index_select(0, order).contiguous(), order)
        return self._transposed

    @property
    def transpose_perm(self) -> torch.Tensor:
        return self.transposed()[2]

    def _padded(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` with zero rows up to ``size``, in a buffer kept for the next call of the same
        shape (a training step multiplies the same shapes every epoch)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape[1] != x.shape[1] or buf.dtype != x.dtype or buf.device != x.device:
            buf = self._buffers[key] = x.new_zeros(self.size, x.shape[1])
        buf[: x.shape[0]].copy_(x)
        return buf

    def matmul(self, x: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``S @ x`` ``[R, D]`` for ``x`` ``[F, D]``, or for ``x`` ``[size, D]`` whose rows past
        ``F`` are never read (no column of ``S`` points there): a caller that keeps its operand
        in such a buffer saves the copy into the padded one."""
        return self.matmul_full(x, values)[: self.shape[0]]

    def matmul_full(self, x: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`matmul` with all ``size`` rows of the kernel's output (the padding rows are
        zero: a caller may fill them instead of allocating)."""
        v = self.values if values is None else values
        if x.shape[0] != self.size:
            x = self._padded("x", x)
        return self.kernel.aggregate(self.rowptr, self.col, x.contiguous(), v, "sum", None)

    def matmul_t(self, y: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``S^T @ y`` ``[F, D]`` for ``y`` ``[R, D]``."""
        rows, cols = self.shape
        rowptr_t, col_t, perm = self.transposed()
        v = (self.values if values is None else values).index_select(0, perm)
        if rows < self.size:
            y = self._padded("y", y)
        return self.kernel.aggregate(rowptr_t, col_t, y.contiguous(), v, "sum", None)[:cols]


class RowsOperand:
    """A gathered block ``M`` ``[R, Fin]`` of a layer's prepared input, in the cheapest exact form.

    ``dense``: ``M`` itself. ``sparse``: ``M = S + sum_b Cm_b XV`` (per column block ``b``) where
    ``S`` (a :class:`_CSR`) is the aggregation of the real nodes' sparse features and the
    rank-``C`` term carries the virtual nodes' dense random features ``XV`` ``[C, F]`` through the
    coefficients ``Cm_b`` ``[R, C]`` (the aggregation is linear in the normalised input). On
    Cora-ML's first layer ``S`` is about 8% dense, so the step costs a third of the dense GEMMs.
    ``values`` replaces ``S``'s values (a dropped-out copy shares the structure).
    """

    def __init__(self, dense=None, sparse=None, coef=None, xv=None, blocks=1, values=None, train_rows=0):
        self.dense, self.sparse, self.coef, self.xv, self.blocks = dense, sparse, coef, xv, blocks
        self.values = values
        self.train_rows = train_rows  # the first rows, which input dropout hits (dense form)
        self._dropped = None          # dense form: dropped()'s buffer, reused step after step

    @property
    def num_rows(self) -> int:
        return self.dense.shape[0] if self.dense is not None else self.sparse.shape[0]

    def matmul_wt(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``M W^T + b``."""
        if self.dense is not None:
            return torch.addmm(bias, self.dense, weight.t()) if bias is not None else self.dense @ weight.t()
        z = self.sparse.matmul(weight.t(), self.values)
        f = self.xv.shape[1]
        for b in range(self.blocks):
            c = self.coef[:, b * self.xv.shape[0]:(b + 1) * self.xv.shape[0]]
            z.addmm_(c, self.xv @ weight[:, b * f:(b + 1) * f].t())
        if bias is not None:
            z += bias
        return z

    def dropped(self, p: float, generator: torch.Generator) -> "RowsOperand":
        """A copy with inverted dropout (probability ``p``) on the entries of the first
        ``train_rows`` rows (a dense input's aggregated training rows: the cheap placement, the
        step keeps one GEMM over the gathered rows; the virtual rows stay whole)."""
        if self.dense is None:
            raise ValueError("RowsOperand.dropped: a sparse first layer drops its input features "
                             "(ReceptiveFieldOperand)")
        if self._dropped is None:  # a fresh copy every step would pay its page faults
            self._dropped = self.dense.clone()
        rows = self.train_rows
        ops.dropout_kernel(self.dense[:rows], p, draw_seed(generator), out=self._dropped[:rows])
        return RowsOperand(dense=self._dropped, train_rows=rows)  # the previous step's copy is dead

    def to_dense(self) -> torch.Tensor:
        """``M`` as a dense ``[R, Fin]`` tensor (meant for a few rows, e.g. the virtual nodes')."""
        if self.dense is not None:
            return self.dense
        s, rows = self.sparse, self.sparse.shape[0]
        values = s.values if self.values is None else self.values
        m = _csr_tensor(s.rowptr[: rows + 1].to(torch.int64), s.col.to(torch.int64), values, s.shape).to_dense()
        f, c = self.xv.shape[1], self.xv.shape[0]
        for b in range(self.blocks):
            m[:, b * f:(b + 1) * f].addmm_(self.coef[:, b * c:(b + 1) * c], self.xv)
        return m

    def grad_weight(self, grad_z: torch.Tensor) -> torch.Tensor:
        """``grad_z^T M`` ``[Dout, Fin]``."""
        if self.dense is not None:
            return grad_z.t() @ self.dense
        gw = self.sparse.matmul_t(grad_z, self.values).t().contiguous()
        f, c = self.xv.shape[1], self.xv.shape[0]
        for b in range(self.blocks):
            gw[:, b * f:(b + 1) * f].addmm_((self.coef[:, b * c:(b + 1) * c].t() @ grad_z).t(), self.xv)
        return gw


class ReceptiveFieldOperand:
    """A sparse first layer's step input ``M = [A_t X_K ; M_V]`` kept factored: the training rows
    as the aggregation rows ``A_t`` over their receptive field ``K`` times that field's sparse
    normalised input ``X_K``, so input dropout hits the input features before the aggregation
    and the step transforms first: ``A_b (X_K W_b^T)`` and ``X_K^T (A_b^T dZ)`` (on Cora-ML's
    first layer 146k + 14k non-zeros per product, where the aggregated rows hold 453k).

    ``a``: per weight block, a :class:`_CSR` ``[R, |K|]`` (an identity block is a row
    selection); ``x``: ``X_K``, a :class:`_CSR` ``[|K|, F]`` (``field``: the sorted node indices
    ``K``; a virtual node's row is empty); ``coef``/``xv``: the low-rank term of the virtual nodes'
    own features in the training rows (see :class:`RowsOperand`); ``virtual``: the ``C`` virtual
    rows' prepared input, dense ``[C, B*F]``; ``values``: ``X_K``'s values after dropout. The
    low-rank term and the virtual rows stay whole.
    """

    def __init__(self, a, x, field, virtual, coef, xv, values=None):
        self.a, self.x, self.field, self.virtual = a, x, field, virtual
        self.coef, self.xv, self.values = coef, xv, values
        self.num_train = a[0].shape[0]
        # One weight block (GCN): the low-rank term's and the virtual rows' products with the
        # weight are one GEMM over [XV ; M_V] (2C rows) each way.
        self.low_rank = torch.cat([xv, virtual], 0) if len(a) == 1 else None
        self.held = None  # hold_weight()'s buffer

    @property
    def num_rows(self) -> int:
        return self.num_train + self.virtual.shape[0]

    def dropped(self, p: float, generator: torch.Generator) -> "ReceptiveFieldOperand":
        """A copy with inverted dropout (probability ``p``) on the non-zeros of ``X_K`` (the real
        nodes' input features; its zeros stay zero either way)."""
        kept = ops.dropout_kernel(self.x.values, p, draw_seed(generator))
        out = ReceptiveFieldOperand(self.a, self.x, self.field, self.virtual, self.coef, self.xv, kept)
        out.low_rank, out.held = self.low_rank, self.held
        return out

    def hold_weight(self, weight: torch.nn.Parameter) -> None:
        """Lay ``weight`` ``[Dout, F]`` out column-major for the stage, as the first ``F`` rows of
        a ``[size, Dout]`` buffer (the padded shape ``X_K``'s product takes): ``W^T`` is then the
        kernel's operand as it is, and ``X_K^T (A^T dZ)`` is the gradient in the weight's own
        layout (two transposing copies of ``[F, Dout]`` less per step: 1.1 of 7-9 ms on
        Cora-ML's first layer). One weight block only (GCN). The optimiser's moments follow the
        new layout at the next step (``LocalLayer.apply_gradients``)."""
        if self.low_rank is None or weight.dtype != torch.float32:
            return
        d, f = weight.shape
        self.held = weight.new_zeros(self.x.size, d)
        self.held[:f].copy_(weight.detach().t())
        weight.data = self.held[:f].t()

    def _held_wt(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The held ``[size, Dout]`` buffer when ``weight`` is still laid out in it."""
        held = self.held
        if held is not None and weight.data_ptr() == held.data_ptr() and weight.stride() == (1, held.shape[1]):
            return held
        return None

    def matmul_wt(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``M W^T + b`` ``[R + C, Dout]``: the training rows, then the virtual rows."""
        d, f, c = weight.shape[0], self.x.shape[1], self.xv.shape[0]
        if self.low_rank is not None:  # one block: A (X_K W^T) + coef (XV W^T), then M_V W^T
            held = self._held_wt(weight)
            p = self.x.matmul(weight.t() if held is None else held, self.values)  # [K, Dout]
            small = self.low_rank @ weight.t()  # [XV ; M_V] W^T: [2C, Dout]
            rows = self.num_rows
            z = self.a[0].matmul_full(p)  # [size, Dout]: the training rows, then zero rows
            if z.shape[0] >= rows:  # (the field holds the training and the virtual nodes)
                z = z[:rows]
                z[self.num_train:].copy_(small[c:])
            else:
                z = torch.cat([z[: self.num_train], small[c:]], 0)
            z[: self.num_train].addmm_(self.coef, small[:c])
            return z.add_(bias) if bias is not None else z
        w_blocks = [weight[:, b * f:(b + 1) * f] for b in range(len(self.a))]
        z = torch.empty(self.num_rows, d, dtype=weight.dtype, device=weight.device)
        zt = z[: self.num_train]
        wt = torch.cat([w.t() for w in w_blocks], 1)
        p = self.x.matmul(wt, self.values)  # [K, B*Dout]
        zt.zero_()
        for b, a in enumerate(self.a):
            zt += a.matmul(p[:, b * d:(b + 1) * d].contiguous())
        for b, w in enumerate(w_blocks):
            zt.addmm_(self.coef[:, b * c:(b + 1) * c], self.xv @ w.t())
        torch.mm(self.virtual, weight.t(), out=z[self.num_train:])
        if bias is not None:
            z += bias
        return z

    def grad_weight(self, grad_z: torch.Tensor) -> torch.Tensor:
        """``grad_z^T M`` ``[Dout, B*F]`` (in the held weight's layout when it is held)."""
        gt, gv = grad_z[: self.num_train], grad_z[self.num_train:]
        d, c = grad_z.shape[1], self.xv.shape[0]
        if self.low_rank is not None:  # X_K^T (A^T dZ) + [XV ; M_V]^T [coef^T dZ_t ; dZ_V], as [F, Dout]
            xtg = self.x.matmul_t(self.a[0].matmul_t(gt), self.values)
            # (coef^T grad: MKL runs it 6x faster than grad^T coef ([R, 7] coef, one thread))
            xtg.addmm_(self.low_rank.t(), torch.cat([self.coef.t() @ gt, gv], 0))
            return xtg.t() if self.held is not None else xtg.t().contiguous()
        g = [a.matmul_t(gt) for a in self.a]  # A_b^T grad: [K, Dout] each
        xtg = self.x.matmul_t(torch.cat(g, 1), self.values)  # [F, B*Dout]
        gw = torch.cat([xtg[:, b * d:(b + 1) * d].t() for b in range(len(g))], 1)
        f = xtg.shape[0]
        for b in range(len(g)):
            gw[:, b * f:(b + 1) * f].addmm_((self.coef[:, b * c:(b + 1) * c].t() @ gt).t(), self.xv)
        return gw.addmm_(gv.t(), self.virtual)


def _field_rows(ops_blocks, rows: torch.Tensor, n_total: int, dtype):
    """The aggregation rows ``rows`` of each block over their receptive field: ``(K, blocks)``
    with ``K`` the sorted field (indices into the ``n_total`` nodes) and each block a sparse CSR
    ``[len(rows), |K|]``."""
    dev = rows.device
    selected = []
    for op in ops_blocks:
        if op is None:  # the identity block: a row selection
            ones = torch.ones(rows.numel(), dtype=dtype, device=dev)
            selected.append((torch.arange(rows.numel() + 1, device=dev), rows.to(torch.int64), ones))
        else:
            csr = _select_csr_rows(op, rows)
            selected.append((csr.crow_indices(), csr.col_indices(), csr.values()))
    used = torch.zeros(n_total, dtype=torch.bool, device=dev)
    for _, col, _ in selected:
        used[col] = True
    field = used.nonzero().view(-1)
    position = torch.cumsum(used, 0) - 1
    blocks = [_csr_tensor(crow, position.index_select(0, col), values, (rows.numel(), field.numel()))
              for crow, col, values in selected]
    return field, blocks


SPARSE_DENSITY = 0.3  # below this fraction of non-zeros the sparse + low-rank form is used


def _density(x: torch.Tensor) -> float:
    return float(torch.count_nonzero(x)) / max(x.numel(), 1)


def _prepare_unnormalized(layer, x, graph):
    saved = layer.normalize
    layer.normalize = None
    try:
        return layer.prepare(x, graph)
    finally:
        layer.normalize = saved


def _csr_tensor(crow, col, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


def _sparse_rows(x: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``x`` (dense ``[R, F]``, R <= num_rows) as a sparse CSR ``[num_rows, F]`` (rows past R
    empty), built from its non-zeros without a dense temporary of its size."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = x.to_sparse_csr()
    crow = csr.crow_indices()
    crow = torch.cat([crow, crow[-1:].expand(num_rows - x.shape[0])])
    return _csr_tensor(crow, csr.col_indices(), csr.values(), (num_rows, x.shape[1]))


def _normalize_csr(csr: torch.Tensor, kind: str | None, eps: float = 1e-8) -> torch.Tensor:
    """``normalize_rows`` on a sparse CSR matrix (its values only): the same formula, the
    implicit zeros add nothing to a row's norm."""
    if kind is None or kind == "none":
        return csr
    crow, values = csr.crow_indices(), csr.values()
    rows = torch.repeat_interleave(torch.arange(csr.shape[0], device=values.device), crow.diff())
    sq = torch.zeros(csr.shape[0], dtype=values.dtype, device=values.device).index_add_(0, rows, values * values)
    if kind == "rms":
        sq /= csr.shape[1]
    elif kind != "l2":
        raise ValueError(f"normalize must be 'l2', 'rms' or None, got {kind!r}")
    scale = sq.sqrt_().add_(eps).reciprocal_()
    return _csr_tensor(crow, csr.col_indices(), values * scale.index_select(0, rows), csr.shape)


def _aggregation_blocks(layer, graph, dtype) -> list:
    """The layer's linear ``prepare`` as one sparse CSR operator ``[N, N]`` per weight block (None:
    the identity): GCN ``[A_gcn]`` (PyG's normalisation, the graph's weights), SAGE ``[I, M]``
    with ``M`` the (weighted) neighbour mean. None when the layer is not of that form."""
    from ..nn import FFGCNConv, FFSAGEConv
    from ..ops import _resolve_weight, gcn_edge_norm
    n = graph.num_nodes
    weight_csr = _resolve_weight(graph, None, dtype)
    if isinstance(layer, FFGCNConv):
        g2, norm = gcn_edge_norm(graph, weight_csr, dtype)
        return [_csr_tensor(g2.rowptr.to(torch.int64), g2.col.to(torch.int64), norm, (n, n))]
    if isinstance(layer, FFSAGEConv):
        row = graph.row.to(torch.int64)
        w = torch.ones(graph.num_edges, dtype=dtype, device=graph.device) if weight_csr is None else weight_csr
        total = torch.zeros(n, dtype=dtype, device=graph.device).index_add_(0, row, w)
        inv = torch.where(total != 0, 1.0 / torch.where(total != 0, total, torch.ones_like(total)),
                          torch.zeros_like(total))
        mean = _csr_tensor(graph.rowptr.to(torch.int64), graph.col.to(torch.int64),
                                       (w * inv.index_select(0, row)).contiguous(), (n, n))
        return [None, mean]
    return None


def _select_csr_rows(csr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of a sparse CSR matrix (in that order), as a sparse CSR matrix."""
    crow, col, values = csr.crow_indices(), csr.col_indices(), csr.values()
    start = crow.index_select(0, rows)
    counts = crow.index_select(0, rows + 1) - start
    new_crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    total = int(new_crow[-1])
    offset = torch.arange(total, device=col.device) - torch.repeat_interleave(new_crow[:-1], counts, output_size=total)
    pos = torch.repeat_interleave(start, counts, output_size=total) + offset
    return _csr_tensor(new_crow, col.index_select(0, pos), values.index_select(0, pos),
                                   (rows.numel(), csr.shape[1]))


def _hstack_csr(parts: list) -> torch.Tensor:
    """``[P_0 | P_1 | ...]`` of sparse CSR matrices with the same rows."""
    if len(parts) == 1:
        return parts[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        coo = [p.to_sparse_coo().coalesce() for p in parts]
    width = parts[0].shape[1]
    idx = torch.cat([c.indices() + torch.tensor([[0], [b * width]], device=c.indices().device)
                     for b, c in enumerate(coo)], 1)
    out = torch.sparse_coo_tensor(idx, torch.cat([c.values() for c in coo]),
                                  (parts[0].shape[0], width * len(parts))).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return out.to_sparse_csr()


def _sparse_operands(layer, h_in, problem, row_sets, blocks):
    """The sparse + low-rank :class:`RowsOperand` of each row set (the training rows'
    :class:`ReceptiveFieldOperand` for :data:`TRAIN_FIELD`), built sparse throughout: the real
    nodes' features go to CSR once, are normalised and aggregated as sparse matrices (an SpGEMM
    with the layer's aggregation operator), and only the gathered rows are kept. None when the
    aggregated features are too dense for the sparse form to pay."""
    ops_blocks = _aggregation_blocks(layer, problem.vg.graph, h_in.dtype)
    if ops_blocks is None or len(ops_blocks) != blocks:
        return None
    n_total, n_real, virtual_idx = h_in.shape[0], problem.num_real, problem.virtual_idx
    xn = _normalize_csr(_sparse_rows(h_in[:n_real], n_total), layer.normalize)  # virtual rows empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = [xn if op is None else op @ xn for op in ops_blocks]
    s_full = _hstack_csr(parts)
    del parts
    if s_full.values().numel() >= SPARSE_DENSITY * s_full.shape[0] * s_full.shape[1]:
        return None
    xv = normalize_rows(h_in.index_select(0, virtual_idx), layer.normalize)
    indicator = torch.zeros(n_total, virtual_idx.numel(), dtype=h_in.dtype, device=h_in.device)
    indicator[virtual_idx, torch.arange(virtual_idx.numel(), device=h_in.device)] = 1.0
    coef_full = _prepare_unnormalized(layer, indicator, problem.vg.graph)
    out = []
    for rows in row_sets:
        if isinstance(rows, str) and rows == TRAIN_FIELD:
            field, a = _field_rows(ops_blocks, problem.train_idx, n_total, h_in.dtype)
            virtual = RowsOperand(sparse=_CSR(_select_csr_rows(s_full, virtual_idx)), xv=xv, blocks=blocks,
                                  coef=coef_full.index_select(0, virtual_idx).contiguous()).to_dense()
            out.append(ReceptiveFieldOperand([_CSR(m) for m in a], _CSR(_select_csr_rows(xn, field)), field, virtual,
                                             coef_full.index_select(0, problem.train_idx).contiguous(), xv))
            continue
        csr = s_full if rows is None else _select_csr_rows(s_full, rows)
        coef = coef_full if rows is None else coef_full.index_select(0, rows).contiguous()
        out.append(RowsOperand(sparse=_CSR(csr), coef=coef, xv=xv, blocks=blocks))
    return out


#: A ``row_sets`` entry of :func:`make_row_operands`: the step rows' operand, a sparse input's
#: :class:`ReceptiveFieldOperand` or a dense input's gathered rows (``train_rows`` set).
TRAIN_FIELD = "train_field"


@torch.no_grad()
def make_row_operands(layer, h_in: torch.Tensor, problem: "SFProblem", row_sets, allow_sparse: bool = True,
                      consume_input: bool = False):
    """:class:`RowsOperand` for each index set in ``row_sets`` of ``layer.prepare(h_in)``.

    The sparse form is used when the layer's prepare is linear in the normalised input (GCN,
    SAGE) and the real nodes' aggregated features are sparse (built without a dense temporary
    of the input's size); else the dense gathered rows. A ``None`` entry in ``row_sets`` means
    all rows (the dense form is then the prepared input itself, not a copy); a
    :data:`TRAIN_FIELD` entry, the step rows' operand: with the sparse form their
    :class:`ReceptiveFieldOperand`, else the gathered ``step_rows`` with ``train_rows`` set.
    ``consume_input=True`` lets the dense form normalise ``h_in`` in place: a frozen layer's
    cached output is needed only to build the next layer's input, so greedy training holds one
    ``[N, D]`` activation less and its peak does not grow with depth.
    """
    graph = problem.vg.graph
    blocks = layer.weight.shape[1] // h_in.shape[1]
    # Aggregation only adds non-zeros, so a dense input (e.g. a post-ReLU hidden layer) is not
    # probed further.
    if (allow_sparse and blocks * h_in.shape[1] == layer.weight.shape[1]
            and h_in.dtype in (torch.float32, torch.float64) and _density(h_in) < SPARSE_DENSITY):
        out = _sparse_operands(layer, h_in, problem, row_sets, blocks)
        if out is not None:
            return out
    normalized = normalize_rows(h_in, layer.normalize, inplace=consume_input)
    prepared = _prepare_unnormalized(layer, normalized, graph)
    out = []
    for rows in row_sets:
        if isinstance(rows, str) and rows == TRAIN_FIELD:  # a dense input: the gathered step rows
            out.append(RowsOperand(dense=prepared.index_select(0, problem.step_rows).contiguous(),
                                   train_rows=problem.train_idx.numel()))
        else:
            out.append(RowsOperand(dense=prepared if rows is None else prepared.index_select(0, rows).contiguous()))
    return out


class _LinearStepper:
    """SF steps for a GCN/SAGE layer on its cached prepared input (gathered rows only)."""

    def __init__(self, layer, h_in: torch.Tensor, problem: "SFProblem", tau: float, consume_input: bool = False,
                 dropout: float = 0.0, input_dropout: float = 0.0, generator: torch.Generator | None = None):
        self.layer, self.problem, self.tau = layer, problem, tau
        self.step_input, self.val_input, self.full = make_row_operands(
            layer, h_in, problem, (TRAIN_FIELD, problem.val_rows, None), consume_input=consume_input)
        self.nv = problem.val_idx.numel()
        self.dropout, self.input_dropout, self.generator = dropout, input_dropout, generator
        self._held = False  # the first layer's weight, column-major while it trains

    def release(self) -> None:
        """The layer's weight back in its own (row-major) layout (the optimiser's moments follow
        at its next step, ``LocalLayer.apply_gradients``)."""
        weight = self.layer.weight
        if self._held and not weight.is_contiguous():
            weight.data = weight.data.contiguous()
        self._held = False

    @torch.no_grad()
    def step(self) -> float:
        layer, p = self.layer, self.problem
        rows = p.local_train.numel()
        operand = self.step_input
        if not self._held and isinstance(operand, ReceptiveFieldOperand):  # for the stage (end_stage undoes it)
            operand.hold_weight(layer.weight)
            self._held = True
        if self.input_dropout > 0:  # a sparse input's features before the aggregation, else the aggregated rows
            operand = operand.dropped(self.input_dropout, self.generator)
        h = operand.matmul_wt(layer.weight, layer.bias).relu_()
        seed = None
        if self.dropout > 0:  # and of their hidden units before the loss (the virtual rows stay whole)
            seed = draw_seed(self.generator)
            ops.dropout_kernel(h[:rows], self.dropout, seed, out=h[:rows])
        loss, grad_rows = sf_loss_grad_kernel(h, p.local_train, p.y_train, p.local_virtual, self.tau)
        # ReLU's backward in one pass (7x `grad * (h > 0)`, which converts a bool mask first)
        grad_z = torch.ops.aten.threshold_backward(grad_rows, h, 0.0)
        if seed is not None:  # the same mask (same seed and shape) on the gradient
            ops.dropout_kernel(grad_z[:rows], self.dropout, seed, out=grad_z[:rows])
        grads = {"weight": operand.grad_weight(grad_z),
                 "bias": grad_z.sum(0) if layer.bias is not None else None}
        layer.apply_gradients(grads)
        return float(loss)

    @torch.no_grad()
    def val_probs(self) -> torch.Tensor:
        h = self.val_input.matmul_wt(self.layer.weight, self.layer.bias).relu_()
        return torch.softmax(h[: self.nv] @ h[self.nv:].t() / self.tau, dim=1)

    @torch.no_grad()
    def output(self) -> torch.Tensor:
        return self.full.matmul_wt(self.layer.weight, self.layer.bias).relu_()


class _GATStepper:
    """SF steps for a GAT layer: the attention couples every row, so the forward is full."""

    def __init__(self, layer, prepared: torch.Tensor, problem: SFProblem, tau: float, dropout: float = 0.0,
                 input_dropout: float = 0.0, generator: torch.Generator | None = None):
        self.layer, self.problem, self.tau = layer, problem, tau
        self.full = prepared
        self.dropout, self.input_dropout, self.generator = dropout, input_dropout, generator

    def release(self) -> None:
        """Nothing to undo (the stepper protocol's end of stage: see :meth:`_LinearStepper.release`)."""

    def _mask(self, rows: int, width: int, p: float, device) -> torch.Tensor:
        keep = keep_mask((rows, width), p, self.generator, device)
        return keep.to(self.full.dtype).mul_(1.0 / (1.0 - p))

    def _objective(self, h):
        p = self.problem
        if not self.dropout:
            return ops.sf_loss_grad(h, p.train_idx, p.y_train, p.virtual_idx, self.tau, dense=True)
        keep = self._mask(p.train_idx.numel(), h.shape[1], self.dropout, h.device)
        h = h.clone()
        h[p.train_idx] *= keep  # the training rows' hidden units, before the loss
        loss, grad = ops.sf_loss_grad(h, p.train_idx, p.y_train, p.virtual_idx, self.tau, dense=True)
        grad[p.train_idx] *= keep
        return loss, grad

    @torch.no_grad()
    def step(self) -> float:
        prepared = self.full
        if self.input_dropout:  # the training rows' (normalised) input; the attention sees the rest whole
            train = self.problem.train_idx
            prepared = prepared.clone()
            prepared[train] *= self._mask(train.numel(), prepared.shape[1], self.input_dropout, prepared.device)
        loss, _, grads = self.layer.gradients(prepared, self.problem.vg.graph, self._objective)
        self.layer.apply_gradients(grads)
        return float(loss)

    @torch.no_grad()
    def val_probs(self) -> torch.Tensor:
        h = self.output()
        p = self.problem
        return torch.softmax(ops.sf_logits(h, p.virtual_idx, self.tau, p.val_idx), dim=1)

    @torch.no_grad()
    def output(self) -> torch.Tensor:
        return self.layer.transform(self.full, self.problem.vg.graph)


def check_gat_unweighted(algo: str, model: str, data) -> None:
    """Raise a clear ``ValueError`` when ``model`` is GAT and ``data`` has edge weights (GAT does
    not use them; ignoring them silently would train another model than the user asked for)."""
    if model == "gat" and getattr(data, "edge_weight", None) is not None:
        raise ValueError(f"{algo} with model='gat': GAT does not use edge weights (its attention replaces them, "
                         f"as in PyG's GATConv), and dataset {getattr(data, 'name', '?')!r} has edge_weight; use "
                         f"model='gcn' or 'sage', or drop the weights (Dataset.edge_weight = None)")


def _stepper(layer, h_in, problem, tau, consume_input=False, dropout=0.0, input_dropout=0.0, generator=None):
    if isinstance(layer, FFGATConv):
        if problem.vg.graph.is_weighted:
            raise ValueError("sf with model='gat': GAT does not use edge weights (its attention replaces them, as "
                             "in PyG's GATConv), and the data has edge_weight; use model='gcn' or 'sage', or drop "
                             "the weights (Dataset.edge_weight = None)")
        return _GATStepper(layer, layer.prepare(h_in, problem.vg.graph), problem, tau, dropout, input_dropout,
                           generator)
    return _LinearStepper(layer, h_in, problem, tau, consume_input, dropout, input_dropout, generator)



class SFModel(Model):
    """A stack of graph layers ``in -> hidden -> ... -> hidden`` and the virtual nodes' fixed
    random features ``[C, F]`` (a buffer). Inference: :meth:`class_probs`."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        f, c, hidden = dims["num_features"], dims["num_classes"], options["hidden"]
        widths = [f] + [hidden] * options["layers"]
        self.layers = torch.nn.ModuleList(
            build_layer(options["model"], widths[i], widths[i + 1], lr=options["lr"],
                        weight_decay=options["weight_decay"]) for i in range(options["layers"]))
        self.register_buffer("virtual_features", virtual_node_features(c, f, options["seed"]))
        # how many layers inference sums (select_layers: the prefix with the best validation)
        self.register_buffer("inference_layers", torch.tensor(options["layers"]))

    def _layer_outputs(self, data):
        """Yield ``(problem, H_l)`` layer by layer on ``data``'s virtual-node graph, computed
        exactly as training computes a frozen layer's output (so evaluating the training data
        reproduces the run's metrics bitwise); a deeper layer consumes the output below it."""
        problem = SFProblem(data, self.virtual_features.to(data.x.dtype))
        h = problem.vg.x
        for index, layer in enumerate(self.layers):
            h = _stepper(layer, h, problem, self.options["tau"], consume_input=index > 0).output()
            yield problem, h

    @torch.no_grad()
    def class_probs(self, data) -> torch.Tensor:
        """``sum_l softmax(H_l H_{l,V}^T / tau)`` ``[N, C]``."""
        total = None
        for index, (problem, h) in enumerate(self._layer_outputs(data)):
            if index >= int(self.inference_layers):
                break
            probs = problem.class_probs(h, self.options["tau"])
            total = probs if total is None else total.add_(probs)
        return total

    @torch.no_grad()
    def predict(self, data) -> torch.Tensor:
        return self.class_probs(data).argmax(dim=1)

    @torch.no_grad()
    def embed(self, data) -> list:
        return [h[: data.num_nodes].clone() for _, h in self._layer_outputs(data)]

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        probs = self.class_probs(data)
        return {name: accuracy(probs, data.y, idx) for name, idx in
                (("val_accuracy", data.val_idx), ("test_accuracy", data.test_idx), ("train_accuracy", data.train_idx))}


DROPOUT = Option("dropout", float, 0.5, "inverted dropout of the training rows' hidden units before the SF loss",
                 minimum=0.0, maximum=0.95)
INPUT_DROPOUT = Option("input_dropout", float, 0.2, "inverted dropout of the layer's input: a sparse input's "
                       "features before the aggregation, a dense input's aggregated training rows (GAT: the "
                       "training rows' input); the virtual nodes stay whole", minimum=0.0, maximum=0.95)
SELECT_LAYERS = Option("select_layers", bool, True, "inference sums only the first k layers, k chosen by the "
                       "validation accuracy of the summed prediction (the model keeps k)")


@register("sf", task="node", models=SF_MODELS, schedule="greedy", model=SFModel, defaults=GREEDY_SF_DEFAULTS,
          edge_weights=True, description="single-forward with virtual nodes, greedy layer-wise (ForwardGNN)",
          options=(TAU, choice("val_mode", "cumulative", ("cumulative", "layer"),
                                    "a layer's early stopping scores the summed softmax of the layers so far "
                                    "(cumulative, as inference) or its own (layer)"),
                   DROPOUT, INPUT_DROPOUT, SELECT_LAYERS))
class GreedySFTrainer(Trainer):
    """Greedy SF: stage ``s`` trains layer ``s`` on the frozen output of layer ``s - 1``."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        check_gat_unweighted(spec.name, options["model"], data)
        self.problem = SFProblem(data, model.virtual_features.to(data.x.dtype))
        self.num_stages = len(model.layers)
        self.tau = options["tau"]
        self.h = self.problem.vg.x           # the current stage's (frozen) input
        self.probs = torch.zeros(self.problem.num_real, data.num_classes, device=data.x.device)
        self.best_prefix = None  # select_layers: (validation accuracy, layers, summed prediction)
        self.sparsity = []  # per layer, on the test rows (recomputed by a resumed run's replay)
        self.stepper = None
        self.generator = torch.Generator(device=data.x.device).manual_seed(options["seed"] + 202)  # dropout masks

    def begin_stage(self, stage):
        # Layer 1 reads the dataset's features (kept); a deeper layer's input is the frozen output
        # below it, consumed here (normalised in place) so it is not held while this layer trains.
        layer = self.model.layers[stage]
        self.stepper = _stepper(layer, self.h, self.problem, self.tau, consume_input=stage > 0,
                                dropout=self.options["dropout"], input_dropout=self.options["input_dropout"],
                                generator=self.generator)
        self.h = None

    def stage_module(self, stage):
        return self.model.layers[stage]

    def train_epoch(self, stage, epoch):
        return self.stepper.step()

    def validate(self, stage):
        probs = self.stepper.val_probs()
        if self.options["val_mode"] == "cumulative":
            probs = probs + self.probs[self.problem.val_idx]
        return accuracy(probs, self.problem.y[self.problem.val_idx])

    def probe(self, stage):
        """Test accuracy of the prediction training would give if it stopped now: the frozen
        layers' summed class probabilities plus the current layer's."""
        probs = self.probs + self.problem.class_probs(self.stepper.output(), self.tau)
        return accuracy(probs, self.problem.y, self.problem.test_idx)

    def end_stage(self, stage):
        h = self.stepper.output()
        self.stepper.release()
        self.stepper = None  # frees the layer's prepared input
        self.probs += self.problem.class_probs(h, self.tau)
        if self.options["select_layers"]:
            # keep the prefix whose summed prediction validates best (fewest layers on ties): one
            # extra [N, C] buffer, whatever the depth
            val = accuracy(self.probs, self.problem.y, self.problem.val_idx)
            if self.best_prefix is None or val > self.best_prefix[0]:
                self.best_prefix = (val, stage + 1, self.probs.clone())
            if stage + 1 == self.num_stages:
                self.model.inference_layers.fill_(self.best_prefix[1])
                self.probs = self.best_prefix[2]
        test = self.problem.test_idx
        self.sparsity.append(activation_sparsity(h[test], self.problem.y[test]))
        self.h = h if stage + 1 < self.num_stages else None

    def finish(self):
        return {"activation_sparsity": self.sparsity, "inference_layers": int(self.model.inference_layers)}

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])

    def final_metrics(self):
        """From the frozen layers' outputs computed during training (no second pass over the
        graph): the same numbers ``SFModel.evaluate`` gives on the training data."""
        y = self.problem.y
        return {name: accuracy(self.probs, y, idx) for name, idx in
                (("val_accuracy", self.problem.val_idx), ("test_accuracy", self.problem.test_idx),
                 ("train_accuracy", self.problem.train_idx))}


__all__ = ["SFModel", "GreedySFTrainer", "SFProblem", "RowsOperand", "make_row_operands", "check_gat_unweighted",
           "SF_MODELS", "SF_DEFAULTS", "TAU"]
