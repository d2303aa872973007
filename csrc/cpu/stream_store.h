// Non-temporal ("streaming") row copies for outputs larger than the last-level cache: a normal
// store first reads the destination's cache line from memory (read for ownership), so an
// output that is written once and not read back soon costs its bytes twice; a streaming store
// writes the line without reading it and without evicting the cache's other data (glibc's
// memcpy switches to streaming stores above a threshold of this order too, which is why a
// large memcpy beats a row-by-row copy). x86-64 (SSE2, or AVX2 where the CPU has it); plain
// memcpy elsewhere.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu/simd.h"  // FQ_HIDDEN, FQ_TARGET_AVX2, cpu_has_avx2

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FQ_HAVE_STREAM_STORES 1
#endif

namespace fastquilt::cpu {

// The output size in bytes above which a gather streams: 3/4 of the last-level cache (from
// sysfs, else sysconf; 32 MiB if unknown), or FASTQUILT_STREAM_STORE_BYTES when that is a
// whole number >= 0; read once (cpu/stream_store.cpp).
FQ_HIDDEN int64_t stream_store_threshold();

// Whether an output of `bytes` is streamed: more than stream_store_threshold().
FQ_HIDDEN bool output_exceeds_cache(int64_t bytes);

#ifdef FQ_HAVE_STREAM_STORES
// The bytes of a copy to dst before dst's first `align`-byte boundary (all of them if fewer).
inline size_t bytes_before_boundary(const void* dst, size_t bytes, size_t align) {
  return std::min(bytes, (align - reinterpret_cast<uintptr_t>(dst) % align) % align);
}

// Baseline x86-64: 16-byte streaming stores (SSE2).
inline void copy_streaming_sse2(char* d, const char* s, size_t bytes) {
  if (bytes == 0) return;  // (memcpy of nothing from a null pointer is still undefined)
  size_t i = bytes_before_boundary(d, bytes, 16);
  std::memcpy(d, s, i);
  for (; i + 16 <= bytes; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  std::memcpy(d + i, s + i, bytes - i);
}

// 32-byte streaming stores, a cache line in two. Against the 16-byte ones (2026-12-07, AMD EPYC
// VM, warm memory, alternating in one process): 3D unstitch 1.03-1.07x -> 0.89-0.96x a memcpy
// at one thread (five rounds), 1.00-1.08x -> 0.93-1.04x at two (four); 2D unchanged.
FQ_TARGET_AVX2 inline void copy_streaming_avx2(char* d, const char* s, size_t bytes) {
  if (bytes == 0) return;
  size_t i = bytes_before_boundary(d, bytes, 32);
  std::memcpy(d, s, i);
  for (; i + 32 <= bytes; i += 32)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
  std::memcpy(d + i, s + i, bytes - i);
}
#endif

// Copies `bytes` from src to dst, the aligned middle of dst with streaming stores (32 bytes at
// a time where the CPU has AVX2, else 16). The stores are weakly ordered: call stream_fence()
// before another thread reads dst.
inline void copy_streaming(void* dst, const void* src, size_t bytes) {
#ifdef FQ_HAVE_STREAM_STORES
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  if (cpu_has_avx2()) return copy_streaming_avx2(d, s, bytes);
  copy_streaming_sse2(d, s, bytes);
#else
  if (bytes > 0) std::memcpy(dst, src, bytes);
#endif
}

// Orders this thread's streaming stores before its later stores (the end of a parallel task).
inline void stream_fence() {
#ifdef FQ_HAVE_STREAM_STORES
  _mm_sfence();
#endif
}

}  // namespace fastquilt::cpu
