// Helpers shared by the CUDA kernels (launch geometry, vector loads, origins).
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "fastquilt/index_math.h"
#include "op_checks.h"

namespace fastquilt::cuda {

constexpr int kThreads = 256;

// Grid size for a grid-stride loop over `work` items (capped; the loop covers the rest).
inline unsigned int blocks_for(int64_t work, int threads = kThreads) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, int64_t(1) << 20)));
}

// Sixteen bytes of scalar_t: the unit of the vectorised row copies.
template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t v[kSize];
};

// a / b and a % b for a >= 0, 0 < b < 2^32: 32-bit hardware path whenever a fits (64-bit
// integer division is several times slower and the kernels are otherwise memory-bound).
__device__ __forceinline__ int64_t fast_div(int64_t a, int64_t b) {
  return a <= 0xFFFFFFFFll ? int64_t(uint32_t(a) / uint32_t(b)) : a / b;
}

// Splits a flat row index into (m, c, a, b) of patches (M, C, W0, W1).
__device__ __forceinline__ void split_patch_row(int64_t row, const Geometry& g, int64_t* m,
                                                int64_t* c, int64_t* a, int64_t* b) {
  int64_t t = fast_div(row, g.W[1]);
  *b = row - t * g.W[1];
  int64_t u = fast_div(t, g.W[0]);
  *a = t - u * g.W[0];
  *m = fast_div(u, g.C);
  *c = u - *m * g.C;
}

// Loads origin row m as [n, o0, o1, o2] in the normalised 3-axis geometry.
__device__ __forceinline__ void load_origin(const int64_t* org, int64_t m, int64_t D,
                                            int64_t o[4]) {
  const int64_t* r = org + m * (1 + D);
  o[0] = r[0];
  if (D == 3) { o[1] = r[1]; o[2] = r[2]; o[3] = r[3]; }
  else { o[1] = r[1]; o[2] = 0; o[3] = r[2]; }
}

// Device-side bounds check: a bad origin must not read or write out of bounds.
__device__ __forceinline__ bool origin_in_bounds(const Geometry& g, const int64_t o[4]) {
  return o[0] >= 0 && o[0] < g.N && o[1] >= 0 && o[1] + g.W[0] <= g.S[0] && o[2] >= 0 &&
         o[2] + g.W[1] <= g.S[1] && o[3] >= 0 && o[3] + g.W[2] <= g.S[2];
}

}  // namespace fastquilt::cuda
