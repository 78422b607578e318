// attention_warp.cuh — the warp-cooperative attention kernels for head sizes up to 128, included by attention.cu.
// Device code only, written against the CUDA built-ins it uses (threadIdx, blockIdx, blockDim, __syncthreads,
// __shfl_sync, __shfl_xor_sync, float4, dynamic shared memory through AD_DYNAMIC_SMEM), so that
// test/cuda/emu/attention_tiles_emu.cpp runs the same source on the CPU against attention_math.h's per-row code.
#pragma once
#include "attention_math.h"
#include "attention_device.cuh"

#ifndef AD_DYNAMIC_SMEM
#define AD_DYNAMIC_SMEM(name) extern __shared__ float4 name[]
#endif

namespace ad_attn_warp {

constexpr int kTile = 32;   // keys (forward, dq) or queries (dk, dv) per shared-memory tile: one per lane
constexpr int kWarps = 8;   // warps per block
constexpr int kRows = 4;    // rows (queries, or keys for dk/dv) per warp: 32 per block
constexpr int kBlockRows = kWarps * kRows;

// A shared-memory read feeds several FMAs: dot products read float4s (rows padded with zeros to a multiple of 4; a
// lane-indexed row stride of an odd multiple of 4 floats puts each quarter-warp's float4 reads on distinct banks) and
// each value read serves all kRows rows of the warp; the accumulations read a value once per key (or query) for all
// rows. (The first version read two shared floats per FMA and was bound by shared-memory bandwidth.)
__host__ __device__ inline int pad4(int n) { return (n + 3) & ~3; }
__host__ __device__ inline int lane_stride(int n) { const int q = pad4(n); return (q / 4) % 2 ? q : q + 4; }

// rows j0 .. j0+kTile of head group (b, hk), `width` (>= dim) floats each at stride ld, zeros past dim or the end
__device__ inline void stage_keys4(const ad_attn::Params& p, const float* k, const float* pk, int64_t b, int64_t hk, int64_t j0, int dim,
                                   int width, float* dst, int ld) {
  const int64_t S = p.P + p.Tk;
  for (int x = threadIdx.x; x < kTile * width; x += blockDim.x) {
    const int jj = x / width, d = x % width;
    const int64_t j = j0 + jj;
    dst[jj * ld + d] = (j < S && d < dim) ? ad_attn::key_row(p, k, pk, b, hk, j, dim)[d] : 0.f;
  }
}
// query-side rows i0 .. i0+n of head bh, times mul, `width` floats each at stride ld, zeros past dim or Tq
__device__ inline void stage_rows4(const ad_attn::Params& p, const float* x, int64_t bh, int64_t i0, int n, int dim, int width, float mul,
                                   float* dst, int ld) {
  for (int t = threadIdx.x; t < n * width; t += blockDim.x) {
    const int rr = t / width, d = t % width;
    const int64_t i = i0 + rr;
    dst[rr * ld + d] = (i < p.Tq && d < dim) ? mul * x[(bh * p.Tq + i) * dim + d] : 0.f;
  }
}
// acc[r] += Σ_d a[r][d] · x[d] over W4 float4s: `a` holds kRows rows at stride lda (broadcast reads), x is this
// lane's row; when SCALE, each x is multiplied by `mul` first ((scale·q)·k, as the per-row code rounds it)
template <bool SCALE>
__device__ __forceinline__ void dot_rows(const float* a, int lda, const float* x, int W4, float mul, float (&acc)[kRows]) {
  const float4* x4 = reinterpret_cast<const float4*>(x);
  for (int d = 0; d < W4; d++) {
    float4 v = x4[d];
    if (SCALE) v.x *= mul, v.y *= mul, v.z *= mul, v.w *= mul;
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      const float4 u = reinterpret_cast<const float4*>(a + r * lda)[d];
      acc[r] = fmaf(u.x, v.x, acc[r]);
      acc[r] = fmaf(u.y, v.y, acc[r]);
      acc[r] = fmaf(u.z, v.z, acc[r]);
      acc[r] = fmaf(u.w, v.w, acc[r]);
    }
  }
}

// One online-softmax step of a warp's row: s is this lane's score (−inf past the keys, valid false there); the row's
// running max m and sum l move on; returns exp(s − m) (0 where not valid) and sets alpha, the factor by which the row's
// earlier sums shrink (0 on the first tile).
__device__ __forceinline__ float online_step(float s, bool valid, float& m, float& l, float& alpha) {
  const float mn = fmaxf(m, group_max<32>(s));  // finite: the tile has a key, hidden ones score −FLT_MAX
  alpha = expf(m - mn);
  const float e = valid ? expf(s - mn) : 0.f;
  l = l * alpha + group_sum<32>(e);
  m = mn;
  return e;
}

