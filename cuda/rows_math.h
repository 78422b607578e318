// rows_math.h — per-row / per-column code of the CUDA row kernels (rows.cu): softmax and log-softmax, layer and RMS
// norm, sums, cross-entropy and embeddings, forward and backward. Like elementwise_math.h it also compiles as host
// C++, and test/cuda/mock/mock_cuda.cpp runs these functions to check them against the CPU ops without a GPU. The
// arithmetic follows the CPU kernels (native/kernels/{softmax,norm,reduce,loss,index}.cpp) step for step: double
// accumulators where they use them, the same clamps and NaN conventions.
// Layout conventions: a softmax / sum over axis R of a tensor viewed as (O, R, I) handles "line" t = o·I + i, whose
// element k sits at (o·R + k)·I + i; norms and cross-entropy take rows of C contiguous floats.
#pragma once
#include "elementwise_math.h"

namespace ad_rows {

AD_HD int64_t at(int64_t t, int64_t R, int64_t I, int64_t k) { return ((t / I) * R + k) * I + t % I; }

AD_HD void softmax_fwd(int64_t t, int64_t R, int64_t I, const float* X, float* Y, bool log) {
  float m = -INFINITY;
  for (int64_t k = 0; k < R; k++) {
    const float v = X[at(t, R, I, k)];
    m = v > m ? v : m;
  }
  if (m == -INFINITY) m = 0;  // all -inf: exp gives 0/0 = NaN like torch
  double s = 0;
  if (log) {
    for (int64_t k = 0; k < R; k++) s += expf(X[at(t, R, I, k)] - m);
    const float lse = m + (float)::log(s);
    for (int64_t k = 0; k < R; k++) Y[at(t, R, I, k)] = X[at(t, R, I, k)] - lse;
  } else {
    for (int64_t k = 0; k < R; k++) {
      const float e = expf(X[at(t, R, I, k)] - m);
      Y[at(t, R, I, k)] = e;
      s += e;
    }
    const float inv = (float)(1.0 / s);
    for (int64_t k = 0; k < R; k++) Y[at(t, R, I, k)] *= inv;
  }
}

// softmax: gin = y·(g − Σ g·y); log-softmax: gin = g − exp(y)·Σ g
AD_HD void softmax_bwd(int64_t t, int64_t R, int64_t I, const float* Y, const float* G, float* GI, bool log) {
  double s = 0;
  if (log) {
    for (int64_t k = 0; k < R; k++) s += G[at(t, R, I, k)];
    for (int64_t k = 0; k < R; k++) GI[at(t, R, I, k)] = G[at(t, R, I, k)] - expf(Y[at(t, R, I, k)]) * (float)s;
  } else {
    for (int64_t k = 0; k < R; k++) s += (double)G[at(t, R, I, k)] * Y[at(t, R, I, k)];
    for (int64_t k = 0; k < R; k++) GI[at(t, R, I, k)] = Y[at(t, R, I, k)] * (G[at(t, R, I, k)] - (float)s);
  }
}

// Row sums for the norms: eight partial double sums (element k goes to partial k mod 8), added pairwise at the end.
// Eight independent chains instead of one serial chain of dependent adds let the loops pipeline and vectorise (a
// BERT-base layer norm went from ~1 ms to a fraction of that); the order is fixed, so results are deterministic.
struct Sum8 {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  AD_HD double total() const { return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])); }
};

// y = (x − mean)·rstd·w + b (layer norm) or x·rstd·w (RMS), per row r of C; saves mean (0 for RMS) and rstd.
AD_HD void norm_fwd(int64_t r, int64_t C, const float* X, const float* W, const float* B, float eps, bool rms, float* Y,
                    float* M, float* RS) {
  const float* xr = X + r * C;
  double mu = 0, var = 0;
  const int64_t C8 = C / 8 * 8;
  if (!rms) {
    Sum8 s;
    for (int64_t k = 0; k < C8; k += 8)
      for (int j = 0; j < 8; j++) s.p[j] += xr[k + j];
    for (int64_t k = C8; k < C; k++) s.p[k - C8] += xr[k];
    mu = s.total() / C;
  }
  Sum8 v;
  for (int64_t k = 0; k < C8; k += 8)
    for (int j = 0; j < 8; j++) {
      const double d = xr[k + j] - mu;
      v.p[j] += d * d;
    }
  for (int64_t k = C8; k < C; k++) {
    const double d = xr[k] - mu;
    v.p[k - C8] += d * d;
  }
  var = v.total() / C;
  const float rs = (float)(1.0 / sqrt(var + eps)), m = (float)mu;
  M[r] = m;
  RS[r] = rs;
  for (int64_t k = 0; k < C; k++) {
    float v = (xr[k] - m) * rs;
    if (W) v *= W[k];
    if (B) v += B[k];
    Y[r * C + k] = v;
  }
}

// dx of row r: rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), dxhat = g·w (RMS: no mean(dxhat) term)
AD_HD void norm_bwd_dx(int64_t r, int64_t C, const float* X, const float* W, const float* M, const float* RS,
                       const float* G, bool rms, float* DX) {
  const float *xr = X + r * C, *gr = G + r * C;
  const float m = rms ? 0.f : M[r], rs = RS[r];
  Sum8 s1, s2;
  const int64_t C8 = C / 8 * 8;
  for (int64_t k = 0; k < C8; k += 8)
    for (int j = 0; j < 8; j++) {
      const float xh = (xr[k + j] - m) * rs;
      const float d = W ? gr[k + j] * W[k + j] : gr[k + j];
      s1.p[j] += d;
      s2.p[j] += (double)d * xh;
    }
  for (int64_t k = C8; k < C; k++) {
    const float xh = (xr[k] - m) * rs;
    const float d = W ? gr[k] * W[k] : gr[k];
    s1.p[k - C8] += d;
    s2.p[k - C8] += (double)d * xh;
  }
  const float a = rms ? 0.f : (float)(s1.total() / C), bcoef = (float)(s2.total() / C);
  for (int64_t k = 0; k < C; k++) {
    const float xh = (xr[k] - m) * rs;
    const float d = W ? gr[k] * W[k] : gr[k];
    DX[r * C + k] = rs * (d - a - xh * bcoef);
  }
}

