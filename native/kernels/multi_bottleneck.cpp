// multi_bottleneck.cpp — many bottleneck adapters in one op over row segments (the bottleneck twin of
// multi_lora.cpp): a BatchSplit / Parallel / mixed batch of sequential bottleneck adapters runs as one call
// instead of slice → down → act → up → scale → add per adapter.
// Legend: M = rows, C = hidden size, n = adapters, d_i = bottleneck width of adapter i, D = max d_i,
// seg i = rows [starts[i], starts[i+1]); rows outside every segment pass the residual through.
//   bottleneck_sgmv(h (M,C), residual (M,C), scales (n), Wd_i (d_i,C)…, bd_i (d_i)…, Wu_i (C,d_i)…, bu_i (C)…)
//       {starts, act} -> y = residual + s_i·(act(h·Wd_iᵀ + bd_i)·Wu_iᵀ + bu_i),  pre (M,D) = h·Wd_iᵀ + bd_i
//   bottleneck_sgmv_bwd(g, h, pre, scales, Wd…, bd…, Wu…, bu…) {starts, act}
//       -> gh, dWd_i…, dbd_i…, dWu_i…, dbu_i…   (the residual's gradient is g itself)
// Each chunk of rows is handled while it is in cache; weight gradients are summed per pool chunk and the chunks'
// partials added in chunk order (run-to-run identical), as in multi_lora.cpp.

#include "gemm.h"
#include "segments.h"
#include "unary.h"
#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {

struct Bottlenecks : RowSegments {
  int64_t C = 0, D = 0;
  UnOp act = U_RELU;
  std::vector<int64_t> width;
  std::vector<Tensor> Wd, bd, Wu, bu;
  std::vector<float> scale;
  // inputs [first] = scales, then Wd…, bd…, Wu…, bu… (n each)
  Bottlenecks(const OpCtx& c, size_t first, int64_t M, int64_t C_) : RowSegments(c, M), C(C_) {
    expect_inputs(c, first + 1, 4);
    std::string a = c.s("act", "relu");
    if (!adapter_act_kind(a, &act)) c.fail("ValueError", "unsupported activation '" + a + "'");
    Tensor sc = c.f32(first);
    if (sc.numel() != n) c.fail("ShapeError", "scales " + shape_str(sc.shape) + " must have " + std::to_string(n) + " elements");
    scale.assign(sc.data<float>(), sc.data<float>() + n);
    auto want = [&](const Tensor& t, std::vector<int64_t> shape, const char* what, int64_t i) {
      if (t.shape != shape) c.fail("ShapeError", std::string(what) + " #" + std::to_string(i) + " has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
    };
    for (int64_t i = 0; i < n; i++) {
      Tensor wd = c.f32(first + 1 + i), bdi = c.f32(first + 1 + n + i), wu = c.f32(first + 1 + 2 * n + i), bui = c.f32(first + 1 + 3 * n + i);
      if (wd.dim() != 2 || wd.shape[1] != C) c.fail("ShapeError", "down weight #" + std::to_string(i) + " " + shape_str(wd.shape) + " must be (d, " + std::to_string(C) + ")");
      int64_t d = wd.shape[0];
      want(bdi, {d}, "down bias", i);
      want(wu, {C, d}, "up weight", i);
      want(bui, {C}, "up bias", i);
      D = std::max(D, d);
      width.push_back(d);
      Wd.push_back(wd);
      bd.push_back(bdi);
      Wu.push_back(wu);
      bu.push_back(bui);
    }
  }
};

}  // namespace

