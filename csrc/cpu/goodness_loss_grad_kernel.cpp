// CPU kernel of ffkernels::goodness_loss_grad: for ff, one pass over h (read once, grad_z
// written once); for symba, two passes (goodness, then the row scaling).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>

#include "goodness_epilogue.h"
#include "goodness_params.h"

namespace ffkernels {
namespace cpu {

std::tuple<at::Tensor, at::Tensor, at::Tensor> goodness_loss_grad_cpu(
    const at::Tensor& h_in, const at::Tensor& positive_in, double theta, c10::string_view goodness,
    c10::string_view loss, double temperature, double alpha, const std::optional<at::Tensor>& pairs_in) {
  TORCH_CHECK(h_in.dim() == 2, "goodness_loss_grad: h must be 2-D [N, D]");
  TORCH_CHECK(at::isFloatingType(h_in.scalar_type()), "goodness_loss_grad: h must be floating point");
  const int64_t N = h_in.size(0), D = h_in.size(1);
  const GoodnessParams p = parse_goodness_params("goodness_loss_grad", N, positive_in, theta, goodness, loss,
                                                 temperature, alpha, pairs_in);
  const at::Tensor h = h_in.contiguous();
  const at::Tensor positive = positive_in.contiguous();
  at::Tensor pairs;
  if (p.symba) pairs = checked_pairs("goodness_loss_grad", pairs_in, N);
  const auto acc_type = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor goodness_out = at::empty({N}, h.options().dtype(acc_type));
  at::Tensor grad = at::empty_like(h, at::MemoryFormat::Contiguous);
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffkernels_goodness_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    total = goodness_epilogue<scalar_t, scalar_t, scalar_t, acc_t, false>(
        h.data_ptr<scalar_t>(), static_cast<scalar_t*>(nullptr), grad.data_ptr<scalar_t>(),
        positive.data_ptr<bool>(), p.symba ? pairs.data_ptr<int64_t>() : nullptr, p.symba ? pairs.size(0) : 0,
        N, D, p, goodness_out.data_ptr<acc_t>());
  });
  at::Tensor loss_out = at::scalar_tensor(total, h.options().dtype(acc_type));
  return {loss_out, goodness_out, grad};
}

}  // namespace cpu
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CPU, m) { m.impl("goodness_loss_grad", &ffkernels::cpu::goodness_loss_grad_cpu); }
