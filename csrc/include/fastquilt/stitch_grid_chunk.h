// Work unit of the CUDA deterministic grid stitch: V consecutive output voxels of one row
// (16 bytes of output). Host-device code, run for every thread of a launch by the CPU tests
// (tests/cpp/kernel_bodies_test.cpp).
//
// Why chunks: one thread per voxel paid the covering-window search and the offset math per
// voxel and issued 4-byte loads one after another. A chunk pays them once for V voxels,
// reads each covering window's part of the chunk with one 16-byte load (when aligned), issues
// the loads of several windows before summing them and keeps the V sums in registers. The
// order of the sums per voxel is still fixed (windows by increasing (i0, i1, i2)), so the
// result is bit-identical run to run.
#pragma once
#include <type_traits>

#include "fastquilt/async_copy.h"
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

// Odometer over the (n0, n1, n2) box of the windows covering a chunk, in lexicographic order.
template <typename I>
struct WindowCursor {
  I j0 = 0, j1 = 0, j2 = 0;
  FQ_HD void next(I n1, I n2) {
    if (++j2 == n2) {
      j2 = 0;
      if (++j1 == n1) { j1 = 0; ++j0; }
    }
  }
};

// Where the chunk at p lies in grid window (i0, i1, i2) of its image.
template <typename I>
struct ChunkInWindow {
  I patch, weight;  // offsets of the chunk start (may lie left of the window: xx < 0)
  I xx;             // chunk start in window coordinates
};

