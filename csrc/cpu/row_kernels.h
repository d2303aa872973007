// Inner row loops of the CPU kernels. Separate functions with __restrict__ pointers so the
// compiler knows the rows do not alias and vectorises them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/float16_rows.h"
#include "cpu/simd.h"

namespace fastquilt::cpu {

// float32 rows are the hot case: row_kernels.cpp compiles each for baseline x86-64 and for
// AVX2, and these pick one per call (cpu/simd.h), so one build runs fast on any x86-64.
FQ_HIDDEN void axpy_row_f32_base(float* __restrict__ d, const float* __restrict__ p,
                                 const float* __restrict__ w, int64_t n);
FQ_HIDDEN void add_row_f32_base(float* __restrict__ d, const float* __restrict__ p, int64_t n);
FQ_HIDDEN void mul_row_f32_base(float* __restrict__ d, const float* __restrict__ w, int64_t n);
#ifdef FQ_HAVE_AVX2_VARIANTS
FQ_HIDDEN FQ_TARGET_AVX2 void axpy_row_f32_avx2(float* __restrict__ d,
                                                const float* __restrict__ p,
                                                const float* __restrict__ w, int64_t n);
FQ_HIDDEN FQ_TARGET_AVX2 void add_row_f32_avx2(float* __restrict__ d,
                                               const float* __restrict__ p, int64_t n);
FQ_HIDDEN FQ_TARGET_AVX2 void mul_row_f32_avx2(float* __restrict__ d,
                                               const float* __restrict__ w, int64_t n);
#endif

// d[i] += p[i] * w[i]
inline void axpy_row_f32(float* __restrict__ d, const float* __restrict__ p,
                         const float* __restrict__ w, int64_t n) {
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return axpy_row_f32_avx2(d, p, w, n);
#endif
  axpy_row_f32_base(d, p, w, n);
}

// d[i] += p[i]
inline void add_row_f32(float* __restrict__ d, const float* __restrict__ p, int64_t n) {
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return add_row_f32_avx2(d, p, n);
#endif
  add_row_f32_base(d, p, n);
}

// d[i] *= w[i]
inline void mul_row_f32(float* __restrict__ d, const float* __restrict__ w, int64_t n) {
#ifdef FQ_HAVE_AVX2_VARIANTS
  if (cpu_has_avx2()) return mul_row_f32_avx2(d, w, n);
#endif
  mul_row_f32_base(d, w, n);
}

// 16-bit float rows go through float32 a block at a time (float16_rows.h), then the float32
// loops: f(block of p as float32, offset, length).
template <typename scalar_t, typename F>
inline void for_each_float_block(const scalar_t* p, int64_t n, F&& f) {
  float buf[kFloat16Block];
  for (int64_t i = 0; i < n; i += kFloat16Block) {
    const int64_t m = std::min(kFloat16Block, n - i);
    to_float_row(p + i, buf, m);
    f(buf, i, m);
  }
}

// d[i] += p[i] * w[i]
template <typename scalar_t, typename acc_t>
inline void axpy_row(acc_t* __restrict__ d, const scalar_t* __restrict__ p,
                     const acc_t* __restrict__ w, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    axpy_row_f32(d, p, w, n);
  } else if constexpr (kFloat16Type<scalar_t>) {
    for_each_float_block(p, n, [&](float* b, int64_t i, int64_t m) {
      axpy_row_f32(d + i, b, w + i, m);
    });
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] += static_cast<acc_t>(p[i]) * w[i];
  }
}

// d[i] += p[i]
template <typename scalar_t, typename acc_t>
inline void add_row(acc_t* __restrict__ d, const scalar_t* __restrict__ p, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    add_row_f32(d, p, n);
  } else if constexpr (kFloat16Type<scalar_t>) {
    for_each_float_block(p, n, [&](float* b, int64_t i, int64_t m) { add_row_f32(d + i, b, m); });
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] += static_cast<acc_t>(p[i]);
  }
}

// d[i] += 1
template <typename acc_t>
inline void add_one_row(acc_t* __restrict__ d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += acc_t(1);
}

// o[i] = p[i] * w[i]
template <typename scalar_t, typename acc_t>
inline void scale_row(scalar_t* __restrict__ o, const scalar_t* __restrict__ p,
                      const acc_t* __restrict__ w, int64_t n) {
  if constexpr (kFloat16Type<scalar_t>) {
    for_each_float_block(p, n, [&](float* b, int64_t i, int64_t m) {
      mul_row_f32(b, w + i, m);
      from_float_row(b, o + i, m);
    });
  } else {
    for (int64_t i = 0; i < n; ++i)
      o[i] = static_cast<scalar_t>(static_cast<acc_t>(p[i]) * w[i]);
  }
}

}  // namespace fastquilt::cpu
