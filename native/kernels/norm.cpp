// norm.cpp — layer norm and RMS norm over the last dim, forward (saving mean/rstd) then backward.
// Legend: x (N, C) after flattening leading dims; weight/bias (C).
// layer_norm: y = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)  (biased variance)
// rms_norm:   y = x * rstd * w,               rstd = 1/sqrt(mean(x²) + eps)   (LLaMA / T5)
// Backward (per row, xhat = (x-mean)*rstd):
//   dxhat = g * w;  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   [layer norm]
//   dx = rstd * (dxhat - xhat * mean(dxhat * xhat))                                  [rms, xhat = x*rstd]
//   dw += sum_rows(g * xhat);  db += sum_rows(g)   (reduced over rows in f64 per thread, then summed)
// The per-row code is shared with the CUDA kernels (cuda/rows_math.h); here it runs inside row-range functions
// compiled for AVX-512 / AVX2 / baseline and picked at load time.
// https://pytorch.org/docs/stable/generated/torch.nn.LayerNorm.html, https://arxiv.org/abs/1910.07467
#include <cmath>

#include "../op.h"
#include "../threadpool.h"
#include "../../cuda/rows_math.h"

namespace ad {
namespace {

void check_param(const OpCtx& c, size_t k, int64_t C, const char* what) {
  if (!c.has(k)) return;
  const Tensor& w = c.input(k);
  if (w.dim() != 1 || w.shape[0] != C)
    c.fail("ShapeError", std::string(what) + " must have shape [" + std::to_string(C) + "], got " + shape_str(w.shape));
}

AD_CLONES void norm_fwd_rows(int64_t r0, int64_t r1, int64_t C, const float* X, const float* W, const float* B, float eps,
                             bool rms, float* Y, float* M, float* R) {
  for (int64_t r = r0; r < r1; r++) ad_rows::norm_fwd(r, C, X, W, B, eps, rms, Y, M, R);
}

// dx of rows [r0, r1), and their contributions to dw / db (double, added to dw / db: C each, or null)
AD_CLONES void norm_bwd_rows(int64_t r0, int64_t r1, int64_t C, const float* X, const float* W, const float* M,
                             const float* R, const float* G, bool rms, float* DX, double* dw, double* db) {
  for (int64_t r = r0; r < r1; r++) {
    ad_rows::norm_bwd_dx(r, C, X, W, M, R, G, rms, DX);
    const float *xr = X + r * C, *gr = G + r * C;
    const float m = rms ? 0.f : M[r], rs = R[r];
    if (dw)
      for (int64_t k = 0; k < C; k++) dw[k] += (double)gr[k] * ((xr[k] - m) * rs);
    if (db)
      for (int64_t k = 0; k < C; k++) db[k] += gr[k];
  }
}

void norm_fwd(OpCtx& c, bool rms) {
  c.expect_inputs(1);
  Tensor x = c.f32(0);
  if (x.dim() == 0) c.fail("ShapeError", "input must have at least one dimension");
  int64_t C = x.shape.back(), N = C ? x.numel() / C : 0;
  check_param(c, 1, C, "weight");
  if (!rms) check_param(c, 2, C, "bias");
  Tensor w = c.has(1) ? c.f32(1) : Tensor(), b = (!rms && c.has(2)) ? c.f32(2) : Tensor();
  float eps = (float)c.f("eps", 1e-5);
  Tensor y = Tensor::empty(x.shape, DType::F32);
  std::vector<int64_t> st(x.shape.begin(), x.shape.end() - 1);
  Tensor mean = Tensor::empty(st, DType::F32), rstd = Tensor::empty(st, DType::F32);
  const float* X = x.data<float>();
  const float* W = c.has(1) ? w.data<float>() : nullptr;
  const float* B = b.st ? b.data<float>() : nullptr;
  float *Y = y.data<float>(), *M = mean.data<float>(), *R = rstd.data<float>();
  parallel_for(N, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
    norm_fwd_rows(r0, r1, C, X, W, B, eps, rms, Y, M, R);
  });
  c.out.push_back(y);
  c.out.push_back(mean);
  c.out.push_back(rstd);
}

// inputs: x, weight?, mean, rstd, gout  -> dx, dweight (if weight), dbias (layer norm, if has_bias)
void norm_bwd(OpCtx& c, bool rms) {
  Tensor x = c.f32(0);
  int64_t C = x.shape.back(), N = C ? x.numel() / C : 0;
  bool hw = c.has(1);
  check_param(c, 1, C, "weight");
  Tensor w = hw ? c.f32(1) : Tensor();
  Tensor mean = c.f32(2), rstd = c.f32(3), g = c.f32(4);
  if (g.shape != x.shape) c.fail("ShapeError", "grad " + shape_str(g.shape) + " vs input " + shape_str(x.shape));
  bool has_bias = c.b("has_bias", !rms);
  // need_dw / need_db = 0: a frozen weight / bias (adapter training) — its column sums are skipped and zeros returned
  // in its place (the outputs keep their positions)
  const bool need_w = hw && c.b("need_dw", true), need_b = has_bias && c.b("need_db", true);
  Tensor dx = Tensor::empty(x.shape, DType::F32);
  const float *X = x.data<float>(), *W = hw ? w.data<float>() : nullptr, *M = mean.data<float>(),
              *R = rstd.data<float>(), *G = g.data<float>();
  float* DX = dx.data<float>();
  std::vector<double> dw_acc(need_w ? C : 0, 0.0), db_acc(need_b ? C : 0, 0.0);
  // column sums per chunk of rows, added up in chunk order (the same result whichever thread ran which chunk)
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1));
  const int64_t nch = for_chunks(N, grain);
  std::vector<std::vector<double>> pw(need_w ? nch : 0), pb(need_b ? nch : 0);
  parallel_for_indexed(N, grain, [&](int64_t ch, int64_t r0, int64_t r1) {
    if (need_w) pw[ch].assign(C, 0.0);
    if (need_b) pb[ch].assign(C, 0.0);
    norm_bwd_rows(r0, r1, C, X, W, M, R, G, rms, DX, need_w ? pw[ch].data() : nullptr, need_b ? pb[ch].data() : nullptr);
  });
  for (const auto& p : pw)
    for (int64_t k = 0; k < C; k++) dw_acc[k] += p[k];
  for (const auto& p : pb)
    for (int64_t k = 0; k < C; k++) db_acc[k] += p[k];
  c.out.push_back(dx);
  if (hw) {
    Tensor dw = Tensor::empty({C}, DType::F32);
    for (int64_t k = 0; k < C; k++) dw.data<float>()[k] = need_w ? (float)dw_acc[k] : 0.f;
    c.out.push_back(dw);
  }
  if (has_bias) {
    Tensor db = Tensor::empty({C}, DType::F32);
    for (int64_t k = 0; k < C; k++) db.data<float>()[k] = need_b ? (float)db_acc[k] : 0.f;
    c.out.push_back(db);
  }
}

}  // namespace

// layer_norm(x, weight?, bias?) {eps} -> y, mean, rstd
void op_layer_norm(OpCtx& c) { norm_fwd(c, false); }
// layer_norm_bwd(x, weight?, mean, rstd, gout) {has_bias, need_dw, need_db} -> dx, [dweight], [dbias]
void op_layer_norm_bwd(OpCtx& c) { norm_bwd(c, false); }
// rms_norm(x, weight?) {eps} -> y, mean (zeros, unused), rstd
void op_rms_norm(OpCtx& c) { norm_fwd(c, true); }
// rms_norm_bwd(x, weight?, mean, rstd, gout) -> dx, [dweight]
void op_rms_norm_bwd(OpCtx& c) { norm_bwd(c, true); }

}  // namespace ad
