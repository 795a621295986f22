"""Autograd formulas of the compiled ops (``torch.ops.ffkernels.*``, ``torch.ops.ffkernels_triton.*``).

``aggregate`` gets a real backward, so it is a drop-in for backprop models too:

- ``grad_x`` is the transposed aggregation, run by the same kernel on the transposed CSR
  (built once per graph and cached): ``A^T g`` (sum), ``A^T (g / deg)`` (mean),
  ``D^-1/2 (A^T + I) D^-1/2 g`` (gcn); ``max`` routes ``g`` to the edges that attain the maximum
  (ties share it equally, like ``torch.amax``), in edge chunks of bounded memory;
- ``grad_edge_weight`` / ``grad_deg_inv_sqrt`` (only when they require grad) from the per-edge
  products ``<g[row_e], x[col_e]>``, in edge chunks of bounded memory.

The goodness, linear-step and SF ops return their own gradient in closed form and have no
autograd formula: their backward raises (instead of torch's silent "autograd not implemented"
fallback, which returns a tensor with a dummy ``grad_fn`` and leaves ``.grad`` None).
"""
from __future__ import annotations

import weakref

import torch

# Edges per chunk in the edge-wise backward formulas: about 64 MiB of float32 temporaries.
_CHUNK_ELEMENTS = 1 << 24


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def csr_rows(rowptr: torch.Tensor, num_edges: int) -> torch.Tensor:
    """``[E]`` int64 destination row of each CSR edge."""
    counts = (rowptr[1:] - rowptr[:-1]).to(torch.int64)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=rowptr.device), counts,
                                   output_size=num_edges)


class _Transposed:
    def __init__(self, rowptr: torch.Tensor, col: torch.Tensor):
        n = rowptr.numel() - 1
        col64 = col.to(torch.int64)
        # CSR edges are sorted by (row, col): a stable sort by col gives (col, row) order, so each
        # transposed row lists its neighbours in increasing order (deterministic).
        self.perm = torch.argsort(col64, stable=True)
        self.col = csr_rows(rowptr, col.numel()).index_select(0, self.perm).to(col.dtype).contiguous()
        # (index_add_, not bincount: a static [n] shape, so the backward also traces under torch.compile)
        counts = torch.zeros(n, dtype=torch.int64, device=col.device).index_add_(0, col64, torch.ones_like(col64))
        rp = torch.zeros(n + 1, dtype=torch.int64, device=col.device)
        torch.cumsum(counts, 0, out=rp[1:])
        self.rowptr = rp.to(rowptr.dtype)


# Keyed by the identity of the CSR tensors (a Graph keeps them for its lifetime), checked against
# weak references and version counters so that a freed or modified tensor never hits a stale entry.
_transposes: dict = {}


def transposed_csr(rowptr: torch.Tensor, col: torch.Tensor) -> _Transposed:
    if type(rowptr) is not torch.Tensor or type(col) is not torch.Tensor:
        return _Transposed(rowptr, col)  # fake / functional tensors of a trace: never cached
    key = (id(rowptr), id(col))
    hit = _transposes.get(key)
    if (hit is not None and hit[0]() is rowptr and hit[1]() is col
            and hit[2] == (rowptr._version, col._version)):
        return hit[3]
    t = _Transposed(rowptr, col)
    if len(_transposes) > 32:
        for k in [k for k, v in _transposes.items() if v[0]() is None or v[1]() is None]:
            del _transposes[k]
    _transposes[key] = (weakref.ref(rowptr), weakref.ref(col), (rowptr._version, col._version), t)
    return t


def _edge_chunks(num_edges: int, width: int):
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    for e0 in range(0, num_edges, step):
        yield e0, min(num_edges, e0 + step)


def _edge_dots(rows, col64, a, b, acc):
    """``t_e = <a[rows_e], b[col_e]>`` in ``acc``, chunked over edges."""
    out = torch.empty(col64.numel(), dtype=acc, device=a.device)
    for e0, e1 in _edge_chunks(col64.numel(), a.shape[1]):
        out[e0:e1] = (a.index_select(0, rows[e0:e1]).to(acc) * b.index_select(0, col64[e0:e1]).to(acc)).sum(1)
    return out


def _max_backward(rowptr, col, x, edge_weight, out, grad, need_x, need_w):
    """Route ``grad`` to the edges whose message equals the row's maximum (shared among ties)."""
    acc = _acc(x.dtype)
    n, f = out.shape
    rows = csr_rows(rowptr, col.numel())
    col64 = col.to(torch.int64)
    count = torch.zeros(n, f, dtype=acc, device=x.device)

    def hits(e0, e1):
        msg = x.index_select(0, col64[e0:e1]).to(acc)
        if edge_weight is not None:
            msg = msg * edge_weight[e0:e1].to(acc).unsqueeze(1)
        return msg, msg.to(x.dtype) == out.index_select(0, rows[e0:e1])

    for e0, e1 in _edge_chunks(col.numel(), f):
        count.index_add_(0, rows[e0:e1], hits(e0, e1)[1].to(acc))
    share = grad.to(acc) / count.clamp_min(1)
    grad_x = torch.zeros(n, f, dtype=acc, device=x.device) if need_x else None
    grad_w = torch.empty(col.numel(), dtype=edge_weight.dtype, device=x.device) if need_w else None
    for e0, e1 in _edge_chunks(col.numel(), f):
        msg, hit = hits(e0, e1)
        g_msg = share.index_select(0, rows[e0:e1]) * hit
        if need_w:
            grad_w[e0:e1] = (g_msg * x.index_select(0, col64[e0:e1]).to(acc)).sum(1).to(grad_w.dtype)
        if need_x:
            if edge_weight is not None:
                g_msg = g_msg * edge_weight[e0:e1].to(acc).unsqueeze(1)
            grad_x.index_add_(0, col64[e0:e1], g_msg)
    return (grad_x.to(x.dtype) if need_x else None), grad_w


