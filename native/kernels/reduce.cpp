// reduce.cpp — sum over any set of axes (keepdim), max / argmax over one axis.
// Every reduction is brought to the form x: (O, R, I) -> out: (O, I) (reduced axes contiguous in the
// middle), permuting and copying first when the reduced axes are not adjacent. Sums accumulate in f64
// per output element (more exact than a float running sum; PyTorch uses pairwise float sums).
#include <algorithm>
#include <cmath>
#include <limits>

#include "../op.h"
#include "../threadpool.h"
#include "reduce_geo.h"

namespace ad {
namespace {

// acc[i] += p[i] in f64: the column-sum inner loop (bias gradients: (tokens, width) -> width). Each column keeps
// its own order of additions, so the clones give the baseline build's sums exactly.
AD_CLONES void add_f64(double* __restrict acc, const float* __restrict p, int64_t n) {
  for (int64_t i = 0; i < n; i++) acc[i] += p[i];
}

}  // namespace

// sum(x) {dims?: int[] (default all), keepdim}
void op_sum(OpCtx& c) {
  c.expect_inputs(1);
  const Tensor& x0 = c.input(0);
  std::vector<int64_t> axes = c.has_attr("dims") ? c.ints("dims") : all_axes(x0.dim());
  bool keep = c.b("keepdim", false);
  bool is_int = !dtype_is_float(x0.dtype);
  ORI r = to_ori(c, is_int ? cast(x0, DType::I64) : cast(x0, DType::F32), axes, [](const Tensor& t) { return contiguous(t); });
  Tensor out = Tensor::empty(keep ? r.out_shape_keep : r.out_shape, is_int ? DType::I64 : DType::F32);
  const int64_t O = r.O, R = r.R, I = r.I;
  if (is_int) {
    const int64_t* X = r.x.data<int64_t>();
    int64_t* Y = out.data<int64_t>();
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) {
        int64_t s = 0;
        for (int64_t k = 0; k < R; k++) s += X[(o * R + k) * I + i];
        Y[o * I + i] = s;
      }
    c.out.push_back(out);
    return;
  }
  const float* X = r.x.data<float>();
  float* Y = out.data<float>();
  if (I == 1) {
    parallel_for(O, std::max<int64_t>(1, 65536 / std::max<int64_t>(R, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; o++) {
        const float* p = X + o * R;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t k = 0;
        for (; k + 4 <= R; k += 4) { s0 += p[k]; s1 += p[k + 1]; s2 += p[k + 2]; s3 += p[k + 3]; }
        for (; k < R; k++) s0 += p[k];
        Y[o] = (float)((s0 + s1) + (s2 + s3));
      }
    });
  } else {
    // column sums: each task owns a block of I for one o
    int64_t IB = 256;
    int64_t nib = (I + IB - 1) / IB;
    parallel_for(O * nib, std::max<int64_t>(1, 65536 / std::max<int64_t>(R * IB, 1)), [&](int64_t b, int64_t e) {
      std::vector<double> acc(IB);
      for (int64_t t = b; t < e; t++) {
        int64_t o = t / nib, i0 = (t % nib) * IB, i1 = std::min(I, i0 + IB);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t k = 0; k < R; k++) {
          add_f64(acc.data(), X + (o * R + k) * I + i0, i1 - i0);
        }
        for (int64_t i = i0; i < i1; i++) Y[o * I + i] = (float)acc[i - i0];
      }
    });
  }
  c.out.push_back(out);
}

namespace {
void max_impl(OpCtx& c, bool want_values) {
  c.expect_inputs(1);
  const Tensor& x0 = c.input(0);
  bool keep = c.b("keepdim", false);
  bool all = !c.has_attr("dim");
  Tensor src = x0;
  if (all) {
    src = contiguous(x0);
    src = src.view({src.numel()}, {1}, src.offset);
  }
  int64_t dim = all ? 0 : norm_axis(c, c.i("dim"), x0.dim());
  if (src.dim() > 0 && src.shape[dim] == 0) c.fail("ValueError", "cannot take the max of an empty dimension");
  if (src.numel() == 0 && all) c.fail("ValueError", "cannot take the max of an empty tensor");
  bool is_int = !dtype_is_float(x0.dtype);
  ORI r = to_ori(c, cast(src, is_int ? DType::I64 : DType::F32), src.dim() ? std::vector<int64_t>{dim} : std::vector<int64_t>{}, [](const Tensor& t) { return contiguous(t); });
  std::vector<int64_t> shp = all ? std::vector<int64_t>{} : (keep ? r.out_shape_keep : r.out_shape);
  Tensor vals = Tensor::empty(shp, is_int ? DType::I64 : DType::F32);
  Tensor idx = Tensor::empty(shp, DType::I64);
  int64_t O = r.O, R = r.R, I = r.I;
  auto run = [&](const auto* X, auto* V) {
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) {
        int64_t best = 0;
        auto bv = X[o * R * I + i];
        for (int64_t k = 1; k < R; k++) {
          auto v = X[(o * R + k) * I + i];
          if (bv != bv) break;  // NaN wins, like torch
          if (v > bv || v != v) { bv = v; best = k; }
        }
        V[o * I + i] = bv;
        idx.data<int64_t>()[o * I + i] = best;
      }
  };
  if (is_int) run(r.x.data<int64_t>(), vals.data<int64_t>());
  else run(r.x.data<float>(), vals.data<float>());
  if (want_values) c.out.push_back(is_int ? cast(vals, x0.dtype) : vals);
  c.out.push_back(idx);
}
}  // namespace

// max(x) {dim?, keepdim} -> values, indices (i64; index along dim, or into the flattened tensor)
void op_max(OpCtx& c) { max_impl(c, true); }
// argmax(x) {dim?, keepdim} -> indices
void op_argmax(OpCtx& c) { max_impl(c, false); }

}  // namespace ad
