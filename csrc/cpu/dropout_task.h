// The dropout range kernels' signature, shared by the ISA variants and the dispatcher.
#pragma once
#include <cstdint>

namespace ffkernels {
namespace cpu {

struct DropoutArgs {
  const void* x;
  void* out;
  uint32_t s0, s1, threshold;
  double scale;
};

using DropoutRangeFn = void (*)(const DropoutArgs&, int64_t begin, int64_t end);

}  // namespace cpu
}  // namespace ffkernels
