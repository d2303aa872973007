// The CPU feature flag of the SIMD dispatch (cpu/simd.h).
#include "cpu/simd.h"
#include "cpu/stream_store.h"

#include <unistd.h>

#include <cstdlib>

namespace fastquilt::cpu {

#ifdef FQ_HAVE_AVX2_VARIANTS
const bool kCpuHasAvx2 = [] {
  __builtin_cpu_init();  // may run before libgcc's own constructor has read the CPU's features
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}();
#endif

bool output_exceeds_cache(int64_t bytes) {
  static const int64_t threshold = [] {
    if (const char* env = std::getenv("FASTQUILT_STREAM_STORE_BYTES"))  // tests, tuning
      return int64_t(std::strtoll(env, nullptr, 10));
    int64_t llc = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
    llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (llc <= 0) llc = int64_t(32) << 20;
    return llc / 4 * 3;
  }();
  return bytes > threshold;
}

}  // namespace fastquilt::cpu