template <typename I>
FQ_HD ChunkInWindow<I> chunk_in_window(const GridGeometry& gg, const ChunkPosition<I>& p, I i0,
                                       I i1, I i2) {
  const Geometry& g = gg.g;
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
  // issues all its patch loads before it sums them, so a thread has kBatch loads in flight
  // rather than one (the usual grid, step = window / 2 in 3D, has 8 covering windows).
  constexpr int kBatch = 4;
  const I n0 = l0 - f0 + 1, n1 = l1 - f1 + 1, n2 = l2 - f2 + 1;
  const I windows = n0 > 0 && n1 > 0 && n2 > 0 ? n0 * n1 * n2 : I(0);
  WindowCursor<I> next;  // the next window, in the (n0, n1, n2) box
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
      const ChunkInWindow<I> at =
          chunk_in_window<I>(gg, pos, f0 + next.j0, f1 + next.j1, f2 + next.j2);
      next.next(n1, n2);
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

// ---- aligned grids: the fast path ----
// Where window rows and window starts are whole chunks (and the buffers 16-byte aligned), each
// covering window covers the whole chunk: no edge cases, no per-window test, and a thread can
// take a longer chunk.
//
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

// The launcher's shapes, from measurements on the H200 (benchmarks/experiments/
// stitch_variants.cu, 512^3 window 64 step 32): 32 bytes per thread with two windows' loads
// and weights in flight for 4- and 8-byte types (fp32: 71% of copy bandwidth at 96 registers,
// two blocks per SM; the experiment's variant of this shape at <= 80 registers, three blocks,
// 86-89%: hence three blocks for 4-byte types, not yet timed in this body); 64 bytes per
// thread, one window at a time, at most 128 registers for 2-byte types (56%).
template <typename scalar_t>
using StitchAlignedShape = std::conditional_t<
    sizeof(scalar_t) == 2, StitchChunkShape<4 * Vec16<scalar_t>::kSize, 1, false, 0, 2>,
    StitchChunkShape<2 * Vec16<scalar_t>::kSize, 2, true, 0, sizeof(scalar_t) == 4 ? 3 : 2>>;

// Shapes in the launcher's order of preference.
template <typename... Shapes>
struct ShapeList {
  static constexpr int kSize = int(sizeof...(Shapes));
};

// StitchAlignedShape first; then narrower chunks, down to one 16-byte vector per thread, for
// grids whose windows and steps along x are whole vectors but not whole chunks of the wider
// shapes (bf16, window 96 step 48: 48 voxels is no multiple of 32), which would otherwise take
// the general body (measured there: 26% for bf16, 59% for fp32). Their schedules are the
// measured variants' closest at no register spill (experiment, run 1: bf16 16 bytes, 4
// windows in flight, 37%; fp32 16 bytes, 81%): not yet timed in this body.
template <typename scalar_t>
using StitchAlignedShapes = std::conditional_t<
    sizeof(scalar_t) == 2,
    ShapeList<StitchAlignedShape<scalar_t>,
              StitchChunkShape<2 * Vec16<scalar_t>::kSize, 1, false, 0, 3>,
              StitchChunkShape<Vec16<scalar_t>::kSize, 4, false, 0, 3>>,
    ShapeList<StitchAlignedShape<scalar_t>,
              StitchChunkShape<Vec16<scalar_t>::kSize, 2, true, 0, 4>>>;

// Columns of the aligned fast path: [0, end), where each chunk lies under windows that all
// cover it whole. It needs 16-byte-aligned buffers, window rows and steps that are whole
// chunks and image rows of whole 16-byte vectors (aligned stores); when the last window,
// stepped back to S2 - W2, is off the chunk grid, only the columns left of it qualify (the
// general body takes the rest: a second launch). 0: no fast path. Decided on the host.
template <typename scalar_t, typename Shape = StitchAlignedShape<scalar_t>>
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
template <typename I, typename scalar_t, typename acc_t,
          typename Shape = StitchAlignedShape<scalar_t>>
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
    WindowCursor<I> fetch, use;  // the next window to stage; the next one to sum
    int fetch_slot = 0, use_slot = 0;
    // Window t: staged kInFlight windows before it is summed, one commit group per window
    // (empty past the last window, so that every wait counts the same groups).
    for (I t = 0; t < windows + kInFlight; ++t) {
      if (t < windows) {
        const scalar_t* src = patches + chunk_in_window<I>(gg, pos, f0 + fetch.j0,
                                                           f1 + fetch.j1, f2 + fetch.j2).patch;
        FQ_UNROLL
        for (int u = 0; u < kUnits; ++u)
          copy16_async(stage + (fetch_slot * kUnits + u) * stage_stride,
                       src + u * Vec16<scalar_t>::kSize);
        fetch.next(n1, n2);
        fetch_slot = fetch_slot + 1 == Shape::kStages ? 0 : fetch_slot + 1;
      }
      async_commit();
      if (t < kInFlight) continue;  // the first windows are only staged
      const I woff =
          chunk_in_window<I>(gg, pos, f0 + use.j0, f1 + use.j1, f2 + use.j2).weight;
      use.next(n1, n2);
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
    WindowCursor<I> next, ahead;  // the next window to load; the next one to prefetch
    if constexpr (kAhead > 0) {
      // Windows 1 .. kAhead - 1 now; window t + kAhead when window t is loaded. Prefetches
      // are hints into L2: they put patch bytes in flight without holding registers.
      for (int d = 0; d < kAhead; ++d, ahead.next(n1, n2))
        if (d > 0 && d < windows)
          prefetch_l2(patches + chunk_in_window<I>(gg, pos, f0 + ahead.j0, f1 + ahead.j1,
                                                   f2 + ahead.j2).patch, V * sizeof(scalar_t));
    }
    for (I t0 = 0; t0 < windows; t0 += kBatch) {
      scalar_t pv[kBatch][V];
      acc_t wv[kWeights][V];
      I wo[kBatch];
      FQ_UNROLL
      for (int j = 0; j < kBatch; ++j) {
        wo[j] = 0;
        if (t0 + j >= windows) continue;
        const ChunkInWindow<I> at =
            chunk_in_window<I>(gg, pos, f0 + next.j0, f1 + next.j1, f2 + next.j2);
        next.next(n1, n2);
        if constexpr (kAhead > 0) {
          if (t0 + j + kAhead < windows)
            prefetch_l2(patches + chunk_in_window<I>(gg, pos, f0 + ahead.j0, f1 + ahead.j1,
                                                     f2 + ahead.j2).patch, V * sizeof(scalar_t));
          ahead.next(n1, n2);
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
