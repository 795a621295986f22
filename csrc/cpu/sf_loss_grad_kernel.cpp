// CPU kernel of ffkernels::sf_loss_grad (docs/algorithms.md#sf): one pass over the training rows
// (logits against the C virtual rows, softmax cross-entropy, grad_h_i = r_i h_V written at
// once) that also accumulates grad_h_V = R^T h_train in fixed row blocks; the blocks' partials
// are then summed in block order. The block partition depends only on n (not on the thread
// count): bitwise repeatable. Semantics: ffkernels/backends/reference.py::sf_loss_grad.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "cpu_isa.h"
#include "sf_task.h"

#define FFK_ISA baseline
#include "sf_rows.h"
#undef FFK_ISA

namespace ffkernels {
namespace cpu {

namespace avx2 {
template <typename scalar_t, typename acc_t>
SfBlockFn select_sf_block();
}  // namespace avx2

namespace {

// At most this many blocks (their [C, D] partials are summed at the end), at least kMinBlockRows
// rows each so that a block amortises zeroing and summing its partial.
constexpr int64_t kMaxBlocks = 256;
constexpr int64_t kMinBlockRows = 256;

void check_index(const at::Tensor& t, const char* name, int64_t bound, const char* what) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, "sf_loss_grad: ", name, " must be a 1-D int64 tensor");
  if (t.numel() > 0) {
    const auto [lo, hi] = at::aminmax(t);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < bound, "sf_loss_grad: ", name, " must be in [0, ",
                bound, ") (", what, ")");
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sf_loss_grad_cpu(const at::Tensor& h_in, const at::Tensor& train_in,
                                                    const at::Tensor& y_in, const at::Tensor& virtual_in,
                                                    double tau) {
  TORCH_CHECK(h_in.dim() == 2 && at::isFloatingType(h_in.scalar_type()), "sf_loss_grad: h must be a 2-D float tensor");
  TORCH_CHECK(tau > 0, "sf_loss_grad: tau must be > 0");
  const at::Tensor h = h_in.contiguous();
  const at::Tensor train = train_in.contiguous(), y = y_in.contiguous(), virt = virtual_in.contiguous();
  const int64_t N = h.size(0), D = h.size(1), n = train.numel(), C = virt.numel();
  TORCH_CHECK(C >= 1, "sf_loss_grad: virtual_idx must hold at least one virtual node");
  TORCH_CHECK(y.numel() == n, "sf_loss_grad: y_train must have one label per train_idx entry");
  // Cheap next to the kernel, and an out-of-range index would read wild memory.
  check_index(train, "train_idx", N, "rows of h");
  check_index(virt, "virtual_idx", N, "rows of h");
  check_index(y, "y_train", C, "one virtual node per class");
  const auto acc_type = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor grad = at::empty({n + C, D}, h.options().memory_format(at::MemoryFormat::Contiguous));
  const at::Tensor hv = h.index_select(0, virt).to(acc_type).contiguous();
  const int64_t block_rows = std::max(kMinBlockRows, (n + kMaxBlocks - 1) / kMaxBlocks);
  const int64_t num_blocks = (n + block_rows - 1) / block_rows;
  at::Tensor partial = at::empty({std::max<int64_t>(num_blocks, 1), C, D}, h.options().dtype(acc_type));
  std::vector<double> loss_partial(static_cast<size_t>(std::max<int64_t>(num_blocks, 1)), 0.0);
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffkernels_sf_loss_grad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SfBlockFn fn = cpu_has_avx2() ? avx2::select_sf_block<scalar_t, acc_t>()
                                                          : baseline::select_sf_block<scalar_t, acc_t>();
    SfArgs args{h.data_ptr<scalar_t>(), train.data_ptr<int64_t>(), y.data_ptr<int64_t>(), hv.data_ptr<acc_t>(),
                grad.data_ptr<scalar_t>(), partial.data_ptr<acc_t>(), loss_partial.data(), D, C, n, block_rows,
                1.0 / tau, 1.0 / (tau * static_cast<double>(std::max<int64_t>(n, 1)))};
    at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> scratch(static_cast<size_t>(2 * D + C));
      for (int64_t b = b0; b < b1; ++b) fn(args, b, scratch.data());
    });
    // grad_h_V[c, d] = sum over blocks, in block order.
    const acc_t* pp = partial.data_ptr<acc_t>();
    scalar_t* gv = grad.data_ptr<scalar_t>() + n * D;
    at::parallel_for(0, C * D, 4096, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        acc_t s = acc_t(0);
        for (int64_t b = 0; b < num_blocks; ++b) s += pp[b * C * D + k];
        gv[k] = static_cast<scalar_t>(s);
      }
    });
    for (int64_t b = 0; b < num_blocks; ++b) total += loss_partial[static_cast<size_t>(b)];
  });
  total /= static_cast<double>(std::max<int64_t>(n, 1));
  return {at::scalar_tensor(total, h.options().dtype(acc_type)), grad};
}

}  // namespace cpu
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CPU, m) { m.impl("sf_loss_grad", &ffkernels::cpu::sf_loss_grad_cpu); }
