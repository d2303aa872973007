// Runs the CUDA kernel bodies (csrc/kernel_bodies/window_chunk.h, stitch_grid_chunk.h,
// stitch_grid_fast_path.h, grid_voxel_weight_sum and grid_normalize_voxel in index_math.h) on
// the CPU, for every thread of an emulated launch, against float64 references: random 2D/3D
// shapes, windows, steps (with gaps), channels, dtypes of 1, 2, 4 and 8 bytes, 32- and 64-bit
// index math, aligned and misaligned base pointers, short block and grid sizes (grid-stride
// loops, K chunks per thread). Vector accesses assert 16-byte alignment on the host
// (vec_access.h), so a wrong alignment decision fails here; built with AddressSanitizer, so
// an out-of-bounds access fails. Also the disjoint window sets of the deterministic scatter-add
// (disjoint_groups.h), and the CPU gather's streaming row copy (cpu/stream_store.h) at every
// length and alignment.
// Built and run by tools/run_kernel_bodies.sh (`make kernel-bodies`, part of `make test`).
// Exit status 0 = all cases passed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernel_bodies/class_epilogue.h"
#include "kernel_bodies/disjoint_groups.h"
#include "kernel_bodies/geometry.h"
#include "kernel_bodies/orientation.h"
#include "kernel_bodies/stitch_grid_fast_path.h"
#include "kernel_bodies/window_chunk.h"
#include "cpu/stream_store.h"

using namespace fastquilt;

