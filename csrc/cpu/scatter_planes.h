// The CPU scatter-add's plane-owned kernel, shared by scatter_add_windows_ and
// scatter_add_grid_batch_: acc[n, c, origin + i] += weight[i] * patches[m, c, i].
//
// Race-free without atomics and bit-identical for any thread count: the work is split by
// *output* plane (n, c, z) rather than by window. Each plane is owned by one task, which adds
// the rows of every window covering it in one fixed order (windows sorted stably by
// (n, start_0)). qlty's numba stitch splits by window colour instead and races on the
// stepped-back last window.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/cpu_common.h"
#include "cpu/prefetch.h"
#include "cpu/row_kernels.h"

namespace fastquilt::cpu {

// Windows bucketed by key n * S0 + o0 (counting sort, stable): the windows that cover plane
// (n, z) are the contiguous run with keys in [n*S0 + z - W0 + 1, n*S0 + z].
struct PlaneIndex {
  std::vector<int64_t> order;  // window ids sorted by key
  std::vector<int64_t> start;  // start[k] = first position of key k in order; size N*S0 + 1

  PlaneIndex(const std::vector<int64_t>& org, const Geometry& g, int64_t M)
      : order(M), start(g.N * g.S[0] + 1, 0) {
    for (int64_t m = 0; m < M; ++m) ++start[org[m * 4] * g.S[0] + org[m * 4 + 1] + 1];
    for (size_t k = 1; k < start.size(); ++k) start[k] += start[k - 1];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t m = 0; m < M; ++m) order[fill[org[m * 4] * g.S[0] + org[m * 4 + 1]]++] = m;
  }

  // [lo, hi) into `order` for the windows covering plane z of image n.
  std::pair<int64_t, int64_t> covering(const Geometry& g, int64_t n, int64_t z) const {
    const int64_t first = z - g.W[0] + 1 > 0 ? z - g.W[0] + 1 : 0;
    return {start[n * g.S[0] + first], start[n * g.S[0] + z + 1]};
  }

  // The planes n * S0 + z that some window covers, in order. A streaming batch covers a narrow
  // band of one image: splitting only these among the threads keeps all of them busy (an
  // even split of every plane would give the whole band to one thread).
  std::vector<int64_t> covered_planes(const Geometry& g) const {
    std::vector<int64_t> planes;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t z = 0; z < g.S[0]; ++z) {
        const auto [lo, hi] = covering(g, n, z);
        if (hi > lo) planes.push_back(n * g.S[0] + z);
      }
    return planes;
  }
};

constexpr int64_t kRunRows = 8;  // a window's rows in a task: at least this many where they can

// What a task does to its output plane (S1 x S2 elements at `plane`, key n * S0 + z) before
// and after adding its windows: nothing here; scatter_add_grid_batch_ zeroes and normalises.
struct NoPlaneHooks {
  template <typename acc_t>
  void before(acc_t*, int64_t, int64_t) const {}
  template <typename acc_t>
  void after(acc_t*, int64_t, int64_t) const {}
};

// Runs of at most R consecutive covered planes of one image, as start positions into `planes`
// closed by planes.size(): the tasks' planes. (Keys of consecutive images meet, so a run is
// also cut where an image starts.)
inline std::vector<int64_t> plane_blocks(const std::vector<int64_t>& planes, int64_t R,
                                         int64_t S0) {
  std::vector<int64_t> starts;
  for (size_t p = 0; p < planes.size(); ++p)
    if (starts.empty() || int64_t(p) - starts.back() >= R || planes[p] != planes[p - 1] + 1 ||
        planes[p] % S0 == 0)
      starts.push_back(int64_t(p));
  starts.push_back(int64_t(planes.size()));
  return starts;
}

