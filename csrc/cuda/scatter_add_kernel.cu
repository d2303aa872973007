// CUDA weighted scatter-add with atomics: acc[n, c, o + i] += w[i] * patches[m, c, i] (and the
// weight sum for c == 0), for any list of window origins, in float32 (float64 for float64).
// One thread handles kScatterElements (four) elements of a patch row (window_chunk in
// kernel_bodies/window_chunk.h, host-device index math the CPU tests run), then adds them
// with atomics: one float4 atomic on sm_90 when the target is 16-byte aligned. Under
// torch.use_deterministic_algorithms(True) the windows are added in sets of pairwise disjoint
// windows (kernel_bodies/disjoint_groups.h), one launch per set: bit-identical run to run.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"
#include "kernel_bodies/disjoint_groups.h"
#include "kernel_bodies/window_chunk.h"

namespace fastquilt::cuda {
namespace {

static_assert(kScatterElements == 4, "add4 adds one float4 of accumulator");

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

// Adds v[0 .. n) at dst: add4 for a whole chunk, element atomics at the end of a row (the
// fixed trip count keeps v in registers).
template <typename acc_t>
__device__ __forceinline__ void add_chunk(acc_t* dst, const acc_t v[4], int n, bool aligned) {
  if (n == 4) {
    add4(dst, v, aligned);
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < n) gpuAtomicAdd(dst + k, v[k]);
}

// I: index type, int32_t when the patches and the accumulator have fewer than 2^31 elements.
template <typename I, typename scalar_t, typename acc_t>
__global__ void scatter_kernel(const scalar_t* __restrict__ patches,
                               const int64_t* __restrict__ org, const acc_t* __restrict__ weight,
                               const int64_t* __restrict__ sel, acc_t* __restrict__ acc,
                               acc_t* __restrict__ wsum, Geometry g, int D, int64_t total,
                               bool vec) {
  constexpr int kV = kScatterElements;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    WindowChunk<I> ch;
    const bool ok = window_chunk<kV>(g, org, sel, D, I(i), &ch);
    CUDA_KERNEL_ASSERT(ok && "fastquilt.scatter_add_windows: origin out of bounds");
    if (!ok) continue;
    const scalar_t* src = patches + ch.patch;
    const acc_t* w = weight == nullptr ? nullptr : weight + ch.weight;
    const int n = ch.len;
    acc_t v[kV], wv[kV];
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      wv[k] = k < n ? (w == nullptr ? acc_t(1) : w[k]) : acc_t(0);
      v[k] = k < n ? static_cast<acc_t>(src[k]) * wv[k] : acc_t(0);
    }
    add_chunk(acc + ch.image, v, n, vec && ch.image % kV == 0);
    if (wsum != nullptr && ch.c == 0) add_chunk(wsum + ch.voxel, wv, n, vec && ch.voxel % kV == 0);
  }
}

// Weight sum alone (patches with zero channels).
template <typename acc_t>
__global__ void weight_sum_kernel(const int64_t* __restrict__ org, const acc_t* __restrict__ weight,
                                  const int64_t* __restrict__ sel, acc_t* __restrict__ wsum,
                                  Geometry g, int D, int64_t M) {
  // One-element chunks of a one-channel geometry: one thread per window voxel.
  const Geometry g1{g.N, 1, {g.S[0], g.S[1], g.S[2]}, {g.W[0], g.W[1], g.W[2]}};
  const int64_t total = window_chunk_count<1>(g1, M);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    WindowChunk<int64_t> ch;
    const bool ok = window_chunk<1>(g1, org, sel, D, i, &ch);
    CUDA_KERNEL_ASSERT(ok && "fastquilt.scatter_add_windows: origin out of bounds");
    if (ok) gpuAtomicAdd(wsum + ch.voxel, weight == nullptr ? acc_t(1) : weight[ch.weight]);
  }
}

// Unchecked (op_entry_points.h checks the arguments): adds into acc and weight_sum.
void scatter_add_windows_cuda(const at::Tensor& patches, const at::Tensor& origins,
                              const c10::optional<at::Tensor>& weight, const at::Tensor& acc,
                              const c10::optional<at::Tensor>& weight_sum, const Geometry& g) {
  const int64_t M = origins.size(0);
  if (M == 0) return;
  c10::cuda::CUDAGuard guard(patches.device());
  const int D = static_cast<int>(patches.dim()) - 2;
  const auto p = patches.contiguous();
  const auto org = origins.contiguous();
  const auto w = contiguous_or_none(weight);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "scatter_add_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = data_or_null<acc_t>(w);
    acc_t* ws = mutable_data_or_null<acc_t>(weight_sum);
    // Adds the windows sel[0 .. count) (all M windows for sel == nullptr) in one launch.
    auto launch = [&](const int64_t* sel, int64_t count) {
      if (g.C > 0 && p.numel() > 0) {
        const int64_t total = window_chunk_count<kScatterElements>(g, count);
        // acc / weight_sum may be views at any element offset: float4 atomics need both base
        // pointers 16-byte aligned (the chunk offsets are checked per chunk).
        const bool vec = aligned16(acc.const_data_ptr()) && (ws == nullptr || aligned16(ws));
        const bool fits32 = p.numel() <= INT32_MAX && acc.numel() <= INT32_MAX;
        auto kernel = fits32 ? scatter_kernel<int32_t, scalar_t, acc_t>
                             : scatter_kernel<int64_t, scalar_t, acc_t>;
        kernel<<<blocks_for(total), kThreads, 0, stream>>>(
            p.const_data_ptr<scalar_t>(), org.const_data_ptr<int64_t>(), wp, sel,
            acc.mutable_data_ptr<acc_t>(), ws, g, D, total, vec);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      } else if (ws != nullptr) {
        const int64_t work = count * g.W[0] * g.W[1] * g.W[2];
        weight_sum_kernel<acc_t><<<blocks_for(work), kThreads, 0, stream>>>(
            org.const_data_ptr<int64_t>(), wp, sel, ws, g, D, count);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    };
    if (!at::globalContext().deterministicAlgorithms()) {
      launch(nullptr, M);
      return;
    }
    // torch.use_deterministic_algorithms(True): atomics alone make float sums depend on the
    // scheduling. Group the windows into sets of pairwise disjoint windows (on the host: one
    // device-to-host copy of the origins) and launch the sets one after another: each
    // accumulator element then gets at most one add per launch, in the same order every run.
    const auto org_host = org.cpu();
    const auto window = patches.sizes().slice(2);
    const WindowGroups groups =
        disjoint_window_groups(org_host.const_data_ptr<int64_t>(), M, D, window.data());
    const auto order = at::tensor(groups.order, org_host.options()).to(org.device());
    for (size_t k = 0; k + 1 < groups.bounds.size(); ++k)
      launch(order.const_data_ptr<int64_t>() + groups.bounds[k],
             groups.bounds[k + 1] - groups.bounds[k]);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("scatter_add_windows", &scatter_add_windows_op<&scatter_add_windows_cuda>);
  m.impl("scatter_add_windows_", &scatter_add_windows_inplace_op<&scatter_add_windows_cuda>);
}

}  // namespace fastquilt::cuda