namespace {

// A 2-byte float (bfloat16 by truncation): exercises the 8-element vectors of half/bf16.
struct bf16 {
  uint16_t bits;
  bf16() = default;
  bf16(float f) {  // NOLINT: implicit like c10::BFloat16
    uint32_t u;
    std::memcpy(&u, &f, 4);
    bits = uint16_t(u >> 16);
  }
  operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <typename T> struct AccOf { using type = T; };
template <> struct AccOf<bf16> { using type = float; };
template <> struct AccOf<uint8_t> { using type = uint8_t; };
template <typename T> using acc_of = typename AccOf<T>::type;

int failures = 0;
int checks = 0;  // cases run
int aligned_stitch_checks = 0;  // stitch cases with every column on the aligned fast path
int split_stitch_checks = 0;    // stitch cases with the fast path left of the last window
std::mt19937_64 rng(12345);

int64_t rand_int(int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
double rand_unit() { return std::uniform_real_distribution<double>(-1, 1)(rng); }

void fail(const std::string& what) {
  if (++failures <= 20) std::printf("FAIL %s\n", what.c_str());
}

// A buffer whose data starts `shift` elements after a 64-byte boundary (shift 1: misaligned
// base pointer, as for a tensor view at an odd offset).
template <typename T>
struct Buffer {
  std::vector<unsigned char> raw;
  T* data;
  Buffer(int64_t n, int shift) : raw((n + shift) * sizeof(T) + 64) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(raw.data());
    data = reinterpret_cast<T*>((p + 63) / 64 * 64) + shift;
  }
};

struct Case {
  Geometry g;
  int64_t D;
  int64_t step[3];
  std::string name;
};

// aligned_rows: window rows and steps along x in whole units of V, image rows too, or, when
// s_unit is given, image rows in whole units of s_unit that put the last (stepped-back) window
// off the V grid.
Case random_case(int V, bool aligned_rows, int s_unit = 0) {
  Case k;
  k.D = rand_int(0, 1) ? 3 : 2;
  Geometry& g = k.g;
  g.N = rand_int(1, 2);
  g.C = rand_int(1, 3);
  for (int d = 0; d < 3; ++d) {
    if (k.D == 2 && d == 1) { g.S[1] = g.W[1] = 1; k.step[1] = 1; continue; }
    g.W[d] = rand_int(1, 12);
    g.S[d] = g.W[d] + rand_int(0, 25);
    k.step[d] = rand_int(1, g.W[d] + 3);  // > W: gaps
  }
  if (aligned_rows) {  // rows a whole number of vectors: the vector paths run
    g.W[2] = V * rand_int(1, 3);
    g.S[2] = g.W[2] + (s_unit ? V * rand_int(1, 3) + s_unit * rand_int(1, V / s_unit - 1)
                              : V * rand_int(0, 4));
    k.step[2] = V * rand_int(1, 2);
  }
  k.name = "N" + std::to_string(g.N) + " C" + std::to_string(g.C) + " S" +
           std::to_string(g.S[0]) + "x" + std::to_string(g.S[1]) + "x" + std::to_string(g.S[2]) +
           " W" + std::to_string(g.W[0]) + "x" + std::to_string(g.W[1]) + "x" +
           std::to_string(g.W[2]) + " step" + std::to_string(k.step[0]) + "," +
           std::to_string(k.step[1]) + "," + std::to_string(k.step[2]);
  return k;
}

// The case's grid, through the constructor the ops use (sizes as the op takes them).
GridGeometry grid_of(const Case& k) {
  const Geometry& g = k.g;
  const int64_t S2[2] = {g.S[0], g.S[2]}, W2[2] = {g.W[0], g.W[2]}, s2[2] = {k.step[0], k.step[2]};
  GridGeometry gg = k.D == 3 ? make_grid_geometry(g.C, g.S, g.W, k.step, 3)
                             : make_grid_geometry(g.C, S2, W2, s2, 2);
  gg.g.N = g.N;
  return gg;
}

// Origins rows [n, start...] (1 + D columns): the full grid in qlty order, or random windows.
std::vector<int64_t> make_origins(const Case& k, bool grid, int64_t* M) {
  std::vector<int64_t> org;
  const Geometry& g = k.g;
  auto push = [&](int64_t n, int64_t a, int64_t b, int64_t c) {
    org.push_back(n);
    org.push_back(a);
    if (k.D == 3) org.push_back(b);
    org.push_back(c);
  };
  if (grid) {
    const GridGeometry gg = grid_of(k);
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i0 = 0; i0 < gg.count[0]; ++i0)
        for (int64_t i1 = 0; i1 < gg.count[1]; ++i1)
          for (int64_t i2 = 0; i2 < gg.count[2]; ++i2)
            push(n, grid_start(i0, g.S[0], g.W[0], k.step[0]),
                 grid_start(i1, g.S[1], g.W[1], k.step[1]),
                 grid_start(i2, g.S[2], g.W[2], k.step[2]));
  } else {
    for (int64_t m = rand_int(1, 9); m > 0; --m)
      push(rand_int(0, g.N - 1), rand_int(0, g.S[0] - g.W[0]), rand_int(0, g.S[1] - g.W[1]),
           rand_int(0, g.S[2] - g.W[2]));
  }
  *M = int64_t(org.size()) / (1 + k.D);
  return org;
}

template <typename T>
T random_value() {
  if constexpr (std::is_same_v<T, uint8_t>) return T(rand_int(0, 255));
  else return T(float(rand_unit()));
}

// ---- gather: gather_chunks for every thread of an emulated launch vs plain loops ----
template <typename T, typename I>
void check_gather(const Case& k, bool grid, bool weighted, int shift_in, int shift_out,
                  bool bad_origin) {
  ++checks;
  using acc_t = acc_of<T>;
  constexpr int V = Vec16<T>::kSize;
  constexpr int K = 4;
  const Geometry& g = k.g;
  int64_t M;
  std::vector<int64_t> org = make_origins(k, grid, &M);
  if (bad_origin) org[org.size() - 1] = g.S[2] - g.W[2] + 1;  // last window leaves the image
  const int64_t vol = g.S[0] * g.S[1] * g.S[2], wvol = g.W[0] * g.W[1] * g.W[2];
  Buffer<T> in(g.N * g.C * vol, shift_in), out(M * g.C * wvol, shift_out);
  std::vector<acc_t> w(wvol);
  for (int64_t i = 0; i < g.N * g.C * vol; ++i) in.data[i] = random_value<T>();
  for (auto& v : w) v = acc_t(std::fabs(rand_unit()));
  const T sentinel = T(7);
  for (int64_t i = 0; i < M * g.C * wvol; ++i) out.data[i] = sentinel;
  const acc_t* wp = weighted ? w.data() : nullptr;
  const bool vec = aligned16(in.data) && aligned16(out.data);
  const int64_t total = window_chunk_count<V>(g, M);
  const int64_t block = rand_int(1, 3) * 32, grid_blocks = rand_int(1, 4);
  bool ok = true;
  for (int64_t b = 0; b < grid_blocks; ++b)
    for (int64_t t = 0; t < block; ++t)
      for (int64_t first = b * block * K + t; first < total; first += grid_blocks * block * K)
        ok = gather_chunks<K, I>(in.data, org.data(), wp, out.data, g, int(k.D), total, vec,
                                 first, block) && ok;
  const std::string what = "gather " + k.name + (weighted ? " weighted" : "") +
                           (vec ? " vec" : " scalar") + " sizeof " + std::to_string(sizeof(T)) +
                           " index bytes " + std::to_string(sizeof(I));
  if (ok == bad_origin) fail(what + ": bounds flag " + std::to_string(ok));
  for (int64_t m = 0; m < M; ++m) {
    const int64_t* r = &org[m * (1 + k.D)];
    const int64_t n = r[0], o0 = r[1], o1 = k.D == 3 ? r[2] : 0, o2 = r[k.D];
    const bool inside = o2 + g.W[2] <= g.S[2];
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t a = 0; a < g.W[0]; ++a)
        for (int64_t bb = 0; bb < g.W[1]; ++bb)
          for (int64_t x = 0; x < g.W[2]; ++x) {
            const T got = out.data[patch_offset(g, m, c, a, bb, x)];
            if (!inside) {  // skipped, not written
              if (!(got == sentinel)) { fail(what + ": wrote a bad window"); return; }
              continue;
            }
            const T v = in.data[image_offset(g, n, c, o0 + a, o1 + bb, o2 + x)];
            const T want = weighted ? T(acc_t(acc_t(v) * w[weight_offset(g, a, bb, x)])) : v;
            if (std::memcmp(&got, &want, sizeof(T)) != 0) { fail(what); return; }
          }
  }
}

