// CPU deterministic stitch for a full regular (qlty step-back) grid, fused with the division:
//   mean[n, c, p] = sum_{windows m covering p} w[p - o_m] * patches[m, c, p - o_m]
//                   / sum_{same m} w[p - o_m]          (fill_value where nothing covers p)
// Output-centric: each task owns one output row (n, z, y) and finds the windows covering it in
// closed form (kernel_bodies/geometry.h, the same code the CUDA kernel runs), so no
// accumulator buffers are written and the summation order per voxel is fixed.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/float16_rows.h"
#include "cpu/grid_rows.h"
#include "cpu/row_kernels.h"
#include "cpu/simd.h"
#include "optional_tensor.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

// num[x] += sum_k p[k][x] * w[k][x] for the P windows (pairs along z, y) covering one row:
// one pass over num per x-window instead of P passes.
template <int P, typename scalar_t, typename acc_t>
FQ_ALWAYS_INLINE void fused_axpy(acc_t* __restrict__ num, const scalar_t* const* p,
                                 const acc_t* const* w, int64_t off_p, int64_t n) {
  const scalar_t* pp[P];
  const acc_t* ww[P];
  for (int k = 0; k < P; ++k) { pp[k] = p[k] + off_p; ww[k] = w[k]; }
  for (int64_t x = 0; x < n; ++x) {
    acc_t s = num[x];
    for (int k = 0; k < P; ++k) s += static_cast<acc_t>(pp[k][x]) * ww[k][x];
    num[x] = s;
  }
}

// d[x] += the P windows' rows at `off`, weighted, in the fixed order.
template <typename row_t, typename acc_t>
FQ_ALWAYS_INLINE void add_windows(acc_t* __restrict__ d, const row_t* const* rows,
                                  const acc_t* const* wrow, int P, int64_t off, int64_t n) {
  switch (P) {
    case 1: fused_axpy<1>(d, rows, wrow, off, n); break;
    case 2: fused_axpy<2>(d, rows, wrow, off, n); break;
    case 4: fused_axpy<4>(d, rows, wrow, off, n); break;
    default:
      for (int k = 0; k < P; ++k) {
        const row_t* pk = rows[k] + off;
        for (int64_t x = 0; x < n; ++x) d[x] += static_cast<acc_t>(pk[x]) * wrow[k][x];
      }
  }
}

#if defined(__GNUC__)
#define FQ_PREFETCH(p) __builtin_prefetch((p), 0, 1)
#else
#define FQ_PREFETCH(p)
#endif
constexpr int64_t kAhead = 4;  // rows: far enough to hide a DRAM fetch behind a row's sums

// Everything one output row (n, z, y) needs, for all channels, given the rows of the P windows
// covering it along z and y. Inlined into the baseline and AVX2 variants below (cpu/simd.h).
template <typename scalar_t, typename acc_t>
FQ_ALWAYS_INLINE void stitch_row(const scalar_t* const* prow, const acc_t* const* wrow, int P,
                                 const GridGeometry& gg, int64_t win, int64_t patch_c,
                                 acc_t* __restrict__ num, acc_t* __restrict__ den_buf,
                                 const acc_t* inv_row, scalar_t* __restrict__ out,
                                 int64_t out_c, acc_t fill, acc_t* const* conv) {
  const Geometry& g = gg.g;
  const int64_t S2 = g.S[2], W2 = g.W[2];
  const acc_t* den = inv_row;  // 1 / weight sum of this row, 0 where nothing covers it
  if (den == nullptr) {
    row_weight_sum(den_buf, wrow, P, gg, /*inverse=*/true);
    den = den_buf;
  }
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t x = 0; x < S2; ++x) num[x] = acc_t(0);
    for (int64_t i2 = 0; i2 < gg.count[2]; ++i2) {
      acc_t* d = num + grid_start(i2, S2, W2, gg.step[2]);
      const int64_t off = i2 * win + c * patch_c;
      // The next output rows read the next rows of these same patches: dozens of short
      // streams, more than the hardware prefetcher tracks. Prefetch kAhead rows ahead.
      for (int k = 0; k < P; ++k)
        for (int64_t x = 0; x < W2; x += 64 / static_cast<int64_t>(sizeof(scalar_t)))
          FQ_PREFETCH(prow[k] + off + kAhead * W2 + x);
      if constexpr (kFloat16Type<scalar_t>) {
        for (int k = 0; k < P; ++k) to_float_row(prow[k] + off, conv[k], W2);
        add_windows(d, conv, wrow, P, 0, W2);
      } else {
        add_windows(d, prow, wrow, P, off, W2);
      }
    }
    scalar_t* o = out + c * out_c;
    if constexpr (kFloat16Type<scalar_t>) {
      for (int64_t x = 0; x < S2; ++x) num[x] = den[x] > acc_t(0) ? num[x] * den[x] : fill;
      from_float_row(num, o, S2);
    } else {
      for (int64_t x = 0; x < S2; ++x)
        o[x] = static_cast<scalar_t>(den[x] > acc_t(0) ? num[x] * den[x] : fill);
    }
  }
}

template <typename scalar_t, typename acc_t>
void stitch_row_base(const scalar_t* const* prow, const acc_t* const* wrow, int P,
                     const GridGeometry& gg, int64_t win, int64_t patch_c, acc_t* num,
                     acc_t* den, const acc_t* inv_row, scalar_t* out, int64_t out_c,
                     acc_t fill, acc_t* const* conv) {
  stitch_row(prow, wrow, P, gg, win, patch_c, num, den, inv_row, out, out_c, fill, conv);
}

