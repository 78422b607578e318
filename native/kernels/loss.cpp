// loss.cpp — cross-entropy over logits (N, C) with integer targets (N): ignore_index, label smoothing,
// reduction mean | sum | none, forward (saving the per-row log-sum-exp) then backward.
//   loss_i = (1-ε)·(lse_i − x_i[y_i]) + ε·(lse_i − mean_c x_i[c])     (0 for ignored rows)
//   mean divides by the number of non-ignored rows (NaN when there are none, as in PyTorch)
//   dlogits_i = w_i · (softmax(x_i) − (1−ε)·onehot(y_i) − ε/C)
// https://pytorch.org/docs/stable/generated/torch.nn.functional.cross_entropy.html
#include <cmath>

#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {
struct CE {
  Tensor x, t;
  int64_t N, C, ignore;
  float eps;
  std::string red;
};
CE parse(OpCtx& c) {
  c.expect_inputs(2);
  CE r;
  r.x = c.f32(0);
  const Tensor& t0 = c.input(1);
  if (t0.dtype != DType::I64 && t0.dtype != DType::I32)
    c.fail("DTypeError", "targets must be integer class indices (i64), got " + std::string(dtype_name(t0.dtype)));
  r.t = contiguous(cast(t0, DType::I64));
  if (r.x.dim() != 2) c.fail("ShapeError", "logits must be (N, C), got " + shape_str(r.x.shape));
  r.N = r.x.shape[0];
  r.C = r.x.shape[1];
  if (r.t.dim() != 1 || r.t.shape[0] != r.N)
    c.fail("ShapeError", "targets " + shape_str(r.t.shape) + " must be [" + std::to_string(r.N) + "] for logits " + shape_str(r.x.shape));
  r.ignore = c.i("ignore_index", -100);
  r.eps = (float)c.f("label_smoothing", 0.0);
  if (r.eps < 0 || r.eps > 1) c.fail("ValueError", "label_smoothing must be in [0, 1], got " + std::to_string(r.eps));
  r.red = c.s("reduction", "mean");
  if (r.red != "mean" && r.red != "sum" && r.red != "none") c.fail("ValueError", "reduction must be mean, sum or none, got '" + r.red + "'");
  const int64_t* T = r.t.data<int64_t>();
  for (int64_t i = 0; i < r.N; i++)
    if (T[i] != r.ignore && (T[i] < 0 || T[i] >= r.C))
      c.fail("IndexError", "target " + std::to_string(T[i]) + " at row " + std::to_string(i) + " is out of range [0, " + std::to_string(r.C) + ")");
  return r;
}
}  // namespace

// cross_entropy(logits, targets) {ignore_index, label_smoothing, reduction} -> loss, lse (N)
void op_cross_entropy(OpCtx& c) {
  CE r = parse(c);
  Tensor lse = Tensor::empty({r.N}, DType::F32);
  Tensor rows = Tensor::empty({r.N}, DType::F32);
  const float* X = r.x.data<float>();
  const int64_t* T = r.t.data<int64_t>();
  float *L = lse.data<float>(), *RL = rows.data<float>();
  parallel_for(r.N, std::max<int64_t>(1, 4096 / std::max<int64_t>(r.C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const float* x = X + i * r.C;
      float m = -INFINITY;
      for (int64_t k = 0; k < r.C; k++) m = std::max(m, x[k]);
      double s = 0, sx = 0;
      for (int64_t k = 0; k < r.C; k++) { s += std::exp((double)x[k] - m); sx += x[k]; }
      double l = m + std::log(s);
      L[i] = (float)l;
      if (T[i] == r.ignore) { RL[i] = 0.f; continue; }
      // (the smoothing term only when ε > 0: a −inf logit makes sx −inf, and 0·inf would turn the loss into NaN)
      RL[i] = (float)((1.0 - r.eps) * (l - x[T[i]]) + (r.eps > 0 ? r.eps * (l - sx / r.C) : 0.0));
    }
  });
  if (r.red == "none") {
    c.out.push_back(rows);
  } else {
    double tot = 0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < r.N; i++) {
      tot += RL[i];
      if (T[i] != r.ignore) cnt++;
    }
    Tensor loss = Tensor::empty({}, DType::F32);
    loss.data<float>()[0] = (float)(r.red == "sum" ? tot : tot / (double)cnt);
    c.out.push_back(loss);
  }
  c.out.push_back(lse);
}

// cross_entropy_bwd(logits, targets, lse, gout) {same attrs} -> dlogits
void op_cross_entropy_bwd(OpCtx& c) {
  CE r = parse(c);
  Tensor lse = c.f32(2), g = c.f32(3);
  const float *X = r.x.data<float>(), *L = lse.data<float>(), *G = g.data<float>();
  const int64_t* T = r.t.data<int64_t>();
  int64_t cnt = 0;
  for (int64_t i = 0; i < r.N; i++) cnt += T[i] != r.ignore;
  if (r.red == "none" && g.numel() != r.N) c.fail("ShapeError", "grad must have " + std::to_string(r.N) + " elements");
  Tensor dx = Tensor::empty(r.x.shape, DType::F32);
  float* D = dx.data<float>();
  float off = r.eps / (float)r.C;
  parallel_for(r.N, std::max<int64_t>(1, 4096 / std::max<int64_t>(r.C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float* d = D + i * r.C;
      if (T[i] == r.ignore) { for (int64_t k = 0; k < r.C; k++) d[k] = 0.f; continue; }
      float w = r.red == "none" ? G[i] : (r.red == "sum" ? G[0] : G[0] / (float)cnt);
      const float* x = X + i * r.C;
      for (int64_t k = 0; k < r.C; k++) d[k] = w * (std::exp(x[k] - L[i]) - off);
      d[T[i]] -= w * (1.f - r.eps);
    }
  });
  c.out.push_back(dx);
}

}  // namespace ad
