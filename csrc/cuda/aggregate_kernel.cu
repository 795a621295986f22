// CUDA implementation of ffkernels::aggregate (schema: csrc/ops/aggregate.cpp; semantics:
// ffkernels/backends/reference.py::aggregate).
//
// Warp-per-row CSR SpMM: each warp owns one destination row; its 32 lanes split the feature
// dimension (VEC contiguous elements per lane, one 4/8/16-byte load each), the warp loads 32
// column indices (and edge coefficients) at a time, one per lane, and broadcasts them with
// __shfl_sync. Accumulation is in float (double for double inputs), in a fixed edge order by a
// single warp per output element: deterministic, no atomics.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace ffkernels {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarp * kWarpsPerBlock;
constexpr unsigned kFullMask = 0xffffffffu;
// Edges whose features a lane loads before it accumulates any of them (memory-level parallelism).
constexpr int kEdgeUnroll = 4;

enum Reduce : int { kSum = 0, kMean = 1, kMax = 2, kGcn = 3 };

template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVec {
  T v[N];
};

template <typename opmath_t>
__device__ __forceinline__ opmath_t neg_infinity() {
  return -std::numeric_limits<opmath_t>::infinity();
}

// NaN-propagating max (like torch.amax and the reference; fmaxf would drop the NaN).
template <typename opmath_t>
__device__ __forceinline__ opmath_t max_nan(opmath_t acc, opmath_t v) {
  return (v > acc || v != v) ? v : acc;
}

// acc (VEC lanes' worth of one feature slice) reduced over edges [start, end) of coef_e * x[col[e]].
// All 32 lanes of the warp must call it together (shuffles); inactive lanes only broadcast.
template <typename scalar_t, typename opmath_t, typename index_t, int VEC, int REDUCE, bool HAS_WEIGHT>
__device__ __forceinline__ void reduce_edges(const index_t* __restrict__ col, const scalar_t* __restrict__ x,
                                             const opmath_t* __restrict__ weight,
                                             const opmath_t* __restrict__ scale, int64_t start, int64_t end,
                                             int64_t num_feats, int64_t f, bool active, int lane,
                                             opmath_t (&acc)[VEC]) {
  using Vec = AlignedVec<scalar_t, VEC>;
  constexpr bool kHasCoef = HAS_WEIGHT || REDUCE == kGcn;
  for (int64_t e0 = start; e0 < end; e0 += kWarp) {
    const int64_t e = e0 + lane;
    index_t my_src = 0;
    opmath_t my_coef = opmath_t(1);
    if (e < end) {
      my_src = col[e];
      if (HAS_WEIGHT) my_coef = weight[e];
      if (REDUCE == kGcn) my_coef *= scale[my_src];
    }
    const int count = static_cast<int>(end - e0 < kWarp ? end - e0 : kWarp);
    int j = 0;
    for (; j + kEdgeUnroll <= count; j += kEdgeUnroll) {
      Vec vals[kEdgeUnroll];
      opmath_t coefs[kEdgeUnroll];
#pragma unroll
      for (int u = 0; u < kEdgeUnroll; ++u) {
        const index_t src = __shfl_sync(kFullMask, my_src, j + u);
        coefs[u] = kHasCoef ? __shfl_sync(kFullMask, my_coef, j + u) : opmath_t(1);
        if (active) vals[u] = *reinterpret_cast<const Vec*>(x + static_cast<int64_t>(src) * num_feats + f);
      }
      if (active) {
#pragma unroll
        for (int u = 0; u < kEdgeUnroll; ++u) {
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            const opmath_t m = kHasCoef ? coefs[u] * static_cast<opmath_t>(vals[u].v[k])
                                        : static_cast<opmath_t>(vals[u].v[k]);
            acc[k] = REDUCE == kMax ? max_nan(acc[k], m) : acc[k] + m;
          }
        }
      }
    }
    for (; j < count; ++j) {
      const index_t src = __shfl_sync(kFullMask, my_src, j);
      const opmath_t c = kHasCoef ? __shfl_sync(kFullMask, my_coef, j) : opmath_t(1);
      if (active) {
        const Vec v = *reinterpret_cast<const Vec*>(x + static_cast<int64_t>(src) * num_feats + f);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const opmath_t m = kHasCoef ? c * static_cast<opmath_t>(v.v[k]) : static_cast<opmath_t>(v.v[k]);
          acc[k] = REDUCE == kMax ? max_nan(acc[k], m) : acc[k] + m;
        }
      }
    }
  }
}

