// attention_tiles.cuh — the register-tiled attention kernels (v3) for head sizes <= 64, included by attention.cu.
// Device code only, written against the CUDA built-ins it uses (threadIdx, blockIdx, __syncthreads, __shfl_xor_sync,
// float4, dynamic shared memory through AD_DYNAMIC_SMEM) so that test/cuda/emu/attention_tiles_emu.cpp can run the
// same source on the CPU, a thread per CUDA thread, against attention_math.h's per-row code.
#pragma once
#include "attention_math.h"
#include "attention_device.cuh"

#ifndef AD_DYNAMIC_SMEM
#define AD_DYNAMIC_SMEM(name) extern __shared__ float4 name[]
#endif

namespace ad_attn3 {

// Every product is a 64x64 tile computed by 256 threads, each owning 4x4 outputs (rows ty·4 .., columns tx·4 ..),
// from k-major operands in shared memory read as float4s: three shared-memory wavefronts per 16 FMAs, where the
// warp kernels of attention.cu spend shuffles and broadcasts on every score. Forward: a block takes 64 queries, loops over
// 64-key tiles with the online softmax, S = Q·Kᵀ then O += P·V through a transposed P tile. Backward, query side:
// statistics pass, then S, dP = dO·Vᵀ, dS = P∘(dP − D), dQ += dS·K per key tile. Key side: a block takes 64 keys,
// loops over the group's heads and 64-query tiles: Sᵀ, dPᵀ, then dV += Pᵀ·dO and dK += dSᵀ·(scale·Q). The mask rule
// is attention_math.h's finish_score, the scores the per-row code's Σ (scale·q)·k.
constexpr int kT3 = 64;  // queries per block, keys per tile
constexpr int kL3 = 68;  // row stride of the transposed P / dS tiles (float4-aligned)

// acc[i][j] += Σ_k At[k·lda + ty·4 + i] · Bt[k·ldb + tx·4 + j]
__device__ __forceinline__ void mm_tile(const float* At, int lda, const float* Bt, int ldb, int K, int tx, int ty, float (&acc)[4][4]) {
#pragma unroll 4
  for (int k = 0; k < K; k++) {
    const float4 a = *reinterpret_cast<const float4*>(At + k * lda + ty * 4);
    const float4 b = *reinterpret_cast<const float4*>(Bt + k * ldb + tx * 4);
    const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}
// 64 rows, dim floats each, into dst k-major (dst[d·64 + r], times mul): consecutive threads take consecutive rows,
// so the shared-memory stores never collide. row(r) is the source row or null (zeros).
template <class Row>
__device__ inline void stage_t64(Row row, int dim, float mul, float* dst) {
  const int n4 = (dim + 3) / 4;
  for (int x = threadIdx.x; x < kT3 * n4; x += blockDim.x) {
    const int r = x % kT3, d = (x / kT3) * 4;
    const float* src = row(r);
#pragma unroll
    for (int c = 0; c < 4; c++)
      if (d + c < dim) dst[(d + c) * kT3 + r] = src ? mul * src[d + c] : 0.f;
  }
}
// 64 rows into dst row-major (dst[r·64 + d], zeros past dim)
template <class Row>
__device__ inline void stage_r64(Row row, int dim, float mul, float* dst) {
  for (int x = threadIdx.x; x < kT3 * kT3; x += blockDim.x) {
    const int r = x / kT3, d = x % kT3;
    const float* src = row(r);
    dst[r * kT3 + d] = (src && d < dim) ? mul * src[d] : 0.f;
  }
}
// a 4x4 register tile into a transposed shared tile: dst[(tx·4 + j)·kL3 + ty·4 + i] = v[i][j]
__device__ __forceinline__ void store_t(const float (&v)[4][4], float* dst, int tx, int ty) {
#pragma unroll
  for (int j = 0; j < 4; j++)
    *reinterpret_cast<float4*>(dst + (tx * 4 + j) * kL3 + ty * 4) = make_float4(v[0][j], v[1][j], v[2][j], v[3][j]);
}

// The 4x4 score tile of queries i0 + ty·4 .. and keys j0 + tx·4 .. from the staged (scaled) Qt and Kt, with the mask
// rule applied: −inf past the keys, 0 for rows past Tq (their results are dropped).
__device__ __forceinline__ void score_tile(const ad_attn::Params& p, const float* Qt, const float* Kt, int D, int tx, int ty, int64_t b,
                                           int64_t h, int64_t i0, int64_t j0, float (&s)[4][4]) {
  const int64_t S = p.P + p.Tk;
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) s[i][j] = 0.f;
  mm_tile(Qt, kT3, Kt, kT3, D, tx, ty, s);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t row = i0 + ty * 4 + i;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t key = j0 + tx * 4 + j;
      s[i][j] = key >= S ? -INFINITY : row >= p.Tq ? 0.f : ad_attn::finish_score(p, s[i][j], b, h, row, key);
    }
  }
}
// One online-softmax step over a score tile: each row's running max m and sum l move on, s becomes exp(s − m) and
// alpha the factor by which the row's earlier sums shrink (0 on the first tile).
__device__ __forceinline__ void online_step(float (&s)[4][4], float (&m)[4], float (&l)[4], float (&alpha)[4]) {
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float tmax = -INFINITY;
#pragma unroll
    for (int j = 0; j < 4; j++) tmax = fmaxf(tmax, s[i][j]);
    const float mn = fmaxf(m[i], group_max<16>(tmax));  // finite: the tile has a key, hidden ones score −FLT_MAX
    alpha[i] = expf(m[i] - mn);
    float rs = 0.f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      s[i][j] = expf(s[i][j] - mn);
      rs += s[i][j];
    }
    l[i] = l[i] * alpha[i] + group_sum<16>(rs);
    m[i] = mn;
  }
}

