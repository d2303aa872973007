// CUDA gather of strided windows: input (N, C, *S) -> patches (M, C, *window).
// Work unit: a 16-byte chunk of a window row (vector load/store when input, output and the
// row offsets are aligned, scalar otherwise), so reads and writes are coalesced along x and
// the index math is paid once per chunk. Each thread moves kGatherChunks chunks, loading all
// of them before storing, to keep more bytes in flight. The body (gather_chunks in
// kernel_bodies/window_chunk.h) is host-device code that the CPU tests run.
// One launch, current stream, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"
#include "kernel_bodies/window_chunk.h"

namespace fastquilt::cuda {
namespace {

// I: index type, int32_t when the input and the patches have fewer than 2^31 elements.
template <typename I, typename scalar_t, typename acc_t>
__global__ void gather_kernel(const scalar_t* __restrict__ in, const int64_t* __restrict__ org,
                              const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                              Geometry g, int D, int64_t total, bool vec) {
  const int64_t per_block = int64_t(blockDim.x) * kGatherChunks;
  for (int64_t first = blockIdx.x * per_block + threadIdx.x; first < total;
       first += int64_t(gridDim.x) * per_block) {
    const bool ok = gather_chunks<kGatherChunks, I>(in, org, weight, out, g, D, total, vec, first,
                                           int64_t(blockDim.x));
    CUDA_KERNEL_ASSERT(ok && "fastquilt.gather_windows: origin out of bounds");
  }
}

// Unchecked (op_entry_points.h checks the arguments): out (M, C, *window), contiguous.
void gather_windows_cuda(const at::Tensor& input, const at::Tensor& origins,
                         const c10::optional<at::Tensor>& weight, const at::Tensor& out,
                         const Geometry& g) {
  const int64_t M = origins.size(0);
  if (M == 0 || out.numel() == 0) return;
  c10::cuda::CUDAGuard guard(input.device());
  const auto in = input.contiguous();
  const auto org = origins.contiguous();
  const auto w = contiguous_or_none(weight);
  const int D = static_cast<int>(out.dim()) - 2;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, in.scalar_type(),
                             "gather_windows_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = nullptr;
    if constexpr (std::is_floating_point_v<acc_t>) {
      wp = data_or_null<acc_t>(w);
    }
    const int64_t total = window_chunk_count<Vec16<scalar_t>::kSize>(g, M);
    // Inputs and outputs may be views at any element offset: vector access needs both
    // base pointers 16-byte aligned (the chunk offsets are checked per chunk).
    const bool vec = aligned16(in.const_data_ptr()) && aligned16(out.const_data_ptr());
    const bool fits32 = in.numel() <= INT32_MAX && out.numel() <= INT32_MAX;
    auto kernel = fits32 ? gather_kernel<int32_t, scalar_t, acc_t>
                         : gather_kernel<int64_t, scalar_t, acc_t>;
    kernel<<<blocks_for((total + kGatherChunks - 1) / kGatherChunks), kThreads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), org.const_data_ptr<int64_t>(), wp,
        out.mutable_data_ptr<scalar_t>(), g, D, total, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("gather_windows", &gather_windows_op<&gather_windows_cuda>);
  m.impl("gather_windows_into", &gather_windows_into_op<&gather_windows_cuda>);
}

}  // namespace fastquilt::cuda