template <typename scalar_t, typename acc_t, typename Hooks = NoPlaneHooks>
void scatter_kernel(const scalar_t* patches, const std::vector<int64_t>& org,
                    const PlaneIndex& index, const std::vector<int64_t>& planes, const acc_t* weight,
                    acc_t* acc, const Geometry& g, const Hooks& hooks = Hooks()) {
  const int64_t W2 = g.W[2];
  // A task owns a block of R consecutive planes of one image and one channel (R = 1 for planes
  // of kRunRows rows or more; 2D planes are single rows: R = kRunRows), so that each window's
  // rows in a task are one contiguous run of its patch of about kRunRows rows or more.
  // (smaller blocks where there would be fewer than 4 tasks a thread: a narrow band of few
  // channels on many threads; the blocks do not change the bits)
  const int64_t tasks_wanted = 4 * int64_t(at::get_num_threads());
  const int64_t plane_tasks = static_cast<int64_t>(planes.size()) * g.C;
  const int64_t W1 = std::max<int64_t>(1, g.W[1]);  // (an empty window adds no rows)
  const int64_t R = std::max<int64_t>(1, std::min((kRunRows + W1 - 1) / W1,
                                                  plane_tasks / std::max<int64_t>(1, tasks_wanted)));
  // rows between a prefetch and its row's add: kBytesAhead, at most R * W1 (a window's whole
  // run in a task), so that it mostly lands in this window or the next; rows past the next
  // window's (windows covering part of a block) are not asked for
  const int64_t rows_ahead = std::min(rows_ahead_for(W2 * int64_t(sizeof(scalar_t))), R * W1);
  const std::vector<int64_t> blocks = plane_blocks(planes, R, g.S[0]);
  const int64_t B = static_cast<int64_t>(blocks.size()) - 1;
  at::parallel_for(0, B * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c = t % g.C;
      const int64_t p0 = blocks[t / g.C], p1 = blocks[t / g.C + 1];
      const int64_t n = planes[p0] / g.S[0];
      const int64_t z0 = planes[p0] % g.S[0], z1 = z0 + (p1 - p0);  // planes [z0, z1)
      acc_t* const image = acc + image_offset(g, n, c, int64_t(0), int64_t(0), int64_t(0));
      const int64_t plane_size = g.S[1] * g.S[2];
      for (int64_t z = z0; z < z1; ++z) hooks.before(image + z * plane_size, planes[p0] + z - z0, z);
      // the windows covering any plane of the block, in the fixed order (each element gets
      // its windows in that order, as one plane at a time would add them)
      const int64_t lo = index.covering(g, n, z0).first, hi = index.covering(g, n, z1 - 1).second;
      // A window's rows here: patch rows (a, b) for a in [za - o0, zb - o0), all b: one run.
      const auto rows_of = [&](int64_t k, int64_t* za, int64_t* zb) -> const int64_t* {
        const int64_t* o = org.data() + index.order[k] * 4;
        *za = std::max(z0, o[1]);
        *zb = std::min(z1, o[1] + g.W[0]);
        return o;
      };
      for (int64_t k = lo; k < hi; ++k) {
        int64_t za, zb;
        const int64_t* o = rows_of(k, &za, &zb);
        const int64_t m = index.order[k];
        const int64_t count = (zb - za) * g.W[1];
        const scalar_t* const src0 = patches + patch_offset(g, m, c, za - o[1], int64_t(0), int64_t(0));
        // The task's rows, window after window, are one stream of short runs the hardware does
        // not follow: each patch and accumulator row is asked for rows_ahead rows before it is
        // added, into the next window's first rows.
        int64_t zna = 0, znb = 0;
        const int64_t* on = k + 1 < hi ? rows_of(k + 1, &zna, &znb) : nullptr;
        const int64_t next_count = on ? (znb - zna) * g.W[1] : 0;
        const scalar_t* const srcn =
            on ? patches + patch_offset(g, index.order[k + 1], c, zna - on[1], int64_t(0), int64_t(0))
               : nullptr;
        // (z, b) of row r, and of the row rows_ahead on (in this window, then the next's),
        // advanced without a division per row
        int64_t z = za, b = 0;
        int64_t ahead_z = 0, ahead_b = 0;
        const int64_t* ahead_o = nullptr;
        const scalar_t* ahead_src = nullptr;  // (pointers formed only into the rows they name)
        // the cursor on row i of a window's run (origin wo, first plane wz, first row wsrc)
        const auto ahead_at = [&](const int64_t* wo, int64_t wz, const scalar_t* wsrc,
                                  int64_t i) {
          ahead_o = wo;
          ahead_z = wz + i / g.W[1];
          ahead_b = i % g.W[1];
          ahead_src = wsrc + i * W2;
        };
        if (rows_ahead < count) ahead_at(o, za, src0, rows_ahead);
        else if (rows_ahead - count < next_count) ahead_at(on, zna, srcn, rows_ahead - count);
        for (int64_t r = 0; r < count; ++r) {
          acc_t* dst = image + (z * g.S[1] + o[2] + b) * g.S[2] + o[3];
          const scalar_t* src = src0 + r * W2;
          const int64_t ra = r + rows_ahead;
          if (ra < count + next_count) {
            prefetch_row_to_l2(ahead_src, W2);
            prefetch_row_to_l2(
                image + (ahead_z * g.S[1] + ahead_o[2] + ahead_b) * g.S[2] + ahead_o[3], W2);
            if (ra + 1 == count) {  // on to the next window's first row
              ahead_at(on, zna, srcn, 0);
            } else {
              ahead_src += W2;
              if (++ahead_b == g.W[1]) ahead_b = 0, ++ahead_z;
            }
          }
          if (weight == nullptr) add_row(dst, src, W2);
          else axpy_row(dst, src, weight + weight_offset(g, z - o[1], b, int64_t(0)), W2);
          if (++b == g.W[1]) b = 0, ++z;
        }
      }
      for (int64_t z = z0; z < z1; ++z) hooks.after(image + z * plane_size, planes[p0] + z - z0, z);
    }
  });
}

}  // namespace fastquilt::cpu
