// The aggregate row kernels compiled for AVX2 + FMA; chosen at run time by
// aggregate_kernel.cpp when the CPU has them. Only the plain code of aggregate_rows.h is
// compiled under the raised target: every library header is included before the pragma.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "aggregate_task.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FFK_ISA avx2
#include "aggregate_rows.h"
#undef FFK_ISA
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

}  // namespace avx2
}  // namespace cpu
}  // namespace ffkernels
