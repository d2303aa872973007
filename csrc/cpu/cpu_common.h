// Helpers shared by the CPU kernels.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "kernel_bodies/index_math.h"
#include "op_checks.h"

namespace fastquilt::cpu {

// Reads the origins once: bounds-checks every window (a bad origin would read or write out of
// bounds) and returns them normalised to [n, o0, o1, o2] rows.
inline std::vector<int64_t> load_origins(const at::Tensor& origins, const Geometry& g, int64_t D,
                                         const char* op) {
  auto o = origins.contiguous();
  const int64_t M = o.size(0);
  const int64_t* p = o.const_data_ptr<int64_t>();
  std::vector<int64_t> out(static_cast<size_t>(M) * 4);
  for (int64_t m = 0; m < M; ++m) {
    int64_t* r = out.data() + m * 4;
    normalised_origin(p + m * (1 + D), D, r);
    TORCH_CHECK_VALUE(r[0] >= 0 && r[0] < g.N, msg(op, ": window ", m, " names image ", r[0],
                      " but there are ", g.N, " images"));
    for (int d = 0; d < 3; ++d)
      TORCH_CHECK_VALUE(r[1 + d] >= 0 && r[1 + d] + g.W[d] <= g.S[d], msg(op, ": window ", m,
                        " at ", at::IntArrayRef(p + m * (1 + D), 1 + D),
                        " does not fit inside the image (starts must lie in [0, size - window])"));
  }
  return out;
}

}  // namespace fastquilt::cpu
