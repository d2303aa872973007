// The CPU feature flag of the SIMD dispatch (cpu/simd.h).
#include "cpu/simd.h"

namespace fastquilt::cpu {

#ifdef FQ_HAVE_AVX2_VARIANTS
const bool kCpuHasAvx2 = [] {
  __builtin_cpu_init();  // may run before libgcc's own constructor has read the CPU's features
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}();
#endif

}  // namespace fastquilt::cpu
