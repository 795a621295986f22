// Schema of ffkernels::aggregate: sparse neighbourhood aggregation over a CSR graph
// (rows = destination nodes). Semantics: ffkernels/backends/reference.py::aggregate.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ffkernels, m) {
  m.def(
      "aggregate(Tensor rowptr, Tensor col, Tensor x, Tensor? edge_weight, str reduce, "
      "Tensor? deg_inv_sqrt) -> Tensor");
  // The same into a caller buffer (no [N, F] allocation per call).
  m.def(
      "aggregate_out(Tensor rowptr, Tensor col, Tensor x, Tensor? edge_weight, str reduce, "
      "Tensor? deg_inv_sqrt, Tensor(a!) out) -> ()");
}
