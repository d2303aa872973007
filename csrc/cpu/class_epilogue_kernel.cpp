// CPU class epilogue: per voxel, the weighted mean of C class scores, its argmax (the label),
// the mean of that class and the entropy of the mean, in one pass over the accumulator
// (kernel_bodies/class_epilogue.h, the CUDA kernel's body). The voxels of each image are split
// among the threads; each voxel reads its C channels once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

#include "class_epilogue_checks.h"
#include "kernel_bodies/class_epilogue.h"
#include "optional_tensor.h"

namespace fastquilt::cpu {
namespace {

template <typename acc_t, typename label_t>
void epilogue_loop(const at::Tensor& acc, const c10::optional<at::Tensor>& weight_sum,
                   double fill_value, const at::Tensor& labels,
                   const c10::optional<at::Tensor>& prob,
                   const c10::optional<at::Tensor>& entropy) {
  const int64_t N = acc.size(0), C = acc.size(1), V = acc.numel() / (N * C);
  const acc_t* a = acc.const_data_ptr<acc_t>();
  const acc_t* ws = data_or_null<acc_t>(weight_sum);
  label_t* lab = labels.mutable_data_ptr<label_t>();
  acc_t* p = mutable_data_or_null<acc_t>(prob);
  acc_t* h = mutable_data_or_null<acc_t>(entropy);
  const auto fill = static_cast<acc_t>(fill_value);
  at::parallel_for(0, N * V, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / V, v = i - n * V;
      const acc_t inv = ws != nullptr ? inverse_or_zero(ws[i]) : acc_t(1);
      class_epilogue_voxel<acc_t, label_t>(a + n * C * V + v, C, V, ws != nullptr, inv, fill,
                                           lab + i, p != nullptr ? p + i : nullptr,
                                           h != nullptr ? h + i : nullptr);
    }
  });
}

// Unchecked (class_epilogue_checks.h checks the arguments and allocates the outputs).
void class_epilogue_cpu(const at::Tensor& acc, const c10::optional<at::Tensor>& weight_sum,
                        double fill_value, const at::Tensor& labels,
                        const c10::optional<at::Tensor>& prob,
                        const c10::optional<at::Tensor>& entropy) {
  if (labels.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "class_epilogue_cpu", [&] {
    if (labels.scalar_type() == at::kByte)
      epilogue_loop<scalar_t, uint8_t>(acc, weight_sum, fill_value, labels, prob, entropy);
    else
      epilogue_loop<scalar_t, uint16_t>(acc, weight_sum, fill_value, labels, prob, entropy);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("class_epilogue", &class_epilogue_op<&class_epilogue_cpu>);
}

}  // namespace fastquilt::cpu
