// Host-side grouping of windows into sets of pairwise disjoint windows: the deterministic
// mode of the CUDA scatter-add launches one set at a time, so every accumulator element
// receives at most one (atomic) add per launch, and the sets run in a fixed order: the sum
// at each voxel is then formed in the same order on every run, whatever the scheduling.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace fastquilt {

struct WindowGroups {
  std::vector<int64_t> order;   // window indices, group by group, increasing within a group
  std::vector<int64_t> bounds;  // group k is order[bounds[k] .. bounds[k + 1])
};

namespace detail {

using Cell = std::array<int64_t, 4>;  // image, then the cell index along each axis

struct CellHash {
  std::size_t operator()(const Cell& c) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : c) h = (h ^ uint64_t(v)) * 1099511628211ull;
    return std::size_t(h);
  }
};

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace detail

// Greedy colouring in window order: window m joins the first group holding no window that
// overlaps it (same image and intersecting along every axis). Candidates are found through
// cells of the window's size: a window touches at most two cells per axis, and two
// overlapping windows share the cell of any common voxel. org: M rows [n, start_0, ...,
// start_{D-1}]; W: the D window sizes (>= 1).
inline WindowGroups disjoint_window_groups(const int64_t* org, int64_t M, int D,
                                           const int64_t* W) {
  using CellMap = std::unordered_map<detail::Cell, std::vector<int64_t>, detail::CellHash>;
  std::vector<CellMap> groups;
  std::vector<std::vector<int64_t>> members;
  auto row = [&](int64_t m) { return org + m * (1 + D); };
  auto overlap = [&](int64_t p, int64_t q) {
    const int64_t *a = row(p), *b = row(q);
    if (a[0] != b[0]) return false;
    for (int d = 0; d < D; ++d)
      if (a[1 + d] + W[d] <= b[1 + d] || b[1 + d] + W[d] <= a[1 + d]) return false;
    return true;
  };
  for (int64_t m = 0; m < M; ++m) {
    // The cells of window m: 1 or 2 per axis.
    std::vector<detail::Cell> cells{detail::Cell{row(m)[0], 0, 0, 0}};
    for (int d = 0; d < D; ++d) {
      const int64_t lo = detail::floor_div(row(m)[1 + d], W[d]);
      const int64_t hi = detail::floor_div(row(m)[1 + d] + W[d] - 1, W[d]);
      std::vector<detail::Cell> next;
      for (const auto& c : cells)
        for (int64_t k = lo; k <= hi; ++k) {
          detail::Cell e = c;
          e[1 + d] = k;
          next.push_back(e);
        }
      cells.swap(next);
    }
    std::size_t g = 0;
    for (; g < groups.size(); ++g) {
      bool clash = false;
      for (const auto& c : cells) {
        auto it = groups[g].find(c);
        if (it == groups[g].end()) continue;
        for (int64_t q : it->second)
          if (overlap(m, q)) { clash = true; break; }
        if (clash) break;
      }
      if (!clash) break;
    }
    if (g == groups.size()) {
      groups.emplace_back();
      members.emplace_back();
    }
    for (const auto& c : cells) groups[g][c].push_back(m);
    members[g].push_back(m);
  }
  WindowGroups out;
  out.bounds.push_back(0);
  for (const auto& ms : members) {
    out.order.insert(out.order.end(), ms.begin(), ms.end());
    out.bounds.push_back(int64_t(out.order.size()));
  }
  return out;
}

}  // namespace fastquilt
