// Rows of 16-bit floats (float16, bfloat16) <-> float32 for the CPU kernels. c10's types convert
// one value at a time: float16 in software unless the whole build targets F16C (which one
// portable build cannot), bfloat16 through a NaN test that keeps the loop scalar. These convert
// whole rows: float16 8 values per instruction where the CPU has F16C (the AVX2 variant of
// cpu/simd.h), bfloat16 in a loop the compiler vectorises. Both round to nearest even like
// c10, so results are unchanged (float16 NaN payloads aside).
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "cpu/simd.h"

namespace fastquilt::cpu {

// The variants (float16_rows.cpp); bfloat16 as raw bits.
FQ_HIDDEN void half_to_float_base(const c10::Half* src, float* dst, int64_t n);
FQ_HIDDEN void float_to_half_base(const float* src, c10::Half* dst, int64_t n);
FQ_HIDDEN void bfloat16_to_float_base(const uint16_t* src, float* dst, int64_t n);
FQ_HIDDEN void float_to_bfloat16_base(const float* src, uint16_t* dst, int64_t n);
#ifdef FQ_HAVE_AVX2_VARIANTS
FQ_HIDDEN FQ_TARGET_AVX2 void half_to_float_avx2(const c10::Half* src, float* dst, int64_t n);
FQ_HIDDEN FQ_TARGET_AVX2 void float_to_half_avx2(const float* src, c10::Half* dst, int64_t n);
FQ_HIDDEN FQ_TARGET_AVX2 void bfloat16_to_float_avx2(const uint16_t* src, float* dst, int64_t n);
FQ_HIDDEN FQ_TARGET_AVX2 void float_to_bfloat16_avx2(const float* src, uint16_t* dst, int64_t n);
#endif

inline void to_float_row(const c10::Half* src, float* dst, int64_t n) {
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return half_to_float_avx2(src, dst, n);
#endif
  half_to_float_base(src, dst, n);
}

inline void from_float_row(const float* src, c10::Half* dst, int64_t n) {
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return float_to_half_avx2(src, dst, n);
#endif
  float_to_half_base(src, dst, n);
}

inline void to_float_row(const c10::BFloat16* src, float* dst, int64_t n) {
  static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t));
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return bfloat16_to_float_avx2(bits, dst, n);
#endif
  bfloat16_to_float_base(bits, dst, n);
}

inline void from_float_row(const float* src, c10::BFloat16* dst, int64_t n) {
  auto* bits = reinterpret_cast<uint16_t*>(dst);
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return float_to_bfloat16_avx2(src, bits, n);
#endif
  float_to_bfloat16_base(src, bits, n);
}

// The types whose rows the kernels convert before summing in float32.
template <typename scalar_t>
constexpr bool kFloat16Type =
    std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// Floats converted per step through a stack buffer: 1 KiB, stays in L1.
constexpr int64_t kFloat16Block = 256;

}  // namespace fastquilt::cpu
