// attention.cu — scaled dot-product attention, forward and backward, f32, with the CPU kernel's masking semantics
// (additive mask, causal, key padding, prefix keys/values, grouped-query heads).
// Head sizes up to 64 run the register-tiled kernels of attention_tiles.cuh (64x64 products). Up to 128, the warp
// kernels of attention_warp.cuh: a block stages 32 keys (forward, dq) or 32 queries (dk, dv) at a time in shared memory; each warp
// owns rows, a lane takes one key (or query) of the tile for the dot products and one to four feature columns for the
// accumulations. Both keep an online (running max) softmax in the forward, memory linear in the sequence length. The
// mask / causal / padding rule is attention_math.h's finish_score, as on the CPU. Larger heads run the per-row code
// of attention_math.h (one thread per row), which the host-side mock also runs.
// Where every head's score matrix fits a workspace (at most 1024 keys: BERT-size training), attention runs through
// batched products instead (attention_gemm.h) with the two warp-per-row kernels below: f32 GEMMs at the f32 matmul
// precision (FFMA by default, 3xTF32 at 'high'), 1xTF32 tensor-core products under autocast.
#include <cstdlib>
#include <cstring>

#include "adapters_cuda.h"
#include "attention_gemm.h"
#include "attention_math.h"
#include "attention_tiles.cuh"
#include "attention_warp.cuh"
#include "common.cuh"

namespace {

constexpr int kThreads = 64;
int blocks_for(int64_t n) { return ad_cuda::grid_for(n, kThreads); }
#define AD_FOR AD_GRID_FOR

__global__ void fwd_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk, const float* pv,
                           float* out, float* lse) {
  AD_FOR(r, p.B * p.H * p.Tq) ad_attn::fwd_row(p, r, q, k, v, pk, pv, out, lse);
}
__global__ void stats_kernel(ad_attn::Params p, const float* q, const float* k, const float* pk, const float* out, const float* dout,
                             float* M, float* L, float* Dd) {
  AD_FOR(r, p.B * p.H * p.Tq) ad_attn::bwd_stats(p, r, q, k, pk, out, dout, M, L, Dd);
}
__global__ void dq_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk, const float* pv,
                          const float* dout, const float* M, const float* L, const float* Dd, float* dq) {
  AD_FOR(r, p.B * p.H * p.Tq) ad_attn::dq_row(p, r, q, k, v, pk, pv, dout, M, L, Dd, dq);
}
__global__ void dkv_kernel(ad_attn::Params p, const float* q, const float* k, const float* v, const float* pk, const float* pv,
                           const float* dout, const float* M, const float* L, const float* Dd, float* dk, float* dv, float* dpk,
                           float* dpv) {
  AD_FOR(c, p.B * p.Hkv * (p.P + p.Tk)) ad_attn::dkv_row(p, c, q, k, v, pk, pv, dout, M, L, Dd, dk, dv, dpk, dpv);
}

using namespace ad_attn_warp;

// ADAPTERS_CUDA_ATTN (comparisons): unset, products where attention_gemm.h's eligible() allows, else the fused kernels;
// 1 the fused kernels always (v3 tiles for heads <= 64, warp kernels above); 2 the warp kernels for heads <= 64 too.
int attn_mode() {
  static const int v = [] {
    const char* e = std::getenv("ADAPTERS_CUDA_ATTN");
    return e && (e[0] == '1' || e[0] == '2') && !e[1] ? e[0] - '0' : 0;
  }();
  return v;
}
bool force_warp() { return attn_mode() == 2; }
bool use_products(const ad_attn::Params& p) { return attn_mode() == 0 && ad_attn_gemm::eligible(p); }

