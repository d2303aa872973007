// Oriented windows: a window read with its axes permuted and flipped (the 48 orientations of a
// cube in 3D, 8 of a square in 2D), by index math alone. Host-device and torch-free: the CPU and
// CUDA kernels of gather_windows_oriented and tests/cpp/kernel_bodies_test.cpp share this copy.
//
// An orientation row has one signed axis code per output axis d (D = 2 or 3): code = +(k + 1)
// reads input axis k forwards, -(k + 1) backwards. patch[c, j_0, ..., j_{D-1}] =
// window[c, i] with i_k = j_d (forwards) or W_k - 1 - j_d (backwards) — that is
// window.permute(0, 1 + k_0, ..., 1 + k_{D-1}).flip(axes coded backwards). The codes form a
// signed permutation, and only axes of equal window size trade places, so every patch has the
// window's shape.
#pragma once
#include <cstdint>

#include "kernel_bodies/index_math.h"

namespace fastquilt {

// Where an oriented window's elements lie in the input (N, C, S0, S1, S2): element
// (c, a, b, x) of the patch is input[base + c * channel + a * step[0] + b * step[1] + x * step[2]].
// Steps are signed (negative along a flipped axis; base then starts at the far end).
struct OrientedWindow {
  int64_t base;
  int64_t channel;
  int64_t step[3];
};

// The normalised axis (geometry.h: 2D is (Y, 1, X)) of spatial axis k of a D-axis image.
FQ_HD int normalised_axis(int64_t k, int D) { return D == 3 ? int(k) : (k == 0 ? 0 : 2); }

// Whether `orient` (D codes) is a signed permutation that only trades axes of equal window
// size in geometry g.
FQ_HD bool valid_orientation(const Geometry& g, const int64_t* orient, int D) {
  bool seen[3] = {false, false, false};
  for (int d = 0; d < D; ++d) {
    const int64_t code = orient[d];
    const int64_t k = (code < 0 ? -code : code) - 1;
    if (code == 0 || k >= D || seen[k]) return false;
    seen[k] = true;
    if (g.W[normalised_axis(k, D)] != g.W[normalised_axis(d, D)]) return false;
  }
  return true;
}

// Fills *w for the window at origin row `org` ([n, start_0, ...]) read in orientation
// `orient` (valid_orientation). Returns false, touching nothing, when the window leaves the
// image (origins and orientations are data: checked in 64 bits).
FQ_HD bool oriented_window(const Geometry& g, const int64_t* org, const int64_t* orient, int D,
                           OrientedWindow* w) {
  int64_t o[4];
  normalised_origin(org, D, o);
  if (!(o[0] >= 0 && o[0] < g.N)) return false;
  for (int d = 0; d < 3; ++d)
    if (!(o[1 + d] >= 0 && o[1 + d] + g.W[d] <= g.S[d])) return false;
  const int64_t stride[3] = {g.S[1] * g.S[2], g.S[2], 1};  // of the normalised spatial axes
  w->channel = g.S[0] * g.S[1] * g.S[2];
  w->base = o[0] * g.C * w->channel + o[1] * stride[0] + o[2] * stride[1] + o[3];
  w->step[0] = w->step[1] = w->step[2] = 0;  // the dummy axis of 2D has one element
  for (int d = 0; d < D; ++d) {
    const int64_t code = orient[d];
    const int k = normalised_axis((code < 0 ? -code : code) - 1, D);
    const int out = normalised_axis(d, D);
    w->step[out] = code < 0 ? -stride[k] : stride[k];
    if (code < 0) w->base += (g.W[k] - 1) * stride[k];
  }
  return true;
}

// Offset in the input of element i of the contiguous patches (M, C, W0, W1, W2) of the oriented
// gather: one GPU thread's index math (org, orient: (M, 1 + D) and (M, D) rows). Returns -1
// for a window that leaves the image or an invalid orientation.
template <typename I>
FQ_HD int64_t oriented_element_offset(const Geometry& g, const int64_t* org,
                                      const int64_t* orient, int D, I i) {
  const I t = div_index<I>(i, I(g.W[2]));
  const I x = i - t * I(g.W[2]);
  const I u = div_index<I>(t, I(g.W[1]));
  const I b = t - u * I(g.W[1]);
  const I v = div_index<I>(u, I(g.W[0]));
  const I a = u - v * I(g.W[0]);
  const I m = div_index<I>(v, I(g.C));
  const I c = v - m * I(g.C);
  const int64_t* row = orient + int64_t(m) * D;
  OrientedWindow w;
  if (!valid_orientation(g, row, D) || !oriented_window(g, org + int64_t(m) * (1 + D), row, D, &w))
    return -1;
  return w.base + int64_t(c) * w.channel + int64_t(a) * w.step[0] + int64_t(b) * w.step[1] +
         int64_t(x) * w.step[2];
}

}  // namespace fastquilt
