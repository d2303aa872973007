// The ops' optional tensors (weight, weight_sum, inv_weight_sum) as the kernels take them:
// contiguous, and as data pointers that are nullptr when the tensor is absent.
#pragma once
#include <ATen/ATen.h>

namespace fastquilt {

inline c10::optional<at::Tensor> contiguous_or_none(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

template <typename T>
const T* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

template <typename T>
T* mutable_data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->mutable_data_ptr<T>() : nullptr;
}

}  // namespace fastquilt
