// The dropout range kernels compiled for AVX2 (8 hash lanes per vector: vpmulld); chosen at run
// time by dropout_kernel.cpp. Only the header-free code of dropout_hash.h is compiled under the
// raised target.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "dropout_task.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FFK_ISA avx2
#include "dropout_hash.h"
#undef FFK_ISA
#pragma GCC pop_options
#else  // other architectures: the portable code under the avx2 name (never selected)
#define FFK_ISA avx2
#include "dropout_hash.h"
#undef FFK_ISA
#endif

namespace ffkernels {
namespace cpu {
namespace avx2 {

template <typename scalar_t, typename acc_t>
void dropout_task(const DropoutArgs& a, int64_t begin, int64_t end) {
  dropout_range<scalar_t, acc_t>(static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), begin, end,
                                 a.s0, a.s1, a.threshold, static_cast<acc_t>(a.scale));
}

template void dropout_task<float, float>(const DropoutArgs&, int64_t, int64_t);
template void dropout_task<double, double>(const DropoutArgs&, int64_t, int64_t);
template void dropout_task<c10::Half, float>(const DropoutArgs&, int64_t, int64_t);
template void dropout_task<c10::BFloat16, float>(const DropoutArgs&, int64_t, int64_t);

}  // namespace avx2
}  // namespace cpu
}  // namespace ffkernels
