// Work unit of the CUDA deterministic grid stitch, general body: V consecutive output voxels of
// one row (16 bytes of output), on any grid; and what it shares with the fast path
// (stitch_grid_fast_path.h). Host-device code, run for every thread of a launch by the CPU
// tests (tests/cpp/kernel_bodies_test.cpp).
//
// Why chunks: a chunk pays the covering-window search and the offset math once for V voxels
// instead of once per voxel, reads each covering window's part of the chunk with one 16-byte
// load (when aligned), issues the loads of several windows before summing them and keeps the
// V sums in registers. The order of the sums per voxel is fixed (windows by increasing
// (i0, i1, i2)), so the result is bit-identical run to run.
#pragma once
#include "kernel_bodies/index_math.h"
#include "kernel_bodies/kernel_traits.h"
#include "kernel_bodies/vec_access.h"

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

// Output columns [begin, end) of every row (N, C, S0, S1), cut into chunks of V voxels (the
// last one of a row may be shorter): the part of the output one launch of a stitch body covers.
struct ColumnRange {
  int64_t begin, end;
};

FQ_HD int64_t stitch_chunk_count(const Geometry& g, ColumnRange cols, int V) {
  return g.N * g.C * g.S[0] * g.S[1] * ((cols.end - cols.begin + V - 1) / V);
}

// Position of chunk i of a launch over cols: image n, channel c, voxel (z, y, x0..x0+V).
template <typename I>
struct ChunkPosition {
  I n, c, z, y, x0;
};

template <typename I>
FQ_HD ChunkPosition<I> chunk_position(const Geometry& g, ColumnRange cols, int V, I i) {
  const I S0 = I(g.S[0]), S1 = I(g.S[1]);
  const I per_row = I((cols.end - cols.begin + V - 1) / V);
  const I row = div_index<I>(i, per_row);
  const I t = div_index<I>(row, S1);
  const I u = div_index<I>(t, S0);
  const I n = div_index<I>(u, I(g.C));
  return {n, u - n * I(g.C), t - u * S0, row - t * S1, I(cols.begin) + (i - row * per_row) * V};
}

// The grid windows covering a chunk, a box of n0 x n1 x n2 windows from window (f0, f1, f2),
// walked in lexicographic order (i0, i1, i2): the order of the sums, the same in every body.
template <typename I>
struct WindowCursor {
  I f0, f1, f2;  // first covering window along each axis
  I n1, n2;      // windows of the box along axes 1 and 2
  I j0 = 0, j1 = 0, j2 = 0;  // the current window's position in the box
  FQ_HD void next() {
    if (++j2 == n2) {
      j2 = 0;
      if (++j1 == n1) { j1 = 0; ++j0; }
    }
  }
};

// Where the chunk at p lies in the cursor's current window.
template <typename I>
struct ChunkInWindow {
  I patch, weight;  // offsets of the chunk start (may lie left of the window: xx < 0)
  I xx;             // chunk start in window coordinates
};

template <typename I>
FQ_HD ChunkInWindow<I> chunk_in_window(const GridGeometry& gg, const ChunkPosition<I>& p,
                                       const WindowCursor<I>& w) {
  const Geometry& g = gg.g;
  const I i0 = w.f0 + w.j0, i1 = w.f1 + w.j1, i2 = w.f2 + w.j2;
  const I W0 = I(g.W[0]), W1 = I(g.W[1]), W2 = I(g.W[2]);
  const I a = p.z - grid_start<I>(i0, I(g.S[0]), W0, I(gg.step[0]));
  const I b = p.y - grid_start<I>(i1, I(g.S[1]), W1, I(gg.step[1]));
  const I xx = p.x0 - grid_start<I>(i2, I(g.S[2]), W2, I(gg.step[2]));
  const I m0 = p.n * I(gg.num_windows) + (i0 * I(gg.count[1]) + i1) * I(gg.count[2]);
  const I win_stride = I(g.C) * W0 * W1 * W2;  // between consecutive windows along x
  return {patch_offset<I>(g, m0, p.c, a, b, xx) + i2 * win_stride, weight_offset<I>(g, a, b, xx),
          xx};
}

// num += w * p, den += w over one window's chunk.
template <int V, typename scalar_t, typename acc_t>
FQ_HD void add_window(acc_t (&num)[V], acc_t (&den)[V], const scalar_t (&p)[V],
                      const acc_t (&w)[V]) {
  FQ_UNROLL
  for (int k = 0; k < V; ++k) {
    num[k] += static_cast<acc_t>(p[k]) * w[k];
    den[k] += w[k];
  }
}

// w = the weights of a chunk at weight + offset (weight == nullptr: ones).
template <int V, typename acc_t, typename I>
FQ_HD void load_weights(const acc_t* weight, I offset, acc_t (&w)[V]) {
  if (weight != nullptr) {
    load_vec(weight + offset, w);
  } else {
    FQ_UNROLL
    for (int k = 0; k < V; ++k) w[k] = acc_t(1);
  }
}

