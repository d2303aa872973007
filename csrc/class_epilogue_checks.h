// Argument checks and allocation of class_epilogue (one entry point for both backends, like
// op_entry_points.h): acc (N, C, *S) float32/float64, weight_sum (N, *S) of the same dtype
// and device or absent (acc is already the mean); labels (N, *S) uint8 for up to 256 classes,
// uint16 for up to 65535; probability and entropy (N, *S) in acc's dtype, or empty tensors
// when not asked for.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "op_checks.h"

namespace fastquilt {

constexpr int64_t kMaxClasses = 65535;

inline at::ScalarType label_dtype(int64_t classes) {
  return classes <= 256 ? at::kByte : at::kUInt16;
}

// The kernel of a backend: acc and weight_sum contiguous, outputs allocated.
using ClassEpilogueKernel = void (*)(const at::Tensor& acc,
                                     const c10::optional<at::Tensor>& weight_sum,
                                     double fill_value, const at::Tensor& labels,
                                     const c10::optional<at::Tensor>& prob,
                                     const c10::optional<at::Tensor>& entropy);

inline void check_class_epilogue(const at::Tensor& acc,
                                 const c10::optional<at::Tensor>& weight_sum) {
  constexpr const char* op = "fastquilt.class_epilogue";
  TORCH_CHECK_TYPE(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble,
                   msg(op, ": acc must be float32 or float64, got ", acc.scalar_type()));
  TORCH_CHECK_VALUE(acc.dim() >= 3, msg(op, ": acc must be (N, C, *S), got shape ",
                                        acc.sizes()));
  TORCH_CHECK_VALUE(acc.size(1) >= 1 && acc.size(1) <= kMaxClasses,
                    msg(op, ": acc must have 1 to ", kMaxClasses, " classes (dim 1), got ",
                        acc.size(1)));
  if (!weight_sum.has_value()) return;
  const auto& ws = *weight_sum;
  TORCH_CHECK_TYPE(ws.scalar_type() == acc.scalar_type(),
                   msg(op, ": weight_sum must have acc's dtype ", acc.scalar_type(), ", got ",
                       ws.scalar_type()));
  TORCH_CHECK_VALUE(ws.device() == acc.device(),
                    msg(op, ": weight_sum is on ", ws.device(), " but acc on ", acc.device()));
  std::vector<int64_t> want{acc.size(0)};
  for (int64_t d = 2; d < acc.dim(); ++d) want.push_back(acc.size(d));
  TORCH_CHECK_VALUE(ws.sizes() == at::IntArrayRef(want),
                    msg(op, ": weight_sum must be (N, *S) = ", at::IntArrayRef(want), ", got ",
                        ws.sizes()));
}

template <ClassEpilogueKernel kernel>
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_epilogue_op(
    const at::Tensor& acc, const c10::optional<at::Tensor>& weight_sum, double fill_value,
    bool probability, bool entropy) {
  check_class_epilogue(acc, weight_sum);
  std::vector<int64_t> shape{acc.size(0)};
  for (int64_t d = 2; d < acc.dim(); ++d) shape.push_back(acc.size(d));
  auto labels = at::empty(shape, acc.options().dtype(label_dtype(acc.size(1))));
  auto prob = at::empty(probability ? shape : std::vector<int64_t>{0}, acc.options());
  auto ent = at::empty(entropy ? shape : std::vector<int64_t>{0}, acc.options());
  const auto a = acc.contiguous();
  const auto ws = weight_sum.has_value() ? c10::optional<at::Tensor>(weight_sum->contiguous())
                                         : c10::nullopt;
  kernel(a, ws, fill_value, labels, probability ? c10::optional<at::Tensor>(prob) : c10::nullopt,
         entropy ? c10::optional<at::Tensor>(ent) : c10::nullopt);
  return {labels, prob, ent};
}

}  // namespace fastquilt