// ---- scatter-add index math: window_chunk<4> offsets, added serially vs plain loops ----
template <typename I>
void check_scatter_offsets(const Case& k, bool grid) {
  ++checks;
  const Geometry& g = k.g;
  int64_t M;
  const std::vector<int64_t> org = make_origins(k, grid, &M);
  const int64_t vol = g.S[0] * g.S[1] * g.S[2], wvol = g.W[0] * g.W[1] * g.W[2];
  std::vector<double> p(M * g.C * wvol), w(wvol), acc(g.N * g.C * vol, 0), ws(g.N * vol, 0);
  std::vector<double> racc(acc), rws(ws);
  for (auto& v : p) v = rand_unit();
  for (auto& v : w) v = std::fabs(rand_unit());
  // As the deterministic CUDA path launches them: sets of pairwise disjoint windows, each
  // set a launch over the selected windows (sel). Checked: the sets partition the windows,
  // keep their order, and no voxel is written twice within a set.
  const int64_t Wd[3] = {g.W[0], k.D == 3 ? g.W[1] : g.W[2], g.W[2]};
  const WindowGroups groups = disjoint_window_groups(org.data(), M, int(k.D), Wd);
  std::vector<int> seen(M, 0);
  for (int64_t m : groups.order) seen[m] += 1;
  for (int64_t m = 0; m < M; ++m)
    if (seen[m] != 1) { fail("groups: window not exactly once " + k.name); return; }
  for (size_t q = 0; q + 1 < groups.bounds.size(); ++q) {
    const int64_t* sel = groups.order.data() + groups.bounds[q];
    const int64_t count = groups.bounds[q + 1] - groups.bounds[q];
    for (int64_t j = 1; j < count; ++j)
      if (sel[j] <= sel[j - 1]) { fail("groups: order " + k.name); return; }
    std::vector<char> hit(acc.size(), 0);
    for (int64_t i = 0; i < window_chunk_count<4>(g, count); ++i) {
      WindowChunk<I> ch;
      if (!window_chunk<4>(g, org.data(), sel, int(k.D), I(i), &ch)) {
        fail("scatter bounds " + k.name);
        return;
      }
      for (int j = 0; j < ch.len; ++j) {
        if (hit[ch.image + j]++) { fail("groups: overlapping windows in a set " + k.name); return; }
        acc[ch.image + j] += p[ch.patch + j] * w[ch.weight + j];
        if (ch.c == 0) ws[ch.voxel + j] += w[ch.weight + j];
      }
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    const int64_t* r = &org[m * (1 + k.D)];
    const int64_t n = r[0], o0 = r[1], o1 = k.D == 3 ? r[2] : 0, o2 = r[k.D];
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t a = 0; a < g.W[0]; ++a)
        for (int64_t b = 0; b < g.W[1]; ++b)
          for (int64_t x = 0; x < g.W[2]; ++x) {
            const double wv = w[weight_offset(g, a, b, x)];
            racc[image_offset(g, n, c, o0 + a, o1 + b, o2 + x)] +=
                p[patch_offset(g, m, c, a, b, x)] * wv;
            if (c == 0) rws[((n * g.S[0] + o0 + a) * g.S[1] + o1 + b) * g.S[2] + o2 + x] += wv;
          }
  }
  for (size_t i = 0; i < acc.size(); ++i)
    if (std::fabs(acc[i] - racc[i]) > 1e-12) { fail("scatter " + k.name); return; }
  for (size_t i = 0; i < ws.size(); ++i)
    if (std::fabs(ws[i] - rws[i]) > 1e-12) { fail("scatter weight sum " + k.name); return; }
}

