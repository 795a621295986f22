// The aggregate row kernels compiled for AVX-512 (F/VL/BW/DQ, 512-bit vectors preferred); chosen
// at run time by aggregate_kernel.cpp when the CPU has them. 512-bit vectors halve the
// instructions per gathered row: measured on Cora-ML's first-layer SpMM (146k non-zeros x 128
// features, one thread, AMD EPYC) 1.2-1.7x the AVX2 variant; float32 sum/mean/gcn then take the
// register-blocked kernel of aggregate_regs.h (1.1 ms there, 1.5-2.4 ms AVX2), 128 features
// (8 zmm) per row pass. Only the plain code of aggregate_rows.h and that header is compiled
// under the raised target: every library header is included before the pragma.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <limits>

#include "aggregate_task.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")
#define FFK_ISA avx512
#include "aggregate_rows.h"
namespace ffkernels {
namespace cpu {
namespace avx512 {
struct RegVec {  // 16 float32 lanes; the tail is a lane mask
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_tail(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_tail(float* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V set1(float f) { return _mm512_set1_ps(f); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static Mask tail_mask(int lanes) { return static_cast<Mask>(lanes >= 16 ? 0xFFFFu : (1u << lanes) - 1u); }
};
}  // namespace avx512
}  // namespace cpu
}  // namespace ffkernels
#include "aggregate_regs.h"
#undef FFK_ISA
#define FFK_HAVE_REGS 1
#pragma GCC pop_options
#else  // other architectures: the same portable code under the avx512 name (never selected)
#define FFK_ISA avx512
#include "aggregate_rows.h"
#undef FFK_ISA
#endif

namespace ffkernels {
namespace cpu {
namespace avx512 {

#define FFK_INSTANTIATE(S, A)                                                 \
  template AggregateTaskFn select_aggregate_task<S, A, int32_t>(int, bool); \
  template AggregateTaskFn select_aggregate_task<S, A, int64_t>(int, bool);
FFK_INSTANTIATE(float, float)
FFK_INSTANTIATE(double, double)
FFK_INSTANTIATE(c10::Half, float)
FFK_INSTANTIATE(c10::BFloat16, float)
#undef FFK_INSTANTIATE

#ifdef FFK_HAVE_REGS
template AggregateTaskFn select_aggregate_task_regs<int32_t>(int, bool);
template AggregateTaskFn select_aggregate_task_regs<int64_t>(int, bool);
#else  // other architectures: never selected (no AVX-512 there)
template <typename index_t>
AggregateTaskFn select_aggregate_task_regs(int, bool) { return nullptr; }
template AggregateTaskFn select_aggregate_task_regs<int32_t>(int, bool);
template AggregateTaskFn select_aggregate_task_regs<int64_t>(int, bool);
#endif

}  // namespace avx512
}  // namespace cpu
}  // namespace ffkernels
