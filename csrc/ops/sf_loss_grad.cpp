// Schema of ffkernels::sf_loss_grad: the single-forward loss with virtual nodes and its
// gradient in one pass over the training and virtual rows (docs/algorithms.md#sf).
// Semantics: ffkernels/backends/reference.py::sf_loss_grad.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def(
      "sf_loss_grad(Tensor h, Tensor train_idx, Tensor y_train, Tensor virtual_idx, float tau) -> "
      "(Tensor loss, Tensor grad_rows)");
}