__global__ void __launch_bounds__(256) fwd_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk,
                                                  const float* pv, float* out, float* lse) {
  AD_DYNAMIC_SMEM(sm4);
  float* Qt = reinterpret_cast<float*>(sm4);  // 64 × 64 each
  float* Kt = Qt + kT3 * kT3;
  float* Vs = Kt + kT3 * kT3;
  float* Pt = Vs + kT3 * kT3;                 // 64 × kL3
  const int D = (int)p.D, Dv = (int)p.Dv, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv), S = p.P + p.Tk;
  const int64_t i0 = (int64_t)blockIdx.x * kT3;
  auto qrow = [&](int r) -> const float* { return i0 + r < p.Tq ? q + (bh * p.Tq + i0 + r) * D : nullptr; };
  stage_t64(qrow, D, p.scale, Qt);
  float m[4], l[4], o[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < 4; j++) o[i][j] = 0.f;
  }
  for (int64_t j0 = 0; j0 < S; j0 += kT3) {
    auto krow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, k, pk, b, hk, j0 + r, D) : nullptr; };
    auto vrow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, v, pv, b, hk, j0 + r, Dv) : nullptr; };
    __syncthreads();
    stage_t64(krow, D, 1.f, Kt);
    stage_r64(vrow, Dv, 1.f, Vs);
    __syncthreads();
    float s[4][4], alpha[4];
    score_tile(p, Qt, Kt, D, tx, ty, b, h, i0, j0, s);
    online_step(s, m, l, alpha);  // s: P, unnormalised
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) o[i][j] *= alpha[i];
    store_t(s, Pt, tx, ty);
    __syncthreads();
    mm_tile(Pt, kL3, Vs, kT3, (int)(S - j0 < kT3 ? S - j0 : kT3), tx, ty, o);
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t row = i0 + ty * 4 + i;
    if (row >= p.Tq) break;
    const float inv = 1.f / l[i];
#pragma unroll
    for (int j = 0; j < 4; j++)
      if (tx * 4 + j < Dv) out[(bh * p.Tq + row) * Dv + tx * 4 + j] = o[i][j] * inv;
    if (tx == 0) lse[bh * p.Tq + row] = m[i] + logf(l[i]);
  }
}

