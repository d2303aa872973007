// CUDA class epilogue: one thread per voxel runs kernel_bodies/class_epilogue.h (the CPU
// kernel's body): the weighted mean of its C class scores, the argmax, the chosen class's
// mean and the entropy. Neighbouring threads read neighbouring voxels of each channel
// (coalesced); only the small outputs are written.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "class_epilogue_checks.h"
#include "cuda/cuda_common.cuh"
#include "kernel_bodies/class_epilogue.h"

namespace fastquilt::cuda {
namespace {

template <typename acc_t, typename label_t>
__global__ void class_epilogue_kernel(const acc_t* __restrict__ acc,
                                      const acc_t* __restrict__ ws, int64_t N, int64_t C,
                                      int64_t V, acc_t fill, label_t* __restrict__ labels,
                                      acc_t* __restrict__ prob, acc_t* __restrict__ entropy) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * V;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / V, v = i - n * V;
    const acc_t inv = ws != nullptr ? inverse_or_zero(ws[i]) : acc_t(1);
    class_epilogue_voxel<acc_t, label_t>(acc + n * C * V + v, C, V, ws != nullptr, inv, fill,
                                         labels + i, prob != nullptr ? prob + i : nullptr,
                                         entropy != nullptr ? entropy + i : nullptr);
  }
}

// Unchecked (class_epilogue_checks.h checks the arguments and allocates the outputs).
void class_epilogue_cuda(const at::Tensor& acc, const c10::optional<at::Tensor>& weight_sum,
                         double fill_value, const at::Tensor& labels,
                         const c10::optional<at::Tensor>& prob,
                         const c10::optional<at::Tensor>& entropy) {
  if (labels.numel() == 0) return;
  c10::cuda::CUDAGuard guard(acc.device());
  const int64_t N = acc.size(0), C = acc.size(1), V = acc.numel() / (N * C);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "class_epilogue_cuda", [&] {
    const auto fill = static_cast<scalar_t>(fill_value);
    if (labels.scalar_type() == at::kByte) {
      class_epilogue_kernel<scalar_t, uint8_t><<<blocks_for(N * V), kThreads, 0, stream>>>(
          acc.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(weight_sum), N, C, V, fill,
          labels.mutable_data_ptr<uint8_t>(), mutable_data_or_null<scalar_t>(prob),
          mutable_data_or_null<scalar_t>(entropy));
    } else {
      class_epilogue_kernel<scalar_t, uint16_t><<<blocks_for(N * V), kThreads, 0, stream>>>(
          acc.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(weight_sum), N, C, V, fill,
          labels.mutable_data_ptr<uint16_t>(), mutable_data_or_null<scalar_t>(prob),
          mutable_data_or_null<scalar_t>(entropy));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("class_epilogue", &class_epilogue_op<&class_epilogue_cuda>);
}

}  // namespace fastquilt::cuda
