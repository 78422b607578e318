// softmax.cpp — softmax and log-softmax over any axis (stable: max subtracted), forward then backward.
// x is viewed as (O, R, I) with R the softmax axis. Backward:
//   softmax:     gin = y * (g - sum_r(g * y))
//   log_softmax: gin = g - exp(y) * sum_r(g)
// https://pytorch.org/docs/stable/generated/torch.nn.functional.softmax.html
#include <cmath>

#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {

struct Geo { int64_t O, R, I; };
Geo geo(const OpCtx& c, const Tensor& x, int64_t dim) {
  int64_t d = norm_axis(c, dim, x.dim());
  Geo g{1, 1, 1};
  if (x.dim() == 0) return g;
  for (int64_t k = 0; k < d; k++) g.O *= x.shape[k];
  g.R = x.shape[d];
  for (int64_t k = d + 1; k < x.dim(); k++) g.I *= x.shape[k];
  return g;
}

AD_CLONES void softmax_row(const float* x, float* y, int64_t R, bool log) {
  float m = -INFINITY;
  for (int64_t k = 0; k < R; k++) m = x[k] > m ? x[k] : m;
  if (m == -INFINITY) m = 0;  // all -inf: let exp produce NaN/0 like torch (0/0)
  double s = 0;
  if (log) {
    for (int64_t k = 0; k < R; k++) s += std::exp(x[k] - m);
    float lse = m + (float)std::log(s);
    for (int64_t k = 0; k < R; k++) y[k] = x[k] - lse;
  } else {
    for (int64_t k = 0; k < R; k++) { y[k] = std::exp(x[k] - m); s += y[k]; }
    float inv = (float)(1.0 / s);
    for (int64_t k = 0; k < R; k++) y[k] *= inv;
  }
}

void fwd(OpCtx& c, bool log) {
  c.expect_inputs(1);
  Tensor x = c.f32(0);
  Geo g = geo(c, x, c.i("dim", -1));
  Tensor y = Tensor::empty(x.shape, DType::F32);
  const float* X = x.data<float>();
  float* Y = y.data<float>();
  if (g.I == 1) {
    parallel_for(g.O, std::max<int64_t>(1, 8192 / std::max<int64_t>(g.R, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; o++) softmax_row(X + o * g.R, Y + o * g.R, g.R, log);
    });
  } else {
    parallel_for(g.O * g.I, 64, [&](int64_t b, int64_t e) {
      std::vector<float> buf(g.R), out(g.R);
      for (int64_t t = b; t < e; t++) {
        int64_t o = t / g.I, i = t % g.I;
        for (int64_t k = 0; k < g.R; k++) buf[k] = X[(o * g.R + k) * g.I + i];
        softmax_row(buf.data(), out.data(), g.R, log);
        for (int64_t k = 0; k < g.R; k++) Y[(o * g.R + k) * g.I + i] = out[k];
      }
    });
  }
  c.out.push_back(y);
}

// inputs: y (the forward output), g (grad of y)
void bwd(OpCtx& c, bool log) {
  c.expect_inputs(2);
  Tensor y = c.f32(0), go = c.f32(1);
  if (y.shape != go.shape) c.fail("ShapeError", "output " + shape_str(y.shape) + " vs grad " + shape_str(go.shape));
  Geo g = geo(c, y, c.i("dim", -1));
  Tensor gi = Tensor::empty(y.shape, DType::F32);
  const float *Y = y.data<float>(), *G = go.data<float>();
  float* GI = gi.data<float>();
  parallel_for(g.O * g.I, std::max<int64_t>(1, 4096 / std::max<int64_t>(g.R, 1)), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      int64_t o = t / g.I, i = t % g.I;
      auto at = [&](int64_t k) { return (o * g.R + k) * g.I + i; };
      double s = 0;
      if (log) {
        for (int64_t k = 0; k < g.R; k++) s += G[at(k)];
        for (int64_t k = 0; k < g.R; k++) GI[at(k)] = G[at(k)] - std::exp(Y[at(k)]) * (float)s;
      } else {
        for (int64_t k = 0; k < g.R; k++) s += (double)G[at(k)] * Y[at(k)];
        for (int64_t k = 0; k < g.R; k++) GI[at(k)] = Y[at(k)] * (G[at(k)] - (float)s);
      }
    }
  });
  c.out.push_back(gi);
}

}  // namespace

void op_softmax(OpCtx& c) { fwd(c, false); }
void op_softmax_bwd(OpCtx& c) { bwd(c, false); }
void op_log_softmax(OpCtx& c) { fwd(c, true); }
void op_log_softmax_bwd(OpCtx& c) { bwd(c, true); }

}  // namespace ad