__global__ void __launch_bounds__(256) bwd_q_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk,
                                                    const float* pv, const float* out, const float* dout, float* M, float* L,
                                                    float* Dd, float* dq) {
  AD_DYNAMIC_SMEM(sm4);
  float* Qt = reinterpret_cast<float*>(sm4);  // 64 × 64 each: scaled q, dO, k (k-major), v (k-major), k (rows)
  float* Gt = Qt + kT3 * kT3;
  float* Kt = Gt + kT3 * kT3;
  float* Vt = Kt + kT3 * kT3;
  float* Ks = Vt + kT3 * kT3;
  float* Ts = Ks + kT3 * kT3;                 // 64 × kL3: dS transposed
  float* Ds = Ts + kT3 * kL3;                 // 64: D = dO·O of the block's rows
  const int D = (int)p.D, Dv = (int)p.Dv, tx = threadIdx.x % 16, ty = threadIdx.x / 16, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H, hk = h / (p.H / p.Hkv), S = p.P + p.Tk;
  const int64_t i0 = (int64_t)blockIdx.x * kT3;
  auto qrow = [&](int r) -> const float* { return i0 + r < p.Tq ? q + (bh * p.Tq + i0 + r) * D : nullptr; };
  auto grow = [&](int r) -> const float* { return i0 + r < p.Tq ? dout + (bh * p.Tq + i0 + r) * Dv : nullptr; };
  stage_t64(qrow, D, p.scale, Qt);
  stage_t64(grow, Dv, 1.f, Gt);
  for (int rr = w * 8; rr < w * 8 + 8; rr++) {  // 8 warps × 8 rows
    const int64_t i = i0 + rr;
    double a = 0;
    if (i < p.Tq)
      for (int d = lane; d < Dv; d += 32) a += (double)dout[(bh * p.Tq + i) * Dv + d] * out[(bh * p.Tq + i) * Dv + d];
    a = group_sum<32>(a);
    if (lane == 0) Ds[rr] = (float)a;
  }
  __syncthreads();  // Ds (and the staged tiles) visible to all, also when there are no keys
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; i++) m[i] = -INFINITY, l[i] = 0.f;
  // pass 1: max and sum of exp over all keys
  for (int64_t j0 = 0; j0 < S; j0 += kT3) {
    auto krow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, k, pk, b, hk, j0 + r, D) : nullptr; };
    __syncthreads();
    stage_t64(krow, D, 1.f, Kt);
    __syncthreads();
    float s[4][4], alpha[4];
    score_tile(p, Qt, Kt, D, tx, ty, b, h, i0, j0, s);
    online_step(s, m, l, alpha);
  }
  float dd[4], g[4][4] = {};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t row = i0 + ty * 4 + i;
    dd[i] = Ds[ty * 4 + i];  // written before the first barrier of pass 1
    if (row < p.Tq && tx == 0) M[bh * p.Tq + row] = m[i], L[bh * p.Tq + row] = l[i], Dd[bh * p.Tq + row] = dd[i];
  }
  // pass 2: dq
  for (int64_t j0 = 0; j0 < S; j0 += kT3) {
    auto krow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, k, pk, b, hk, j0 + r, D) : nullptr; };
    auto vrow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, v, pv, b, hk, j0 + r, Dv) : nullptr; };
    __syncthreads();
    stage_t64(krow, D, 1.f, Kt);
    stage_t64(vrow, Dv, 1.f, Vt);
    stage_r64(krow, D, 1.f, Ks);
    __syncthreads();
    float s[4][4], dp[4][4] = {};
    score_tile(p, Qt, Kt, D, tx, ty, b, h, i0, j0, s);
    mm_tile(Gt, kT3, Vt, kT3, Dv, tx, ty, dp);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const bool row_ok = i0 + ty * 4 + i < p.Tq;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        // dS = P (dP − D); zero past the keys or the queries
        const bool ok = row_ok && j0 + tx * 4 + j < S;
        s[i][j] = ok ? expf(s[i][j] - m[i]) / l[i] * (dp[i][j] - dd[i]) : 0.f;
      }
    }
    store_t(s, Ts, tx, ty);
    __syncthreads();
    mm_tile(Ts, kL3, Ks, kT3, (int)(S - j0 < kT3 ? S - j0 : kT3), tx, ty, g);
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t row = i0 + ty * 4 + i;
    if (row >= p.Tq) break;
#pragma unroll
    for (int j = 0; j < 4; j++)
      if (tx * 4 + j < D) dq[(bh * p.Tq + row) * D + tx * 4 + j] = p.scale * g[i][j];
  }
}

