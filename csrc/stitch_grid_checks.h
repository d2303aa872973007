// Argument checks of the regular-grid ops (stitch_grid, grid_weight_sum, grid_normalize_),
// shared by CPU and CUDA; they return the checked grid (kernel_bodies/geometry.h).
#pragma once
#include <vector>

#include "op_checks.h"

namespace fastquilt {

inline GridGeometry check_stitch_grid(const at::Tensor& patches,
                                      const c10::optional<at::Tensor>& weight,
                                      at::IntArrayRef spatial, at::IntArrayRef step,
                                      const char* op) {
  check_float_patches(patches, op);
  auto window = patches.sizes().slice(2);
  const size_t D = window.size();
  TORCH_CHECK_VALUE(spatial.size() == D && step.size() == D, msg(op, ": spatial_size ", spatial,
                    " and step ", step, " must each have ", D, " sizes"));
  for (size_t d = 0; d < D; ++d) {
    TORCH_CHECK_VALUE(step[d] >= 1, msg(op, ": step must be >= 1, got ", step));
    TORCH_CHECK_VALUE(window[d] <= spatial[d], msg(op, ": window ", window,
                      " is larger than spatial_size ", spatial, " on axis ", d));
  }
  check_weight(weight, patches.scalar_type(), window, patches, op);
  GridGeometry gg =
      make_grid_geometry(patches.size(1), spatial.data(), window.data(), step.data(), D);
  TORCH_CHECK_VALUE(patches.size(0) % gg.num_windows == 0, msg(op, ": ", patches.size(0),
                    " patches is not a whole number of images of ", gg.num_windows,
                    " windows each"));
  gg.g.N = patches.size(0) / gg.num_windows;
  return gg;
}

inline void check_stitch_grid_out(const at::Tensor& patches, const at::Tensor& out,
                                  const GridGeometry& gg, const char* op) {
  TORCH_CHECK_VALUE(out.size(0) == gg.g.N && out.size(1) == gg.g.C, msg(op, ": out must be (",
                    gg.g.N, ", ", gg.g.C, ", *spatial) for these patches, got ", out.sizes()));
  TORCH_CHECK_TYPE(out.scalar_type() == patches.scalar_type(), msg(op, ": out dtype ",
                   out.scalar_type(), " differs from the patches' ", patches.scalar_type()));
  TORCH_CHECK_VALUE(out.is_contiguous(), msg(op, ": out must be contiguous"));
  TORCH_CHECK_VALUE(out.device() == patches.device(), msg(op, ": out must be on ", patches.device()));
}

inline void check_inv_weight_sum(const c10::optional<at::Tensor>& inv, const at::Tensor& patches,
                                 at::IntArrayRef spatial, const char* op) {
  if (!inv.has_value()) return;
  TORCH_CHECK_TYPE(inv->scalar_type() == acc_dtype(patches.scalar_type()),
                   msg(op, ": inv_weight_sum must be ", acc_dtype(patches.scalar_type()),
                       ", got ", inv->scalar_type()));
  TORCH_CHECK_VALUE(inv->sizes() == spatial && inv->is_contiguous(),
                    msg(op, ": inv_weight_sum must be a contiguous tensor of shape ", spatial,
                        ", got ", inv->sizes()));
  TORCH_CHECK_VALUE(inv->device() == patches.device(),
                    msg(op, ": inv_weight_sum is on ", inv->device(), " but patches are on ",
                        patches.device()));
}

// All checks of stitch_grid_into (both backends): the grid, the out buffer and the hint.
inline GridGeometry check_stitch_grid_into(const at::Tensor& patches,
                                           const c10::optional<at::Tensor>& weight,
                                           at::IntArrayRef step, const at::Tensor& out,
                                           const c10::optional<at::Tensor>& inv_weight_sum,
                                           const char* op) {
  TORCH_CHECK_VALUE(out.dim() == patches.dim(), msg(op, ": out must be (N, C, *spatial), got ",
                    out.sizes()));
  const GridGeometry gg = check_stitch_grid(patches, weight, out.sizes().slice(2), step, op);
  check_stitch_grid_out(patches, out, gg, op);
  check_inv_weight_sum(inv_weight_sum, patches, out.sizes().slice(2), op);
  check_no_overlap(out, "out", patches, "patches", op);
  check_no_overlap(out, "out", weight, "weight", op);
  check_no_overlap(out, "out", inv_weight_sum, "inv_weight_sum", op);
  return gg;
}

// grid_weight_sum: weight (*window) float32/float64 -> (*spatial)
inline GridGeometry check_grid_weight_sum(const at::Tensor& weight, at::IntArrayRef spatial,
                                          at::IntArrayRef step, const char* op) {
  TORCH_CHECK_TYPE(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
                   msg(op, ": weight must be float32 or float64, got ", weight.scalar_type()));
  auto window = weight.sizes();
  const size_t D = window.size();
  TORCH_CHECK_VALUE((D == 2 || D == 3) && spatial.size() == D && step.size() == D,
                    msg(op, ": weight ", window, ", spatial_size ", spatial, " and step ", step,
                        " must each have 2 or 3 (the same number of) sizes"));
  for (size_t d = 0; d < D; ++d) {
    TORCH_CHECK_VALUE(step[d] >= 1, msg(op, ": step must be >= 1, got ", step));
    TORCH_CHECK_VALUE(window[d] >= 1 && window[d] <= spatial[d],
                      msg(op, ": window ", window, " does not fit spatial_size ", spatial));
  }
  GridGeometry gg = make_grid_geometry(1, spatial.data(), window.data(), step.data(), D);
  gg.g.N = 1;
  return gg;
}

// grid_normalize_: acc (N, C, *spatial) of the weight's dtype and device, contiguous, written in
// place. The geometry's N and C are acc's.
inline GridGeometry check_grid_normalize(const at::Tensor& acc, const at::Tensor& weight,
                                         at::IntArrayRef step, const char* op) {
  TORCH_CHECK_VALUE(acc.dim() == weight.dim() + 2,
                    msg(op, ": acc must be (N, C, *S) for a weight of ", weight.dim(),
                        " axes, got ", acc.dim(), " dimensions"));
  TORCH_CHECK_VALUE(acc.device() == weight.device(),
                    msg(op, ": acc is on ", acc.device(), " but weight is on ", weight.device()));
  TORCH_CHECK_VALUE(acc.is_contiguous(), msg(op, ": acc must be contiguous"));
  TORCH_CHECK_TYPE(acc.scalar_type() == weight.scalar_type(),
                   msg(op, ": acc and weight must have one dtype (float32 or float64)"));
  GridGeometry gg = check_grid_weight_sum(weight, acc.sizes().slice(2), step, op);
  check_no_overlap(acc, "acc", weight, "weight", op);
  gg.g.N = acc.size(0);
  gg.g.C = acc.size(1);
  return gg;
}

}  // namespace fastquilt
