// Register-blocked float32 aggregation for AVX-512 (sum, mean, gcn; weighted or not): a row's
// accumulators for up to 128 features live in NV <= 8 zmm registers through all its edges (the
// portable kernel of aggregate_rows.h keeps them in an L1 array that every edge group reloads
// and stores). Each edge costs NV loads and NV FMAs; a feature count that is not a multiple of
// 16 ends in one masked vector. Additions run in the row's fixed edge order: deterministic and
// bitwise repeatable (not bitwise equal to the other ISA variants, which group edges by four).
//
// Included only by aggregate_kernel_avx512.cpp, after its library headers, under the raised
// target. Deliberately no include guard.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "aggregate_task.h"

namespace ffkernels {
namespace cpu {
namespace avx512 {

template <int NV, typename index_t, int kReduce, bool kWeighted>
inline void aggregate_row_chunk(const AggregateArgs& args, int64_t row, int64_t f0, __mmask16 tail,
                                int64_t edge_stop) {
  constexpr bool kScaled = kWeighted || kReduce == kReduceGcn;
  const index_t* __restrict__ rowptr = static_cast<const index_t*>(args.rowptr);
  const index_t* __restrict__ col = static_cast<const index_t*>(args.col);
  const float* __restrict__ x = static_cast<const float*>(args.x);
  const float* __restrict__ weight = static_cast<const float*>(args.edge_weight);
  const float* __restrict__ scale = static_cast<const float*>(args.scale);
  const int64_t F = args.num_features;
  const int64_t distance = args.prefetch_distance;
  const int64_t e0 = static_cast<int64_t>(rowptr[row]), e1 = static_cast<int64_t>(rowptr[row + 1]);
  const int64_t line_bytes = (NV * 16) * static_cast<int64_t>(sizeof(float));
  __m512 acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  for (int64_t e = e0; e < e1; ++e) {
    const int64_t ahead = e + distance;
    if (ahead < edge_stop) {  // the source rows of this task's later edges (also the next rows')
      const char* p = reinterpret_cast<const char*>(x + static_cast<int64_t>(col[ahead]) * F + f0);
      for (int64_t b = 0; b < line_bytes; b += 64) __builtin_prefetch(p + b, 0, 1);
    }
    const int64_t src = static_cast<int64_t>(col[e]);
    const float* __restrict__ xr = x + src * F + f0;
    if (kScaled) {
      float w = 1.0f;
      if (kWeighted) w = weight[e];
      if (kReduce == kReduceGcn) w = scale[src] * w;
      const __m512 wv = _mm512_set1_ps(w);
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xr + 16 * v), acc[v]);
      acc[NV - 1] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, xr + 16 * (NV - 1)), acc[NV - 1]);
    } else {
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_add_ps(acc[v], _mm512_loadu_ps(xr + 16 * v));
      acc[NV - 1] = _mm512_add_ps(acc[NV - 1], _mm512_maskz_loadu_ps(tail, xr + 16 * (NV - 1)));
    }
  }
  float* __restrict__ o = static_cast<float*>(args.out) + row * F + f0;
  if (kReduce == kReduceMean) {
    const __m512 inv = _mm512_set1_ps(static_cast<float>(std::max<int64_t>(e1 - e0, 1)));
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_div_ps(acc[v], inv);
  } else if (kReduce == kReduceGcn) {  // s * (acc + s * x[row])
    const __m512 s = _mm512_set1_ps(scale[row]);
    const float* __restrict__ self = x + row * F + f0;
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v)
      acc[v] = _mm512_mul_ps(s, _mm512_fmadd_ps(s, _mm512_loadu_ps(self + 16 * v), acc[v]));
    acc[NV - 1] = _mm512_mul_ps(s, _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(tail, self + 16 * (NV - 1)), acc[NV - 1]));
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(o + 16 * v, acc[v]);
  _mm512_mask_storeu_ps(o + 16 * (NV - 1), tail, acc[NV - 1]);
}

template <typename index_t, int kReduce, bool kWeighted>
void aggregate_task_regs(const AggregateArgs& args, const AggregateTask& task) {
  for (int64_t f0 = task.f_begin; f0 < task.f_end; f0 += 128) {
    const int64_t width = std::min<int64_t>(128, task.f_end - f0);
    const int nv = static_cast<int>((width + 15) / 16);
    const int rem = static_cast<int>(width - 16 * (nv - 1));
    const __mmask16 tail = static_cast<__mmask16>(rem == 16 ? 0xFFFF : (1u << rem) - 1u);
    const int64_t edge_stop = static_cast<int64_t>(static_cast<const index_t*>(args.rowptr)[task.row_end]);
    for (int64_t row = task.row_begin; row < task.row_end; ++row) {
      switch (nv) {
        case 1: aggregate_row_chunk<1, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        case 2: aggregate_row_chunk<2, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        case 3: aggregate_row_chunk<3, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        case 4: aggregate_row_chunk<4, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        case 5: aggregate_row_chunk<5, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        case 6: aggregate_row_chunk<6, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        case 7: aggregate_row_chunk<7, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
        default: aggregate_row_chunk<8, index_t, kReduce, kWeighted>(args, row, f0, tail, edge_stop); break;
      }
    }
  }
}

// The register-blocked task for float32 (nullptr for max: the portable kernel serves it).
template <typename index_t>
AggregateTaskFn select_aggregate_task_regs(int reduce, bool weighted) {
#define FFK_CASE(R)                                                         \
  case R:                                                                   \
    return weighted ? &aggregate_task_regs<index_t, R, true> : &aggregate_task_regs<index_t, R, false>;
  switch (reduce) {
    FFK_CASE(kReduceSum)
    FFK_CASE(kReduceMean)
    FFK_CASE(kReduceGcn)
  }
#undef FFK_CASE
  return nullptr;
}

}  // namespace avx512
}  // namespace cpu
}  // namespace ffkernels
