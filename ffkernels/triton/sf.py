"""The single-forward (SF) loss with virtual nodes in one Triton pass (docs/algorithms.md#sf).

One program owns ``BLOCK_M`` training rows. It gathers them (``train_idx``), forms their logits
against the ``C`` virtual rows with ``tl.dot`` (``C`` padded to ``BLOCK_C``, ``D`` walked in
``BLOCK_D`` tiles), the softmax cross-entropy and ``R = (P - Y) / (tau n)`` in registers, then
walks ``D`` again to write ``grad_h_i = R_i h_V`` and its partial of ``grad_h_V = R^T h_train``.
Per-program loss terms and partials go to buffers that torch reduces afterwards in a fixed
order (deterministic; no float atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# The virtual rows of a program's logits tile: C classes padded to a power of two (>= 16 for tl.dot).
MAX_CLASSES = 256


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _sf_kernel(h_ptr, train_ptr, y_ptr, virt_ptr, grad_ptr, partial_ptr, term_ptr,
               n_train, num_classes, num_cols, inv_tau, scale,
               PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < n_train
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < num_classes
    offs_d = tl.arange(0, BLOCK_D)
    rows = tl.load(train_ptr + offs_m, mask=mask_m, other=0).to(tl.int64)
    vrows = tl.load(virt_ptr + offs_c, mask=mask_c, other=0).to(tl.int64)

    logits = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    for d0 in range(0, num_cols, BLOCK_D):
        cols = d0 + offs_d
        mask_d = cols < num_cols
        ht = tl.load(h_ptr + rows[:, None] * num_cols + cols[None, :], mask=mask_m[:, None] & mask_d[None, :],
                     other=0.0).to(tl.float32)
        vt = tl.load(h_ptr + vrows[None, :] * num_cols + cols[:, None], mask=mask_d[:, None] & mask_c[None, :],
                     other=0.0).to(tl.float32)  # [BLOCK_D, BLOCK_C]: h_V^T tile
        logits = tl.dot(ht, vt, logits, input_precision=PRECISION)
    logits = logits * inv_tau
    logits = tl.where(mask_c[None, :], logits, float("-inf"))
    m = tl.reduce(logits, 1, _max_nan)
    e = tl.exp(logits - m[:, None])
    lse = m + tl.log(tl.sum(e, axis=1))
    y = tl.load(y_ptr + offs_m, mask=mask_m, other=0)
    is_y = offs_c[None, :] == y[:, None]
    logit_y = tl.sum(tl.where(is_y, logits, 0.0), axis=1)
    tl.store(term_ptr + offs_m, lse - logit_y, mask=mask_m)
    r = (tl.exp(logits - lse[:, None]) - is_y.to(tl.float32)) * scale
    r = tl.where(mask_m[:, None] & mask_c[None, :], r, 0.0)

    part_base = pid.to(tl.int64) * BLOCK_C * num_cols
    for d0 in range(0, num_cols, BLOCK_D):
        cols = d0 + offs_d
        mask_d = cols < num_cols
        ht = tl.load(h_ptr + rows[:, None] * num_cols + cols[None, :], mask=mask_m[:, None] & mask_d[None, :],
                     other=0.0).to(tl.float32)
        vt = tl.load(h_ptr + vrows[:, None] * num_cols + cols[None, :], mask=mask_c[:, None] & mask_d[None, :],
                     other=0.0).to(tl.float32)  # [BLOCK_C, BLOCK_D]
        g = tl.dot(r, vt, input_precision=PRECISION)  # [BLOCK_M, BLOCK_D]
        tl.store(grad_ptr + offs_m[:, None] * num_cols + cols[None, :], g.to(grad_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_d[None, :])
        pv = tl.dot(tl.trans(r), ht, input_precision=PRECISION)  # [BLOCK_C, BLOCK_D]
        tl.store(partial_ptr + part_base + offs_c[:, None] * num_cols + cols[None, :], pv,
                 mask=mask_c[:, None] & mask_d[None, :])


def _precision(dtype: torch.dtype) -> str:
    import os
    if dtype == torch.float32 and os.environ.get("FFKERNELS_TF32") != "1":
        return "ieee"
    return "tf32"


def _config(num_classes: int, num_cols: int, interpret: bool):
    block_c = max(16, triton.next_power_of_2(max(num_classes, 1)))
    # D tile: keeps the staged tiles well inside Hopper's 227 KB of shared memory.
    block_d = max(16, min(triton.next_power_of_2(max(num_cols, 1)), 32 if block_c >= 128 else 128))
    block_m = 16 if interpret else (32 if block_c >= 128 else 64)
    num_warps = 4 if block_m * max(block_c, block_d) <= 64 * 64 else 8
    return block_m, block_c, block_d, num_warps


def sf_loss_grad(h: torch.Tensor, train_idx: torch.Tensor, y_train: torch.Tensor, virtual_idx: torch.Tensor,
                 tau: float):
    """``(loss, grad_rows [n_train + C, D])`` (see ``ffkernels.backends.reference.sf_loss_grad``)."""
    n_train, num_classes = train_idx.numel(), virtual_idx.numel()
    num_cols = h.shape[1]
    if num_classes > MAX_CLASSES:
        raise ValueError(f"the Triton SF kernel handles at most {MAX_CLASSES} classes, got {num_classes}")
    grad = torch.empty((n_train + num_classes, num_cols), dtype=h.dtype, device=h.device)
    if n_train == 0 or num_cols == 0:
        grad.zero_()
        return torch.zeros((), dtype=torch.float32, device=h.device), grad
    interpret = h.device.type == "cpu"
    block_m, block_c, block_d, num_warps = _config(num_classes, num_cols, interpret)
    programs = triton.cdiv(n_train, block_m)
    partial = torch.empty((programs, block_c, num_cols), dtype=torch.float32, device=h.device)
    terms = torch.empty(n_train, dtype=torch.float32, device=h.device)
    _sf_kernel[(programs,)](h, train_idx, y_train, virtual_idx, grad, partial, terms,
                            n_train, num_classes, num_cols, 1.0 / float(tau), 1.0 / (float(tau) * n_train),
                            PRECISION=_precision(h.dtype), BLOCK_M=block_m, BLOCK_C=block_c, BLOCK_D=block_d,
                            num_warps=num_warps)
    grad[n_train:] = partial[:, :num_classes].sum(dim=0).to(h.dtype)
    return terms.sum() / n_train, grad
