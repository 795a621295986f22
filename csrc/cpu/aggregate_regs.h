// Register-blocked float32 aggregation (sum, mean, gcn; weighted or not), compiled once per
// vector ISA: a row's accumulators for up to RegVec::kChunk features live in NV <= 8 vector
// registers through all its edges (the portable kernel of aggregate_rows.h keeps them in an L1
// array that every edge group reloads and stores). Each edge costs NV loads and NV FMAs; a
// feature count that is not a multiple of the vector width ends in one masked vector. Additions
// run in the row's fixed edge order: deterministic and bitwise repeatable (not bitwise equal to
// the portable variants, which group edges by four).
//
// The including TU defines FFK_ISA and, in that namespace, a `RegVec` struct of the ISA's
// vector operations (type V, mask type Mask, kLanes, zero/load/load_tail/store/store_tail/
// set1/fmadd/add/mul/div/tail_mask), after its library headers and under the raised target.
// Deliberately no include guard: the header is included once per ISA namespace.
#include <algorithm>
#include <cstdint>

#include "aggregate_task.h"

namespace ffkernels {
namespace cpu {
namespace FFK_ISA {

constexpr int kRegVectors = 8;  // accumulators per row pass: 8 of the 16 (AVX2) or 32 (AVX-512) registers

template <int NV, typename index_t, int kReduce, bool kWeighted>
inline void aggregate_row_chunk(const AggregateArgs& args, int64_t row, int64_t f0, typename RegVec::Mask tail,
                                int64_t edge_stop) {
  using V = typename RegVec::V;
  constexpr int L = RegVec::kLanes;
  constexpr bool kScaled = kWeighted || kReduce == kReduceGcn;
  const index_t* __restrict__ rowptr = static_cast<const index_t*>(args.rowptr);
  const index_t* __restrict__ col = static_cast<const index_t*>(args.col);
  const float* __restrict__ x = static_cast<const float*>(args.x);
  const float* __restrict__ weight = static_cast<const float*>(args.edge_weight);
  const float* __restrict__ scale = static_cast<const float*>(args.scale);
  const int64_t F = args.num_features;
  const int64_t distance = args.prefetch_distance;
  const int64_t e0 = static_cast<int64_t>(rowptr[row]), e1 = static_cast<int64_t>(rowptr[row + 1]);
  const int64_t line_bytes = (NV * L) * static_cast<int64_t>(sizeof(float));
  V acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = RegVec::zero();
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
      const V wv = RegVec::set1(w);
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) acc[v] = RegVec::fmadd(wv, RegVec::load(xr + L * v), acc[v]);
      acc[NV - 1] = RegVec::fmadd(wv, RegVec::load_tail(tail, xr + L * (NV - 1)), acc[NV - 1]);
    } else {
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) acc[v] = RegVec::add(acc[v], RegVec::load(xr + L * v));
      acc[NV - 1] = RegVec::add(acc[NV - 1], RegVec::load_tail(tail, xr + L * (NV - 1)));
    }
  }
  float* __restrict__ o = static_cast<float*>(args.out) + row * F + f0;
  if (kReduce == kReduceMean) {
    const V inv = RegVec::set1(static_cast<float>(std::max<int64_t>(e1 - e0, 1)));
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = RegVec::div(acc[v], inv);
  } else if (kReduce == kReduceGcn) {  // s * (acc + s * x[row])
    const V s = RegVec::set1(scale[row]);
    const float* __restrict__ self = x + row * F + f0;
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) acc[v] = RegVec::mul(s, RegVec::fmadd(s, RegVec::load(self + L * v), acc[v]));
    acc[NV - 1] = RegVec::mul(s, RegVec::fmadd(s, RegVec::load_tail(tail, self + L * (NV - 1)), acc[NV - 1]));
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV - 1; ++v) RegVec::store(o + L * v, acc[v]);
  RegVec::store_tail(o + L * (NV - 1), tail, acc[NV - 1]);
}

template <typename index_t, int kReduce, bool kWeighted>
void aggregate_task_regs(const AggregateArgs& args, const AggregateTask& task) {
  constexpr int L = RegVec::kLanes;
  constexpr int64_t kChunk = int64_t(kRegVectors) * L;
  for (int64_t f0 = task.f_begin; f0 < task.f_end; f0 += kChunk) {
    const int64_t width = std::min<int64_t>(kChunk, task.f_end - f0);
    const int nv = static_cast<int>((width + L - 1) / L);
    const typename RegVec::Mask tail = RegVec::tail_mask(static_cast<int>(width - int64_t(L) * (nv - 1)));
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

}  // namespace FFK_ISA
}  // namespace cpu
}  // namespace ffkernels
