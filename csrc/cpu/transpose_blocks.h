// Element moves of the oriented gather that a compiler does not vectorise by itself: a short
// row copied or reversed, and the transposition of a square block of L x L elements,
// L = 16 / sizeof(T) (one 128-bit register per block row). All move bits only (any element
// type of 1, 2, 4 or 8 bytes), use SSE2 (baseline x86-64: no dispatch needed) and fall back
// to plain loops elsewhere.
#pragma once
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#define FQ_HAVE_SSE2_BLOCKS 1
#endif

namespace fastquilt::cpu {

// Elements of T in one 128-bit block row.
template <typename T>
constexpr int64_t block_lanes() {
  return 16 / int64_t(sizeof(T));
}

#ifdef FQ_HAVE_SSE2_BLOCKS
namespace simd_detail {

// The 16 bytes of v with their elements of E bytes in reverse order.
template <int E>
inline __m128i reverse_elements(__m128i v) {
  if constexpr (E == 1) {  // swap the bytes of each 16-bit word, then reverse the words
    v = _mm_or_si128(_mm_slli_epi16(v, 8), _mm_srli_epi16(v, 8));
  }
  if constexpr (E <= 2) {
    v = _mm_shufflelo_epi16(v, 0x1B);
    v = _mm_shufflehi_epi16(v, 0x1B);
  }
  return _mm_shuffle_epi32(v, E == 4 ? 0x1B : 0x4E);  // reverse the dwords, or swap the halves
}

// Rows a and b interleaved in units of G bytes: their low halves, or their high halves.
template <int G, bool kHigh>
inline __m128i unpack(__m128i a, __m128i b) {
  if constexpr (G == 1) {
    return kHigh ? _mm_unpackhi_epi8(a, b) : _mm_unpacklo_epi8(a, b);
  } else if constexpr (G == 2) {
    return kHigh ? _mm_unpackhi_epi16(a, b) : _mm_unpacklo_epi16(a, b);
  } else if constexpr (G == 4) {
    return kHigh ? _mm_unpackhi_epi32(a, b) : _mm_unpacklo_epi32(a, b);
  } else {
    return kHigh ? _mm_unpackhi_epi64(a, b) : _mm_unpacklo_epi64(a, b);
  }
}

// One round of the perfect shuffle: rows 2k and 2k+1 interleaved in units of G bytes, the low
// halves into k and the high halves into n/2 + k. After the rounds G = E, 2E, ..., 8 row k
// holds column bitrev(k) of the block.
template <int G, int n>
inline void shuffle_round(__m128i* v) {
  __m128i w[n];
  for (int k = 0; k < n / 2; ++k) {
    w[k] = unpack<G, false>(v[2 * k], v[2 * k + 1]);
    w[n / 2 + k] = unpack<G, true>(v[2 * k], v[2 * k + 1]);
  }
  for (int k = 0; k < n; ++k) v[k] = w[k];
}

constexpr int bit_reverse(int k, int n) {
  int r = 0;
  for (int bit = 1; bit < n; bit <<= 1) r = (r << 1) | ((k & bit) ? 1 : 0);
  return r;
}

}  // namespace simd_detail
#endif

// dst[x] = src[x] for x < n: a short row in register moves (an inlined memcpy of a
// run-time length into an aligned buffer becomes `rep movs`, slow to start for rows this size).
template <typename T>
inline void copy_row(T* dst, const T* src, int64_t n) {
  int64_t x = 0;
#ifdef FQ_HAVE_SSE2_BLOCKS
  constexpr int64_t L = block_lanes<T>();
  for (; x + L <= n; x += L) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + x),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + x)));
    asm("" : "+r"(x));  // x opaque: the compiler cannot turn the loop back into a memcpy
  }
#endif
  for (; x < n; ++x) dst[x] = src[x];
}

// dst[x] = src[-x] for x < n.
template <typename T>
inline void copy_reversed(T* dst, const T* src, int64_t n) {
  int64_t x = 0;
#ifdef FQ_HAVE_SSE2_BLOCKS
  constexpr int64_t L = block_lanes<T>();
  for (; x + L <= n; x += L) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src - x - (L - 1)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + x),
                     simd_detail::reverse_elements<int(sizeof(T))>(v));
  }
#endif
  for (; x < n; ++x) dst[x] = src[-x];
}

// dst[i * dst_row + j] = src[j * src_row + i] for i, j < block_lanes<T>(): an L x L block
// transposed (strides in elements).
template <typename T>
inline void transpose_block(const T* src, int64_t src_row, T* dst, int64_t dst_row) {
  constexpr int n = int(block_lanes<T>());
#ifdef FQ_HAVE_SSE2_BLOCKS
  using namespace simd_detail;
  __m128i v[n];
  for (int r = 0; r < n; ++r)
    v[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * src_row));
  constexpr int E = int(sizeof(T));
  if constexpr (E <= 1) shuffle_round<1, n>(v);
  if constexpr (E <= 2) shuffle_round<2, n>(v);
  if constexpr (E <= 4) shuffle_round<4, n>(v);
  shuffle_round<8, n>(v);
  for (int k = 0; k < n; ++k)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + bit_reverse(k, n) * dst_row), v[k]);
#else
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) dst[i * dst_row + j] = src[j * src_row + i];
#endif
}

}  // namespace fastquilt::cpu
