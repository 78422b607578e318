// attention_math.h — per-row code of the CUDA attention kernels (attention.cu), host-compilable so that
// test/cuda/mock/mock_cuda.cpp checks it against the CPU's fused attention without a GPU. Semantics are
// native/kernels/attention.h's: score = clamp(scale·q·k + mask, −FLT_MAX, FLT_MAX), then −FLT_MAX where the key is
// causally hidden or padded out (an all-masked row attends uniformly); prefix keys/values (P) come before the Tk
// keys and are never causally hidden; grouped-query heads share key/value head h / (H / Hkv).
// This is the correctness-first form: one thread per query row (forward, dq) or key row (dk, dv), two passes per
// row (max and sum, then the weighted values), and per-row statistics (max, sum, D = dO·O) precomputed for the
// backward instead of the log-sum-exp, so that all-masked rows (lse ≈ −FLT_MAX) lose no precision.
#pragma once
#include <float.h>

#include "elementwise_math.h"

namespace ad_attn {

struct Params {
  int64_t B, H, Hkv, Tq, Tk, P, D, Dv;
  float scale;
  int causal;
  const float* mask;  // additive, (B, H, Tq, P+Tk) through the strides below (0 = broadcast); null = none
  int64_t mask_sb, mask_sh, mask_si, mask_sj;
  const uint8_t* key_keep;  // (B, P+Tk), nonzero = keep; null = none
};

AD_HD const float* key_row(const Params& p, const float* k, const float* pk, int64_t b, int64_t hk, int64_t j, int64_t dim) {
  return j < p.P ? pk + ((b * p.Hkv + hk) * p.P + j) * dim : k + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * dim;
}

// the score of query i and key j from their scaled dot product s = Σ (scale·q)·k: mask added, clamped, hidden keys
// (causal / padded out) at −FLT_MAX. Shared by the per-row code below and the warp kernels of attention.cu.
AD_HD float finish_score(const Params& p, float s, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (p.mask) s += p.mask[b * p.mask_sb + h * p.mask_sh + i * p.mask_si + j * p.mask_sj];
  s = s < -FLT_MAX ? -FLT_MAX : s > FLT_MAX ? FLT_MAX : s;  // (NaN stays NaN)
  const bool hidden = (p.causal && j >= p.P && (j - p.P) > i + (p.Tk - p.Tq)) || (p.key_keep && !p.key_keep[b * (p.P + p.Tk) + j]);
  return hidden ? -FLT_MAX : s;
}

AD_HD float score(const Params& p, const float* q_row, const float* k, const float* pk, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t hk = h / (p.H / p.Hkv);
  const float* kr = key_row(p, k, pk, b, hk, j, p.D);
  float s = 0.f;
  for (int64_t d = 0; d < p.D; d++) s += (p.scale * q_row[d]) * kr[d];
  return finish_score(p, s, b, h, i, j);
}

// max and sum of exp(s − max) over the keys of query row r = (b·H + h)·Tq + i
AD_HD void row_stats(const Params& p, int64_t r, const float* q, const float* k, const float* pk, float* m_out, float* l_out) {
  const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H), S = p.P + p.Tk;
  const float* qr = q + r * p.D;
  float m = -INFINITY;
  for (int64_t j = 0; j < S; j++) {
    const float s = score(p, qr, k, pk, b, h, i, j);
    m = s > m ? s : m;
  }
  double l = 0;
  for (int64_t j = 0; j < S; j++) l += expf(score(p, qr, k, pk, b, h, i, j) - m);
  *m_out = m;
  *l_out = (float)l;
}

// forward, query row r: out = Σ_j softmax_j · v_j, lse = max + log(sum)
AD_HD void fwd_row(const Params& p, int64_t r, const float* q, const float* k, const float* v, const float* pk, const float* pv,
                   float* out, float* lse) {
  const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H), S = p.P + p.Tk, hk = h / (p.H / p.Hkv);
  float m, l;
  row_stats(p, r, q, k, pk, &m, &l);
  float* o = out + r * p.Dv;
  for (int64_t d = 0; d < p.Dv; d++) o[d] = 0.f;
  const float* qr = q + r * p.D;
  const float inv = 1.f / l;
  for (int64_t j = 0; j < S; j++) {
    const float w = expf(score(p, qr, k, pk, b, h, i, j) - m) * inv;
    const float* vr = key_row(p, v, pv, b, hk, j, p.Dv);
    for (int64_t d = 0; d < p.Dv; d++) o[d] += w * vr[d];
  }
  lse[r] = m + logf(l);
}

