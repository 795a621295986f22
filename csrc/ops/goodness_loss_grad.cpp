// Schemas of ffkernels::goodness_loss_grad (fused goodness, FF/SymBa loss and dloss/dz) and of
// its in-place variant goodness_loss_grad_, which writes grad_z over h (no [N, D] allocation).
// Semantics: ffkernels/backends/reference.py::goodness_loss_grad.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def(
      "goodness_loss_grad(Tensor h, Tensor positive, float theta, str goodness, str loss, "
      "float temperature, float alpha, Tensor? pairs) -> (Tensor loss, Tensor goodness, Tensor grad_z)");
  m.def(
      "goodness_loss_grad_(Tensor(a!) h, Tensor positive, float theta, str goodness, str loss, "
      "float temperature, float alpha, Tensor? pairs) -> (Tensor loss, Tensor goodness)");
}
