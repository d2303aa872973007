// CUDA deterministic stitch for a full regular grid, fused with the division. Each thread
// computes a chunk of output (stitch_grid_chunk, or stitch_grid_chunk_aligned on the columns
// where the grid is aligned; host-device code in include/fastquilt/stitch_grid_chunk.h and
// stitch_grid_fast_path.h that the CPU tests run): it sums, in a fixed order, the windows covering its voxels -- found in
// closed form per axis by grid_cover(), the code the CPU kernel runs -- and writes
// sum(w p) / sum(w) once. No atomics, no accumulator buffers: bit-identical run to run.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"
#include "fastquilt/stitch_grid_fast_path.h"
#include "optional_tensor.h"
#include "out_of_place.h"

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

// Minimum blocks per SM of a fast-path shape, which caps its registers: the kernel is bound
// by the patch bytes in flight, so threads per SM count more than the registers a looser cap
// would give (measured: StitchAlignedShape). 64-bit index math (tensors of 2^31 elements or
// more) needs more registers: two blocks there, where more would spill.
template <typename I, typename Shape>
constexpr int aligned_min_blocks() {
  return sizeof(I) == 4 ? Shape::kMinBlocks : 2;
}

// The fast path (stitch_aligned_columns_end) with one of StitchAlignedShapes.
template <typename I, typename scalar_t, typename acc_t, typename Shape>
__global__ void __launch_bounds__(kThreads, aligned_min_blocks<I, Shape>())
    stitch_grid_aligned_kernel(const scalar_t* __restrict__ patches,
                               const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                               GridGeometry gg, acc_t fill, ColumnRange cols, int64_t total) {
  // The shape's staging slots, if it stages: dynamic shared memory, the block's threads
  // interleaved (stitch_stage_bytes).
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  Vec16<scalar_t>* stage = reinterpret_cast<Vec16<scalar_t>*>(stage_bytes) + threadIdx.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk_aligned<I, scalar_t, acc_t, Shape>(patches, weight, out, gg, fill, cols,
                                                         I(i), stage, int(blockDim.x));
}

// Launches the fast path with Shape over cols.
template <typename Shape, typename scalar_t, typename acc_t>
void launch_aligned(const scalar_t* src, const acc_t* wp, scalar_t* dst, const GridGeometry& gg,
                    acc_t fill, ColumnRange cols, bool fits32, cudaStream_t stream) {
  const int64_t total = stitch_chunk_count(gg.g, cols, Shape::kVoxels);
  auto kernel = fits32 ? stitch_grid_aligned_kernel<int32_t, scalar_t, acc_t, Shape>
                       : stitch_grid_aligned_kernel<int64_t, scalar_t, acc_t, Shape>;
  constexpr int smem = stitch_stage_bytes<Shape, scalar_t>(kThreads);
  if constexpr (smem > 48 * 1024)  // above the default limit of dynamic shared memory
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<blocks_for(total), kThreads, smem, stream>>>(src, wp, dst, gg, fill, cols, total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void stitch_grid_into_cuda(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                           at::IntArrayRef step, double fill_value, const at::Tensor& out,
                           const c10::optional<at::Tensor>& inv_weight_sum) {
  constexpr const char* op = "fastquilt.stitch_grid_into";
  // inv_weight_sum is only a hint: the kernel sums the weights it reads anyway (no extra
  // memory traffic on the GPU), so it is validated and not used.
  const GridGeometry gg =
      check_stitch_grid_into(patches, weight, step, out, inv_weight_sum, op);
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

template <typename I, typename scalar_t>
__global__ void grid_weight_sum_kernel(const scalar_t* __restrict__ weight,
                                       scalar_t* __restrict__ out, GridGeometry gg,
                                       bool inverse) {
  const Geometry& g = gg.g;
  const int64_t total = g.S[0] * g.S[1] * g.S[2];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const I t = div_index<I>(I(i), I(g.S[2]));
    const I z = div_index<I>(t, I(g.S[1]));
    const scalar_t s = grid_voxel_weight_sum<scalar_t, I>(g, gg.step, weight, z,
                                                          t - z * I(g.S[1]),
                                                          I(i) - t * I(g.S[2]));
    out[i] = inverse ? inverse_or_zero(s) : s;
  }
}

at::Tensor grid_weight_sum_cuda(const at::Tensor& weight, at::IntArrayRef spatial_size,
                                at::IntArrayRef step, bool inverse) {
  const GridGeometry gg = check_grid_weight_sum(weight, spatial_size, step,
                                                "fastquilt.grid_weight_sum");
  c10::cuda::CUDAGuard guard(weight.device());
  auto out = at::empty(spatial_size, weight.options());
  const auto w = weight.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_weight_sum_cuda", [&] {
    auto kernel = out.numel() <= INT32_MAX ? grid_weight_sum_kernel<int32_t, scalar_t>
                                           : grid_weight_sum_kernel<int64_t, scalar_t>;
    kernel<<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), gg, inverse);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// acc (N, C, *S) *= 1 / grid weight sum (fill where that is 0), in place, one thread per voxel
// (grid_normalize_voxel: the weight sum with grid_weight_sum's body, so the same bits). No
// (*S) buffer.
template <typename I, typename scalar_t>
__global__ void grid_normalize_kernel(scalar_t* __restrict__ acc,
                                      const scalar_t* __restrict__ weight, GridGeometry gg,
                                      scalar_t fill) {
  const int64_t vol = gg.g.S[0] * gg.g.S[1] * gg.g.S[2];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < vol;
       i += int64_t(gridDim.x) * blockDim.x)
    grid_normalize_voxel<scalar_t, I>(acc, weight, gg, i, fill);
}

void grid_normalize_cuda(const at::Tensor& acc, const at::Tensor& weight, at::IntArrayRef step,
                         double fill_value) {
  const GridGeometry gg =
      check_grid_normalize(acc, weight, step, "fastquilt.grid_normalize_");
  if (acc.numel() == 0) return;
  c10::cuda::CUDAGuard guard(acc.device());
  const auto w = weight.contiguous();
  const int64_t vol = acc.numel() / (gg.g.N * gg.g.C);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_normalize_cuda", [&] {
    auto kernel = acc.numel() <= INT32_MAX ? grid_normalize_kernel<int32_t, scalar_t>
                                           : grid_normalize_kernel<int64_t, scalar_t>;
    kernel<<<blocks_for(vol), kThreads, 0, stream>>>(acc.mutable_data_ptr<scalar_t>(),
                                                      w.const_data_ptr<scalar_t>(), gg,
                                                      static_cast<scalar_t>(fill_value));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("grid_normalize_", &grid_normalize_cuda);
  m.impl("grid_weight_sum", &grid_weight_sum_cuda);
  m.impl("stitch_grid", &stitch_grid_via<&stitch_grid_into_cuda>);
  m.impl("stitch_grid_into", &stitch_grid_into_cuda);
}

}  // namespace fastquilt::cuda