// forward: grid (ceil(Tq / 32), B·H); warp w owns queries i0 + 4w .. +3; online softmax over 32-key tiles
template <int NPL>
__global__ void __launch_bounds__(256) fwd_warp_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk,
                                                       const float* pv, float* out, float* lse) {
  AD_DYNAMIC_SMEM(sm4);
  float* sm = reinterpret_cast<float*>(sm4);
  const int D = (int)p.D, Dv = (int)p.Dv, D4 = pad4(D), Dv4 = pad4(Dv), KS = lane_stride(D);
  float* Ks = sm;                 // kTile × KS
  float* Vs = Ks + kTile * KS;    // kTile × Dv4 (read by column)
  float* Qs = Vs + kTile * Dv4;   // kBlockRows × D4, pre-scaled
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv), S = p.P + p.Tk;
  const int64_t i0 = (int64_t)blockIdx.x * kBlockRows, iw = i0 + w * kRows;  // this warp's first query
  stage_rows4(p, q, bh, i0, kBlockRows, D, D4, p.scale, Qs, D4);
  float m[kRows], l[kRows], o[kRows][NPL];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int t = 0; t < NPL; t++) o[r][t] = 0.f;
  }
  for (int64_t j0 = 0; j0 < S; j0 += kTile) {
    __syncthreads();
    stage_keys4(p, k, pk, b, hk, j0, D, D4, Ks, KS);
    stage_keys4(p, v, pv, b, hk, j0, Dv, Dv4, Vs, Dv4);
    __syncthreads();
    const int64_t j = j0 + lane;
    const int jn = (int)(S - j0 < kTile ? S - j0 : kTile);
    float a[kRows] = {}, e[kRows];
    dot_rows<false>(Qs + w * kRows * D4, D4, Ks + lane * KS, D4 / 4, 1.f, a);
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      e[r] = 0.f;
      if (iw + r >= p.Tq) continue;  // warp-uniform
      float alpha;
      e[r] = online_step(j < S ? ad_attn::finish_score(p, a[r], b, h, iw + r, j) : -INFINITY, j < S, m[r], l[r], alpha);
#pragma unroll
      for (int t = 0; t < NPL; t++) o[r][t] *= alpha;
    }
    for (int jj = 0; jj < jn; jj++) {
      float vv[NPL];
#pragma unroll
      for (int t = 0; t < NPL; t++) vv[t] = lane + 32 * t < Dv ? Vs[jj * Dv4 + lane + 32 * t] : 0.f;
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        const float pj = __shfl_sync(0xffffffffu, e[r], jj);
#pragma unroll
        for (int t = 0; t < NPL; t++) o[r][t] = fmaf(pj, vv[t], o[r][t]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t i = iw + r;
    if (i >= p.Tq) break;
    const int64_t row = bh * p.Tq + i;
    const float inv = 1.f / l[r];
#pragma unroll
    for (int t = 0; t < NPL; t++)
      if (lane + 32 * t < Dv) out[row * Dv + lane + 32 * t] = o[r][t] * inv;
    if (lane == 0) lse[row] = m[r] + logf(l[r]);
  }
}