template <typename opmath_t, int VEC, int REDUCE>
__device__ __forceinline__ void init_acc(opmath_t (&acc)[VEC]) {
#pragma unroll
  for (int k = 0; k < VEC; ++k) acc[k] = REDUCE == kMax ? neg_infinity<opmath_t>() : opmath_t(0);
}

// The reduce's row epilogue (mean / empty max / gcn's implicit self loop) and the store.
template <typename scalar_t, typename opmath_t, int VEC, int REDUCE>
__device__ __forceinline__ void finish_row(const opmath_t (&acc)[VEC], int64_t row, int64_t deg,
                                           const scalar_t* __restrict__ x, const opmath_t* __restrict__ scale,
                                           scalar_t* __restrict__ out, int64_t num_feats, int64_t f) {
  using Vec = AlignedVec<scalar_t, VEC>;
  Vec result;
  if (REDUCE == kMean) {
    const opmath_t inv = opmath_t(1) / static_cast<opmath_t>(deg > 0 ? deg : 1);
#pragma unroll
    for (int k = 0; k < VEC; ++k) result.v[k] = static_cast<scalar_t>(acc[k] * inv);
  } else if (REDUCE == kMax) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) result.v[k] = static_cast<scalar_t>(deg == 0 ? opmath_t(0) : acc[k]);
  } else if (REDUCE == kGcn) {
    const opmath_t s = scale[row];
    const Vec self = *reinterpret_cast<const Vec*>(x + row * num_feats + f);
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      result.v[k] = static_cast<scalar_t>(s * (acc[k] + s * static_cast<opmath_t>(self.v[k])));
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) result.v[k] = static_cast<scalar_t>(acc[k]);
  }
  *reinterpret_cast<Vec*>(out + row * num_feats + f) = result;
}

// Row pass: one warp per destination row. Rows longer than long_row_degree are left to the
// split kernels below.
template <typename scalar_t, typename opmath_t, typename index_t, int VEC, int REDUCE, bool HAS_WEIGHT>
__global__ void __launch_bounds__(kThreads)
    aggregate_warp_row_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                              const scalar_t* __restrict__ x, const opmath_t* __restrict__ weight,
                              const opmath_t* __restrict__ scale, scalar_t* __restrict__ out,
                              int64_t num_rows, int64_t num_feats, int64_t long_row_degree) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x / kWarp);
  if (row >= num_rows) return;  // the whole warp leaves together: shuffles stay full-warp
  const int64_t start = static_cast<int64_t>(rowptr[row]);
  const int64_t end = static_cast<int64_t>(rowptr[row + 1]);
  if (end - start > long_row_degree) return;
  for (int64_t base = 0; base < num_feats; base += static_cast<int64_t>(kWarp) * VEC) {
    const int64_t f = base + static_cast<int64_t>(lane) * VEC;
    const bool active = f < num_feats;  // num_feats % VEC == 0, so the whole vector is in range
    opmath_t acc[VEC];
    init_acc<opmath_t, VEC, REDUCE>(acc);
    reduce_edges<scalar_t, opmath_t, index_t, VEC, REDUCE, HAS_WEIGHT>(col, x, weight, scale, start, end,
                                                                        num_feats, f, active, lane, acc);
    if (active) finish_row<scalar_t, opmath_t, VEC, REDUCE>(acc, row, end - start, x, scale, out, num_feats, f);
  }
}

// Where edge chunk `chunk_id` of the long rows lies. chunk_cum[r] is the inclusive prefix sum
// over rows of ceil(deg / chunk) for rows with deg > chunk (0 for the others), so the chunk
// belongs to the first row whose prefix exceeds it. Computed on the device: no host sync.
struct ChunkSpan {
  int64_t row, first_chunk, num_chunks, start, end, row_start, row_end;
};

