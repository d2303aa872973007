// The float32 row loops of row_kernels.h: one body each, compiled for baseline x86-64 and for
// AVX2 (cpu/simd.h).
#include "cpu/row_kernels.h"

namespace fastquilt::cpu {
namespace {

FQ_ALWAYS_INLINE void axpy_body(float* __restrict__ d, const float* __restrict__ p,
                                const float* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += p[i] * w[i];
}
FQ_ALWAYS_INLINE void add_body(float* __restrict__ d, const float* __restrict__ p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += p[i];
}
FQ_ALWAYS_INLINE void mul_body(float* __restrict__ d, const float* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] *= w[i];
}

}  // namespace

void axpy_row_f32_base(float* __restrict__ d, const float* __restrict__ p,
                       const float* __restrict__ w, int64_t n) {
  axpy_body(d, p, w, n);
}
void add_row_f32_base(float* __restrict__ d, const float* __restrict__ p, int64_t n) {
  add_body(d, p, n);
}
void mul_row_f32_base(float* __restrict__ d, const float* __restrict__ w, int64_t n) {
  mul_body(d, w, n);
}

#ifdef FQ_HAVE_AVX2_VARIANTS
FQ_TARGET_AVX2 void axpy_row_f32_avx2(float* __restrict__ d, const float* __restrict__ p,
                                      const float* __restrict__ w, int64_t n) {
  axpy_body(d, p, w, n);
}
FQ_TARGET_AVX2 void add_row_f32_avx2(float* __restrict__ d, const float* __restrict__ p,
                                     int64_t n) {
  add_body(d, p, n);
}
FQ_TARGET_AVX2 void mul_row_f32_avx2(float* __restrict__ d, const float* __restrict__ w,
                                     int64_t n) {
  mul_body(d, w, n);
}
#endif

}  // namespace fastquilt::cpu
