// Argument checks shared by the CPU and CUDA implementations of every op. User errors raise
// (TORCH_CHECK -> RuntimeError / ValueError) with the argument named; the Python layer catches
// most of them earlier with friendlier wording.
#pragma once
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernel_bodies/geometry.h"

namespace fastquilt {

// Error messages are assembled as one std::string here, integers via std::to_string, so our
// library never instantiates ostream's integer formatting itself: with some toolchains (seen
// on the GPU image) a locally instantiated num_put misses the runtime's locale facets and
// crashes inside TORCH_CHECK's message formatting.
inline std::string msg_part(const char* s) { return s; }
inline std::string msg_part(const std::string& s) { return s; }
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
inline std::string msg_part(T v) { return std::to_string(v); }
inline std::string msg_part(at::IntArrayRef a) {
  std::string s = "[";
  for (size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + std::to_string(a[i]);
  return s + "]";
}
inline std::string msg_part(c10::ScalarType t) { return c10::toString(t); }
inline std::string msg_part(const c10::Device& d) { return d.str(); }
template <typename... Args>
std::string msg(const Args&... args) {
  std::string s;
  ((s += msg_part(args)), ...);
  return s;
}

// Accumulation type: float32 for half/bfloat16/float32 data, float64 for float64.
inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_window(at::IntArrayRef window, const char* op) {
  TORCH_CHECK_VALUE(window.size() == 2 || window.size() == 3, msg(op,
                    ": window must give one size per spatial axis (2 or 3 sizes), got ",
                    window.size()));
  for (auto w : window) TORCH_CHECK_VALUE(w >= 1, msg(op, ": window sizes must be >= 1, got ", window));
}

inline void check_origins(const at::Tensor& origins, int64_t D, const at::Tensor& like,
                          const char* op) {
  TORCH_CHECK_TYPE(origins.scalar_type() == at::kLong, msg(op,
                   ": origins must be int64 (torch.long), got ", origins.scalar_type()));
  TORCH_CHECK_VALUE(origins.dim() == 2 && origins.size(1) == 1 + D, msg(op,
                    ": origins must have shape (M, ", 1 + D, ") = [n, start_0, ...], got ",
                    origins.sizes()));
  TORCH_CHECK_VALUE(origins.device() == like.device(), msg(op, ": origins are on ", origins.device(),
                    " but the data is on ", like.device(), "; move them with .to(device)"));
}

inline void check_weight(const c10::optional<at::Tensor>& weight, at::ScalarType data_dtype,
                         at::IntArrayRef window, const at::Tensor& like, const char* op) {
  if (!weight.has_value()) return;
  const auto& w = *weight;
  TORCH_CHECK_TYPE(at::isFloatingType(data_dtype), msg(op,
                   ": a weight needs floating-point data, got ", data_dtype));
  TORCH_CHECK_TYPE(w.scalar_type() == acc_dtype(data_dtype), msg(op, ": weight must be ",
                   acc_dtype(data_dtype), " for ", data_dtype, " data, got ", w.scalar_type()));
  TORCH_CHECK_VALUE(w.sizes() == window, msg(op, ": weight must have the window's shape ", window,
                    ", got ", w.sizes()));
  TORCH_CHECK_VALUE(w.device() == like.device(), msg(op, ": weight is on ", w.device(),
                    " but the data is on ", like.device()));
}

// Whether the bytes two tensors span intersect, whatever their storage objects (two tensors
// made from one numpy array share memory but not a storage). Strides are never negative.
inline bool bytes_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  const auto span = [](const at::Tensor& t) {
    int64_t last = 0;  // the offset of the last element
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    const char* lo = static_cast<const char*>(t.const_data_ptr());
    return std::make_pair(lo, lo + (last + 1) * static_cast<int64_t>(t.element_size()));
  };
  const auto [a_lo, a_hi] = span(a);
  const auto [b_lo, b_hi] = span(b);
  return a_lo < b_hi && b_lo < a_hi;
}

// A buffer an op writes (contiguous) must not share memory with a tensor it reads: the kernels
// read and write concurrently, so the result would be neither the old nor the new values.
// Non-contiguous inputs are skipped: the kernels read a contiguous copy of them (the CPU
// gather reads one in place only where its bytes do not meet the buffer it writes).
inline void check_no_overlap(const at::Tensor& written, const char* written_name,
                             const at::Tensor& read, const char* read_name, const char* op) {
  if (!read.is_contiguous()) return;
  TORCH_CHECK_VALUE(at::get_overlap_status(written, read) == at::MemOverlapStatus::No &&
                        !(written.is_contiguous() && bytes_overlap(written, read)),
                    msg(op, ": ", written_name, " shares memory with ", read_name,
                        "; write into a separate buffer (or pass ", read_name, ".clone())"));
}
inline void check_no_overlap(const at::Tensor& written, const char* written_name,
                             const c10::optional<at::Tensor>& read, const char* read_name,
                             const char* op) {
  if (read.has_value()) check_no_overlap(written, written_name, *read, read_name, op);
}

// gather: input (N, C, *S) -> patches (M, C, *window), for a window that check_window accepts.
inline Geometry check_gather_args(const at::Tensor& input, const at::Tensor& origins,
                                  const c10::optional<at::Tensor>& weight,
                                  at::IntArrayRef window, const char* op) {
  const int64_t D = static_cast<int64_t>(window.size());
  TORCH_CHECK_VALUE(input.dim() == 2 + D, msg(op, ": input must be (N, C, *spatial) with ", D,
                    " spatial axes to match the window, got shape ", input.sizes()));
  for (int64_t d = 0; d < D; ++d)
    TORCH_CHECK_VALUE(window[d] <= input.size(2 + d), msg(op, ": window ", window,
                      " is larger than the image ", input.sizes().slice(2), " on axis ", d));
  check_origins(origins, D, input, op);
  check_weight(weight, input.scalar_type(), window, input, op);
  return make_geometry(input.size(0), input.size(1), input.sizes().slice(2).data(), window.data(),
                       window.size());
}

// Orientation rows of gather_windows_oriented: int64 (M, D) on the data's device. (Their
// values are data: the kernels check them as they read them.)
inline void check_orientation(const at::Tensor& orientation, const at::Tensor& origins, int64_t D,
                              const at::Tensor& like, const char* op) {
  TORCH_CHECK_TYPE(orientation.scalar_type() == at::kLong, msg(op,
                   ": orientation must be int64 (torch.long), got ", orientation.scalar_type()));
  TORCH_CHECK_VALUE(orientation.dim() == 2 && orientation.size(0) == origins.size(0) &&
                        orientation.size(1) == D,
                    msg(op, ": orientation must have shape (M, ", D, ") = (", origins.size(0),
                        ", ", D, ") like the origins, got ", orientation.sizes()));
  TORCH_CHECK_VALUE(orientation.device() == like.device(), msg(op, ": orientation is on ",
                    orientation.device(), " but the data is on ", like.device()));
}

// Patches to average: floating point, (M, C, *window) with 2 or 3 window axes.
inline void check_float_patches(const at::Tensor& patches, const char* op) {
  TORCH_CHECK_TYPE(at::isFloatingType(patches.scalar_type()), msg(op,
                   ": patches must be floating point to be averaged, got ",
                   patches.scalar_type(), " (cast with .float())"));
  TORCH_CHECK_VALUE(patches.dim() == 4 || patches.dim() == 5, msg(op,
                    ": patches must be (M, C, *window) with 2 or 3 window axes, got ",
                    patches.sizes()));
}

// All checks of gather_windows_into (both backends): the gather of out's window size and the
// caller's buffer, (M, C, *window), input dtype, contiguous.
inline Geometry check_gather_into(const at::Tensor& input, const at::Tensor& origins,
                                  const c10::optional<at::Tensor>& weight, const at::Tensor& out,
                                  const char* op) {
  const auto window = out.sizes().slice(2);
  check_window(window, op);
  const Geometry g = check_gather_args(input, origins, weight, window, op);
  TORCH_CHECK_VALUE(out.dim() == input.dim() && out.size(0) == origins.size(0) &&
                        out.size(1) == input.size(1),
                    msg(op, ": out must have shape (M, C, *window) = (", origins.size(0), ", ",
                        input.size(1), ", ...), got ", out.sizes()));
  TORCH_CHECK_TYPE(out.scalar_type() == input.scalar_type(), msg(op, ": out dtype ",
                   out.scalar_type(), " differs from input dtype ", input.scalar_type()));
  TORCH_CHECK_VALUE(out.is_contiguous(), msg(op, ": out must be contiguous"));
  TORCH_CHECK_VALUE(out.device() == input.device(), msg(op, ": out must be on ", input.device()));
  check_no_overlap(out, "out", input, "input", op);
  check_no_overlap(out, "out", weight, "weight", op);
  return g;
}

// A new (M, C, *window) buffer for gather_windows, for a window that check_window accepts.
inline at::Tensor empty_patches(const at::Tensor& input, const at::Tensor& origins,
                                at::IntArrayRef window) {
  std::vector<int64_t> shape{origins.size(0), input.dim() >= 2 ? input.size(1) : 0};
  shape.insert(shape.end(), window.begin(), window.end());
  return at::empty(shape, input.options());
}

// New zeroed accumulators (N, C, *S) and weight sum (N, *S) for scatter_add_windows.
inline std::pair<at::Tensor, at::Tensor> zero_accumulators(const at::Tensor& patches,
                                                           at::IntArrayRef spatial,
                                                           int64_t num_images) {
  const auto opts = patches.options().dtype(acc_dtype(patches.scalar_type()));
  std::vector<int64_t> shape{num_images, patches.size(1)};
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  auto acc = at::zeros(shape, opts);
  shape.erase(shape.begin() + 1);
  return {acc, at::zeros(shape, opts)};
}

// scatter-add: patches (M, C, *window) -> acc (N, C, *S) (+ weight sum (N, *S))
inline Geometry check_scatter(const at::Tensor& patches, const at::Tensor& origins,
                              const c10::optional<at::Tensor>& weight, at::IntArrayRef spatial,
                              int64_t num_images, const char* op) {
  check_float_patches(patches, op);
  auto window = patches.sizes().slice(2);
  const int64_t D = static_cast<int64_t>(window.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(spatial.size()) == D, msg(op, ": spatial_size ", spatial,
                    " must have ", D, " sizes like the patches' window ", window));
  TORCH_CHECK_VALUE(num_images >= 0, msg(op, ": num_images must be >= 0"));
  for (int64_t d = 0; d < D; ++d)
    TORCH_CHECK_VALUE(window[d] <= spatial[d], msg(op, ": window ", window,
                      " is larger than spatial_size ", spatial, " on axis ", d));
  TORCH_CHECK_VALUE(origins.size(0) == patches.size(0), msg(op, ": ", patches.size(0),
                    " patches but ", origins.size(0), " origins"));
  check_origins(origins, D, patches, op);
  check_weight(weight, patches.scalar_type(), window, patches, op);
  return make_geometry(num_images, patches.size(1), spatial.data(), window.data(), window.size());
}

// All checks of the in-place scatter-add (both backends): the scatter into acc's spatial size
// and the accumulators, acc (N, C, *S) and weight_sum (N, *S), contiguous, float32/64.
inline Geometry check_scatter_inplace(const at::Tensor& patches, const at::Tensor& origins,
                                      const c10::optional<at::Tensor>& weight,
                                      const at::Tensor& acc,
                                      const c10::optional<at::Tensor>& wsum, const char* op) {
  TORCH_CHECK_VALUE(acc.dim() >= 2, msg(op, ": acc must be (N, C, *spatial), got ", acc.sizes()));
  const Geometry g =
      check_scatter(patches, origins, weight, acc.sizes().slice(2), acc.size(0), op);
  const auto adt = acc_dtype(patches.scalar_type());
  TORCH_CHECK_TYPE(acc.scalar_type() == adt, msg(op, ": acc must be ", adt, " for ",
                   patches.scalar_type(), " patches, got ", acc.scalar_type()));
  TORCH_CHECK_VALUE(acc.dim() == patches.dim() && acc.size(1) == patches.size(1), msg(op,
                    ": acc must be (N, C, *spatial) with C = ", patches.size(1), ", got ",
                    acc.sizes()));
  TORCH_CHECK_VALUE(acc.is_contiguous(), msg(op, ": acc must be contiguous"));
  TORCH_CHECK_VALUE(acc.device() == patches.device(), msg(op, ": acc is on ", acc.device(),
                    " but patches are on ", patches.device()));
  if (wsum.has_value()) {
    const auto& w = *wsum;
    TORCH_CHECK_TYPE(w.scalar_type() == adt, msg(op, ": weight_sum must be ", adt));
    std::vector<int64_t> want{acc.size(0)};
    for (int64_t d = 2; d < acc.dim(); ++d) want.push_back(acc.size(d));
    TORCH_CHECK_VALUE(w.sizes() == at::IntArrayRef(want), msg(op, ": weight_sum must have shape ",
                      at::IntArrayRef(want), ", got ", w.sizes()));
    TORCH_CHECK_VALUE(w.is_contiguous(), msg(op, ": weight_sum must be contiguous"));
    TORCH_CHECK_VALUE(w.device() == patches.device(), msg(op, ": weight_sum is on ", w.device(),
                      " but patches are on ", patches.device()));
    check_no_overlap(w, "weight_sum", acc, "acc", op);
    check_no_overlap(w, "weight_sum", patches, "patches", op);
    check_no_overlap(w, "weight_sum", weight, "weight", op);
  }
  check_no_overlap(acc, "acc", patches, "patches", op);
  check_no_overlap(acc, "acc", weight, "weight", op);
  return g;
}

}  // namespace fastquilt
