// Experiment that chooses the CUDA grid stitch's fast-path shape (StitchAlignedShape in
// csrc/kernel_bodies/kernel_traits.h) on the benchmark grid (512^3, window 64, step 32), fp32
// and bf16, against a d2d copy of the patches in the same run:
//   - the shipped bodies: general (16 bytes per thread) and aligned, with the shipped shape;
//   - the aligned body with other shapes S<voxels per thread, windows per load batch, weights
//     loaded with the patches, L2 prefetch distance, min blocks per SM>;
//   - staged S<...>/ST<slots> (stitch_staged.h, not shipped): the patches of the next windows
//     copied into shared memory with cp.async, so that the bytes in flight hold no registers;
//   - the shipped shape without weight loads (flat weights): the cost of the weight loads;
//   - "IW", with no shipped counterpart: no weight sums, the output multiplied by a
//     precomputed 1 / weight sum (one more fp32 read per voxel).
// Why these: the kernel is latency bound. Its bandwidth follows the patch bytes each SM has in
// flight, and registers cap them: the shapes trade voxels and windows per thread against
// blocks per SM.
// Every line also counts the voxels that differ from the general body (must be 0).
// Standalone (no torch), ~15 s on a GPU machine, from the repository root:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Icsrc benchmarks/experiments/stitch_variants.cu \
//     -o build/stitch_variants && build/stitch_variants
// Results: benchmarks/results/gpu_check_2026-11-26_h200_aligned/stitch_variants.txt (H200),
// the bench.log of benchmarks/results/gpu_check_2026-11-26_h100*/ (H100).
// Kept for the next tuning, not built by CI.
#include <cuda_bf16.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "kernel_bodies/stitch_grid_fast_path.h"
#include "stitch_staged.h"
using namespace fastquilt;

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)

template <int V, int KB, bool HW, int PF, int MINB>
using S = StitchChunkShape<V, KB, HW, PF, MINB>;

// ---- the shipped bodies ----
template <typename T>
__global__ void __launch_bounds__(256, 1) k_general(const T* __restrict__ p, const float* __restrict__ w, T* __restrict__ o, GridGeometry gg, StitchVectorAccess vec, int64_t total) {
  const ColumnRange all{0, gg.g.S[2]};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk<int32_t>(p, w, o, gg, 0.f, vec, all, int32_t(i));
}

template <typename T, typename Shape>
__global__ void __launch_bounds__(256, Shape::kMinBlocks) k_shape(const T* __restrict__ p, const float* __restrict__ w, T* __restrict__ o, GridGeometry gg, int64_t total) {
  const ColumnRange all{0, gg.g.S[2]};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk_aligned<int32_t, T, float, Shape>(p, w, o, gg, 0.f, all, int32_t(i));
}

// ---- staged (stitch_staged.h): Stages slots of Shape's chunk per thread in shared memory ----
template <typename T, typename Shape, int Stages>
__global__ void __launch_bounds__(256, Shape::kMinBlocks) k_staged(const T* __restrict__ p, const float* __restrict__ w, T* __restrict__ o, GridGeometry gg, int64_t total) {
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  Vec16<T>* stage = reinterpret_cast<Vec16<T>*>(stage_bytes) + threadIdx.x;
  const ColumnRange all{0, gg.g.S[2]};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    stitch_grid_chunk_staged<int32_t, T, float, Shape, Stages>(p, w, o, gg, 0.f, all, int32_t(i), stage, int(blockDim.x));
}

// ---- IW: no weight sums; out = sum(w p) * inv[z, y, x] (fp32 image of 1 / weight sum) ----
template <typename T, int V, int KB, int MINB>
__global__ void __launch_bounds__(256, MINB) k_iw(const T* __restrict__ p, const float* __restrict__ w, T* __restrict__ o, const float* __restrict__ inv, GridGeometry gg, int64_t total) {
  const Geometry& g = gg.g;
  const ColumnRange all{0, g.S[2]};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const ChunkPosition<int32_t> pos = chunk_position<int32_t>(g, all, V, int32_t(i));
    int32_t f0, l0, f1, l1, f2, l2;
    grid_cover<int32_t>(pos.z, g.S[0], g.W[0], gg.step[0], &f0, &l0);
    grid_cover<int32_t>(pos.y, g.S[1], g.W[1], gg.step[1], &f1, &l1);
    grid_cover<int32_t>(pos.x0, g.S[2], g.W[2], gg.step[2], &f2, &l2);
    const int32_t n1 = l1 - f1 + 1, n2 = l2 - f2 + 1, windows = (l0 - f0 + 1) * n1 * n2;
    WindowCursor<int32_t> next{f0, f1, f2, n1, n2};
    float num[V];
#pragma unroll
    for (int k = 0; k < V; ++k) num[k] = 0.f;
    for (int32_t t0 = 0; t0 < windows; t0 += KB) {
      T pv[KB][V];
      float wv[KB][V];
#pragma unroll
      for (int j = 0; j < KB; ++j) {
        if (t0 + j >= windows) continue;
        const ChunkInWindow<int32_t> at = chunk_in_window<int32_t>(gg, pos, next);
        next.next();
        load_vec(p + at.patch, pv[j]);
        load_vec(w + at.weight, wv[j]);
      }
#pragma unroll
      for (int j = 0; j < KB; ++j) {
        if (t0 + j >= windows) continue;
#pragma unroll
        for (int k = 0; k < V; ++k) num[k] += static_cast<float>(pv[j][k]) * wv[j][k];
      }
    }
    float iv[V];
    load_vec(inv + (pos.z * int32_t(g.S[1]) + pos.y) * int32_t(g.S[2]) + pos.x0, iv);
    T r[V];
#pragma unroll
    for (int k = 0; k < V; ++k) r[k] = static_cast<T>(num[k] * iv[k]);
    store_vec(o + image_offset<int32_t>(g, pos.n, pos.c, pos.z, pos.y, pos.x0), r);
  }
}

