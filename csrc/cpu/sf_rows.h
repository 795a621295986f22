// Block kernel of the SF loss (docs/algorithms.md#sf), compiled once per ISA like aggregate_rows.h
// (the including TU defines FFK_ISA and may raise the target after its library includes).
//
// For each training row i of the block: logits l_c = <h_i, h_{v_c}> / tau, p = softmax(l),
// loss term -log p_{y_i}, r_i = (p - onehot(y_i)) / (tau n); writes grad_h_i = r_i h_V and
// adds r_ic h_i into the block's partial of grad_h_{v_c}. Rows in a fixed order: deterministic.
//
// Deliberately no include guard: the header is included once per ISA namespace.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "sf_task.h"

namespace ffkernels {
namespace cpu {
namespace FFK_ISA {

// 32-byte vectors (GCC vector extensions: one AVX register, or two SSE ones in the baseline
// build); loads and stores through memcpy, so no alignment is assumed.
template <typename T>
struct Vec32 {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(T));
};

template <typename V>
inline V vload(const void* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V>
inline void vstore(void* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

template <typename V, typename T>
inline T hsum(V v) {
  T s = T(0);
  for (int64_t k = 0; k < static_cast<int64_t>(sizeof(V) / sizeof(T)); ++k) s += v[k];
  return s;
}

// logits[c] = <x, hv[c]> for c in [0, C): four classes at a time share each load of x.
template <typename acc_t>
inline void dots(const acc_t* __restrict__ x, const acc_t* __restrict__ hv, int64_t C, int64_t D,
                 acc_t* __restrict__ out) {
  using V = typename Vec32<acc_t>::type;
  constexpr int64_t L = Vec32<acc_t>::kLanes;
  const int64_t Dv = D - D % L;
  int64_t c = 0;
  for (; c + 4 <= C; c += 4) {
    const acc_t* v0 = hv + c * D;
    const acc_t *v1 = v0 + D, *v2 = v1 + D, *v3 = v2 + D;
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t d = 0; d < Dv; d += L) {
      const V xv = vload<V>(x + d);
      a0 += xv * vload<V>(v0 + d);
      a1 += xv * vload<V>(v1 + d);
      a2 += xv * vload<V>(v2 + d);
      a3 += xv * vload<V>(v3 + d);
    }
    acc_t s0 = hsum<V, acc_t>(a0), s1 = hsum<V, acc_t>(a1), s2 = hsum<V, acc_t>(a2), s3 = hsum<V, acc_t>(a3);
    for (int64_t d = Dv; d < D; ++d) {
      s0 += x[d] * v0[d];
      s1 += x[d] * v1[d];
      s2 += x[d] * v2[d];
      s3 += x[d] * v3[d];
    }
    out[c] = s0;
    out[c + 1] = s1;
    out[c + 2] = s2;
    out[c + 3] = s3;
  }
  for (; c < C; ++c) {
    const acc_t* vc = hv + c * D;
    V a = {};
    for (int64_t d = 0; d < Dv; d += L) a += vload<V>(x + d) * vload<V>(vc + d);
    acc_t s = hsum<V, acc_t>(a);
    for (int64_t d = Dv; d < D; ++d) s += x[d] * vc[d];
    out[c] = s;
  }
}

// g = sum_c r[c] hv[c] (written to g), part[c] += r[c] x for every c: one sweep over D, four
// vectors of g at a time so that four independent accumulation chains are in flight.
template <typename acc_t>
inline void rank_c_update(const acc_t* __restrict__ x, const acc_t* __restrict__ hv, const acc_t* __restrict__ r,
                          int64_t C, int64_t D, acc_t* __restrict__ g, acc_t* __restrict__ part) {
  using V = typename Vec32<acc_t>::type;
  constexpr int64_t L = Vec32<acc_t>::kLanes;
  const int64_t D4 = D - D % (4 * L);
  for (int64_t d = 0; d < D4; d += 4 * L) {
    const V x0 = vload<V>(x + d), x1 = vload<V>(x + d + L), x2 = vload<V>(x + d + 2 * L),
            x3 = vload<V>(x + d + 3 * L);
    V g0 = {}, g1 = {}, g2 = {}, g3 = {};
    for (int64_t c = 0; c < C; ++c) {
      const acc_t rc = r[c];
      const acc_t* vc = hv + c * D + d;
      g0 += rc * vload<V>(vc);
      g1 += rc * vload<V>(vc + L);
      g2 += rc * vload<V>(vc + 2 * L);
      g3 += rc * vload<V>(vc + 3 * L);
      acc_t* pc = part + c * D + d;
      vstore<V>(pc, vload<V>(pc) + rc * x0);
      vstore<V>(pc + L, vload<V>(pc + L) + rc * x1);
      vstore<V>(pc + 2 * L, vload<V>(pc + 2 * L) + rc * x2);
      vstore<V>(pc + 3 * L, vload<V>(pc + 3 * L) + rc * x3);
    }
    vstore<V>(g + d, g0);
    vstore<V>(g + d + L, g1);
    vstore<V>(g + d + 2 * L, g2);
    vstore<V>(g + d + 3 * L, g3);
  }
  for (int64_t d = D4; d < D; ++d) {
    acc_t gs = acc_t(0);
    for (int64_t c = 0; c < C; ++c) {
      gs += r[c] * hv[c * D + d];
      part[c * D + d] += r[c] * x[d];
    }
    g[d] = gs;
  }
}

template <typename scalar_t, typename acc_t>
void sf_block(const SfArgs& a, int64_t block, void* scratch) {
  constexpr bool kWiden = !std::is_same<scalar_t, acc_t>::value;
  const scalar_t* h = static_cast<const scalar_t*>(a.h);
  const acc_t* hv = static_cast<const acc_t*>(a.hv);
  scalar_t* grad = static_cast<scalar_t*>(a.grad);
  const int64_t D = a.D, C = a.C;
  acc_t* part = static_cast<acc_t*>(a.partial) + block * C * D;
  const acc_t inv_tau = static_cast<acc_t>(a.inv_tau), scale = static_cast<acc_t>(a.scale);
  const int64_t i0 = block * a.block_rows;
  const int64_t i1 = i0 + a.block_rows < a.n ? i0 + a.block_rows : a.n;
  // Per-row scratch ([2 D + C] acc_t from the caller): h_i widened to acc_t (half types only),
  // its grad row (acc_t types write grad_h_i in place), the C logits.
  acc_t* wide = static_cast<acc_t*>(scratch);
  acc_t* gbuf = wide + D;
  acc_t* r = gbuf + D;
  for (int64_t k = 0; k < C * D; ++k) part[k] = acc_t(0);
  double loss = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    const scalar_t* src = h + a.train[i] * D;
    const acc_t* hi;
    if constexpr (kWiden) {
      for (int64_t d = 0; d < D; ++d) wide[d] = static_cast<acc_t>(src[d]);
      hi = wide;
    } else {
      hi = src;
    }
    dots<acc_t>(hi, hv, C, D, r);
    // max with NaN propagation (as torch's log_softmax): a NaN logit makes the row NaN.
    acc_t m = -std::numeric_limits<acc_t>::infinity();
    for (int64_t c = 0; c < C; ++c) {
      r[c] *= inv_tau;
      m = (r[c] > m || r[c] != r[c]) ? r[c] : m;
    }
    const int64_t y = a.y[i];
    const acc_t logit_y = r[y];
    acc_t sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      r[c] = std::exp(r[c] - m);  // C exps per row; p_c = r_c / sum reuses them
      sum += r[c];
    }
    loss += static_cast<double>(m + std::log(sum) - logit_y);
    const acc_t inv_sum = acc_t(1) / sum;
    for (int64_t c = 0; c < C; ++c) r[c] = (r[c] * inv_sum - (c == y ? acc_t(1) : acc_t(0))) * scale;
    if constexpr (kWiden) {
      rank_c_update<acc_t>(hi, hv, r, C, D, gbuf, part);
      scalar_t* out = grad + i * D;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(gbuf[d]);
    } else {
      rank_c_update<acc_t>(hi, hv, r, C, D, grad + i * D, part);
    }
  }
  a.loss_partial[block] = loss;
}

template <typename scalar_t, typename acc_t>
SfBlockFn select_sf_block() {
  return &sf_block<scalar_t, acc_t>;
}

}  // namespace FFK_ISA
}  // namespace cpu
}  // namespace ffkernels
