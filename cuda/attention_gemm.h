// attention_gemm.h — attention through batched matrix products, for sequences short enough that the score matrix of
// every head fits a workspace (BERT-size training: 128 keys): the scores S = scale·Q·Kᵀ come from one batched GEMM, a
// row kernel applies the mask rule and the softmax in place, and out = P·V is a second GEMM; the backward is five
// GEMMs around one more row kernel (dS = P ⊙ (dP − dO·O)). The products are the library's batched f32 GEMMs (at the
// f32 matmul precision; 1xTF32 on the tensor cores under autocast), far faster than the per-head tiles of the fused
// kernels in attention.cu, which keep memory linear in the sequence for longer ones.
// Semantics are attention_math.h's, so the GPU's two paths and the CPU agree: finish_score for masks, causal and
// padding (hidden keys at −FLT_MAX, an all-masked row attends uniformly), prefix keys before the Tk keys, grouped-query
// heads sharing key/value head h / (H / Hkv).
// The sequence of products is written once, over an Ops type: attention.cu's launches kernels, the host-memory mock
// (test/cuda/mock) runs the same sequence with loops, so every device check of attention exercises it.
#pragma once
#include "attention_math.h"

namespace ad_attn_gemm {

using ad_attn::Params;

// Score rows in the workspace: the P prefix keys from column 0, the Tk keys from column P4 = P rounded up to 4 (so
// that both parts start 16-byte aligned), a row stride LS of P4 + Tk rounded up to 4.
struct Layout {
  int64_t NS, P4, LS, rows;  // keys (P + Tk), the Tk keys' first column, row stride, query rows (B·H·Tq)
};
inline Layout layout_of(const Params& p) {
  const int64_t P4 = (p.P + 3) / 4 * 4;
  return Layout{p.P + p.Tk, P4, P4 + (p.Tk + 3) / 4 * 4, p.B * p.H * p.Tq};
}
// column of logical key j (prefix keys first)
AD_HD int64_t key_col(const Params& p, const Layout& l, int64_t j) { return j < p.P ? j : l.P4 + (j - p.P); }

// Whether this path runs: some keys and queries, at most 1024 keys, and a score workspace (two of them in the
// backward) of at most 2^26 floats (256 MiB) each.
inline bool eligible(const Params& p) {
  const Layout l = layout_of(p);
  return p.Tq > 0 && l.NS > 0 && l.NS <= 1024 && p.D > 0 && p.Dv > 0 && l.rows * l.LS <= (int64_t(1) << 26);
}
inline int64_t workspace_floats(const Params& p) { const Layout l = layout_of(p); return l.rows * l.LS; }

// Per-row code (the host's loops; attention.cu has warp-per-row twins of both).
// softmax_row: the raw scores scale·q·k of query row r become probabilities in place; lse (may be null) gets
// max + log(sum).
AD_HD void softmax_row(const Params& p, const Layout& l, int64_t r, float* S, float* lse) {
  const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H);
  float* row = S + r * l.LS;
  float m = -INFINITY;
  for (int64_t j = 0; j < l.NS; j++) {
    float& s = row[key_col(p, l, j)];
    s = ad_attn::finish_score(p, s, b, h, i, j);
    m = s > m ? s : m;
  }
  float sum = 0.f;
  for (int64_t j = 0; j < l.NS; j++) sum += expf(row[key_col(p, l, j)] - m);
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < l.NS; j++) {
    float& s = row[key_col(p, l, j)];
    s = expf(s - m) * inv;
  }
  if (lse) lse[r] = m + logf(sum);
}
// ds_row: dP (= dO·vᵀ per key) becomes dS = P ⊙ (dP − dO·O) in place
AD_HD void ds_row(const Params& p, const Layout& l, int64_t r, const float* P, float* dP, const float* out, const float* dout) {
  float dd = 0.f;
  for (int64_t d = 0; d < p.Dv; d++) dd += dout[r * p.Dv + d] * out[r * p.Dv + d];
  for (int64_t j = 0; j < l.NS; j++) {
    const int64_t c = r * l.LS + key_col(p, l, j);
    dP[c] = P[c] * (dP[c] - dd);
  }
}

// Ops: int gemm(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch)
//      (row-major, C = alpha·op(A)·op(B) + beta·C per batch item); int softmax_rows(p, layout, S, lse);
//      int ds_rows(p, layout, P, dP, out, dout); int alloc(float** ws, n) (kNoWorkspace when memory is short);
//      int release(float* ws). Each returns 0 or an error code.
// Batch item (b, hk) holds the G = H / Hkv query heads of key head hk: G·Tq consecutive query rows (q is (B,H,Tq,D)),
// whose score rows are also consecutive in S — so grouped-query heads need nothing special.

// run(workspace of n floats) between ops.alloc and ops.release; kNoWorkspace when the allocation found too little
// memory, so that the caller can take its fused path, which needs none
constexpr int kNoWorkspace = -1;
template <class Ops, class Run>
int with_workspace(Ops& ops, int64_t n, Run run) {
  float* ws = nullptr;
  if (int rc = ops.alloc(&ws, n)) return rc;
  const int rc = run(ws);
  const int frc = ops.release(ws);
  return rc ? rc : frc;
}