// ---- deterministic grid stitch: stitch_grid_chunk for every chunk vs float64 ----
// The fast path with shape Shape, on the columns it takes on this grid (if any), must give
// there the bytes of the general body's output `general`. Returns whether it had columns.
template <typename Shape, typename I, typename T, typename acc_t>
bool check_aligned_shape(const T* p, const acc_t* w, const GridGeometry& gg, acc_t fill,
                         const T* general, const std::string& name) {
  const Geometry& g = gg.g;
  const int64_t rows = g.N * g.C * g.S[0] * g.S[1];
  Buffer<T> out(rows * g.S[2], 0);
  const ColumnRange fast{0, stitch_aligned_columns_end<T, Shape>(p, w, out.data, gg)};
  if (fast.end == 0) return false;
  const std::string what = "stitch aligned (voxels " + std::to_string(Shape::kVoxels) +
                           ", batch " + std::to_string(Shape::kBatch) + ", prefetch " +
                           std::to_string(Shape::kPrefetch) + ") ";
  for (int64_t i = 0; i < stitch_chunk_count(g, fast, Shape::kVoxels); ++i)
    stitch_grid_chunk_aligned<I, T, acc_t, Shape>(p, w, out.data, gg, fill, fast, I(i));
  for (int64_t r = 0; r < rows; ++r)
    if (std::memcmp(general + r * g.S[2], out.data + r * g.S[2], fast.end * sizeof(T)) != 0) {
      fail(what + "!= general " + name);
      break;
    }
  return true;
}

// kVoxels of the k-th shape of a list.
template <typename... Shapes>
constexpr int shape_voxels(ShapeList<Shapes...>, int k) {
  constexpr int v[] = {Shapes::kVoxels...};
  return v[k];
}

// The fast path's other load schedules for chunks of V voxels (the experiment's): batches of
// 1 to 3 windows, with and without their weights, L2 prefetch 0 to 3 windows ahead.
template <int V>
using OtherSchedules =
    ShapeList<StitchChunkShape<V, 2, true, 3, 2>, StitchChunkShape<V, 1, false, 1, 2>,
              StitchChunkShape<V, 3, false, 2, 2>, StitchChunkShape<V, 1, false, 0, 2>,
              StitchChunkShape<V, 1, true, 0, 2>>;

std::vector<int> chosen_shape_cases(2, 0);  // stitch cases per shape the launcher would pick

