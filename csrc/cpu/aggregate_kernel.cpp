// CPU kernel of ffkernels::aggregate: row-parallel CSR aggregation (OpenMP), vectorised
// across features, deterministic (each output element written by one task, fixed edge order),
// with a cache-aware schedule chosen by size (aggregate_schedule.h: feature tiles sized to the
// last-level cache, prefetch distance sized to the gathered row).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "aggregate_schedule.h"
#include "aggregate_task.h"
#include "cpu_isa.h"
#include "prefault.h"

#define FFK_ISA baseline
#include "aggregate_rows.h"
#undef FFK_ISA

namespace ffkernels {
namespace cpu {

namespace avx2 {
// Defined (and explicitly instantiated) in aggregate_kernel_avx2.cpp.
template <typename scalar_t, typename acc_t, typename index_t>
AggregateTaskFn select_aggregate_task(int reduce, bool weighted);
// float32 with the accumulators in registers (aggregate_regs.h); nullptr for max.
template <typename index_t>
AggregateTaskFn select_aggregate_task_regs(int reduce, bool weighted);
}  // namespace avx2

namespace avx512 {
// Defined (and explicitly instantiated) in aggregate_kernel_avx512.cpp.
template <typename scalar_t, typename acc_t, typename index_t>
AggregateTaskFn select_aggregate_task(int reduce, bool weighted);
// float32 with the accumulators in registers (aggregate_regs.h); nullptr for max.
template <typename index_t>
AggregateTaskFn select_aggregate_task_regs(int reduce, bool weighted);
}  // namespace avx512

namespace {

int parse_reduce(c10::string_view reduce) {
  const std::string r(reduce.data(), reduce.size());
  if (r == "sum") return kReduceSum;
  if (r == "mean") return kReduceMean;
  if (r == "max") return kReduceMax;
  if (r == "gcn") return kReduceGcn;
  TORCH_CHECK(false, "aggregate: reduce must be one of sum, mean, max, gcn; got '", r, "'");
}

// Split rows into tasks of about equal work (edges + rows). A row heavier than two tasks
// (a hub node) is split across the feature dimension instead, so one huge in-degree does
// not serialise the whole call on one thread.
template <typename index_t>
std::vector<AggregateTask> plan_tasks(const index_t* rowptr, int64_t num_rows, int64_t num_features,
                                      int num_threads) {
  std::vector<AggregateTask> tasks;
  if (num_threads <= 1) {
    tasks.push_back({0, num_rows, 0, num_features});
    return tasks;
  }
  const int64_t total = static_cast<int64_t>(rowptr[num_rows]) + num_rows;
  const int64_t target = std::max<int64_t>(total / (static_cast<int64_t>(num_threads) * 32), 256);
  constexpr int64_t kMinSplitWidth = 16;  // features: one 64-byte line of float32
  int64_t begin = 0, cost = 0;
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t c = static_cast<int64_t>(rowptr[r + 1] - rowptr[r]) + 1;
    if (c > 2 * target && num_features >= 2 * kMinSplitWidth) {
      if (begin < r) tasks.push_back({begin, r, 0, num_features});
      const int64_t parts = std::min<int64_t>((c + target - 1) / target, num_features / kMinSplitWidth);
      int64_t width = (num_features + parts - 1) / parts;
      width = (width + kMinSplitWidth - 1) / kMinSplitWidth * kMinSplitWidth;
      for (int64_t f = 0; f < num_features; f += width)
        tasks.push_back({r, r + 1, f, std::min(num_features, f + width)});
      begin = r + 1;
      cost = 0;
      continue;
    }
    cost += c;
    if (cost >= target) {
      tasks.push_back({begin, r + 1, 0, num_features});
      begin = r + 1;
      cost = 0;
    }
  }
  if (begin < num_rows) tasks.push_back({begin, num_rows, 0, num_features});
  return tasks;
}

template <typename scalar_t, typename acc_t, typename index_t>
AggregateTaskFn pick_task_fn(int reduce, bool weighted) {
  const CpuIsa isa = best_cpu_isa();
  if (isa == CpuIsa::kAvx512) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (AggregateTaskFn fn = avx512::select_aggregate_task_regs<index_t>(reduce, weighted)) return fn;
    }
    return avx512::select_aggregate_task<scalar_t, acc_t, index_t>(reduce, weighted);
  }
  if (isa == CpuIsa::kAvx2) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (AggregateTaskFn fn = avx2::select_aggregate_task_regs<index_t>(reduce, weighted)) return fn;
    }
    return avx2::select_aggregate_task<scalar_t, acc_t, index_t>(reduce, weighted);
  }
  return baseline::select_aggregate_task<scalar_t, acc_t, index_t>(reduce, weighted);
}

