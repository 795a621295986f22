// The fused goodness / loss / gradient epilogue shared by goodness_loss_grad and
// linear_goodness_step (ALGORITHMS.md 1.1 and 1.2). Plain C++ templates over raw pointers;
// threads via at::parallel_for (torch's OpenMP pool, follows torch.set_num_threads).
//
// Determinism: every row is computed by one thread in a fixed order, and the loss is a
// fixed-order blocked sum of per-row (per-pair) terms, so results are bitwise repeatable
// whatever the number of threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ffkernels {
namespace cpu {

struct GoodnessParams {
  double theta;
  double temperature;
  double alpha;
  bool mean_goodness;  // k = 1 / D instead of 1
  bool symba;          // loss: symba (pairs) instead of ff
};

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

// ReLU that keeps NaN (as torch.relu does): `v > 0 ? v : 0` would turn a NaN input into a
// finite 0 and hide it from the loss while the weights still go NaN.
template <typename T>
inline T relu_nan(T v) {
  return v < T(0) ? T(0) : v;
}

// Sum of squares of one row (after ReLU when kRelu; then also writes h = ReLU(in)).
// Eight independent partial sums let the compiler vectorise without -ffast-math.
template <typename in_t, typename h_t, typename acc_t, bool kRelu>
inline acc_t row_sum_squares(const in_t* in, h_t* h_out, int64_t D) {
  acc_t part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    for (int j = 0; j < 8; ++j) {
      acc_t v = static_cast<acc_t>(in[d + j]);
      if (kRelu) {
        v = relu_nan(v);
        h_out[d + j] = static_cast<h_t>(v);
      }
      part[j] += v * v;
    }
  }
  for (int j = 0; d < D; ++d, ++j) {
    acc_t v = static_cast<acc_t>(in[d]);
    if (kRelu) {
      v = relu_nan(v);
      h_out[d] = static_cast<h_t>(v);
    }
    part[j] += v * v;
  }
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// grad[d] = scale * h[d], h = ReLU(in) when kRelu. `grad` may alias `in`.
template <typename in_t, typename grad_t, typename acc_t, bool kRelu>
inline void row_scale(const in_t* in, grad_t* grad, int64_t D, acc_t scale) {
  for (int64_t d = 0; d < D; ++d) {
    acc_t v = static_cast<acc_t>(in[d]);
    if (kRelu) v = relu_nan(v);
    grad[d] = static_cast<grad_t>(scale * v);
  }
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

// Runs the epilogue over `in` [N, D] (h itself, or z when kRelu) and writes:
// goodness [N], grad [N, D] (dloss/dz; may alias `in`), h_out [N, D] (kRelu only).
// Returns the loss.
template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
double goodness_epilogue(const in_t* in, h_t* h_out, grad_t* grad, const bool* positive,
                         const int64_t* pairs, int64_t num_pairs, int64_t N, int64_t D,
                         const GoodnessParams& p, acc_t* goodness) {
  const acc_t k = p.mean_goodness ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(D, 1)) : acc_t(1);
  const acc_t two_k = acc_t(2) * k;
  const acc_t theta = static_cast<acc_t>(p.theta);
  const acc_t temperature = static_cast<acc_t>(p.temperature);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1));

  if (!p.symba) {
    int64_t n_pos = 0;
    for (int64_t i = 0; i < N; ++i) n_pos += positive[i] ? 1 : 0;
    const acc_t size_pos = static_cast<acc_t>(std::max<int64_t>(n_pos, 1));
    const acc_t size_neg = static_cast<acc_t>(std::max<int64_t>(N - n_pos, 1));
    std::vector<acc_t> terms(static_cast<size_t>(N));
    at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        const in_t* row = in + i * D;
        const acc_t g = k * row_sum_squares<in_t, h_t, acc_t, kRelu>(row, h_out + (kRelu ? i * D : 0), D);
        goodness[i] = g;
        const acc_t s = (g - theta) / temperature;
        const bool pos = positive[i];
        const acc_t size = pos ? size_pos : size_neg;
        terms[static_cast<size_t>(i)] = (pos ? stable_softplus(-s) : stable_softplus(s)) / size;
        const acc_t coef = (stable_sigmoid(s) - (pos ? acc_t(1) : acc_t(0))) / (temperature * size);
        row_scale<in_t, grad_t, acc_t, kRelu>(row, grad + i * D, D, coef * two_k);
      }
    });
    return deterministic_sum(terms.data(), N);
  }

  // SymBa: pass 1 goodness, pair math, pass 2 scale rows.
  at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      goodness[i] = k * row_sum_squares<in_t, h_t, acc_t, kRelu>(in + i * D, h_out + (kRelu ? i * D : 0), D);
  });
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
  at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      row_scale<in_t, grad_t, acc_t, kRelu>(in + i * D, grad + i * D, D, coef[static_cast<size_t>(i)] * two_k);
  });
  return deterministic_sum(terms.data(), num_pairs) / static_cast<double>(denom);
}

}  // namespace cpu
}  // namespace ffkernels
