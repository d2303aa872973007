// The 16-bit float row conversions of float16_rows.h, for baseline x86-64 and for AVX2
// (cpu/simd.h): float16 through F16C there, 8 values per instruction; bfloat16 as one body,
// a loop the compiler vectorises.
#include "cpu/float16_rows.h"

#include <cstring>

#ifdef FQ_HAVE_AVX2_VARIANTS
#include <immintrin.h>
#endif

namespace fastquilt::cpu {
namespace {

template <typename scalar_t>
void to_float_scalar(const scalar_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <typename scalar_t>
void from_float_scalar(const float* src, scalar_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// bfloat16 is the top half of a float32: widening is a shift, narrowing c10's round to nearest
// even (NaN -> 0x7FC0) written without a branch, on raw bits, so that it vectorises.
FQ_ALWAYS_INLINE void bfloat16_bits_to_float(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(src[i]) << 16;
    std::memcpy(dst + i, &u, sizeof(u));
  }
}

FQ_ALWAYS_INLINE void float_to_bfloat16_bits(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, sizeof(u));
    const uint32_t rounded = (u + ((u >> 16) & 1u) + 0x7FFFu) >> 16;
    dst[i] = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  }
}

}  // namespace

void half_to_float_base(const c10::Half* src, float* dst, int64_t n) {
  to_float_scalar(src, dst, n);
}
void float_to_half_base(const float* src, c10::Half* dst, int64_t n) {
  from_float_scalar(src, dst, n);
}
void bfloat16_to_float_base(const uint16_t* src, float* dst, int64_t n) {
  bfloat16_bits_to_float(src, dst, n);
}
void float_to_bfloat16_base(const float* src, uint16_t* dst, int64_t n) {
  float_to_bfloat16_bits(src, dst, n);
}

#ifdef FQ_HAVE_AVX2_VARIANTS
FQ_TARGET_AVX2 void half_to_float_avx2(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  to_float_scalar(src + i, dst + i, n - i);
}

FQ_TARGET_AVX2 void float_to_half_avx2(const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  from_float_scalar(src + i, dst + i, n - i);
}

FQ_TARGET_AVX2 void bfloat16_to_float_avx2(const uint16_t* src, float* dst, int64_t n) {
  bfloat16_bits_to_float(src, dst, n);
}
FQ_TARGET_AVX2 void float_to_bfloat16_avx2(const float* src, uint16_t* dst, int64_t n) {
  float_to_bfloat16_bits(src, dst, n);
}
#endif

}  // namespace fastquilt::cpu
