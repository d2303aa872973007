// Helpers shared by the CUDA kernels: launch geometry. The kernel bodies themselves live in
// include/fastquilt/*_chunk.h, host-device code that the CPU tests run.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "fastquilt/index_math.h"
#include "op_checks.h"

namespace fastquilt::cuda {

constexpr int kThreads = 256;

// Grid size for a grid-stride loop over `work` items (capped; the loop covers the rest).
inline unsigned int blocks_for(int64_t work, int threads = kThreads) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, int64_t(1) << 20)));
}

}  // namespace fastquilt::cuda