// backward, query side: per query row its softmax statistics (max, sum; written to M, L), D = dO·O (Dd) and
// dq = scale · Σ_j P_ij (dO_i·v_j − D_i) k_j. Same grid as the forward.
template <int NPL>
__global__ void __launch_bounds__(256) bwd_q_warp_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk,
                                                         const float* pv, const float* out, const float* dout, float* M, float* L,
                                                         float* Dd, float* dq) {
  AD_DYNAMIC_SMEM(sm4);
  float* sm = reinterpret_cast<float*>(sm4);
  const int D = (int)p.D, Dv = (int)p.Dv, D4 = pad4(D), Dv4 = pad4(Dv), KS = lane_stride(D), VS = lane_stride(Dv);
  float* Ks = sm;                   // kTile × KS
  float* Vs = Ks + kTile * KS;      // kTile × VS
  float* Qs = Vs + kTile * VS;      // kBlockRows × D4 (scaled)
  float* Gs = Qs + kBlockRows * D4; // kBlockRows × Dv4: dO
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv), S = p.P + p.Tk;
  const int64_t i0 = (int64_t)blockIdx.x * kBlockRows, iw = i0 + w * kRows;
  stage_rows4(p, q, bh, i0, kBlockRows, D, D4, p.scale, Qs, D4);
  stage_rows4(p, dout, bh, i0, kBlockRows, Dv, Dv4, 1.f, Gs, Dv4);
  const float* Qw = Qs + w * kRows * D4;
  const float* Gw = Gs + w * kRows * Dv4;
  float m[kRows], l[kRows], dd[kRows];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    m[r] = -INFINITY;
    l[r] = 0.f;
    const int64_t i = iw + r;
    double a = 0;
    if (i < p.Tq)
      for (int d = lane; d < Dv; d += 32) a += (double)dout[(bh * p.Tq + i) * Dv + d] * out[(bh * p.Tq + i) * Dv + d];
    dd[r] = (float)group_sum<32>(a);
  }
  // pass 1: max and sum of exp over all keys
  for (int64_t j0 = 0; j0 < S; j0 += kTile) {
    __syncthreads();
    stage_keys4(p, k, pk, b, hk, j0, D, D4, Ks, KS);
    __syncthreads();
    const int64_t j = j0 + lane;
    float a[kRows] = {};
    dot_rows<false>(Qw, D4, Ks + lane * KS, D4 / 4, 1.f, a);
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      if (iw + r >= p.Tq) continue;
      float alpha;
      online_step(j < S ? ad_attn::finish_score(p, a[r], b, h, iw + r, j) : -INFINITY, j < S, m[r], l[r], alpha);
    }
  }
  float g[kRows][NPL];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t i = iw + r;
    if (i < p.Tq && lane == 0) {
      M[bh * p.Tq + i] = m[r];
      L[bh * p.Tq + i] = l[r];
      Dd[bh * p.Tq + i] = dd[r];
    }
#pragma unroll
    for (int t = 0; t < NPL; t++) g[r][t] = 0.f;
  }
  // pass 2: dq
  for (int64_t j0 = 0; j0 < S; j0 += kTile) {
    __syncthreads();
    stage_keys4(p, k, pk, b, hk, j0, D, D4, Ks, KS);
    stage_keys4(p, v, pv, b, hk, j0, Dv, Dv4, Vs, VS);
    __syncthreads();
    const int64_t j = j0 + lane;
    const int jn = (int)(S - j0 < kTile ? S - j0 : kTile);
    float a[kRows] = {}, dp[kRows] = {}, ds[kRows];
    dot_rows<false>(Qw, D4, Ks + lane * KS, D4 / 4, 1.f, a);
    dot_rows<false>(Gw, Dv4, Vs + lane * VS, Dv4 / 4, 1.f, dp);
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      ds[r] = 0.f;
      if (j < S && iw + r < p.Tq) {
        const float pij = expf(ad_attn::finish_score(p, a[r], b, h, iw + r, j) - m[r]) / l[r];
        ds[r] = pij * (dp[r] - dd[r]);
      }
    }
    for (int jj = 0; jj < jn; jj++) {
      float kv[NPL];
#pragma unroll
      for (int t = 0; t < NPL; t++) kv[t] = lane + 32 * t < D ? Ks[jj * KS + lane + 32 * t] : 0.f;
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        const float c = p.scale * __shfl_sync(0xffffffffu, ds[r], jj);
#pragma unroll
        for (int t = 0; t < NPL; t++) g[r][t] = fmaf(c, kv[t], g[r][t]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t i = iw + r;
    if (i >= p.Tq) break;
#pragma unroll
    for (int t = 0; t < NPL; t++)
      if (lane + 32 * t < D) dq[(bh * p.Tq + i) * D + lane + 32 * t] = g[r][t];
  }
}

