// Experiment that chose the CUDA grid stitch's chunk shape (stitch_grid_chunk_aligned): the
// shipped bodies (general: 16 bytes per thread; aligned fast path) against fast-path-only
// variants with V voxels per thread, KB windows per batch of loads, weights loaded with the
// patches (HW) or later, load policy LP (0 plain, 1 evict-first, 2 L2 only), MINB blocks per SM
// and IW (a precomputed 1 / weight sum instead of summing weights), on the benchmark grid
// (512^3, window 64, step 32), fp32 and bf16, against a d2d copy in the same run. The list below
// holds the candidates not yet measured (for fp16/bf16, which reach 56% of copy bandwidth).
// Standalone (no torch), ~10 s on a GPU machine, from the repository root:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Icsrc/include benchmarks/experiments/stitch_variants.cu \
//     -o build/stitch_variants && build/stitch_variants
// Results of the runs that chose it: benchmarks/results/gpu_check_2026-11-26_h200_aligned/
// stitch_variants.txt. Kept as a record and for the next tuning, not built by CI.
#include <cuda_bf16.h>
#include <cstdio>
#include <vector>
#include "fastquilt/stitch_grid_chunk.h"
using namespace fastquilt;

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)

template <typename T, int V> struct alignas(V * sizeof(T)) VecN { T v[V]; };

template <int LP, typename V_t>
__device__ __forceinline__ V_t ld(const V_t* p) {
  static_assert(sizeof(V_t) == 16 || sizeof(V_t) == 8 || sizeof(V_t) == 4 || sizeof(V_t) % 32 == 0, "size");
  if constexpr (LP == 0 || sizeof(V_t) % 32 == 0) { return *p; }
  else if constexpr (sizeof(V_t) == 16) { uint4 r = LP == 1 ? __ldcs(reinterpret_cast<const uint4*>(p)) : __ldcg(reinterpret_cast<const uint4*>(p)); return *reinterpret_cast<V_t*>(&r); }
  else if constexpr (sizeof(V_t) == 8) { uint2 r = LP == 1 ? __ldcs(reinterpret_cast<const uint2*>(p)) : __ldcg(reinterpret_cast<const uint2*>(p)); return *reinterpret_cast<V_t*>(&r); }
  else { unsigned r = LP == 1 ? __ldcs(reinterpret_cast<const unsigned*>(p)) : __ldcg(reinterpret_cast<const unsigned*>(p)); return *reinterpret_cast<V_t*>(&r); }
}

