// Run-time choice of the instruction set for the kernels compiled in several variants.
// FFKERNELS_CPU_ISA=baseline forces the portable x86-64 code (tests use it to cover both).
#pragma once
#include <cstdlib>
#include <cstring>

namespace ffkernels {
namespace cpu {

enum class CpuIsa { kBaseline, kAvx2 };

inline CpuIsa best_cpu_isa() {
  const char* forced = std::getenv("FFKERNELS_CPU_ISA");
  if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return CpuIsa::kBaseline;
#if defined(__x86_64__) || defined(__i386__)
  static const bool has_avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  if (has_avx2) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kBaseline;
}

inline const char* cpu_isa_name(CpuIsa isa) { return isa == CpuIsa::kAvx2 ? "avx2" : "baseline"; }

}  // namespace cpu
}  // namespace ffkernels