__global__ void __launch_bounds__(256) bwd_kv_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk,
                                                     const float* pv, const float* dout, const float* M, const float* L,
                                                     const float* Dd, float* dk, float* dv, float* dpk, float* dpv) {
  AD_DYNAMIC_SMEM(sm4);
  float* Kt = reinterpret_cast<float*>(sm4);  // 64 × 64 each: the block's keys and values (k-major)
  float* Vt = Kt + kT3 * kT3;
  float* Qt = Vt + kT3 * kT3;                 // scaled q and dO of 64 queries, k-major and in rows
  float* Gt = Qt + kT3 * kT3;
  float* Qs = Gt + kT3 * kT3;
  float* Gs = Qs + kT3 * kT3;
  float* Pm = Gs + kT3 * kT3;                 // 64 × kL3 each: P and dS, query-major
  float* Tm = Pm + kT3 * kL3;
  float* St = Tm + kT3 * kL3;                 // 3 × 64: M, L, D of the staged queries
  const int D = (int)p.D, Dv = (int)p.Dv, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t S = p.P + p.Tk, G = p.H / p.Hkv, b = blockIdx.y / p.Hkv, hk = blockIdx.y % p.Hkv;
  const int64_t j0 = (int64_t)blockIdx.x * kT3;
  auto krow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, k, pk, b, hk, j0 + r, D) : nullptr; };
  auto vrow = [&](int r) -> const float* { return j0 + r < S ? ad_attn::key_row(p, v, pv, b, hk, j0 + r, Dv) : nullptr; };
  stage_t64(krow, D, 1.f, Kt);
  stage_t64(vrow, Dv, 1.f, Vt);
  float gk[4][4] = {}, gv[4][4] = {};
  for (int64_t h = hk * G; h < (hk + 1) * G; h++) {
    const int64_t bh = b * p.H + h;
    for (int64_t i0 = 0; i0 < p.Tq; i0 += kT3) {
      auto qrow = [&](int r) -> const float* { return i0 + r < p.Tq ? q + (bh * p.Tq + i0 + r) * D : nullptr; };
      auto grow = [&](int r) -> const float* { return i0 + r < p.Tq ? dout + (bh * p.Tq + i0 + r) * Dv : nullptr; };
      __syncthreads();
      stage_t64(qrow, D, p.scale, Qt);
      stage_t64(grow, Dv, 1.f, Gt);
      stage_r64(qrow, D, p.scale, Qs);
      stage_r64(grow, Dv, 1.f, Gs);
      stage_row_stats(p, M, L, Dd, bh, i0, kT3, St);
      __syncthreads();
      float s[4][4] = {}, dp[4][4] = {}, pt[4][4];
      mm_tile(Kt, kT3, Qt, kT3, D, tx, ty, s);    // rows: keys, columns: queries
      mm_tile(Vt, kT3, Gt, kT3, Dv, tx, ty, dp);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int64_t key = j0 + ty * 4 + i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const int c = tx * 4 + j;
          const int64_t qi = i0 + c;
          float pij = 0.f, ds = 0.f;
          if (key < S && qi < p.Tq) {
            pij = expf(ad_attn::finish_score(p, s[i][j], b, h, qi, key) - St[c]) / St[kT3 + c];
            ds = pij * (dp[i][j] - St[2 * kT3 + c]);
          }
          pt[i][j] = pij, s[i][j] = ds;
        }
      }
      store_t(pt, Pm, tx, ty);  // Pm[query·kL3 + key]
      store_t(s, Tm, tx, ty);
      __syncthreads();
      const int qn = (int)(p.Tq - i0 < kT3 ? p.Tq - i0 : kT3);
      mm_tile(Pm, kL3, Gs, kT3, qn, tx, ty, gv);  // dV = Pᵀ·dO
      mm_tile(Tm, kL3, Qs, kT3, qn, tx, ty, gk);  // dK = dSᵀ·(scale·Q)
    }
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t j = j0 + ty * 4 + i;
    if (j >= S) break;
    float* gkr = j < p.P ? dpk + ((b * p.Hkv + hk) * p.P + j) * D : dk + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * D;
    float* gvr = j < p.P ? dpv + ((b * p.Hkv + hk) * p.P + j) * Dv : dv + ((b * p.Hkv + hk) * p.Tk + (j - p.P)) * Dv;
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int d = tx * 4 + c;
      if (d < D) gkr[d] = gk[i][c];
      if (d < Dv) gvr[d] = gv[i][c];
    }
  }
}

inline size_t fwd_smem_bytes() { return sizeof(float) * (3 * kT3 * kT3 + kT3 * kL3); }
inline size_t bwd_q_smem_bytes() { return sizeof(float) * (5 * kT3 * kT3 + kT3 * kL3 + kT3); }
inline size_t bwd_kv_smem_bytes() { return sizeof(float) * (6 * kT3 * kT3 + 2 * kT3 * kL3 + 3 * kT3); }

}  // namespace ad_attn3