// bottleneck_sgmv(h, residual, scales, Wd…, bd…, Wu…, bu…) {starts, act} -> y, pre
void op_bottleneck_sgmv(OpCtx& c) {
  c.expect_inputs(2);
  Tensor h = c.f32(0), res = c.f32(1);
  if (h.dim() < 1) c.fail("ShapeError", "input must have a feature axis");
  if (res.shape != h.shape) c.fail("ShapeError", "residual " + shape_str(res.shape) + " vs input " + shape_str(h.shape));
  int64_t C = h.shape.back(), M = C ? h.numel() / C : 0;
  Bottlenecks s(c, 2, M, C);
  Tensor y = Tensor::empty(h.shape, DType::F32), pre = Tensor::empty({M, s.D}, DType::F32);
  const float *H = h.data<float>(), *R = res.data<float>();
  float *Y = y.data<float>(), *P = pre.data<float>();
  s.uncovered([&](int64_t b, int64_t e) { std::memcpy(Y + b * C, R + b * C, (e - b) * C * sizeof(float)); });
  s.zero_uncovered(P, s.D);
  parallel_for((int64_t)s.items.size(), 1, [&](int64_t b, int64_t e) {
    std::vector<float> act(kSegChunk * s.D);
    for (int64_t w = b; w < e; w++) {
      auto [i, m0, m1] = s.items[w];
      int64_t rows = m1 - m0, d = s.width[i];
      float sc = s.scale[i];
      const float *bdp = s.bd[i].data<float>(), *bup = s.bu[i].data<float>();
      float *Pc = P + m0 * s.D, *Yc = Y + m0 * C;
      for (int64_t m = 0; m < rows; m++) {
        std::memcpy(Pc + m * s.D, bdp, d * sizeof(float));
        if (d < s.D) std::memset(Pc + m * s.D + d, 0, (s.D - d) * sizeof(float));
        for (int64_t j = 0; j < C; j++) Yc[m * C + j] = R[(m0 + m) * C + j] + sc * bup[j];
      }
      if (!d || !C) continue;
      sgemm(false, true, rows, d, C, 1.f, H + m0 * C, C, s.Wd[i].data<float>(), C, 1.f, Pc, s.D);        // pre = h·Wdᵀ + bd
      for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < d; j++) act[m * d + j] = un_apply(s.act, Pc[m * s.D + j]);
      sgemm(false, true, rows, C, d, sc, act.data(), d, s.Wu[i].data<float>(), d, 1.f, Yc, C);            // y += s·act·Wuᵀ
    }
  });
  c.out.push_back(y);
  c.out.push_back(pre);
}

