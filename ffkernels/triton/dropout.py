"""Inverted dropout with the counter-based mask of ``ffkernels.ops.dropout`` in one Triton pass.

Each program hashes ``BLOCK`` consecutive element indices with the same 32-bit mix as the C++
kernel (``csrc/cpu/dropout_hash.h``) and the reference (``dropout_keep``), so the three agree
bitwise; ``x`` is read once and the result written once (``out`` may be ``x``).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _mix32(v):
    v = v ^ (v >> 16)
    v = v * 0x7FEB352D
    v = v ^ (v >> 15)
    v = v * 0x846CA68B
    return v ^ (v >> 16)


@triton.jit
def _dropout_kernel(x_ptr, out_ptr, numel, s0, s1, threshold, scale, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    lo = (idx & 0xFFFFFFFF).to(tl.uint32)
    hi = ((idx >> 32) + s1).to(tl.uint32)  # s1 < 2^32: the sum wraps like the C++ uint32 add
    h = _mix32(_mix32(lo ^ s0.to(tl.uint32)) ^ hi)
    x = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32 if x_ptr.dtype.element_ty != tl.float64
                                                       else tl.float64)
    y = tl.where(h >= threshold.to(tl.uint32), x * scale, 0.0)
    tl.store(out_ptr + idx, y.to(out_ptr.dtype.element_ty), mask=mask)


def dropout(x: torch.Tensor, p: float, seed: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch on a contiguous ``x``; ``out`` (contiguous, ``x``'s shape and dtype) may be ``x``."""
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    n = x.numel()
    if n == 0:
        return out
    threshold = min(math.floor(p * 2.0 ** 32), 0xFFFFFFFF)
    scale = 1.0 / (1.0 - p)
    if x.dtype != torch.float64:  # the scale in float32, as the C++ kernel's acc_t
        scale = float(torch.tensor(scale, dtype=torch.float32))
    block = 1024
    _dropout_kernel[(triton.cdiv(n, block),)](x, out, n, seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, threshold,
                                              scale, BLOCK=block)
    return out
