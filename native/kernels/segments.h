// segments.h — row segments for the multi-adapter kernels (multi_lora.cpp, multi_bottleneck.cpp): adapter i
// owns rows [starts[i], starts[i+1]) of the flattened (M, features) input; rows outside every segment get
// no adapter. Work is cut into (segment, row chunk) items so one pool task handles rows of one adapter.
#pragma once
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "../op.h"

namespace ad {

constexpr int64_t kSegChunk = 128;

struct RowSegments {
  int64_t n = 0, M = 0;
  std::vector<int64_t> starts;
  std::vector<std::array<int64_t, 3>> items;  // (segment, first row, end row)

  // Reads and checks the `starts` attribute (n+1 non-decreasing offsets within [0, M]).
  RowSegments(const OpCtx& c, int64_t rows) : M(rows), starts(c.ints("starts")) {
    if (starts.size() < 2) c.fail("ValueError", "starts must hold n+1 >= 2 row offsets");
    n = (int64_t)starts.size() - 1;
    for (int64_t i = 0; i <= n; i++) {
      if (starts[i] < 0 || starts[i] > M) c.fail("IndexError", "starts[" + std::to_string(i) + "] = " + std::to_string(starts[i]) + " out of [0, " + std::to_string(M) + "]");
      if (i && starts[i] < starts[i - 1]) c.fail("ValueError", "starts must not decrease");
    }
    for (int64_t i = 0; i < n; i++)
      for (int64_t m = starts[i]; m < starts[i + 1]; m += kSegChunk) items.push_back({i, m, std::min(m + kSegChunk, starts[i + 1])});
  }
  // Checks the op got `first` fixed inputs plus `per` per-adapter inputs for each adapter.
  void expect_inputs(const OpCtx& c, size_t first, int64_t per) const {
    size_t want = first + (size_t)(per * n);
    if (c.n_in() != want)
      c.fail("ValueError", "expected " + std::to_string(want) + " inputs for " + std::to_string(n) + " adapters, got " + std::to_string(c.n_in()));
    c.expect_inputs(want);
  }
  // Calls fn(begin, end) for each maximal run of rows no segment covers.
  template <class F> void uncovered(F fn) const {
    int64_t at = 0;
    for (int64_t i = 0; i <= n; i++) {
      int64_t until = i < n ? starts[i] : M;
      if (until > at) fn(at, until);
      if (i < n) at = std::max(at, starts[i + 1]);
    }
  }
  void zero_uncovered(float* P, int64_t width) const {
    uncovered([&](int64_t b, int64_t e) { std::memset(P + b * width, 0, (e - b) * width * sizeof(float)); });
  }
};

// (r, c) row-major → (c, r) row-major.
inline void transpose_into(float* dst, const float* src, int64_t r, int64_t c) {
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++) dst[j * r + i] = src[i * c + j];
}

}  // namespace ad
