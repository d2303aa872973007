// Every op's entry point, written once for both backends: the argument checks (op_checks.h,
// stitch_grid_checks.h) run once, the out-of-place ops allocate their result, and the
// backend's kernel function does the work with the checked geometry. The kernel functions
// (cpu/*_kernel.cpp, cuda/*_kernel.cu) check no arguments; only what depends on the data is
// checked there (the CPU kernels bounds-check each origin as they read it, the CUDA kernels
// assert it).
#pragma once
#include <tuple>
#include <vector>

#include "op_checks.h"
#include "stitch_grid_checks.h"

namespace fastquilt {

// The kernel functions of a backend, one per op family. (The CPU ones copy the geometry into
// a local const: the compiler then keeps its fields in registers across the calls in their
// loops, which it cannot do through a reference or a parameter passed in memory.)
using GatherKernel = void (*)(const at::Tensor& input, const at::Tensor& origins,
                              const c10::optional<at::Tensor>& weight, const at::Tensor& out,
                              const Geometry& g);
using GatherOrientedKernel = void (*)(const at::Tensor& input, const at::Tensor& origins,
                                      const at::Tensor& orientation, const at::Tensor& out,
                                      const Geometry& g);
using ScatterAddKernel = void (*)(const at::Tensor& patches, const at::Tensor& origins,
                                  const c10::optional<at::Tensor>& weight, const at::Tensor& acc,
                                  const c10::optional<at::Tensor>& weight_sum, const Geometry& g);
using StitchGridKernel = void (*)(const at::Tensor& patches,
                                  const c10::optional<at::Tensor>& weight,
                                  const c10::optional<at::Tensor>& inv_weight_sum,
                                  const at::Tensor& out, const GridGeometry& gg,
                                  double fill_value);
using GridWeightSumKernel = void (*)(const at::Tensor& weight, const at::Tensor& out,
                                     const GridGeometry& gg, bool inverse);
using GridNormalizeKernel = void (*)(const at::Tensor& acc, const at::Tensor& weight,
                                     const GridGeometry& gg, double fill_value);

template <GatherKernel kernel>
at::Tensor gather_windows_op(const at::Tensor& input, const at::Tensor& origins,
                             const c10::optional<at::Tensor>& weight, at::IntArrayRef window) {
  constexpr const char* op = "fastquilt.gather_windows";
  check_window(window, op);
  auto out = empty_patches(input, origins, window);
  kernel(input, origins, weight, out, check_gather_args(input, origins, weight, window, op));
  return out;
}

template <GatherKernel kernel>
void gather_windows_into_op(const at::Tensor& input, const at::Tensor& origins,
                            const c10::optional<at::Tensor>& weight, const at::Tensor& out) {
  kernel(input, origins, weight, out,
         check_gather_into(input, origins, weight, out, "fastquilt.gather_windows"));
}

template <GatherOrientedKernel kernel>
at::Tensor gather_windows_oriented_op(const at::Tensor& input, const at::Tensor& origins,
                                      const at::Tensor& orientation, at::IntArrayRef window) {
  constexpr const char* op = "fastquilt.gather_windows_oriented";
  check_window(window, op);
  const Geometry g = check_gather_args(input, origins, c10::nullopt, window, op);
  check_orientation(orientation, origins, static_cast<int64_t>(window.size()), input, op);
  auto out = empty_patches(input, origins, window);
  kernel(input, origins, orientation, out, g);
  return out;
}

template <GatherOrientedKernel kernel>
void gather_windows_oriented_into_op(const at::Tensor& input, const at::Tensor& origins,
                                     const at::Tensor& orientation, const at::Tensor& out) {
  constexpr const char* op = "fastquilt.gather_windows_oriented";
  const Geometry g = check_gather_into(input, origins, c10::nullopt, out, op);
  check_orientation(orientation, origins, out.dim() - 2, input, op);
  kernel(input, origins, orientation, out, g);
}

template <ScatterAddKernel kernel>
std::tuple<at::Tensor, at::Tensor> scatter_add_windows_op(
    const at::Tensor& patches, const at::Tensor& origins, const c10::optional<at::Tensor>& weight,
    at::IntArrayRef spatial_size, int64_t num_images) {
  const Geometry g = check_scatter(patches, origins, weight, spatial_size, num_images,
                                   "fastquilt.scatter_add_windows");
  auto [acc, wsum] = zero_accumulators(patches, spatial_size, num_images);
  kernel(patches, origins, weight, acc, wsum, g);
  return {acc, wsum};
}

template <ScatterAddKernel kernel>
void scatter_add_windows_inplace_op(const at::Tensor& patches, const at::Tensor& origins,
                                    const c10::optional<at::Tensor>& weight,
                                    const at::Tensor& acc,
                                    const c10::optional<at::Tensor>& weight_sum) {
  kernel(patches, origins, weight, acc, weight_sum,
         check_scatter_inplace(patches, origins, weight, acc, weight_sum,
                               "fastquilt.scatter_add_windows_"));
}

template <StitchGridKernel kernel>
at::Tensor stitch_grid_op(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                          at::IntArrayRef spatial_size, at::IntArrayRef step, double fill_value,
                          const c10::optional<at::Tensor>& inv_weight_sum) {
  const GridGeometry gg =
      check_stitch_grid(patches, weight, spatial_size, step, "fastquilt.stitch_grid");
  // the hint as stitch_grid_into checks it, that op's name in the messages
  check_inv_weight_sum(inv_weight_sum, patches, spatial_size, "fastquilt.stitch_grid_into");
  std::vector<int64_t> shape{gg.g.N, gg.g.C};
  shape.insert(shape.end(), spatial_size.begin(), spatial_size.end());
  auto out = at::empty(shape, patches.options());
  kernel(patches, weight, inv_weight_sum, out, gg, fill_value);
  return out;
}

template <StitchGridKernel kernel>
void stitch_grid_into_op(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                         at::IntArrayRef step, double fill_value, const at::Tensor& out,
                         const c10::optional<at::Tensor>& inv_weight_sum) {
  kernel(patches, weight, inv_weight_sum, out,
         check_stitch_grid_into(patches, weight, step, out, inv_weight_sum,
                                "fastquilt.stitch_grid_into"),
         fill_value);
}

template <GridWeightSumKernel kernel>
at::Tensor grid_weight_sum_op(const at::Tensor& weight, at::IntArrayRef spatial_size,
                              at::IntArrayRef step, bool inverse) {
  const GridGeometry gg =
      check_grid_weight_sum(weight, spatial_size, step, "fastquilt.grid_weight_sum");
  auto out = at::empty(spatial_size, weight.options());
  kernel(weight, out, gg, inverse);
  return out;
}

template <GridNormalizeKernel kernel>
void grid_normalize_op(const at::Tensor& acc, const at::Tensor& weight, at::IntArrayRef step,
                       double fill_value) {
  kernel(acc, weight, check_grid_normalize(acc, weight, step, "fastquilt.grid_normalize_"),
         fill_value);
}

}  // namespace fastquilt
