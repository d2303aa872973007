// Helpers shared by the CUDA kernels: launch geometry. The kernel bodies themselves live in
// kernel_bodies/ (host-device code that the CPU tests run), their tuning constants in
// kernel_bodies/kernel_traits.h.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernel_bodies/index_math.h"
#include "kernel_bodies/kernel_traits.h"
#include "op_entry_points.h"
#include "optional_tensor.h"

namespace fastquilt::cuda {

// Grid size for a grid-stride loop over `work` items (capped; the loop covers the rest).
inline unsigned int blocks_for(int64_t work, int threads = kThreads) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, kMaxBlocks)));
}

}  // namespace fastquilt::cuda
