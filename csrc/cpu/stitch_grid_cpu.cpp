// CPU deterministic stitch for a full regular (qlty step-back) grid, fused with the division:
//   mean[n, c, p] = sum_{windows m covering p} w[p - o_m] * patches[m, c, p - o_m]
//                   / sum_{same m} w[p - o_m]          (fill_value where nothing covers p)
// Output-centric: each task owns one output row (n, z, y) and finds the windows covering it in
// closed form (index_math.h, the same code the CUDA kernel runs), so no accumulator buffers are
// written and the summation order per voxel is fixed.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/cpu_common.h"
#include "stitch_grid_checks.h"

namespace fastquilt::cpu {
namespace {

template <typename scalar_t, typename acc_t>
void stitch_grid_kernel(const scalar_t* patches, const acc_t* weight, scalar_t* out,
                        const GridGeometry& gg, acc_t fill) {
  const Geometry& g = gg.g;
  const int64_t S2 = g.S[2], W2 = g.W[2];
  at::parallel_for(0, g.N * g.S[0] * g.S[1], 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> num(S2), den(S2);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t y = t % g.S[1];
      const int64_t z = (t / g.S[1]) % g.S[0];
      const int64_t n = t / (g.S[1] * g.S[0]);
      int64_t f0, l0, f1, l1;
      grid_cover(z, g.S[0], g.W[0], gg.step[0], &f0, &l0);
      grid_cover(y, g.S[1], g.W[1], gg.step[1], &f1, &l1);
      // Denominator once per row, shared by all channels.
      std::fill(den.begin(), den.end(), acc_t(0));
      for (int64_t i0 = f0; i0 <= l0; ++i0)
        for (int64_t i1 = f1; i1 <= l1; ++i1) {
          const int64_t a = z - grid_start(i0, g.S[0], g.W[0], gg.step[0]);
          const int64_t b = y - grid_start(i1, g.S[1], g.W[1], gg.step[1]);
          for (int64_t i2 = 0; i2 < gg.count[2]; ++i2) {
            acc_t* d = den.data() + grid_start(i2, S2, W2, gg.step[2]);
            if (weight == nullptr) {
              for (int64_t x = 0; x < W2; ++x) d[x] += acc_t(1);
            } else {
              const acc_t* w = weight + weight_offset(g, a, b, 0);
              for (int64_t x = 0; x < W2; ++x) d[x] += w[x];
            }
          }
        }
      for (int64_t c = 0; c < g.C; ++c) {
        std::fill(num.begin(), num.end(), acc_t(0));
        for (int64_t i0 = f0; i0 <= l0; ++i0)
          for (int64_t i1 = f1; i1 <= l1; ++i1) {
            const int64_t a = z - grid_start(i0, g.S[0], g.W[0], gg.step[0]);
            const int64_t b = y - grid_start(i1, g.S[1], g.W[1], gg.step[1]);
            const int64_t m0 = n * gg.num_windows + (i0 * gg.count[1] + i1) * gg.count[2];
            for (int64_t i2 = 0; i2 < gg.count[2]; ++i2) {
              acc_t* d = num.data() + grid_start(i2, S2, W2, gg.step[2]);
              const scalar_t* p = patches + patch_offset(g, m0 + i2, c, a, b, 0);
              if (weight == nullptr) {
                for (int64_t x = 0; x < W2; ++x) d[x] += static_cast<acc_t>(p[x]);
              } else {
                const acc_t* w = weight + weight_offset(g, a, b, 0);
                for (int64_t x = 0; x < W2; ++x) d[x] += static_cast<acc_t>(p[x]) * w[x];
              }
            }
          }
        scalar_t* o = out + image_offset(g, n, c, z, y, 0);
        for (int64_t x = 0; x < S2; ++x)
          o[x] = static_cast<scalar_t>(den[x] > acc_t(0) ? num[x] / den[x] : fill);
      }
    }
  });
}

void stitch_grid_into_cpu(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                          at::IntArrayRef step, double fill_value, const at::Tensor& out) {
  constexpr const char* op = "fastquilt.stitch_grid_into";
  TORCH_CHECK_VALUE(out.dim() == patches.dim(), msg(op, ": out must be (N, C, *spatial), got ",
                    out.sizes()));
  const GridGeometry gg = check_stitch_grid(patches, weight, out.sizes().slice(2), step, op);
  check_stitch_grid_out(patches, out, gg, op);
  if (out.numel() == 0) return;
  const auto p = patches.contiguous();
  c10::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "stitch_grid_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    stitch_grid_kernel<scalar_t, acc_t>(p.const_data_ptr<scalar_t>(),
                                        w.has_value() ? w->const_data_ptr<acc_t>() : nullptr,
                                        out.mutable_data_ptr<scalar_t>(), gg,
                                        static_cast<acc_t>(fill_value));
  });
}

at::Tensor stitch_grid_cpu(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                           at::IntArrayRef spatial_size, at::IntArrayRef step,
                           double fill_value) {
  auto out = at::empty(stitch_grid_out_shape(patches, weight, spatial_size, step), patches.options());
  stitch_grid_into_cpu(patches, weight, step, fill_value, out);
  return out;
}

at::Tensor grid_weight_sum_cpu(const at::Tensor& weight, at::IntArrayRef spatial_size,
                               at::IntArrayRef step) {
  const GridGeometry gg = check_grid_weight_sum(weight, spatial_size, step,
                                                "fastquilt.grid_weight_sum");
  auto out = at::empty(spatial_size, weight.options());
  const auto w = weight.contiguous();
  const Geometry& g = gg.g;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_weight_sum_cpu", [&] {
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.S[0] * g.S[1], 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t z = t / g.S[1], y = t % g.S[1];
        for (int64_t x = 0; x < g.S[2]; ++x)
          o[t * g.S[2] + x] = grid_voxel_weight_sum<scalar_t>(g, gg.step, wp, z, y, x);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("grid_weight_sum", &grid_weight_sum_cpu);
  m.impl("stitch_grid", &stitch_grid_cpu);
  m.impl("stitch_grid_into", &stitch_grid_into_cpu);
}

}  // namespace fastquilt::cpu
