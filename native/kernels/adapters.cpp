// adapters.cpp — fused forward kernels of the adapter methods' hot paths (f32). Backward passes are composed
// from native matmuls in lib/adapters/fused.ts, using the intermediates these kernels return (LoRA's rank-r half
// has its own kernel, lora_linear_bwd, and (IA)³'s elementwise part ia3_bwd).
// Legend: N = rows (batch·positions), I = in features, O = out features, r = LoRA rank, d = bottleneck width.
//   lora_linear:  y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ          x (N,I) W (O,I) b (O) A (r,I) B (O,r) → y (N,O), t = x·Aᵀ (N,r)
//                 the low-rank term is accumulated by the second GEMM (beta = 1): ΔW is never formed and y is
//                 written once by the base GEMM, once by the rank-r update.
//   ia3_linear:   y = (x·Wᵀ + b) ∘ (s·v)             v (O) → y, base = x·Wᵀ + b (saved for dv)
//   bottleneck:   y = s·(act(h·Wdᵀ + bd)·Wuᵀ + bu) + residual   h (N,C) Wd (d,C) Wu (C,d) → y (N,C), pre (N,d)
//   lora_linear_bwd: the rank-r half of lora_linear's backward in one pass over the rows (see there).
//   ia3_bwd:      gbase = g ∘ (s·v), gv = s·Σ_rows g ∘ base   (ia3_linear's elementwise backward, one pass)
// {mixed: 1} (CPU autocast) runs lora_linear's and ia3_linear's base projection x·Wᵀ + b as a bf16 GEMM (the
// operands rounded to bf16 while packed, f32 result, bias in the epilogue), as ops.linear does under autocast;
// the rank-r path stays f32, as LoRA's small projections do there; it runs bottleneck's two projections as bf16
// GEMMs too (a width d of 32 or more fills AMX tiles well enough to beat f32: 2x at d = 48).
// https://arxiv.org/abs/2106.09685 (LoRA), https://arxiv.org/abs/2205.05638 ((IA)³), https://arxiv.org/abs/1902.00751
#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm.h"
#include "lora_bwd.h"
#include "unary.h"
#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {

Tensor rows2d(const OpCtx& c, size_t k, int64_t cols, const char* what) {
  Tensor t = c.f32(k);
  if (t.dim() < 1 || t.shape.back() != cols)
    c.fail("ShapeError", std::string(what) + " " + shape_str(t.shape) + " must end in " + std::to_string(cols));
  return t;
}
void expect_shape(const OpCtx& c, const Tensor& t, std::vector<int64_t> want, const char* what) {
  if (t.shape != want) c.fail("ShapeError", std::string(what) + " has shape " + shape_str(t.shape) + ", expected " + shape_str(want));
}
// Y (N, O) = x·Wᵀ + b (input 2, optional): f32 GEMM, or the mixed-precision one with {mixed: 1}.
void base_projection(OpCtx& c, const Tensor& x, const Tensor& W, int64_t N, int64_t O, int64_t I, float* Y) {
  Tensor b;
  if (c.has(2)) {
    b = c.f32(2);
    expect_shape(c, b, {O}, "bias");
  }
  if (!N || !O) return;
  if (c.i("mixed", 0)) {
    mgemm_batched(1, false, true, N, O, I, x.data<float>(), true, I, 0, W.data<float>(), true, I, 0, c.has(2) ? b.data<float>() : nullptr, Y, O, 0);
    return;
  }
  sgemm_bias(false, true, N, O, I, x.data<float>(), I, W.data<float>(), I, c.has(2) ? b.data<float>() : nullptr, Y, O);
}
UnOp adapter_act(const OpCtx& c) {
  std::string a = c.s("act", "relu");
  UnOp k;
  if (!adapter_act_kind(a, &k)) c.fail("ValueError", "unsupported activation '" + a + "'");
  return k;
}

}  // namespace

// lora_linear(x, W, b?, A, B) {scale} -> y, t
void op_lora_linear(OpCtx& c) {
  c.expect_inputs(2);
  const Tensor& W0 = c.input(1);
  if (W0.dim() != 2) c.fail("ShapeError", "weight must be 2-D (out, in), got " + shape_str(W0.shape));
  int64_t O = W0.shape[0], I = W0.shape[1];
  Tensor x = rows2d(c, 0, I, "input");
  Tensor W = c.f32(1);
  Tensor A = c.f32(3), B = c.f32(4);
  if (A.dim() != 2 || A.shape[1] != I) c.fail("ShapeError", "lora_A " + shape_str(A.shape) + " must be (r, " + std::to_string(I) + ")");
  int64_t r = A.shape[0];
  expect_shape(c, B, {O, r}, "lora_B");
  float s = (float)c.f("scale", 1.0);
  int64_t N = I ? x.numel() / I : 0;
  std::vector<int64_t> ys(x.shape.begin(), x.shape.end() - 1), ts = ys;
  ys.push_back(O);
  ts.push_back(r);
  Tensor y = Tensor::empty(ys, DType::F32), t = Tensor::empty(ts, DType::F32);
  base_projection(c, x, W, N, O, I, y.data<float>());
  if (N && O) {
    sgemm(false, true, N, r, I, 1.f, x.data<float>(), I, A.data<float>(), I, 0.f, t.data<float>(), r);
    sgemm(false, true, N, O, r, s, t.data<float>(), r, B.data<float>(), r, 1.f, y.data<float>(), O);  // epilogue-style accumulate
  }
  c.out.push_back(y);
  c.out.push_back(t);
}

