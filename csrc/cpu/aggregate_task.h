// Plain-C++ types shared by the aggregate kernel variants (no ATen: this header is also
// compiled under raised `#pragma GCC target` ISAs).
#pragma once
#include <cstdint>

namespace ffkernels {
namespace cpu {

enum AggregateReduce : int { kReduceSum = 0, kReduceMean = 1, kReduceMax = 2, kReduceGcn = 3 };

struct AggregateArgs {
  const void* rowptr;       // [N + 1] index_t
  const void* col;          // [E] index_t
  const void* x;            // [N, F] scalar_t, contiguous
  const void* edge_weight;  // [E] acc_t or nullptr
  const void* scale;        // [N] acc_t (gcn only) or nullptr
  void* out;                // [N, F] scalar_t
  int64_t num_features;
  int64_t prefetch_distance;  // edges ahead whose source rows are prefetched
};

struct AggregateTask {
  int64_t row_begin, row_end, f_begin, f_end;
};

using AggregateTaskFn = void (*)(const AggregateArgs&, const AggregateTask&);

}  // namespace cpu
}  // namespace ffkernels
