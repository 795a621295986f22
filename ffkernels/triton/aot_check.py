"""Ahead-of-time compile check of every Triton kernel for an H100 (sm_90), no GPU needed.

    python -m ffkernels.triton.aot_check

Compiles each kernel (representative specialisations: every reduce, weights, int32/int64
indices, fp32/bf16/fp16, single- and multi-tile paths, the GEMM configs the launcher picks)
through Triton's NVIDIA backend and its bundled ptxas, which catches GPU-only failures (type
errors the interpreter lets pass, layouts, shared memory over the limit) on a CPU machine.
Must run without ``TRITON_INTERPRET=1``. Written against Triton 3.9's ``ASTSource`` API.
"""
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ffkernels.triton import aggregate as A
from ffkernels.triton import goodness as G
from ffkernels.triton import linear as L
from ffkernels.triton import sf as S

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(fn, types, consts, num_warps=4, num_stages=3):
    names = fn.arg_names
    sig = {}
    for n in names:
        sig[n] = "constexpr" if n in consts else types[n]
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=TARGET, options={"num_warps": num_warps, "num_stages": num_stages})
    md = k.metadata
    print(f"OK {fn.__name__} {consts} shared={md.shared} B")
    return k


def P(t):  # pointer type
    return "*" + t


def main():
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("run without TRITON_INTERPRET=1 (the check compiles for the GPU)")
    agg_types = dict(rowptr_ptr=P("i32"), col_ptr=P("i32"), x_ptr=P("fp32"), w_ptr=P("fp32"), scale_ptr=P("fp32"), out_ptr=P("fp32"), num_rows="i32", num_feats="i32", long_row_degree="i64")
    for red in range(4):
        for hw in (False, True):
            compile_kernel(A._aggregate_kernel, agg_types, dict(REDUCE=red, HAS_WEIGHT=hw, ROWS=1, BLOCK_E=16, BLOCK_F=128))
    bf = dict(agg_types, x_ptr=P("bf16"), out_ptr=P("bf16"), rowptr_ptr=P("i64"), col_ptr=P("i64"))
    compile_kernel(A._aggregate_kernel, bf, dict(REDUCE=3, HAS_WEIGHT=True, ROWS=4, BLOCK_E=8, BLOCK_F=64), num_warps=2)
    compile_kernel(A._chunk_partial_kernel, dict(chunk_start_ptr=P("i64"), chunk_end_ptr=P("i64"), col_ptr=P("i32"), x_ptr=P("fp32"), w_ptr=P("fp32"), scale_ptr=P("fp32"), partial_ptr=P("fp32"), num_feats="i32"), dict(REDUCE=2, HAS_WEIGHT=True, BLOCK_E=16, BLOCK_F=128))
    compile_kernel(A._chunk_combine_kernel, dict(long_rows_ptr=P("i64"), chunk_ptr_ptr=P("i64"), rowptr_ptr=P("i32"), partial_ptr=P("fp32"), x_ptr=P("fp32"), scale_ptr=P("fp32"), out_ptr=P("fp32"), num_feats="i32"), dict(REDUCE=3, BLOCK_F=128), num_warps=2)
    gt = dict(h_ptr=P("fp32"), pos_ptr=P("u8"), npos_ptr=P("i32"), grad_ptr=P("fp32"), g_ptr=P("fp32"), term_ptr=P("fp32"), num_rows="i32", num_cols="i32", k="fp32", theta="fp32", inv_temperature="fp32")
    compile_kernel(G._ff_goodness_kernel, gt, dict(BLOCK_M=32, BLOCK_D=128, SINGLE_TILE=True))
    compile_kernel(G._ff_goodness_kernel, dict(gt, h_ptr=P("bf16"), grad_ptr=P("bf16")), dict(BLOCK_M=16, BLOCK_D=256, SINGLE_TILE=False))
    compile_kernel(G._row_sumsq_kernel, dict(h_ptr=P("fp16"), g_ptr=P("fp32"), num_rows="i32", num_cols="i32", k="fp32"), dict(BLOCK_M=32, BLOCK_D=128))
    compile_kernel(G._row_scale_kernel, dict(h_ptr=P("fp32"), coef_ptr=P("fp32"), out_ptr=P("fp32"), num_rows="i32", num_cols="i32", factor="fp32"), dict(BLOCK_M=32, BLOCK_D=128))
    lt = dict(x_ptr=P("fp32"), w_ptr=P("fp32"), b_ptr=P("fp32"), h_ptr=P("fp32"), partial_ptr=P("fp32"), pos_ptr=P("u8"), npos_ptr=P("i32"), grad_ptr=P("fp32"), g_ptr=P("fp32"), term_ptr=P("fp32"), num_rows="i32", din="i32", dout="i32", num_n_tiles="i32", k="fp32", theta="fp32", inv_temperature="fp32")
    for dt, prec, bk in (("fp32", "ieee", 32), ("bf16", "tf32", 64), ("fp16", "tf32", 64)):
        t = dict(lt, x_ptr=P(dt), w_ptr=P(dt), b_ptr=P(dt), h_ptr=P(dt), grad_ptr=P(dt))
        compile_kernel(L._linear_goodness_kernel, t, dict(HAS_BIAS=True, FUSED_FF=True, PRECISION=prec, UPCAST=False, BLOCK_M=128, BLOCK_N=128, BLOCK_K=bk), num_warps=8)
        compile_kernel(L._linear_goodness_kernel, t, dict(HAS_BIAS=False, FUSED_FF=False, PRECISION=prec, UPCAST=False, BLOCK_M=64, BLOCK_N=256, BLOCK_K=32), num_warps=8)

    st = dict(h_ptr=P("fp32"), train_ptr=P("i64"), y_ptr=P("i64"), virt_ptr=P("i64"), grad_ptr=P("fp32"), partial_ptr=P("fp32"), term_ptr=P("fp32"), n_train="i32", num_classes="i32", num_cols="i32", inv_tau="fp32", scale="fp32")
    for dt, prec in (("fp32", "ieee"), ("bf16", "tf32"), ("fp16", "tf32")):
        t = dict(st, h_ptr=P(dt), grad_ptr=P(dt))
        for num_classes, num_cols in ((8, 128), (40, 129), (256, 64)):
            bm, bc, bd, nw = S._config(num_classes, num_cols, False)
            compile_kernel(S._sf_kernel, t, dict(PRECISION=prec, BLOCK_M=bm, BLOCK_C=bc, BLOCK_D=bd), num_warps=nw)

    print("all Triton kernels compiled for sm_90")


if __name__ == "__main__":
    main()
