"""Fused goodness -> forward-forward loss -> gradient kernels (docs/algorithms.md#losses).

The FF kernel reads each row of ``h`` once, computes ``G_i = k * sum_d h_id^2`` in float32,
the logit ``s_i = (G_i - theta) / T``, the per-row loss term and the coefficient
``dL/dG_i``, and writes ``grad_z_i = 2 k dL/dG_i * h_i``. The per-row loss terms go to a
buffer that torch sums afterwards (a deterministic reduction; no float atomics).
The number of positive rows is read from a device tensor, so no host synchronisation.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rows up to this width are held in registers (one load of h); wider ones take two passes.
MAX_SINGLE_TILE_D = 1024


@triton.jit
def _softplus(x):
    # log(1 + exp(x)) without overflow.
    return tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def ff_row_terms(g, is_pos, n_pos, n_rows, theta, inv_temperature):
    """Per-row (loss term, dL/dG) of the FF loss for goodness ``g`` (float32 [BLOCK_M])."""
    s = (g - theta) * inv_temperature
    n_neg = n_rows - n_pos
    size = tl.where(is_pos, tl.maximum(n_pos, 1), tl.maximum(n_neg, 1)).to(tl.float32)
    term = tl.where(is_pos, _softplus(-s), _softplus(s)) / size
    sig = 1.0 / (1.0 + tl.exp(-s))
    coef = (sig - is_pos.to(tl.float32)) * inv_temperature / size
    return term, coef


@triton.jit
def _ff_goodness_kernel(h_ptr, pos_ptr, npos_ptr, grad_ptr, g_ptr, term_ptr,
                        num_rows, num_cols, k, theta, inv_temperature,
                        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, SINGLE_TILE: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < num_rows
    offs_d = tl.arange(0, BLOCK_D)
    base = rows[:, None] * num_cols
    if SINGLE_TILE:
        mask = mask_m[:, None] & (offs_d[None, :] < num_cols)
        h = tl.load(h_ptr + base + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        g = k * tl.sum(h * h, axis=1)
    else:
        sq = tl.zeros([BLOCK_M], tl.float32)
        for d0 in range(0, num_cols, BLOCK_D):
            cols = d0 + offs_d
            mask = mask_m[:, None] & (cols[None, :] < num_cols)
            h = tl.load(h_ptr + base + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            sq += tl.sum(h * h, axis=1)
        g = k * sq
    is_pos = tl.load(pos_ptr + rows, mask=mask_m, other=0) != 0
    n_pos = tl.load(npos_ptr)
    term, coef = ff_row_terms(g, is_pos, n_pos, num_rows, theta, inv_temperature)
    tl.store(g_ptr + rows, g, mask=mask_m)
    tl.store(term_ptr + rows, term, mask=mask_m)
    scale = 2.0 * k * coef
    if SINGLE_TILE:
        tl.store(grad_ptr + base + offs_d[None, :], (scale[:, None] * h).to(grad_ptr.dtype.element_ty),
                 mask=mask)
    else:
        for d0 in range(0, num_cols, BLOCK_D):
            cols = d0 + offs_d
            mask = mask_m[:, None] & (cols[None, :] < num_cols)
            h = tl.load(h_ptr + base + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            tl.store(grad_ptr + base + cols[None, :], (scale[:, None] * h).to(grad_ptr.dtype.element_ty),
                     mask=mask)


@triton.jit
def _row_sumsq_kernel(h_ptr, g_ptr, num_rows, num_cols, k,
                      BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < num_rows
    offs_d = tl.arange(0, BLOCK_D)
    sq = tl.zeros([BLOCK_M], tl.float32)
    for d0 in range(0, num_cols, BLOCK_D):
        cols = d0 + offs_d
        mask = mask_m[:, None] & (cols[None, :] < num_cols)
        h = tl.load(h_ptr + rows[:, None] * num_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        sq += tl.sum(h * h, axis=1)
    tl.store(g_ptr + rows, k * sq, mask=mask_m)


@triton.jit
def _row_scale_kernel(h_ptr, coef_ptr, out_ptr, num_rows, num_cols, factor,
                      BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < num_rows
    offs_d = tl.arange(0, BLOCK_D)
    scale = factor * tl.load(coef_ptr + rows, mask=mask_m, other=0.0).to(tl.float32)
    for d0 in range(0, num_cols, BLOCK_D):
        cols = d0 + offs_d
        mask = mask_m[:, None] & (cols[None, :] < num_cols)
        ptrs = rows[:, None] * num_cols + cols[None, :]
        h = tl.load(h_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + ptrs, (scale[:, None] * h).to(out_ptr.dtype.element_ty), mask=mask)


def _row_blocks(num_cols: int, single_tile_limit: int):
    """(BLOCK_M, BLOCK_D, single_tile, num_warps) for a row-wise pass over ``num_cols``."""
    block_d_full = triton.next_power_of_2(max(num_cols, 1))
    if block_d_full <= single_tile_limit:
        block_d, single = block_d_full, True
    else:
        block_d, single = 256, False
    block_m = max(1, min(64, 4096 // block_d))
    num_warps = 4 if block_m * block_d >= 2048 else 2
    return block_m, block_d, single, num_warps


def count_positive(positive: torch.Tensor) -> torch.Tensor:
    """Number of positive rows as a 1-element int32 device tensor (no host sync)."""
    return positive.sum(dtype=torch.int32).reshape(1)


def ff_goodness_loss_grad(h: torch.Tensor, positive: torch.Tensor, k: float, theta: float,
                          temperature: float, out: torch.Tensor | None = None):
    """FF loss: returns ``(loss_terms [N] float32, goodness [N] float32, grad_z [N, D] h.dtype)``.

    ``out`` receives grad_z; it may be ``h`` itself (in place: every program reads each of
    its tiles of h before it writes the same tile, and programs own disjoint rows)."""
    n, d = h.shape
    grad = torch.empty_like(h) if out is None else out
    g = torch.empty(n, dtype=torch.float32, device=h.device)
    terms = torch.empty(n, dtype=torch.float32, device=h.device)
    if n == 0:
        return terms, g, grad
    block_m, block_d, single, num_warps = _row_blocks(d, MAX_SINGLE_TILE_D)
    pos_u8 = positive.view(torch.uint8)
    _ff_goodness_kernel[(triton.cdiv(n, block_m),)](
        h, pos_u8, count_positive(positive), grad, g, terms, n, d, float(k), float(theta),
        1.0 / float(temperature), BLOCK_M=block_m, BLOCK_D=block_d, SINGLE_TILE=single,
        num_warps=num_warps)
    return terms, g, grad


def row_goodness(h: torch.Tensor, k: float) -> torch.Tensor:
    """``k * sum_d h_id^2`` per row, float32 ``[N]``."""
    n, d = h.shape
    g = torch.empty(n, dtype=torch.float32, device=h.device)
    if n == 0:
        return g
    block_m, block_d, _, num_warps = _row_blocks(d, 256)
    _row_sumsq_kernel[(triton.cdiv(n, block_m),)](h, g, n, d, float(k), BLOCK_M=block_m,
                                                  BLOCK_D=block_d, num_warps=num_warps)
    return g


def scale_rows(h: torch.Tensor, coef: torch.Tensor, factor: float, out_dtype: torch.dtype,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``factor * coef[i] * h[i, :]`` in ``out_dtype`` (into ``out``, which may be ``h``)."""
    n, d = h.shape
    if out is None:
        out = torch.empty((n, d), dtype=out_dtype, device=h.device)
    if n == 0:
        return out
    block_m, block_d, _, num_warps = _row_blocks(d, 256)
    _row_scale_kernel[(triton.cdiv(n, block_m),)](h, coef.contiguous(), out, n, d, float(factor),
                                                  BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps)
    return out
