// CUDA deterministic stitch for a full regular grid, fused with the division. Each thread
// computes a chunk of output (stitch_grid_chunk, or stitch_grid_chunk_aligned on the columns
// where the grid is aligned; host-device code in kernel_bodies/stitch_grid_chunk.h and
// stitch_grid_fast_path.h that the CPU tests run): it sums, in a fixed order, the windows
// covering its voxels -- found in closed form per axis by grid_cover(), the code the CPU
// kernel runs -- and writes sum(w p) / sum(w) once. No atomics, no accumulator buffers:
// bit-identical run to run.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"
#include "kernel_bodies/stitch_grid_fast_path.h"

namespace fastquilt::cuda {
namespace {

// I: index type, int32_t when the patches and the output have fewer than 2^31 elements.
template <typename I, typename scalar_t, typename acc_t>
__global__ void stitch_grid_kernel(const scalar_t* __restrict__ patches,
                                   const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                                   GridGeometry gg, acc_t fill, StitchVectorAccess vec,
                                   ColumnRange cols, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk<I>(patches, weight, out, gg, fill, vec, cols, I(i));
}

// The fast path (stitch_aligned_columns_end) with one of StitchAlignedShapes.
template <typename I, typename scalar_t, typename acc_t, typename Shape>
__global__ void __launch_bounds__(kThreads, aligned_min_blocks<I, Shape>())
    stitch_grid_aligned_kernel(const scalar_t* __restrict__ patches,
                               const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                               GridGeometry gg, acc_t fill, ColumnRange cols, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk_aligned<I, scalar_t, acc_t, Shape>(patches, weight, out, gg, fill, cols,
                                                         I(i));
}

// Launches the fast path with Shape over cols.
template <typename Shape, typename scalar_t, typename acc_t>
void launch_aligned(const scalar_t* src, const acc_t* wp, scalar_t* dst, const GridGeometry& gg,
                    acc_t fill, ColumnRange cols, bool fits32, cudaStream_t stream) {
  const int64_t total = stitch_chunk_count(gg.g, cols, Shape::kVoxels);
  auto kernel = fits32 ? stitch_grid_aligned_kernel<int32_t, scalar_t, acc_t, Shape>
                       : stitch_grid_aligned_kernel<int64_t, scalar_t, acc_t, Shape>;
  kernel<<<blocks_for(total), kThreads, 0, stream>>>(src, wp, dst, gg, fill, cols, total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Unchecked (op_entry_points.h checks the arguments): out (N, C, *S), contiguous.
// inv_weight_sum is only a hint: the kernel sums the weights it reads anyway (no extra memory
// traffic on the GPU), so it is checked and not used.
void stitch_grid_cuda(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                      const c10::optional<at::Tensor>& inv_weight_sum, const at::Tensor& out,
                      const GridGeometry& gg, double fill_value) {
  if (out.numel() == 0) return;
  c10::cuda::CUDAGuard guard(patches.device());
  const auto p = patches.contiguous();
  const auto w = contiguous_or_none(weight);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "stitch_grid_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = data_or_null<acc_t>(w);
    const bool fits32 = p.numel() <= INT32_MAX && out.numel() <= INT32_MAX;
    const acc_t fill = static_cast<acc_t>(fill_value);
    const scalar_t* src = p.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    // Columns [0, split) on the fast path (the first of StitchAlignedShapes that fits), [split,
    // S2) on the general one; all sum in the same order, so where the split falls and which
    // shape runs do not change a bit of the result.
    const AlignedChoice fast =
        choose_aligned_shape<scalar_t>(StitchAlignedShapes<scalar_t>(), src, wp, dst, gg);
    const int64_t split = fast.end;
    if (fast.shape >= 0)
      with_shape(StitchAlignedShapes<scalar_t>(), fast.shape, [&](auto shape) {
        launch_aligned<decltype(shape)>(src, wp, dst, gg, fill, ColumnRange{0, split}, fits32,
                                        stream);
      });
    if (split == gg.g.S[2]) return;
    const ColumnRange cols{split, gg.g.S[2]};
    const int64_t total = stitch_chunk_count(gg.g, cols, Vec16<scalar_t>::kSize);
    const auto vec = stitch_vector_access<scalar_t>(src, wp, dst, gg.g);
    auto kernel = fits32 ? stitch_grid_kernel<int32_t, scalar_t, acc_t>
                         : stitch_grid_kernel<int64_t, scalar_t, acc_t>;
    kernel<<<blocks_for(total), kThreads, 0, stream>>>(src, wp, dst, gg, fill, vec, cols, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("stitch_grid", &stitch_grid_op<&stitch_grid_cuda>);
  m.impl("stitch_grid_into", &stitch_grid_into_op<&stitch_grid_cuda>);
}

}  // namespace fastquilt::cuda