def make_aggregate_autograd(kernel):
    """``(setup_context, backward)`` for an aggregate op whose forward is
    ``kernel(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt)``."""

    def setup_context(ctx, inputs, output):
        rowptr, col, x, edge_weight, reduce, deg_inv_sqrt = inputs
        ctx.reduce = reduce
        ctx.save_for_backward(rowptr, col, x, edge_weight, deg_inv_sqrt, output if reduce == "max" else None)

    def backward(ctx, grad):
        rowptr, col, x, edge_weight, scale, out = ctx.saved_tensors
        reduce = ctx.reduce
        _, _, need_x, need_w, _, need_s = ctx.needs_input_grad
        need_w = need_w and edge_weight is not None
        need_s = need_s and scale is not None and reduce == "gcn"
        grad = grad.contiguous()
        grad_x = grad_w = grad_s = None
        if reduce == "max":
            grad_x, grad_w = _max_backward(rowptr, col, x, edge_weight, out, grad, need_x, need_w)
            return None, None, grad_x, grad_w, None, None
        acc = _acc(x.dtype)
        deg = (rowptr[1:] - rowptr[:-1]).to(acc).clamp_min(1).unsqueeze(1)
        if need_x:
            t = transposed_csr(rowptr, col)
            w_t = None if edge_weight is None else edge_weight.index_select(0, t.perm).contiguous()
            g = (grad.to(acc) / deg).to(grad.dtype) if reduce == "mean" else grad
            grad_x = kernel(t.rowptr, t.col, g, w_t, "gcn" if reduce == "gcn" else "sum",
                            scale if reduce == "gcn" else None)
        if need_w or need_s:
            rows = csr_rows(rowptr, col.numel())
            col64 = col.to(torch.int64)
            dots = _edge_dots(rows, col64, grad, x, acc)  # <g[row_e], x[col_e]>
            if reduce == "mean":
                dots = dots / deg.squeeze(1).index_select(0, rows)
            if reduce == "gcn":
                s = scale.to(acc)
                s_row, s_col = s.index_select(0, rows), s.index_select(0, col64)
                if need_w:
                    grad_w = (s_row * s_col * dots).to(edge_weight.dtype)
                if need_s:
                    u = dots if edge_weight is None else dots * edge_weight.to(acc)
                    gs = 2.0 * s * (grad.to(acc) * x.to(acc)).sum(1)
                    gs.index_add_(0, rows, s_col * u)
                    gs.index_add_(0, col64, s_row * u)
                    grad_s = gs.to(scale.dtype)
            elif need_w:
                grad_w = dots.to(edge_weight.dtype)
        return None, None, grad_x, grad_w, None, grad_s

    return setup_context, backward


def no_autograd_backward(op: str):
    def backward(ctx, *grads):
        raise RuntimeError(f"{op} has no autograd formula: it returns its gradient in closed form. Call it "
                           f"under torch.no_grad() (or on detached inputs) and use the gradient it returns.")
    return backward


def register_raising(qualname: str, reason: str) -> None:
    """Register a backward for op ``qualname`` that raises ``RuntimeError(reason)`` (an op that
    is deliberately not differentiable, e.g. ``linear_jvp``: it is itself a forward-mode
    derivative)."""
    def backward(ctx, *grads):
        raise RuntimeError(reason)
    torch.library.register_autograd(qualname, backward)


def register_dropout(namespace: str, dropout_kernel) -> None:
    """``namespace::dropout``'s gradient: the same mask (same ``p`` and ``seed``) on the incoming
    gradient, i.e. the op itself."""
    def setup_context(ctx, inputs, output):
        ctx.p, ctx.seed = inputs[1], inputs[2]

    def backward(ctx, grad):
        return dropout_kernel(grad.contiguous(), ctx.p, ctx.seed), None, None
    torch.library.register_autograd(f"{namespace}::dropout", backward, setup_context=setup_context)


def register(namespace: str, aggregate_kernel, closed_form_ops=()) -> None:
    """Register the autograd formulas of ``namespace::aggregate`` and the raising backward of
    ``closed_form_ops`` (op names in ``namespace``)."""
    setup_context, backward = make_aggregate_autograd(aggregate_kernel)
    torch.library.register_autograd(f"{namespace}::aggregate", backward, setup_context=setup_context)
    for name in closed_form_ops:
        torch.library.register_autograd(f"{namespace}::{name}", no_autograd_backward(f"{namespace}::{name}"))
