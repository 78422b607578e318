// sgmv_math.h — per-element code of the segmented multi-LoRA kernels (sgmv.cu; "SGMV" after Punica,
// https://arxiv.org/abs/2310.18547), host-compilable so that test/cuda/mock/mock_cuda.cpp runs it against the CPU's
// lora_sgmv (native/kernels/multi_lora.cpp) without a GPU. Every adapter of the batch is served by the same launch:
// a row finds its segment in the adapter table, which travels by value as a kernel parameter (up to kMaxAdapters).
// Sums run in a fixed order per output element (deterministic, no atomics).
// Legend: M rows, K in features, O out features, R = max rank; adapter i owns rows [start_i, start_{i+1}).
#pragma once
#include "adapters_cuda.h"
#include "elementwise_math.h"

namespace ad_sgmv {

constexpr int kMaxAdapters = ADAPTERS_CUDA_SGMV_MAX;
using Table = adapters_cuda_sgmv;  // (cuda/adapters_cuda.h: n, M, K, O, R, start, rank, scale, A, B, aoff, boff)

// the i with off[i] <= e < off[i+1] (off non-decreasing, off[0] = 0, e < off[n])
AD_HD int owner(const int64_t* off, int n, int64_t e) {
  int lo = 0, hi = n;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (off[mid] <= e) lo = mid;
    else hi = mid;
  }
  while (lo < n - 1 && off[lo + 1] <= e) lo++;  // (skips adapters of rank 0)
  return lo;
}

// the adapter owning row m, or -1 (rows outside every segment get no delta)
AD_HD int segment_of(const Table& t, int64_t m) {
  int lo = 0, hi = t.n;  // start[lo] <= m < start[hi] when covered
  if (m < t.start[0] || m >= t.start[t.n]) return -1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (t.start[mid] <= m) lo = mid;
    else hi = mid;
  }
  // empty segments share their start with the next one: the owner is the last segment starting at or before m
  return m < t.start[lo + 1] ? lo : -1;
}

// forward, shrink: element (m, j) of T (M, R) = Σ_k x[m,k]·A_i[j,k] (0 past the row's rank or outside every segment)
AD_HD void shrink_at(int64_t e, const Table& t, const float* x, float* T) {
  const int64_t m = e / t.R, j = e % t.R;
  const int i = segment_of(t, m);
  float acc = 0.f;
  if (i >= 0 && j < t.rank[i]) {
    const float *xr = x + m * t.K, *ar = t.A[i] + j * t.K;
    for (int64_t k = 0; k < t.K; k++) acc += xr[k] * ar[k];
  }
  T[e] = acc;
}
// forward, expand: element (m, o) of D (M, O) = s_i·Σ_j T[m,j]·B_i[o,j]
AD_HD void expand_at(int64_t e, const Table& t, const float* T, float* D) {
  const int64_t m = e / t.O, o = e % t.O;
  const int i = segment_of(t, m);
  float acc = 0.f;
  if (i >= 0) {
    const float *tr = T + m * t.R, *br = t.B[i] + o * t.rank[i];
    for (int64_t j = 0; j < t.rank[i]; j++) acc += tr[j] * br[j];
    acc *= t.scale[i];
  }
  D[e] = acc;
}
// backward: element (m, j) of GT (M, R) = s_i·Σ_o g[m,o]·B_i[o,j]
AD_HD void gt_at(int64_t e, const Table& t, const float* g, float* GT) {
  const int64_t m = e / t.R, j = e % t.R;
  const int i = segment_of(t, m);
  float acc = 0.f;
  if (i >= 0 && j < t.rank[i]) {
    const float* gr = g + m * t.O;
    for (int64_t o = 0; o < t.O; o++) acc += gr[o] * t.B[i][o * t.rank[i] + j];
    acc *= t.scale[i];
  }
  GT[e] = acc;
}
// backward: element (m, k) of gx (M, K) = Σ_j GT[m,j]·A_i[j,k]
AD_HD void gx_at(int64_t e, const Table& t, const float* GT, float* gx) {
  const int64_t m = e / t.K, k = e % t.K;
  const int i = segment_of(t, m);
  float acc = 0.f;
  if (i >= 0)
    for (int64_t j = 0; j < t.rank[i]; j++) acc += GT[m * t.R + j] * t.A[i][j * t.K + k];
  gx[e] = acc;
}
// backward: element e of the dA buffer (dA_0, dA_1, … back to back); (j, k) of dA_i (r_i, K) = Σ_{m in seg i} GT[m,j]·x[m,k]
AD_HD void da_at(int64_t e, const Table& t, const float* GT, const float* x, float* dA) {
  const int i = owner(t.aoff, t.n, e);
  const int64_t q = e - t.aoff[i], j = q / t.K, k = q % t.K;
  float acc = 0.f;
  for (int64_t m = t.start[i]; m < t.start[i + 1]; m++) acc += GT[m * t.R + j] * x[m * t.K + k];
  dA[e] = acc;
}
// backward: element e of the dB buffer; (o, j) of dB_i (O, r_i) = s_i·Σ_{m in seg i} g[m,o]·T[m,j]
AD_HD void db_at(int64_t e, const Table& t, const float* g, const float* T, float* dB) {
  const int i = owner(t.boff, t.n, e);
  const int64_t r = t.rank[i], q = e - t.boff[i], o = q / r, j = q % r;
  float acc = 0.f;
  for (int64_t m = t.start[i]; m < t.start[i + 1]; m++) acc += g[m * t.O + o] * T[m * t.R + j];
  dB[e] = t.scale[i] * acc;
}

}  // namespace ad_sgmv