// Output chunk i (of Vec16<scalar_t>::kSize voxels) of a launch over cols: out = sum(w * p) /
// sum(w) over the grid windows covering each voxel (found in closed form per axis by
// grid_cover), fill where the sum of weights is 0. weight == nullptr: every window weighs 1.
// I: index type (int32_t when the patches and the output have fewer than 2^31 elements).
template <typename I, typename scalar_t, typename acc_t>
FQ_HD void stitch_grid_chunk(const scalar_t* patches, const acc_t* weight, scalar_t* out,
                             const GridGeometry& gg, acc_t fill, StitchVectorAccess vec,
                             ColumnRange cols, I i) {
  constexpr int V = Vec16<scalar_t>::kSize;
  const Geometry& g = gg.g;
  const I S2 = I(g.S[2]), W2 = I(g.W[2]), s2 = I(gg.step[2]);
  const ChunkPosition<I> pos = chunk_position<I>(g, cols, V, i);
  const int len = int(I(cols.end) - pos.x0 < V ? I(cols.end) - pos.x0 : V);

  I f0, l0, f1, l1, f2, l2, unused;
  grid_cover<I>(pos.z, I(g.S[0]), I(g.W[0]), I(gg.step[0]), &f0, &l0);
  grid_cover<I>(pos.y, I(g.S[1]), I(g.W[1]), I(gg.step[1]), &f1, &l1);
  // Windows touching the chunk: from the first covering x0 to the last covering its end.
  grid_cover<I>(pos.x0, S2, W2, s2, &f2, &unused);
  grid_cover<I>(pos.x0 + len - 1, S2, W2, s2, &unused, &l2);

  acc_t num[V], den[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k) num[k] = den[k] = acc_t(0);
  // The covering windows (i0, i1, i2), in lexicographic order, in batches of kBatch: a batch
  // issues all its patch loads before it sums them, so a thread has kBatch loads in flight.
  constexpr int kBatch = kStitchBatch;
  const I n0 = l0 - f0 + 1, n1 = l1 - f1 + 1, n2 = l2 - f2 + 1;
  const I windows = n0 > 0 && n1 > 0 && n2 > 0 ? n0 * n1 * n2 : I(0);
  WindowCursor<I> next{f0, f1, f2, n1, n2};  // the next window
  for (I t0 = 0; t0 < windows; t0 += kBatch) {
    I po[kBatch];      // patch offset of the chunk start (window coordinate xx, may be < 0)
    I wo[kBatch];      // weight offset of the same element (weight != nullptr)
    I xx[kBatch];      // chunk start in window coordinates
    bool fast[kBatch];  // whole aligned vector inside the window: loaded up front
    Vec16<scalar_t> pv[kBatch];
    FQ_UNROLL
    for (int j = 0; j < kBatch; ++j) {
      fast[j] = false;
      po[j] = wo[j] = xx[j] = 0;
      if (t0 + j >= windows) continue;
      const ChunkInWindow<I> at = chunk_in_window<I>(gg, pos, next);
      next.next();
      po[j] = at.patch;
      wo[j] = at.weight;
      xx[j] = at.xx;
      // (xx + V <= W2 implies len == V: windows lie inside the image)
      fast[j] = vec.load && xx[j] >= 0 && xx[j] + V <= W2 && xx[j] % V == 0;
      if (fast[j]) pv[j] = load16(patches + po[j]);
    }
    FQ_UNROLL
    for (int j = 0; j < kBatch; ++j) {
      if (t0 + j >= windows) continue;
      if (fast[j]) {
        acc_t wv[V];
        load_weights(weight, wo[j], wv);
        add_window(num, den, pv[j].v, wv);
      } else {  // chunk straddles the window's edge, or unaligned rows
        // Fixed trip count, so that num/den stay in registers (a dynamic index would put
        // them in local memory on the GPU).
        FQ_UNROLL
        for (int k = 0; k < V; ++k) {
          const I xk = xx[j] + k;
          if (k >= len || xk < 0 || xk >= W2) continue;
          const acc_t wk = weight == nullptr ? acc_t(1) : weight[wo[j] + k];
          num[k] += static_cast<acc_t>(patches[po[j] + k]) * wk;
          den[k] += wk;
        }
      }
    }
  }
  scalar_t r[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k)
    r[k] = static_cast<scalar_t>(den[k] > acc_t(0) ? num[k] / den[k] : fill);
  scalar_t* o = out + image_offset<I>(g, pos.n, pos.c, pos.z, pos.y, pos.x0);
  if (vec.store && len == V) {
    store_vec(o, r);
  } else {
    FQ_UNROLL
    for (int k = 0; k < V; ++k)
      if (k < len) o[k] = r[k];
  }
}

}  // namespace fastquilt