// bottleneck_sgmv_bwd(g, h, pre, scales, Wd…, bd…, Wu…, bu…) {starts, act} -> gh, dWd…, dbd…, dWu…, dbu…
void op_bottleneck_sgmv_bwd(OpCtx& c) {
  c.expect_inputs(3);
  Tensor h = c.f32(1);
  int64_t C = h.dim() ? h.shape.back() : 0, M = C ? h.numel() / C : 0;
  Bottlenecks s(c, 3, M, C);
  Tensor g = c.f32(0), pre = c.f32(2);
  if (g.shape != h.shape) c.fail("ShapeError", "gradient " + shape_str(g.shape) + " vs input " + shape_str(h.shape));
  if (pre.numel() != M * s.D) c.fail("ShapeError", "saved pre " + shape_str(pre.shape) + " must be (" + std::to_string(M) + ", " + std::to_string(s.D) + ")");
  Tensor gh = Tensor::empty(h.shape, DType::F32);
  const float *G = g.data<float>(), *H = h.data<float>(), *P = pre.data<float>();
  float* GH = gh.data<float>();
  s.zero_uncovered(GH, C);
  // per adapter: dWd (d, C), dbd (d), dWuᵀ (d, C) (transposed at the end), dbu (C)
  std::vector<std::vector<float>> dWd(s.n), dbd(s.n), dWuT(s.n), dbu(s.n);
  for (int64_t i = 0; i < s.n; i++) {
    dWd[i].assign(s.width[i] * C, 0.f);
    dbd[i].assign(s.width[i], 0.f);
    dWuT[i].assign(s.width[i] * C, 0.f);
    dbu[i].assign(C, 0.f);
  }
  // each chunk of items leaves its partial weight gradients per adapter; they are added up in chunk order
  // afterwards, so the sums do not depend on which thread ran which chunk
  struct Part {
    int64_t i;
    std::vector<float> Wd, bd, WuT, bu;
  };
  const int64_t nitems = (int64_t)s.items.size();
  std::vector<std::vector<Part>> parts((size_t)for_chunks(nitems, 1));
  parallel_for_indexed(nitems, 1, [&](int64_t ch, int64_t b, int64_t e) {
    std::vector<float> act(kSegChunk * s.D), gp(kSegChunk * s.D), lWd, lbd, lWuT, lbu;
    int64_t cur = -1;
    auto flush = [&]() {
      if (cur >= 0) parts[(size_t)ch].push_back(Part{cur, std::move(lWd), std::move(lbd), std::move(lWuT), std::move(lbu)});
    };
    for (int64_t w = b; w < e; w++) {
      auto [i, m0, m1] = s.items[w];
      int64_t rows = m1 - m0, d = s.width[i];
      float sc = s.scale[i];
      if (i != cur) {
        flush();
        cur = i;
        lWd.assign(d * C, 0.f);
        lbd.assign(d, 0.f);
        lWuT.assign(d * C, 0.f);
        lbu.assign(C, 0.f);
      }
      const float *Gc = G + m0 * C, *Hc = H + m0 * C, *Pc = P + m0 * s.D;
      for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < C; j++) lbu[j] += sc * Gc[m * C + j];                                      // dbu = Σ s·g
      if (!d) {
        std::memset(GH + m0 * C, 0, rows * C * sizeof(float));
        continue;
      }
      for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < d; j++) act[m * d + j] = un_apply(s.act, Pc[m * s.D + j]);
      sgemm(true, false, d, C, rows, sc, act.data(), d, Gc, C, 1.f, lWuT.data(), C);                        // dWuᵀ += s·actᵀ·g
      sgemm(false, false, rows, d, C, sc, Gc, C, s.Wu[i].data<float>(), d, 0.f, gp.data(), d);               // ga = s·g·Wu
      for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < d; j++) {
          float v = gp[m * d + j] * un_grad(s.act, Pc[m * s.D + j]);                                        // gpre
          gp[m * d + j] = v;
          lbd[j] += v;
        }
      sgemm(true, false, d, C, rows, 1.f, gp.data(), d, Hc, C, 1.f, lWd.data(), C);                          // dWd += gpreᵀ·h
      sgemm(false, false, rows, C, d, 1.f, gp.data(), d, s.Wd[i].data<float>(), C, 0.f, GH + m0 * C, C);     // gh = gpre·Wd
    }
    flush();
  });
  auto add = [](std::vector<float>& acc, const std::vector<float>& v) {
    for (size_t k = 0; k < v.size(); k++) acc[k] += v[k];
  };
  for (const auto& chunk : parts)
    for (const Part& q : chunk) {
      add(dWd[q.i], q.Wd);
      add(dbd[q.i], q.bd);
      add(dWuT[q.i], q.WuT);
      add(dbu[q.i], q.bu);
    }
  c.out.push_back(gh);
  auto emit = [&](const std::vector<float>& v, std::vector<int64_t> shape) {
    Tensor t = Tensor::empty(shape, DType::F32);
    std::memcpy(t.data<float>(), v.data(), v.size() * sizeof(float));
    c.out.push_back(t);
  };
  for (int64_t i = 0; i < s.n; i++) emit(dWd[i], {s.width[i], C});
  for (int64_t i = 0; i < s.n; i++) emit(dbd[i], {s.width[i]});
  for (int64_t i = 0; i < s.n; i++) {
    Tensor t = Tensor::empty({C, s.width[i]}, DType::F32);
    transpose_into(t.data<float>(), dWuT[i].data(), s.width[i], C);
    c.out.push_back(t);
  }
  for (int64_t i = 0; i < s.n; i++) emit(dbu[i], {C});
}

}  // namespace ad
