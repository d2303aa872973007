// Inner row loops of the CPU kernels. Separate functions with __restrict__ pointers so the
// compiler knows the rows do not alias and vectorises them.
#pragma once
#include <cstdint>

namespace fastquilt::cpu {

// d[i] += p[i] * w[i]
template <typename scalar_t, typename acc_t>
inline void axpy_row(acc_t* __restrict__ d, const scalar_t* __restrict__ p,
                     const acc_t* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += static_cast<acc_t>(p[i]) * w[i];
}

// d[i] += p[i]
template <typename scalar_t, typename acc_t>
inline void add_row(acc_t* __restrict__ d, const scalar_t* __restrict__ p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += static_cast<acc_t>(p[i]);
}

// d[i] += 1
template <typename acc_t>
inline void add_one_row(acc_t* __restrict__ d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += acc_t(1);
}

// o[i] = den[i] > 0 ? num[i] / den[i] : fill
template <typename scalar_t, typename acc_t>
inline void divide_row(scalar_t* __restrict__ o, const acc_t* __restrict__ num,
                       const acc_t* __restrict__ den, acc_t fill, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    o[i] = static_cast<scalar_t>(den[i] > acc_t(0) ? num[i] / den[i] : fill);
}

// o[i] = p[i] * w[i]
template <typename scalar_t, typename acc_t>
inline void scale_row(scalar_t* __restrict__ o, const scalar_t* __restrict__ p,
                      const acc_t* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<scalar_t>(static_cast<acc_t>(p[i]) * w[i]);
}

// float32 rows are the hot case: compile them twice (AVX2+FMA and baseline x86-64) and let the
// loader pick at run time (GCC function multi-versioning), so one build runs on any x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FQ_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FQ_MULTIVERSION
#endif

FQ_MULTIVERSION void axpy_row_f32(float* __restrict__ d, const float* __restrict__ p,
                                  const float* __restrict__ w, int64_t n);
FQ_MULTIVERSION void add_row_f32(float* __restrict__ d, const float* __restrict__ p, int64_t n);
FQ_MULTIVERSION void divide_row_f32(float* __restrict__ o, const float* __restrict__ num,
                                    const float* __restrict__ den, float fill, int64_t n);

template <>
inline void axpy_row<float, float>(float* __restrict__ d, const float* __restrict__ p,
                                   const float* __restrict__ w, int64_t n) {
  axpy_row_f32(d, p, w, n);
}
template <>
inline void add_row<float, float>(float* __restrict__ d, const float* __restrict__ p, int64_t n) {
  add_row_f32(d, p, n);
}
template <>
inline void divide_row<float, float>(float* __restrict__ o, const float* __restrict__ num,
                                     const float* __restrict__ den, float fill, int64_t n) {
  divide_row_f32(o, num, den, fill, n);
}

}  // namespace fastquilt::cpu