// Variant body: V elements per thread, batches of KB windows, weights loaded with the patches (HW),
// IW: no weight sum per thread, the output multiplied by a precomputed 1 / weight sum instead
// (one more fp32 read per voxel, V fewer registers and adds per window).
template <typename I, typename T, typename acc_t, int V, int KB, bool HW, int LP, bool IW>
__device__ __forceinline__ void chunk_v(const T* __restrict__ patches, const acc_t* __restrict__ weight, T* __restrict__ out,
                        const acc_t* __restrict__ inv, const GridGeometry& gg, acc_t fill, I i) {
  const Geometry& g = gg.g;
  const I S0 = I(g.S[0]), S1 = I(g.S[1]), S2 = I(g.S[2]);
  const I W0 = I(g.W[0]), W1 = I(g.W[1]), W2 = I(g.W[2]);
  const I s0 = I(gg.step[0]), s1 = I(gg.step[1]), s2 = I(gg.step[2]);
  const I per_row = (S2 + V - 1) / V;
  const I row = div_index<I>(i, per_row);
  const I x0 = (i - row * per_row) * V;
  const I t = div_index<I>(row, S1);
  const I y = row - t * S1;
  const I u = div_index<I>(t, S0);
  const I z = t - u * S0;
  const I n = div_index<I>(u, I(g.C));
  const I c = u - n * I(g.C);
  I f0, l0, f1, l1, f2, l2, unused;
  grid_cover<I>(z, S0, W0, s0, &f0, &l0);
  grid_cover<I>(y, S1, W1, s1, &f1, &l1);
  grid_cover<I>(x0, S2, W2, s2, &f2, &unused);
  grid_cover<I>(x0 + V - 1, S2, W2, s2, &unused, &l2);
  const I win_stride = I(g.C) * W0 * W1 * W2;
  acc_t num[V], den[V];
#pragma unroll
  for (int k = 0; k < V; ++k) num[k] = den[k] = acc_t(0);
  const I n0 = l0 - f0 + 1, n1 = l1 - f1 + 1, n2 = l2 - f2 + 1;
  const I windows = n0 * n1 * n2;
  I j0 = 0, j1 = 0, j2 = 0;
  for (I t0 = 0; t0 < windows; t0 += KB) {
    VecN<T, V> pv[KB];
    VecN<acc_t, V> wv[KB];
    bool ok[KB];
#pragma unroll
    for (int j = 0; j < KB; ++j) {
      ok[j] = t0 + j < windows;
      if (!ok[j]) continue;
      const I i0 = f0 + j0, i1 = f1 + j1, i2 = f2 + j2;
      if (++j2 == n2) { j2 = 0; if (++j1 == n1) { j1 = 0; ++j0; } }
      const I a = z - grid_start<I>(i0, S0, W0, s0);
      const I b = y - grid_start<I>(i1, S1, W1, s1);
      const I m0 = n * I(gg.num_windows) + (i0 * I(gg.count[1]) + i1) * I(gg.count[2]);
      const I xx = x0 - grid_start<I>(i2, S2, W2, s2);
      // benchmark geometry: whole chunks inside windows only (step multiple of V)
      pv[j] = ld<LP>(reinterpret_cast<const VecN<T, V>*>(patches + patch_offset<I>(g, m0, c, a, b, xx) + i2 * win_stride));
      if (HW) wv[j] = *reinterpret_cast<const VecN<acc_t, V>*>(weight + weight_offset<I>(g, a, b, xx));
      else { ok[j] = ok[j]; wv[j].v[0] = acc_t(weight_offset<I>(g, a, b, xx)); }
    }
#pragma unroll
    for (int j = 0; j < KB; ++j) {
      if (!ok[j]) continue;
      VecN<acc_t, V> w;
      if (HW) w = wv[j];
      else w = *reinterpret_cast<const VecN<acc_t, V>*>(weight + I(wv[j].v[0]));
#pragma unroll
      for (int k = 0; k < V; ++k) { num[k] += static_cast<acc_t>(pv[j].v[k]) * w.v[k]; if (!IW) den[k] += w.v[k]; }
    }
  }
  VecN<T, V> r;
  if (IW) {
    const VecN<acc_t, V> iv = *reinterpret_cast<const VecN<acc_t, V>*>(inv + (z * S1 + y) * S2 + x0);
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = static_cast<T>(num[k] * iv.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = static_cast<T>(den[k] > acc_t(0) ? num[k] / den[k] : fill);
  }
  *reinterpret_cast<VecN<T, V>*>(out + image_offset<I>(g, n, c, z, y, x0)) = r;
}

template <typename T, int V, int KB, bool HW, int LP, int MINB, bool IW>
__global__ void __launch_bounds__(256, MINB) k_var(const T* p, const float* w, T* o, const float* inv, GridGeometry gg, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    chunk_v<int32_t, T, float, V, KB, HW, LP, IW>(p, w, o, inv, gg, 0.f, int32_t(i));
}

// The shipped bodies: the general one (16 bytes per thread) and the aligned fast path.
template <typename T, int MINB>
__global__ void __launch_bounds__(256, MINB) k_prod(const T* __restrict__ p, const float* __restrict__ w, T* __restrict__ o, GridGeometry gg, StitchVectorAccess vec, int64_t total) {
  const ColumnRange all{0, gg.g.S[2]};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk<int32_t>(p, w, o, gg, 0.f, vec, all, int32_t(i));
}

template <typename T>
__global__ void __launch_bounds__(256, 2) k_aligned(const T* __restrict__ p, const float* __restrict__ w, T* __restrict__ o, GridGeometry gg, int64_t total) {
  const ColumnRange all{0, gg.g.S[2]};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk_aligned<int32_t>(p, w, o, gg, 0.f, all, int32_t(i));
}

template <typename F>
float timeit(F f) {
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  f(); f(); CK(cudaDeviceSynchronize());
  float best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    cudaEventRecord(a); for (int r = 0; r < 4; ++r) f(); cudaEventRecord(b); CK(cudaEventSynchronize(b));
    float ms; cudaEventElapsedTime(&ms, a, b); best = std::min(best, ms / 4);
  }
  CK(cudaGetLastError());
  return best;
}

