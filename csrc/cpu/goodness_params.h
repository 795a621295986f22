// Parsing and checking of the goodness/loss arguments shared by the goodness ops.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "goodness_epilogue.h"

namespace ffkernels {
namespace cpu {

inline GoodnessParams parse_goodness_params(const char* op, int64_t num_rows, const at::Tensor& positive,
                                            double theta, c10::string_view goodness, c10::string_view loss,
                                            double temperature, double alpha,
                                            const std::optional<at::Tensor>& pairs) {
  const std::string g(goodness.data(), goodness.size());
  const std::string l(loss.data(), loss.size());
  TORCH_CHECK(g == "sum" || g == "mean", op, ": goodness must be 'sum' or 'mean', got '", g, "'");
  TORCH_CHECK(l == "ff" || l == "symba", op, ": loss must be 'ff' or 'symba', got '", l, "'");
  TORCH_CHECK(temperature > 0, op, ": temperature must be > 0");
  TORCH_CHECK(positive.scalar_type() == at::kBool && positive.dim() == 1 && positive.numel() == num_rows, op,
              ": positive must be a bool tensor of shape [", num_rows, "]");
  GoodnessParams p{theta, temperature, alpha, g == "mean", l == "symba"};
  if (p.symba) {
    TORCH_CHECK(pairs.has_value() && pairs->defined() && pairs->dim() == 2 && pairs->size(1) == 2, op,
                ": loss='symba' needs pairs of shape [P, 2]");
  }
  return p;
}

// Pairs as contiguous int64 [P, 2], range-checked (an out-of-range pair would read wild memory).
inline at::Tensor checked_pairs(const char* op, const std::optional<at::Tensor>& pairs, int64_t num_rows) {
  at::Tensor out = pairs->to(at::kLong).contiguous();
  if (out.numel() > 0) {
    TORCH_CHECK(out.min().item<int64_t>() >= 0 && out.max().item<int64_t>() < num_rows, op,
                ": pairs must index rows in [0, ", num_rows, ")");
  }
  return out;
}

}  // namespace cpu
}  // namespace ffkernels