// lora_linear_bwd(g, x, t, A, B, gx?) {scale, need_dA, need_dB} -> dA (r, I), dB (O, r)
// The rank-r half of lora_linear's backward, one pass over the rows: g (N, O), x (N, I), t = x·Aᵀ (N, r) from the
// forward. gx (N, I, contiguous f32), when given, is the base projection's input gradient g·W, and the rank-r
// term s·(g·B)·A is added to it in place. Rows go in blocks of 64, so g, x, t and gx are each read once and a
// block's (g·B) stays in cache (as separate GEMMs over all rows, the rank-8 products and the scaling and sum
// re-read g, x and gx: 3.4 ms per BERT-base layer vs ~1 ms here). dA = s·(g·B)ᵀ·x and dB = s·gᵀ·t are summed per
// chunk of blocks, then in chunk order. A gradient not needed (need_dA / need_dB 0) comes back as zeros.
void op_lora_linear_bwd(OpCtx& c) {
  c.expect_inputs(5);
  const Tensor& A0 = c.input(3);
  if (A0.dim() != 2) c.fail("ShapeError", "lora_A must be 2-D (r, in), got " + shape_str(A0.shape));
  const int64_t r = A0.shape[0], I = A0.shape[1];
  Tensor A = c.f32(3), B = c.f32(4);
  if (B.dim() != 2 || B.shape[1] != r) c.fail("ShapeError", "lora_B " + shape_str(B.shape) + " must be (out, " + std::to_string(r) + ")");
  const int64_t O = B.shape[0];
  Tensor g = rows2d(c, 0, O, "gradient"), x = rows2d(c, 1, I, "input"), t = rows2d(c, 2, r, "saved t");
  const int64_t N = I ? x.numel() / I : 0;
  if (g.numel() != N * O) c.fail("ShapeError", "gradient " + shape_str(g.shape) + " must have " + std::to_string(N) + " rows");
  if (t.numel() != N * r) c.fail("ShapeError", "saved t " + shape_str(t.shape) + " must have " + std::to_string(N) + " rows");
  float* GX = nullptr;
  if (c.has(5)) {
    const Tensor& gx = c.input(5);
    if (gx.dtype != DType::F32 || !gx.is_contiguous() || gx.numel() != N * I)
      c.fail("ValueError", "gx must be a contiguous f32 tensor of " + std::to_string(N) + " x " + std::to_string(I) + ", got " +
                               dtype_name(gx.dtype) + shape_str(gx.shape));
    GX = gx.data<float>();
  }
  const float s = (float)c.f("scale", 1.0);
  const bool need_a = c.i("need_dA", 1) != 0, need_b = c.i("need_dB", 1) != 0;
  const float *G = g.data<float>(), *X = x.data<float>(), *T = t.data<float>(), *Ap = A.data<float>(), *Bp = B.data<float>();
  constexpr int64_t RB = 64;
  const int64_t nb = (N + RB - 1) / RB, nch = for_chunks(nb, 1);
  std::vector<std::vector<float>> pa(need_a ? nch : 0), pb(need_b ? nch : 0);
  if (r && N)
    parallel_for_indexed(nb, 1, [&](int64_t ch, int64_t b0, int64_t b1) {
      std::vector<float> gb(RB * r);
      if (need_a) pa[ch].assign(r * I, 0.f);
      if (need_b) pb[ch].assign(r * O, 0.f);
      for (int64_t blk = b0; blk < b1; blk++) {
        const int64_t m0 = blk * RB, rows = std::min(RB, N - m0);
        lora_rows_bwd(rows, I, O, r, s, G + m0 * O, X + m0 * I, T + m0 * r, r, Ap, Bp, gb.data(), r, GX ? GX + m0 * I : nullptr, 1.f,
                      need_a ? pa[ch].data() : nullptr, need_b ? pb[ch].data() : nullptr);
      }
    });
  Tensor dA = Tensor::empty({r, I}, DType::F32), dB = Tensor::empty({O, r}, DType::F32);
  std::vector<float> dbt((size_t)(r * O), 0.f);
  float* DA = dA.data<float>();
  std::fill(DA, DA + r * I, 0.f);
  for (const auto& p : pa)
    for (int64_t k = 0; k < r * I; k++) DA[k] += p[k];
  for (const auto& p : pb)
    for (int64_t k = 0; k < r * O; k++) dbt[k] += p[k];
  float* DB = dB.data<float>();
  for (int64_t o = 0; o < O; o++)
    for (int64_t j = 0; j < r; j++) DB[o * r + j] = dbt[j * O + o];
  c.out.push_back(dA);
  c.out.push_back(dB);
}

