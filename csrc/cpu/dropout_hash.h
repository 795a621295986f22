// The counter-based keep decision of ffkernels::dropout (plain C++, header-free: compiled once
// per instruction set). Element i of a contiguous tensor is kept iff
//     mix32(mix32(lo32(i) ^ s0) ^ (hi32(i) + s1)) >= threshold
// with (s0, s1) the low and high 32 bits of the seed, mix32 Wellons' "lowbias32" integer hash
// and threshold = floor(p * 2^32). ffkernels/backends/reference.py::dropout computes the same
// bits with torch integer ops; the Triton kernel too.
//
// Deliberately no include guard: the header is included once per ISA namespace.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace ffkernels {
namespace cpu {
namespace FFK_ISA {

inline uint32_t dropout_mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// out[i] = keep(i) ? x[i] * scale : 0 for i in [begin, end): the index's high word is constant
// over a block of 2^32 elements, so the inner loop is plain 32-bit lanes (vectorised).
template <typename scalar_t, typename acc_t>
void dropout_range(const scalar_t* x, scalar_t* out, int64_t begin, int64_t end,
                   uint32_t s0, uint32_t s1, uint32_t threshold, acc_t scale) {
  using bits_t = std::conditional_t<sizeof(acc_t) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(bits_t) == sizeof(acc_t), "acc_t is float or double");
  int64_t i = begin;
  while (i < end) {
    const uint64_t hi = static_cast<uint64_t>(i) >> 32;
    const int64_t block_end = std::min<int64_t>(end, static_cast<int64_t>((hi + 1) << 32));
    const uint32_t k = static_cast<uint32_t>(hi) + s1;
    const uint32_t lo0 = static_cast<uint32_t>(i);
    const int64_t n = block_end - i;
    const scalar_t* xb = x + i;  // may be out itself (in place): element j reads and writes only j
    scalar_t* ob = out + i;
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t h = dropout_mix32(dropout_mix32((lo0 + static_cast<uint32_t>(j)) ^ s0) ^ k);
      // The select as an integer mask on v's bits: a floating-point select is not if-converted
      // under -ftrapping-math (the loop would not vectorise); the bits give +0 where dropped.
      const acc_t v = static_cast<acc_t>(xb[j]) * scale;
      bits_t b;
      std::memcpy(&b, &v, sizeof(b));
      b &= bits_t(0) - static_cast<bits_t>(h >= threshold);
      acc_t r;
      std::memcpy(&r, &b, sizeof(r));
      ob[j] = static_cast<scalar_t>(r);
    }
    i = block_end;
  }
}

}  // namespace FFK_ISA
}  // namespace cpu
}  // namespace ffkernels
