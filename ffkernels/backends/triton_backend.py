"""The ``triton`` backend: Triton kernels for CUDA tensors.

CPU tensors are served only under the Triton interpreter (``TRITON_INTERPRET=1``, set before
triton is imported): that is how the test-suite checks the kernels on machines without a
GPU. It is slow and never a default for CPU tensors (see ``ffkernels.backends.PREFERENCE``).
Same semantics as :mod:`ffkernels.backends.reference`.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from . import reference as _reference

NAME = "triton"

OPS = ("aggregate", "goodness_loss_grad", "linear_goodness_step", "sf_loss_grad", "linear_jvp", "dropout")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def availability():
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if not torch.cuda.is_available() and not _interpret():
        return "no CUDA device (set TRITON_INTERPRET=1 before importing triton to run its interpreter on CPU)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken install is a reason, not a crash
        return f"triton failed to import: {exc}"
    return None


def supports(op, device, dtype):
    if op not in OPS or dtype not in DTYPES:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and _interpret()


def _ops():
    from ..triton import ops  # noqa: F401  (imports triton, registers torch.ops.ffkernels_triton.*)
    return torch.ops.ffkernels_triton


def _goodness_k(goodness: str, width: int) -> float:
    return 1.0 if goodness == "sum" else 1.0 / max(width, 1)


def aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out=None):
    """out[i] = reduce_{e in row i} w_e * x[col[e]] (see ffkernels.ops.aggregate)."""
    if edge_weight is not None:
        edge_weight = edge_weight.to(torch.float32).contiguous()
    if deg_inv_sqrt is not None:
        deg_inv_sqrt = deg_inv_sqrt.to(torch.float32).contiguous()
    args = (rowptr.contiguous(), col.contiguous(), x.contiguous(), edge_weight, reduce,
            deg_inv_sqrt if reduce == "gcn" else None)
    if out is not None:
        _ops().aggregate_out(*args, out)
        return out
    return _ops().aggregate(*args)


def _symba_grad(h, g, positive, theta, temperature, alpha, pairs, k, out_dtype, inplace=False):
    total, coef = _reference.goodness_coefficients(g, positive, theta, "symba", temperature, alpha, pairs)
    if inplace:
        _ops().scale_rows_(h, coef.to(torch.float32), 2.0 * k)
        return total, h
    grad = _ops().scale_rows(h, coef.to(torch.float32), 2.0 * k, out_dtype)
    return total, grad


def goodness_loss_grad(h, positive, theta, goodness, loss, temperature, alpha, pairs, inplace=False):
    """``inplace=True``: grad_z overwrites ``h`` (contiguous; returned as grad_z)."""
    if not inplace:
        h = h.contiguous()
    k = _goodness_k(goodness, h.shape[1])
    ops = _ops()
    if loss == "ff":
        if inplace:
            terms, g = ops.ff_goodness_loss_grad_(h, positive.contiguous(), k, float(theta), float(temperature))
            return terms.sum(), g, h
        terms, g, grad = ops.ff_goodness_loss_grad(h, positive.contiguous(), k, float(theta), float(temperature))
        return terms.sum(), g, grad
    g = ops.row_goodness(h, k)
    total, grad = _symba_grad(h, g, positive, theta, temperature, alpha, pairs, k, h.dtype, inplace)
    return total, g, grad


def sf_loss_grad(h, train_idx, y_train, virtual_idx, tau):
    from ..triton import sf as _sf

    if virtual_idx.numel() > _sf.MAX_CLASSES:  # more classes than one logits tile: the formula
        return _reference.sf_loss_grad(h, train_idx, y_train, virtual_idx, tau)
    return _ops().sf_loss_grad(h.contiguous(), train_idx.contiguous(), y_train.contiguous(),
                               virtual_idx.contiguous(), float(tau))


def linear_goodness_step(x, weight, bias, positive, theta, goodness, loss, temperature, alpha, pairs,
                         h_out=None, grad_z_out=None):
    """``h_out`` / ``grad_z_out`` (both or neither): caller buffers for h and grad_z (float32,
    or float64); the weight gradient is then formed from the float32 grad_z."""
    from ..triton import linear as _lin

    x = x.contiguous()
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    dout = weight.shape[0]
    k = _goodness_k(goodness, dout)
    ops = _ops()
    fused = loss == "ff" and dout <= _lin.MAX_FUSED_DOUT
    if fused and h_out is not None:
        g, terms = ops.linear_relu_goodness_ff_out(x, weight, bias, positive.contiguous(), k, float(theta),
                                                   float(temperature), h_out, grad_z_out)
        h, grad, total = h_out, grad_z_out, terms.sum()
    elif fused:
        h, g, terms, grad = ops.linear_relu_goodness_ff(x, weight, bias, positive.contiguous(), k,
                                                        float(theta), float(temperature))
        total = terms.sum()
    else:
        if h_out is not None:
            h = h_out
            partial = ops.linear_relu_sumsq_out(x, weight, bias, 0, h_out)
        else:
            h, partial = ops.linear_relu_sumsq(x, weight, bias, 0)
        g = partial.sum(dim=1) * k
        total, coef = _reference.goodness_coefficients(g, positive, theta, loss, temperature, alpha, pairs)
        if grad_z_out is not None:
            ops.scale_rows_out(h, coef.to(torch.float32), 2.0 * k, grad_z_out)
            grad = grad_z_out
        else:
            grad = ops.scale_rows(h, coef.to(torch.float32), 2.0 * k, x.dtype)
    xg = x if grad.dtype == x.dtype else x.to(grad.dtype)
    grad_weight = (grad.t() @ xg).to(weight.dtype)
    grad_bias = grad.sum(dim=0, dtype=torch.float32).to(bias.dtype) if bias is not None else None
    return total, g, grad_weight, grad_bias, h


def linear_jvp(x, dx, weight, tangent_weight, bias, tangent_bias):
    """``(y, dy)``: both outputs from one kernel (``ffkernels/triton/linear_jvp.py``)."""
    def c(t):
        return None if t is None else t.contiguous()
    return _ops().linear_jvp(x.contiguous(), c(dx), weight.contiguous(), c(tangent_weight), c(bias), c(tangent_bias))


def dropout(x, p, seed, out=None):
    """Counter-based inverted dropout (``ffkernels/triton/dropout.py``)."""
    if out is not None:
        _ops().dropout_out(x, float(p), int(seed), out)
        return out
    return _ops().dropout(x, float(p), int(seed))