template <typename T, typename I>
void check_stitch(const Case& k, bool weighted, int shift_p, int shift_w, int shift_out) {
  ++checks;
  using acc_t = acc_of<T>;
  const GridGeometry gg = grid_of(k);
  const Geometry& g = gg.g;
  const int64_t M = g.N * gg.num_windows;
  const int64_t vol = g.S[0] * g.S[1] * g.S[2], wvol = g.W[0] * g.W[1] * g.W[2];
  Buffer<T> p(M * g.C * wvol, shift_p), out(g.N * g.C * vol, shift_out);
  Buffer<acc_t> w(wvol, shift_w);
  for (int64_t i = 0; i < M * g.C * wvol; ++i) p.data[i] = T(float(rand_unit()));
  for (int64_t i = 0; i < wvol; ++i)  // some zero weights: voxels with no weight get the fill
    w.data[i] = rand_int(0, 4) == 0 ? acc_t(0) : acc_t(std::fabs(rand_unit()) + 0.05);
  for (int64_t i = 0; i < g.N * g.C * vol; ++i) out.data[i] = T(1e30f);
  const acc_t* wp = weighted ? w.data : nullptr;
  const acc_t fill = acc_t(-5);
  // The launcher's choice: columns [0, split) on the first of StitchAlignedShapes with a fast
  // path here, the rest on the general body.
  const AlignedChoice choice =
      choose_aligned_shape<T>(StitchAlignedShapes<T>(), p.data, wp, out.data, gg);
  const int64_t split = choice.end;
  const StitchVectorAccess vec = stitch_vector_access<T>(p.data, wp, out.data, g);
  const ColumnRange fast{0, split}, rest{split, g.S[2]};
  if (choice.shape >= 0)
    with_shape(StitchAlignedShapes<T>(), choice.shape, [&](auto shape) {
      using Shape = decltype(shape);
      for (int64_t i = 0; i < stitch_chunk_count(g, fast, Shape::kVoxels); ++i)
        stitch_grid_chunk_aligned<I, T, acc_t, Shape>(p.data, wp, out.data, gg, fill, fast,
                                                      I(i));
    });
  for (int64_t i = 0; i < stitch_chunk_count(g, rest, Vec16<T>::kSize); ++i)
    stitch_grid_chunk<I>(p.data, wp, out.data, gg, fill, vec, rest, I(i));
  if (split > 0) {
    ++(split == g.S[2] ? aligned_stitch_checks : split_stitch_checks);
    ++chosen_shape_cases.at(choice.shape);
    // Both paths sum in the same order: bit-identical to the general body alone.
    Buffer<T> general(g.N * g.C * vol, shift_out);
    const ColumnRange all{0, g.S[2]};
    for (int64_t i = 0; i < stitch_chunk_count(g, all, Vec16<T>::kSize); ++i)
      stitch_grid_chunk<I>(p.data, wp, general.data, gg, fill, vec, all, I(i));
    if (std::memcmp(general.data, out.data, g.N * g.C * vol * sizeof(T)) != 0)
      fail("stitch aligned != general " + k.name);
    // Every shape of the list that has a fast path here, chosen or not; and, with the chosen
    // shape's chunk, the other load schedules (the experiment's): L2 prefetches ahead (host:
    // reads that ASan checks stay in the patches), other batches. All must give the same
    // bytes.
    for (int s = 0; s < StitchAlignedShapes<T>::kSize; ++s)
      with_shape(StitchAlignedShapes<T>(), s, [&](auto shape) {
        check_aligned_shape<decltype(shape), I>(p.data, wp, gg, fill, general.data, k.name);
      });
    with_shape(StitchAlignedShapes<T>(), choice.shape, [&](auto shape) {
      using Schedules = OtherSchedules<decltype(shape)::kVoxels>;
      for (int s = 0; s < Schedules::kSize; ++s)
        with_shape(Schedules(), s, [&](auto schedule) {
          check_aligned_shape<decltype(schedule), I>(p.data, wp, gg, fill, general.data, k.name);
        });
    });
  }
  // The CUDA grid_normalize_ body over an emulated launch (one call per voxel): acc scaled in
  // place, checked against 1 / den below.
  std::vector<acc_t> normed(static_cast<size_t>(g.N * g.C * vol));
  for (size_t j = 0; j < normed.size(); ++j) normed[j] = acc_t(1 + j % 7);
  for (int64_t i = 0; i < vol; ++i) grid_normalize_voxel<acc_t, I>(normed.data(), wp, gg, i, fill);
  const std::string what = "stitch " + k.name + (weighted ? " weighted" : "") +
                           " aligned columns " + std::to_string(split) +
                           (vec.load ? " vload" : "") + (vec.store ? " vstore" : "") +
                           " sizeof " + std::to_string(sizeof(T)) + " index bytes " +
                           std::to_string(sizeof(I));
  const double tol = sizeof(T) == 2 ? 1.0 / 64 : sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t z = 0; z < g.S[0]; ++z)
        for (int64_t y = 0; y < g.S[1]; ++y)
          for (int64_t x = 0; x < g.S[2]; ++x) {
            double num = 0, den = 0;
            for (int64_t i0 = 0; i0 < gg.count[0]; ++i0)
              for (int64_t i1 = 0; i1 < gg.count[1]; ++i1)
                for (int64_t i2 = 0; i2 < gg.count[2]; ++i2) {
                  const int64_t a = z - grid_start(i0, g.S[0], g.W[0], k.step[0]);
                  const int64_t b = y - grid_start(i1, g.S[1], g.W[1], k.step[1]);
                  const int64_t xx = x - grid_start(i2, g.S[2], g.W[2], k.step[2]);
                  if (a < 0 || a >= g.W[0] || b < 0 || b >= g.W[1] || xx < 0 || xx >= g.W[2])
                    continue;
                  const int64_t m = n * gg.num_windows + (i0 * gg.count[1] + i1) * gg.count[2] + i2;
                  const double wv = weighted ? double(w.data[weight_offset(g, a, b, xx)]) : 1.0;
                  num += double(acc_t(p.data[patch_offset(g, m, c, a, b, xx)])) * wv;
                  den += wv;
                }
            // the CUDA grid_weight_sum body, same voxel
            const double ws = double(grid_voxel_weight_sum<acc_t, I>(g, gg.step, wp, I(z), I(y),
                                                                   I(x)));
            if (!(std::fabs(ws - den) <= 1e-5 * (1 + den))) {
              fail("grid_voxel_weight_sum " + what + ": got " + std::to_string(ws) + " want " +
                   std::to_string(den));
              return;
            }
            const int64_t j = (n * g.C + c) * vol + (z * g.S[1] + y) * g.S[2] + x;
            const double want_normed = den > 0 ? double(1 + j % 7) / den : double(fill);
            if (!(std::fabs(double(normed[j]) - want_normed) <=
                  (sizeof(acc_t) == 4 ? 1e-5 : 1e-12) * (1 + std::fabs(want_normed)))) {
              fail("grid_normalize_voxel " + what + ": got " + std::to_string(normed[j]) +
                   " want " + std::to_string(want_normed));
              return;
            }
            const double want = den > 0 ? num / den : double(fill);
            const double got = double(acc_t(out.data[image_offset(g, n, c, z, y, x)]));
            if (!(std::fabs(got - want) <= tol * (1 + std::fabs(want)))) {
              fail(what + " at n" + std::to_string(n) + " c" + std::to_string(c) + " z" +
                   std::to_string(z) + " y" + std::to_string(y) + " x" + std::to_string(x) +
                   ": got " + std::to_string(got) + " want " + std::to_string(want));
              return;
            }
          }
}

