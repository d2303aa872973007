// The shapes every kernel works on, and where a regular grid's windows lie: Geometry (an
// image batch and its windows), GridGeometry (a full qlty step-back grid of windows) and their
// constructors. Host-device and torch-free, like every header of kernel_bodies/: the CPU and
// CUDA kernels and the kernel-body test (tests/cpp/kernel_bodies_test.cpp) share one copy.
//
// Every kernel works in three spatial dimensions. A 2D image (N, C, Y, X) is viewed as
// (N, C, Y, 1, X) with windows (wy, 1, wx): the last axis stays the contiguous row axis and
// the first axis gives enough independent work to parallelise over.
#pragma once
#include <cstddef>
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

// Index arithmetic runs in an integer type I: int64_t in general; the CUDA kernels use
// int32_t when every offset of a launch fits (decided on the host), which halves the
// registers and instructions their index math needs. Offsets are nested products of
// non-negative terms bounded by the tensor's element count, so they fit I when it does.
template <typename T>
struct same_type { using type = T; };
template <typename T>
using same_t = typename same_type<T>::type;  // a parameter that does not take part in deduction

// a / b for a >= 0, b > 0. On the GPU a 64-bit division is a long software routine; indices
// almost always fit 32 bits, and then the hardware 32-bit path is taken (the branch is uniform
// across a warp). Host and device run the same code, so the CPU tests cover both paths.
template <typename I>
FQ_HD I div_index(I a, same_t<I> b) {
  if constexpr (sizeof(I) == 4) {
    return I(uint32_t(a) / uint32_t(b));
  } else {
    if (a <= 0xFFFFFFFFll && b <= 0xFFFFFFFFll) return I(uint32_t(a) / uint32_t(b));
    return a / b;
  }
}

// ---- qlty's step-back grid along one axis (size S, window w, step s; S >= w, s >= 1) ----

// Number of windows: ceil((S - w) / s) + 1; the last one ends exactly at S.
template <typename I>
FQ_HD I grid_count(I S, same_t<I> w, same_t<I> s) {
  return S <= w ? I(1) : div_index<I>(S - w + s - 1, s) + 1;
}

// Start of window i: i * s, stepped back to S - w so that no window leaves the image.
template <typename I>
FQ_HD I grid_start(I i, same_t<I> S, same_t<I> w, same_t<I> s) {
  const I a = i * s;
  return a < S - w ? a : S - w;
}

// Closed-form range [*first, *last] of the grid windows that cover position p (0 <= p < S).
// Starts are non-decreasing, so the covering windows are contiguous; the range is empty
// (*first > *last) only when s > w leaves p uncovered.
template <typename I>
FQ_HD void grid_cover(I p, same_t<I> S, same_t<I> w, same_t<I> s, I* first, I* last) {
  const I n = grid_count<I>(S, w, s);
  // first: smallest i with start_i + w > p. The last window (start S - w) always qualifies.
  const I f = p < w ? I(0) : div_index<I>(p - w, s) + 1;
  *first = f < n - 1 ? f : n - 1;
  // last: largest i with start_i <= p. Regular windows i <= n - 2 start below S - w.
  *last = p >= S - w ? n - 1 : div_index<I>(p, s);
}

// ---- constructors (host): sizes as the ops take them, `dims` = 2 or 3 spatial axes ----

// (N, C, *spatial) and window normalised to three spatial axes (2D -> (Y, 1, X)).
inline Geometry make_geometry(int64_t N, int64_t C, const int64_t* spatial,
                              const int64_t* window, size_t dims) {
  Geometry g{N, C, {1, 1, 1}, {1, 1, 1}};
  if (dims == 3) {
    for (int d = 0; d < 3; ++d) { g.S[d] = spatial[d]; g.W[d] = window[d]; }
  } else {  // 2D: the image rows become axis 0, axis 1 is a dummy of size 1
    g.S[0] = spatial[0]; g.W[0] = window[0];
    g.S[2] = spatial[1]; g.W[2] = window[1];
  }
  return g;
}

// The grid of (spatial, window, step) normalised to three axes; N is 0, left for the caller.
inline GridGeometry make_grid_geometry(int64_t C, const int64_t* spatial, const int64_t* window,
                                       const int64_t* step, size_t dims) {
  GridGeometry gg;
  gg.g = make_geometry(0, C, spatial, window, dims);
  if (dims == 3) { for (int d = 0; d < 3; ++d) gg.step[d] = step[d]; }
  else { gg.step[0] = step[0]; gg.step[1] = 1; gg.step[2] = step[1]; }
  gg.num_windows = 1;
  for (int d = 0; d < 3; ++d) {
    gg.count[d] = grid_count(gg.g.S[d], gg.g.W[d], gg.step[d]);
    gg.num_windows *= gg.count[d];
  }
  return gg;
}

}  // namespace fastquilt
