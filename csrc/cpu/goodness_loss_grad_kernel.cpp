// CPU kernels of ffkernels::goodness_loss_grad and goodness_loss_grad_ (in place: grad_z
// overwrites h). For ff, one pass over h (each row read once, its grad_z written once while
// the row is still in L1); for symba, two passes (goodness, then the row scaling).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>

#include "goodness_epilogue.h"
#include "goodness_params.h"

namespace ffkernels {
namespace cpu {
namespace {

// Runs the epilogue over h, writing grad_z into `grad` (which may be h itself).
std::tuple<at::Tensor, at::Tensor> run_goodness(const char* op, const at::Tensor& h, at::Tensor& grad,
                                                const at::Tensor& positive_in, double theta,
                                                c10::string_view goodness, c10::string_view loss, double temperature,
                                                double alpha, const std::optional<at::Tensor>& pairs_in) {
  TORCH_CHECK(h.dim() == 2, op, ": h must be 2-D [N, D]");
  TORCH_CHECK(at::isFloatingType(h.scalar_type()), op, ": h must be floating point");
  const int64_t N = h.size(0), D = h.size(1);
  const GoodnessParams p =
      parse_goodness_params(op, N, positive_in, theta, goodness, loss, temperature, alpha, pairs_in);
  const at::Tensor positive = positive_in.contiguous();
  at::Tensor pairs;
  if (p.symba) pairs = checked_pairs(op, pairs_in, N);
  const auto acc_type = h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor goodness_out = at::empty({N}, h.options().dtype(acc_type));
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffkernels_goodness_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    total = goodness_epilogue<scalar_t, scalar_t, scalar_t, acc_t, false>(
        h.data_ptr<scalar_t>(), static_cast<scalar_t*>(nullptr), grad.data_ptr<scalar_t>(),
        positive.data_ptr<bool>(), p.symba ? pairs.data_ptr<int64_t>() : nullptr, p.symba ? pairs.size(0) : 0,
        N, D, p, goodness_out.data_ptr<acc_t>());
  });
  return {at::scalar_tensor(total, h.options().dtype(acc_type)), goodness_out};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> goodness_loss_grad_cpu(
    const at::Tensor& h_in, const at::Tensor& positive, double theta, c10::string_view goodness,
    c10::string_view loss, double temperature, double alpha, const std::optional<at::Tensor>& pairs) {
  const at::Tensor h = h_in.contiguous();
  at::Tensor grad = at::empty_like(h, at::MemoryFormat::Contiguous);
  auto [loss_out, goodness_out] =
      run_goodness("goodness_loss_grad", h, grad, positive, theta, goodness, loss, temperature, alpha, pairs);
  return {loss_out, goodness_out, grad};
}

std::tuple<at::Tensor, at::Tensor> goodness_loss_grad_inplace_cpu(
    at::Tensor& h, const at::Tensor& positive, double theta, c10::string_view goodness, c10::string_view loss,
    double temperature, double alpha, const std::optional<at::Tensor>& pairs) {
  // In place needs h's own memory: a contiguous copy would be a hidden [N, D] allocation.
  TORCH_CHECK(h.is_contiguous(), "goodness_loss_grad_: h must be contiguous to be overwritten in place");
  return run_goodness("goodness_loss_grad_", h, h, positive, theta, goodness, loss, temperature, alpha, pairs);
}

}  // namespace cpu
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CPU, m) {
  m.impl("goodness_loss_grad", &ffkernels::cpu::goodness_loss_grad_cpu);
  m.impl("goodness_loss_grad_", &ffkernels::cpu::goodness_loss_grad_inplace_cpu);
}
