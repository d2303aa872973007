// Work unit of the CUDA deterministic grid stitch: V consecutive output voxels of one row
// (16 bytes of output). Host-device code, run for every thread of a launch by the CPU tests
// (tests/cpp/kernel_bodies_test.cpp).
//
// Why chunks: one thread per voxel paid the covering-window search and the offset math per
// voxel and issued 4-byte loads one after another. A chunk pays them once for V voxels,
// reads each covering window's part of the chunk with one 16-byte load (when aligned) and
// keeps the V sums in registers; the order of the sums per voxel is still fixed
// (windows by increasing (i0, i1, i2)), so the result is bit-identical run to run.
#pragma once
#include "fastquilt/index_math.h"
#include "fastquilt/vec_access.h"

namespace fastquilt {

// Which 16-byte vector accesses the stitch may use; decided once on the host.
struct StitchVectorAccess {
  bool load;   // patches (and weight) aligned and window rows a whole number of vectors
  bool store;  // output aligned and image rows a whole number of vectors
};

template <typename scalar_t>
inline StitchVectorAccess stitch_vector_access(const void* patches, const void* weight,
                                               const void* out, const Geometry& g) {
  constexpr int V = Vec16<scalar_t>::kSize;
  return {aligned16(patches) && (weight == nullptr || aligned16(weight)) && g.W[2] % V == 0,
          aligned16(out) && g.S[2] % V == 0};
}

// Number of chunks: every output row (N, C, S0, S1) cut into ceil(S2 / V) chunks.
template <typename scalar_t>
FQ_HD int64_t stitch_chunk_count(const Geometry& g) {
  constexpr int V = Vec16<scalar_t>::kSize;
  return g.N * g.C * g.S[0] * g.S[1] * ((g.S[2] + V - 1) / V);
}

// Output chunk i: out = sum(w * p) / sum(w) over the grid windows covering each voxel
// (found in closed form per axis by grid_cover), fill where the sum of weights is 0.
// weight == nullptr: every window weighs 1.
template <typename scalar_t, typename acc_t>
FQ_HD void stitch_grid_chunk(const scalar_t* patches, const acc_t* weight, scalar_t* out,
                             const GridGeometry& gg, acc_t fill, StitchVectorAccess vec,
                             int64_t i) {
  constexpr int V = Vec16<scalar_t>::kSize;
  const Geometry& g = gg.g;
  const int64_t per_row = (g.S[2] + V - 1) / V;
  const int64_t row = div_index(i, per_row);
  const int64_t x0 = (i - row * per_row) * V;
  const int len = int(g.S[2] - x0 < V ? g.S[2] - x0 : V);
  const int64_t t = div_index(row, g.S[1]);
  const int64_t y = row - t * g.S[1];
  const int64_t u = div_index(t, g.S[0]);
  const int64_t z = t - u * g.S[0];
  const int64_t n = div_index(u, g.C);
  const int64_t c = u - n * g.C;

  int64_t f0, l0, f1, l1, f2, l2, unused;
  grid_cover(z, g.S[0], g.W[0], gg.step[0], &f0, &l0);
  grid_cover(y, g.S[1], g.W[1], gg.step[1], &f1, &l1);
  // Windows touching the chunk: from the first covering x0 to the last covering its end.
  grid_cover(x0, g.S[2], g.W[2], gg.step[2], &f2, &unused);
  grid_cover(x0 + len - 1, g.S[2], g.W[2], gg.step[2], &unused, &l2);

  const int64_t win_stride = g.C * g.W[0] * g.W[1] * g.W[2];  // consecutive windows along x
  acc_t num[V], den[V];
FQ_UNROLL
  for (int k = 0; k < V; ++k) num[k] = den[k] = acc_t(0);
  for (int64_t i0 = f0; i0 <= l0; ++i0) {
    const int64_t a = z - grid_start(i0, g.S[0], g.W[0], gg.step[0]);
    for (int64_t i1 = f1; i1 <= l1; ++i1) {
      const int64_t b = y - grid_start(i1, g.S[1], g.W[1], gg.step[1]);
      const int64_t m0 = n * gg.num_windows + (i0 * gg.count[1] + i1) * gg.count[2];
      const scalar_t* prow = patches + patch_offset(g, m0, c, a, b, 0);
      const acc_t* wrow = weight == nullptr ? nullptr : weight + weight_offset(g, a, b, 0);
      for (int64_t i2 = f2; i2 <= l2; ++i2) {
        const int64_t xx = x0 - grid_start(i2, g.S[2], g.W[2], gg.step[2]);  // may be < 0
        const scalar_t* p = prow + i2 * win_stride;
        if (vec.load && len == V && xx >= 0 && xx + V <= g.W[2] && xx % V == 0) {
          scalar_t pv[V];
          acc_t wv[V];
          load_vec(p + xx, pv);
          if (wrow != nullptr) {
            load_vec(wrow + xx, wv);
          } else {
FQ_UNROLL
            for (int k = 0; k < V; ++k) wv[k] = acc_t(1);
          }
FQ_UNROLL
          for (int k = 0; k < V; ++k) {
            num[k] += static_cast<acc_t>(pv[k]) * wv[k];
            den[k] += wv[k];
          }
        } else {  // chunk straddles the window's edge, or unaligned rows
          // Fixed trip count, so that num/den stay in registers (a dynamic index would put
          // them in local memory on the GPU).
FQ_UNROLL
          for (int k = 0; k < V; ++k) {
            const int64_t xk = xx + k;
            if (k >= len || xk < 0 || xk >= g.W[2]) continue;
            const acc_t w = wrow == nullptr ? acc_t(1) : wrow[xk];
            num[k] += static_cast<acc_t>(p[xk]) * w;
            den[k] += w;
          }
        }
      }
    }
  }
  scalar_t r[V];
FQ_UNROLL
  for (int k = 0; k < V; ++k) r[k] = static_cast<scalar_t>(den[k] > acc_t(0) ? num[k] / den[k] : fill);
  scalar_t* o = out + image_offset(g, n, c, z, y, x0);
  if (vec.store && len == V) {
    store_vec(o, r);
  } else {
FQ_UNROLL
    for (int k = 0; k < V; ++k)
      if (k < len) o[k] = r[k];
  }
}

}  // namespace fastquilt
