// attention.h — fused scaled dot-product attention (flash-style: tiles of keys, online softmax), CPU.
// Legend: B = batch, H = query heads, Hkv = key/value heads (H % Hkv == 0, grouped-query attention),
// Tq = query length, Tk = key length, P = prefix length (extra keys/values placed before the keys,
// e.g. prefix tuning), D = head dim of q/k, Dv = head dim of v. Keys seen by query i: prefix j < P always,
// then key j (0-based among the Tk) when !causal or j <= i + (Tk - Tq).
// Masking follows Hugging Face's additive-mask semantics: a masked score becomes the lowest finite float,
// not -inf, so a query whose keys are all masked attends uniformly (no NaN), as `transformers` does.
// Memory: O(B*H*Tq*(D+1)) extra (the log-sum-exp per query); the Tq×(P+Tk) matrix is never materialised.
#pragma once
#include <cstdint>

namespace ad {

struct AttnParams {
  int64_t B, H, Hkv, Tq, Tk, P, D, Dv;
  float scale;
  bool causal;
  // Optional additive mask over (B, H, Tq, P+Tk) given by element strides (0 = broadcast); null = none.
  const float* mask = nullptr;
  int64_t mask_sb = 0, mask_sh = 0, mask_si = 0, mask_sj = 0;
  // Optional key padding mask (B, P+Tk): nonzero = keep. null = none.
  const uint8_t* key_keep = nullptr;
  // Mixed precision (autocast): the tile products round their f32 operands to bf16 and run on AMX tiles with f32
  // accumulation, as torch.autocast computes attention's matmuls in bf16; softmax and masks stay f32. Without AMX
  // (or with bf16 GEMMs forced off it) the f32 kernels run, as without the flag.
  bool mixed = false;
  // Layouts: the query-side tensors (q, out, dout, dq) are (B, H, Tq, ·) contiguous, or with q_bthd (B, Tq, H, ·)
  // contiguous — the head split of a (B, Tq, H·D) projection, seen as (B, H, Tq, D) without a copy; likewise the
  // key-side tensors (k, v, dk, dv) with k_bthd. Prefix keys / values are always (B, Hkv, P, ·) contiguous.
  bool q_bthd = false, k_bthd = false;
  // Dropout on the attention probabilities (training): probability (b, h, i, j) — j counted with the prefix first — is
  // kept, scaled by 1/(1 - dropout), iff ops.dropout keeps element ((b·H + h)·Tq + i)·(P+Tk) + j of the (B, H, Tq, P+Tk)
  // probabilities with the same counter-based stream (seed, offset): the backward regenerates the same mask.
  float dropout = 0.f;
  uint64_t seed = 0, offset = 0;
};

// q: (B,H,Tq,D)  k: (B,Hkv,Tk,D)  v: (B,Hkv,Tk,Dv)  pk: (B,Hkv,P,D)  pv: (B,Hkv,P,Dv) (null when P == 0)
// out: (B,H,Tq,Dv)  lse: (B,H,Tq) log-sum-exp of the scaled, masked scores (saved for backward)
// All f32, contiguous in the layouts p.q_bthd / p.k_bthd name (lse always (B,H,Tq)).
void attention_fwd_cpu(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, float* out, float* lse);

// dout: (B,H,Tq,Dv). Writes (overwrites) dq, dk, dv, dpk, dpv (same shapes as their inputs; dpk/dpv may be
// null when P == 0). Gradients w.r.t. the mask are not produced (masks are constants).
void attention_bwd_cpu(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, const float* out, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv, float* dpk, float* dpv);

struct OpCtx;
struct Tensor;
// Validates attention's operands — q, k, v, optional prefix_k/v, additive mask and bool key-padding mask (absent =
// a Tensor without storage) — naming the op in its errors, and fills p's sizes, scale, causal flag and mask strides
// (not its data pointers). Shared by the CPU op (attention_op.cpp) and the CUDA slot (native/cuda_ops.cpp).
void attention_check(const OpCtx& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pk, const Tensor& pv,
                     const Tensor& mask, const Tensor& keep, AttnParams& p);

}  // namespace ad