// ia3_linear(x, W, b?, v) {scale} -> y, base
void op_ia3_linear(OpCtx& c) {
  c.expect_inputs(2);
  const Tensor& W0 = c.input(1);
  if (W0.dim() != 2) c.fail("ShapeError", "weight must be 2-D (out, in), got " + shape_str(W0.shape));
  int64_t O = W0.shape[0], I = W0.shape[1];
  Tensor x = rows2d(c, 0, I, "input");
  Tensor W = c.f32(1), v = c.f32(3);
  if (v.numel() != O) c.fail("ShapeError", "scale vector " + shape_str(v.shape) + " must have " + std::to_string(O) + " elements");
  float s = (float)c.f("scale", 1.0);
  int64_t N = I ? x.numel() / I : 0;
  std::vector<int64_t> ys(x.shape.begin(), x.shape.end() - 1);
  ys.push_back(O);
  const float* V = v.data<float>();
  Tensor y = Tensor::empty(ys, DType::F32);
  float* Y = y.data<float>();
  if (c.i("save_bf16", 0)) {
    // CPU autocast: base saved as bf16 (half the bytes; torch.autocast's activations are bf16), written by the
    // pass that scales y in place, instead of an f32 base and a separate cast
    Tensor b16 = Tensor::empty(ys, DType::BF16);
    uint16_t* B16 = b16.data<uint16_t>();
    base_projection(c, x, W, N, O, I, Y);
    parallel_for(N, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t rr = r0; rr < r1; rr++) {
        f32_to_bf16_run(B16 + rr * O, Y + rr * O, O);
        for (int64_t o = 0; o < O; o++) Y[rr * O + o] *= s * V[o];
      }
    });
    c.out.push_back(y);
    c.out.push_back(b16);
    return;
  }
  Tensor base = Tensor::empty(ys, DType::F32);
  base_projection(c, x, W, N, O, I, base.data<float>());
  const float* Bp = base.data<float>();
  parallel_for(N, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t rr = r0; rr < r1; rr++)
      for (int64_t o = 0; o < O; o++) Y[rr * O + o] = Bp[rr * O + o] * (s * V[o]);
  });
  c.out.push_back(y);
  c.out.push_back(base);
}

namespace {
// One row of ia3_bwd: gb = g ∘ sv, and acc += g ∘ base (double) when base is given. Cloned per ISA so that the
// loops vectorise (AVX-512 / AVX2).
AD_CLONES void ia3_bwd_row(float* gb, const float* g, const float* sv, const float* base, double* acc, int64_t O) {
  for (int64_t o = 0; o < O; o++) gb[o] = g[o] * sv[o];
  if (base)
    for (int64_t o = 0; o < O; o++) acc[o] += (double)(g[o] * base[o]);
}
}  // namespace

