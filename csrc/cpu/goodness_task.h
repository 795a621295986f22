// Plain-C++ types shared by the goodness row kernels compiled for several ISAs (no ATen: this
// header is also compiled under raised `#pragma GCC target` ISAs; see goodness_rows.h).
#pragma once
#include <cstdint>

namespace ffkernels {
namespace cpu {

struct GoodnessRowArgs {
  const void* in;        // [N, D] in_t: h itself, or z (the linear step: ReLU applied on the fly)
  void* h_out;           // [N, D] h_t, kRelu only: h = ReLU(z)
  void* grad;            // [N, D] grad_t (may alias `in`)
  const bool* positive;  // [N]
  void* goodness;        // [N] acc_t
  const void* coef;      // [N] acc_t dL/dG (the symba scaling pass)
  int64_t D;
  double k, two_k, theta, inv_temperature, inv_size_pos, inv_size_neg;
};

// ff: rows [r0, r1): goodness, loss terms (returned, summed in double, in row order), grad.
using FFRowsFn = double (*)(const GoodnessRowArgs&, int64_t, int64_t);
// Goodness only (kRelu: also writes h) / grad = two_k * coef[i] * h[i] for rows [r0, r1).
using RowsFn = void (*)(const GoodnessRowArgs&, int64_t, int64_t);

struct GoodnessRowFns {
  FFRowsFn ff;
  RowsFn sumsq;
  RowsFn scale;
};

}  // namespace cpu
}  // namespace ffkernels
