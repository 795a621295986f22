// Schemas of ffkernels::linear_goodness_step (z = x W^T + b, ReLU, goodness, loss and the
// weight/bias gradients in one call) and of linear_goodness_step_out, which writes h and
// z / grad_z into caller buffers (a training loop then allocates no [N, Dout] tensor per step).
// (Its grad_bias is an empty tensor without bias: torch.compile's auto-functionalisation of a
// mutating custom op does not accept optional outputs.)
// Semantics: reference.py::linear_goodness_step.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def(
      "linear_goodness_step(Tensor x, Tensor weight, Tensor? bias, Tensor positive, float theta, "
      "str goodness, str loss, float temperature, float alpha, Tensor? pairs) -> "
      "(Tensor loss, Tensor goodness, Tensor grad_weight, Tensor? grad_bias, Tensor h)");
  m.def(
      "linear_goodness_step_out(Tensor x, Tensor weight, Tensor? bias, Tensor positive, float theta, "
      "str goodness, str loss, float temperature, float alpha, Tensor? pairs, Tensor(a!) h_out, "
      "Tensor(b!) grad_z_out) -> (Tensor loss, Tensor goodness, Tensor grad_weight, Tensor grad_bias)");
}
