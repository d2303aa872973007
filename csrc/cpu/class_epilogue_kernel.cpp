// CPU class epilogue: per voxel, the weighted mean of C class scores, its argmax (the label),
// the mean of that class and the entropy of the mean, in one pass over the accumulator: the
// operations of kernel_bodies/class_epilogue.h (the CUDA kernel's body, one voxel at a time) in
// the same order per voxel, run over blocks of voxels a channel at a time so that the reads of
// a channel are contiguous and the compare-and-select vectorises (one voxel at a time reads a
// cache line per channel and runs at about 1.5 GB/s). The blocks of each image are split
// among the threads; each voxel reads its C channels once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "class_epilogue_checks.h"
#include "kernel_bodies/class_epilogue.h"
#include "optional_tensor.h"

namespace fastquilt::cpu {
namespace {

constexpr int64_t kBlock = 512;  // voxels a channel at a time: 2 KiB of float32

// The body's mean as a select: with -fno-trapping-math (CMakeLists.txt) the loops below
// vectorise.
template <bool kNormalise, typename acc_t>
inline acc_t normalised_value(acc_t a, acc_t inv, acc_t fill) {
  return kNormalise ? mean_or_fill(a, inv, fill) : a;
}

// Voxels [v0, v0 + nv) (nv <= kBlock) of one image: acc, ws, lab, p, h point at its voxel 0.
template <bool kNormalise, bool kEntropy, typename acc_t, typename label_t>
void epilogue_block(const acc_t* acc, int64_t C, int64_t V, const acc_t* ws, acc_t fill,
                    int64_t v0, int64_t nv, label_t* lab, acc_t* p, acc_t* h) {
  acc_t inv[kBlock], best_v[kBlock], ent[kBlock];
  int32_t best[kBlock];
  for (int64_t v = 0; v < nv; ++v) {
    inv[v] = kNormalise ? inverse_or_zero(ws[v0 + v]) : acc_t(1);
    ent[v] = acc_t(0);
  }
  for (int64_t c = 0; c < C; ++c) {
    const acc_t* row = acc + c * V + v0;
    if (c == 0) {
      for (int64_t v = 0; v < nv; ++v) {
        const acc_t x = normalised_value<kNormalise>(row[v], inv[v], fill);
        best_v[v] = x;
        best[v] = 0;
        if (kEntropy) ent[v] -= p_log_p(x);
      }
      continue;
    }
    const auto ci = static_cast<int32_t>(c);
    for (int64_t v = 0; v < nv; ++v) {
      const acc_t x = normalised_value<kNormalise>(row[v], inv[v], fill);
      // the body's rule: the first maximum; a NaN counts as the maximum
      const acc_t b = best_v[v];
      const bool take = (b == b) & ((x != x) | (x > b));
      best_v[v] = take ? x : b;
      best[v] = take ? ci : best[v];
      if (kEntropy) ent[v] -= p_log_p(x);
    }
  }
  for (int64_t v = 0; v < nv; ++v) {
    lab[v0 + v] = static_cast<label_t>(best[v]);
    if (p != nullptr) p[v0 + v] = best_v[v];
    if (kEntropy) h[v0 + v] = kNormalise ? entropy_or_fill(ent[v], inv[v], fill) : ent[v];
  }
}

template <bool kNormalise, bool kEntropy, typename acc_t, typename label_t>
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
  const int64_t blocks = (V + kBlock - 1) / kBlock;
  at::parallel_for(0, N * blocks, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / blocks, v0 = (i - n * blocks) * kBlock;
      epilogue_block<kNormalise, kEntropy>(
          a + n * C * V, C, V, kNormalise ? ws + n * V : nullptr, fill, v0,
          std::min(kBlock, V - v0), lab + n * V, p != nullptr ? p + n * V : nullptr,
          kEntropy ? h + n * V : nullptr);
    }
  });
}

template <typename acc_t, typename label_t>
void epilogue_dispatch(const at::Tensor& acc, const c10::optional<at::Tensor>& weight_sum,
                       double fill_value, const at::Tensor& labels,
                       const c10::optional<at::Tensor>& prob,
                       const c10::optional<at::Tensor>& entropy) {
  const bool normalise = weight_sum.has_value() && weight_sum->defined();
  const bool want_h = entropy.has_value() && entropy->defined();
  if (normalise && want_h)
    epilogue_loop<true, true, acc_t, label_t>(acc, weight_sum, fill_value, labels, prob, entropy);
  else if (normalise)
    epilogue_loop<true, false, acc_t, label_t>(acc, weight_sum, fill_value, labels, prob, entropy);
  else if (want_h)
    epilogue_loop<false, true, acc_t, label_t>(acc, weight_sum, fill_value, labels, prob, entropy);
  else
    epilogue_loop<false, false, acc_t, label_t>(acc, weight_sum, fill_value, labels, prob, entropy);
}

// Unchecked (class_epilogue_checks.h checks the arguments and allocates the outputs).
void class_epilogue_cpu(const at::Tensor& acc, const c10::optional<at::Tensor>& weight_sum,
                        double fill_value, const at::Tensor& labels,
                        const c10::optional<at::Tensor>& prob,
                        const c10::optional<at::Tensor>& entropy) {
  if (labels.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "class_epilogue_cpu", [&] {
    if (labels.scalar_type() == at::kByte)
      epilogue_dispatch<scalar_t, uint8_t>(acc, weight_sum, fill_value, labels, prob, entropy);
    else
      epilogue_dispatch<scalar_t, uint16_t>(acc, weight_sum, fill_value, labels, prob, entropy);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("class_epilogue", &class_epilogue_op<&class_epilogue_cpu>);
}

}  // namespace fastquilt::cpu
