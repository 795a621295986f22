// Prefaulting of a fresh large output, by the task that is about to write it.
//
// A new tensor of tens of MB comes straight from mmap: every 4 KiB page is faulted in on its
// first write (~0.5 ns per byte here: 45 ms of a 79 ms 100k x 128 aggregation). One
// madvise(MADV_POPULATE_WRITE) over a task's rows does the same work without a trap per page
// (standalone, 256 MB: 86 + 10 ms instead of 138 ms). Linux >= 5.14; elsewhere (or when it
// fails) the pages are simply faulted in by the kernel's writes as before.
// FFKERNELS_PREFAULT=0 turns it off (to measure it).
//
// Before that, the output is advised MADV_HUGEPAGE: with transparent huge pages in "madvise"
// or "always" mode (and defrag "madvise", the common default) the populate then maps 2 MiB
// pages, 512x fewer faults to zero and map: a fresh 51 MB tensor written once costs 5.5-6.8 ms
// instead of 17-18 ms (AMD EPYC Zen 4 guest, THP "always"/defrag "madvise"), i.e. what torch's
// own THP_MEM_ALLOC_ENABLE=1 does for its allocations. A no-op where THP is off.
// FFKERNELS_HUGEPAGES=0 turns the advice off alone.
#pragma once

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

inline bool prefault_enabled() {
  const char* env = std::getenv("FFKERNELS_PREFAULT");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

inline bool huge_pages_enabled() {
  const char* env = std::getenv("FFKERNELS_HUGEPAGES");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

// Ask for transparent huge pages on the 2 MiB-aligned part of [data, data + bytes) (a hint:
// the kernel only ever maps a huge page over a whole aligned 2 MiB range; best effort).
inline void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) & ~(huge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// Populate the whole pages inside [data, data + bytes) for writing (best effort, one syscall).
inline void prefault_range(void* data, int64_t bytes) {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096);
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) & ~(page - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace cpu
}  // namespace ffkernels
