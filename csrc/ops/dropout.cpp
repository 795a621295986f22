// Schema of ffkernels::dropout: inverted dropout whose mask is a pure function of (seed, element
// index), so a second call with the same seed on a tensor of the same shape draws the same mask
// (a backward reuses the forward's mask without storing it). `out` may be `x` (in place).
// Semantics: ffkernels/backends/reference.py::dropout.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def("dropout(Tensor x, float p, int seed) -> Tensor");
  m.def("dropout_out(Tensor x, float p, int seed, Tensor(a!) out) -> ()");
}
