// attention.cu — scaled dot-product attention, forward and backward, f32, with the CPU kernel's masking semantics
// (additive mask, causal, key padding, prefix keys/values, grouped-query heads). One thread per query row (forward,
// statistics, dq) or key row (dk, dv) running attention_math.h, which the host-side mock shares to test it without a
// GPU. Correctness first: tiled flash kernels on tensor cores replace these once measured (cuda/NOTES.md).
#include "adapters_cuda.h"
#include "attention_math.h"
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
  fwd_kernel<<<blocks_for(rows), kThreads, 0, ad_cuda::as_stream(stream)>>>(p, q, k, v, pk, pv, out, lse);
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
  void* scratch = nullptr;
  if (rows > 0) {
    const int rc = adapters_cuda_malloc(&scratch, (size_t)rows * 3 * sizeof(float));  // max, sum, D per query row
    if (rc) return rc;
    float *M = static_cast<float*>(scratch), *L = M + rows, *Dd = L + rows;
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
