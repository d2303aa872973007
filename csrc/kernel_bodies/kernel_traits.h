// Tuning constants of the CUDA kernels, one place, each with the reason for its value
// (measurements: benchmarks/results/, the fast-path shapes' experiment:
// benchmarks/experiments/stitch_variants.cu). Host-device and torch-free: the kernel-body test
// runs the bodies with these same constants.
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernel_bodies/vec_access.h"

namespace fastquilt {

// ---- every launch ----
// Threads per block: a multiple of the warp size that leaves the register caps below to
// __launch_bounds__, not to the block size.
constexpr int kThreads = 256;
// Most blocks of a grid-stride launch: enough to fill any GPU, small enough for gridDim.x.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

// ---- gather (window_chunk.h) ----
// 16-byte chunks per thread, all loaded before the first store: more bytes in flight per
// thread for a copy that is bound by memory latency.
constexpr int kGatherChunks = 4;

// ---- scatter-add ----
// Elements per thread: one float4 of accumulator, added with one vector atomic on sm_90.
constexpr int kScatterElements = 4;

// ---- grid stitch, general body (stitch_grid_chunk.h) ----
// Covering windows whose patch loads are issued before they are summed: the usual grid
// (step = window / 2 in 3D) has 8 covering windows, two batches.
constexpr int kStitchBatch = 4;

// ---- grid stitch, fast path (stitch_grid_fast_path.h) ----
// Chunk shape and load schedule of the fast path. The kernel is bound by the patch bytes it
// has in flight (one DRAM round trip per batch of windows), which registers limit: more
// voxels or windows per thread need more registers, so fewer threads fit on an SM. L2
// prefetches of the windows ahead put bytes in flight without holding registers.
template <int Voxels, int Batch, bool WeightsWithPatches, int Prefetch, int MinBlocks>
struct StitchChunkShape {
  static constexpr int kVoxels = Voxels;  // output voxels per thread: whole 16-byte vectors
  static constexpr int kBatch = Batch;    // windows whose patch loads are issued together
  static constexpr bool kWeightsWithPatches = WeightsWithPatches;  // their weights as well
  static constexpr int kPrefetch = Prefetch;  // L2 prefetch of the window this far ahead (0: off)
  static constexpr int kMinBlocks = MinBlocks;  // blocks of kThreads per SM: caps the registers
};

// Shapes in the launcher's order of preference.
template <typename... Shapes>
struct ShapeList {
  static constexpr int kSize = int(sizeof...(Shapes));
};

// The first shape, 32 bytes of output per thread. 4- and 8-byte types: two windows' loads and
// weights in flight, three blocks per SM for 4-byte types (two for 8-byte ones, whose sums
// need more registers). 2-byte types: one window at a time and an L2 prefetch two windows
// ahead, three blocks per SM: the most bytes in flight that the register cap allows.
template <typename scalar_t>
using StitchAlignedShape = std::conditional_t<
    sizeof(scalar_t) == 2, StitchChunkShape<2 * Vec16<scalar_t>::kSize, 1, false, 2, 3>,
    StitchChunkShape<2 * Vec16<scalar_t>::kSize, 2, true, 0, sizeof(scalar_t) == 4 ? 3 : 2>>;

// StitchAlignedShape first; then one 16-byte vector per thread, four blocks per SM, for grids
// whose windows and steps along x are whole vectors but not whole chunks of the first shape
// (bf16, window 48 step 24: 24 voxels is no multiple of 16), which would otherwise take the
// slower general body.
template <typename scalar_t>
using StitchAlignedShapes = std::conditional_t<
    sizeof(scalar_t) == 2,
    ShapeList<StitchAlignedShape<scalar_t>,
              StitchChunkShape<Vec16<scalar_t>::kSize, 1, false, 2, 4>>,
    ShapeList<StitchAlignedShape<scalar_t>,
              StitchChunkShape<Vec16<scalar_t>::kSize, 2, true, 0, 4>>>;

// Minimum blocks per SM of a fast-path shape under index type I, which caps its registers:
// the shape's own with 32-bit index math; two with 64-bit index math (tensors of 2^31
// elements or more), which needs more registers and would spill under a tighter cap.
template <typename I, typename Shape>
constexpr int aligned_min_blocks() {
  return sizeof(I) == 4 ? Shape::kMinBlocks : 2;
}

}  // namespace fastquilt
