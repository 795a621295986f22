"""The ``cuda`` backend: CUDA C++ kernels compiled into ``ffkernels._C`` (``csrc/cuda``).

Only the ops where hand-written CUDA beats Triton live here: today the sparse aggregation
(warp-per-row CSR SpMM, ``csrc/cuda/aggregate_kernel.cu``). Same semantics as
:mod:`ffkernels.backends.reference`.
"""
from __future__ import annotations

import torch

from .._extension import extension, extension_error

NAME = "cuda"

OPS = ("aggregate",)
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def availability():
    ext = extension()
    if ext is None:
        return extension_error() or "the compiled extension ffkernels._C is not loaded"
    has_cuda = getattr(ext, "has_cuda", None)
    if has_cuda is None or not has_cuda():
        return ("ffkernels._C was built without CUDA (rebuild with a CUDA build of torch and nvcc: "
                "FFKERNELS_WITH_CUDA=1 pip install --no-build-isolation .)")
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def supports(op, device, dtype):
    return op in OPS and torch.device(device).type == "cuda" and dtype in DTYPES


def aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out=None):
    """out[i] = reduce_{e in row i} w_e * x[col[e]] (see ffkernels.ops.aggregate)."""
    if rowptr.dtype != col.dtype:
        rowptr = rowptr.to(col.dtype)
    result = torch.ops.ffkernels.aggregate(rowptr, col, x.contiguous(), edge_weight, reduce,
                                           deg_inv_sqrt if reduce == "gcn" else None)
    # (a fresh CUDA tensor comes from the caching allocator: no page-fault cost to avoid)
    return result if out is None else out.copy_(result)


def goodness_loss_grad(*args, **kwargs):
    raise NotImplementedError("the cuda backend implements aggregate only; use backend='triton'")


def linear_goodness_step(*args, **kwargs):
    raise NotImplementedError("the cuda backend implements aggregate only; use backend='triton'")