// 1 / weight sum per voxel, for IW (whose products round differently from num / den: IW
// lines show differing voxels)
__global__ void inverse_weight_sum(const float* w, float* inv, GridGeometry gg) {
  const Geometry& g = gg.g;
  const int64_t n = g.S[0] * g.S[1] * g.S[2];
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < n; v += int64_t(gridDim.x) * blockDim.x)
    inv[v] = inverse_or_zero(grid_voxel_weight_sum<float>(g, gg.step, w, v / (g.S[1] * g.S[2]), v / g.S[2] % g.S[1], v % g.S[2]));
}

template <typename T>
__global__ void fill_patches(T* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = static_cast<T>(float((i * 2654435761u) % 1000) * 1e-3f - 0.5f);
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

// staged: false: the shipped bodies and shapes, and IW; true: the staging shapes (run last:
// a fault in their shared memory or cp.async cannot cost the other lines).
template <typename T>
void run(const char* name, bool staged) {
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
  std::vector<float> hw(64 * 64 * 64);
  for (size_t k = 0; k < hw.size(); ++k) hw[k] = 0.1f + (k % 7) * 0.1f;
  CK(cudaMemcpy(w, hw.data(), hw.size() * 4, cudaMemcpyHostToDevice));
  fill_patches<<<4096, 256>>>(p, P);
  inverse_weight_sum<<<4096, 256>>>(w, inv, gg);  // for IW
  const double bytes = double(P + O) * sizeof(T);
  float tc = timeit([&] { cudaMemcpyAsync(cp, p, P * sizeof(T), cudaMemcpyDeviceToDevice); });
  const double copy_bw = 2.0 * P * sizeof(T) / (tc * 1e-3);
  printf("%s: copy %.3f ms (%.2f TB/s)\n", name, tc, copy_bw / 1e12);
  std::vector<T> ref(O), got(O);
  const char* best = nullptr;  // fastest line whose output equals the general body's
  float best_ms = 1e9;
  auto report = [&](const char* v, float ms) {
    CK(cudaMemcpy(got.data(), o2, O * sizeof(T), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t k = 0; k < O; ++k) bad += memcmp(&ref[k], &got[k], sizeof(T)) != 0;
    printf("  %-40s %.3f ms  %5.1f%% of copy bw  %zu voxels differ\n", v, ms,
           100.0 * bytes / (ms * 1e-3) / copy_bw, bad);
    if (bad == 0 && ms < best_ms) { best = v; best_ms = ms; }
    CK(cudaMemset(o2, 0, O * sizeof(T)));
  };
  constexpr int V16 = 16 / sizeof(T);
  {
    const int64_t total = O / V16;
    const float ms = timeit([&] { k_general<T><<<int((total + 255) / 256), 256>>>(p, w, o, gg, StitchVectorAccess{true, true}, total); });
    CK(cudaMemcpy(ref.data(), o, O * sizeof(T), cudaMemcpyDeviceToHost));
    printf("  %-40s %.3f ms  %5.1f%% of copy bw  (the reference)\n", "general body (shipped)", ms, 100.0 * bytes / (ms * 1e-3) / copy_bw);
  }
#define SHAPE(label, ...) { using Sh = __VA_ARGS__; const int64_t total = O / Sh::kVoxels; \
    report(label, timeit([&] { k_shape<T, Sh><<<int((total + 255) / 256), 256>>>(p, w, o2, gg, total); })); }
#define SHAPE_NO_WEIGHTS(label, ...) { using Sh = __VA_ARGS__; const int64_t total = O / Sh::kVoxels; \
    report(label, timeit([&] { k_shape<T, Sh><<<int((total + 255) / 256), 256>>>(p, nullptr, o2, gg, total); })); }
#define STAGED(label, ST, ...) { using Sh = __VA_ARGS__; const int64_t total = O / Sh::kVoxels; \
    constexpr int smem = stitch_stage_bytes<Sh, ST, T>(256); \
    CK(cudaFuncSetAttribute(k_staged<T, Sh, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)); \
    report(label, timeit([&] { k_staged<T, Sh, ST><<<int((total + 255) / 256), 256, smem>>>(p, w, o2, gg, total); })); }