// S = probabilities (and lse when non-null) for q against [pk; k]
template <class Ops>
int probabilities(Ops& ops, const Params& p, const Layout& l, const float* q, const float* k, const float* pk, float* S, float* lse) {
  const int64_t M = (p.H / p.Hkv) * p.Tq, batch = p.B * p.Hkv;
  int rc = 0;
  if (p.P) rc = ops.gemm(0, 1, M, p.P, p.D, p.scale, q, p.D, M * p.D, pk, p.D, p.P * p.D, 0.f, S, l.LS, M * l.LS, batch);
  if (!rc && p.Tk) rc = ops.gemm(0, 1, M, p.Tk, p.D, p.scale, q, p.D, M * p.D, k, p.D, p.Tk * p.D, 0.f, S + l.P4, l.LS, M * l.LS, batch);
  return rc ? rc : ops.softmax_rows(p, l, S, lse);
}

// out = P·[pv; v]; S: a workspace of workspace_floats(p)
template <class Ops>
int forward(Ops& ops, const Params& p, const float* q, const float* k, const float* v, const float* pk, const float* pv, float* out,
            float* lse, float* S) {
  const Layout l = layout_of(p);
  const int64_t M = (p.H / p.Hkv) * p.Tq, batch = p.B * p.Hkv;
  int rc = probabilities(ops, p, l, q, k, pk, S, lse);
  if (!rc && p.P) rc = ops.gemm(0, 0, M, p.Dv, p.P, 1.f, S, l.LS, M * l.LS, pv, p.Dv, p.P * p.Dv, 0.f, out, p.Dv, M * p.Dv, batch);
  if (!rc && p.Tk)
    rc = ops.gemm(0, 0, M, p.Dv, p.Tk, 1.f, S + l.P4, l.LS, M * l.LS, v, p.Dv, p.Tk * p.Dv, p.P ? 1.f : 0.f, out, p.Dv, M * p.Dv, batch);
  return rc;
}

// dq, dk, dv (dpk, dpv when P > 0) from out and dout; S, dS: two workspaces of workspace_floats(p)
template <class Ops>
int backward(Ops& ops, const Params& p, const float* q, const float* k, const float* v, const float* pk, const float* pv, const float* out,
             const float* dout, float* dq, float* dk, float* dv, float* dpk, float* dpv, float* S, float* dS) {
  const Layout l = layout_of(p);
  const int64_t M = (p.H / p.Hkv) * p.Tq, batch = p.B * p.Hkv, sS = M * l.LS;
  int rc = probabilities(ops, p, l, q, k, pk, S, nullptr);
  // dP = dO·[pv; v]ᵀ, then dS in place
  if (!rc && p.P) rc = ops.gemm(0, 1, M, p.P, p.Dv, 1.f, dout, p.Dv, M * p.Dv, pv, p.Dv, p.P * p.Dv, 0.f, dS, l.LS, sS, batch);
  if (!rc && p.Tk) rc = ops.gemm(0, 1, M, p.Tk, p.Dv, 1.f, dout, p.Dv, M * p.Dv, v, p.Dv, p.Tk * p.Dv, 0.f, dS + l.P4, l.LS, sS, batch);
  if (!rc) rc = ops.ds_rows(p, l, S, dS, out, dout);
  // dv = Pᵀ·dO, dk = scale·dSᵀ·Q (summed over the group's query heads by the product itself)
  if (!rc && p.Tk) rc = ops.gemm(1, 0, p.Tk, p.Dv, M, 1.f, S + l.P4, l.LS, sS, dout, p.Dv, M * p.Dv, 0.f, dv, p.Dv, p.Tk * p.Dv, batch);
  if (!rc && p.Tk) rc = ops.gemm(1, 0, p.Tk, p.D, M, p.scale, dS + l.P4, l.LS, sS, q, p.D, M * p.D, 0.f, dk, p.D, p.Tk * p.D, batch);
  if (!rc && p.P) rc = ops.gemm(1, 0, p.P, p.Dv, M, 1.f, S, l.LS, sS, dout, p.Dv, M * p.Dv, 0.f, dpv, p.Dv, p.P * p.Dv, batch);
  if (!rc && p.P) rc = ops.gemm(1, 0, p.P, p.D, M, p.scale, dS, l.LS, sS, q, p.D, M * p.D, 0.f, dpk, p.D, p.P * p.D, batch);
  // dq = scale·dS·[pk; k]
  if (!rc && p.P) rc = ops.gemm(0, 0, M, p.D, p.P, p.scale, dS, l.LS, sS, pk, p.D, p.P * p.D, 0.f, dq, p.D, M * p.D, batch);
  if (!rc && p.Tk)
    rc = ops.gemm(0, 0, M, p.D, p.Tk, p.scale, dS + l.P4, l.LS, sS, k, p.D, p.Tk * p.D, p.P ? 1.f : 0.f, dq, p.D, M * p.D, batch);
  return rc;
}

}  // namespace ad_attn_gemm