template <typename index_t>
__device__ __forceinline__ bool locate_chunk(const index_t* __restrict__ rowptr, const int64_t* __restrict__ chunk_cum,
                                             int64_t num_rows, int64_t chunk, int64_t chunk_id, ChunkSpan& span) {
  if (chunk_id >= chunk_cum[num_rows - 1]) return false;
  int64_t lo = 0, hi = num_rows - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (chunk_cum[mid] > chunk_id) hi = mid; else lo = mid + 1;
  }
  span.row = lo;
  span.row_start = static_cast<int64_t>(rowptr[lo]);
  span.row_end = static_cast<int64_t>(rowptr[lo + 1]);
  span.num_chunks = (span.row_end - span.row_start + chunk - 1) / chunk;
  span.first_chunk = chunk_cum[lo] - span.num_chunks;
  span.start = span.row_start + (chunk_id - span.first_chunk) * chunk;
  span.end = span.start + chunk < span.row_end ? span.start + chunk : span.row_end;
  return true;
}

// Split pass 1: one warp per edge chunk of a long row -> float partial row.
template <typename scalar_t, typename opmath_t, typename index_t, int VEC, int REDUCE, bool HAS_WEIGHT>
__global__ void __launch_bounds__(kThreads)
    aggregate_chunk_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                           const scalar_t* __restrict__ x, const opmath_t* __restrict__ weight,
                           const opmath_t* __restrict__ scale, const int64_t* __restrict__ chunk_cum,
                           opmath_t* __restrict__ partial, int64_t num_rows, int64_t num_feats, int64_t chunk,
                           int64_t max_chunks) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t chunk_id = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x / kWarp);
  ChunkSpan span;
  if (chunk_id >= max_chunks || !locate_chunk(rowptr, chunk_cum, num_rows, chunk, chunk_id, span)) return;
  for (int64_t base = 0; base < num_feats; base += static_cast<int64_t>(kWarp) * VEC) {
    const int64_t f = base + static_cast<int64_t>(lane) * VEC;
    const bool active = f < num_feats;
    opmath_t acc[VEC];
    init_acc<opmath_t, VEC, REDUCE>(acc);
    reduce_edges<scalar_t, opmath_t, index_t, VEC, REDUCE, HAS_WEIGHT>(col, x, weight, scale, span.start,
                                                                        span.end, num_feats, f, active, lane, acc);
    if (active) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) partial[chunk_id * num_feats + f + k] = acc[k];
    }
  }
}

// Split pass 2: the warp of each long row's first chunk combines the row's partials in chunk
// order (deterministic) and finishes the row.
template <typename scalar_t, typename opmath_t, typename index_t, int VEC, int REDUCE>
__global__ void __launch_bounds__(kThreads)
    aggregate_combine_kernel(const index_t* __restrict__ rowptr, const scalar_t* __restrict__ x,
                             const opmath_t* __restrict__ scale, const int64_t* __restrict__ chunk_cum,
                             const opmath_t* __restrict__ partial, scalar_t* __restrict__ out, int64_t num_rows,
                             int64_t num_feats, int64_t chunk, int64_t max_chunks) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t chunk_id = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x / kWarp);
  ChunkSpan span;
  if (chunk_id >= max_chunks || !locate_chunk(rowptr, chunk_cum, num_rows, chunk, chunk_id, span)) return;
  if (chunk_id != span.first_chunk) return;
  for (int64_t base = 0; base < num_feats; base += static_cast<int64_t>(kWarp) * VEC) {
    const int64_t f = base + static_cast<int64_t>(lane) * VEC;
    if (f >= num_feats) continue;
    opmath_t acc[VEC];
    init_acc<opmath_t, VEC, REDUCE>(acc);
    for (int64_t c = span.first_chunk; c < span.first_chunk + span.num_chunks; ++c) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const opmath_t p = partial[c * num_feats + f + k];
        acc[k] = REDUCE == kMax ? max_nan(acc[k], p) : acc[k] + p;
      }
    }
    finish_row<scalar_t, opmath_t, VEC, REDUCE>(acc, span.row, span.row_end - span.row_start, x, scale, out,
                                                num_feats, f);
  }
}

int reduce_code(c10::string_view reduce) {
  if (reduce == "sum") return kSum;
  if (reduce == "mean") return kMean;
  if (reduce == "max") return kMax;
  if (reduce == "gcn") return kGcn;
  TORCH_CHECK(false, "ffkernels::aggregate: reduce must be one of sum, mean, max, gcn, got ", reduce);
  return kSum;
}

