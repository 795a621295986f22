"""The ``reference`` backend: plain torch, the executable specification of every op.

Every other backend must agree with these functions (float32: relative error < 1e-4).
They take already-validated, kernel-level arguments (CSR arrays, edge weights in CSR order)
and accumulate in float32 (float64 for float64 inputs).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAME = "reference"


def availability():
    return None


def supports(op, device, dtype):
    return True


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows_of(rowptr: torch.Tensor, num_edges: int) -> torch.Tensor:
    counts = (rowptr[1:] - rowptr[:-1]).to(torch.int64)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=rowptr.device), counts,
                                   output_size=num_edges)


def aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out=None):
    """out[i] = reduce_{e in row i} w_e * x[col[e]] (see ffkernels.ops.aggregate); ``out``: a
    buffer that receives the result (and is returned)."""
    if out is not None:
        return out.copy_(aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt))
    n = rowptr.numel() - 1
    acc = _acc_dtype(x.dtype)
    xs = x.to(acc)
    col64 = col.to(torch.int64)
    rows = _rows_of(rowptr, col.numel())
    msg = xs.index_select(0, col64)
    if reduce == "gcn":
        scale = deg_inv_sqrt.to(acc)
        msg = msg * scale.index_select(0, col64).unsqueeze(1)
    if edge_weight is not None:
        msg = msg * edge_weight.to(acc).unsqueeze(1)
    out = torch.zeros(n, x.shape[1], dtype=acc, device=x.device)
    if reduce == "max":
        # (also with no edges: keeps the result connected to x for autograd)
        out = out.index_reduce(0, rows, msg, "amax", include_self=False)
    else:
        out.index_add_(0, rows, msg)
    if reduce == "mean":
        deg = (rowptr[1:] - rowptr[:-1]).to(acc).clamp_min(1)
        out = out / deg.unsqueeze(1)
    elif reduce == "gcn":
        scale = deg_inv_sqrt.to(acc).unsqueeze(1)
        out = scale * (out + scale * xs)
    return out.to(x.dtype)


def goodness_coefficients(goodness, positive, theta, loss, temperature, alpha, pairs):
    """From per-row goodness ``G`` to ``(loss, dL/dG)``: docs/algorithms.md#losses."""
    if loss == "ff":
        s = (goodness - theta) / temperature
        pos = positive
        n_pos = int(pos.sum())
        n_neg = pos.numel() - n_pos
        target = pos.to(s.dtype)
        per_row = torch.where(pos, F.softplus(-s), F.softplus(s))
        size = torch.where(pos, torch.full_like(s, max(n_pos, 1)), torch.full_like(s, max(n_neg, 1)))
        total = (per_row / size).sum()
        coef = (torch.sigmoid(s) - target) / (temperature * size)
        return total, coef
    # symba
    p = pairs[:, 0].to(torch.int64)
    q = pairs[:, 1].to(torch.int64)
    num_pairs = max(pairs.shape[0], 1)
    diff = goodness.index_select(0, p) - goodness.index_select(0, q)
    total = F.softplus(-alpha * diff).sum() / num_pairs
    weight = alpha * torch.sigmoid(-alpha * diff) / num_pairs
    coef = torch.zeros_like(goodness)
    coef.index_add_(0, p, -weight)
    coef.index_add_(0, q, weight)
    return total, coef


# Rows per chunk of the in-place reference: bounds its temporaries to ~16 MiB whatever N is.
_INPLACE_CHUNK_ELEMENTS = 1 << 22


