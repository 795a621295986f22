// The goodness row kernels compiled for AVX2 + FMA; chosen at run time by goodness_epilogue.h
// when the CPU has them (the wheel's baseline is plain x86-64). Only the header-free code of
// goodness_rows.h is compiled under the raised target: library headers come before the pragma.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "goodness_task.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FFK_ISA avx2
#include "goodness_rows.h"
#undef FFK_ISA
#pragma GCC pop_options
#else  // other architectures: the portable code under the avx2 name (never selected)
#define FFK_ISA avx2
#include "goodness_rows.h"
#undef FFK_ISA
#endif

namespace ffkernels {
namespace cpu {
namespace avx2 {

// goodness_loss_grad: <S, S, S, acc, false>; linear_goodness_step: <acc, S, acc, acc, true>.
#define FFK_INSTANTIATE(S, A)                                                  \
  template GoodnessRowFns select_goodness_rows<S, S, S, A, false>();         \
  template GoodnessRowFns select_goodness_rows<A, S, A, A, true>();
FFK_INSTANTIATE(float, float)
FFK_INSTANTIATE(double, double)
FFK_INSTANTIATE(c10::Half, float)
FFK_INSTANTIATE(c10::BFloat16, float)
#undef FFK_INSTANTIATE

}  // namespace avx2
}  // namespace cpu
}  // namespace ffkernels
