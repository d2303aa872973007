// CPU scatter_add_grid_batch_: one batch of a full grid's windows added into acc, with the
// accumulator's zeroing and grid_normalize_'s normalisation done plane by plane by the task
// that owns the plane (cpu/scatter_planes.h), while the plane is in cache. Separate passes
// over an accumulator larger than the cache cost two more trips through memory each; here a
// plane is zeroed by the first batch that covers it and normalised by the last.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/grid_rows.h"
#include "cpu/scatter_planes.h"
#include "optional_tensor.h"
#include "op_checks.h"

namespace fastquilt::cpu {
namespace {

constexpr const char* kOp = "fastquilt.scatter_add_grid_batch_";

// Zeroes the planes no earlier batch covers (keys >= zero_from) before their windows are
// added; normalises the planes no later batch covers (keys < finish_before) after.
template <typename acc_t>
struct GridBatchPlanes {
  int64_t zero_from, finish_before;  // plane keys n * S0 + z
  int64_t S1, S2;
  const acc_t* inv;          // inverse rows (K, S2)
  const int64_t* row_class;  // (S0 * S1)
  acc_t fill;

  void before(acc_t* plane, int64_t key, int64_t) const {
    if (key >= zero_from) std::fill(plane, plane + S1 * S2, acc_t(0));
  }

