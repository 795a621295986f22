"""Fused linear local step: a Triton GEMM ``z = x W^T + b`` whose epilogue applies ReLU,
writes ``h``, and computes the goodness, the FF loss terms and ``grad_z`` without ``z``
ever leaving registers.

When one N-tile covers ``Dout`` (``Dout <= MAX_FUSED_DOUT``) and the loss is ``ff``, the
whole chain up to ``grad_z`` happens in the epilogue. Otherwise the epilogue writes ``h``
and per-tile partial sums of squares into ``[N, num_n_tiles]``; torch sums them
(deterministically), the coefficients come from the loss, and a row-scaling kernel forms
``grad_z``. ``grad_weight = grad_z^T x`` and ``grad_bias`` are left to cuBLAS.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .goodness import count_positive, ff_row_terms

MAX_FUSED_DOUT = 256


@triton.jit
def _linear_goodness_kernel(x_ptr, w_ptr, b_ptr, h_ptr, partial_ptr, pos_ptr, npos_ptr, grad_ptr,
                            g_ptr, term_ptr, num_rows, din, dout, num_n_tiles, k, theta, inv_temperature,
                            HAS_BIAS: tl.constexpr, FUSED_FF: tl.constexpr, PRECISION: tl.constexpr,
                            UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = rows < num_rows
    mask_n = cols < dout
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, din, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < din
        a = tl.load(x_ptr + rows[:, None] * din + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        # W is [Dout, Din]: read its transpose tile [BLOCK_K, BLOCK_N].
        b = tl.load(w_ptr + cols[None, :].to(tl.int64) * din + kk[:, None], mask=mask_k[:, None] & mask_n[None, :],
                    other=0.0)
        if UPCAST:  # the CPU interpreter mis-multiplies bfloat16 tiles: widen them first
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols, mask=mask_n, other=0.0).to(tl.float32)
        acc += bias[None, :]
    h = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)  # ReLU keeps NaN, as torch.relu
    h = tl.where(mask_n[None, :], h, 0.0)
    out_offs = rows[:, None] * dout + cols[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]
    tl.store(h_ptr + out_offs, h.to(h_ptr.dtype.element_ty), mask=out_mask)
    sq = tl.sum(h * h, axis=1)
    if FUSED_FF:
        g = k * sq
        is_pos = tl.load(pos_ptr + rows, mask=mask_m, other=0) != 0
        n_pos = tl.load(npos_ptr)
        term, coef = ff_row_terms(g, is_pos, n_pos, num_rows, theta, inv_temperature)
        tl.store(g_ptr + rows, g, mask=mask_m)
        tl.store(term_ptr + rows, term, mask=mask_m)
        grad = (2.0 * k * coef)[:, None] * h
        tl.store(grad_ptr + out_offs, grad.to(grad_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(partial_ptr + rows * num_n_tiles + pid_n, sq, mask=mask_m)


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs: exact IEEE products by default (the 1e-4 agreement contract);
    # FFKERNELS_TF32=1 trades that for tensor-core speed.
    if dtype == torch.float32 and os.environ.get("FFKERNELS_TF32") != "1":
        return "ieee"
    return "tf32"


def _config(n: int, din: int, dout: int, interpret: bool, elem_bytes: int = 4):
    block_n = max(16, min(triton.next_power_of_2(max(dout, 1)), MAX_FUSED_DOUT))
    # K-tile sized so that 3 pipeline stages of A and B stay near 100 KB of shared memory.
    max_k = 32 if (block_n >= 256 or elem_bytes >= 4) else 64
    block_k = max(16, min(triton.next_power_of_2(max(din, 1)), max_k))
    if interpret:
        block_m = 16
    else:
        block_m = 64 if block_n >= 256 else 128
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return block_m, block_n, block_k, num_warps


def linear_relu_goodness(x: torch.Tensor, weight: torch.Tensor, bias, positive: torch.Tensor, k: float,
                         theta: float, temperature: float, fused_ff: bool, block_n: int | None = None,
                         h_out: torch.Tensor | None = None, grad_out: torch.Tensor | None = None):
    """Launch the GEMM + epilogue.

    Returns ``(h, goodness_or_partial, loss_terms, grad_z)``; with ``fused_ff`` the second is
    the goodness ``[N]`` and ``grad_z``/``loss_terms`` are filled, otherwise it is the
    ``[N, num_n_tiles]`` partial sums of squares (un-scaled by ``k``) and the last two are None.
    ``block_n`` overrides the N-tile width (tests use it to force several tiles). ``h_out`` /
    ``grad_out``: caller buffers for h and (fused path) grad_z, any float dtype for grad_out.
    """
    n, din = x.shape
    dout = weight.shape[0]
    interpret = x.device.type == "cpu"
    block_m, auto_block_n, block_k, num_warps = _config(n, din, dout, interpret, x.element_size())
    block_n = block_n or auto_block_n
    num_n_tiles = triton.cdiv(max(dout, 1), block_n)
    fused_ff = fused_ff and num_n_tiles == 1
    h = torch.empty((n, dout), dtype=x.dtype, device=x.device) if h_out is None else h_out
    if fused_ff:
        g = torch.empty(n, dtype=torch.float32, device=x.device)
        terms = torch.empty(n, dtype=torch.float32, device=x.device)
        grad = torch.empty((n, dout), dtype=x.dtype, device=x.device) if grad_out is None else grad_out
        partial = g
        npos = count_positive(positive)
    else:
        partial = torch.empty((n, num_n_tiles), dtype=torch.float32, device=x.device)
        g = terms = grad = None
        npos = partial
    if n == 0:
        return h, (g if fused_ff else partial), terms, grad
    pos_u8 = positive.view(torch.uint8) if fused_ff else partial
    grid = (triton.cdiv(n, block_m), num_n_tiles)
    _linear_goodness_kernel[grid](
        x, weight, bias if bias is not None else x, h, partial, pos_u8, npos,
        grad if fused_ff else h, g if fused_ff else partial, terms if fused_ff else partial,
        n, din, dout, num_n_tiles, float(k), float(theta), 1.0 / float(temperature),
        HAS_BIAS=bias is not None, FUSED_FF=fused_ff, PRECISION=_precision(x.dtype),
        UPCAST=interpret and x.dtype == torch.bfloat16,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
        num_stages=1 if interpret else 3)
    return h, (g if fused_ff else partial), terms, grad