template <typename scalar_t, typename index_t>
void run_aggregate(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                   const at::Tensor& weight, const at::Tensor& scale, int reduce, at::Tensor& out,
                   bool fresh_out) {
  using acc_t = at::opmath_type<scalar_t>;
  AggregateArgs args;
  args.rowptr = rowptr.data_ptr<index_t>();
  args.col = col.data_ptr<index_t>();
  args.x = x.data_ptr<scalar_t>();
  args.edge_weight = weight.defined() ? weight.data_ptr<acc_t>() : nullptr;
  args.scale = scale.defined() ? scale.data_ptr<acc_t>() : nullptr;
  args.out = out.data_ptr<scalar_t>();
  args.num_features = x.size(1);
  const int64_t num_rows = rowptr.numel() - 1;
  const AggregateSchedule schedule =
      aggregate_schedule(num_rows, args.num_features, static_cast<int64_t>(sizeof(scalar_t)));
  args.prefetch_distance = schedule.prefetch_distance;
  const AggregateTaskFn fn = pick_task_fn<scalar_t, acc_t, index_t>(reduce, weight.defined());
  const int num_threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const std::vector<AggregateTask> row_tasks =
      plan_tasks(rowptr.data_ptr<index_t>(), num_rows, args.num_features, num_threads);
  // Tile-major order: every task of a feature tile before the next tile, so that the threads
  // (dynamic schedule) all gather from the same cache-resident columns of x.
  std::vector<AggregateTask> tasks;
  const int64_t tile = schedule.tile_features;
  for (int64_t f0 = 0; f0 < args.num_features; f0 += tile)
    for (const AggregateTask& t : row_tasks) {
      const int64_t fb = std::max(t.f_begin, f0), fe = std::min(t.f_end, f0 + tile);
      if (fb < fe) tasks.push_back({t.row_begin, t.row_end, fb, fe});
    }
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  // A fresh output: each task first populates the pages of its rows (the first tile's tasks of
  // whole rows; what they leave, the writes fault in as usual). No extra parallel region.
  const bool prefault = fresh_out && prefault_enabled() && static_cast<int64_t>(out.nbytes()) >= kPrefaultMinBytes;
  const int64_t row_bytes = args.num_features * static_cast<int64_t>(sizeof(scalar_t));
  if (prefault && huge_pages_enabled()) advise_huge_pages(args.out, static_cast<int64_t>(out.nbytes()));
  auto run = [&](const AggregateTask& t) {
    if (prefault && t.f_begin == 0)
      prefault_range(static_cast<char*>(args.out) + t.row_begin * row_bytes, (t.row_end - t.row_begin) * row_bytes);
    fn(args, t);
  };
  if (num_tasks == 1) {
    run(tasks[0]);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t t = 0; t < num_tasks; ++t) run(tasks[t]);
}

}  // namespace

namespace {

void aggregate_into(const at::Tensor& rowptr_in, const at::Tensor& col_in, const at::Tensor& x_in,
                    const std::optional<at::Tensor>& edge_weight, c10::string_view reduce_name,
                    const std::optional<at::Tensor>& deg_inv_sqrt, at::Tensor& out, bool fresh_out);

}  // namespace

at::Tensor aggregate_cpu(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                         const std::optional<at::Tensor>& edge_weight, c10::string_view reduce,
                         const std::optional<at::Tensor>& deg_inv_sqrt) {
  TORCH_CHECK(x.dim() == 2, "aggregate: x must be 2-D [N, F], got ", x.dim(), "-D");
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  aggregate_into(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out, /*fresh_out=*/true);
  return out;
}