template <typename T>
void run(const char* name) {
  GridGeometry gg{};
  gg.g.N = 1; gg.g.C = 1;
  for (int d = 0; d < 3; ++d) { gg.g.S[d] = 512; gg.g.W[d] = 64; gg.step[d] = 32; gg.count[d] = 15; }
  gg.num_windows = 3375;
  const size_t P = size_t(3375) * 64 * 64 * 64, O = size_t(512) * 512 * 512;
  T *p, *o, *o2, *cp; float *w, *inv;
  CK(cudaMalloc(&p, P * sizeof(T))); CK(cudaMalloc(&cp, P * sizeof(T)));
  CK(cudaMalloc(&o, O * sizeof(T))); CK(cudaMalloc(&o2, O * sizeof(T)));
  CK(cudaMalloc(&w, 64 * 64 * 64 * 4));
  CK(cudaMalloc(&inv, O * 4));
  CK(cudaMemset(inv, 0, O * 4));  // values do not matter for the timing
  std::vector<float> hw(64 * 64 * 64);
  for (size_t k = 0; k < hw.size(); ++k) hw[k] = 0.1f + (k % 7) * 0.1f;
  CK(cudaMemcpy(w, hw.data(), hw.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(p, 0x3c, P * sizeof(T)));
  const double bytes = double(P + O) * sizeof(T);
  float tc = timeit([&] { cudaMemcpyAsync(cp, p, P * sizeof(T), cudaMemcpyDeviceToDevice); });
  const double copy_bw = 2.0 * P * sizeof(T) / (tc * 1e-3);
  printf("%s: copy %.3f ms (%.2f TB/s)\n", name, tc, copy_bw / 1e12);
  auto report = [&](const char* v, float ms) {
    printf("  %-34s %.3f ms  %5.1f%% of copy bw\n", v, ms, 100.0 * bytes / (ms * 1e-3) / copy_bw);
  };
  constexpr int V16 = 16 / sizeof(T);
  const StitchVectorAccess vec{true, true};
  {
    const int64_t total = O / V16; const int blocks = int((total + 255) / 256);
    report("general body (shipped)", timeit([&] { k_prod<T, 1><<<blocks, 256>>>(p, w, o, gg, vec, total); }));
    constexpr int VA = StitchAlignedShape<T>::kVoxels;
    const int blocks_a = int((O / VA + 255) / 256);
    report("aligned body (shipped)", timeit([&] { k_aligned<T><<<blocks_a, 256>>>(p, w, o2, gg, O / VA); }));
  }
#define VAR(V, KB, HW, LP, MINB, IW) { constexpr int VV = V; const int64_t total = O / VV; const int blocks = int((total + 255) / 256); \
    report("var V=" #V " KB=" #KB " HW=" #HW " MINB=" #MINB " IW=" #IW, timeit([&] { k_var<T, VV, KB, HW, LP, MINB, IW><<<blocks, 256>>>(p, w, o2, inv, gg, total); })); }
  // candidates for 2-byte types (the shipped shape is V=V16*4 KB=1 HW=false MINB=2)
  VAR((V16 * 2), 1, true, 0, 2, false) VAR((V16 * 2), 1, true, 0, 3, false) VAR((V16 * 2), 2, true, 0, 2, false)
  VAR((V16 * 4), 1, true, 0, 2, false)
  VAR((V16 * 4), 1, true, 0, 2, true) VAR((V16 * 4), 1, false, 0, 2, true) VAR((V16 * 2), 2, true, 0, 2, true)
  VAR((V16 * 2), 2, false, 0, 2, true) VAR((V16 * 4), 2, false, 0, 2, true)
  // and for 4-byte types (shipped: V=V16*2 KB=2 HW=true MINB=2)
  VAR((V16 * 2), 2, true, 0, 2, true) VAR((V16 * 2), 4, true, 0, 2, true) VAR((V16 * 2), 2, true, 0, 3, false)
  // the two shipped bodies agree bit for bit
  {
    const int64_t total = O / V16; const int blocks = int((total + 255) / 256);
    constexpr int VA = StitchAlignedShape<T>::kVoxels;
    k_prod<T, 1><<<blocks, 256>>>(p, w, o, gg, vec, total);
    k_aligned<T><<<int((O / VA + 255) / 256), 256>>>(p, w, o2, gg, O / VA);
    CK(cudaDeviceSynchronize());
    std::vector<T> a(O), b(O);
    CK(cudaMemcpy(a.data(), o, O * sizeof(T), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), o2, O * sizeof(T), cudaMemcpyDeviceToHost));
    size_t bad = 0; for (size_t k = 0; k < O; ++k) bad += memcmp(&a[k], &b[k], sizeof(T)) != 0;
    printf("  aligned vs general body: %zu differing voxels\n", bad);
  }
  cudaFree(p); cudaFree(cp); cudaFree(o); cudaFree(o2); cudaFree(w); cudaFree(inv);
}

int main() {
  run<float>("float32");
  run<__nv_bfloat16>("bfloat16");
}