// Every case runs with 32-bit and 64-bit index math (the kernels pick one per launch).
template <typename T>
void run_dtype(int cases) {
  constexpr int V = Vec16<T>::kSize;
  const std::vector<int> chosen_before = chosen_shape_cases;
  for (int i = 0; i < cases; ++i) {
    const bool aligned_rows = i % 2 == 0;
    // aligned rows: windows in whole chunks of the stitch's first fast-path shape, of its second
    // or of one 16-byte vector, in turn; the image too or, every other time for wider units,
    // only in 16-byte vectors (the fast path stops left of the last window)
    const int u = (i / 2) % 3;
    const int row_unit = u == 0   ? StitchAlignedShape<T>::kVoxels
                         : u == 1 ? shape_voxels(StitchAlignedShapes<T>(), 1)
                                  : V;
    const bool split_image = (i / 6) % 2 == 1 && row_unit > V;
    const Case k = random_case(row_unit, aligned_rows, split_image ? V : 0);
    const int si = i % 5 == 4 ? 1 : 0, so = i % 7 == 6 ? 1 : 0;  // some misaligned views
    const bool floating = !std::is_same_v<T, uint8_t>;
    const bool weighted = floating && i % 2 == 1;
    check_gather<T, int32_t>(k, i % 3 != 0, weighted, si, so, false);
    check_gather<T, int64_t>(k, i % 3 != 0, weighted, si, so, false);
    if (i % 10 == 0) check_gather<T, int32_t>(k, false, false, 0, 0, true);
    if constexpr (!std::is_same_v<T, uint8_t>) {
      const int sw = i % 11 == 10 ? 1 : 0;
      check_stitch<T, int32_t>(k, i % 4 != 3, si, sw, so);
      check_stitch<T, int64_t>(k, i % 4 != 3, si, sw, so);
    }
  }
  if constexpr (!std::is_same_v<T, uint8_t>)
    for (int s = 0; s < StitchAlignedShapes<T>::kSize; ++s)
      if (chosen_shape_cases[s] - chosen_before[s] < 4)
        fail("fast-path shape " + std::to_string(s) + " of sizeof " + std::to_string(sizeof(T)) +
             " chosen in " + std::to_string(chosen_shape_cases[s] - chosen_before[s]) +
             " stitch cases: too few");
}

// The deterministic CUDA scatter launches once per set: for qlty's 3D half-overlap grid
// (512^3, window 64, step 32: 3375 windows) the greedy colouring finds the optimum, 2^3 sets.
void check_group_count() {
  ++checks;
  std::vector<int64_t> org;
  const int64_t S = 512, w = 64, s = 32, n = grid_count<int64_t>(S, w, s);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < n; ++c)
        for (int64_t v : {int64_t(0), grid_start<int64_t>(a, S, w, s),
                          grid_start<int64_t>(b, S, w, s), grid_start<int64_t>(c, S, w, s)})
          org.push_back(v);
  const int64_t W[3] = {w, w, w};
  const WindowGroups groups = disjoint_window_groups(org.data(), n * n * n, 3, W);
  if (groups.bounds.size() != 9)
    fail("groups: " + std::to_string(groups.bounds.size() - 1) + " sets for the 512^3 grid");
}