// ---- attention through products: the row kernels (a warp per query row; attention_gemm.h's softmax_row / ds_row)
constexpr int kRowWarps = 8;
__global__ void __launch_bounds__(kRowWarps * 32) softmax_rows_kernel(ad_attn::Params p, ad_attn_gemm::Layout l, float* S, float* lse) {
  const int64_t r = blockIdx.x * (int64_t)kRowWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= l.rows) return;
  const int64_t i = r % p.Tq, h = (r / p.Tq) % p.H, b = r / (p.Tq * p.H);
  float* row = S + r * l.LS;
  float m = -INFINITY;
  for (int64_t j = lane; j < l.NS; j += 32) {
    float& s = row[ad_attn_gemm::key_col(p, l, j)];
    s = ad_attn::finish_score(p, s, b, h, i, j);
    m = fmaxf(m, s);
  }
  m = group_max<32>(m);
  float sum = 0.f;
  for (int64_t j = lane; j < l.NS; j += 32) sum += expf(row[ad_attn_gemm::key_col(p, l, j)] - m);
  sum = group_sum<32>(sum);
  const float inv = 1.f / sum;
  for (int64_t j = lane; j < l.NS; j += 32) {
    float& s = row[ad_attn_gemm::key_col(p, l, j)];
    s = expf(s - m) * inv;
  }
  if (lse && lane == 0) lse[r] = m + logf(sum);
}
__global__ void __launch_bounds__(kRowWarps * 32) ds_rows_kernel(ad_attn::Params p, ad_attn_gemm::Layout l, const float* P, float* dP,
                                                                 const float* out, const float* dout) {
  const int64_t r = blockIdx.x * (int64_t)kRowWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= l.rows) return;
  float dd = 0.f;
  for (int64_t d = lane; d < p.Dv; d += 32) dd += dout[r * p.Dv + d] * out[r * p.Dv + d];
  dd = group_sum<32>(dd);
  for (int64_t j = lane; j < l.NS; j += 32) {
    const int64_t c = r * l.LS + ad_attn_gemm::key_col(p, l, j);
    dP[c] = P[c] * (dP[c] - dd);
  }
}
// attention_gemm.h's operations on the GPU
struct GpuOps {
  cudaStream_t s;
  int tf32;  // autocast: 1xTF32 products
  int gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, int64_t sa, const float* B, int64_t ldb,
           int64_t sb, float beta, float* C, int64_t ldc, int64_t sc, int64_t batch) {
    return adapters_cuda_gemm_f32_batched(ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, tf32, s);
  }
  unsigned blocks(const ad_attn_gemm::Layout& l) const { return (unsigned)ad_cuda::ceil_div(l.rows, kRowWarps); }
  int softmax_rows(const ad_attn::Params& p, const ad_attn_gemm::Layout& l, float* S, float* lse) {
    softmax_rows_kernel<<<blocks(l), kRowWarps * 32, 0, s>>>(p, l, S, lse);
    AD_CUDA_CHECK_LAUNCH();
    return 0;
  }
  int ds_rows(const ad_attn::Params& p, const ad_attn_gemm::Layout& l, const float* P, float* dP, const float* out, const float* dout) {
    ds_rows_kernel<<<blocks(l), kRowWarps * 32, 0, s>>>(p, l, P, dP, out, dout);
    AD_CUDA_CHECK_LAUNCH();
    return 0;
  }
  // scratch from the caching allocator (returned stream-ordered)
  int alloc(float** ws, int64_t n) {
    void* p = nullptr;
    const int rc = adapters_cuda_malloc(&p, (size_t)n * sizeof(float));
    if (rc == (int)cudaErrorMemoryAllocation) (void)cudaGetLastError();
    *ws = static_cast<float*>(p);
    return rc == (int)cudaErrorMemoryAllocation ? ad_attn_gemm::kNoWorkspace : rc;
  }
  int release(float* ws) { return adapters_cuda_free(ws); }
};

// Which warp kernel instantiation fits the head sizes (0: none, use the per-row kernels).
int warp_npl(const ad_attn::Params& p) {
  const int64_t m = p.D > p.Dv ? p.D : p.Dv;
  if (p.D < 1 || p.Dv < 1 || m > 128 || p.B * p.H > 65535) return 0;
  return m <= 32 ? 1 : m <= 64 ? 2 : 4;
}

bool use_v3(const ad_attn::Params& p) { return !force_warp() && warp_npl(p) > 0 && p.D <= 64 && p.Dv <= 64; }

