// Row kernels of the goodness epilogue (docs/algorithms.md#losses), compiled once per instruction
// set like aggregate_rows.h: the including translation unit defines FFK_ISA (a namespace name)
// and may raise the target ISA with `#pragma GCC target` after its library includes.
//
// Deliberately no include guard: the header is included once per ISA namespace.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "goodness_task.h"

namespace ffkernels {
namespace cpu {
namespace FFK_ISA {

// ReLU that keeps NaN (as torch.relu does): `v > 0 ? v : 0` would turn a NaN input into a
// finite 0 and hide it from the loss while the weights still go NaN.
template <typename T>
inline T relu_nan(T v) {
  return v < T(0) ? T(0) : v;
}

// 32-byte vectors (GCC vector extensions: one AVX register, two SSE ones in the baseline build).
template <typename T>
struct GVec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(T));
};

// ReLU + sum of squares for acc_t rows with an acc_t h (the linear step's float/double z):
// explicit vectors, since the compiler leaves the select-and-store loop below scalar.
template <typename acc_t>
inline acc_t relu_sum_squares_vec(const acc_t* __restrict__ in, acc_t* __restrict__ h_out, int64_t D) {
  using V = typename GVec<acc_t>::type;
  constexpr int64_t L = GVec<acc_t>::kLanes;
  const V zero = {};
  V a0 = {}, a1 = {};
  int64_t d = 0;
  for (; d + 2 * L <= D; d += 2 * L) {
    V v0, v1;
    __builtin_memcpy(&v0, in + d, sizeof(V));
    __builtin_memcpy(&v1, in + d + L, sizeof(V));
    v0 = v0 < zero ? zero : v0;  // keeps NaN (NaN < 0 is false)
    v1 = v1 < zero ? zero : v1;
    __builtin_memcpy(h_out + d, &v0, sizeof(V));
    __builtin_memcpy(h_out + d + L, &v1, sizeof(V));
    a0 += v0 * v0;
    a1 += v1 * v1;
  }
  a0 += a1;
  acc_t s = acc_t(0);
  for (int64_t k = 0; k < L; ++k) s += a0[k];
  for (; d < D; ++d) {
    const acc_t v = relu_nan(in[d]);
    h_out[d] = v;
    s += v * v;
  }
  return s;
}

// Sum of squares of one row (after ReLU when kRelu; then also writes h = ReLU(in)).
// Eight independent partial sums let the compiler vectorise without -ffast-math.
template <typename in_t, typename h_t, typename acc_t, bool kRelu>
inline acc_t row_sum_squares(const in_t* __restrict__ in, h_t* __restrict__ h_out, int64_t D) {
  if constexpr (kRelu && std::is_same<in_t, acc_t>::value && std::is_same<h_t, acc_t>::value) {
    return relu_sum_squares_vec<acc_t>(in, h_out, D);
  }
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

// grad[d] = scale * h[d], h = ReLU(in) when kRelu. `grad` may alias `in` (no __restrict__).
template <typename in_t, typename grad_t, typename acc_t, bool kRelu>
inline void row_scale(const in_t* in, grad_t* grad, int64_t D, acc_t scale) {
  int64_t d0 = 0;
  if constexpr (kRelu && std::is_same<in_t, acc_t>::value && std::is_same<grad_t, acc_t>::value) {
    using V = typename GVec<acc_t>::type;
    constexpr int64_t L = GVec<acc_t>::kLanes;
    const V zero = {};
    for (; d0 + L <= D; d0 += L) {  // element-wise: safe when grad == in
      V v;
      __builtin_memcpy(&v, in + d0, sizeof(V));
      v = (v < zero ? zero : v) * scale;
      __builtin_memcpy(grad + d0, &v, sizeof(V));
    }
  }
  for (int64_t d = d0; d < D; ++d) {
    acc_t v = static_cast<acc_t>(in[d]);
    if (kRelu) v = relu_nan(v);
    grad[d] = static_cast<grad_t>(scale * v);
  }
}

// log1p(e) for e = exp(-|s|) in [0, 1]. float: a 4-term series below 0.01 (relative error
// < 1e-10) and logf(1 + e) above (log1pf is ~1.5x slower); double keeps std::log1p.
inline float log1p_unit(float e) {
  return e < 0.01f ? e * (1.0f - e * (0.5f - e * (1.0f / 3.0f - e * 0.25f))) : std::log(1.0f + e);
}
inline double log1p_unit(double e) { return std::log1p(e); }

// Rows per batch of ff_rows: goodness of the whole batch first, then the per-row loss math
// (independent rows, so the exp/log latencies overlap), then the scaling; the batch's rows
// (8 KiB at D = 128 float) stay in L1 between the first and the last phase.
constexpr int64_t kRowBatch = 16;

template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
double ff_rows(const GoodnessRowArgs& a, int64_t r0, int64_t r1) {
  const in_t* in = static_cast<const in_t*>(a.in);
  h_t* h_out = static_cast<h_t*>(a.h_out);
  grad_t* grad = static_cast<grad_t*>(a.grad);
  acc_t* goodness = static_cast<acc_t*>(a.goodness);
  const int64_t D = a.D;
  const acc_t k = static_cast<acc_t>(a.k), two_k = static_cast<acc_t>(a.two_k);
  const acc_t theta = static_cast<acc_t>(a.theta), inv_t = static_cast<acc_t>(a.inv_temperature);
  const acc_t inv_pos = static_cast<acc_t>(a.inv_size_pos), inv_neg = static_cast<acc_t>(a.inv_size_neg);
  double sum = 0.0;
  acc_t scale[kRowBatch];
  for (int64_t i0 = r0; i0 < r1; i0 += kRowBatch) {
    const int64_t n = r1 - i0 < kRowBatch ? r1 - i0 : kRowBatch;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = i0 + j;
      goodness[i] = k * row_sum_squares<in_t, h_t, acc_t, kRelu>(in + i * D, h_out + (kRelu ? i * D : 0), D);
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = i0 + j;
      const bool pos = a.positive[i];
      const acc_t inv_size = pos ? inv_pos : inv_neg;
      // One exp and one log per row: softplus(+-s) = max(+-s, 0) + log1p(e) and sigmoid(s)
      // from the same e = exp(-|s|) (NaN in, NaN out; +-Inf give the limits).
      const acc_t s = (goodness[i] - theta) * inv_t;
      const acc_t e = std::exp(-std::fabs(s));
      const acc_t l = log1p_unit(e);
      const acc_t sp = pos ? (s < acc_t(0) ? -s : acc_t(0)) + l : (s > acc_t(0) ? s : acc_t(0)) + l;
      const acc_t sig = s >= acc_t(0) ? acc_t(1) / (acc_t(1) + e) : e / (acc_t(1) + e);
      sum += static_cast<double>(sp * inv_size);
      scale[j] = (sig - (pos ? acc_t(1) : acc_t(0))) * inv_t * inv_size * two_k;
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = i0 + j;
      row_scale<in_t, grad_t, acc_t, kRelu>(in + i * D, grad + i * D, D, scale[j]);
    }
  }
  return sum;
}

template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
void sumsq_rows(const GoodnessRowArgs& a, int64_t r0, int64_t r1) {
  const in_t* in = static_cast<const in_t*>(a.in);
  h_t* h_out = static_cast<h_t*>(a.h_out);
  acc_t* goodness = static_cast<acc_t*>(a.goodness);
  const acc_t k = static_cast<acc_t>(a.k);
  for (int64_t i = r0; i < r1; ++i)
    goodness[i] = k * row_sum_squares<in_t, h_t, acc_t, kRelu>(in + i * a.D, h_out + (kRelu ? i * a.D : 0), a.D);
}

template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
void scale_rows(const GoodnessRowArgs& a, int64_t r0, int64_t r1) {
  const in_t* in = static_cast<const in_t*>(a.in);
  grad_t* grad = static_cast<grad_t*>(a.grad);
  const acc_t* coef = static_cast<const acc_t*>(a.coef);
  const acc_t two_k = static_cast<acc_t>(a.two_k);
  for (int64_t i = r0; i < r1; ++i)
    row_scale<in_t, grad_t, acc_t, kRelu>(in + i * a.D, grad + i * a.D, a.D, coef[i] * two_k);
}

template <typename in_t, typename h_t, typename grad_t, typename acc_t, bool kRelu>
GoodnessRowFns select_goodness_rows() {
  return {&ff_rows<in_t, h_t, grad_t, acc_t, kRelu>, &sumsq_rows<in_t, h_t, grad_t, acc_t, kRelu>,
          &scale_rows<in_t, h_t, grad_t, acc_t, kRelu>};
}

}  // namespace FFK_ISA
}  // namespace cpu
}  // namespace ffkernels
