// Index math shared by the CPU (.cpp) and CUDA (.cu) kernels: one copy, so the CPU tests
// exercise the exact code the GPU runs. Offsets into the contiguous tensors of a Geometry
// (geometry.h), origin rows, and the grid's per-voxel weight sums.
#pragma once
#include <cfloat>
#include <cstdint>

#include "kernel_bodies/geometry.h"

namespace fastquilt {

// Offset of element (n, c, z, y, x) in a contiguous (N, C, S0, S1, S2) tensor.
template <typename I>
FQ_HD I image_offset(const Geometry& g, I n, same_t<I> c, same_t<I> z, same_t<I> y,
                     same_t<I> x) {
  return (((n * I(g.C) + c) * I(g.S[0]) + z) * I(g.S[1]) + y) * I(g.S[2]) + x;
}

// Offset of element (m, c, a, b, x) in contiguous patches (M, C, W0, W1, W2).
template <typename I>
FQ_HD I patch_offset(const Geometry& g, I m, same_t<I> c, same_t<I> a, same_t<I> b,
                     same_t<I> x) {
  return (((m * I(g.C) + c) * I(g.W[0]) + a) * I(g.W[1]) + b) * I(g.W[2]) + x;
}

// Offset of element (a, b, x) in a contiguous weight (W0, W1, W2).
template <typename I>
FQ_HD I weight_offset(const Geometry& g, I a, same_t<I> b, same_t<I> x) {
  return (a * I(g.W[1]) + b) * I(g.W[2]) + x;
}

// Origin row [n, start_0, ..., start_{D-1}] (D = 2 or 3) as [n, o0, o1, o2] in the normalised
// 3-axis geometry (2D: o1 = 0).
FQ_HD void normalised_origin(const int64_t* row, int64_t D, int64_t out[4]) {
  out[0] = row[0];
  out[1] = row[1];
  out[2] = D == 3 ? row[2] : 0;
  out[3] = row[D];
}

// 1 / s for a weight sum s > 0 (s clamped to the smallest normal number, so the result stays
// finite), 0 where no weight covers the voxel (s <= 0): the normalisation of a weighted mean.
template <typename T>
FQ_HD T inverse_or_zero(T s) {
  const T tiny = sizeof(T) == 4 ? T(FLT_MIN) : T(DBL_MIN);
  return s > T(0) ? T(1) / (s > tiny ? s : tiny) : T(0);
}

// Sum over the grid windows covering voxel (z, y, x) of the window weight at that voxel, in a
// fixed order (weight == nullptr: window count): the body of the CUDA grid_weight_sum (the
// CPU kernel sums by rows), run on the CPU by tests/cpp/kernel_bodies_test.cpp.
template <typename acc_t, typename I = int64_t>
FQ_HD acc_t grid_voxel_weight_sum(const Geometry& g, const int64_t step[3], const acc_t* weight,
                                  I z, same_t<I> y, same_t<I> x) {
  const I S0 = I(g.S[0]), S1 = I(g.S[1]), S2 = I(g.S[2]);
  const I W0 = I(g.W[0]), W1 = I(g.W[1]), W2 = I(g.W[2]);
  const I s0 = I(step[0]), s1 = I(step[1]), s2 = I(step[2]);
  I f0, l0, f1, l1, f2, l2;
  grid_cover<I>(z, S0, W0, s0, &f0, &l0);
  grid_cover<I>(y, S1, W1, s1, &f1, &l1);
  grid_cover<I>(x, S2, W2, s2, &f2, &l2);
  acc_t sum = 0;
  for (I i0 = f0; i0 <= l0; ++i0) {
    const I a = z - grid_start<I>(i0, S0, W0, s0);
    for (I i1 = f1; i1 <= l1; ++i1) {
      const I b = y - grid_start<I>(i1, S1, W1, s1);
      for (I i2 = f2; i2 <= l2; ++i2)
        sum += weight == nullptr
                   ? acc_t(1)
                   : weight[weight_offset<I>(g, a, b, x - grid_start<I>(i2, S2, W2, s2))];
    }
  }
  return sum;
}

// Voxel i of every image and channel of acc (N, C, *S) scaled by 1 / the grid's weight sum at
// that voxel (grid_voxel_weight_sum, so the same bits as grid_weight_sum), fill where that is
// 0: the body of the CUDA grid_normalize_, run on the CPU by tests/cpp/kernel_bodies_test.cpp.
template <typename acc_t, typename I = int64_t>
FQ_HD void grid_normalize_voxel(acc_t* acc, const acc_t* weight, const GridGeometry& gg,
                                int64_t i, acc_t fill) {
  const Geometry& g = gg.g;
  const int64_t vol = g.S[0] * g.S[1] * g.S[2];
  const I t = div_index<I>(I(i), I(g.S[2]));
  const I z = div_index<I>(t, I(g.S[1]));
  const acc_t inv = inverse_or_zero(grid_voxel_weight_sum<acc_t, I>(
      g, gg.step, weight, z, t - z * I(g.S[1]), I(i) - t * I(g.S[2])));
  for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
    acc_t& v = acc[nc * vol + i];
    v = inv == acc_t(0) ? fill : v * inv;
  }
}

}  // namespace fastquilt
