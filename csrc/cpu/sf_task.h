// Plain-C++ types shared by the SF loss row kernels compiled for several ISAs (no ATen).
#pragma once
#include <cstdint>

namespace ffkernels {
namespace cpu {

struct SfArgs {
  const void* h;            // [N, D] scalar_t, contiguous
  const int64_t* train;     // [n] rows of h
  const int64_t* y;         // [n] labels in [0, C)
  const void* hv;           // [C, D] acc_t: the virtual rows, gathered and widened once
  void* grad;               // [n + C, D] scalar_t: rows 0..n-1 written by the block kernel
  void* partial;            // [num_blocks, C, D] acc_t: each block's sum_i r_ic h_i
  double* loss_partial;     // [num_blocks]: each block's sum of -log p_{i, y_i}
  int64_t D, C, n, block_rows;
  double inv_tau, scale;    // scale = 1 / (tau * n)
};

// Rows of block b: logits, softmax cross-entropy, grad_h_i, the block's partial of grad_h_V.
// `scratch`: [2 D + C] acc_t of the calling thread.
using SfBlockFn = void (*)(const SfArgs&, int64_t block, void* scratch);

}  // namespace cpu
}  // namespace ffkernels
