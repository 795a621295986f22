// The aggregate row kernels compiled for AVX2 + FMA; chosen at run time by
// aggregate_kernel.cpp when the CPU has them (and no AVX-512). float32 sum/mean/gcn take the
// register-blocked kernel of aggregate_regs.h, 64 features (8 ymm) per row pass. Only the plain
// code of aggregate_rows.h and that header is compiled under the raised target: every library
// header is included before the pragma.
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
#pragma GCC target("avx2,fma")
#define FFK_ISA avx2
#include "aggregate_rows.h"
namespace ffkernels {
namespace cpu {
namespace avx2 {
struct RegVec {  // 8 float32 lanes; the tail is a vector of lane masks (maskload/maskstore)
  using V = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_tail(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_tail(float* p, Mask m, V v) { _mm256_maskstore_ps(p, m, v); }
  static V set1(float f) { return _mm256_set1_ps(f); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static Mask tail_mask(int lanes) {  // lane k on (all bits set) iff k < lanes
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};
}  // namespace avx2
}  // namespace cpu
}  // namespace ffkernels
#include "aggregate_regs.h"
#undef FFK_ISA
#define FFK_HAVE_REGS 1
#pragma GCC pop_options
#else  // other architectures: the same portable code under the avx2 name (never selected)
#define FFK_ISA avx2
#include "aggregate_rows.h"
#undef FFK_ISA
#endif

namespace ffkernels {
namespace cpu {
namespace avx2 {

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
#else  // other architectures: never selected (no AVX2 there)
template <typename index_t>
AggregateTaskFn select_aggregate_task_regs(int, bool) { return nullptr; }
template AggregateTaskFn select_aggregate_task_regs<int32_t>(int, bool);
template AggregateTaskFn select_aggregate_task_regs<int64_t>(int, bool);
#endif

}  // namespace avx2
}  // namespace cpu
}  // namespace ffkernels
