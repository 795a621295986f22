"""The dual-number linear layer in one Triton GEMM: ``y = x W^T + b`` and
``dy = x V^T + dx W^T + db`` together (``ffkernels.ops.linear_jvp``).

Each program owns a ``[BLOCK_M, BLOCK_N]`` tile of both outputs. Per K-step it loads its ``x``
and ``dx`` tiles once and the ``W^T`` and ``V^T`` tiles once, and feeds three tensor-core dots
into two float32 accumulators: ``acc_y += x W^T`` and ``acc_dy += x V^T + dx W^T`` (``x`` serves
two products, ``W^T`` two). The epilogue adds ``b`` / ``db`` and writes ``y`` and ``dy`` once: no
temporaries, no separate add. An absent ``dx`` or ``V`` drops its dot and its loads
(``HAS_DX`` / ``HAS_V`` are compile-time flags).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .linear import _precision


@triton.jit
def _linear_jvp_kernel(x_ptr, dx_ptr, w_ptr, v_ptr, b_ptr, db_ptr, y_ptr, dy_ptr, num_rows, din, dout,
                       HAS_DX: tl.constexpr, HAS_V: tl.constexpr, HAS_B: tl.constexpr, HAS_DB: tl.constexpr,
                       PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = rows < num_rows
    mask_n = cols < dout
    offs_k = tl.arange(0, BLOCK_K)
    acc_y = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_dy = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, din, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < din
        a_offs = rows[:, None] * din + kk[None, :]
        a_mask = mask_m[:, None] & mask_k[None, :]
        # W and V are [Dout, Din]: read their transposed tiles [BLOCK_K, BLOCK_N].
        b_offs = cols[None, :].to(tl.int64) * din + kk[:, None]
        b_mask = mask_k[:, None] & mask_n[None, :]
        a = tl.load(x_ptr + a_offs, mask=a_mask, other=0.0)
        w = tl.load(w_ptr + b_offs, mask=b_mask, other=0.0)
        if UPCAST:  # the CPU interpreter mis-multiplies bfloat16 tiles: widen them first
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc_y = tl.dot(a, w, acc_y, input_precision=PRECISION)
        if HAS_V:
            v = tl.load(v_ptr + b_offs, mask=b_mask, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            acc_dy = tl.dot(a, v, acc_dy, input_precision=PRECISION)
        if HAS_DX:
            da = tl.load(dx_ptr + a_offs, mask=a_mask, other=0.0)
            if UPCAST:
                da = da.to(tl.float32)
            acc_dy = tl.dot(da, w, acc_dy, input_precision=PRECISION)
    if HAS_B:
        acc_y += tl.load(b_ptr + cols, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if HAS_DB:
        acc_dy += tl.load(db_ptr + cols, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_offs = rows[:, None] * dout + cols[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]
    tl.store(y_ptr + out_offs, acc_y.to(y_ptr.dtype.element_ty), mask=out_mask)
    tl.store(dy_ptr + out_offs, acc_dy.to(dy_ptr.dtype.element_ty), mask=out_mask)


def _config(din: int, dout: int, interpret: bool, elem_bytes: int):
    # Two accumulators per program: half the N-tile of the single-output GEMM keeps the
    # registers of a 128 x 128 pair of float32 tiles within 8 warps.
    block_n = max(16, min(triton.next_power_of_2(max(dout, 1)), 128))
    block_k = max(16, min(triton.next_power_of_2(max(din, 1)), 32 if elem_bytes >= 4 else 64))
    block_m = 16 if interpret else (64 if block_n >= 128 else 128)
    num_warps = 8 if block_m * block_n >= 64 * 128 else 4
    return block_m, block_n, block_k, num_warps


def linear_jvp(x: torch.Tensor, dx, weight: torch.Tensor, tangent_weight, bias, tangent_bias,
               block_n: int | None = None):
    """Launch the kernel on contiguous inputs: ``(y, dy)`` ``[N, Dout]`` in ``x``'s dtype.
    ``block_n`` overrides the N-tile width (tests use it to force several tiles)."""
    n, din = x.shape
    dout = weight.shape[0]
    y = torch.empty((n, dout), dtype=x.dtype, device=x.device)
    dy = torch.empty((n, dout), dtype=x.dtype, device=x.device)
    if n == 0 or dout == 0:
        return y, dy
    interpret = x.device.type == "cpu"
    block_m, auto_block_n, block_k, num_warps = _config(din, dout, interpret, x.element_size())
    block_n = block_n or auto_block_n
    grid = (triton.cdiv(n, block_m), triton.cdiv(dout, block_n))
    _linear_jvp_kernel[grid](
        x, dx if dx is not None else x, weight, tangent_weight if tangent_weight is not None else weight,
        bias if bias is not None else weight, tangent_bias if tangent_bias is not None else weight, y, dy,
        n, din, dout, HAS_DX=dx is not None, HAS_V=tangent_weight is not None, HAS_B=bias is not None,
        HAS_DB=tangent_bias is not None, PRECISION=_precision(x.dtype),
        UPCAST=interpret and x.dtype == torch.bfloat16,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
        num_stages=1 if interpret else 3)
    return y, dy
