// The output size above which the CPU gather uses streaming stores (cpu/stream_store.h).
#include "cpu/stream_store.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace fastquilt::cpu {
namespace {

// The size of the last-level cache of CPU 0 from Linux's sysfs (the highest cache level
// listed: the cache as the CPU sees it, where glibc's sysconf may read a virtual machine's
// CPUID, 320 MiB for a 32 MiB cache here), else sysconf's, else 0.
int64_t last_level_cache_bytes() {
  int best_level = 0;
  int64_t best = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    std::ifstream level_file(dir + "/level"), size_file(dir + "/size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
    char* end = nullptr;
    int64_t bytes = std::strtoll(size.c_str(), &end, 10);
    if (*end == 'K') bytes <<= 10;
    else if (*end == 'M') bytes <<= 20;
    else if (*end == 'G') bytes <<= 30;
    if (level > best_level && bytes > 0) best_level = level, best = bytes;
  }
  if (best > 0) return best;
#ifdef _SC_LEVEL3_CACHE_SIZE
  return sysconf(_SC_LEVEL3_CACHE_SIZE);
#else
  return 0;
#endif
}

// 3/4 of the last-level cache (32 MiB if the system does not say): an output that large is
// not read back from the cache.
int64_t cache_threshold() {
  int64_t llc = last_level_cache_bytes();
  if (llc <= 0) llc = int64_t(32) << 20;
  return llc / 4 * 3;
}

// FASTQUILT_STREAM_STORE_BYTES when it is a whole number >= 0 (tests, tuning), else the
// cache's threshold (with a message on stderr when it is set to something else).
int64_t read_threshold() {
  const char* env = std::getenv("FASTQUILT_STREAM_STORE_BYTES");
  if (env == nullptr || *env == '\0') return cache_threshold();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0) {
    std::fprintf(stderr,
                 "fastquilt: FASTQUILT_STREAM_STORE_BYTES=%s is not a whole number of bytes "
                 ">= 0; using the cache's threshold\n", env);
    return cache_threshold();
  }
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
