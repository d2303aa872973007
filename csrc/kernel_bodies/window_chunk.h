// Work units of the CUDA gather and scatter-add: chunks of V consecutive elements of a window
// row. Host-device code: the CPU tests (tests/cpp/kernel_bodies_test.cpp) run these bodies
// for every thread of a launch and compare with a reference, so the index math, the
// alignment decisions and the bounds handling the GPU runs are checked without a GPU.
#pragma once
#include <type_traits>

#include "kernel_bodies/index_math.h"
#include "kernel_bodies/vec_access.h"

namespace fastquilt {

// Where chunk i of the patches (M, C, W0, W1, W2), cut into chunks of V elements along each
// row (the last chunk of a row may be shorter), lies. Offsets in the index type I.
template <typename I>
struct WindowChunk {
  I patch;   // offset in the patches (M, C, *W)
  I image;   // offset in the image batch (N, C, *S)
  I voxel;   // offset in a one-channel (N, 1, *S) tensor: the weight sum
  I weight;  // offset in the weight (*W)
  I c;       // channel
  int len;   // elements: V, fewer at the end of a row, 0 for no chunk
};

// Fills *ch for chunk i. Origins are rows [n, start_0, ..., start_{D-1}] (D = 2 or 3 spatial
// axes; 2D is normalised to (Y, 1, X)). sel: nullptr, or the windows the chunks run over
// (chunk i of the k-th selected window is chunk i of window sel[k]). Returns false, with
// ch->len = 0 so that nothing is accessed, when the window's origin leaves the image
// (checked in 64 bits: origins are data).
template <int V, typename I>
FQ_HD bool window_chunk(const Geometry& g, const int64_t* org, const int64_t* sel, int D, I i,
                        WindowChunk<I>* ch) {
  *ch = WindowChunk<I>{0, 0, 0, 0, 0, 0};
  const I per_row = (I(g.W[2]) + V - 1) / V;
  const I row = div_index<I>(i, per_row);
  const I x = (i - row * per_row) * V;
  const I t = div_index<I>(row, I(g.W[1]));
  const I b = row - t * I(g.W[1]);
  const I u = div_index<I>(t, I(g.W[0]));
  const I a = t - u * I(g.W[0]);
  const I k = div_index<I>(u, I(g.C));
  const I c = u - k * I(g.C);
  const I m = sel == nullptr ? k : I(sel[k]);
  int64_t o[4];
  normalised_origin(org + int64_t(m) * (1 + D), D, o);
  const int64_t n = o[0];
  if (!(n >= 0 && n < g.N && o[1] >= 0 && o[1] + g.W[0] <= g.S[0] && o[2] >= 0 &&
        o[2] + g.W[1] <= g.S[1] && o[3] >= 0 && o[3] + g.W[2] <= g.S[2]))
    return false;
  const I z = I(o[1]) + a, y = I(o[2]) + b, xi = I(o[3]) + x;
  ch->patch = patch_offset<I>(g, m, c, a, b, x);
  ch->image = image_offset<I>(g, I(n), c, z, y, xi);
  ch->voxel = ((I(n) * I(g.S[0]) + z) * I(g.S[1]) + y) * I(g.S[2]) + xi;
  ch->weight = weight_offset<I>(g, a, b, x);
  ch->c = c;
  ch->len = int(I(g.W[2]) - x < V ? I(g.W[2]) - x : V);
  return true;
}

// Number of chunks of V elements in patches of geometry g with M windows.
template <int V>
FQ_HD int64_t window_chunk_count(const Geometry& g, int64_t M) {
  return M * g.C * g.W[0] * g.W[1] * ((g.W[2] + V - 1) / V);
}

// One GPU thread of the gather (patches[m] = weight * input[window m]): chunks first,
// first + stride, ..., first + (K - 1) * stride that are < total, V = 16 bytes each. All K
// loads are issued before the first store, so a thread keeps K x 16 bytes in flight.
// `vec`: input and output pointers are 16-byte aligned (vector accesses allowed where the
// chunk offsets are too). Returns false if an origin was out of bounds (its chunks skipped).
template <int K, typename I, typename scalar_t, typename acc_t>
FQ_HD bool gather_chunks(const scalar_t* in, const int64_t* org, const acc_t* weight,
                         scalar_t* out, const Geometry& g, int D, int64_t total, bool vec,
                         int64_t first, int64_t stride) {
  constexpr int V = Vec16<scalar_t>::kSize;
  WindowChunk<I> ch[K];
  bool whole[K];
  Vec16<scalar_t> val[K];  // one 16-byte vector per chunk
  bool ok = true;
  FQ_UNROLL
  for (int k = 0; k < K; ++k) {
    const int64_t i = first + k * stride;
    ch[k] = WindowChunk<I>{0, 0, 0, 0, 0, 0};
    if (i < total) ok = window_chunk<V>(g, org, nullptr, D, I(i), &ch[k]) && ok;
    whole[k] = vec && ch[k].len == V && ch[k].image % V == 0 && ch[k].patch % V == 0;
  }
  FQ_UNROLL
  for (int k = 0; k < K; ++k)
    if (whole[k]) val[k] = load16(in + ch[k].image);
  FQ_UNROLL
  for (int k = 0; k < K; ++k) {
    if (whole[k]) {
      if constexpr (std::is_floating_point_v<acc_t>) {  // only float data has a weight
        if (weight != nullptr) {
          const acc_t* w = weight + ch[k].weight;
          FQ_UNROLL
          for (int j = 0; j < V; ++j)
            val[k].v[j] = static_cast<scalar_t>(static_cast<acc_t>(val[k].v[j]) * w[j]);
        }
      }
      store16(out + ch[k].patch, val[k]);
    } else {
      const scalar_t* src = in + ch[k].image;
      scalar_t* dst = out + ch[k].patch;
      for (int j = 0; j < ch[k].len; ++j)
        dst[j] = weight == nullptr
                     ? src[j]
                     : static_cast<scalar_t>(static_cast<acc_t>(src[j]) * weight[ch[k].weight + j]);
    }
  }
  return ok;
}

}  // namespace fastquilt
