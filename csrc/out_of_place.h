// The out-of-place ops, written once for every backend on top of that backend's `_into` /
// in-place kernel: allocate the result (shape checks first), then fill it.
#pragma once
#include <tuple>

#include "op_checks.h"
#include "stitch_grid_checks.h"

namespace fastquilt {

using GatherInto = void (*)(const at::Tensor&, const at::Tensor&,
                            const c10::optional<at::Tensor>&, const at::Tensor&);
using ScatterAddInplace = void (*)(const at::Tensor&, const at::Tensor&,
                                   const c10::optional<at::Tensor>&, const at::Tensor&,
                                   const c10::optional<at::Tensor>&);
using StitchGridInto = void (*)(const at::Tensor&, const c10::optional<at::Tensor>&,
                                at::IntArrayRef, double, const at::Tensor&,
                                const c10::optional<at::Tensor>&);

template <GatherInto into>
at::Tensor gather_windows_via(const at::Tensor& input, const at::Tensor& origins,
                              const c10::optional<at::Tensor>& weight, at::IntArrayRef window) {
  auto out = empty_patches(input, origins, window);
  into(input, origins, weight, out);
  return out;
}

template <ScatterAddInplace add>
std::tuple<at::Tensor, at::Tensor> scatter_add_windows_via(
    const at::Tensor& patches, const at::Tensor& origins, const c10::optional<at::Tensor>& weight,
    at::IntArrayRef spatial_size, int64_t num_images) {
  check_scatter(patches, origins, weight, spatial_size, num_images,
                "fastquilt.scatter_add_windows");
  auto [acc, wsum] = zero_accumulators(patches, spatial_size, num_images);
  add(patches, origins, weight, acc, wsum);
  return {acc, wsum};
}

template <StitchGridInto into>
at::Tensor stitch_grid_via(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                           at::IntArrayRef spatial_size, at::IntArrayRef step, double fill_value,
                           const c10::optional<at::Tensor>& inv_weight_sum) {
  auto out = at::empty(stitch_grid_out_shape(patches, weight, spatial_size, step),
                       patches.options());
  into(patches, weight, step, fill_value, out, inv_weight_sum);
  return out;
}

}  // namespace fastquilt