def goodness_loss_grad(h, positive, theta, goodness, loss, temperature, alpha, pairs, inplace=False):
    """``(loss, goodness, grad_z)``; ``inplace=True`` writes grad_z over ``h`` (returned as
    grad_z) and allocates nothing of h's size: rows are processed in bounded chunks, goodness
    first (the coefficients need every row's), then the scaling."""
    acc = _acc_dtype(h.dtype)
    k = 1.0 if goodness == "sum" else 1.0 / max(h.shape[1], 1)
    if not inplace:
        hs = h.to(acc)
        g = k * (hs * hs).sum(dim=1)
        total, coef = goodness_coefficients(g, positive, theta, loss, temperature, alpha, pairs)
        grad_z = (coef * (2.0 * k)).unsqueeze(1) * hs
        return total, g, grad_z.to(h.dtype)
    step = max(1, _INPLACE_CHUNK_ELEMENTS // max(h.shape[1], 1))
    chunks = h.split(step)
    g = torch.cat([k * (c.to(acc) * c.to(acc)).sum(dim=1) for c in chunks]) if chunks else \
        h.new_zeros(0, dtype=acc)
    total, coef = goodness_coefficients(g, positive, theta, loss, temperature, alpha, pairs)
    scale = coef * (2.0 * k)
    for c, sc in zip(chunks, scale.split(step)):
        c.copy_(sc.unsqueeze(1) * c.to(acc))
    return total, g, h


def linear_goodness_step(x, weight, bias, positive, theta, goodness, loss, temperature, alpha, pairs,
                         h_out=None, grad_z_out=None):
    """``h_out`` / ``grad_z_out`` (both or neither): receive h and grad_z; h_out is returned as h."""
    acc = _acc_dtype(x.dtype)
    xs = x.to(acc)
    z = xs @ weight.to(acc).t()
    if bias is not None:
        z = z + bias.to(acc)
    h = torch.relu(z)
    total, g, grad_z = goodness_loss_grad(h, positive, theta, goodness, loss, temperature, alpha, pairs)
    grad_weight = (grad_z.t() @ xs).to(weight.dtype)
    grad_bias = grad_z.sum(0).to(bias.dtype) if bias is not None else None
    if h_out is not None:
        h_out.copy_(h)
        grad_z_out.copy_(grad_z)
        return total, g, grad_weight, grad_bias, h_out
    return total, g, grad_weight, grad_bias, h.to(x.dtype)


def sf_loss_grad(h, train_idx, y_train, virtual_idx, tau):
    """The single-forward loss (docs/algorithms.md#sf): ``(loss, grad_rows)`` with
    ``logits = h[train] h[V]^T / tau``, ``loss = CrossEntropy(logits, y)``, ``R = (P - Y) / (tau n)``
    and ``grad_rows = cat(R h_V, R^T h_train)`` (``[n_train + C, D]``, h's dtype)."""
    acc = _acc_dtype(h.dtype)
    h_train = h.index_select(0, train_idx).to(acc)
    h_virtual = h.index_select(0, virtual_idx).to(acc)
    n_train = h_train.shape[0]
    logits = (h_train @ h_virtual.t()) / tau
    log_p = torch.log_softmax(logits, dim=1)
    loss = -log_p.gather(1, y_train.unsqueeze(1)).sum() / max(n_train, 1)
    r = log_p.exp_()
    r.scatter_add_(1, y_train.unsqueeze(1), torch.full((n_train, 1), -1.0, dtype=acc, device=h.device))
    r.mul_(1.0 / (tau * max(n_train, 1)))
    grad = torch.cat([r @ h_virtual, r.t() @ h_train], dim=0)
    return loss, grad.to(h.dtype)


_MASK32 = 0xFFFFFFFF


def _mix32(v: torch.Tensor) -> torch.Tensor:
    """Wellons' ``lowbias32`` on uint32 values held in int64 (products wrap, the mask keeps the
    low 32 bits: the same bits as the C++ and Triton kernels' uint32 arithmetic)."""
    v = v ^ (v >> 16)
    v = (v * 0x7FEB352D) & _MASK32
    v = v ^ (v >> 15)
    v = (v * 0x846CA68B) & _MASK32
    return v ^ (v >> 16)


def dropout_keep(numel: int, p: float, seed: int, device) -> torch.Tensor:
    """The keep mask of :func:`dropout`: element ``i`` is kept iff
    ``mix32(mix32(lo32(i) ^ s0) ^ (hi32(i) + s1)) >= floor(p * 2^32)``, ``(s0, s1)`` the seed's
    low and high 32 bits."""
    i = torch.arange(numel, dtype=torch.int64, device=device)
    s0, s1 = seed & _MASK32, (seed >> 32) & _MASK32
    h = _mix32((i & _MASK32) ^ s0)
    h = _mix32(h ^ (((i >> 32) + s1) & _MASK32))
    return h >= min(math.floor(p * 2.0 ** 32), _MASK32)


def dropout(x, p, seed, out=None):
    """Inverted dropout with a counter-based mask: ``x * (1 / (1 - p))`` where
    :func:`dropout_keep` keeps the element (row-major index), else 0 (also for NaN or Inf
    inputs), computed in float32 (float64 for float64 ``x``); ``out`` may be ``x``."""
    acc = _acc_dtype(x.dtype)
    keep = dropout_keep(x.numel(), p, seed, x.device).view(x.shape)
    scaled = x.to(acc) * torch.tensor(1.0 / (1.0 - p), dtype=acc, device=x.device)
    y = torch.where(keep, scaled, torch.zeros((), dtype=acc, device=x.device)).to(x.dtype)
    return y if out is None else out.copy_(y)


def linear_jvp(x, dx, weight, tangent_weight, bias, tangent_bias):
    """The dual-number linear layer: ``(y, dy)`` with ``y = x W^T + b`` and
    ``dy = x V^T + dx W^T + db`` (``V`` = ``tangent_weight``, ``db`` = ``tangent_bias``; an absent
    ``dx``, ``V``, ``b`` or ``db`` is zero), accumulated in float32 (float64 for float64 ``x``),
    returned in ``x``'s dtype."""
    acc = _acc_dtype(x.dtype)
    xs = x.to(acc)
    w = weight.to(acc)
    y = xs @ w.t()
    if bias is not None:
        y = y + bias.to(acc)
    dy = torch.zeros_like(y)
    if tangent_weight is not None:
        dy = dy + xs @ tangent_weight.to(acc).t()
    if dx is not None:
        dy = dy + dx.to(acc) @ w.t()
    if tangent_bias is not None:
        dy = dy + tangent_bias.to(acc)
    return y.to(x.dtype), dy.to(x.dtype)