// Into a caller buffer: a loop that aggregates every step reuses one output (a fresh large
// tensor costs its page faults, ~0.5 ns per byte here: a third of a 1M x 64 aggregation).
void aggregate_out_cpu(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                       const std::optional<at::Tensor>& edge_weight, c10::string_view reduce,
                       const std::optional<at::Tensor>& deg_inv_sqrt, at::Tensor& out) {
  TORCH_CHECK(x.dim() == 2, "aggregate_out: x must be 2-D [N, F], got ", x.dim(), "-D");
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(),
              "aggregate_out: out must be a contiguous tensor of x's shape and dtype");
  TORCH_CHECK(!out.is_same(x) && out.data_ptr() != x.data_ptr(), "aggregate_out: out must not be x");
  aggregate_into(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out, /*fresh_out=*/false);
}

namespace {

void aggregate_into(const at::Tensor& rowptr_in, const at::Tensor& col_in, const at::Tensor& x_in,
                    const std::optional<at::Tensor>& edge_weight, c10::string_view reduce_name,
                    const std::optional<at::Tensor>& deg_inv_sqrt, at::Tensor& out, bool fresh_out) {
  const int reduce = parse_reduce(reduce_name);
  TORCH_CHECK(x_in.dim() == 2, "aggregate: x must be 2-D [N, F], got ", x_in.dim(), "-D");
  TORCH_CHECK(rowptr_in.dim() == 1 && rowptr_in.numel() == x_in.size(0) + 1,
              "aggregate: rowptr must have shape [N + 1] = [", x_in.size(0) + 1, "]");
  TORCH_CHECK(col_in.dim() == 1, "aggregate: col must be 1-D");
  TORCH_CHECK(rowptr_in.scalar_type() == col_in.scalar_type() &&
                  (col_in.scalar_type() == at::kInt || col_in.scalar_type() == at::kLong),
              "aggregate: rowptr and col must both be int32 or both int64");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor rowptr = rowptr_in.contiguous();
  const at::Tensor col = col_in.contiguous();
  // Cheap (one pass over the indices, ~1% of the kernel) and it turns a corrupt CSR into an
  // error instead of an out-of-bounds read.
  const int64_t num_rows = x.size(0);
  TORCH_CHECK(rowptr[0].item<int64_t>() == 0 && rowptr[num_rows].item<int64_t>() == col.numel(),
              "aggregate: rowptr must start at 0 and end at E = ", col.numel());
  if (num_rows > 0)
    TORCH_CHECK((rowptr.slice(0, 1).ge(rowptr.slice(0, 0, num_rows))).all().item<bool>(),
                "aggregate: rowptr must be non-decreasing");
  if (col.numel() > 0) {
    const auto [lo, hi] = at::aminmax(col);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < num_rows, "aggregate: col must index rows of x in [0, ",
                num_rows, ")");
  }
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor weight, scale;
  if (edge_weight.has_value() && edge_weight->defined()) {
    TORCH_CHECK(edge_weight->numel() == col.numel(), "aggregate: edge_weight must have E = ", col.numel(),
                " entries");
    weight = edge_weight->to(acc_type).contiguous();
  }
  if (reduce == kReduceGcn) {
    TORCH_CHECK(deg_inv_sqrt.has_value() && deg_inv_sqrt->defined() && deg_inv_sqrt->numel() == x.size(0),
                "aggregate: reduce='gcn' needs deg_inv_sqrt of shape [N]");
    scale = deg_inv_sqrt->to(acc_type).contiguous();
  }
  if (x.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffkernels_aggregate_cpu", [&] {
    if (col.scalar_type() == at::kInt) {
      run_aggregate<scalar_t, int32_t>(rowptr, col, x, weight, scale, reduce, out, fresh_out);
    } else {
      run_aggregate<scalar_t, int64_t>(rowptr, col, x, weight, scale, reduce, out, fresh_out);
    }
  });
}

}  // namespace

}  // namespace cpu
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CPU, m) {
  m.impl("aggregate", &ffkernels::cpu::aggregate_cpu);
  m.impl("aggregate_out", &ffkernels::cpu::aggregate_out_cpu);
}