// ---- oriented gather: oriented_element_offset for every element vs the definition ----
// patch[m, c, j] = image[n, c, o + i] with i_k = j_d or W_k - 1 - j_d for code_d = +-(k + 1),
// computed here with plain loops over D-axis indices. Random valid orientations (axes of equal
// window size made equal first), plus invalid ones and out-of-bounds origins (offset -1).
template <typename I>
void check_oriented(Case k) {
  Geometry& g = k.g;
  const int D = int(k.D);
  const int ax[3] = {0, D == 3 ? 1 : 2, 2};  // normalised axis of spatial axis d
  if (rand_int(0, 1)) {  // equal window sizes (and room for them): permutations happen
    const int64_t w = g.W[0];
    for (int d = 0; d < D; ++d) { g.W[ax[d]] = w; g.S[ax[d]] = std::max(g.S[ax[d]], w); }
  }
  int64_t M = 0;
  std::vector<int64_t> org = make_origins(k, false, &M);
  std::vector<int64_t> ori;
  for (int64_t m = 0; m < M; ++m) {
    int perm[3] = {0, 1, 2};
    std::shuffle(perm, perm + D, rng);
    for (int d = 0; d < D; ++d) {
      if (g.W[ax[perm[d]]] != g.W[ax[d]]) perm[d] = d;  // keep the shape
    }
    bool seen[3] = {false, false, false}, ok = true;
    for (int d = 0; d < D; ++d) { ok = ok && !seen[perm[d]]; seen[perm[d]] = true; }
    for (int d = 0; d < D; ++d) {
      const int64_t code = ok ? perm[d] + 1 : d + 1;
      ori.push_back(rand_int(0, 1) ? -code : code);
    }
  }
  const int64_t win = g.C * g.W[0] * g.W[1] * g.W[2];
  for (int64_t i = 0; i < M * win; ++i) {
    const int64_t m = i / win, c = (i / (g.W[0] * g.W[1] * g.W[2])) % g.C;
    const int64_t j3[3] = {(i / (g.W[1] * g.W[2])) % g.W[0], (i / g.W[2]) % g.W[1], i % g.W[2]};
    int64_t src[3] = {0, 0, 0};  // normalised input position
    for (int d = 0; d < D; ++d) {
      const int64_t code = ori[m * D + d], kk = (code < 0 ? -code : code) - 1;
      const int64_t j = j3[ax[d]];
      src[ax[kk]] = code < 0 ? g.W[ax[kk]] - 1 - j : j;
    }
    int64_t o[4];
    normalised_origin(org.data() + m * (1 + D), D, o);
    const int64_t want = image_offset<int64_t>(g, o[0], c, o[1] + src[0], o[2] + src[1],
                                               o[3] + src[2]);
    const int64_t got = oriented_element_offset<I>(g, org.data(), ori.data(), D, I(i));
    if (got != want) fail("oriented offset " + k.name + " element " + std::to_string(i));
  }
  // a repeated axis code and an origin past the image: -1, nothing read
  std::vector<int64_t> bad(ori.begin(), ori.begin() + D);
  bad[0] = bad[D - 1] = D;
  if (D > 1 && oriented_element_offset<I>(g, org.data(), bad.data(), D, I(0)) != -1)
    fail("oriented: repeated axis code accepted " + k.name);
  std::vector<int64_t> far(org.begin(), org.begin() + 1 + D);
  far[1] = g.S[0];
  if (oriented_element_offset<I>(g, far.data(), ori.data(), D, I(0)) != -1)
    fail("oriented: origin past the image accepted " + k.name);
  ++checks;
}

}  // namespace

// The class epilogue of one voxel (class_epilogue.h) against a float64 reference: the
// normalisation rule, the first maximum (NaN counts as the maximum), its mean, the entropy;
// channels at a stride, as the kernels read them; uint8 and uint16 labels.
template <typename T, typename L>
void check_class_epilogue(int cases) {
  std::mt19937 rng(7);
  for (int i = 0; i < cases; ++i) {
    const int64_t big = sizeof(L) == 1 ? 256 : 300;
    const int64_t C = 1 + int64_t(rng() % (i % 3 == 0 ? big : 9)), stride = 1 + rng() % 5;
    std::vector<T> acc(size_t(C * stride), T(-1));
    const bool ties = i % 4 == 1, nan = i % 7 == 3;
    for (int64_t c = 0; c < C; ++c)
      acc[c * stride] = ties ? T(rng() % 3) : T((rng() % 100000) / 1000.0);
    if (nan) acc[(rng() % C) * stride] = T(NAN);
    const T ws = i % 5 == 0 ? T(0) : T(0.5 + (rng() % 1000) / 100.0);
    const bool normalise = i % 6 != 2;
    const T fill = T(0.25);
    L label = 0;
    T prob = 0, ent = 0;
    class_epilogue_voxel<T, L>(acc.data(), C, stride, normalise, inverse_or_zero(ws), fill,
                               &label, &prob, &ent);
    int64_t best = -1;
    double best_v = 0, h = 0;
    for (int64_t c = 0; c < C; ++c) {
      double v = double(acc[c * stride]);
      if (normalise) v = ws > T(0) ? double(T(acc[c * stride] * inverse_or_zero(ws))) : 0.25;
      if (best < 0 || (!std::isnan(best_v) && (std::isnan(v) || v > best_v))) {
        best = c;
        best_v = v;
      }
      h -= v == 0 ? 0.0 : v * std::log(v);
    }
    if (normalise && ws == T(0)) h = 0.25;  // nothing covers the voxel: the fill value
    ++checks;
    const bool nan_ok = std::isnan(best_v) && std::isnan(double(prob));
    if (int64_t(label) != best || (!nan_ok && double(prob) != best_v) ||
        (!std::isnan(h) && std::fabs(double(ent) - h) > 1e-4 * (1 + std::fabs(h))) ||
        (std::isnan(h) != std::isnan(double(ent))))
      fail("class_epilogue case " + std::to_string(i) + " C=" + std::to_string(C) +
           ": label " + std::to_string(int64_t(label)) + " vs " + std::to_string(best));
  }
}