// ia3_bwd(g, v, base?) {scale} -> gbase, gv
// ia3_linear's elementwise backward in one pass over g: gbase = g ∘ (s·v) (N, O) and, when base (the unscaled
// output, f32 or bf16) is given, gv = s·Σ_rows g ∘ base (O; zeros without base). The column sums go per chunk of
// rows in double and are added in chunk order (as three separate ops this pass read g three times).
void op_ia3_bwd(OpCtx& c) {
  c.expect_inputs(2);
  Tensor v = c.f32(1);
  const int64_t O = v.numel();
  Tensor g = rows2d(c, 0, O, "gradient");
  const int64_t N = O ? g.numel() / O : 0;
  const bool has_base = c.has(2);
  Tensor base;
  if (has_base) {
    const Tensor& b0 = c.input(2);
    base = (b0.dtype == DType::BF16 && b0.is_contiguous()) ? b0 : c.f32(2);
    if (base.numel() != N * O) c.fail("ShapeError", "base " + shape_str(base.shape) + " must match the gradient " + shape_str(g.shape));
  }
  const float s = (float)c.f("scale", 1.0);
  Tensor gb = Tensor::empty(g.shape, DType::F32);
  const float *G = g.data<float>(), *V = v.data<float>();
  float* GB = gb.data<float>();
  std::vector<float> sv((size_t)O);
  for (int64_t o = 0; o < O; o++) sv[o] = V[o] * s;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(O, 1));
  const int64_t nch = for_chunks(N, grain);
  std::vector<std::vector<double>> part(has_base ? nch : 0);
  parallel_for_indexed(N, grain, [&](int64_t ch, int64_t r0, int64_t r1) {
    std::vector<float> row(has_base && base.dtype == DType::BF16 ? O : 0);
    if (has_base) part[ch].assign(O, 0.0);
    for (int64_t rr = r0; rr < r1; rr++) {
      const float* gr = G + rr * O;
      const float* br = nullptr;
      if (has_base && base.dtype == DType::BF16) {
        bf16_to_f32_run(row.data(), base.data<uint16_t>() + rr * O, O);
        br = row.data();
      } else if (has_base) {
        br = base.data<float>() + rr * O;
      }
      ia3_bwd_row(GB + rr * O, gr, sv.data(), br, has_base ? part[ch].data() : nullptr, O);
    }
  });
  Tensor gv = Tensor::empty(v.shape, DType::F32);
  float* GV = gv.data<float>();
  std::vector<double> tot((size_t)O, 0.0);
  for (const auto& p : part)
    for (int64_t o = 0; o < O; o++) tot[o] += p[o];
  for (int64_t o = 0; o < O; o++) GV[o] = (float)tot[o] * s;
  c.out.push_back(gb);
  c.out.push_back(gv);
}

// bottleneck(h, Wd, bd, Wu, bu, residual) {act, scale} -> y, pre (down projection before the activation)
void op_bottleneck(OpCtx& c) {
  c.expect_inputs(6);
  const Tensor& Wd0 = c.input(1);
  if (Wd0.dim() != 2) c.fail("ShapeError", "down weight must be 2-D (d, C), got " + shape_str(Wd0.shape));
  int64_t d = Wd0.shape[0], C = Wd0.shape[1];
  Tensor h = rows2d(c, 0, C, "input");
  Tensor Wd = c.f32(1), bd = c.f32(2), Wu = c.f32(3), bu = c.f32(4), res = c.f32(5);
  expect_shape(c, bd, {d}, "down bias");
  expect_shape(c, Wu, {C, d}, "up weight");
  expect_shape(c, bu, {C}, "up bias");
  if (res.shape != h.shape) c.fail("ShapeError", "residual " + shape_str(res.shape) + " vs input " + shape_str(h.shape));
  UnOp kind = adapter_act(c);
  float s = (float)c.f("scale", 1.0);
  int64_t N = C ? h.numel() / C : 0;
  std::vector<int64_t> ps(h.shape.begin(), h.shape.end() - 1);
  ps.push_back(d);
  Tensor pre = Tensor::empty(ps, DType::F32), act = Tensor::empty(ps, DType::F32), y = Tensor::empty(h.shape, DType::F32);
  const bool mixed = c.i("mixed", 0) != 0;
  if (mixed && N) {
    mgemm_batched(1, false, true, N, d, C, h.data<float>(), true, C, 0, Wd.data<float>(), true, C, 0, bd.data<float>(), pre.data<float>(), d, 0);
  } else {
    if (N) sgemm_bias(false, true, N, d, C, h.data<float>(), C, Wd.data<float>(), C, bd.data<float>(), pre.data<float>(), d);
  }
  const float* P = pre.data<float>();
  float* Aa = act.data<float>();
  parallel_for(N * d, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) Aa[i] = un_apply(kind, P[i]);
  });
  const float *R = res.data<float>(), *BU = bu.data<float>();
  float* Y = y.data<float>();
  if (mixed) {
    // y = s·(act·Wuᵀ + bu) + residual: the bf16 GEMM writes act·Wuᵀ + bu, then one pass scales and adds
    if (N) mgemm_batched(1, false, true, N, C, d, Aa, true, d, 0, Wu.data<float>(), true, d, 0, BU, Y, C, 0);
    parallel_for(N, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0 * C; i < r1 * C; i++) Y[i] = s * Y[i] + R[i];
    });
  } else {
    // y = s·(act·Wuᵀ + bu) + residual: start from residual + s·bu, accumulate s·act·Wuᵀ
    parallel_for(N, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t rr = r0; rr < r1; rr++)
        for (int64_t j = 0; j < C; j++) Y[rr * C + j] = R[rr * C + j] + s * BU[j];
    });
    if (N) sgemm(false, true, N, C, d, s, act.data<float>(), d, Wu.data<float>(), d, 1.f, Y, C);
  }
  c.out.push_back(y);
  c.out.push_back(pre);
}

}  // namespace ad
