// CUDA weighted scatter-add with atomics: acc[n, c, o + i] += w[i] * patches[m, c, i] (and the
// weight sum for c == 0), for any list of window origins, in float32 (float64 for float64).
// One thread handles one 16-byte chunk of a patch row: a vector load of the patch, then
// atomics (float4 atomics on sm_90 when the target is aligned).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"

namespace fastquilt::cuda {
namespace {

template <typename acc_t>
__device__ __forceinline__ void add4(acc_t* dst, const acc_t v[4], bool aligned) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (std::is_same_v<acc_t, float>) {
    if (aligned) {
      atomicAdd(reinterpret_cast<float4*>(dst), make_float4(v[0], v[1], v[2], v[3]));
      return;
    }
  }
#endif
  for (int k = 0; k < 4; ++k) gpuAtomicAdd(dst + k, v[k]);
}

template <typename scalar_t, typename acc_t>
__global__ void scatter_kernel(const scalar_t* __restrict__ patches,
                               const int64_t* __restrict__ org, const acc_t* __restrict__ weight,
                               acc_t* __restrict__ acc, acc_t* __restrict__ wsum, Geometry g,
                               int64_t D, int64_t M) {
  constexpr int kV = 4;  // elements per thread: one float4 of accumulator
  const int64_t W2 = g.W[2];
  const int64_t chunks_per_row = (W2 + kV - 1) / kV;
  const int64_t total = M * g.C * g.W[0] * g.W[1] * chunks_per_row;
  const Geometry g1{g.N, 1, {g.S[0], g.S[1], g.S[2]}, {g.W[0], g.W[1], g.W[2]}};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = fast_div(i, chunks_per_row);
    const int64_t x0 = (i - row * chunks_per_row) * kV;
    int64_t m, c, a, b;
    split_patch_row(row, g, &m, &c, &a, &b);
    int64_t o[4];
    load_origin(org, m, D, o);
    CUDA_KERNEL_ASSERT(origin_in_bounds(g, o) && "fastquilt.scatter_add_windows: origin out of bounds");
    const scalar_t* src = patches + patch_offset(g, m, c, a, b, x0);
    const acc_t* w = weight == nullptr ? nullptr : weight + weight_offset(g, a, b, x0);
    const int64_t dst = image_offset(g, o[0], c, o[1] + a, o[2] + b, o[3] + x0);
    const int64_t n = W2 - x0 < kV ? W2 - x0 : kV;
    acc_t v[kV], wv[kV];
    for (int k = 0; k < kV; ++k) {
      wv[k] = k < n ? (w == nullptr ? acc_t(1) : w[k]) : acc_t(0);
      v[k] = k < n ? static_cast<acc_t>(src[k]) * wv[k] : acc_t(0);
    }
    if (n == kV) {
      add4(acc + dst, v, dst % kV == 0);
    } else {
      for (int k = 0; k < n; ++k) gpuAtomicAdd(acc + dst + k, v[k]);
    }
    if (wsum != nullptr && c == 0) {
      const int64_t wd = image_offset(g1, o[0], 0, o[1] + a, o[2] + b, o[3] + x0);
      if (n == kV) add4(wsum + wd, wv, wd % kV == 0);
      else for (int k = 0; k < n; ++k) gpuAtomicAdd(wsum + wd + k, wv[k]);
    }
  }
}

// Weight sum alone (patches with zero channels).
template <typename acc_t>
__global__ void weight_sum_kernel(const int64_t* __restrict__ org, const acc_t* __restrict__ weight,
                                  acc_t* __restrict__ wsum, Geometry g, int64_t D, int64_t M) {
  const Geometry g1{g.N, 1, {g.S[0], g.S[1], g.S[2]}, {g.W[0], g.W[1], g.W[2]}};
  const int64_t per_window = g.W[0] * g.W[1] * g.W[2];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * per_window;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / per_window;
    int64_t r = i - m * per_window;
    const int64_t x = r % g.W[2]; r /= g.W[2];
    const int64_t b = r % g.W[1];
    const int64_t a = r / g.W[1];
    int64_t o[4];
    load_origin(org, m, D, o);
    CUDA_KERNEL_ASSERT(origin_in_bounds(g, o) && "fastquilt.scatter_add_windows: origin out of bounds");
    gpuAtomicAdd(wsum + image_offset(g1, o[0], 0, o[1] + a, o[2] + b, o[3] + x),
                 weight == nullptr ? acc_t(1) : weight[weight_offset(g, a, b, x)]);
  }
}

void scatter_add_windows_inplace_cuda(const at::Tensor& patches, const at::Tensor& origins,
                                      const c10::optional<at::Tensor>& weight,
                                      const at::Tensor& acc,
                                      const c10::optional<at::Tensor>& weight_sum) {
  constexpr const char* op = "fastquilt.scatter_add_windows_";
  TORCH_CHECK_VALUE(acc.dim() >= 2, msg(op, ": acc must be (N, C, *spatial), got ", acc.sizes()));
  const Geometry g = check_scatter(patches, origins, weight, acc.sizes().slice(2), acc.size(0), op);
  check_accumulators(patches, acc, weight_sum, op);
  const int64_t M = origins.size(0);
  if (M == 0) return;
  // Atomics make float sums order-dependent: honour torch.use_deterministic_algorithms(True)
  // (raise, like ATen's own atomic kernels). Quilt.stitch's grid stitch is deterministic.
  at::globalContext().alertNotDeterministic("fastquilt.scatter_add_windows (CUDA, atomics)");
  c10::cuda::CUDAGuard guard(patches.device());
  const int64_t D = patches.dim() - 2;
  const auto p = patches.contiguous();
  const auto org = origins.contiguous();
  c10::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "scatter_add_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = w.has_value() ? w->const_data_ptr<acc_t>() : nullptr;
    acc_t* ws = weight_sum.has_value() ? weight_sum->mutable_data_ptr<acc_t>() : nullptr;
    if (g.C > 0 && p.numel() > 0) {
      const int64_t work = M * g.C * g.W[0] * g.W[1] * ((g.W[2] + 3) / 4);
      scatter_kernel<scalar_t, acc_t><<<blocks_for(work), kThreads, 0, stream>>>(
          p.const_data_ptr<scalar_t>(), org.const_data_ptr<int64_t>(), wp,
          acc.mutable_data_ptr<acc_t>(), ws, g, D, M);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else if (ws != nullptr) {
      const int64_t work = M * g.W[0] * g.W[1] * g.W[2];
      weight_sum_kernel<acc_t><<<blocks_for(work), kThreads, 0, stream>>>(
          org.const_data_ptr<int64_t>(), wp, ws, g, D, M);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

std::tuple<at::Tensor, at::Tensor> scatter_add_windows_cuda(
    const at::Tensor& patches, const at::Tensor& origins, const c10::optional<at::Tensor>& weight,
    at::IntArrayRef spatial_size, int64_t num_images) {
  check_scatter(patches, origins, weight, spatial_size, num_images, "fastquilt.scatter_add_windows");
  auto [acc, wsum] = zero_accumulators(patches, spatial_size, num_images);
  scatter_add_windows_inplace_cuda(patches, origins, weight, acc, wsum);
  return {acc, wsum};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("scatter_add_windows", &scatter_add_windows_cuda);
  m.impl("scatter_add_windows_", &scatter_add_windows_inplace_cuda);
}

}  // namespace fastquilt::cuda
