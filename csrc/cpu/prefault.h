// Prefaulting of a fresh large output buffer, in parallel, before a kernel writes it.
//
// A new tensor of tens of MB comes straight from mmap: every 4 KiB page is faulted in on its
// first write (~0.5-0.9 ns per byte here: 45 ms of a 79 ms 100k x 128 aggregation). One
// madvise(MADV_POPULATE_WRITE) per thread over its share of the pages does the same work without
// a trap per page, ~3x cheaper, and the threads populate their shares concurrently. Linux >= 5.14;
// elsewhere (or when it fails) the pages are simply faulted in by the kernel's writes as before.
// FFKERNELS_PREFAULT=0 turns it off (to measure it).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace ffkernels {
namespace cpu {

constexpr int64_t kPrefaultMinBytes = int64_t(4) << 20;

inline void prefault_for_write(void* data, int64_t bytes) {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  if (data == nullptr || bytes < kPrefaultMinBytes) return;
  const char* env = std::getenv("FFKERNELS_PREFAULT");
  if (env != nullptr && std::strcmp(env, "0") == 0) return;
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096);
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) & ~(page - 1);
  if (end <= begin) return;
  const int64_t pages = static_cast<int64_t>((end - begin) / page);
  // Chunks of at least 1 MiB of pages; at::parallel_for splits them over the threads.
  const int64_t grain = static_cast<int64_t>((uintptr_t(1) << 20) / page);
  at::parallel_for(0, pages, grain, [&](int64_t p0, int64_t p1) {
    madvise(reinterpret_cast<void*>(begin + static_cast<uintptr_t>(p0) * page),
            static_cast<size_t>(p1 - p0) * page, MADV_POPULATE_WRITE);  // best effort
  });
#else
  (void)data;
  (void)bytes;
#endif
}

// A new contiguous tensor for a kernel to fill, its pages populated in parallel.
inline at::Tensor empty_prefaulted(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options.memory_format(at::MemoryFormat::Contiguous));
  prefault_for_write(t.data_ptr(), static_cast<int64_t>(t.nbytes()));
  return t;
}

}  // namespace cpu
}  // namespace ffkernels
