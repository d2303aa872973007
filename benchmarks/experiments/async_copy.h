// Asynchronous 16-byte copies from global into shared memory (cp.async, sm_80 and newer): a
// thread starts copies, groups them with async_commit() and waits for all but its latest N
// groups with async_wait_prior<N>(). The bytes in flight hold no registers, so a
// latency-bound kernel can keep several loads of its own in flight.
//
// Used by the staging experiment (stitch_staged.h), not by the shipped kernels.
// On the host the copies are deferred the same way: a group's copies happen only when a wait
// retires it. A body that reads a slot before waiting for it, or refills a slot it has not
// read yet, then reads the wrong bytes there too, so its wait counts and slot rotation can be
// tested without a GPU. (Below sm_80: plain copies.)
#pragma once
#include <cstring>

#include "kernel_bodies/vec_access.h"

#if defined(__CUDA_ARCH__)
#include <cuda_pipeline.h>
#else
#include <vector>
#endif

namespace fastquilt {

#if !defined(__CUDA_ARCH__)
namespace host_async {
struct Copy {
  void* dst;
  const void* src;
};
// Groups of the calling thread, oldest first; the last one is open (not committed yet).
inline std::vector<std::vector<Copy>>& groups() {
  static thread_local std::vector<std::vector<Copy>> g(1);
  return g;
}
// Copies started and not retired by a wait (0 after a body that waits for all it starts).
inline size_t pending() {
  size_t n = 0;
  for (const auto& grp : groups()) n += grp.size();
  return n;
}
}  // namespace host_async
#endif

// Starts copying the 16 bytes at src (global, 16-byte aligned) to dst (shared memory).
template <typename T>
FQ_HD void copy16_async(Vec16<T>* dst, const T* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __pipeline_memcpy_async(dst, src, 16);
#elif defined(__CUDA_ARCH__)
  *dst = load16(src);
#else
  assert(aligned16(src) && aligned16(dst) && "copy16_async: misaligned");
  host_async::groups().back().push_back({dst, src});
#endif
}

// Closes the group of copies started since the last commit (an empty group counts too).
FQ_HD void async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __pipeline_commit();
#elif !defined(__CUDA_ARCH__)
  host_async::groups().emplace_back();
#endif
}

// Waits until every committed group but the latest N has landed.
template <int N>
FQ_HD void async_wait_prior() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __pipeline_wait_prior(N);
#elif !defined(__CUDA_ARCH__)
  auto& g = host_async::groups();
  while (g.size() - 1 > size_t(N)) {
    for (const host_async::Copy& c : g.front()) std::memcpy(c.dst, c.src, 16);
    g.erase(g.begin());
  }
#endif
}

}  // namespace fastquilt
