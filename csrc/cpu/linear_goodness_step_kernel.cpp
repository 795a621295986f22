// CPU kernel of ffkernels::linear_goodness_step(_out): z = x W^T + b by the BLAS (at::addmm),
// then the fused epilogue writes h = ReLU(z) and overwrites z's buffer with grad_z, then
// grad_W = grad_z^T x and grad_b = sum_rows grad_z. No N x Dout buffer besides z and h, and
// with the _out variant both are the caller's.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "goodness_epilogue.h"
#include "goodness_params.h"

namespace ffkernels {
namespace cpu {
namespace {

using StepResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>>;

StepResult run_step(const char* op, const at::Tensor& x_in, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, const at::Tensor& positive_in, double theta,
                    c10::string_view goodness, c10::string_view loss, double temperature, double alpha,
                    const std::optional<at::Tensor>& pairs_in, at::Tensor& h, at::Tensor& z) {
  TORCH_CHECK(x_in.dim() == 2 && weight.dim() == 2 && weight.size(1) == x_in.size(1), op,
              ": x must be [N, Din] and weight [Dout, Din]");
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must be [Dout]");
  const int64_t N = x_in.size(0), Dout = weight.size(0);
  const GoodnessParams p =
      parse_goodness_params(op, N, positive_in, theta, goodness, loss, temperature, alpha, pairs_in);
  at::Tensor pairs;
  if (p.symba) pairs = checked_pairs(op, pairs_in, N);
  const at::Tensor positive = positive_in.contiguous();
  // Half types run the GEMMs in float32 (the accumulation type), as the reference does.
  const auto acc_type = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(h.is_contiguous() && h.dim() == 2 && h.size(0) == N && h.size(1) == Dout &&
                  h.scalar_type() == x_in.scalar_type(),
              op, ": h_out must be a contiguous [N, Dout] tensor of x's dtype");
  TORCH_CHECK(z.is_contiguous() && z.dim() == 2 && z.size(0) == N && z.size(1) == Dout && z.scalar_type() == acc_type,
              op, ": grad_z_out must be a contiguous [N, Dout] tensor of the accumulation dtype (float32, or "
              "float64 for float64 x)");
  const at::Tensor xs = x_in.to(acc_type).contiguous();
  const at::Tensor ws = weight.to(acc_type);
  if (has_bias) {
    at::addmm_out(z, bias->to(acc_type), xs, ws.t());
  } else {
    at::mm_out(z, xs, ws.t());
  }
  at::Tensor goodness_out = at::empty({N}, x_in.options().dtype(acc_type));
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_in.scalar_type(), "ffkernels_linear_goodness_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* zp = z.data_ptr<acc_t>();
    total = goodness_epilogue<acc_t, scalar_t, acc_t, acc_t, true>(
        zp, h.data_ptr<scalar_t>(), zp, positive.data_ptr<bool>(), p.symba ? pairs.data_ptr<int64_t>() : nullptr,
        p.symba ? pairs.size(0) : 0, N, Dout, p, goodness_out.data_ptr<acc_t>());
  });
  const at::Tensor& grad_z = z;  // overwritten in place by the epilogue
  at::Tensor grad_weight = at::mm(grad_z.t(), xs).to(weight.scalar_type());
  std::optional<at::Tensor> grad_bias;
  if (has_bias) grad_bias = grad_z.sum(0).to(bias->scalar_type());
  at::Tensor loss_out = at::scalar_tensor(total, x_in.options().dtype(acc_type));
  return {loss_out, goodness_out, grad_weight, grad_bias};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>, at::Tensor> linear_goodness_step_cpu(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& positive, double theta, c10::string_view goodness, c10::string_view loss,
    double temperature, double alpha, const std::optional<at::Tensor>& pairs) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2, "linear_goodness_step: x must be [N, Din] and weight [Dout, Din]");
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor h = at::empty({x.size(0), weight.size(0)}, x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor z = at::empty({x.size(0), weight.size(0)}, x.options().dtype(acc_type));
  auto [l, g, gw, gb] = run_step("linear_goodness_step", x, weight, bias, positive, theta, goodness, loss,
                                 temperature, alpha, pairs, h, z);
  return {l, g, gw, gb, h};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_goodness_step_out_cpu(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& positive, double theta, c10::string_view goodness, c10::string_view loss,
    double temperature, double alpha, const std::optional<at::Tensor>& pairs, at::Tensor& h_out,
    at::Tensor& grad_z_out) {
  auto [l, g, gw, gb] = run_step("linear_goodness_step_out", x, weight, bias, positive, theta, goodness, loss,
                                 temperature, alpha, pairs, h_out, grad_z_out);
  return {l, g, gw, gb.has_value() ? *gb : at::empty({0}, weight.options())};
}

}  // namespace cpu
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CPU, m) {
  m.impl("linear_goodness_step", &ffkernels::cpu::linear_goodness_step_cpu);
  m.impl("linear_goodness_step_out", &ffkernels::cpu::linear_goodness_step_out_cpu);
}
