// Multi-versioned float32 row loops (see row_kernels.h). Not including row_kernels.h: its
// plain declarations would have to carry the attribute to declare the same functions.
#include <cstdint>

#include "cpu/multiversion.h"

namespace fastquilt::cpu {

FQ_MULTIVERSION void axpy_row_f32(float* __restrict__ d, const float* __restrict__ p,
                                  const float* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += p[i] * w[i];
}

FQ_MULTIVERSION void add_row_f32(float* __restrict__ d, const float* __restrict__ p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += p[i];
}

FQ_MULTIVERSION void mul_row_f32(float* __restrict__ d, const float* __restrict__ w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] *= w[i];
}

}  // namespace fastquilt::cpu
