// Row-wise weight sums of a full regular (qlty step-back) grid, shared by the CPU grid stitch
// and grid_weight_sum: which windows cover an output row (closed form,
// kernel_bodies/geometry.h), the sum of their weight rows in a fixed order, and the rows'
// classes (rows covered at the same offsets have the same sums).
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <type_traits>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/row_kernels.h"
#include "cpu/simd.h"

namespace fastquilt::cpu {

// The windows covering output row (n, z, y) along z and y, in the fixed (i0, i1) order:
// f(m0, a, b) with m0 the pair's first window along x and (a, b) the row inside its windows.
template <typename F>
inline void for_each_covering_pair(const GridGeometry& gg, int64_t n, int64_t z, int64_t y, F&& f) {
  const Geometry& g = gg.g;
  int64_t f0, l0, f1, l1;
  grid_cover(z, g.S[0], g.W[0], gg.step[0], &f0, &l0);
  grid_cover(y, g.S[1], g.W[1], gg.step[1], &f1, &l1);
  for (int64_t i0 = f0; i0 <= l0; ++i0)
    for (int64_t i1 = f1; i1 <= l1; ++i1)
      f(n * gg.num_windows + (i0 * gg.count[1] + i1) * gg.count[2],
        z - grid_start(i0, g.S[0], g.W[0], gg.step[0]),
        y - grid_start(i1, g.S[1], g.W[1], gg.step[1]));
}

// Weight sum of one output row: the weight rows of the P pairs covering it, each added at
// every x-window start, in a fixed order; 1 / sum (inverse_or_zero) when `inverse`.
template <typename acc_t>
FQ_ALWAYS_INLINE void row_weight_sum(acc_t* row, const acc_t* const* wrow, int P,
                                     const GridGeometry& gg, bool inverse) {
  const Geometry& g = gg.g;
  std::fill(row, row + g.S[2], acc_t(0));
  for (int k = 0; k < P; ++k)
    for (int64_t i2 = 0; i2 < gg.count[2]; ++i2)
      add_row(row + grid_start(i2, g.S[2], g.W[2], gg.step[2]), wrow[k], g.W[2]);
  if (inverse)  // while the row is in cache: no second pass
    for (int64_t x = 0; x < g.S[2]; ++x) row[x] = inverse_or_zero(row[x]);
}

// row[x] *= v[x] for a row of n voxels and its inverse weight-sum row v; fill where v[x] is 0
// (no weight covers the voxel) when the row's class has such gaps. (One code for every
// normalisation, so the same bits.)
template <typename scalar_t>
FQ_ALWAYS_INLINE void normalize_row(scalar_t* __restrict__ row, const scalar_t* __restrict__ v,
                                    int64_t n, bool gaps, scalar_t fill) {
  if (!gaps) {
    for (int64_t x = 0; x < n; ++x) row[x] *= v[x];
  } else {
    // v[x] == 0 ? fill : row[x] * v[x] as a blend of bits: GCC keeps a floating-point
    // compare or select in the loop as a branch (trapping math), and that loop is scalar
    using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;
    bits_t fill_bits;
    std::memcpy(&fill_bits, &fill, sizeof(scalar_t));
    for (int64_t x = 0; x < n; ++x) {
      const scalar_t product = row[x] * v[x];
      bits_t v_bits, product_bits;
      std::memcpy(&v_bits, v + x, sizeof(scalar_t));
      std::memcpy(&product_bits, &product, sizeof(scalar_t));
      const bits_t gap = bits_t(0) - bits_t((v_bits << 1) == 0);  // all ones where v is +-0
      const bits_t out = (fill_bits & gap) | (product_bits & ~gap);
      std::memcpy(row + x, &out, sizeof(scalar_t));
    }
  }
}

// Whether each class's inverse row (K rows of n) has a 0: a voxel no weight covers.
template <typename scalar_t>
std::vector<char> class_gaps(const scalar_t* inv, int64_t K, int64_t n) {
  std::vector<char> gaps(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k)
    gaps[k] = std::count(inv + k * n, inv + (k + 1) * n, scalar_t(0)) > 0;
  return gaps;
}

// Rows of one axis (z or y) grouped by the offsets, in order, of the windows covering them:
// rows with the same offsets have the same weight rows to sum. A regular grid has about
// step + a few such classes per axis, however long the axis.
struct AxisClasses {
  std::vector<int64_t> of;            // class of each position
  std::vector<int64_t> representative;  // first position of each class

  AxisClasses(int64_t S, int64_t W, int64_t step) : of(S) {
    std::map<std::vector<int64_t>, int64_t> ids;
    std::vector<int64_t> key;
    for (int64_t p = 0; p < S; ++p) {
      int64_t first, last;
      grid_cover(p, S, W, step, &first, &last);
      key.clear();
      for (int64_t i = first; i <= last; ++i) key.push_back(p - grid_start(i, S, W, step));
      const auto [it, added] = ids.emplace(key, static_cast<int64_t>(representative.size()));
      if (added) representative.push_back(p);
      of[p] = it->second;
    }
  }
  int64_t size() const { return static_cast<int64_t>(representative.size()); }
};

// Weight sum of row (z, y) into `row` (1 / sum when `inverse`): the stitch's own row code.
template <typename scalar_t>
inline void weight_sum_row(const GridGeometry& gg, const scalar_t* wp, int64_t z, int64_t y,
                           std::vector<const scalar_t*>& wrow, scalar_t* row, bool inverse) {
  wrow.clear();
  for_each_covering_pair(gg, 0, z, y, [&](int64_t, int64_t a, int64_t b) {
    wrow.push_back(wp + weight_offset(gg.g, a, b, int64_t(0)));
  });
  row_weight_sum(row, wrow.data(), static_cast<int>(wrow.size()), gg, inverse);
}

// The classes of the output rows (z, y): pairs of a z class and a y class.
struct GridRowClasses {
  AxisClasses z, y;
  explicit GridRowClasses(const GridGeometry& gg)
      : z(gg.g.S[0], gg.g.W[0], gg.step[0]), y(gg.g.S[1], gg.g.W[1], gg.step[1]) {}
  int64_t size() const { return z.size() * y.size(); }
  int64_t of(int64_t zz, int64_t yy) const { return z.of[zz] * y.size() + y.of[yy]; }
};

// The weight-sum row of each class (1 / sum when `inverse`), class k at rows + k * S2: the
// same code and order as summing every row, so the same bits.
template <typename scalar_t>
void class_weight_rows(const GridGeometry& gg, const GridRowClasses& c, const scalar_t* wp,
                       bool inverse, scalar_t* rows) {
  const int64_t S2 = gg.g.S[2];
  at::parallel_for(0, c.size(), 1, [&](int64_t begin, int64_t end) {
    std::vector<const scalar_t*> wrow;
    for (int64_t k = begin; k < end; ++k)
      weight_sum_row(gg, wp, c.z.representative[k / c.y.size()],
                     c.y.representative[k % c.y.size()], wrow, rows + k * S2, inverse);
  });
}

template <typename scalar_t>
std::vector<scalar_t> class_weight_rows(const GridGeometry& gg, const GridRowClasses& c,
                                        const scalar_t* wp, bool inverse) {
  std::vector<scalar_t> rows(static_cast<size_t>(c.size() * gg.g.S[2]));
  class_weight_rows(gg, c, wp, inverse, rows.data());
  return rows;
}

}  // namespace fastquilt::cpu
