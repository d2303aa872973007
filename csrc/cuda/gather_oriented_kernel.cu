// CUDA gather of oriented windows: input (N, C, *S) -> patches (M, C, *window), each window's
// axes permuted and flipped as its orientation row says. One thread per patch element in a
// grid-stride loop: writes are coalesced along x, reads are too unless x is a permuted axis.
// The index math (oriented_element_offset in kernel_bodies/orientation.h) is host-device code
// that the CPU tests run. One launch, current stream, no host sync.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"
#include "kernel_bodies/orientation.h"

namespace fastquilt::cuda {
namespace {

// I: index type of the patch elements, int32_t when the patches have fewer than 2^31.
template <typename I, typename scalar_t>
__global__ void gather_oriented_kernel(const scalar_t* __restrict__ in,
                                       const int64_t* __restrict__ org,
                                       const int64_t* __restrict__ orient,
                                       scalar_t* __restrict__ out, Geometry g, int D,
                                       int64_t total) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t src = oriented_element_offset<I>(g, org, orient, D, I(i));
    CUDA_KERNEL_ASSERT(src >= 0 &&
                       "fastquilt.gather_windows_oriented: origin out of bounds or bad orientation");
    if (src >= 0) out[i] = in[src];
  }
}

// Unchecked (op_entry_points.h checks the arguments): out (M, C, *window), contiguous.
void gather_windows_oriented_cuda(const at::Tensor& input, const at::Tensor& origins,
                                  const at::Tensor& orientation, const at::Tensor& out,
                                  const Geometry& g) {
  const int64_t total = out.numel();
  if (total == 0) return;
  c10::cuda::CUDAGuard guard(input.device());
  const auto in = input.contiguous();
  const auto org = origins.contiguous();
  const auto ori = orientation.contiguous();
  const int D = static_cast<int>(out.dim()) - 2;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, in.scalar_type(),
                             "gather_windows_oriented_cuda", [&] {
    auto kernel = total <= INT32_MAX ? gather_oriented_kernel<int32_t, scalar_t>
                                     : gather_oriented_kernel<int64_t, scalar_t>;
    kernel<<<blocks_for(total), kThreads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), org.const_data_ptr<int64_t>(),
        ori.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), g, D, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("gather_windows_oriented", &gather_windows_oriented_op<&gather_windows_oriented_cuda>);
  m.impl("gather_windows_oriented_into",
         &gather_windows_oriented_into_op<&gather_windows_oriented_cuda>);
}

}  // namespace fastquilt::cuda