// Launches kernel with `bytes` of dynamic shared memory, raising the kernel's limit when above the default 48 KiB.
template <typename K, typename... A>
int launch(K kernel, dim3 grid, size_t bytes, cudaStream_t s, A... args) {
  if (bytes > 48 * 1024) AD_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  kernel<<<grid, kWarps * 32, bytes, s>>>(args...);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

template <int NPL>
int attention_fwd_warp(const ad_attn::Params& p, const float* q, const float* k, const float* v, const float* pk, const float* pv, float* out,
                       float* lse, cudaStream_t s) {
  const dim3 grid((unsigned)ad_cuda::ceil_div(p.Tq, kBlockRows), (unsigned)(p.B * p.H));
  return launch(fwd_warp_kernel<NPL>, grid, fwd_smem_bytes((int)p.D, (int)p.Dv), s, p, q, k, v, pk, pv, out, lse);
}
template <int NPL>
int attention_bwd_warp(const ad_attn::Params& p, const float* q, const float* k, const float* v, const float* pk, const float* pv, const float* out,
                       const float* dout, float* M, float* L, float* Dd, float* dq, float* dk, float* dv, float* dpk, float* dpv,
                       cudaStream_t s) {
  const dim3 gq((unsigned)ad_cuda::ceil_div(p.Tq, kBlockRows), (unsigned)(p.B * p.H));
  const dim3 gk((unsigned)ad_cuda::ceil_div(p.P + p.Tk, kBlockRows), (unsigned)(p.B * p.Hkv));
  int rc = launch(bwd_q_warp_kernel<NPL>, gq, bwd_q_smem_bytes((int)p.D, (int)p.Dv), s, p, q, k, v, pk, pv, out, dout, M, L, Dd, dq);
  if (rc || p.P + p.Tk == 0) return rc;
  return launch(bwd_kv_warp_kernel<NPL>, gk, bwd_kv_smem_bytes((int)p.D, (int)p.Dv), s, p, q, k, v, pk, pv, dout, M, L, Dd, dk, dv, dpk, dpv);
}

bool to_params(const adapters_cuda_attn* a, ad_attn::Params* p) {
  if (!a || a->B < 0 || a->H < 1 || a->Hkv < 1 || a->H % a->Hkv || a->Tq < 0 || a->Tk < 0 || a->P < 0 || a->D < 0 || a->Dv < 0) return false;
  *p = ad_attn::Params{a->B, a->H, a->Hkv, a->Tq, a->Tk, a->P, a->D, a->Dv, a->scale, a->causal, a->mask,
                       a->mask_sb, a->mask_sh, a->mask_si, a->mask_sj, a->key_keep};
  return true;
}

}  // namespace

