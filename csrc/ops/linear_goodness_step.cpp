// Schema of ffkernels::linear_goodness_step: z = x W^T + b, ReLU, goodness, loss and the
// weight/bias gradients in one call. Semantics: reference.py::linear_goodness_step.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def(
      "linear_goodness_step(Tensor x, Tensor weight, Tensor? bias, Tensor positive, float theta, "
      "str goodness, str loss, float temperature, float alpha, Tensor? pairs) -> "
      "(Tensor loss, Tensor goodness, Tensor grad_weight, Tensor? grad_bias, Tensor h)");
}
