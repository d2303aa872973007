// The per-voxel class epilogue, shared by the CPU (.cpp) and CUDA (.cu) kernels and run on
// the CPU by tests/cpp/kernel_bodies_test.cpp: a voxel's C accumulated class scores divided by
// its weight sum (fastquilt.normalize's rule: fill_value where nothing covers it), the label
// of the largest mean (ties and NaN as torch.argmax: the first maximum; a NaN counts as the
// maximum), that mean (the probability of the chosen class) and the entropy -sum p log p
// (0 log 0 = 0) of the mean; a voxel nothing covers holds fill_value in both float outputs
// (and label 0), like every float output of a run.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernel_bodies/index_math.h"

namespace fastquilt {

FQ_HD float log_of(float v) { return logf(v); }
FQ_HD double log_of(double v) { return log(v); }

// A voxel's mean of one class: a * inv, or fill where nothing covers the voxel (inv == 0). The
// product is taken in both cases: a select, which the CPU kernel's loops vectorise.
template <typename acc_t>
FQ_HD acc_t mean_or_fill(acc_t a, acc_t inv, acc_t fill) {
  const acc_t m = a * inv;
  return inv == acc_t(0) ? fill : m;
}

// p log p, with 0 log 0 = 0: the entropy's term.
template <typename acc_t>
FQ_HD acc_t p_log_p(acc_t p) {
  return p == acc_t(0) ? acc_t(0) : p * log_of(p);
}

// A voxel's entropy h, or fill where nothing covers the voxel (inv == 0).
template <typename acc_t>
FQ_HD acc_t entropy_or_fill(acc_t h, acc_t inv, acc_t fill) {
  return inv == acc_t(0) ? fill : h;
}

// acc points at the voxel's channel 0; channel c is at acc[c * stride]. inv is the voxel's
// inverse weight sum (inverse_or_zero), or 1 with normalise == false (acc is already the mean).
// The entropy's logarithms (most of the work) are taken only with kEntropy.
template <bool kEntropy, typename acc_t>
FQ_HD int64_t class_epilogue_scan(const acc_t* acc, int64_t C, int64_t stride, bool normalise,
                                  acc_t inv, acc_t fill, acc_t* best_value, acc_t* entropy) {
  int64_t best = 0;
  acc_t best_v = acc_t(0);
  acc_t h = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    acc_t v = acc[c * stride];
    if (normalise) v = mean_or_fill(v, inv, fill);
    const bool v_nan = v != v, best_nan = best_v != best_v;
    if (c == 0 || (!best_nan && (v_nan || v > best_v))) {
      best = c;
      best_v = v;
    }
    if (kEntropy) h -= p_log_p(v);
  }
  *best_value = best_v;
  if (kEntropy) *entropy = normalise ? entropy_or_fill(h, inv, fill) : h;
  return best;
}

// prob and entropy may be nullptr (not asked for).
template <typename acc_t, typename label_t>
FQ_HD void class_epilogue_voxel(const acc_t* acc, int64_t C, int64_t stride, bool normalise,
                                acc_t inv, acc_t fill, label_t* label, acc_t* prob,
                                acc_t* entropy) {
  acc_t best_v;
  const int64_t best =
      entropy != nullptr
          ? class_epilogue_scan<true>(acc, C, stride, normalise, inv, fill, &best_v, entropy)
          : class_epilogue_scan<false>(acc, C, stride, normalise, inv, fill, &best_v, entropy);
  *label = static_cast<label_t>(best);
  if (prob != nullptr) *prob = best_v;
}

}  // namespace fastquilt
