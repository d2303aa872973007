// Multi-versioned float32 row loops (see row_kernels.h).
#include "cpu/row_kernels.h"

namespace fastquilt::cpu {

FQ_MULTIVERSION void axpy_row_f32(float* __restrict__ d, const float* __restrict__ p,
                                  const float* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += p[i] * w[i];
}

FQ_MULTIVERSION void add_row_f32(float* __restrict__ d, const float* __restrict__ p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += p[i];
}

FQ_MULTIVERSION void divide_row_f32(float* __restrict__ o, const float* __restrict__ num,
                                    const float* __restrict__ den, float fill, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = den[i] > 0.0f ? num[i] / den[i] : fill;
}

}  // namespace fastquilt::cpu
