// The cache-aware schedule of the CPU aggregation, chosen by size at run time (plain C++: also
// included by python/module.cpp, which reports it).
//
// - Feature tiles: when x ([N, F]) does not fit in a share of the last-level cache, the
//   features are processed in tiles whose x columns ([N, tile]) do, each tile a full sweep
//   over the edges (every destination row of every task, tile after tile, so that all threads
//   gather from the same cache-resident tile). Tiles never go below kMinTileBytes per row:
//   narrower tiles pay the per-edge work (index, address, prefetch) once per tile and lose
//   more than the cache hits win (measured on the dev machine: 16- and 32-float tiles of a
//   100k x 128 float32 x were 1.4x and 1.3x slower than whole rows).
// - Prefetch distance: the source rows of the next `distance` edges are prefetched into L2
//   (not L1: L1 has few miss buffers; L2 keeps many more misses in flight); the distance keeps
//   about kPrefetchBytes of rows in flight.
//
// The last-level cache size comes from sysfs (/sys/devices/system/cpu/cpu0/cache/index*/, the
// highest level), else sysconf(_SC_LEVEL3_CACHE_SIZE) (glibc sometimes reports the sum over
// all cores sharing it: capped), else 8 MiB. FFKERNELS_LLC_BYTES overrides it (tests use a tiny
// value to exercise the tiled path on small graphs).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ffkernels {
namespace cpu {

constexpr int64_t kFallbackLlcBytes = int64_t(8) << 20;
constexpr int64_t kMaxSaneLlcBytes = int64_t(512) << 20;
constexpr int64_t kMinTileBytes = 256;    // four cache lines per row and tile
constexpr int64_t kPrefetchBytes = 16384; // rows in flight ahead of the gathers
constexpr int64_t kLine = 64;
constexpr int64_t kMaxPrefetchDistance = 256;

struct CacheInfo {
  int64_t llc_bytes;
  const char* source;  // "sysfs", "sysconf", "fallback" or "env"
};

// "32768K" / "1M" / "512" -> bytes; 0 when unparsable.
inline int64_t parse_cache_size(const char* text) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || v <= 0) return 0;
  int64_t bytes = static_cast<int64_t>(v);
  if (*end == 'K' || *end == 'k') bytes <<= 10;
  else if (*end == 'M' || *end == 'm') bytes <<= 20;
  else if (*end == 'G' || *end == 'g') bytes <<= 30;
  return bytes;
}

inline bool read_small_file(const char* path, char* buf, size_t size) {
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  const size_t n = std::fread(buf, 1, size - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  return n > 0;
}

inline CacheInfo probe_llc() {
  int64_t best = 0;
  int best_level = 0;
  char path[128], buf[64];
  for (int i = 0; i < 16; ++i) {
    std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
    if (!read_small_file(path, buf, sizeof(buf))) break;
    const int level = std::atoi(buf);
    std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
    if (!read_small_file(path, buf, sizeof(buf)) || std::strncmp(buf, "Instruction", 11) == 0) continue;
    std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
    if (!read_small_file(path, buf, sizeof(buf))) continue;
    const int64_t bytes = parse_cache_size(buf);
    if (bytes > 0 && (level > best_level || (level == best_level && bytes > best))) {
      best = bytes;
      best_level = level;
    }
  }
  if (best > 0 && best <= kMaxSaneLlcBytes) return {best, "sysfs"};
#ifdef _SC_LEVEL3_CACHE_SIZE
  const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (v > 0) return {std::min<int64_t>(v, kMaxSaneLlcBytes / 8), "sysconf"};
#endif
  return {kFallbackLlcBytes, "fallback"};
}

inline CacheInfo cache_info() {
  static const CacheInfo probed = probe_llc();
  const char* env = std::getenv("FFKERNELS_LLC_BYTES");
  if (env != nullptr) {
    const int64_t v = parse_cache_size(env);
    if (v > 0) return {v, "env"};
  }
  return probed;
}

struct AggregateSchedule {
  int64_t tile_features;      // features per tile (== F: whole rows)
  int64_t prefetch_distance;  // edges ahead whose source rows are prefetched
  int64_t llc_bytes;
};

inline AggregateSchedule aggregate_schedule(int64_t num_rows, int64_t num_features, int64_t elem_bytes) {
  const CacheInfo llc = cache_info();
  // Half of the LLC for the x tile: the rest holds the CSR stream, the output and other data.
  const int64_t budget = llc.llc_bytes / 4;
  const int64_t row_bytes = std::max<int64_t>(num_features * elem_bytes, 1);
  int64_t tile = num_features;
  if (num_rows > 0 && num_rows * row_bytes > budget) {
    // Tile only when a tile of at least kMinTileBytes per row fits the budget: a tile whose
    // columns overflow the cache anyway only adds passes over the edges.
    const int64_t tile_bytes = budget / num_rows / kLine * kLine;
    if (tile_bytes >= kMinTileBytes && tile_bytes < row_bytes) tile = std::max<int64_t>(1, tile_bytes / elem_bytes);
  }
  const int64_t gather_bytes = std::max<int64_t>(tile * elem_bytes, kLine);
  int64_t in_flight = kPrefetchBytes;
  if (const char* env = std::getenv("FFKERNELS_PREFETCH_BYTES")) {  // tuning knob (benchmarks)
    const int64_t v = parse_cache_size(env);
    if (v > 0) in_flight = v;
  }
  const int64_t distance = std::min<int64_t>(kMaxPrefetchDistance, std::max<int64_t>(8, in_flight / gather_bytes));
  return {tile, distance, llc.llc_bytes};
}

}  // namespace cpu
}  // namespace ffkernels
