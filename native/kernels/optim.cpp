// optim.cpp — optimiser updates over all parameters in one call (in place), with PyTorch's arithmetic.
//   adamw_step(hyper (n,2) = [lr, weight_decay] per tensor, p_0..p_{n-1}, g_…, m_…, v_…) {beta1, beta2, eps, step}
//     p ← p·(1 − lr·wd);  m ← m + (1−β1)(g − m)  (torch's lerp);  v ← β2·v + (1−β2)·g²;
//     p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + eps)            (torch.optim.AdamW, single-tensor path)
// Parameters, gradients and moments must be contiguous f32 of equal shapes (checked); the work is split over
// the pool in fixed-size chunks across all tensors, so small and large tensors share the threads.
#include <algorithm>
#include <array>
#include <cmath>

#include "../op.h"
#include "../threadpool.h"

namespace ad {

void op_adamw_step(OpCtx& c) {
  c.expect_inputs(1);
  Tensor hyper = c.f32(0);
  int64_t n = (int64_t)(c.n_in() - 1) / 4;
  if (n < 1 || (int64_t)c.n_in() != 1 + 4 * n) c.fail("ValueError", "expected hyper + 4·n tensors (params, grads, exp_avg, exp_avg_sq), got " + std::to_string(c.n_in()));
  c.expect_inputs(c.n_in());
  if (hyper.numel() != 2 * n) c.fail("ShapeError", "hyper " + shape_str(hyper.shape) + " must be (" + std::to_string(n) + ", 2)");
  const float b1 = (float)c.f("beta1"), b2 = (float)c.f("beta2"), eps = (float)c.f("eps");
  const int64_t t = c.i("step");
  if (t < 1) c.fail("ValueError", "step must be >= 1");
  std::vector<float*> P(n), M(n), V(n);
  std::vector<const float*> G(n);
  std::vector<int64_t> len(n);
  for (int64_t k = 0; k < n; k++) {
    const Tensor* ts[4] = {&c.input(1 + k), &c.input(1 + n + k), &c.input(1 + 2 * n + k), &c.input(1 + 3 * n + k)};
    static const char* what[4] = {"parameter", "gradient", "exp_avg", "exp_avg_sq"};
    for (int j = 0; j < 4; j++) {
      if (ts[j]->dtype != DType::F32 || !ts[j]->is_contiguous())
        c.fail("DTypeError", std::string(what[j]) + " #" + std::to_string(k) + " must be contiguous f32");
      if (ts[j]->shape != ts[0]->shape)
        c.fail("ShapeError", std::string(what[j]) + " #" + std::to_string(k) + " " + shape_str(ts[j]->shape) + " vs parameter " + shape_str(ts[0]->shape));
    }
    P[k] = const_cast<Tensor*>(ts[0])->data<float>();
    G[k] = ts[1]->data<float>();
    M[k] = const_cast<Tensor*>(ts[2])->data<float>();
    V[k] = const_cast<Tensor*>(ts[3])->data<float>();
    len[k] = ts[0]->numel();
  }
  const float* H = hyper.data<float>();
  const double bc1 = 1.0 - std::pow((double)b1, (double)t), bc2 = 1.0 - std::pow((double)b2, (double)t);
  const float bc2s = (float)std::sqrt(bc2);
  // chunks of at most 16K elements over all tensors
  constexpr int64_t kChunk = 16384;
  std::vector<std::array<int64_t, 3>> chunks;  // (tensor, begin, end)
  for (int64_t k = 0; k < n; k++)
    for (int64_t b = 0; b < len[k]; b += kChunk) chunks.push_back({k, b, std::min(b + kChunk, len[k])});
  parallel_for((int64_t)chunks.size(), 1, [&](int64_t cb, int64_t ce) {
    for (int64_t w = cb; w < ce; w++) {
      auto [k, b, e] = chunks[w];
      const float lr = H[2 * k], wd = H[2 * k + 1];
      const float decay = 1.f - lr * wd, step = (float)(lr / bc1);
      float *p = P[k], *m = M[k], *v = V[k];
      const float* g = G[k];
      for (int64_t i = b; i < e; i++) {
        if (wd != 0.f) p[i] *= decay;
        m[i] += (1.f - b1) * (g[i] - m[i]);
        v[i] = v[i] * b2 + (1.f - b2) * g[i] * g[i];
        p[i] -= step * (m[i] / (std::sqrt(v[i]) / bc2s + eps));
      }
    }
  });
}

}  // namespace ad
