// The output size above which the CPU gather uses streaming stores (cpu/stream_store.h).
#include "cpu/stream_store.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "cpu/simd.h"

namespace fastquilt::cpu {
namespace {

// 3/4 of the last-level cache (32 MiB if the system does not say): an output that large is
// not read back from the cache.
int64_t cache_threshold() {
  int64_t llc = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  if (llc <= 0) llc = int64_t(32) << 20;
  return llc / 4 * 3;
}

// FASTQUILT_STREAM_STORE_BYTES when it is a whole number >= 0 (tests, tuning), else the
// cache's threshold.
int64_t read_threshold() {
  const char* env = std::getenv("FASTQUILT_STREAM_STORE_BYTES");
  if (env == nullptr || *env == '\0') return cache_threshold();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0) return cache_threshold();
  return int64_t(v);
}

}  // namespace

int64_t stream_store_threshold() {
  static const int64_t threshold = read_threshold();
  return threshold;
}

bool output_exceeds_cache(int64_t bytes) { return bytes > stream_store_threshold(); }

}  // namespace fastquilt::cpu

// The threshold in force, for the tests (through ctypes: no operator for it).
extern "C" __attribute__((visibility("default"))) int64_t fastquilt_stream_store_threshold() {
  return fastquilt::cpu::stream_store_threshold();
}
