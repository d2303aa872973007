// The staging schedule of the grid stitch's fast path, an experiment that the shipped kernels
// do not use (benchmarks/experiments/stitch_variants.cu measures it against the shipped
// shapes): the next windows' chunks are copied into the thread's shared-memory slots with
// cp.async (async_copy.h) while it sums the current one, so the bytes in flight hold no
// registers. One window per step, Stages slots: Stages - 1 windows in flight.
#pragma once
#include "async_copy.h"
#include "kernel_bodies/stitch_grid_fast_path.h"

namespace fastquilt {

// Shared memory a block of `threads` needs for Stages slots of Shape's chunk per thread.
template <typename Shape, int Stages, typename scalar_t>
constexpr int stitch_stage_bytes(int threads) {
  return Stages * Shape::kVoxels * int(sizeof(scalar_t)) * threads;
}

// Output chunk i of a launch over cols, like stitch_grid_chunk_aligned (same sums, same
// order), staging each window's chunk through the thread's Stages slots: unit u (16 bytes) of
// slot s at stage[(s * units + u) * stage_stride] (the launcher interleaves the threads of a
// block, so that a warp's accesses are consecutive). Shape's batch and prefetch are not used.
template <typename I, typename scalar_t, typename acc_t, typename Shape, int Stages>
FQ_HD void stitch_grid_chunk_staged(const scalar_t* patches, const acc_t* weight,
                                    scalar_t* out, const GridGeometry& gg, acc_t fill,
                                    ColumnRange cols, I i, Vec16<scalar_t>* stage,
                                    int stage_stride) {
  static_assert(Stages >= 2, "staging needs a slot in flight and one being summed");
  constexpr int V = Shape::kVoxels;
  constexpr int kUnits = V / Vec16<scalar_t>::kSize, kInFlight = Stages - 1;
  static_assert(V % Vec16<scalar_t>::kSize == 0, "chunks are whole 16-byte vectors");
  const Geometry& g = gg.g;
  const ChunkPosition<I> pos = chunk_position<I>(g, cols, V, i);
  I f0, l0, f1, l1, f2, l2;
  grid_cover<I>(pos.z, I(g.S[0]), I(g.W[0]), I(gg.step[0]), &f0, &l0);
  grid_cover<I>(pos.y, I(g.S[1]), I(g.W[1]), I(gg.step[1]), &f1, &l1);
  grid_cover<I>(pos.x0, I(g.S[2]), I(g.W[2]), I(gg.step[2]), &f2, &l2);

  acc_t num[V], den[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k) num[k] = den[k] = acc_t(0);
  const I n0 = l0 - f0 + 1, n1 = l1 - f1 + 1, n2 = l2 - f2 + 1;
  const I windows = n0 > 0 && n1 > 0 && n2 > 0 ? n0 * n1 * n2 : I(0);
  WindowCursor<I> fetch{f0, f1, f2, n1, n2}, use = fetch;  // next to stage; next to sum
  int fetch_slot = 0, use_slot = 0;
  // Window t: staged kInFlight windows before it is summed, one commit group per window
  // (empty past the last window, so that every wait counts the same groups).
  for (I t = 0; t < windows + kInFlight; ++t) {
    if (t < windows) {
      const scalar_t* src = patches + chunk_in_window<I>(gg, pos, fetch).patch;
      FQ_UNROLL
      for (int u = 0; u < kUnits; ++u)
        copy16_async(stage + (fetch_slot * kUnits + u) * stage_stride,
                     src + u * Vec16<scalar_t>::kSize);
      fetch.next();
      fetch_slot = fetch_slot + 1 == Stages ? 0 : fetch_slot + 1;
    }
    async_commit();
    if (t < kInFlight) continue;  // the first windows are only staged
    const I woff = chunk_in_window<I>(gg, pos, use).weight;
    use.next();
    acc_t w[V];
    load_weights(weight, woff, w);  // L1/L2 hits, issued before the wait: they overlap it
    async_wait_prior<kInFlight>();
    scalar_t p[V];
    FQ_UNROLL
    for (int u = 0; u < kUnits; ++u) {
      const Vec16<scalar_t> v = stage[(use_slot * kUnits + u) * stage_stride];
      FQ_UNROLL
      for (int k = 0; k < Vec16<scalar_t>::kSize; ++k) p[u * Vec16<scalar_t>::kSize + k] = v.v[k];
    }
    use_slot = use_slot + 1 == Stages ? 0 : use_slot + 1;
    add_window(num, den, p, w);
  }
  scalar_t r[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k)
    r[k] = static_cast<scalar_t>(den[k] > acc_t(0) ? num[k] / den[k] : fill);
  store_vec(out + image_offset<I>(g, pos.n, pos.c, pos.z, pos.y, pos.x0), r);
}

}  // namespace fastquilt