// column k of the parameter gradients: dw[k] = Σ_r g·xhat, db[k] = Σ_r g (double sums over the N rows)
AD_HD void norm_bwd_dparams(int64_t k, int64_t N, int64_t C, const float* X, const float* M, const float* RS,
                            const float* G, bool rms, float* DW, float* DB) {
  double dw = 0, db = 0;
  for (int64_t r = 0; r < N; r++) {
    const float xh = (X[r * C + k] - (rms ? 0.f : M[r])) * RS[r];
    dw += (double)G[r * C + k] * xh;
    db += G[r * C + k];
  }
  if (DW) DW[k] = (float)dw;
  if (DB) DB[k] = (float)db;
}

// out[t] = Σ_k x over line t of an (O, R, I) view (double accumulator, as reduce.cpp)
AD_HD void sum_line(int64_t t, int64_t R, int64_t I, const float* X, float* OUT) {
  double s = 0;
  for (int64_t k = 0; k < R; k++) s += X[at(t, R, I, k)];
  OUT[t] = (float)s;
}

// cross-entropy row i: lse and the row loss (1−ε)(lse − x[y]) + ε(lse − mean x), 0 for ignored rows
AD_HD void ce_fwd(int64_t i, int64_t C, const float* X, const int64_t* T, int64_t ignore, float eps, float* L, float* RL) {
  const float* x = X + i * C;
  float m = -INFINITY;
  for (int64_t k = 0; k < C; k++) m = x[k] > m ? x[k] : m;
  double s = 0, sx = 0;
  for (int64_t k = 0; k < C; k++) {
    s += ::exp((double)x[k] - m);
    sx += x[k];
  }
  const double l = m + ::log(s);
  L[i] = (float)l;
  // (the smoothing term only when eps > 0: a -inf logit makes sx -inf, and 0*inf would be NaN)
  RL[i] = T[i] == ignore ? 0.f : (float)((1.0 - eps) * (l - x[T[i]]) + (eps > 0 ? eps * (l - sx / C) : 0.0));
}

// dlogits row i = w·(softmax − ε/C) − w·(1−ε) at the target (0 for ignored rows); w = the row's gradient weight
AD_HD void ce_bwd(int64_t i, int64_t C, const float* X, const int64_t* T, const float* L, int64_t ignore, float eps,
                  float w, float* D) {
  float* d = D + i * C;
  if (T[i] == ignore) {
    for (int64_t k = 0; k < C; k++) d[k] = 0.f;
    return;
  }
  const float off = eps / (float)C;
  const float* x = X + i * C;
  for (int64_t k = 0; k < C; k++) d[k] = w * (expf(x[k] - L[i]) - off);
  d[T[i]] -= w * (1.f - eps);
}

// embedding: row k of the output = row ids[k] of the weight (ids checked by the caller)
AD_HD void embedding_row(int64_t k, int64_t C, const int64_t* ids, const float* W, float* O) {
  const float* src = W + ids[k] * C;
  for (int64_t j = 0; j < C; j++) O[k * C + j] = src[j];
}
// backward, column j: dw[ids[k], j] += g[k, j] over k in order (deterministic, no atomics); dw starts at zero
AD_HD void embedding_bwd_col(int64_t j, int64_t n, int64_t C, const int64_t* ids, const float* G, float* D) {
  for (int64_t k = 0; k < n; k++) D[ids[k] * C + j] += G[k * C + j];
}

// rotary embedding of row r (one (…, t) vector of D): tables (T, D) shared, or (B, T, D) per batch row with
// perB = H·T rows per batch entry; half-split (rotate_half) or interleaved pairs; backward = the transposed rotation
AD_HD void rope_row(int64_t r, int64_t T, int64_t D, int64_t perB, const float* X, const float* CS, const float* SN, float* Y,
                    bool inter, bool bwd) {
  const int64_t t = r % T, h = D / 2;
  const int64_t tab = perB ? ((r / perB) * T + t) * D : t * D;
  const float *xr = X + r * D, *cr = CS + tab, *sr = SN + tab;
  float* yr = Y + r * D;
  if (!inter) {
    for (int64_t i = 0; i < h; i++) {
      const float a = xr[i], b = xr[i + h];
      if (!bwd) {
        yr[i] = a * cr[i] - b * sr[i];
        yr[i + h] = b * cr[i + h] + a * sr[i + h];
      } else {
        yr[i] = a * cr[i] + b * sr[i + h];
        yr[i + h] = b * cr[i + h] - a * sr[i];
      }
    }
  } else {
    for (int64_t i = 0; i < D; i += 2) {
      const float a = xr[i], b = xr[i + 1];
      if (!bwd) {
        yr[i] = a * cr[i] - b * sr[i];
        yr[i + 1] = b * cr[i + 1] + a * sr[i + 1];
      } else {
        yr[i] = a * cr[i] + b * sr[i + 1];
        yr[i + 1] = b * cr[i + 1] - a * sr[i];
      }
    }
  }
}

}  // namespace ad_rows
