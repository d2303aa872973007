// CPU weighted scatter-add: acc[n, c, origin + i] += weight[i] * patches[m, c, i] and
// weight_sum[n, origin + i] += weight[i].
//
// Race-free without atomics and bit-identical for any thread count: the work is split by
// *output* plane (n, c, z) rather than by window. Each plane is owned by one task, which adds
// the rows of every window covering it in one fixed order (windows sorted stably by
// (n, start_0)). qlty's numba stitch splits by window colour instead and races on the
// stepped-back last window.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/cpu_common.h"
#include "cpu/prefetch.h"
#include "cpu/row_kernels.h"
#include "optional_tensor.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

// Windows bucketed by key n * S0 + o0 (counting sort, stable): the windows that cover plane
// (n, z) are the contiguous run with keys in [n*S0 + z - W0 + 1, n*S0 + z].
struct PlaneIndex {
  std::vector<int64_t> order;  // window ids sorted by key
  std::vector<int64_t> start;  // start[k] = first position of key k in order; size N*S0 + 1

  PlaneIndex(const std::vector<int64_t>& org, const Geometry& g, int64_t M)
      : order(M), start(g.N * g.S[0] + 1, 0) {
    for (int64_t m = 0; m < M; ++m) ++start[org[m * 4] * g.S[0] + org[m * 4 + 1] + 1];
    for (size_t k = 1; k < start.size(); ++k) start[k] += start[k - 1];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t m = 0; m < M; ++m) order[fill[org[m * 4] * g.S[0] + org[m * 4 + 1]]++] = m;
  }

  // [lo, hi) into `order` for the windows covering plane z of image n.
  std::pair<int64_t, int64_t> covering(const Geometry& g, int64_t n, int64_t z) const {
    const int64_t first = z - g.W[0] + 1 > 0 ? z - g.W[0] + 1 : 0;
    return {start[n * g.S[0] + first], start[n * g.S[0] + z + 1]};
  }

  // The planes n * S0 + z that some window covers, in order. A streaming batch covers a narrow
  // band of one image: splitting only these among the threads keeps all of them busy (an
  // even split of every plane would give the whole band to one thread).
  std::vector<int64_t> covered_planes(const Geometry& g) const {
    std::vector<int64_t> planes;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t z = 0; z < g.S[0]; ++z) {
        const auto [lo, hi] = covering(g, n, z);
        if (hi > lo) planes.push_back(n * g.S[0] + z);
      }
    return planes;
  }
};

constexpr int64_t kRowsAhead = 8;  // rows between a prefetch and its row's add

template <typename scalar_t, typename acc_t>
void scatter_kernel(const scalar_t* patches, const std::vector<int64_t>& org,
                    const PlaneIndex& index, const std::vector<int64_t>& planes, const acc_t* weight,
                    acc_t* acc, const Geometry& g) {
  const int64_t W2 = g.W[2];
  const int64_t P = static_cast<int64_t>(planes.size());
  // planes of fewer than kRowsAhead rows are asked for a window `ahead` windows on; longer
  // ones row by row, the next window's first rows while a window's last are added
  const bool short_planes = g.W[1] < kRowsAhead;
  const int64_t ahead = short_planes ? (kRowsAhead + g.W[1] - 1) / g.W[1] : 1;
  // task t = (covered plane t / C, channel t % C): each output plane (n, c, z) has one owner
  at::parallel_for(0, P * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c = t % g.C;
      const int64_t nz = planes[t / g.C];
      const int64_t z = nz % g.S[0];
      const int64_t n = nz / g.S[0];
      const auto [lo, hi] = index.covering(g, n, z);
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t m = index.order[k];
        const int64_t* o = org.data() + m * 4;
        const int64_t a = z - o[1];
        acc_t* const dst0 = acc + image_offset(g, n, c, z, o[2], o[3]);
        const scalar_t* const src0 = patches + patch_offset(g, m, c, a, 0, 0);
        // The plane's rows, window after window, are one stream of short runs the hardware
        // does not follow: its patch and accumulator rows are asked for kRowsAhead rows
        // before they are added. Planes of fewer rows (2D: one) ask for whole windows ahead.
        const int64_t mn = k + ahead < hi ? index.order[k + ahead] : -1;
        const int64_t* on = mn >= 0 ? org.data() + mn * 4 : nullptr;
        const scalar_t* const srcn =
            on ? patches + patch_offset(g, mn, c, z - on[1], 0, 0) : nullptr;
        acc_t* const dstn = on ? acc + image_offset(g, n, c, z, on[2], on[3]) : nullptr;
        if (short_planes && on != nullptr)
          for (int64_t b = 0; b < g.W[1]; ++b) {
            prefetch_row(srcn + b * W2, W2);
            prefetch_row(dstn + b * g.S[2], W2);
          }
        for (int64_t b = 0; b < g.W[1]; ++b) {
          acc_t* dst = dst0 + b * g.S[2];
          const scalar_t* src = src0 + b * W2;
          if (!short_planes) {
            if (b + kRowsAhead < g.W[1]) {
              prefetch_row(src + kRowsAhead * W2, W2);
              prefetch_row(dst + kRowsAhead * g.S[2], W2);
            } else if (on != nullptr) {  // the next window's first rows (r < W1 here)
              const int64_t r = b + kRowsAhead - g.W[1];
              prefetch_row(srcn + r * W2, W2);
              prefetch_row(dstn + r * g.S[2], W2);
            }
          }
          if (weight == nullptr) add_row(dst, src, W2);
          else axpy_row(dst, src, weight + weight_offset(g, a, b, 0), W2);
        }
      }
    }
  });
}

