// The SF loss block kernel compiled for AVX2 + FMA; chosen at run time by sf_loss_grad_kernel.cpp.
// Only the header-free code of sf_rows.h is compiled under the raised target.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "sf_task.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FFK_ISA avx2
#include "sf_rows.h"
#undef FFK_ISA
#pragma GCC pop_options
#else  // other architectures: the portable code under the avx2 name (never selected)
#define FFK_ISA avx2
#include "sf_rows.h"
#undef FFK_ISA
#endif

namespace ffkernels {
namespace cpu {
namespace avx2 {

template SfBlockFn select_sf_block<float, float>();
template SfBlockFn select_sf_block<double, double>();
template SfBlockFn select_sf_block<c10::Half, float>();
template SfBlockFn select_sf_block<c10::BFloat16, float>();

}  // namespace avx2
}  // namespace cpu
}  // namespace ffkernels
