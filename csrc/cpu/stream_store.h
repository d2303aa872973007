// Non-temporal ("streaming") row copies for outputs larger than the last-level cache: a normal
// store first reads the destination's cache line from memory (read for ownership), so an
// output that is written once and not read back soon costs its bytes twice; a streaming store
// writes the line without reading it and without evicting the cache's other data (glibc's
// memcpy switches to streaming stores above a threshold of this order too, which is why a
// large memcpy beats a row-by-row copy). Baseline x86-64 (SSE2); plain memcpy elsewhere.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu/simd.h"  // FQ_HIDDEN

#if defined(__GNUC__) && defined(__x86_64__)
#include <emmintrin.h>
#define FQ_HAVE_STREAM_STORES 1
#endif

namespace fastquilt::cpu {

// The output size in bytes above which a gather streams: 3/4 of the last-level cache (from
// sysfs, else sysconf; 32 MiB if unknown), or FASTQUILT_STREAM_STORE_BYTES when that is a
// whole number >= 0; read once (cpu/stream_store.cpp).
FQ_HIDDEN int64_t stream_store_threshold();

// Whether an output of `bytes` is streamed: more than stream_store_threshold().
FQ_HIDDEN bool output_exceeds_cache(int64_t bytes);

// Copies `bytes` from src to dst, the 16-byte-aligned middle of dst with streaming stores.
// The stores are weakly ordered: call stream_fence() before another thread reads dst.
inline void copy_streaming(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
#ifdef FQ_HAVE_STREAM_STORES
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const size_t head = std::min(bytes, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  size_t i = head;
  for (; i + 16 <= bytes; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  std::memcpy(d + i, s + i, bytes - i);
#else
  std::memcpy(dst, src, bytes);
#endif
}

// Orders this thread's streaming stores before its later stores (the end of a parallel task).
inline void stream_fence() {
#ifdef FQ_HAVE_STREAM_STORES
  _mm_sfence();
#endif
}

}  // namespace fastquilt::cpu