// Per-lane vector width: one 16-byte load per lane when F and the row addresses allow it,
// else one element. (Two widths only: each one multiplies the instantiated kernels.)
template <typename scalar_t>
constexpr int max_vec() {
  return 16 / sizeof(scalar_t) > 8 ? 8 : static_cast<int>(16 / sizeof(scalar_t));
}

template <typename scalar_t>
int pick_vec(int64_t num_feats, const void* x_ptr, const void* out_ptr) {
  constexpr int vec = max_vec<scalar_t>();
  constexpr int64_t bytes = vec * static_cast<int64_t>(sizeof(scalar_t));
  const bool aligned = reinterpret_cast<uintptr_t>(x_ptr) % bytes == 0 &&
                       reinterpret_cast<uintptr_t>(out_ptr) % bytes == 0;
  return (num_feats % vec == 0 && aligned) ? vec : 1;
}

// Long-row split: rows with more than `chunk` edges are reduced in chunks (see the kernels).
struct SplitPlan {
  int64_t chunk = std::numeric_limits<int64_t>::max();
  int64_t max_chunks = 0;
  at::Tensor chunk_cum;  // int64 [N], on the device
};

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

SplitPlan make_split_plan(const at::Tensor& rowptr, int64_t num_rows, int64_t num_edges) {
  SplitPlan plan;
  const int64_t avg = num_edges / (num_rows > 0 ? num_rows : 1);
  const int64_t chunk = std::max<int64_t>(1024, next_pow2(16 * avg + 1));
  if (num_rows == 0 || num_edges <= chunk) return plan;
  const at::Tensor rp = rowptr.to(at::kLong);
  const at::Tensor deg = rp.slice(0, 1) - rp.slice(0, 0, num_rows);
  const at::Tensor counts = at::where(deg > chunk, at::floor_divide(deg + (chunk - 1), chunk), at::zeros_like(deg));
  plan.chunk = chunk;
  plan.chunk_cum = at::cumsum(counts, 0).contiguous();
  // Each long row has > chunk edges, so there are fewer than E / chunk of them, and
  // sum ceil(deg / chunk) <= E / chunk + #long rows.
  plan.max_chunks = 2 * ((num_edges + chunk - 1) / chunk);
  return plan;
}

