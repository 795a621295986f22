// Run-time choice of the instruction set for the kernels compiled in several variants.
#pragma once
#include <cstdlib>
#include <cstring>

namespace ffkernels {
namespace cpu {

enum class CpuIsa { kBaseline, kAvx2, kAvx512 };

// kAvx512: AVX-512 F/VL/BW/DQ (only the kernels that gain from 32 vector registers have such a
// variant: the aggregation); every kAvx512 CPU also runs the AVX2 variants.
// FFKERNELS_CPU_ISA=baseline|avx2 caps the choice (tests cover every variant on one machine).
inline CpuIsa best_cpu_isa() {
#if defined(__x86_64__) || defined(__i386__)
  static const CpuIsa detected = [] {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return CpuIsa::kBaseline;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      return CpuIsa::kAvx512;
    return CpuIsa::kAvx2;
  }();
#else
  const CpuIsa detected = CpuIsa::kBaseline;
#endif
  const char* forced = std::getenv("FFKERNELS_CPU_ISA");
  if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return CpuIsa::kBaseline;
  if (forced != nullptr && std::strcmp(forced, "avx2") == 0 && detected == CpuIsa::kAvx512) return CpuIsa::kAvx2;
  return detected;
}

// True when the AVX2 + FMA variants may run (also on an AVX-512 CPU).
inline bool cpu_has_avx2() { return best_cpu_isa() != CpuIsa::kBaseline; }

inline const char* cpu_isa_name(CpuIsa isa) {
  return isa == CpuIsa::kAvx512 ? "avx512" : isa == CpuIsa::kAvx2 ? "avx2" : "baseline";
}

}  // namespace cpu
}  // namespace ffkernels
