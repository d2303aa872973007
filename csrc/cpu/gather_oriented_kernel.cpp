// CPU gather of oriented windows: input (N, C, *S) -> patches (M, C, *window), each window's
// axes permuted and flipped as its orientation row says (kernel_bodies/orientation.h).
// Parallel over (window, channel, patch-plane) like the plain gather; a patch row is a
// contiguous copy when it runs forwards along x, else a strided (or reversed) read.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "cpu/cpu_common.h"
#include "kernel_bodies/orientation.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

template <typename scalar_t>
void gather_oriented_kernel(const scalar_t* in, const std::vector<OrientedWindow>& win,
                            scalar_t* out, const Geometry& g, int64_t M) {
  const int64_t W2 = g.W[2];
  const int64_t planes = M * g.C * g.W[0];  // one task = one (m, c, a) plane of W1 rows
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.W[1] * W2));
  at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t a = t % g.W[0];
      const int64_t c = (t / g.W[0]) % g.C;
      const int64_t m = t / (g.W[0] * g.C);
      const OrientedWindow& w = win[m];
      const int64_t sx = w.step[2];
      for (int64_t b = 0; b < g.W[1]; ++b) {
        const scalar_t* src = in + w.base + c * w.channel + a * w.step[0] + b * w.step[1];
        scalar_t* dst = out + patch_offset(g, m, c, a, b, 0);
        if (sx == 1) {
          std::memcpy(dst, src, sizeof(scalar_t) * W2);
        } else {
          for (int64_t x = 0; x < W2; ++x) dst[x] = src[x * sx];
        }
      }
    }
  });
}

// Unchecked (op_entry_points.h checks the arguments): out (M, C, *window), contiguous. Reads
// each window's origin and orientation once, checking both (they are data).
void gather_windows_oriented_cpu(const at::Tensor& input, const at::Tensor& origins,
                                 const at::Tensor& orientation, const at::Tensor& out,
                                 const Geometry& geometry) {
  constexpr const char* op = "fastquilt.gather_windows_oriented";
  const Geometry g = geometry;  // a local const (op_entry_points.h)
  const int D = static_cast<int>(out.dim()) - 2;
  load_origins(origins, g, D, op);  // the bounds checks, with their messages
  const int64_t M = origins.size(0);
  const auto org = origins.contiguous();
  const auto ori = orientation.contiguous();
  std::vector<OrientedWindow> win(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    const int64_t* row = ori.const_data_ptr<int64_t>() + m * D;
    TORCH_CHECK_VALUE(valid_orientation(g, row, D), msg(op, ": orientation row ", m, " ",
                      at::IntArrayRef(row, D), " must hold each axis code +-1..+-", D,
                      " once, and may only trade axes of equal window size"));
    oriented_window(g, org.const_data_ptr<int64_t>() + m * (1 + D), row, D, &win[m]);
  }
  if (M == 0 || out.numel() == 0) return;
  const auto in = input.contiguous();
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, in.scalar_type(),
                             "gather_windows_oriented_cpu", [&] {
    gather_oriented_kernel<scalar_t>(in.const_data_ptr<scalar_t>(), win,
                                     out.mutable_data_ptr<scalar_t>(), g, M);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastquilt, CPU, m) {
  m.impl("gather_windows_oriented", &gather_windows_oriented_op<&gather_windows_oriented_cpu>);
}

}  // namespace fastquilt::cpu
