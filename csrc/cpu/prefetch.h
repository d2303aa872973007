// Prefetch hints of the CPU kernels that read short rows a plane apart (runs the hardware
// prefetcher does not follow): nothing is read or written, so an address past the data is
// harmless; no-ops where the compiler has no __builtin_prefetch.
#pragma once
#include <cstdint>

namespace fastquilt::cpu {

// Asks for the cache lines of src[0, n) ahead of their use (a hint: nothing is read).
template <typename T>
inline void prefetch_row(const T* src, int64_t n) {
#if defined(__GNUC__)
  const char* p = reinterpret_cast<const char*>(src);
  for (int64_t b = 0; b < n * int64_t(sizeof(T)); b += 64) __builtin_prefetch(p + b, 0, 3);
#endif
}

// Asks for the cache line at p, to be written (a hint: nothing is read).
inline void prefetch_for_write(const void* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace fastquilt::cpu