template <typename acc_t>
void weight_sum_kernel(const std::vector<int64_t>& org, const PlaneIndex& index,
                       const std::vector<int64_t>& planes, const acc_t* weight, acc_t* wsum,
                       const Geometry& g) {
  const Geometry g1{g.N, 1, {g.S[0], g.S[1], g.S[2]}, {g.W[0], g.W[1], g.W[2]}};
  at::parallel_for(0, static_cast<int64_t>(planes.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t z = planes[t] % g.S[0];
      const int64_t n = planes[t] / g.S[0];
      const auto [lo, hi] = index.covering(g, n, z);
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t* o = org.data() + index.order[k] * 4;
        const int64_t a = z - o[1];
        for (int64_t b = 0; b < g.W[1]; ++b) {
          acc_t* dst = wsum + image_offset(g1, n, 0, z, o[2] + b, o[3]);
          if (weight == nullptr) add_one_row(dst, g.W[2]);
          else add_row(dst, weight + weight_offset(g, a, b, 0), g.W[2]);
        }
      }
    }
  });
}

// Unchecked (op_entry_points.h checks the arguments): adds into acc and weight_sum.
void scatter_add_windows_cpu(const at::Tensor& patches, const at::Tensor& origins,
                             const c10::optional<at::Tensor>& weight, const at::Tensor& acc,
                             const c10::optional<at::Tensor>& weight_sum,
                             const Geometry& geometry) {
  const Geometry g = geometry;  // a local const (op_entry_points.h)
  const int64_t D = patches.dim() - 2;
  const auto org = load_origins(origins, g, D, "fastquilt.scatter_add_windows_");
  const int64_t M = origins.size(0);
  if (M == 0) return;
  const PlaneIndex index(org, g, M);
  const std::vector<int64_t> planes = index.covered_planes(g);
  const auto p = patches.contiguous();
  const auto w = contiguous_or_none(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "scatter_add_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = data_or_null<acc_t>(w);
    if (g.C > 0 && p.numel() > 0)
      scatter_kernel<scalar_t, acc_t>(p.const_data_ptr<scalar_t>(), org, index, planes, wp,
                                      acc.mutable_data_ptr<acc_t>(), g);
    if (weight_sum.has_value())
      weight_sum_kernel<acc_t>(org, index, planes, wp, weight_sum->mutable_data_ptr<acc_t>(), g);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("scatter_add_windows", &scatter_add_windows_op<&scatter_add_windows_cpu>);
  m.impl("scatter_add_windows_", &scatter_add_windows_inplace_op<&scatter_add_windows_cpu>);
}

}  // namespace fastquilt::cpu