#ifdef FQ_HAVE_AVX2_VARIANTS
template <typename scalar_t, typename acc_t>
FQ_TARGET_AVX2 void stitch_row_avx2(const scalar_t* const* prow, const acc_t* const* wrow, int P,
                                    const GridGeometry& gg, int64_t win, int64_t patch_c,
                                    acc_t* num, acc_t* den, const acc_t* inv_row, scalar_t* out,
                                    int64_t out_c, acc_t fill, acc_t* const* conv) {
  stitch_row(prow, wrow, P, gg, win, patch_c, num, den, inv_row, out, out_c, fill, conv);
}
#endif

template <typename scalar_t, typename acc_t>
void stitch_grid_kernel(const scalar_t* patches, const acc_t* weight, const acc_t* inv_wsum,
                        scalar_t* out, const GridGeometry& gg, acc_t fill) {
  const Geometry& g = gg.g;
  const int64_t patch_c = g.W[0] * g.W[1] * g.W[2];  // patch offset between channels
  const int64_t win = g.C * patch_c;                  // ... between consecutive windows
  const int64_t out_c = g.S[0] * g.S[1] * g.S[2];     // output offset between channels
  std::vector<acc_t> ones;
  if (weight == nullptr) ones.assign(patch_c, acc_t(1));
  const acc_t* wt = weight != nullptr ? weight : ones.data();
  // Without the caller's 1 / weight sum: one row per class of output rows (grid_rows.h), the
  // rows each task would sum (same code and order), unless the classes are nearly as many as
  // the rows; then each task sums its own.
  const GridRowClasses classes(gg);
  std::vector<acc_t> class_inv;
  if (inv_wsum == nullptr && classes.size() * 2 <= g.S[0] * g.S[1])
    class_inv = class_weight_rows(gg, classes, wt, /*inverse=*/true);
  // Task = one output row (n, z, y), all channels: the denominator is computed once and the
  // rows of the windows covering it along z and y are added in one fused pass per x-window,
  // always in the same order.
  at::parallel_for(0, g.N * g.S[0] * g.S[1], 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> num(g.S[2]), den(g.S[2]);
    std::vector<const scalar_t*> prow;
    std::vector<const acc_t*> wrow;
    std::vector<acc_t> conv_buf;  // 16-bit floats: the covering rows in float32 (float16_rows.h)
    std::vector<acc_t*> conv;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t y = t % g.S[1];
      const int64_t z = (t / g.S[1]) % g.S[0];
      const int64_t n = t / (g.S[1] * g.S[0]);
      prow.clear();
      wrow.clear();
      for_each_covering_pair(gg, n, z, y, [&](int64_t m0, int64_t a, int64_t b) {
        prow.push_back(patches + patch_offset(g, m0, int64_t(0), a, b, int64_t(0)));
        wrow.push_back(wt + weight_offset(g, a, b, int64_t(0)));
      });
      const int P = static_cast<int>(prow.size());
      if (kFloat16Type<scalar_t> && conv.size() < prow.size()) {
        conv_buf.resize(prow.size() * g.W[2]);
        conv.resize(prow.size());
        for (size_t k = 0; k < conv.size(); ++k) conv[k] = conv_buf.data() + k * g.W[2];
      }
      scalar_t* o = out + image_offset(g, n, 0, z, y, 0);
      const acc_t* inv_row = inv_wsum != nullptr ? inv_wsum + (z * g.S[1] + y) * g.S[2]
                             : class_inv.empty() ? nullptr
                                                 : class_inv.data() + classes.of(z, y) * g.S[2];
#ifdef FQ_HAVE_AVX2_VARIANTS
      if (cpu_has_avx2()) {
        stitch_row_avx2(prow.data(), wrow.data(), P, gg, win, patch_c, num.data(), den.data(),
                        inv_row, o, out_c, fill, conv.data());
        continue;
      }
#endif
      stitch_row_base(prow.data(), wrow.data(), P, gg, win, patch_c, num.data(), den.data(),
                      inv_row, o, out_c, fill, conv.data());
    }
  });
}

// Unchecked (op_entry_points.h checks the arguments): out (N, C, *S), contiguous.
void stitch_grid_cpu(const at::Tensor& patches, const c10::optional<at::Tensor>& weight,
                     const c10::optional<at::Tensor>& inv_weight_sum, const at::Tensor& out,
                     const GridGeometry& geometry, double fill_value) {
  const GridGeometry gg = geometry;  // a local const (op_entry_points.h)
  if (out.numel() == 0) return;
  const auto p = patches.contiguous();
  const auto w = contiguous_or_none(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "stitch_grid_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    stitch_grid_kernel<scalar_t, acc_t>(
        p.const_data_ptr<scalar_t>(), data_or_null<acc_t>(w),
        data_or_null<acc_t>(inv_weight_sum),
        out.mutable_data_ptr<scalar_t>(), gg, static_cast<acc_t>(fill_value));
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("stitch_grid", &stitch_grid_op<&stitch_grid_cpu>);
  m.impl("stitch_grid_into", &stitch_grid_into_op<&stitch_grid_cpu>);
}

}  // namespace fastquilt::cpu