#ifdef FQ_HAVE_AVX2_VARIANTS
// The SIMD dispatch's flag (cpu/simd.cpp in the library) for copy_streaming's choice.
namespace fastquilt::cpu {
const bool kCpuHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
}
#endif

// A streaming copy (both variants where the CPU has AVX2, and the dispatching copy_streaming)
// copies every length 0..130 bytes between every pair of alignments (source 0..15, destination
// 0..31 past a 16-byte boundary), and writes nothing outside dst (guard bytes around it; ASan
// sees reads past src).
template <typename Copy>
void check_copy_streaming(const char* name, Copy copy) {
  std::vector<unsigned char> src(160), dst(160 + 48);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 7 + 1);
  for (size_t n = 0; n <= 130; ++n)
    for (size_t so = 0; so < 16; ++so)
      for (size_t d0 = 16; d0 < 48; ++d0) {
        std::fill(dst.begin(), dst.end(), 0xAB);
        std::vector<unsigned char> s(src.begin() + so, src.begin() + so + n);  // exact extent
        copy(dst.data() + d0, s.data(), n);
        fastquilt::cpu::stream_fence();
        ++checks;
        for (size_t i = 0; i < dst.size(); ++i) {
          const bool inside = i >= d0 && i < d0 + n;
          const unsigned char want = inside ? s[i - d0] : 0xAB;
          if (dst[i] != want) {
            fail(std::string(name) + ": " + std::to_string(n) + " bytes, src offset " +
                 std::to_string(so) + ", dst offset " + std::to_string(d0) + ": byte " +
                 std::to_string(i) + " wrong");
            return;
          }
        }
      }
}

void check_copy_streaming() {
  check_copy_streaming("copy_streaming", [](unsigned char* d, const unsigned char* s, size_t n) {
    fastquilt::cpu::copy_streaming(d, s, n);
  });
#ifdef FQ_HAVE_STREAM_STORES
  const auto as_chars = [](auto variant) {
    return [variant](unsigned char* d, const unsigned char* s, size_t n) {
      variant(reinterpret_cast<char*>(d), reinterpret_cast<const char*>(s), n);
    };
  };
  check_copy_streaming("copy_streaming_sse2", as_chars(fastquilt::cpu::copy_streaming_sse2));
  if (fastquilt::cpu::cpu_has_avx2())
    check_copy_streaming("copy_streaming_avx2", as_chars(fastquilt::cpu::copy_streaming_avx2));
  else
    std::printf("copy_streaming_avx2: not run (this CPU has no AVX2)\n");
#endif
}

int main() {
  check_copy_streaming();
  for (int i = 0; i < 60; ++i) {
    check_oriented<int32_t>(random_case(4, false));
    check_oriented<int64_t>(random_case(4, false));
  }
  check_group_count();
  check_class_epilogue<float, uint8_t>(200);
  check_class_epilogue<double, uint16_t>(200);
  for (int i = 0; i < 60; ++i) {
    const Case k = random_case(4, i % 2 == 0);
    check_scatter_offsets<int32_t>(k, i % 3 != 0);
    check_scatter_offsets<int64_t>(k, i % 3 != 0);
  }
  run_dtype<double>(60);
  run_dtype<float>(80);
  run_dtype<bf16>(60);
  run_dtype<uint8_t>(40);
  if (aligned_stitch_checks < 20 || split_stitch_checks < 20)
    fail(std::to_string(aligned_stitch_checks) + " all-aligned and " +
         std::to_string(split_stitch_checks) + " split stitch cases: too few");
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("kernel bodies: all cases passed (%d cases; stitch: %d all aligned, %d split; "
              "fast-path shapes chosen %d, %d times)\n",
              checks, aligned_stitch_checks, split_stitch_checks, chosen_shape_cases[0],
              chosen_shape_cases[1]);
  return 0;
}
