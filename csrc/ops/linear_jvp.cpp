// Schema of ffkernels::linear_jvp: the dual-number linear layer, primal and tangent in one
// call: y = x W^T + b, dy = x V^T + dx W^T + db (dx, V, b, db optional: absent = zero).
// Semantics: ffkernels/backends/reference.py::linear_jvp.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def(
      "linear_jvp(Tensor x, Tensor? dx, Tensor weight, Tensor? tangent_weight, Tensor? bias, "
      "Tensor? tangent_bias) -> (Tensor y, Tensor dy)");
}
