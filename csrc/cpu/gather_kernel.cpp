// CPU gather of strided windows: input (N, C, *S) -> patches (M, C, *window).
// Parallel over the output's rows, in order; each copies one contiguous row. An
// input whose rows are contiguous (a crop or a slice of a larger tensor) is read where it lies,
// through its strides: no copy of the volume.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "cpu/cpu_common.h"
#include "cpu/prefetch.h"
#include "cpu/row_kernels.h"
#include "cpu/stream_store.h"
#include "optional_tensor.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

// Element strides of an input in the normalised geometry (n, c, axis 0, 1, 2); axis 2's is 1.
struct InputStrides {
  int64_t n, c, s0, s1;

  explicit InputStrides(const at::Tensor& in)
      : n(in.stride(0)), c(in.stride(1)), s0(in.stride(2)),
        s1(in.dim() == 5 ? in.stride(3) : 0) {}

  int64_t offset(int64_t img, int64_t ch, int64_t z, int64_t y, int64_t x) const {
    return img * n + ch * c + z * s0 + y * s1 + x;
  }
};

// The input as the kernel reads it: itself where its rows are contiguous and its bytes do not
// meet out's (the kernel writes out while it reads), else a contiguous copy.
at::Tensor readable_input(const at::Tensor& input, const at::Tensor& out) {
  if (input.is_contiguous()) return input;
  if (input.stride(-1) == 1 && !bytes_overlap(input, out)) return input;
  return input.contiguous();
}

// The source row of output row r = ((m * C + c) * W0 + a) * W1 + b, walked in order: one
// division per task, not per row (a 2D row is one window row, a few hundred bytes).
struct SourceRows {
  const Geometry& g;
  const InputStrides& st;
  const int64_t* org;
  int64_t m, c, a, b;

  SourceRows(const Geometry& g_, const InputStrides& st_, const int64_t* org_, int64_t r)
      : g(g_), st(st_), org(org_) {
    b = r % g.W[1];
    r /= g.W[1];
    a = r % g.W[0];
    r /= g.W[0];
    c = r % g.C;
    m = r / g.C;
  }

  int64_t offset() const {
    const int64_t* o = org + m * 4;
    return st.offset(o[0], c, o[1] + a, o[2] + b, o[3]);
  }

  void next() {
    if (++b < g.W[1]) return;
    b = 0;
    if (++a < g.W[0]) return;
    a = 0;
    if (++c < g.C) return;
    c = 0;
    ++m;
  }
};

template <typename scalar_t, typename acc_t>
void gather_kernel(const scalar_t* in, const InputStrides& st, const int64_t* org,
                   const acc_t* weight, scalar_t* out, const Geometry& g, int64_t M) {
  const int64_t W2 = g.W[2];
  const int64_t rows = M * g.C * g.W[0] * g.W[1];  // output row r is out + r * W2
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W2));
  const int64_t rows_ahead = rows_ahead_for(W2 * int64_t(sizeof(scalar_t)));
  // an output over the cache is not read back from the cache: write it without reading it
  // (rows of two cache lines or more: a shorter row's partial lines would be read anyway)
  const bool stream = weight == nullptr && W2 * int64_t(sizeof(scalar_t)) >= 128 &&
      output_exceeds_cache(rows * W2 * int64_t(sizeof(scalar_t)));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    SourceRows row(g, st, org, begin);
    // rows lie apart (short runs the hardware does not follow): each is asked for
    // kBytesAhead of rows before its copy
    SourceRows ahead(g, st, org, std::min(begin + rows_ahead, end));
    for (int64_t r = begin; r < end; ++r, row.next()) {
      if (r + rows_ahead < end) {
        prefetch_row_to_l2(in + ahead.offset(), W2);
        ahead.next();
      }
      const scalar_t* src = in + row.offset();
      scalar_t* dst = out + r * W2;
      if (stream) {
        copy_streaming(dst, src, sizeof(scalar_t) * W2);
      } else if (weight == nullptr) {
        std::memcpy(dst, src, sizeof(scalar_t) * W2);
      } else {
        scale_row(dst, src, weight + (row.a * g.W[1] + row.b) * W2, W2);
      }
    }
    if (stream) stream_fence();
  });
}

// Unchecked (op_entry_points.h checks the arguments): out (M, C, *window), contiguous.
void gather_windows_cpu(const at::Tensor& input, const at::Tensor& origins,
                        const c10::optional<at::Tensor>& weight, const at::Tensor& out,
                        const Geometry& geometry) {
  const Geometry g = geometry;  // a local const (op_entry_points.h)
  const int64_t D = out.dim() - 2;
  const auto org = load_origins(origins, g, D, "fastquilt.gather_windows");
  const int64_t M = origins.size(0);
  if (M == 0 || out.numel() == 0) return;
  const auto in = readable_input(input, out);
  const InputStrides strides(in);
  const auto w = contiguous_or_none(weight);
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, in.scalar_type(), "gather_windows_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = nullptr;
    if constexpr (std::is_floating_point_v<acc_t>) {
      wp = data_or_null<acc_t>(w);
    }
    gather_kernel<scalar_t, acc_t>(in.const_data_ptr<scalar_t>(), strides, org.data(), wp,
                                   out.mutable_data_ptr<scalar_t>(), g, M);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("gather_windows", &gather_windows_op<&gather_windows_cpu>);
  m.impl("gather_windows_into", &gather_windows_into_op<&gather_windows_cpu>);
}

}  // namespace fastquilt::cpu
