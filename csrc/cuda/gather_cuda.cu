// CUDA gather of strided windows: input (N, C, *S) -> patches (M, C, *window).
// One thread moves one 16-byte chunk of a window row (vector load/store when the row is
// aligned, scalar otherwise): reads and writes are coalesced along x, and the row index math
// is paid once per chunk, not per element. One launch, current stream, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"

namespace fastquilt::cuda {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void gather_kernel(const scalar_t* __restrict__ in, const int64_t* __restrict__ org,
                              const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                              Geometry g, int64_t D, int64_t M) {
  using V = Vec16<scalar_t>;
  constexpr int kV = V::kSize;
  const int64_t W2 = g.W[2];
  const int64_t chunks_per_row = (W2 + kV - 1) / kV;
  const int64_t total = M * g.C * g.W[0] * g.W[1] * chunks_per_row;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = fast_div(i, chunks_per_row);
    const int64_t x0 = (i - row * chunks_per_row) * kV;
    int64_t m, c, a, b;
    split_patch_row(row, g, &m, &c, &a, &b);
    int64_t o[4];
    load_origin(org, m, D, o);
    CUDA_KERNEL_ASSERT(origin_in_bounds(g, o) && "fastquilt.gather_windows: origin out of bounds");
    const int64_t src = image_offset(g, o[0], c, o[1] + a, o[2] + b, o[3] + x0);
    const int64_t dst = patch_offset(g, m, c, a, b, x0);
    const int64_t n = W2 - x0 < kV ? W2 - x0 : kV;
    if (weight == nullptr && n == kV && src % kV == 0 && dst % kV == 0) {
      *reinterpret_cast<V*>(out + dst) = *reinterpret_cast<const V*>(in + src);
    } else {
      const acc_t* w = weight == nullptr ? nullptr : weight + weight_offset(g, a, b, x0);
      for (int64_t k = 0; k < n; ++k) {
        if (w == nullptr) out[dst + k] = in[src + k];
        else out[dst + k] = static_cast<scalar_t>(static_cast<acc_t>(in[src + k]) * w[k]);
      }
    }
  }
}

void gather_windows_into_cuda(const at::Tensor& input, const at::Tensor& origins,
                              const c10::optional<at::Tensor>& weight, const at::Tensor& out) {
  constexpr const char* op = "fastquilt.gather_windows";
  auto window = out.sizes().slice(2);
  const Geometry g = check_gather(input, origins, weight, window, op);
  check_gather_out(input, origins, out, op);
  const int64_t M = origins.size(0);
  if (M == 0 || out.numel() == 0) return;
  c10::cuda::CUDAGuard guard(input.device());
  const auto in = input.contiguous();
  const auto org = origins.contiguous();
  c10::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->contiguous();
  const int64_t D = static_cast<int64_t>(window.size());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, in.scalar_type(),
                             "gather_windows_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = nullptr;
    if constexpr (std::is_floating_point_v<acc_t>) {
      if (w.has_value()) wp = w->const_data_ptr<acc_t>();
    }
    constexpr int kV = Vec16<scalar_t>::kSize;
    const int64_t work = M * g.C * g.W[0] * g.W[1] * ((g.W[2] + kV - 1) / kV);
    gather_kernel<scalar_t, acc_t><<<blocks_for(work), kThreads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), org.const_data_ptr<int64_t>(), wp,
        out.mutable_data_ptr<scalar_t>(), g, D, M);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor gather_windows_cuda(const at::Tensor& input, const at::Tensor& origins,
                               const c10::optional<at::Tensor>& weight, at::IntArrayRef window) {
  auto out = empty_patches(input, origins, window);
  gather_windows_into_cuda(input, origins, weight, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("gather_windows", &gather_windows_cuda);
  m.impl("gather_windows_into", &gather_windows_into_cuda);
}

}  // namespace fastquilt::cuda