// backward statistics of query row r: max, sum and D = dO·O
AD_HD void bwd_stats(const Params& p, int64_t r, const float* q, const float* k, const float* pk, const float* out, const float* dout,
                     float* M, float* L, float* Dd) {
  row_stats(p, r, q, k, pk, &M[r], &L[r]);
  double s = 0;
  for (int64_t d = 0; d < p.Dv; d++) s += (double)dout[r * p.Dv + d] * out[r * p.Dv + d];
  Dd[r] = (float)s;
}

AD_HD float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t d = 0; d < n; d++) s += a[d] * b[d];
  return s;
}

// dq of query row r = scale · Σ_j P_ij (dO_i·v_j − D_i) k_j
AD_HD void dq_row(const Params& p, int64_t r, const float* q, const float* k, const float* v, const float* pk, const float* pv,
                  const float* dout, const float* M, const float* L, const float* Dd, float* dq) {
  const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H), S = p.P + p.Tk, hk = h / (p.H / p.Hkv);
  const float* qr = q + r * p.D;
  float* g = dq + r * p.D;
  for (int64_t d = 0; d < p.D; d++) g[d] = 0.f;
  for (int64_t j = 0; j < S; j++) {
    const float pij = expf(score(p, qr, k, pk, b, h, i, j) - M[r]) / L[r];
    const float ds = pij * (dot(dout + r * p.Dv, key_row(p, v, pv, b, hk, j, p.Dv), p.Dv) - Dd[r]);
    const float* kr = key_row(p, k, pk, b, hk, j, p.D);
    for (int64_t d = 0; d < p.D; d++) g[d] += p.scale * ds * kr[d];
  }
}

// dk, dv of key row c = (b·Hkv + hk)·S + j (prefix rows first), summed over the query heads of the group and all
// queries: dv_j = Σ P_ij dO_i, dk_j = scale · Σ P_ij (dO_i·v_j − D_i) q_i
AD_HD void dkv_row(const Params& p, int64_t c, const float* q, const float* k, const float* v, const float* pk, const float* pv,
                   const float* dout, const float* M, const float* L, const float* Dd, float* dk, float* dv, float* dpk, float* dpv) {
  const int64_t S = p.P + p.Tk, j = c % S, hk = (c / S) % p.Hkv, b = c / (S * p.Hkv), G = p.H / p.Hkv;
  float* gk = j < p.P ? dpk + ((b * p.Hkv + hk) * p.P + j) * p.D : dk + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * p.D;
  float* gv = j < p.P ? dpv + ((b * p.Hkv + hk) * p.P + j) * p.Dv : dv + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * p.Dv;
  for (int64_t d = 0; d < p.D; d++) gk[d] = 0.f;
  for (int64_t d = 0; d < p.Dv; d++) gv[d] = 0.f;
  const float* vr = key_row(p, v, pv, b, hk, j, p.Dv);
  for (int64_t h = hk * G; h < (hk + 1) * G; h++)
    for (int64_t i = 0; i < p.Tq; i++) {
      const int64_t r = (b * p.H + h) * p.Tq + i;
      const float* qr = q + r * p.D;
      const float pij = expf(score(p, qr, k, pk, b, h, i, j) - M[r]) / L[r];
      const float* dor = dout + r * p.Dv;
      for (int64_t d = 0; d < p.Dv; d++) gv[d] += pij * dor[d];
      const float ds = pij * (dot(dor, vr, p.Dv) - Dd[r]);
      for (int64_t d = 0; d < p.D; d++) gk[d] += p.scale * ds * qr[d];
    }
}

}  // namespace ad_attn
