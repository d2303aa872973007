// Vector loads and stores of V consecutive elements, used by the GPU kernel bodies.
// On the GPU they are 16-byte vector instructions (the pointer must be 16-byte aligned, or
// the kernel faults with "misaligned address"); on the host, where the kernel bodies run in
// the CPU tests, they are plain loops that assert that alignment, so a wrong alignment
// decision fails a CPU test instead of a GPU run.
#pragma once
#include <cassert>
#include <cstdint>

#include "kernel_bodies/geometry.h"

namespace fastquilt {

// Sixteen bytes of T: the unit of every vector access.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / int(sizeof(T));
  T v[kSize];
};

FQ_HD bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The 16 bytes at p (16-byte aligned).
template <typename T>
FQ_HD Vec16<T> load16(const T* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const Vec16<T>*>(p);
#else
  assert(aligned16(p) && "load16: misaligned vector load");
  Vec16<T> r;
  for (int k = 0; k < Vec16<T>::kSize; ++k) r.v[k] = p[k];
  return r;
#endif
}

// Stores 16 bytes at p (16-byte aligned).
template <typename T>
FQ_HD void store16(T* p, const Vec16<T>& r) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<Vec16<T>*>(p) = r;
#else
  assert(aligned16(p) && "store16: misaligned vector store");
  for (int k = 0; k < Vec16<T>::kSize; ++k) p[k] = r.v[k];
#endif
}

// r[0..V) = p[0..V) in 16-byte units; V * sizeof(T) must be a multiple of 16.
template <typename T, int V>
FQ_HD void load_vec(const T* p, T (&r)[V]) {
  static_assert((V * sizeof(T)) % 16 == 0, "load_vec moves whole 16-byte units");
  constexpr int kPer = Vec16<T>::kSize;
  FQ_UNROLL
  for (int u = 0; u < V / kPer; ++u) {
    const Vec16<T> t = load16(p + u * kPer);
    FQ_UNROLL
    for (int k = 0; k < kPer; ++k) r[u * kPer + k] = t.v[k];
  }
}

// p[0..V) = r[0..V) in 16-byte units; V * sizeof(T) must be a multiple of 16.
template <typename T, int V>
FQ_HD void store_vec(T* p, const T (&r)[V]) {
  static_assert((V * sizeof(T)) % 16 == 0, "store_vec moves whole 16-byte units");
  constexpr int kPer = Vec16<T>::kSize;
  FQ_UNROLL
  for (int u = 0; u < V / kPer; ++u) {
    Vec16<T> t;
    FQ_UNROLL
    for (int k = 0; k < kPer; ++k) t.v[k] = r[u * kPer + k];
    store16(p + u * kPer, t);
  }
}

// Hint: start fetching the bytes [p, p + bytes) into L2 (one request per 32-byte sector), so
// that their load later waits for L2, not DRAM, and holds no register meanwhile. On the host
// (the CPU tests) it reads each sector's first byte instead, so that a prefetch outside the
// buffer (on the GPU: a fetch of bytes no one loads) fails AddressSanitizer.
template <typename T>
FQ_HD void prefetch_l2(const T* p, int bytes) {
  const char* b = reinterpret_cast<const char*>(p);
#if defined(__CUDA_ARCH__)
  // generic addressing: p is a generic pointer to global memory
  for (int k = 0; k < bytes; k += 32) asm volatile("prefetch.L2 [%0];" ::"l"(b + k));
#else
  for (int k = 0; k < bytes; k += 32) (void)*reinterpret_cast<const volatile char*>(b + k);
#endif
}

}  // namespace fastquilt
