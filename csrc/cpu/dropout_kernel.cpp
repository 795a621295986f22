// CPU kernel of ffkernels::dropout: one pass, x read once and out written once, the keep bit
// hashed from (seed, index) in 32-bit vector lanes (dropout_hash.h) instead of drawn from a
// generator (ops suite, [1e6, 128] float32, one thread: in place 1.27x one dst.copy_(x),
// torch.nn.functional.dropout 62x slower); threads split the index range (each element depends
// only on its index: bitwise the same for any thread count).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_isa.h"
#include "dropout_task.h"

#define FFK_ISA baseline
#include "dropout_hash.h"
#undef FFK_ISA

namespace ffkernels {
namespace cpu {

namespace avx2 {
// Defined (and explicitly instantiated) in dropout_kernel_avx2.cpp.
template <typename scalar_t, typename acc_t>
void dropout_task(const DropoutArgs& a, int64_t begin, int64_t end);
}  // namespace avx2

namespace {

template <typename scalar_t, typename acc_t>
void baseline_task(const DropoutArgs& a, int64_t begin, int64_t end) {
  baseline::dropout_range<scalar_t, acc_t>(static_cast<const scalar_t*>(a.x), static_cast<scalar_t*>(a.out), begin,
                                           end, a.s0, a.s1, a.threshold, static_cast<acc_t>(a.scale));
}

// floor(p * 2^32): p in [0, 1) (checked by ffkernels.ops.dropout) keeps it below 2^32.
uint32_t keep_threshold(double p) {
  const double t = std::floor(p * 4294967296.0);
  return t >= 4294967295.0 ? 0xffffffffU : static_cast<uint32_t>(t);
}

void dropout_into(const at::Tensor& x_in, double p, int64_t seed, at::Tensor& out) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  TORCH_CHECK(seed >= 0, "dropout: seed must be a non-negative int64, got ", seed);
  const at::Tensor x = x_in.contiguous();
  DropoutArgs args;
  args.x = x.data_ptr();
  args.out = out.data_ptr();
  args.s0 = static_cast<uint32_t>(static_cast<uint64_t>(seed) & 0xffffffffULL);
  args.s1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  args.threshold = keep_threshold(p);
  args.scale = 1.0 / (1.0 - p);
  const int64_t n = x.numel();
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffkernels_dropout_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DropoutRangeFn fn = cpu_has_avx2() ? &avx2::dropout_task<scalar_t, acc_t>
                                                              : &baseline_task<scalar_t, acc_t>;
    // 64k elements a task: below that a thread's start-up costs more than the hashing
    at::parallel_for(0, n, int64_t(1) << 16, [&](int64_t begin, int64_t end) { fn(args, begin, end); });
  });
}

}  // namespace

at::Tensor dropout_cpu(const at::Tensor& x, double p, int64_t seed) {
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  dropout_into(x, p, seed, out);
  return out;
}

void dropout_out_cpu(const at::Tensor& x, double p, int64_t seed, at::Tensor& out) {
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(),
              "dropout_out: out must be a contiguous tensor of x's shape and dtype");
  dropout_into(x, p, seed, out);
}

}  // namespace cpu
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CPU, m) {
  m.impl("dropout", &ffkernels::cpu::dropout_cpu);
  m.impl("dropout_out", &ffkernels::cpu::dropout_out_cpu);
}