  // (the gap form throughout: where v is not 0 it multiplies exactly as the plain form)
  void after(acc_t* plane, int64_t key, int64_t z) const {
    if (key >= finish_before) return;
    for (int64_t y = 0; y < S1; ++y)
      normalize_row(plane + y * S2, inv + row_class[z * S1 + y] * S2, S2, true, fill);
  }
};

// The grid's windows (normalised [n, o0, o1, o2] rows) must be in plane-key order
// n * S0 + o0, with no plane left between two neighbours, each image's first window at plane 0
// and its last reaching plane S0 - 1: then each plane is zeroed by exactly one batch and
// normalised by exactly one. A call checks the windows it reads, org = windows lo.. of M (its
// batch and the neighbour on each side): over every batch of the grid in order, that is every
// pair of neighbours, and a grid that breaks the rule is refused at the batch that reaches the
// break. (Checking the whole grid on every call would cost windows^2 / batch.)
void check_grid_order(const std::vector<int64_t>& org, int64_t lo, int64_t M, const Geometry& g) {
  const auto refuse = [&](const std::string& where) {
    TORCH_CHECK_VALUE(false, msg(kOp, ": origins must be the whole grid, sorted by (n, start_0) "
                      "and covering every plane of every image; ", where, ": add its batches "
                      "with scatter_add_windows_ and normalise with grid_normalize_"));
  };
  const int64_t count = static_cast<int64_t>(org.size()) / 4;
  if (M == 0) refuse("there are no windows");
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n = org[i * 4], z0 = org[i * 4 + 1];
    bool ok = true;
    if (i > 0) {
      const int64_t pn = org[(i - 1) * 4], pz0 = org[(i - 1) * 4 + 1];
      ok = n == pn ? pz0 <= z0 && z0 <= pz0 + g.W[0]
                   : n == pn + 1 && pz0 + g.W[0] == g.S[0] && z0 == 0;
    } else if (lo == 0) {
      ok = n == 0 && z0 == 0;
    }
    if (!ok) refuse(msg("window ", lo + i, " (image ", n, ", start ", z0, ") breaks that"));
  }
  if (lo + count == M && count > 0) {
    const int64_t n = org[(count - 1) * 4], end = org[(count - 1) * 4 + 1] + g.W[0];
    if (n != g.N - 1 || end != g.S[0])
      refuse(msg("the windows end in image ", n, " at plane ", end, " of ", g.N, " images of ",
                 g.S[0]));
  }
}

void check_rows(const at::Tensor& acc, const at::Tensor& inverse_rows,
                const at::Tensor& row_class) {
  TORCH_CHECK_TYPE(inverse_rows.scalar_type() == acc.scalar_type(), msg(kOp,
                   ": inverse_rows must be ", acc.scalar_type(), " like acc, got ",
                   inverse_rows.scalar_type()));
  TORCH_CHECK_VALUE(inverse_rows.dim() == 2 && inverse_rows.size(1) == acc.size(-1), msg(kOp,
                    ": inverse_rows must be (K, ", acc.size(-1), ") (grid_inverse_rows), got ",
                    inverse_rows.sizes()));
  const auto rows_shape = acc.sizes().slice(2, acc.dim() - 3);
  TORCH_CHECK_TYPE(row_class.scalar_type() == at::kLong,
                   msg(kOp, ": row_class must be int64, got ", row_class.scalar_type()));
  TORCH_CHECK_VALUE(row_class.sizes() == rows_shape, msg(kOp, ": row_class must have shape ",
                    rows_shape, " (grid_inverse_rows), got ", row_class.sizes()));
  for (const auto* t : {&inverse_rows, &row_class})
    TORCH_CHECK_VALUE(t->device() == acc.device(), msg(kOp, ": inverse_rows and row_class must "
                      "be on ", acc.device(), " like acc"));
  check_no_overlap(acc, "acc", inverse_rows, "inverse_rows", kOp);
  check_no_overlap(acc, "acc", row_class, "row_class", kOp);
}

void scatter_add_grid_batch_cpu(const at::Tensor& patches, const at::Tensor& origins,
                                int64_t first, const c10::optional<at::Tensor>& weight,
                                const at::Tensor& acc, const at::Tensor& inverse_rows,
                                const at::Tensor& row_class, double fill_value) {
  const int64_t B = patches.dim() >= 1 ? patches.size(0) : 0;
  TORCH_CHECK_VALUE(origins.dim() == 2, msg(kOp, ": origins must be (M, 1 + D), got ",
                    origins.sizes()));
  const int64_t M = origins.size(0);
  TORCH_CHECK_VALUE(first >= 0 && first + B <= M, msg(kOp, ": windows first..first + ", B,
                    " - 1 = ", first, "..", first + B - 1, " must lie in the grid's ", M));
  const Geometry g0 = check_scatter_inplace(patches, origins.narrow(0, first, B), weight, acc,
                                            c10::nullopt, kOp);
  check_rows(acc, inverse_rows, row_class);
  const Geometry g = g0;  // a local const (op_entry_points.h)
  const int64_t D = patches.dim() - 2;
  if (acc.numel() == 0) return;
  // this batch and its neighbours: the windows whose order decides its planes
  const int64_t lo = std::max<int64_t>(first - 1, 0), hi = std::min(first + B + 1, M);
  const auto near = load_origins(origins.narrow(0, lo, hi - lo), g, D, kOp);
  check_grid_order(near, lo, M, g);
  if (B == 0) return;
  const auto key = [&](int64_t m) { return near[(m - lo) * 4] * g.S[0] + near[(m - lo) * 4 + 1]; };
  const int64_t zero_from = first == 0 ? std::numeric_limits<int64_t>::min() : key(first - 1) + g.W[0];
  const int64_t finish_before = first + B == M ? std::numeric_limits<int64_t>::max() : key(first + B);
  const std::vector<int64_t> org(near.begin() + (first - lo) * 4,
                                 near.begin() + (first - lo + B) * 4);
  const PlaneIndex index(org, g, B);
  const std::vector<int64_t> planes = index.covered_planes(g);
  const auto inv = inverse_rows.contiguous();
  const auto cls = row_class.contiguous();
  const int64_t K = inv.size(0);
  const int64_t* cp = cls.const_data_ptr<int64_t>();
  for (const int64_t plane : planes) {  // the rows this call normalises (each plane's once)
    if (plane >= finish_before) break;
    const int64_t r0 = (plane % g.S[0]) * g.S[1];
    for (int64_t r = r0; r < r0 + g.S[1]; ++r)
      TORCH_CHECK_VALUE(cp[r] >= 0 && cp[r] < K, msg(kOp, ": row_class[", r, "] = ", cp[r],
                        " is not a row of inverse_rows (K = ", K, ")"));
  }
  const auto p = patches.contiguous();
  const auto w = contiguous_or_none(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "scatter_grid_batch", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const GridBatchPlanes<acc_t> hooks{zero_from, finish_before, g.S[1], g.S[2],
                                       inv.const_data_ptr<acc_t>(), cp,
                                       static_cast<acc_t>(fill_value)};
    scatter_kernel<scalar_t, acc_t>(p.const_data_ptr<scalar_t>(), org, index, planes,
                                    data_or_null<acc_t>(w), acc.mutable_data_ptr<acc_t>(), g,
                                    hooks);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("scatter_add_grid_batch_", &scatter_add_grid_batch_cpu);
}

}  // namespace fastquilt::cpu
