// The CUDA grid stitch's fast path: chunk bodies for grids whose window rows and window
// starts along x are whole chunks (and buffers 16-byte aligned), where every covering window
// covers a chunk whole: no edge cases, no per-window test, longer chunks per thread; and the
// launcher's choice among the shapes of kernel_traits.h (StitchAlignedShapes). Host-device
// code, run for every thread of a launch by the CPU tests (tests/cpp/kernel_bodies_test.cpp),
// and bit-identical to the general body (stitch_grid_chunk.h): the same sums in the same order.
#pragma once
#include "kernel_bodies/kernel_traits.h"
#include "kernel_bodies/stitch_grid_chunk.h"

namespace fastquilt {

// Columns of the aligned fast path: [0, end), where each chunk lies under windows that all
// cover it whole. It needs 16-byte-aligned buffers, window rows and steps that are whole
// chunks and image rows of whole 16-byte vectors (aligned stores); when the last window,
// stepped back to S2 - W2, is off the chunk grid, only the columns left of it qualify (the
// general body takes the rest: a second launch). 0: no fast path. Decided on the host.
template <typename scalar_t, typename Shape>
inline int64_t stitch_aligned_columns_end(const void* patches, const void* weight,
                                          const void* out, const GridGeometry& gg) {
  constexpr int64_t V = Shape::kVoxels;
  const int64_t S2 = gg.g.S[2], W2 = gg.g.W[2];
  const bool ok = aligned16(patches) && (weight == nullptr || aligned16(weight)) &&
                  aligned16(out) && S2 >= W2 && W2 % V == 0 && gg.step[2] % V == 0 &&
                  S2 % Vec16<scalar_t>::kSize == 0;
  return !ok ? 0 : (S2 - W2) % V == 0 ? S2 : (S2 - W2) / V * V;
}

// The launcher's pick among StitchAlignedShapes: the first shape with a fast path on this grid
// and these buffers. shape: its index in the list (-1: none, the general body takes every
// column); end: its columns' end (stitch_aligned_columns_end).
struct AlignedChoice {
  int shape;
  int64_t end;
};

template <typename scalar_t, typename... Shapes>
inline AlignedChoice choose_aligned_shape(ShapeList<Shapes...>, const void* patches,
                                          const void* weight, const void* out,
                                          const GridGeometry& gg) {
  AlignedChoice c{-1, 0};
  int k = 0;
  ((c.shape < 0 && (c.end = stitch_aligned_columns_end<scalar_t, Shapes>(patches, weight, out,
                                                                          gg)) > 0
        ? void(c.shape = k)
        : void(),
    ++k),
   ...);
  return c;
}

// Calls f(Shape()) with the index-th shape of the list (host code: the launch of that shape).
template <typename F, typename... Shapes>
inline void with_shape(ShapeList<Shapes...>, int index, F&& f) {
  int k = 0;
  ((k++ == index ? f(Shapes()) : void()), ...);
}

// Output chunk i (of Shape::kVoxels voxels) of a launch over the columns
// [0, stitch_aligned_columns_end<scalar_t, Shape>()): the same sums, in the same order, as
// stitch_grid_chunk, so both paths give bit-identical results.
template <typename I, typename scalar_t, typename acc_t, typename Shape>
FQ_HD void stitch_grid_chunk_aligned(const scalar_t* patches, const acc_t* weight,
                                     scalar_t* out, const GridGeometry& gg, acc_t fill,
                                     ColumnRange cols, I i) {
  constexpr int V = Shape::kVoxels, kBatch = Shape::kBatch, kAhead = Shape::kPrefetch;
  constexpr int kWeights = Shape::kWeightsWithPatches ? kBatch : 1;
  static_assert(V % Vec16<scalar_t>::kSize == 0, "chunks are whole 16-byte vectors");
  const Geometry& g = gg.g;
  const ChunkPosition<I> pos = chunk_position<I>(g, cols, V, i);
  I f0, l0, f1, l1, f2, l2;
  grid_cover<I>(pos.z, I(g.S[0]), I(g.W[0]), I(gg.step[0]), &f0, &l0);
  grid_cover<I>(pos.y, I(g.S[1]), I(g.W[1]), I(gg.step[1]), &f1, &l1);
  // the windows covering x0 cover the whole chunk
  grid_cover<I>(pos.x0, I(g.S[2]), I(g.W[2]), I(gg.step[2]), &f2, &l2);

  acc_t num[V], den[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k) num[k] = den[k] = acc_t(0);
  const I n0 = l0 - f0 + 1, n1 = l1 - f1 + 1, n2 = l2 - f2 + 1;
  const I windows = n0 > 0 && n1 > 0 && n2 > 0 ? n0 * n1 * n2 : I(0);
  WindowCursor<I> next{f0, f1, f2, n1, n2}, ahead = next;  // next to load; to prefetch
  if constexpr (kAhead > 0) {
    // Windows 1 .. kAhead - 1 now; window t + kAhead when window t is loaded. Prefetches
    // are hints into L2: they put patch bytes in flight without holding registers.
    for (int d = 0; d < kAhead; ++d, ahead.next())
      if (d > 0 && d < windows)
        prefetch_l2(patches + chunk_in_window<I>(gg, pos, ahead).patch, V * sizeof(scalar_t));
  }
  for (I t0 = 0; t0 < windows; t0 += kBatch) {
    scalar_t pv[kBatch][V];
    acc_t wv[kWeights][V];
    I wo[kBatch];
    FQ_UNROLL
    for (int j = 0; j < kBatch; ++j) {
      wo[j] = 0;
      if (t0 + j >= windows) continue;
      const ChunkInWindow<I> at = chunk_in_window<I>(gg, pos, next);
      next.next();
      if constexpr (kAhead > 0) {
        if (t0 + j + kAhead < windows)
          prefetch_l2(patches + chunk_in_window<I>(gg, pos, ahead).patch, V * sizeof(scalar_t));
        ahead.next();
      }
      load_vec(patches + at.patch, pv[j]);
      wo[j] = at.weight;
      if (Shape::kWeightsWithPatches) load_weights(weight, wo[j], wv[j % kWeights]);
    }
    FQ_UNROLL
    for (int j = 0; j < kBatch; ++j) {
      if (t0 + j >= windows) continue;
      if (!Shape::kWeightsWithPatches) load_weights(weight, wo[j], wv[0]);
      add_window(num, den, pv[j], wv[j % kWeights]);
    }
  }
  scalar_t r[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k)
    r[k] = static_cast<scalar_t>(den[k] > acc_t(0) ? num[k] / den[k] : fill);
  store_vec(out + image_offset<I>(g, pos.n, pos.c, pos.z, pos.y, pos.x0), r);
}

}  // namespace fastquilt