// backward, key side: grid (ceil(S / 32), B·Hkv); warp w owns keys j0 + 4w .. +3 (prefix keys first) and sums over
// the query heads of its group and all queries: dv_j = Σ P_ij dO_i, dk_j = scale · Σ P_ij (dO_i·v_j − D_i) q_i
template <int NPL>
__global__ void __launch_bounds__(256) bwd_kv_warp_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk,
                                                          const float* pv, const float* dout, const float* M, const float* L,
                                                          const float* Dd, float* dk, float* dv, float* dpk, float* dpv) {
  AD_DYNAMIC_SMEM(sm4);
  float* sm = reinterpret_cast<float*>(sm4);
  const int D = (int)p.D, Dv = (int)p.Dv, D4 = pad4(D), Dv4 = pad4(Dv), QS = lane_stride(D), GS = lane_stride(Dv);
  float* Qs = sm;                    // kTile × QS: q of 32 queries (unscaled)
  float* Gs = Qs + kTile * QS;       // kTile × GS: their dO
  float* Kr = Gs + kTile * GS;       // kBlockRows × D4: this block's keys
  float* Vr = Kr + kBlockRows * D4;  // kBlockRows × Dv4
  float* St = Vr + kBlockRows * Dv4; // 3 × kTile: M, L, D of the staged queries
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int64_t S = p.P + p.Tk, G = p.H / p.Hkv, b = blockIdx.y / p.Hkv, hk = blockIdx.y % p.Hkv;
  const int64_t j0 = (int64_t)blockIdx.x * kBlockRows, jw = j0 + w * kRows;  // this warp's first key
  stage_keys4(p, k, pk, b, hk, j0, D, D4, Kr, D4);  // kTile == kBlockRows
  stage_keys4(p, v, pv, b, hk, j0, Dv, Dv4, Vr, Dv4);
  const float* Kw = Kr + w * kRows * D4;
  const float* Vw = Vr + w * kRows * Dv4;
  float gk[kRows][NPL], gv[kRows][NPL];
#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int t = 0; t < NPL; t++) gk[r][t] = gv[r][t] = 0.f;
  for (int64_t h = hk * G; h < (hk + 1) * G; h++) {
    const int64_t bh = b * p.H + h;
    for (int64_t i0 = 0; i0 < p.Tq; i0 += kTile) {
      __syncthreads();
      stage_rows4(p, q, bh, i0, kTile, D, D4, 1.f, Qs, QS);
      stage_rows4(p, dout, bh, i0, kTile, Dv, Dv4, 1.f, Gs, GS);
      stage_row_stats(p, M, L, Dd, bh, i0, kTile, St);
      __syncthreads();
      const int64_t i = i0 + lane;
      const int in = (int)(p.Tq - i0 < kTile ? p.Tq - i0 : kTile);
      float a[kRows] = {}, dp[kRows] = {}, pij[kRows], ds[kRows];
      dot_rows<true>(Kw, D4, Qs + lane * QS, D4 / 4, p.scale, a);  // (scale·q)·k
      dot_rows<false>(Vw, Dv4, Gs + lane * GS, Dv4 / 4, 1.f, dp);
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        pij[r] = ds[r] = 0.f;
        if (i < p.Tq && jw + r < S) {
          pij[r] = expf(ad_attn::finish_score(p, a[r], b, h, i, jw + r) - St[lane]) / St[kTile + lane];
          ds[r] = pij[r] * (dp[r] - St[2 * kTile + lane]);
        }
      }
      for (int ii = 0; ii < in; ii++) {
        float gq[NPL], qq[NPL];
#pragma unroll
        for (int t = 0; t < NPL; t++) {
          const int d = lane + 32 * t;
          gq[t] = d < Dv ? Gs[ii * GS + d] : 0.f;
          qq[t] = d < D ? Qs[ii * QS + d] : 0.f;
        }
#pragma unroll
        for (int r = 0; r < kRows; r++) {
          const float pi = __shfl_sync(0xffffffffu, pij[r], ii), c = p.scale * __shfl_sync(0xffffffffu, ds[r], ii);
#pragma unroll
          for (int t = 0; t < NPL; t++) {
            gv[r][t] = fmaf(pi, gq[t], gv[r][t]);
            gk[r][t] = fmaf(c, qq[t], gk[r][t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t j = jw + r;
    if (j >= S) break;
    float* gkr = j < p.P ? dpk + ((b * p.Hkv + hk) * p.P + j) * D : dk + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * D;
    float* gvr = j < p.P ? dpv + ((b * p.Hkv + hk) * p.P + j) * Dv : dv + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * Dv;
#pragma unroll
    for (int t = 0; t < NPL; t++) {
      const int d = lane + 32 * t;
      if (d < D) gkr[d] = gk[r][t];
      if (d < Dv) gvr[d] = gv[r][t];
    }
  }
}

// dynamic shared memory of each kernel, bytes
inline size_t fwd_smem_bytes(int D, int Dv) { return sizeof(float) * (kTile * lane_stride(D) + kTile * pad4(Dv) + kBlockRows * pad4(D)); }
inline size_t bwd_q_smem_bytes(int D, int Dv) {
  return sizeof(float) * (kTile * (lane_stride(D) + lane_stride(Dv)) + kBlockRows * (pad4(D) + pad4(Dv)));
}
inline size_t bwd_kv_smem_bytes(int D, int Dv) {
  return sizeof(float) * (kTile * (lane_stride(D) + lane_stride(Dv)) + kBlockRows * (pad4(D) + pad4(Dv)) + 3 * kTile);
}

}  // namespace ad_attn_warp
