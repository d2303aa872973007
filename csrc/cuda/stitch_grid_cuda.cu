// CUDA deterministic stitch for a full regular grid, fused with the division. Each output
// voxel sums, in a fixed order, the windows covering it — found in closed form per axis by
// grid_cover() (index_math.h, the code the CPU kernel runs) — and writes sum(w p) / sum(w)
// once. No atomics, no accumulator buffers: bit-identical run to run.
// Layout: one block per output row (n, c, z, y) (grid-stride), threads along x.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "cuda/cuda_common.cuh"
#include "stitch_grid_checks.h"

namespace fastquilt::cuda {
namespace {

constexpr int kRowThreads = 128;
constexpr int kMaxPairs = 64;  // (z, y) window pairs per row kept in shared memory

template <typename scalar_t, typename acc_t>
__global__ void stitch_grid_kernel(const scalar_t* __restrict__ patches,
                                   const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                                   GridGeometry gg, acc_t fill) {
  // Per row, the windows covering it along z and y are the same for every x: their patch-row
  // and weight-row offsets are computed once per block into shared memory.
  __shared__ int64_t s_pbase[kMaxPairs];
  __shared__ int64_t s_wbase[kMaxPairs];
  const Geometry& g = gg.g;
  const int64_t rows = g.N * g.C * g.S[0] * g.S[1];
  const int64_t win_stride = g.C * g.W[0] * g.W[1] * g.W[2];  // between consecutive windows
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    int64_t t = fast_div(row, g.S[1]);
    const int64_t y = row - t * g.S[1];
    int64_t u = fast_div(t, g.S[0]);
    const int64_t z = t - u * g.S[0];
    const int64_t n = fast_div(u, g.C);
    const int64_t c = u - n * g.C;
    int64_t f0, l0, f1, l1;
    grid_cover(z, g.S[0], g.W[0], gg.step[0], &f0, &l0);
    grid_cover(y, g.S[1], g.W[1], gg.step[1], &f1, &l1);
    const int64_t n0 = l0 >= f0 ? l0 - f0 + 1 : 0, n1 = l1 >= f1 ? l1 - f1 + 1 : 0;
    const int64_t pairs = n0 * n1;
    scalar_t* o = out + image_offset(g, n, c, z, y, 0);
    const bool cached = pairs <= kMaxPairs;  // uniform across the block
    if (cached) {
      __syncthreads();  // the previous row is done with the shared arrays
      for (int64_t k = threadIdx.x; k < pairs; k += blockDim.x) {
        const int64_t i0 = f0 + k / n1, i1 = f1 + k % n1;
        const int64_t a = z - grid_start(i0, g.S[0], g.W[0], gg.step[0]);
        const int64_t b = y - grid_start(i1, g.S[1], g.W[1], gg.step[1]);
        const int64_t m0 = n * gg.num_windows + (i0 * gg.count[1] + i1) * gg.count[2];
        s_pbase[k] = patch_offset(g, m0, c, a, b, 0);
        s_wbase[k] = weight_offset(g, a, b, 0);
      }
      __syncthreads();
    }
    for (int64_t x = threadIdx.x; x < g.S[2]; x += blockDim.x) {
      int64_t f2, l2;
      grid_cover(x, g.S[2], g.W[2], gg.step[2], &f2, &l2);
      acc_t num = 0, den = 0;
      if (cached) {
        for (int64_t k = 0; k < pairs; ++k) {
          const scalar_t* p = patches + s_pbase[k];
          for (int64_t i2 = f2; i2 <= l2; ++i2) {
            const int64_t xx = x - grid_start(i2, g.S[2], g.W[2], gg.step[2]);
            const acc_t w = weight == nullptr ? acc_t(1) : weight[s_wbase[k] + xx];
            num += static_cast<acc_t>(p[i2 * win_stride + xx]) * w;
            den += w;
          }
        }
      } else {  // many overlapping windows (tiny steps): compute the offsets on the fly
        for (int64_t i0 = f0; i0 <= l0; ++i0) {
          const int64_t a = z - grid_start(i0, g.S[0], g.W[0], gg.step[0]);
          for (int64_t i1 = f1; i1 <= l1; ++i1) {
            const int64_t b = y - grid_start(i1, g.S[1], g.W[1], gg.step[1]);
            const int64_t m0 = n * gg.num_windows + (i0 * gg.count[1] + i1) * gg.count[2];
            for (int64_t i2 = f2; i2 <= l2; ++i2) {
              const int64_t xx = x - grid_start(i2, g.S[2], g.W[2], gg.step[2]);
              const acc_t w = weight == nullptr ? acc_t(1) : weight[weight_offset(g, a, b, xx)];
              num += static_cast<acc_t>(patches[patch_offset(g, m0 + i2, c, a, b, xx)]) * w;
              den += w;
            }
          }
        }
      }
      o[x] = static_cast<scalar_t>(den > acc_t(0) ? num / den : fill);
    }
  }
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
  c10::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t rows = gg.g.N * gg.g.C * gg.g.S[0] * gg.g.S[1];
  const unsigned int blocks =
      static_cast<unsigned int>(std::min<int64_t>(rows, int64_t(1) << 20));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "stitch_grid_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    stitch_grid_kernel<scalar_t, acc_t><<<blocks, kRowThreads, 0, stream>>>(
        p.const_data_ptr<scalar_t>(), w.has_value() ? w->const_data_ptr<acc_t>() : nullptr,
        out.mutable_data_ptr<scalar_t>(), gg, static_cast<acc_t>(fill_value));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor stitch_grid_cuda(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                            at::IntArrayRef spatial_size, at::IntArrayRef step,
                            double fill_value, const c10::optional<at::Tensor>& inv_weight_sum) {
  auto out = at::empty(stitch_grid_out_shape(patches, weight, spatial_size, step),
                       patches.options());
  stitch_grid_into_cuda(patches, weight, step, fill_value, out, inv_weight_sum);
  return out;
}

template <typename scalar_t>
__global__ void grid_weight_sum_kernel(const scalar_t* __restrict__ weight,
                                       scalar_t* __restrict__ out, GridGeometry gg) {
  const Geometry& g = gg.g;
  const int64_t total = g.S[0] * g.S[1] * g.S[2];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t x = i % g.S[2];
    const int64_t t = i / g.S[2];
    out[i] = grid_voxel_weight_sum<scalar_t>(g, gg.step, weight, t / g.S[1], t % g.S[1], x);
  }
}

at::Tensor grid_weight_sum_cuda(const at::Tensor& weight, at::IntArrayRef spatial_size,
                                at::IntArrayRef step) {
  const GridGeometry gg = check_grid_weight_sum(weight, spatial_size, step,
                                                "fastquilt.grid_weight_sum");
  c10::cuda::CUDAGuard guard(weight.device());
  auto out = at::empty(spatial_size, weight.options());
  const auto w = weight.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_weight_sum_cuda", [&] {
    grid_weight_sum_kernel<scalar_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), gg);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CUDA, m) {
  m.impl("grid_weight_sum", &grid_weight_sum_cuda);
  m.impl("stitch_grid", &stitch_grid_cuda);
  m.impl("stitch_grid_into", &stitch_grid_into_cuda);
}

}  // namespace fastquilt::cuda