template <typename scalar_t, typename index_t, int VEC, int REDUCE>
void launch_for_weight(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                       const at::Tensor* weight, const at::Tensor* scale, at::Tensor& out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t num_rows = rowptr.numel() - 1;
  const int64_t num_feats = x.size(1);
  const int64_t blocks = (num_rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "ffkernels::aggregate: too many rows");
  auto stream = c10::cuda::getCurrentCUDAStream();
  const opmath_t* w = weight ? weight->data_ptr<opmath_t>() : nullptr;
  const opmath_t* s = scale ? scale->data_ptr<opmath_t>() : nullptr;
  const SplitPlan plan = make_split_plan(rowptr, num_rows, col.numel());
  const index_t* rp = rowptr.data_ptr<index_t>();
  const index_t* cl = col.data_ptr<index_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();

  auto row_kernel = weight ? aggregate_warp_row_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE, true>
                           : aggregate_warp_row_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE, false>;
  row_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(rp, cl, xp, w, s, op, num_rows, num_feats,
                                                                      plan.chunk);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (plan.max_chunks == 0) return;

  at::Tensor partial = at::empty({plan.max_chunks, num_feats}, x.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
  const int64_t* cum = plan.chunk_cum.data_ptr<int64_t>();
  const unsigned chunk_blocks = static_cast<unsigned>((plan.max_chunks + kWarpsPerBlock - 1) / kWarpsPerBlock);
  auto chunk_kernel = weight ? aggregate_chunk_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE, true>
                             : aggregate_chunk_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE, false>;
  chunk_kernel<<<chunk_blocks, kThreads, 0, stream>>>(rp, cl, xp, w, s, cum, partial.data_ptr<opmath_t>(),
                                                      num_rows, num_feats, plan.chunk, plan.max_chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  aggregate_combine_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE><<<chunk_blocks, kThreads, 0, stream>>>(
      rp, xp, s, cum, partial.data_ptr<opmath_t>(), op, num_rows, num_feats, plan.chunk, plan.max_chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t, int VEC>
void launch_for_reduce(int reduce, const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                       const at::Tensor* weight, const at::Tensor* scale, at::Tensor& out) {
  switch (reduce) {
    case kSum: launch_for_weight<scalar_t, index_t, VEC, kSum>(rowptr, col, x, weight, scale, out); break;
    case kMean: launch_for_weight<scalar_t, index_t, VEC, kMean>(rowptr, col, x, weight, scale, out); break;
    case kMax: launch_for_weight<scalar_t, index_t, VEC, kMax>(rowptr, col, x, weight, scale, out); break;
    default: launch_for_weight<scalar_t, index_t, VEC, kGcn>(rowptr, col, x, weight, scale, out); break;
  }
}

template <typename scalar_t, typename index_t>
void launch(int reduce, const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
            const at::Tensor* weight, const at::Tensor* scale, at::Tensor& out) {
  constexpr int kVec = max_vec<scalar_t>();
  if (pick_vec<scalar_t>(x.size(1), x.data_ptr(), out.data_ptr()) == kVec) {
    launch_for_reduce<scalar_t, index_t, kVec>(reduce, rowptr, col, x, weight, scale, out);
  } else {
    launch_for_reduce<scalar_t, index_t, 1>(reduce, rowptr, col, x, weight, scale, out);
  }
}

at::Tensor aggregate_cuda(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x_in,
                          const std::optional<at::Tensor>& edge_weight, c10::string_view reduce_name,
                          const std::optional<at::Tensor>& deg_inv_sqrt) {
  TORCH_CHECK(x_in.is_cuda() && rowptr.is_cuda() && col.is_cuda(),
              "ffkernels::aggregate (CUDA): rowptr, col and x must be CUDA tensors");
  TORCH_CHECK(x_in.dim() == 2, "ffkernels::aggregate: x must be 2-D, got ", x_in.dim(), " dims");
  TORCH_CHECK(rowptr.dim() == 1 && col.dim() == 1, "ffkernels::aggregate: rowptr and col must be 1-D");
  TORCH_CHECK(rowptr.numel() == x_in.size(0) + 1, "ffkernels::aggregate: rowptr must have N + 1 = ",
              x_in.size(0) + 1, " entries, got ", rowptr.numel());
  TORCH_CHECK(col.scalar_type() == at::kInt || col.scalar_type() == at::kLong,
              "ffkernels::aggregate: col must be int32 or int64, got ", col.scalar_type());
  const int reduce = reduce_code(reduce_name);
  c10::cuda::CUDAGuard guard(x_in.device());

  const at::Tensor x = x_in.contiguous();
  const at::Tensor col_c = col.contiguous();
  const at::Tensor rowptr_c = rowptr.to(col.scalar_type()).contiguous();
  const auto opmath_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor weight, scale;
  if (edge_weight.has_value() && edge_weight->defined()) {
    TORCH_CHECK(edge_weight->numel() == col.numel(), "ffkernels::aggregate: edge_weight must have E = ",
                col.numel(), " entries, got ", edge_weight->numel());
    weight = edge_weight->to(x.device(), opmath_dtype).contiguous();
  }
  if (reduce == kGcn) {
    TORCH_CHECK(deg_inv_sqrt.has_value() && deg_inv_sqrt->defined() && deg_inv_sqrt->numel() == x.size(0),
                "ffkernels::aggregate: reduce='gcn' needs deg_inv_sqrt of N = ", x.size(0), " entries");
    scale = deg_inv_sqrt->to(x.device(), opmath_dtype).contiguous();
  }
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.size(0) == 0 || x.size(1) == 0) return out;
  const at::Tensor* w = weight.defined() ? &weight : nullptr;
  const at::Tensor* s = scale.defined() ? &scale : nullptr;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffkernels_aggregate_cuda", [&] {
    if (col_c.scalar_type() == at::kInt) {
      launch<scalar_t, int32_t>(reduce, rowptr_c, col_c, x, w, s, out);
    } else {
      launch<scalar_t, int64_t>(reduce, rowptr_c, col_c, x, w, s, out);
    }
  });
  return out;
}

}  // namespace
}  // namespace ffkernels

TORCH_LIBRARY_IMPL(ffkernels, CUDA, m) {
  m.impl("aggregate", &ffkernels::aggregate_cuda);
}