extern "C" {

int adapters_cuda_attention_f32(const adapters_cuda_attn* a, const float* q, const float* k, const float* v, const float* pk,
                                const float* pv, float* out, float* lse, void* stream) {
  ad_attn::Params p;
  if (!to_params(a, &p)) return (int)cudaErrorInvalidValue;
  const int64_t rows = p.B * p.H * p.Tq;
  if (rows == 0) return 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (use_products(p)) {
    GpuOps ops{s, a->mixed};
    const int rc = ad_attn_gemm::with_workspace(ops, ad_attn_gemm::workspace_floats(p),
                                                [&](float* S) { return ad_attn_gemm::forward(ops, p, q, k, v, pk, pv, out, lse, S); });
    if (rc != ad_attn_gemm::kNoWorkspace) return rc;  // else the fused kernels, which need no workspace
  }
  if (use_v3(p)) {
    const dim3 grid((unsigned)ad_cuda::ceil_div(p.Tq, ad_attn3::kT3), (unsigned)(p.B * p.H));
    return launch(ad_attn3::fwd_kernel, grid, ad_attn3::fwd_smem_bytes(), s, p, q, k, v, pk, pv, out, lse);
  }
  switch (warp_npl(p)) {
    case 1: return attention_fwd_warp<1>(p, q, k, v, pk, pv, out, lse, s);
    case 2: return attention_fwd_warp<2>(p, q, k, v, pk, pv, out, lse, s);
    case 4: return attention_fwd_warp<4>(p, q, k, v, pk, pv, out, lse, s);
    default: break;
  }
  fwd_kernel<<<blocks_for(rows), kThreads, 0, s>>>(p, q, k, v, pk, pv, out, lse);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_attention_backward_f32(const adapters_cuda_attn* a, const float* q, const float* k, const float* v, const float* pk,
                                         const float* pv, const float* out, const float* dout, float* dq, float* dk, float* dv,
                                         float* dpk, float* dpv, void* stream) {
  ad_attn::Params p;
  if (!to_params(a, &p)) return (int)cudaErrorInvalidValue;
  const int64_t rows = p.B * p.H * p.Tq, keys = p.B * p.Hkv * (p.P + p.Tk);
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (rows > 0 && use_products(p)) {
    GpuOps ops{s, a->mixed};
    const int64_t n = ad_attn_gemm::workspace_floats(p);
    const int rc = ad_attn_gemm::with_workspace(ops, 2 * n, [&](float* S) {
      return ad_attn_gemm::backward(ops, p, q, k, v, pk, pv, out, dout, dq, dk, dv, dpk, dpv, S, S + n);
    });
    if (rc != ad_attn_gemm::kNoWorkspace) return rc;
  }
  void* scratch = nullptr;
  if (rows > 0) {
    const int arc = adapters_cuda_malloc(&scratch, (size_t)rows * 3 * sizeof(float));  // max, sum, D per query row
    if (arc) return arc;
    float *M = static_cast<float*>(scratch), *L = M + rows, *Dd = L + rows;
    int rc = -1;
    if (use_v3(p)) {
      const dim3 gq((unsigned)ad_cuda::ceil_div(p.Tq, ad_attn3::kT3), (unsigned)(p.B * p.H));
      rc = launch(ad_attn3::bwd_q_kernel, gq, ad_attn3::bwd_q_smem_bytes(), s, p, q, k, v, pk, pv, out, dout, M, L, Dd, dq);
      if (!rc && keys > 0) {
        const dim3 gk((unsigned)ad_cuda::ceil_div(p.P + p.Tk, ad_attn3::kT3), (unsigned)(p.B * p.Hkv));
        rc = launch(ad_attn3::bwd_kv_kernel, gk, ad_attn3::bwd_kv_smem_bytes(), s, p, q, k, v, pk, pv, dout, M, L, Dd, dk,
                    dv, dpk, dpv);
      }
    } else switch (warp_npl(p)) {
      case 1: rc = attention_bwd_warp<1>(p, q, k, v, pk, pv, out, dout, M, L, Dd, dq, dk, dv, dpk, dpv, s); break;
      case 2: rc = attention_bwd_warp<2>(p, q, k, v, pk, pv, out, dout, M, L, Dd, dq, dk, dv, dpk, dpv, s); break;
      case 4: rc = attention_bwd_warp<4>(p, q, k, v, pk, pv, out, dout, M, L, Dd, dq, dk, dv, dpk, dpv, s); break;
      default: break;
    }
    if (rc >= 0) {
      const int frc = adapters_cuda_free(scratch);
      return rc ? rc : frc;
    }
    stats_kernel<<<blocks_for(rows), kThreads, 0, s>>>(p, q, k, pk, out, dout, M, L, Dd);
    AD_CUDA_CHECK_LAUNCH();
    dq_kernel<<<blocks_for(rows), kThreads, 0, s>>>(p, q, k, v, pk, pv, dout, M, L, Dd, dq);
    AD_CUDA_CHECK_LAUNCH();
    if (keys > 0) {
      dkv_kernel<<<blocks_for(keys), kThreads, 0, s>>>(p, q, k, v, pk, pv, dout, M, L, Dd, dk, dv, dpk, dpv);
      AD_CUDA_CHECK_LAUNCH();
    }
    return adapters_cuda_free(scratch);  // stream-ordered reuse (memory.cu's contract)
  }
  // no queries: the key gradients are zero
  if (keys > 0) {
    const size_t nk = (size_t)p.B * p.Hkv, sk = (size_t)p.Tk, sp = (size_t)p.P;
    AD_CUDA_TRY(cudaMemsetAsync(dk, 0, nk * sk * p.D * sizeof(float), s));
    AD_CUDA_TRY(cudaMemsetAsync(dv, 0, nk * sk * p.Dv * sizeof(float), s));
    if (sp) {
      AD_CUDA_TRY(cudaMemsetAsync(dpk, 0, nk * sp * p.D * sizeof(float), s));
      AD_CUDA_TRY(cudaMemsetAsync(dpv, 0, nk * sp * p.Dv * sizeof(float), s));
    }
  }
  return 0;
}

}  // extern "C"
