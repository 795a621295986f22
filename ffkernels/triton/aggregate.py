"""CSR row-split sparse aggregation (SpMM over the incoming edges of each destination row).

One program owns ``ROWS`` consecutive destination rows and one ``BLOCK_F``-wide feature tile;
it walks each row's edges ``BLOCK_E`` at a time, gathers a ``[BLOCK_E, BLOCK_F]`` tile of
source features and reduces it in float32. Each output element is reduced by exactly one
program in a fixed order, so the result is bitwise repeatable (no atomics).
"""
from __future__ import annotations

import weakref

import torch
import triton
import triton.language as tl

REDUCE_CODES = {"sum": 0, "mean": 1, "max": 2, "gcn": 3}


@triton.jit
def _max_nan(a, b):
    # NaN-propagating max (torch.amax semantics); tl.max / the default tl.maximum drop NaN on GPUs.
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _reduce_edges(col_ptr, x_ptr, w_ptr, scale_ptr, start, end, num_feats, offs_f, mask_f,
                  REDUCE: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_E: tl.constexpr,
                  BLOCK_F: tl.constexpr):
    """float32 sum (or max) over edges [start, end) of coef_e * x[col[e], offs_f]."""
    offs_e = tl.arange(0, BLOCK_E)
    if REDUCE == 2:
        acc = tl.full([BLOCK_F], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK_F], tl.float32)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + offs_e
        mask_e = e < end
        src = tl.load(col_ptr + e, mask=mask_e, other=0).to(tl.int64)
        mask = mask_e[:, None] & mask_f[None, :]
        vals = tl.load(x_ptr + src[:, None] * num_feats + offs_f[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + e, mask=mask_e, other=0.0).to(tl.float32)
            vals = vals * w[:, None]
        if REDUCE == 3:
            s = tl.load(scale_ptr + src, mask=mask_e, other=0.0).to(tl.float32)
            vals = vals * s[:, None]
        if REDUCE == 2:
            vals = tl.where(mask, vals, float("-inf"))
            acc = tl.maximum(acc, tl.reduce(vals, 0, _max_nan), propagate_nan=tl.PropagateNan.ALL)
        else:
            acc += tl.sum(vals, axis=0)
    return acc


@triton.jit
def _finish_row(acc, row, start, end, x_ptr, scale_ptr, out_ptr, num_feats, offs_f, mask_f,
                REDUCE: tl.constexpr):
    """Apply the reduce's row epilogue (mean / empty-max / gcn self loop) and store the row."""
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


@triton.jit
def _aggregate_kernel(rowptr_ptr, col_ptr, x_ptr, w_ptr, scale_ptr, out_ptr,
                      num_rows, num_feats, long_row_degree,
                      REDUCE: tl.constexpr, HAS_WEIGHT: tl.constexpr, ROWS: tl.constexpr,
                      BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    """Row-split pass: rows of degree > long_row_degree are left to the split kernels."""
    row_block = tl.program_id(0)
    f_tile = tl.program_id(1)
    offs_f = f_tile * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < num_feats
    for r in range(ROWS):
        row = row_block.to(tl.int64) * ROWS + r
        if row < num_rows:
            start = tl.load(rowptr_ptr + row).to(tl.int64)
            end = tl.load(rowptr_ptr + row + 1).to(tl.int64)
            if end - start <= long_row_degree:
                acc = _reduce_edges(col_ptr, x_ptr, w_ptr, scale_ptr, start, end, num_feats, offs_f, mask_f,
                                    REDUCE, HAS_WEIGHT, BLOCK_E, BLOCK_F)
                _finish_row(acc, row, start, end, x_ptr, scale_ptr, out_ptr, num_feats, offs_f, mask_f, REDUCE)


@triton.jit
def _chunk_partial_kernel(chunk_start_ptr, chunk_end_ptr, col_ptr, x_ptr, w_ptr, scale_ptr, partial_ptr,
                          num_feats, REDUCE: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                          BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr):
    """Split pass 1: one program per (edge chunk of a long row, feature tile) -> partial row."""
    chunk = tl.program_id(0).to(tl.int64)
    offs_f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < num_feats
    start = tl.load(chunk_start_ptr + chunk)
    end = tl.load(chunk_end_ptr + chunk)
    acc = _reduce_edges(col_ptr, x_ptr, w_ptr, scale_ptr, start, end, num_feats, offs_f, mask_f,
                        REDUCE, HAS_WEIGHT, BLOCK_E, BLOCK_F)
    tl.store(partial_ptr + chunk * num_feats + offs_f, acc, mask=mask_f)


@triton.jit
def _chunk_combine_kernel(long_rows_ptr, chunk_ptr_ptr, rowptr_ptr, partial_ptr, x_ptr, scale_ptr, out_ptr,
                          num_feats, REDUCE: tl.constexpr, BLOCK_F: tl.constexpr):
    """Split pass 2: combine a long row's partials in chunk order (deterministic), finish it."""
    i = tl.program_id(0)
    offs_f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < num_feats
    row = tl.load(long_rows_ptr + i).to(tl.int64)
    c0 = tl.load(chunk_ptr_ptr + i)
    c1 = tl.load(chunk_ptr_ptr + i + 1)
    if REDUCE == 2:
        acc = tl.full([BLOCK_F], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK_F], tl.float32)
    for c in range(c0, c1):
        part = tl.load(partial_ptr + c * num_feats + offs_f, mask=mask_f, other=0.0)
        if REDUCE == 2:
            acc = tl.maximum(acc, part, propagate_nan=tl.PropagateNan.ALL)
        else:
            acc += part
    start = tl.load(rowptr_ptr + row).to(tl.int64)
    end = tl.load(rowptr_ptr + row + 1).to(tl.int64)
    _finish_row(acc, row, start, end, x_ptr, scale_ptr, out_ptr, num_feats, offs_f, mask_f, REDUCE)


class _SplitPlan:
    """Edge chunks of the rows whose degree exceeds ``chunk`` (int64 device tensors)."""

    def __init__(self, rowptr: torch.Tensor, chunk: int):
        self.chunk = chunk
        rp = rowptr.to(torch.int64)
        deg = rp[1:] - rp[:-1]
        self.long_rows = torch.nonzero(deg > chunk).flatten()  # the one host sync, paid once per graph
        n_long = self.long_rows.numel()
        if n_long == 0:
            return
        counts = (deg[self.long_rows] + chunk - 1) // chunk
        self.chunk_ptr = torch.zeros(n_long + 1, dtype=torch.int64, device=rowptr.device)
        torch.cumsum(counts, 0, out=self.chunk_ptr[1:])
        num_chunks = int(self.chunk_ptr[-1])
        owner = torch.repeat_interleave(torch.arange(n_long, device=rowptr.device), counts,
                                        output_size=num_chunks)
        within = torch.arange(num_chunks, device=rowptr.device) - self.chunk_ptr[owner]
        rows = self.long_rows[owner]
        self.chunk_start = (rp[rows] + within * chunk).contiguous()
        self.chunk_end = torch.minimum(self.chunk_start + chunk, rp[rows + 1]).contiguous()

    @property
    def num_long(self) -> int:
        return self.long_rows.numel()


# Plans keyed by the identity of the graph's rowptr tensor (a Graph keeps the same tensor
# object for its lifetime), checked against a weak reference so that a freed tensor whose
# id is reused never picks up a stale plan.
_plans: dict = {}


def split_plan(rowptr: torch.Tensor, chunk: int) -> _SplitPlan:
    key = (id(rowptr), chunk)
    hit = _plans.get(key)
    if hit is not None and hit[0]() is rowptr and hit[1] == rowptr._version:
        return hit[2]
    plan = _SplitPlan(rowptr, chunk)
    if len(_plans) > 64:
        for k in [k for k, v in _plans.items() if v[0]() is None]:
            del _plans[k]
    _plans[key] = (weakref.ref(rowptr), rowptr._version, plan)
    return plan


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


# Rows longer than this many edges (at least; it grows with the average degree) are split
# into edge chunks of that size, reduced by separate programs and combined in a fixed order,
# so that one hub node does not serialise the whole launch on skewed degree distributions.
SPLIT_CHUNK_MIN = 1024
_NO_SPLIT = 2**62


def split_chunk_for(num_rows: int, num_edges: int) -> int:
    avg_degree = num_edges / max(num_rows, 1)
    return max(SPLIT_CHUNK_MIN, triton.next_power_of_2(int(16 * avg_degree) + 1))


def aggregate(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor, edge_weight, reduce: str,
              deg_inv_sqrt, out: torch.Tensor | None = None, split_chunk: int | None = None) -> torch.Tensor:
    """Kernel-level aggregate (see ``ffkernels.backends.reference.aggregate``).

    ``x`` must be contiguous ``[N, F]``; ``edge_weight`` float32 in CSR order or None;
    ``deg_inv_sqrt`` float32 ``[N]`` for ``gcn``. ``split_chunk`` overrides the long-row
    chunk length (0 disables the split).
    """
    num_rows = rowptr.numel() - 1
    num_feats = x.shape[1]
    num_edges = col.numel()
    if out is None:
        out = torch.empty((num_rows, num_feats), dtype=x.dtype, device=x.device)
    if num_rows == 0 or num_feats == 0:
        return out
    interpret = x.device.type == "cpu"
    block_f, block_e, rows, num_warps = _launch_config(num_rows, num_feats, num_edges, interpret)
    code = REDUCE_CODES[reduce]
    has_weight = edge_weight is not None
    # Unused pointers still need a valid tensor argument.
    w = edge_weight if has_weight else col
    scale = deg_inv_sqrt if code == 3 else col
    if split_chunk is None:
        split_chunk = split_chunk_for(num_rows, num_edges)
    plan = None
    if split_chunk and num_edges > split_chunk:
        plan = split_plan(rowptr, split_chunk)
        if plan.num_long == 0:
            plan = None
    f_tiles = triton.cdiv(num_feats, block_f)
    grid = (triton.cdiv(num_rows, rows), f_tiles)
    _aggregate_kernel[grid](rowptr, col, x, w, scale, out, num_rows, num_feats,
                            plan.chunk if plan is not None else _NO_SPLIT,
                            REDUCE=code, HAS_WEIGHT=has_weight, ROWS=rows, BLOCK_E=block_e,
                            BLOCK_F=block_f, num_warps=num_warps)
    if plan is not None:
        num_chunks = plan.chunk_start.numel()
        partial = torch.empty((num_chunks, num_feats), dtype=torch.float32, device=x.device)
        # Chunks are long: use the widest edge tile the registers allow.
        chunk_block_e = max(block_e, min(32, max(2048 // block_f, 4)))
        _chunk_partial_kernel[(num_chunks, f_tiles)](
            plan.chunk_start, plan.chunk_end, col, x, w, scale, partial, num_feats,
            REDUCE=code, HAS_WEIGHT=has_weight, BLOCK_E=chunk_block_e, BLOCK_F=block_f,
            num_warps=4 if interpret or block_f * chunk_block_e >= 1024 else 2)
        _chunk_combine_kernel[(plan.num_long, f_tiles)](
            plan.long_rows, plan.chunk_ptr, rowptr, partial, x, scale, out, num_feats,
            REDUCE=code, BLOCK_F=block_f, num_warps=1 if block_f <= 64 else 2)
    return out
