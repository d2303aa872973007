// The CUDA grid stitch's fast path: chunk bodies for grids whose window rows and window
// starts along x are whole chunks (and buffers 16-byte aligned), where every covering window
// covers a chunk whole: no edge cases, no per-window test, longer chunks per thread. Its shapes
// and load schedules, and the launcher's choice among them. Host-device code, run for every
// thread of a launch by the CPU tests (tests/cpp/kernel_bodies_test.cpp), and bit-identical to
// the general body (stitch_grid_chunk.h): the same sums in the same order.
#pragma once
#include <type_traits>

#include "fastquilt/async_copy.h"
#include "fastquilt/stitch_grid_chunk.h"

namespace fastquilt {

// Chunk shape and load schedule of the fast path. The kernel is bound by the patch bytes it
// has in flight (one DRAM round trip per batch of windows), which registers limit: more
// voxels or windows per thread need more registers, so fewer threads fit on an SM. Two
// schedules put bytes in flight without registers: L2 prefetches of the windows ahead, and
// staging (the next windows' chunks copied into the thread's shared-memory slots with
// cp.async while it sums the current one; one window per batch, no prefetch).
template <int Voxels, int Batch, bool WeightsWithPatches, int Prefetch, int MinBlocks,
          int Stages = 0>
struct StitchChunkShape {
  static constexpr int kVoxels = Voxels;  // output voxels per thread: whole 16-byte vectors
  static constexpr int kBatch = Batch;    // windows whose patch loads are issued together
  static constexpr bool kWeightsWithPatches = WeightsWithPatches;  // their weights as well
  static constexpr int kPrefetch = Prefetch;  // L2 prefetch of the window this far ahead (0: off)
  static constexpr int kMinBlocks = MinBlocks;  // blocks of 256 per SM: caps the registers
  static constexpr int kStages = Stages;  // staging slots per thread (0: off): Stages - 1 ahead
  static_assert(Stages == 0 || (Stages >= 2 && Batch == 1 && Prefetch == 0),
                "staging takes one window per batch and no L2 prefetch");
};

// Shared memory a block of `threads` needs for Shape's staging slots.
template <typename Shape, typename scalar_t>
constexpr int stitch_stage_bytes(int threads) {
  return Shape::kStages * Shape::kVoxels * int(sizeof(scalar_t)) * threads;
}

// The launcher's shapes, from benchmarks/experiments/stitch_variants.cu (512^3, window 64,
// step 32). 4- and 8-byte types: 32 bytes per thread with two windows' loads and weights in
// flight, three blocks per SM for 4-byte types (fp32, H100: 97.5% of copy bandwidth). 2-byte
// types: 32 bytes per thread, one window at a time, L2 prefetch two windows ahead, three
// blocks per SM (bf16, H100: 90.2%; the 64-byte shape shipped before: 72.8%).
template <typename scalar_t>
using StitchAlignedShape = std::conditional_t<
    sizeof(scalar_t) == 2, StitchChunkShape<2 * Vec16<scalar_t>::kSize, 1, false, 2, 3>,
    StitchChunkShape<2 * Vec16<scalar_t>::kSize, 2, true, 0, sizeof(scalar_t) == 4 ? 3 : 2>>;

// Shapes in the launcher's order of preference.
template <typename... Shapes>
struct ShapeList {
  static constexpr int kSize = int(sizeof...(Shapes));
};

// StitchAlignedShape first; then one 16-byte vector per thread, for grids whose windows and
// steps along x are whole vectors but not whole chunks of the first shape (bf16, window 48
// step 24: 24 voxels is no multiple of 16), which would otherwise take the general body
// (H100, benchmark grid: 28% for bf16, 47% for fp32). The experiment's grid (H100): bf16 75%,
// fp32 89%; bench_gpu.py's bf16 window 48 step 24 grid takes it: 62%.
template <typename scalar_t>
using StitchAlignedShapes = std::conditional_t<
    sizeof(scalar_t) == 2,
    ShapeList<StitchAlignedShape<scalar_t>,
              StitchChunkShape<Vec16<scalar_t>::kSize, 1, false, 2, 4>>,
    ShapeList<StitchAlignedShape<scalar_t>,
              StitchChunkShape<Vec16<scalar_t>::kSize, 2, true, 0, 4>>>;

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
// stitch_grid_chunk, so both paths give bit-identical results. Staging shapes need the
// thread's Shape::kStages slots of kVoxels in shared memory: unit u (16 bytes) of slot s at
// stage[(s * units + u) * stage_stride] (the launcher interleaves the threads of a block, so
// that a warp's accesses are consecutive).
template <typename I, typename scalar_t, typename acc_t, typename Shape>
FQ_HD void stitch_grid_chunk_aligned(const scalar_t* patches, const acc_t* weight,
                                     scalar_t* out, const GridGeometry& gg, acc_t fill,
                                     ColumnRange cols, I i, Vec16<scalar_t>* stage = nullptr,
                                     int stage_stride = 0) {
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
  if constexpr (Shape::kStages > 0) {
    constexpr int kUnits = V / Vec16<scalar_t>::kSize, kInFlight = Shape::kStages - 1;
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
        fetch_slot = fetch_slot + 1 == Shape::kStages ? 0 : fetch_slot + 1;
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
      use_slot = use_slot + 1 == Shape::kStages ? 0 : use_slot + 1;
      add_window(num, den, p, w);
    }
  } else {
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
  }
  scalar_t r[V];
  FQ_UNROLL
  for (int k = 0; k < V; ++k)
    r[k] = static_cast<scalar_t>(den[k] > acc_t(0) ? num[k] / den[k] : fill);
  store_vec(out + image_offset<I>(g, pos.n, pos.c, pos.z, pos.y, pos.x0), r);
}

}  // namespace fastquilt
