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

// Argument checks of the two tables (the launchers and the mock share them): n adapters whose row segments
// start[0] <= start[1] <= ... <= start[n] lie in [0, M].
inline bool segments_ok(int n, const int64_t* start, int64_t M) {
  if (n < 1 || n > kMaxAdapters || M < 0 || start[0] < 0 || start[n] > M) return false;
  for (int i = 0; i < n; i++)
    if (start[i + 1] < start[i]) return false;
  return true;
}
inline bool table_ok(const Table* t) {
  if (!t || !segments_ok(t->n, t->start, t->M) || t->K < 0 || t->O < 0 || t->R < 0) return false;
  for (int i = 0; i < t->n; i++)
    if (t->rank[i] < 0 || t->rank[i] > t->R) return false;
  return true;
}
inline bool bn_table_ok(const adapters_cuda_bn_sgmv* t) {
  if (!t || !segments_ok(t->n, t->start, t->M) || t->C < 0 || t->D < 0 || t->act < 0 || t->act >= ad_ew::UNARY_COUNT) return false;
  for (int i = 0; i < t->n; i++)
    if (t->width[i] < 0 || t->width[i] > t->D) return false;
  return true;
}

// the largest i < n with off[i] <= e, for off non-decreasing, off[0] <= e < off[n] (with repeated offsets, i.e.
// empty segments or rank-0 adapters, the last of the equal ones: the one whose range is not empty)
AD_HD int owner(const int64_t* off, int n, int64_t e) {
  int lo = 0, hi = n;  // off[lo] <= e < off[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (off[mid] <= e) lo = mid;
    else hi = mid;
  }
  return lo;
}

// the adapter owning row m, or -1 (rows outside every segment get no adapter); T: either table
template <class T>
AD_HD int segment_of(const T& t, int64_t m) {
  return m < t.start[0] || m >= t.start[t.n] ? -1 : owner(t.start, t.n, m);
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

// ---- sequential bottleneck adapters: y = residual + s_i·(act(h·Wd_iᵀ + bd_i)·Wu_iᵀ + bu_i) on segment i's rows ----------
using BnTable = adapters_cuda_bn_sgmv;

// forward: element (m, j) of pre (M, D)
AD_HD void bn_pre_at(int64_t e, const BnTable& t, const float* h, float* pre) {
  const int64_t m = e / t.D, j = e % t.D;
  const int i = segment_of(t, m);
  float acc = 0.f;
  if (i >= 0 && j < t.width[i]) {
    const float *hr = h + m * t.C, *wr = t.Wd[i] + j * t.C;
    for (int64_t k = 0; k < t.C; k++) acc += hr[k] * wr[k];
    acc += t.bd[i][j];
  }
  pre[e] = acc;
}
// forward: element (m, c) of y (M, C)
AD_HD void bn_out_at(int64_t e, const BnTable& t, const float* pre, const float* res, float* y) {
  const int64_t m = e / t.C, c = e % t.C;
  const int i = segment_of(t, m);
  float v = res[e];
  if (i >= 0) {
    const int64_t d = t.width[i];
    float acc = 0.f;
    for (int64_t j = 0; j < d; j++) acc += ad_ew::unary(t.act, pre[m * t.D + j], 0.f, 0.f) * t.Wu[i][c * d + j];
    v += t.scale[i] * (acc + t.bu[i][c]);
  }
  y[e] = v;
}
// backward: element (m, j) of gpre (M, D) = act'(pre)·s_i·Σ_c g[m,c]·Wu_i[c,j]
AD_HD void bn_gpre_at(int64_t e, const BnTable& t, const float* g, const float* pre, float* gpre) {
  const int64_t m = e / t.D, j = e % t.D;
  const int i = segment_of(t, m);
  float v = 0.f;
  if (i >= 0 && j < t.width[i]) {
    const int64_t d = t.width[i];
    float acc = 0.f;
    for (int64_t c = 0; c < t.C; c++) acc += g[m * t.C + c] * t.Wu[i][c * d + j];
    v = ad_ew::unary_backward(t.act, pre[e], t.scale[i] * acc);
  }
  gpre[e] = v;
}
// backward: element (m, k) of gh (M, C) = Σ_j gpre[m,j]·Wd_i[j,k]
AD_HD void bn_gh_at(int64_t e, const BnTable& t, const float* gpre, float* gh) {
  const int64_t m = e / t.C, k = e % t.C;
  const int i = segment_of(t, m);
  float acc = 0.f;
  if (i >= 0)
    for (int64_t j = 0; j < t.width[i]; j++) acc += gpre[m * t.D + j] * t.Wd[i][j * t.C + k];
  gh[e] = acc;
}
// backward: element e of the dWd buffer: (j, k) of dWd_i = Σ_{m in seg i} gpre[m,j]·h[m,k]
AD_HD void bn_dwd_at(int64_t e, const BnTable& t, const float* gpre, const float* h, float* dWd) {
  const int i = owner(t.woff, t.n, e);
  const int64_t q = e - t.woff[i], j = q / t.C, k = q % t.C;
  float acc = 0.f;
  for (int64_t m = t.start[i]; m < t.start[i + 1]; m++) acc += gpre[m * t.D + j] * h[m * t.C + k];
  dWd[e] = acc;
}
// backward: element e of the dWu buffer: (c, j) of dWu_i (C, width) = s_i·Σ_m g[m,c]·act(pre[m,j])
AD_HD void bn_dwu_at(int64_t e, const BnTable& t, const float* g, const float* pre, float* dWu) {
  const int i = owner(t.woff, t.n, e);
  const int64_t d = t.width[i], q = e - t.woff[i], c = q / d, j = q % d;
  float acc = 0.f;
  for (int64_t m = t.start[i]; m < t.start[i + 1]; m++) acc += g[m * t.C + c] * ad_ew::unary(t.act, pre[m * t.D + j], 0.f, 0.f);
  dWu[e] = t.scale[i] * acc;
}
// backward: element e of the dbd buffer: j of dbd_i = Σ_m gpre[m,j]
AD_HD void bn_dbd_at(int64_t e, const BnTable& t, const float* gpre, float* dbd) {
  const int i = owner(t.doff, t.n, e);
  const int64_t j = e - t.doff[i];
  float acc = 0.f;
  for (int64_t m = t.start[i]; m < t.start[i + 1]; m++) acc += gpre[m * t.D + j];
  dbd[e] = acc;
}
// backward: element e = i·C + c of dbu = s_i·Σ_m g[m,c]
AD_HD void bn_dbu_at(int64_t e, const BnTable& t, const float* g, float* dbu) {
  const int64_t i = e / t.C, c = e % t.C;
  float acc = 0.f;
  for (int64_t m = t.start[i]; m < t.start[i + 1]; m++) acc += g[m * t.C + c];
  dbu[e] = t.scale[i] * acc;
}

}  // namespace ad_sgmv
