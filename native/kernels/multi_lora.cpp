// multi_lora.cpp — many LoRA adapters in one launch (segmented GEMV/GEMM, "SGMV" after Punica,
// https://arxiv.org/abs/2310.18547): rows of one batch are grouped into contiguous segments, one adapter per
// segment, and each segment's low-rank delta is computed with that adapter's own A/B — one op for a whole
// BatchSplit / Parallel / mixed-adapter batch instead of a slice + two matmuls + concat per adapter.
// Legend: M = rows (batch·positions), K = in features, O = out features, n = adapters, r_i = rank of adapter i,
// R = max r_i, seg i = rows [starts[i], starts[i+1]) (rows outside every segment get no delta).
//   lora_sgmv(x (M,K), scales (n), A_0..A_{n-1} (r_i,K), B_0..B_{n-1} (O,r_i)) {starts}
//       -> d (M,O) with d[m] = s_i·B_i·A_i·x[m] for m in seg i;  t (M,R) = A_i·x[m] (saved for the backward)
//   lora_sgmv_bwd(g (M,O), x, t, scales, A..., B...) {starts}
//       -> gx (M,K) = Σ seg rows (s_i·g·B_i)·A_i,  dA_i = (s_i·g_i·B_i)ᵀ·x_i,  dB_i = s_i·g_iᵀ·t_i
// Work is split into (segment, 64-row chunk) items over the pool; each item calls the packed sgemm, which runs
// inline (single-threaded) inside a pool task.
#include <algorithm>
#include <array>
#include <cstring>

#include "gemm.h"
#include "lora_bwd.h"
#include "segments.h"
#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {

struct Segments : RowSegments {
  int64_t K = 0, O = 0, R = 0;
  std::vector<int64_t> ranks;
  std::vector<Tensor> A, B;
  std::vector<float> scale;
  // inputs [first] = scales (n), then A_0..A_{n-1}, B_0..B_{n-1}; every shape checked against x (M, K)
  Segments(const OpCtx& c, size_t first, int64_t M, int64_t K_) : RowSegments(c, M), K(K_) {
    expect_inputs(c, first + 1, 2);
    Tensor sc = c.f32(first);
    if (sc.numel() != n) c.fail("ShapeError", "scales " + shape_str(sc.shape) + " must have " + std::to_string(n) + " elements");
    scale.assign(sc.data<float>(), sc.data<float>() + n);
    for (int64_t i = 0; i < n; i++) {
      Tensor a = c.f32(first + 1 + i), b = c.f32(first + 1 + n + i);
      if (a.dim() != 2 || a.shape[1] != K) c.fail("ShapeError", "lora_A #" + std::to_string(i) + " " + shape_str(a.shape) + " must be (r, " + std::to_string(K) + ")");
      int64_t r = a.shape[0];
      if (b.dim() != 2 || b.shape[1] != r) c.fail("ShapeError", "lora_B #" + std::to_string(i) + " " + shape_str(b.shape) + " must be (out, " + std::to_string(r) + ")");
      if (i == 0) O = b.shape[0];
      else if (b.shape[0] != O) c.fail("ShapeError", "lora_B #" + std::to_string(i) + " " + shape_str(b.shape) + " has " + std::to_string(b.shape[0]) + " outputs, #0 has " + std::to_string(O));
      R = std::max(R, r);
      ranks.push_back(r);
      A.push_back(a);
      B.push_back(b);
    }
  }
};

std::vector<int64_t> with_last(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

}  // namespace

// lora_sgmv(x, scales, A..., B...) {starts} -> d, t
void op_lora_sgmv(OpCtx& c) {
  c.expect_inputs(1);
  Tensor x = c.f32(0);
  if (x.dim() < 1) c.fail("ShapeError", "input must have a feature axis");
  int64_t K = x.shape.back(), M = K ? x.numel() / K : 0;
  Segments s(c, 1, M, K);
  Tensor d = Tensor::empty(with_last(x.shape, s.O), DType::F32), t = Tensor::empty({M, s.R}, DType::F32);
  const float* X = x.data<float>();
  float *D = d.data<float>(), *Tt = t.data<float>();
  s.zero_uncovered(D, s.O);
  s.zero_uncovered(Tt, s.R);
  parallel_for((int64_t)s.items.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; w++) {
      auto [i, m0, m1] = s.items[w];
      int64_t rows = m1 - m0, r = s.ranks[i];
      float* Tc = Tt + m0 * s.R;
      if (r < s.R) for (int64_t m = 0; m < rows; m++) std::memset(Tc + m * s.R + r, 0, (s.R - r) * sizeof(float));
      if (!r || !K) {
        std::memset(D + m0 * s.O, 0, rows * s.O * sizeof(float));
        continue;
      }
      sgemm(false, true, rows, r, K, 1.f, X + m0 * K, K, s.A[i].data<float>(), K, 0.f, Tc, s.R);                 // shrink
      sgemm(false, true, rows, s.O, r, s.scale[i], Tc, s.R, s.B[i].data<float>(), r, 0.f, D + m0 * s.O, s.O);   // expand
    }
  });
  c.out.push_back(d);
  c.out.push_back(t);
}

