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

template <typename scalar_t, typename opmath_t, typename index_t, int VEC, int REDUCE, bool HAS_WEIGHT>
__global__ void __launch_bounds__(kThreads)
    aggregate_warp_row_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                              const scalar_t* __restrict__ x, const opmath_t* __restrict__ weight,
                              const opmath_t* __restrict__ scale, scalar_t* __restrict__ out,
                              int64_t num_rows, int64_t num_feats) {
  using Vec = AlignedVec<scalar_t, VEC>;
  constexpr bool kHasCoef = HAS_WEIGHT || REDUCE == kGcn;
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x / kWarp);
  if (row >= num_rows) return;  // the whole warp leaves together: shuffles stay full-warp

  const int64_t start = static_cast<int64_t>(rowptr[row]);
  const int64_t end = static_cast<int64_t>(rowptr[row + 1]);

  for (int64_t base = 0; base < num_feats; base += static_cast<int64_t>(kWarp) * VEC) {
    const int64_t f = base + static_cast<int64_t>(lane) * VEC;
    const bool active = f < num_feats;  // num_feats % VEC == 0, so the whole vector is in range
    opmath_t acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = REDUCE == kMax ? neg_infinity<opmath_t>() : opmath_t(0);

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
              acc[k] = REDUCE == kMax ? (m > acc[k] ? m : acc[k]) : acc[k] + m;
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
            acc[k] = REDUCE == kMax ? (m > acc[k] ? m : acc[k]) : acc[k] + m;
          }
        }
      }
    }

    if (!active) continue;
    Vec result;
    if (REDUCE == kMean) {
      const int64_t deg = end - start;
      const opmath_t inv = opmath_t(1) / static_cast<opmath_t>(deg > 0 ? deg : 1);
#pragma unroll
      for (int k = 0; k < VEC; ++k) result.v[k] = static_cast<scalar_t>(acc[k] * inv);
    } else if (REDUCE == kMax) {
      const bool empty = end == start;
#pragma unroll
      for (int k = 0; k < VEC; ++k) result.v[k] = static_cast<scalar_t>(empty ? opmath_t(0) : acc[k]);
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
}

int reduce_code(c10::string_view reduce) {
  if (reduce == "sum") return kSum;
  if (reduce == "mean") return kMean;
  if (reduce == "max") return kMax;
  if (reduce == "gcn") return kGcn;
  TORCH_CHECK(false, "ffkernels::aggregate: reduce must be one of sum, mean, max, gcn, got ", reduce);
  return kSum;
}

// Widest per-lane vector (at most 16 bytes) that divides F, keeps the rows aligned, and does
// not leave most of the warp idle on narrow rows.
template <typename scalar_t>
int pick_vec(int64_t num_feats, const void* x_ptr, const void* out_ptr) {
  int vec = 16 / static_cast<int>(sizeof(scalar_t));
  if (vec > 8) vec = 8;
  while (vec > 1) {
    const int64_t bytes = vec * static_cast<int64_t>(sizeof(scalar_t));
    const bool aligned = reinterpret_cast<uintptr_t>(x_ptr) % bytes == 0 &&
                         reinterpret_cast<uintptr_t>(out_ptr) % bytes == 0;
    if (num_feats % vec == 0 && aligned && num_feats >= static_cast<int64_t>(kWarp) * vec / 2) break;
    vec /= 2;
  }
  return vec;
}

template <typename scalar_t, typename index_t, int VEC, int REDUCE>
void launch_for_weight(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                       const at::Tensor* weight, const at::Tensor* scale, at::Tensor& out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t num_rows = rowptr.numel() - 1;
  const int64_t blocks = (num_rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "ffkernels::aggregate: too many rows");
  auto stream = c10::cuda::getCurrentCUDAStream();
  const opmath_t* w = weight ? weight->data_ptr<opmath_t>() : nullptr;
  const opmath_t* s = scale ? scale->data_ptr<opmath_t>() : nullptr;
  if (weight) {
    aggregate_warp_row_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE, true>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
            rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(), x.data_ptr<scalar_t>(), w, s,
            out.data_ptr<scalar_t>(), num_rows, x.size(1));
  } else {
    aggregate_warp_row_kernel<scalar_t, opmath_t, index_t, VEC, REDUCE, false>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
            rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(), x.data_ptr<scalar_t>(), w, s,
            out.data_ptr<scalar_t>(), num_rows, x.size(1));
  }
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
  const int vec = pick_vec<scalar_t>(x.size(1), x.data_ptr(), out.data_ptr());
  // Only the widths pick_vec can return for this element size are instantiated.
  constexpr int kMaxVec = 16 / sizeof(scalar_t) > 8 ? 8 : static_cast<int>(16 / sizeof(scalar_t));
  if constexpr (kMaxVec >= 8) {
    if (vec == 8) return launch_for_reduce<scalar_t, index_t, 8>(reduce, rowptr, col, x, weight, scale, out);
  }
  if constexpr (kMaxVec >= 4) {
    if (vec == 4) return launch_for_reduce<scalar_t, index_t, 4>(reduce, rowptr, col, x, weight, scale, out);
  }
  if (vec == 2) return launch_for_reduce<scalar_t, index_t, 2>(reduce, rowptr, col, x, weight, scale, out);
  launch_for_reduce<scalar_t, index_t, 1>(reduce, rowptr, col, x, weight, scale, out);
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
