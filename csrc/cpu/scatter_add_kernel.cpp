// CPU weighted scatter-add: acc[n, c, origin + i] += weight[i] * patches[m, c, i] and
// weight_sum[n, origin + i] += weight[i], each output plane owned by one task
// (cpu/scatter_planes.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/cpu_common.h"
#include "cpu/row_kernels.h"
#include "cpu/scatter_planes.h"
#include "optional_tensor.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

template <typename acc_t>
void weight_sum_kernel(const std::vector<int64_t>& org, const PlaneIndex& index,
                       const std::vector<int64_t>& planes, const acc_t* weight, acc_t* wsum,
                       const Geometry& g) {
  const Geometry g1{g.N, 1, {g.S[0], g.S[1], g.S[2]}, {g.W[0], g.W[1], g.W[2]}};
  at::parallel_for(0, static_cast<int64_t>(planes.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t z = planes[t] % g.S[0];
      const int64_t n = planes[t] / g.S[0];
      const auto [lo, hi] = index.covering(g, n, z);
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t* o = org.data() + index.order[k] * 4;
        const int64_t a = z - o[1];
        for (int64_t b = 0; b < g.W[1]; ++b) {
          acc_t* dst = wsum + image_offset(g1, n, 0, z, o[2] + b, o[3]);
          if (weight == nullptr) add_one_row(dst, g.W[2]);
          else add_row(dst, weight + weight_offset(g, a, b, 0), g.W[2]);
        }
      }
    }
  });
}

// Unchecked (op_entry_points.h checks the arguments): adds into acc and weight_sum.
void scatter_add_windows_cpu(const at::Tensor& patches, const at::Tensor& origins,
                             const c10::optional<at::Tensor>& weight, const at::Tensor& acc,
                             const c10::optional<at::Tensor>& weight_sum,
                             const Geometry& geometry) {
  const Geometry g = geometry;  // a local const (op_entry_points.h)
  const int64_t D = patches.dim() - 2;
  const auto org = load_origins(origins, g, D, "fastquilt.scatter_add_windows_");
  const int64_t M = origins.size(0);
  if (M == 0) return;
  const PlaneIndex index(org, g, M);
  const std::vector<int64_t> planes = index.covered_planes(g);
  const auto p = patches.contiguous();
  const auto w = contiguous_or_none(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "scatter_add_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = data_or_null<acc_t>(w);
    if (g.C > 0 && p.numel() > 0)
      scatter_kernel<scalar_t, acc_t>(p.const_data_ptr<scalar_t>(), org, index, planes, wp,
                                      acc.mutable_data_ptr<acc_t>(), g);
    if (weight_sum.has_value())
      weight_sum_kernel<acc_t>(org, index, planes, wp, weight_sum->mutable_data_ptr<acc_t>(), g);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("scatter_add_windows", &scatter_add_windows_op<&scatter_add_windows_cpu>);
  m.impl("scatter_add_windows_", &scatter_add_windows_inplace_op<&scatter_add_windows_cpu>);
}

}  // namespace fastquilt::cpu