// lora_sgmv_bwd(g, x, t, scales, A..., B...) {starts} -> gx, dA_0..dA_{n-1}, dB_0..dB_{n-1}
// One pass over row chunks: while a chunk of g and x is in cache it yields gt = s·g·B, gx = gt·A and the
// chunk's share of dA (gtᵀ·x) and dBᵀ (s·tᵀ·g) (lora_rows_bwd). Each pool chunk sums its items' shares per
// adapter, and the chunks' sums are added in chunk order (run-to-run identical).
void op_lora_sgmv_bwd(OpCtx& c) {
  c.expect_inputs(3);
  Tensor x = c.f32(1);
  int64_t K = x.dim() ? x.shape.back() : 0, M = K ? x.numel() / K : 0;
  Segments s(c, 3, M, K);
  Tensor g = c.f32(0), t = c.f32(2);
  if (g.numel() != M * s.O) c.fail("ShapeError", "gradient " + shape_str(g.shape) + " does not match " + std::to_string(M) + " rows of " + std::to_string(s.O));
  if (t.numel() != M * s.R) c.fail("ShapeError", "saved t " + shape_str(t.shape) + " must be (" + std::to_string(M) + ", " + std::to_string(s.R) + ")");
  Tensor gx = Tensor::empty(x.shape, DType::F32);
  const float *G = g.data<float>(), *X = x.data<float>(), *Tt = t.data<float>();
  float* GX = gx.data<float>();
  s.zero_uncovered(GX, K);
  std::vector<Tensor> dA, dBt;  // dBᵀ (r, O) accumulates with wide rows; transposed at the end
  for (int64_t i = 0; i < s.n; i++) {
    dA.push_back(Tensor::empty({s.ranks[i], K}, DType::F32));
    dBt.push_back(Tensor::empty({s.ranks[i], s.O}, DType::F32));
    std::memset(dA.back().data<float>(), 0, s.ranks[i] * K * sizeof(float));
    std::memset(dBt.back().data<float>(), 0, s.ranks[i] * s.O * sizeof(float));
  }
  // each chunk of items leaves its partial dA / dBᵀ per adapter; they are added up in chunk order afterwards, so
  // the sums do not depend on which thread ran which chunk
  struct Part {
    int64_t i;
    std::vector<float> la, lb;
  };
  const int64_t nitems = (int64_t)s.items.size();
  std::vector<std::vector<Part>> parts((size_t)for_chunks(nitems, 1));
  parallel_for_indexed(nitems, 1, [&](int64_t ch, int64_t b, int64_t e) {
    std::vector<float> gt(kSegChunk * s.R), la, lb;
    int64_t cur = -1;
    auto flush = [&]() {
      if (cur >= 0) parts[(size_t)ch].push_back(Part{cur, std::move(la), std::move(lb)});
    };
    for (int64_t w = b; w < e; w++) {
      auto [i, m0, m1] = s.items[w];
      int64_t rows = m1 - m0, r = s.ranks[i];
      if (i != cur) {
        flush();
        cur = i;
        la.assign(r * K, 0.f);
        lb.assign(r * s.O, 0.f);
      }
      if (!r) {
        std::memset(GX + m0 * K, 0, rows * K * sizeof(float));
        continue;
      }
      lora_rows_bwd(rows, K, s.O, r, s.scale[i], G + m0 * s.O, X + m0 * K, Tt + m0 * s.R, s.R, s.A[i].data<float>(),
                    s.B[i].data<float>(), gt.data(), s.R, GX + m0 * K, 0.f, la.data(), lb.data());
    }
    flush();
  });
  for (const auto& chunk : parts)
    for (const Part& q : chunk) {
      float *pa = dA[q.i].data<float>(), *pb = dBt[q.i].data<float>();
      for (size_t k = 0; k < q.la.size(); k++) pa[k] += q.la[k];
      for (size_t k = 0; k < q.lb.size(); k++) pb[k] += q.lb[k];
    }
  c.out.push_back(gx);
  for (auto& a : dA) c.out.push_back(a);
  for (int64_t i = 0; i < s.n; i++) {
    int64_t r = s.ranks[i];
    Tensor dB = Tensor::empty({s.O, r}, DType::F32);
    transpose_into(dB.data<float>(), dBt[i].data<float>(), r, s.O);
    c.out.push_back(dB);
  }
}

}  // namespace ad
