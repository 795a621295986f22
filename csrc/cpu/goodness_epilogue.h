// The fused goodness / loss / gradient epilogue shared by goodness_loss_grad and
// linear_goodness_step (docs/algorithms.md#losses): the driver (threads via at::parallel_for,
// torch's OpenMP pool) over the row kernels of goodness_rows.h, whose AVX2 variant is picked at
// run time (FFKERNELS_CPU_ISA=baseline forces the portable one).
//
// Determinism: every row is computed by one thread in a fixed order, and the loss is a sum
// over a fixed partition of the rows (blocks of kLossBlock) in a fixed order, so results are
// bitwise repeatable whatever the number of threads.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_isa.h"
#include "goodness_task.h"

#define FFK_ISA baseline
#include "goodness_rows.h"
#undef FFK_ISA

namespace ffkernels {
namespace cpu {

namespace avx2 {
// Defined (and explicitly instantiated) in goodness_kernel_avx2.cpp.
template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
GoodnessRowFns select_goodness_rows();
}  // namespace avx2

struct GoodnessParams {
  double theta;
  double temperature;
  double alpha;
  bool mean_goodness;  // k = 1 / D instead of 1
  bool symba;          // loss: symba (pairs) instead of ff
};

// Rows per block of the loss sum (a fixed partition: thread-count independent results).
constexpr int64_t kLossBlock = 1024;

template <typename T>
inline T stable_softplus(T v) {
  return v > T(0) ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
}

template <typename T>
inline T stable_sigmoid(T v) {
  if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// Fixed-order blocked sum (double accumulation): independent of thread scheduling.
template <typename acc_t>
inline double deterministic_sum(const acc_t* terms, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const int64_t num_blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(num_blocks), 0.0);
  at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double s = 0.0;
      const int64_t end = std::min(n, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; ++i) s += static_cast<double>(terms[i]);
      partial[static_cast<size_t>(b)] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
GoodnessRowFns pick_goodness_rows() {
  if (cpu_has_avx2()) return avx2::select_goodness_rows<in_t, h_t, grad_t, acc_t, kRelu>();
  return baseline::select_goodness_rows<in_t, h_t, grad_t, acc_t, kRelu>();
}

// Runs the epilogue over `in` [N, D] (h itself, or z when kRelu) and writes:
// goodness [N], grad [N, D] (dloss/dz; may alias `in`), h_out [N, D] (kRelu only).
// Returns the loss.
template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
double goodness_epilogue(const in_t* in, h_t* h_out, grad_t* grad, const bool* positive,
                         const int64_t* pairs, int64_t num_pairs, int64_t N, int64_t D,
                         const GoodnessParams& p, acc_t* goodness) {
  const GoodnessRowFns fns = pick_goodness_rows<in_t, h_t, grad_t, acc_t, kRelu>();
  const acc_t k = p.mean_goodness ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(D, 1)) : acc_t(1);
  GoodnessRowArgs args{in, h_out, grad, positive, goodness, nullptr, D,
                       static_cast<double>(k), static_cast<double>(acc_t(2) * k), p.theta,
                       static_cast<double>(acc_t(1) / static_cast<acc_t>(p.temperature)), 0.0, 0.0};
  // Rows per parallel chunk: at least ~64 KiB of input, at least one loss block.
  const int64_t grain_rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1));

  if (!p.symba) {
    int64_t n_pos = 0;
    for (int64_t i = 0; i < N; ++i) n_pos += positive[i] ? 1 : 0;
    args.inv_size_pos = static_cast<double>(acc_t(1) / static_cast<acc_t>(std::max<int64_t>(n_pos, 1)));
    args.inv_size_neg = static_cast<double>(acc_t(1) / static_cast<acc_t>(std::max<int64_t>(N - n_pos, 1)));
    // Each block sums its own loss terms: no [N] buffer of terms written and re-read.
    const int64_t num_blocks = (N + kLossBlock - 1) / kLossBlock;
    std::vector<double> partial(static_cast<size_t>(num_blocks), 0.0);
    at::parallel_for(0, num_blocks, std::max<int64_t>(1, grain_rows / kLossBlock), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        partial[static_cast<size_t>(b)] = fns.ff(args, b * kLossBlock, std::min(N, (b + 1) * kLossBlock));
    });
    double total = 0.0;
    for (double v : partial) total += v;
    return total;
  }

  // SymBa: pass 1 goodness, pair math, pass 2 scale rows.
  at::parallel_for(0, N, grain_rows, [&](int64_t r0, int64_t r1) { fns.sumsq(args, r0, r1); });
  const acc_t alpha = static_cast<acc_t>(p.alpha);
  const acc_t denom = static_cast<acc_t>(std::max<int64_t>(num_pairs, 1));
  std::vector<acc_t> terms(static_cast<size_t>(num_pairs)), weights(static_cast<size_t>(num_pairs));
  at::parallel_for(0, num_pairs, 4096, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const acc_t diff = goodness[pairs[2 * j]] - goodness[pairs[2 * j + 1]];
      terms[static_cast<size_t>(j)] = stable_softplus(-alpha * diff);
      weights[static_cast<size_t>(j)] = alpha * stable_sigmoid(-alpha * diff) / denom;
    }
  });
  // A row may appear in many pairs: a sequential scatter keeps the sums in a fixed order.
  std::vector<acc_t> coef(static_cast<size_t>(N), acc_t(0));
  for (int64_t j = 0; j < num_pairs; ++j) coef[static_cast<size_t>(pairs[2 * j])] -= weights[static_cast<size_t>(j)];
  for (int64_t j = 0; j < num_pairs; ++j) coef[static_cast<size_t>(pairs[2 * j + 1])] += weights[static_cast<size_t>(j)];
  args.coef = coef.data();
  at::parallel_for(0, N, grain_rows, [&](int64_t r0, int64_t r1) { fns.scale(args, r0, r1); });
  return deterministic_sum(terms.data(), num_pairs) / static_cast<double>(denom);
}

}  // namespace cpu
}  // namespace ffkernels
