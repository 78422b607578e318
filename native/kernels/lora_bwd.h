// lora_bwd.h — one block of rows of LoRA's rank-r backward, shared by lora_linear_bwd (adapters.cpp, one adapter)
// and lora_sgmv_bwd (multi_lora.cpp, one adapter per row segment). With g (rows, O), x (rows, K), t = x·Aᵀ
// (rows, r) of the block, A (r, K), B (O, r) and the scale s:
//   gt = s·g·B (rows, r, row stride ldgt: scratch), gx = gt·A (gx_beta 0) or gx += gt·A (gx_beta 1),
//   dA += gtᵀ·x (r, K), dBᵀ += s·tᵀ·g (r, O); each output skipped when its pointer is null.
// The block's g, x and t are read while in cache; the sgemm calls run inline inside a pool task.
#pragma once
#include <cstdint>

#include "gemm.h"

namespace ad {

inline void lora_rows_bwd(int64_t rows, int64_t K, int64_t O, int64_t r, float s, const float* g, const float* x, const float* t,
                          int64_t ldt, const float* A, const float* B, float* gt, int64_t ldgt, float* gx, float gx_beta, float* dA,
                          float* dBt) {
  if (gx || dA) sgemm(false, false, rows, r, O, s, g, O, B, r, 0.f, gt, ldgt);   // gt = s·g·B
  if (gx) sgemm(false, false, rows, K, r, 1.f, gt, ldgt, A, K, gx_beta, gx, K);   // gx (+)= gt·A
  if (dA) sgemm(true, false, r, K, rows, 1.f, gt, ldgt, x, K, 1.f, dA, K);        // dA += gtᵀ·x
  if (dBt) sgemm(true, false, r, O, rows, s, t, ldt, g, O, 1.f, dBt, O);          // dBᵀ += s·tᵀ·g
}

}  // namespace ad
