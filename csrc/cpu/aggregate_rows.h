// Row kernels of ffkernels::aggregate, compiled once per instruction set.
//
// Each including translation unit defines FFK_ISA (a namespace name) and may raise the
// target ISA with `#pragma GCC target` *after* its library includes, so that only this
// plain, header-free code is compiled for that ISA; aggregate_kernel.cpp picks the best
// compiled variant at run time (the wheel must run on any x86-64 CPU).
//
// Deliberately no include guard: the header is included once per ISA namespace.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "aggregate_task.h"

namespace ffkernels {
namespace cpu {
namespace FFK_ISA {

// Prefetch `bytes` from `p` into L2 (prefetcht2): L1 has few miss buffers, and filling them with
// prefetches of rows needed many edges later stalls the gathers that are due now (measured:
// L2 prefetches 32 edges ahead beat L1 prefetches 8 ahead by 1.5x on 100k x 128 float32).
template <typename T>
inline void prefetch_l2(const T* p, int64_t bytes) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 1);
}

// One task: destination rows [row_begin, row_end) and features [f_begin, f_end).
// Each output element is produced by exactly one task, in a fixed edge order: no atomics,
// bitwise repeatable whatever the number of threads.
template <typename scalar_t, typename acc_t, typename index_t, int kReduce, bool kWeighted>
void aggregate_task(const AggregateArgs& args, const AggregateTask& task) {
  constexpr bool kScaled = kWeighted || kReduce == kReduceGcn;
  // Accumulator chunk: 1 KiB stays in L1 next to the neighbour rows streaming through.
  constexpr int64_t kChunk = 1024 / sizeof(acc_t);
  const int64_t kPrefetchDistance = args.prefetch_distance;
  const index_t* __restrict__ rowptr = static_cast<const index_t*>(args.rowptr);
  const index_t* __restrict__ col = static_cast<const index_t*>(args.col);
  const scalar_t* __restrict__ x = static_cast<const scalar_t*>(args.x);
  const acc_t* __restrict__ weight = static_cast<const acc_t*>(args.edge_weight);
  const acc_t* __restrict__ scale = static_cast<const acc_t*>(args.scale);
  scalar_t* __restrict__ out = static_cast<scalar_t*>(args.out);
  const int64_t F = args.num_features;
  const int64_t edge_stop = static_cast<int64_t>(rowptr[task.row_end]);
  alignas(64) acc_t acc[kChunk];

  for (int64_t f0 = task.f_begin; f0 < task.f_end; f0 += kChunk) {
    const int64_t width = std::min<int64_t>(kChunk, task.f_end - f0);
    const int64_t line_bytes = width * static_cast<int64_t>(sizeof(scalar_t));
    for (int64_t row = task.row_begin; row < task.row_end; ++row) {
      const int64_t e0 = static_cast<int64_t>(rowptr[row]);
      const int64_t e1 = static_cast<int64_t>(rowptr[row + 1]);
      const acc_t init = kReduce == kReduceMax ? -std::numeric_limits<acc_t>::infinity() : acc_t(0);
      for (int64_t f = 0; f < width; ++f) acc[f] = init;
      int64_t e = e0;
      if (kReduce != kReduceMax) {
        // Four neighbour rows per iteration: four independent gathers in flight (the loop is
        // bound by memory latency, not arithmetic). The order of additions is fixed.
        for (; e + 3 < e1; e += 4) {
          for (int64_t k = 0; k < 4; ++k)
            if (e + k + kPrefetchDistance < edge_stop)
              prefetch_l2(x + static_cast<int64_t>(col[e + k + kPrefetchDistance]) * F + f0, line_bytes);
          const int64_t s0 = static_cast<int64_t>(col[e]), s1 = static_cast<int64_t>(col[e + 1]);
          const int64_t s2 = static_cast<int64_t>(col[e + 2]), s3 = static_cast<int64_t>(col[e + 3]);
          const scalar_t* __restrict__ xr0 = x + s0 * F + f0;
          const scalar_t* __restrict__ xr1 = x + s1 * F + f0;
          const scalar_t* __restrict__ xr2 = x + s2 * F + f0;
          const scalar_t* __restrict__ xr3 = x + s3 * F + f0;
          if (kScaled) {
            acc_t w0 = acc_t(1), w1 = acc_t(1), w2 = acc_t(1), w3 = acc_t(1);
            if (kWeighted) { w0 = weight[e]; w1 = weight[e + 1]; w2 = weight[e + 2]; w3 = weight[e + 3]; }
            if (kReduce == kReduceGcn) { w0 *= scale[s0]; w1 *= scale[s1]; w2 *= scale[s2]; w3 *= scale[s3]; }
            for (int64_t f = 0; f < width; ++f)
              acc[f] += (w0 * static_cast<acc_t>(xr0[f]) + w1 * static_cast<acc_t>(xr1[f])) +
                        (w2 * static_cast<acc_t>(xr2[f]) + w3 * static_cast<acc_t>(xr3[f]));
          } else {
            for (int64_t f = 0; f < width; ++f)
              acc[f] += (static_cast<acc_t>(xr0[f]) + static_cast<acc_t>(xr1[f])) +
                        (static_cast<acc_t>(xr2[f]) + static_cast<acc_t>(xr3[f]));
          }
        }
      }
      for (; e < e1; ++e) {
        if (e + kPrefetchDistance < edge_stop)
          prefetch_l2(x + static_cast<int64_t>(col[e + kPrefetchDistance]) * F + f0, line_bytes);
        const int64_t src = static_cast<int64_t>(col[e]);
        const scalar_t* __restrict__ xr = x + src * F + f0;
        acc_t w = acc_t(1);
        if (kWeighted) w = weight[e];
        if (kReduce == kReduceGcn) w = scale[src] * w;
        if (kReduce == kReduceMax) {
          for (int64_t f = 0; f < width; ++f) {
            const acc_t v = kScaled ? w * static_cast<acc_t>(xr[f]) : static_cast<acc_t>(xr[f]);
            // NaN-propagating max (like torch.amax), still a branch-free blend.
            acc[f] = (v > acc[f] || v != v) ? v : acc[f];
          }
        } else if (kScaled) {
          for (int64_t f = 0; f < width; ++f) acc[f] += w * static_cast<acc_t>(xr[f]);
        } else {
          for (int64_t f = 0; f < width; ++f) acc[f] += static_cast<acc_t>(xr[f]);
        }
      }
      scalar_t* __restrict__ o = out + row * F + f0;
      const int64_t degree = e1 - e0;
      if (kReduce == kReduceMean) {
        const acc_t d = static_cast<acc_t>(degree > 0 ? degree : 1);
        for (int64_t f = 0; f < width; ++f) o[f] = static_cast<scalar_t>(acc[f] / d);
      } else if (kReduce == kReduceMax) {
        if (degree == 0) {
          for (int64_t f = 0; f < width; ++f) o[f] = static_cast<scalar_t>(acc_t(0));
        } else {
          for (int64_t f = 0; f < width; ++f) o[f] = static_cast<scalar_t>(acc[f]);
        }
      } else if (kReduce == kReduceGcn) {
        const acc_t s = scale[row];
        const scalar_t* __restrict__ self = x + row * F + f0;
        for (int64_t f = 0; f < width; ++f)
          o[f] = static_cast<scalar_t>(s * (acc[f] + s * static_cast<acc_t>(self[f])));
      } else {
        for (int64_t f = 0; f < width; ++f) o[f] = static_cast<scalar_t>(acc[f]);
      }
    }
  }
}

template <typename scalar_t, typename acc_t, typename index_t>
AggregateTaskFn select_aggregate_task(int reduce, bool weighted) {
#define FFK_CASE(R)                                                            \
  case R:                                                                      \
    return weighted ? &aggregate_task<scalar_t, acc_t, index_t, R, true>       \
                    : &aggregate_task<scalar_t, acc_t, index_t, R, false>;
  switch (reduce) {
    FFK_CASE(kReduceSum)
    FFK_CASE(kReduceMean)
    FFK_CASE(kReduceMax)
    FFK_CASE(kReduceGcn)
  }
#undef FFK_CASE
  return nullptr;
}

}  // namespace FFK_ISA
}  // namespace cpu
}  // namespace ffkernels
