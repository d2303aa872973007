// CPU weight sums of a full regular grid: grid_weight_sum (the (*S) sum or its inverse),
// grid_normalize_ (an accumulator divided by it in place, no (*S) buffer) and
// grid_inverse_rows (the inverse sum of each class of rows, for scatter_add_grid_batch_).
// Each sums one row per class of output rows (grid_rows.h) and reuses it for every row of the
// class: at 256^3, window 64, step 32, 9,216 rows summed instead of 65,536.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/grid_rows.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

// Unchecked (op_entry_points.h checks the arguments): out (*S), the weight's dtype.
void grid_weight_sum_cpu(const at::Tensor& weight, const at::Tensor& out,
                         const GridGeometry& geometry, bool inverse) {
  const GridGeometry gg = geometry;  // a local const (op_entry_points.h)
  const auto w = weight.contiguous();
  const Geometry& g = gg.g;
  const GridRowClasses classes(gg);
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_weight_sum_cpu", [&] {
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // (at most as many classes as rows: the buffer is never larger than the output)
    const auto rows = class_weight_rows(gg, classes, w.const_data_ptr<scalar_t>(), inverse);
    at::parallel_for(0, g.S[0] * g.S[1], 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t)
        std::copy_n(rows.data() + classes.of(t / g.S[1], t % g.S[1]) * g.S[2], g.S[2],
                    o + t * g.S[2]);
    });
  });
}

// acc (N, C, *S) *= 1 / grid weight sum, fill_value where no weight covers a voxel (inverse
// 0): the same numbers as acc.mul_(grid_weight_sum(inverse=True)) then masked_fill_, in one
// pass over acc and without the (*S) buffer (which costs more in page faults than its sums).
// Unchecked (op_entry_points.h checks the arguments).
void grid_normalize_cpu(const at::Tensor& acc, const at::Tensor& weight,
                        const GridGeometry& geometry, double fill_value) {
  const GridGeometry gg = geometry;  // a local const (op_entry_points.h)
  const Geometry& g = gg.g;
  const int64_t rows_per_image = g.S[0] * g.S[1];
  const int64_t NC = g.N * g.C;
  if (acc.numel() == 0) return;
  const auto w = weight.contiguous();
  const GridRowClasses classes(gg);
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_normalize_cpu", [&] {
    const auto inv = class_weight_rows(gg, classes, w.const_data_ptr<scalar_t>(), true);
    // Rows covered everywhere (almost all) take a plain multiply, which vectorises.
    const auto gaps = class_gaps(inv.data(), classes.size(), g.S[2]);
    const auto fill = static_cast<scalar_t>(fill_value);
    scalar_t* a = acc.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, NC * rows_per_image, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t r = t % rows_per_image;
        const int64_t k = classes.of(r / g.S[1], r % g.S[1]);
        normalize_row(a + t * g.S[2], inv.data() + k * g.S[2], g.S[2], gaps[k], fill);
      }
    });
  });
}

// (inverse rows (K, S2), the class of each output row (*S[:-1]), int64): the rows that
// grid_normalize_ multiplies by, in the same code and order, so the same bits.
std::tuple<at::Tensor, at::Tensor> grid_inverse_rows_op(const at::Tensor& weight,
                                                        at::IntArrayRef spatial_size,
                                                        at::IntArrayRef step) {
  const GridGeometry gg =
      check_grid_weight_sum(weight, spatial_size, step, "fastquilt.grid_inverse_rows");
  const Geometry& g = gg.g;
  const auto w = weight.contiguous();
  const GridRowClasses classes(gg);
  auto rows = at::empty({classes.size(), g.S[2]}, weight.options());
  auto row_class = at::empty(spatial_size.slice(0, spatial_size.size() - 1),
                             weight.options().dtype(at::kLong));
  int64_t* k = row_class.mutable_data_ptr<int64_t>();
  for (int64_t z = 0; z < g.S[0]; ++z)
    for (int64_t y = 0; y < g.S[1]; ++y) k[z * g.S[1] + y] = classes.of(z, y);
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "grid_inverse_rows_cpu", [&] {
    class_weight_rows(gg, classes, w.const_data_ptr<scalar_t>(), true,
                      rows.mutable_data_ptr<scalar_t>());
  });
  return {rows, row_class};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("grid_weight_sum", &grid_weight_sum_op<&grid_weight_sum_cpu>);
  m.impl("grid_normalize_", &grid_normalize_op<&grid_normalize_cpu>);
  m.impl("grid_inverse_rows", &grid_inverse_rows_op);
}

}  // namespace fastquilt::cpu
