// 16-bit float rows <-> float32 (see float16_rows.h).
#include "cpu/float16_rows.h"

#include <cstring>

#include "cpu/multiversion.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FQ_HAVE_F16C_PATH 1
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

#ifdef FQ_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const c10::Half* src, float* dst,
                                                          int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  to_float_scalar(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c"))) void float_to_half_f16c(const float* src, c10::Half* dst,
                                                          int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  from_float_scalar(src + i, dst + i, n - i);
}

const bool kHasF16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
#endif

// bfloat16 is the top half of a float32: widening is a shift, narrowing c10's round to nearest
// even (NaN -> 0x7FC0) written without a branch, on raw bits, so that it vectorises.
FQ_MULTIVERSION void bfloat16_bits_to_float(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(src[i]) << 16;
    std::memcpy(dst + i, &u, sizeof(u));
  }
}

FQ_MULTIVERSION void float_to_bfloat16_bits(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, sizeof(u));
    const uint32_t rounded = (u + ((u >> 16) & 1u) + 0x7FFFu) >> 16;
    dst[i] = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  }
}

}  // namespace

void to_float_row(const c10::Half* src, float* dst, int64_t n) {
#ifdef FQ_HAVE_F16C_PATH
  if (kHasF16c) return half_to_float_f16c(src, dst, n);
#endif
  to_float_scalar(src, dst, n);
}

void from_float_row(const float* src, c10::Half* dst, int64_t n) {
#ifdef FQ_HAVE_F16C_PATH
  if (kHasF16c) return float_to_half_f16c(src, dst, n);
#endif
  from_float_scalar(src, dst, n);
}

void to_float_row(const c10::BFloat16* src, float* dst, int64_t n) {
  static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t));
  bfloat16_bits_to_float(reinterpret_cast<const uint16_t*>(src), dst, n);
}

void from_float_row(const float* src, c10::BFloat16* dst, int64_t n) {
  float_to_bfloat16_bits(src, reinterpret_cast<uint16_t*>(dst), n);
}

}  // namespace fastquilt::cpu
