// Index math shared by the CPU (.cpp) and CUDA (.cu) kernels: one copy, so the CPU tests
// exercise the exact code the GPU runs.
//
// Every kernel works in three spatial dimensions. A 2D image (N, C, Y, X) is viewed as
// (N, C, Y, 1, X) with windows (wy, 1, wx): the last axis stays the contiguous row axis and
// the first axis gives enough independent work to parallelise over.
#pragma once
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FQ_HD __host__ __device__ __forceinline__
#define FQ_UNROLL _Pragma("unroll")
#else
#define FQ_HD inline
#define FQ_UNROLL
#endif

namespace fastquilt {

// Shape of an image batch and of its windows, normalised to three spatial axes.
struct Geometry {
  int64_t N, C;      // images, channels
  int64_t S[3];      // spatial size
  int64_t W[3];      // window size
};

// A regular (qlty step-back) grid of windows over a Geometry.
struct GridGeometry {
  Geometry g;
  int64_t step[3];
  int64_t count[3];     // windows per normalised axis
  int64_t num_windows;  // per image
};

// a / b for a >= 0, b > 0. On the GPU a 64-bit division is a ~70-instruction software
// routine; the kernels divide indices that almost always fit 32 bits, so they take the
// hardware 32-bit path then (the branch is uniform across a warp).
FQ_HD int64_t div_index(int64_t a, int64_t b) {
#if defined(__CUDA_ARCH__)
  if (a <= 0xFFFFFFFFll && b <= 0xFFFFFFFFll) return int64_t(uint32_t(a) / uint32_t(b));
#endif
  return a / b;
}

// Offset of element (n, c, z, y, x) in a contiguous (N, C, S0, S1, S2) tensor.
FQ_HD int64_t image_offset(const Geometry& g, int64_t n, int64_t c, int64_t z, int64_t y,
                           int64_t x) {
  return (((n * g.C + c) * g.S[0] + z) * g.S[1] + y) * g.S[2] + x;
}

// Offset of element (m, c, a, b, x) in contiguous patches (M, C, W0, W1, W2).
FQ_HD int64_t patch_offset(const Geometry& g, int64_t m, int64_t c, int64_t a, int64_t b,
                           int64_t x) {
  return (((m * g.C + c) * g.W[0] + a) * g.W[1] + b) * g.W[2] + x;
}

// Offset of element (a, b, x) in a contiguous weight (W0, W1, W2).
FQ_HD int64_t weight_offset(const Geometry& g, int64_t a, int64_t b, int64_t x) {
  return (a * g.W[1] + b) * g.W[2] + x;
}

// ---- qlty's step-back grid along one axis (size S, window w, step s; S >= w, s >= 1) ----

// Number of windows: ceil((S - w) / s) + 1; the last one ends exactly at S.
FQ_HD int64_t grid_count(int64_t S, int64_t w, int64_t s) {
  return S <= w ? 1 : div_index(S - w + s - 1, s) + 1;
}

// Start of window i: i * s, stepped back to S - w so that no window leaves the image.
FQ_HD int64_t grid_start(int64_t i, int64_t S, int64_t w, int64_t s) {
  const int64_t a = i * s;
  return a < S - w ? a : S - w;
}

// Closed-form range [*first, *last] of the grid windows that cover position p (0 <= p < S).
// Starts are non-decreasing, so the covering windows are contiguous; the range is empty
// (*first > *last) only when s > w leaves p uncovered.
FQ_HD void grid_cover(int64_t p, int64_t S, int64_t w, int64_t s, int64_t* first,
                      int64_t* last) {
  const int64_t n = grid_count(S, w, s);
  // first: smallest i with start_i + w > p. The last window (start S - w) always qualifies.
  int64_t f = p < w ? 0 : div_index(p - w, s) + 1;
  *first = f < n - 1 ? f : n - 1;
  // last: largest i with start_i <= p. Regular windows i <= n - 2 start below S - w.
  *last = p >= S - w ? n - 1 : div_index(p, s);
}

// Sum over the grid windows covering voxel (z, y, x) of the window weight at that voxel, in a
// fixed order (weight == nullptr: window count). Used by grid_weight_sum on CPU and GPU.
template <typename acc_t>
FQ_HD acc_t grid_voxel_weight_sum(const Geometry& g, const int64_t step[3], const acc_t* weight,
                                  int64_t z, int64_t y, int64_t x) {
  int64_t f0, l0, f1, l1, f2, l2;
  grid_cover(z, g.S[0], g.W[0], step[0], &f0, &l0);
  grid_cover(y, g.S[1], g.W[1], step[1], &f1, &l1);
  grid_cover(x, g.S[2], g.W[2], step[2], &f2, &l2);
  acc_t sum = 0;
  for (int64_t i0 = f0; i0 <= l0; ++i0) {
    const int64_t a = z - grid_start(i0, g.S[0], g.W[0], step[0]);
    for (int64_t i1 = f1; i1 <= l1; ++i1) {
      const int64_t b = y - grid_start(i1, g.S[1], g.W[1], step[1]);
      for (int64_t i2 = f2; i2 <= l2; ++i2)
        sum += weight == nullptr
                   ? acc_t(1)
                   : weight[weight_offset(g, a, b, x - grid_start(i2, g.S[2], g.W[2], step[2]))];
    }
  }
  return sum;
}

}  // namespace fastquilt
