"""CSR row-split sparse aggregation (SpMM over the incoming edges of each destination row).

One program owns ``ROWS`` consecutive destination rows and one ``BLOCK_F``-wide feature tile;
it walks each row's edges ``BLOCK_E`` at a time, gathers a ``[BLOCK_E, BLOCK_F]`` tile of
source features and reduces it in float32. Each output element is reduced by exactly one
program in a fixed order, so the result is bitwise repeatable (no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

REDUCE_CODES = {"sum": 0, "mean": 1, "max": 2, "gcn": 3}


@triton.jit
def _aggregate_kernel(rowptr_ptr, col_ptr, x_ptr, w_ptr, scale_ptr, out_ptr,
                      num_rows, num_feats,
                      REDUCE: tl.constexpr, HAS_WEIGHT: tl.constexpr, ROWS: tl.constexpr,
                      BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    row_block = tl.program_id(0)
    f_tile = tl.program_id(1)
    offs_f = f_tile * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < num_feats
    offs_e = tl.arange(0, BLOCK_E)
    for r in range(ROWS):
        row = row_block.to(tl.int64) * ROWS + r
        if row < num_rows:
            start = tl.load(rowptr_ptr + row).to(tl.int64)
            end = tl.load(rowptr_ptr + row + 1).to(tl.int64)
            if REDUCE == 2:
                acc = tl.full([BLOCK_F], float("-inf"), tl.float32)
            else:
                acc = tl.zeros([BLOCK_F], tl.float32)
            for e0 in range(start, end, BLOCK_E):
                e = e0 + offs_e
                mask_e = e < end
                src = tl.load(col_ptr + e, mask=mask_e, other=0).to(tl.int64)
                mask = mask_e[:, None] & mask_f[None, :]
                vals = tl.load(x_ptr + src[:, None] * num_feats + offs_f[None, :], mask=mask,
                               other=0.0).to(tl.float32)
                if HAS_WEIGHT:
                    w = tl.load(w_ptr + e, mask=mask_e, other=0.0).to(tl.float32)
                    vals = vals * w[:, None]
                if REDUCE == 3:
                    s = tl.load(scale_ptr + src, mask=mask_e, other=0.0).to(tl.float32)
                    vals = vals * s[:, None]
                if REDUCE == 2:
                    vals = tl.where(mask, vals, float("-inf"))
                    acc = tl.maximum(acc, tl.max(vals, axis=0))
                else:
                    acc += tl.sum(vals, axis=0)
            if REDUCE == 1:
                deg = (end - start).to(tl.float32)
                acc = acc / tl.maximum(deg, 1.0)
            elif REDUCE == 2:
                acc = tl.where(end > start, acc, 0.0)
            elif REDUCE == 3:
                s_row = tl.load(scale_ptr + row).to(tl.float32)
                x_row = tl.load(x_ptr + row * num_feats + offs_f, mask=mask_f, other=0.0).to(tl.float32)
                acc = s_row * (acc + s_row * x_row)
            tl.store(out_ptr + row * num_feats + offs_f, acc.to(out_ptr.dtype.element_ty), mask=mask_f)


def _launch_config(num_rows: int, num_feats: int, num_edges: int, interpret: bool):
    block_f = min(triton.next_power_of_2(max(num_feats, 1)), 128)
    avg_degree = num_edges / max(num_rows, 1)
    # Wide edge tiles keep many independent gathers in flight; narrow ones waste fewer lanes
    # on low-degree rows. Bound the tile at 2048 elements to stay in registers.
    block_e = min(triton.next_power_of_2(max(int(avg_degree), 1)), max(2048 // block_f, 4), 32)
    block_e = max(block_e, 4 if interpret else 8)
    rows = 1
    if interpret:
        rows = 1
    elif avg_degree < 4 and num_rows > 65536:
        rows = 4  # amortise program start-up over several tiny rows
    num_warps = 4 if block_f * block_e >= 1024 else 2
    return block_f, block_e, rows, num_warps


def aggregate(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor, edge_weight, reduce: str,
              deg_inv_sqrt, out: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel-level aggregate (see ``ffkernels.backends.reference.aggregate``).

    ``x`` must be contiguous ``[N, F]``; ``edge_weight`` float32 in CSR order or None;
    ``deg_inv_sqrt`` float32 ``[N]`` for ``gcn``.
    """
    num_rows = rowptr.numel() - 1
    num_feats = x.shape[1]
    if out is None:
        out = torch.empty((num_rows, num_feats), dtype=x.dtype, device=x.device)
    if num_rows == 0 or num_feats == 0:
        return out
    interpret = x.device.type == "cpu"
    block_f, block_e, rows, num_warps = _launch_config(num_rows, num_feats, col.numel(), interpret)
    code = REDUCE_CODES[reduce]
    has_weight = edge_weight is not None
    # Unused pointers still need a valid tensor argument.
    w = edge_weight if has_weight else col
    scale = deg_inv_sqrt if code == 3 else col
    grid = (triton.cdiv(num_rows, rows), triton.cdiv(num_feats, block_f))
    _aggregate_kernel[grid](rowptr, col, x, w, scale, out, num_rows, num_feats,
                            REDUCE=code, HAS_WEIGHT=has_weight, ROWS=rows, BLOCK_E=block_e,
                            BLOCK_F=block_f, num_warps=num_warps)
    return out
