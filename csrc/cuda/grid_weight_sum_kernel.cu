// CUDA weight sums of a full regular grid: grid_weight_sum (the (*S) sum or its inverse) and
// grid_normalize_ (an accumulator divided by it in place, no (*S) buffer). One thread per
// voxel sums, in a fixed order, the weights of the windows covering it (grid_voxel_weight_sum
// in kernel_bodies/index_math.h, host-device code that the CPU tests run): no atomics,
// bit-identical run to run, and the same bits in both ops.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"

namespace fastquilt::cuda {
namespace {

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

// Unchecked (op_entry_points.h checks the arguments): out (*S), the weight's dtype.
void grid_weight_sum_cuda(const at::Tensor& weight, const at::Tensor& out,
                          const GridGeometry& gg, bool inverse) {
  c10::cuda::CUDAGuard guard(weight.device());
  const auto w = weight.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_weight_sum_cuda", [&] {
    auto kernel = out.numel() <= INT32_MAX ? grid_weight_sum_kernel<int32_t, scalar_t>
                                           : grid_weight_sum_kernel<int64_t, scalar_t>;
    kernel<<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), gg, inverse);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
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

// Unchecked (op_entry_points.h checks the arguments).
void grid_normalize_cuda(const at::Tensor& acc, const at::Tensor& weight,
                         const GridGeometry& gg, double fill_value) {
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
  m.impl("grid_weight_sum", &grid_weight_sum_op<&grid_weight_sum_cuda>);
  m.impl("grid_normalize_", &grid_normalize_op<&grid_normalize_cuda>);
}

}  // namespace fastquilt::cuda
