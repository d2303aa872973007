// CPU gather of oriented windows: input (N, C, *S) -> patches (M, C, *window), each window's
// axes permuted and flipped as its orientation row says (kernel_bodies/orientation.h).
// Parallel over (window, channel, patch plane). A patch row that runs along an input row is a
// contiguous (or reversed) copy; a plane whose rows cross input rows is transposed in tiles.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "cpu/cpu_common.h"
#include "cpu/prefetch.h"
#include "cpu/transpose_blocks.h"
#include "kernel_bodies/orientation.h"
#include "op_entry_points.h"

namespace fastquilt::cpu {
namespace {

// dst[i * dst_i + j] = src[i * src_i + j * src_j] for i < ni, j < nj, with src_i = +-1: a
// plane whose source rows run along i, transposed through a tile in L1. A tile reads kTileI
// elements of each of its kTileJ source rows at once (a copy, or a reversed copy; rows
// kAhead further on are asked for meanwhile), transposes it in L x L register blocks
// (transpose_blocks.h) and writes one cache line (kTileJ elements) of each of its output
// rows at once: the rows lie a power of two apart, so a tile touching each of them piece by
// piece would evict its own lines (set conflicts).
constexpr int64_t kTileI = 64;
constexpr int64_t kAhead = 8;  // rows between a prefetch and its row's copy
template <typename scalar_t>
void transposed_plane(const scalar_t* src, int64_t src_i, int64_t src_j, int64_t ni,
                      int64_t nj, scalar_t* dst, int64_t dst_i) {
  constexpr int64_t kTileJ = std::max<int64_t>(8, 64 / int64_t(sizeof(scalar_t)));
  constexpr int64_t L = block_lanes<scalar_t>();
  alignas(64) scalar_t tile[kTileJ][kTileI];
  for (int64_t i0 = 0; i0 < ni; i0 += kTileI) {
    const int64_t ti = std::min(kTileI, ni - i0);
    for (int64_t j0 = 0; j0 < nj; j0 += kTileJ) {
      const int64_t tj = std::min(kTileJ, nj - j0);
      for (int64_t j = 0; j < tj; ++j) {
        const scalar_t* row = src + (i0 * src_i) + (j0 + j) * src_j;
        if (j + kAhead < nj - j0) {  // rows lie apart: ask for a later one's lines now
          const scalar_t* later = row + kAhead * src_j;
          prefetch_row(src_i == 1 ? later : later - (ti - 1), ti);
        }
        if (src_i == 1) {
          copy_row(tile[j], row, ti);
        } else {
          copy_reversed(tile[j], row, ti);
        }
      }
      const int64_t bi = ti - ti % L, bj = tj - tj % L;  // whole register blocks
      const bool next_tile = j0 + kTileJ < nj;
      for (int64_t i = 0; i < bi; i += L) {
        scalar_t* out = dst + (i0 + i) * dst_i + j0;
        if (next_tile)  // the lines the next tile writes in these rows: owned by then
          for (int64_t r = 0; r < L; ++r) prefetch_for_write(out + r * dst_i + kTileJ);
        // through L1: a block spans L output rows, lines a power of two apart (one cache
        // set); each row's line is then written at once
        alignas(64) scalar_t rows[L][kTileJ];
        for (int64_t j = 0; j < bj; j += L)
          transpose_block(&tile[j][i], kTileI, &rows[0][j], kTileJ);
        for (int64_t r = 0; r < L; ++r) copy_row(out + r * dst_i, rows[r], bj);
      }
      for (int64_t i = 0; i < ti; ++i) {  // the rest, element by element
        scalar_t* out = dst + (i0 + i) * dst_i + j0;
        for (int64_t j = (i < bi ? bj : 0); j < tj; ++j) out[j] = tile[j][i];
      }
    }
  }
}

// Patch rows whose elements lie along an input row (forwards: a memcpy, backwards: a reversed
// copy); W1 rows of plane (m, c, a).
template <typename scalar_t>
void row_plane(const scalar_t* in, const OrientedWindow& w, const Geometry& g, int64_t m,
               int64_t c, int64_t a, scalar_t* out) {
  const int64_t W2 = g.W[2], sx = w.step[2];
  for (int64_t b = 0; b < g.W[1]; ++b) {
    const scalar_t* src = in + w.base + c * w.channel + a * w.step[0] + b * w.step[1];
    scalar_t* dst = out + patch_offset(g, m, c, a, b, 0);
    if (b + kAhead < g.W[1]) {  // rows lie apart: ask for a later one's lines now
      const scalar_t* later = src + kAhead * w.step[1];
      prefetch_row(sx == 1 ? later : later - (W2 - 1), W2);
    }
    if (sx == 1) {
      std::memcpy(dst, src, sizeof(scalar_t) * W2);
    } else if (sx == -1) {
      copy_reversed(dst, src, W2);
    } else {  // W2 == 1
      for (int64_t x = 0; x < W2; ++x) dst[x] = src[x * sx];
    }
  }
}

// One task per (m, c, i): i indexes patch axis 0, or axis 1 when axis 0 is the one along
// which the input is contiguous (then the (axis 0, x) plane is copied by tiles).
template <typename scalar_t>
void gather_oriented_kernel(const scalar_t* in, const std::vector<OrientedWindow>& win,
                            scalar_t* out, const Geometry& g, int64_t M) {
  const int64_t outer = std::max(g.W[0], g.W[1]);
  const int64_t tasks = M * g.C * outer;
  // About 64 Ki elements per chunk of tasks: a training batch of small windows is copied in a
  // fraction of a millisecond, less than waking the other threads costs on a busy machine.
  const int64_t grain =
      std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, g.W[1] * g.W[2]));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t % outer;
      const int64_t c = (t / outer) % g.C;
      const int64_t m = t / (outer * g.C);
      const OrientedWindow& w = win[m];
      const int64_t sx = w.step[2];
      if (sx == 1 || sx == -1 || g.W[2] == 1) {  // rows along input rows
        if (i < g.W[0]) row_plane(in, w, g, m, c, i, out);
      } else if (w.step[1] == 1 || w.step[1] == -1) {  // patch axis 1 runs along input rows
        if (i < g.W[0])
          transposed_plane(in + w.base + c * w.channel + i * w.step[0], w.step[1], sx, g.W[1],
                           g.W[2], out + patch_offset(g, m, c, i, int64_t(0), int64_t(0)), g.W[2]);
      } else if (i < g.W[1]) {  // patch axis 0 runs along input rows
        transposed_plane(in + w.base + c * w.channel + i * w.step[1], w.step[0], sx, g.W[0],
                         g.W[2], out + patch_offset(g, m, c, int64_t(0), i, int64_t(0)),
                         g.W[1] * g.W[2]);
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
  m.impl("gather_windows_oriented_into",
         &gather_windows_oriented_into_op<&gather_windows_oriented_cpu>);
}

}  // namespace fastquilt::cpu