#define IW(V, KB, MINB) { const int64_t total = O / (V); \
    report("IW V=" #V " KB=" #KB " MINB=" #MINB, timeit([&] { k_iw<T, V, KB, MINB><<<int((total + 255) / 256), 256>>>(p, w, o2, inv, gg, total); })); }
  if (staged) {  // STAGED(label, slots (windows ahead + 1), S<voxels, 1, false, 0, min blocks>)
    if constexpr (sizeof(T) == 2) {
      STAGED("staged S<32,1,0,0,2,ST2>", 2, S<4 * V16, 1, false, 0, 2>)
      STAGED("staged S<32,1,0,0,2,ST3>", 3, S<4 * V16, 1, false, 0, 2>)
      STAGED("staged S<32,1,0,0,2,ST4>", 4, S<4 * V16, 1, false, 0, 2>)
      STAGED("staged S<16,1,0,0,3,ST3>", 3, S<2 * V16, 1, false, 0, 3>)
      STAGED("staged S<16,1,0,0,3,ST4>", 4, S<2 * V16, 1, false, 0, 3>)
      STAGED("staged S<16,1,0,0,3,ST6>", 6, S<2 * V16, 1, false, 0, 3>)
      STAGED("staged S<8,1,0,0,4,ST4>", 4, S<V16, 1, false, 0, 4>)
      STAGED("staged S<8,1,0,0,4,ST8>", 8, S<V16, 1, false, 0, 4>)
    } else {
      STAGED("staged S<8,1,0,0,3,ST3>", 3, S<2 * V16, 1, false, 0, 3>)
      STAGED("staged S<8,1,0,0,3,ST4>", 4, S<2 * V16, 1, false, 0, 3>)
      STAGED("staged S<8,1,0,0,3,ST6>", 6, S<2 * V16, 1, false, 0, 3>)
      STAGED("staged S<16,1,0,0,2,ST3>", 3, S<4 * V16, 1, false, 0, 2>)
    }
  } else {
    SHAPE("aligned body, shipped shape", StitchAlignedShape<T>)
    // Flat weights (no weight loads; its voxels differ): how much loading the weights costs,
    // the most that keeping them closer (shared memory, separable profiles) could win.
    SHAPE_NO_WEIGHTS("shipped shape, no weight loads", StitchAlignedShape<T>)
    if constexpr (sizeof(T) == 2) {  // shipped: S<16, 1, false, 2, 3>
      SHAPE("S<32,1,0,PF0,2> (shipped before)", S<4 * V16, 1, false, 0, 2>)
      SHAPE("S<32,1,0,PF1,2>", S<4 * V16, 1, false, 1, 2>)
      SHAPE("S<32,1,0,PF2,2>", S<4 * V16, 1, false, 2, 2>)
      SHAPE("S<32,1,0,PF4,2>", S<4 * V16, 1, false, 4, 2>)
      SHAPE("S<16,1,0,PF0,3>", S<2 * V16, 1, false, 0, 3>)
      SHAPE("S<8,4,0,PF0,3>", S<V16, 4, false, 0, 3>)
      SHAPE("S<16,2,1,PF2,2>", S<2 * V16, 2, true, 2, 2>)
      SHAPE("S<8,2,1,PF2,3>", S<V16, 2, true, 2, 3>)
      SHAPE("S<8,1,0,PF2,4> (shipped second shape)", S<V16, 1, false, 2, 4>)
      IW(32, 1, 2) IW(16, 2, 2) IW(16, 1, 3)
    } else {  // shipped: S<8, 2, true, 0, 3>
      SHAPE("S<8,2,1,PF0,2> (before: 96 registers)", S<2 * V16, 2, true, 0, 2>)
      SHAPE("S<8,2,1,PF2,3>", S<2 * V16, 2, true, 2, 3>)
      SHAPE("S<8,2,1,PF4,3>", S<2 * V16, 2, true, 4, 3>)
      SHAPE("S<8,1,1,PF2,4>", S<2 * V16, 1, true, 2, 4>)
      SHAPE("S<4,2,1,PF2,4>", S<V16, 2, true, 2, 4>)
      SHAPE("S<4,2,1,PF0,4> (shipped second shape)", S<V16, 2, true, 0, 4>)
      IW(8, 2, 3)
    }
  }
  if (best != nullptr)
    printf("  fastest bit-identical line: %s, %.1f%% of copy bw\n", best,
           100.0 * bytes / (best_ms * 1e-3) / copy_bw);
  cudaFree(p); cudaFree(cp); cudaFree(o); cudaFree(o2); cudaFree(w); cudaFree(inv);
}

int main() {
  for (bool staged : {false, true}) {
    run<float>(staged ? "float32, staged" : "float32", staged);
    run<__nv_bfloat16>(staged ? "bfloat16, staged" : "bfloat16", staged);
  }
}
