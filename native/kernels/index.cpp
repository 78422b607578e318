// index.cpp — embedding lookup and its scatter-add backward, index_select / index_add, gather /
// scatter_add along a dim, and cat. Every index is bounds-checked before any write (IndexError names
// the op, the offending index and the valid range).
#include <algorithm>

#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {

Tensor index_i64(const OpCtx& c, size_t k, const char* what) {
  const Tensor& t = c.input(k);
  if (t.dtype != DType::I64 && t.dtype != DType::I32)
    c.fail("DTypeError", std::string(what) + " must be an integer tensor (i64/i32), got " + dtype_name(t.dtype));
  return contiguous(cast(t, DType::I64));
}

void check_range(const OpCtx& c, const Tensor& idx, int64_t n, const char* what) {
  const int64_t* I = idx.data<int64_t>();
  for (int64_t k = 0; k < idx.numel(); k++)
    if (I[k] < 0 || I[k] >= n)
      c.fail("IndexError", std::string(what) + " " + std::to_string(I[k]) + " is out of range [0, " + std::to_string(n) + ")");
}

}  // namespace

// embedding(ids, weight) -> weight[ids]: ids (...) integer, weight (V, C) -> (..., C)
void op_embedding(OpCtx& c) {
  c.expect_inputs(2);
  Tensor ids = index_i64(c, 0, "ids");
  const Tensor& w0 = c.input(1);
  if (w0.dim() != 2) c.fail("ShapeError", "weight must be 2-D (num_embeddings, dim), got " + shape_str(w0.shape));
  Tensor w = contiguous(w0);
  int64_t V = w.shape[0], C = w.shape[1];
  check_range(c, ids, V, "id");
  std::vector<int64_t> shp = ids.shape;
  shp.push_back(C);
  Tensor out = Tensor::empty(shp, w.dtype);
  size_t es = dtype_size(w.dtype);
  const int64_t* I = ids.data<int64_t>();
  char* O = static_cast<char*>(out.raw());
  const char* W = static_cast<const char*>(w.raw());
  parallel_for(ids.numel(), 64, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) std::memcpy(O + k * C * es, W + I[k] * C * es, C * es);
  });
  c.out.push_back(out);
}

// embedding_bwd(ids, gout) {num_embeddings} -> dweight (V, C), rows scatter-added. Parallel over
// column blocks so no two threads write the same element (deterministic order).
void op_embedding_bwd(OpCtx& c) {
  c.expect_inputs(2);
  Tensor ids = index_i64(c, 0, "ids");
  Tensor g = c.f32(1);
  int64_t V = c.i("num_embeddings");
  int64_t C = g.dim() ? g.shape.back() : 1;
  if (g.numel() != ids.numel() * C) c.fail("ShapeError", "grad " + shape_str(g.shape) + " vs ids " + shape_str(ids.shape));
  check_range(c, ids, V, "id");
  Tensor dw = Tensor::zeros({V, C}, DType::F32);
  const int64_t* I = ids.data<int64_t>();
  const float* G = g.data<float>();
  float* D = dw.data<float>();
  int64_t n = ids.numel();
  parallel_for(C, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t k = 0; k < n; k++) {
      float* d = D + I[k] * C;
      const float* gr = G + k * C;
      for (int64_t j = c0; j < c1; j++) d[j] += gr[j];
    }
  });
  c.out.push_back(dw);
}

namespace {
struct DimGeo { int64_t O, N, I; };
DimGeo dim_geo(const Tensor& t, int64_t d) {
  DimGeo g{1, t.shape[d], 1};
  for (int64_t k = 0; k < d; k++) g.O *= t.shape[k];
  for (int64_t k = d + 1; k < t.dim(); k++) g.I *= t.shape[k];
  return g;
}
}  // namespace

// index_select(x, idx) {dim}: idx 1-D
void op_index_select(OpCtx& c) {
  c.expect_inputs(2);
  Tensor x = contiguous(c.input(0));
  Tensor idx = index_i64(c, 1, "index");
  if (idx.dim() > 1) c.fail("ShapeError", "index must be 1-D, got " + shape_str(idx.shape));
  int64_t d = norm_axis(c, c.i("dim", 0), x.dim());
  if (x.dim() == 0) c.fail("ShapeError", "index_select on a 0-d tensor");
  DimGeo g = dim_geo(x, d);
  check_range(c, idx, g.N, "index");
  auto shp = x.shape;
  int64_t K = idx.numel();
  shp[d] = K;
  Tensor out = Tensor::empty(shp, x.dtype);
  size_t es = dtype_size(x.dtype);
  const int64_t* I = idx.data<int64_t>();
  for (int64_t o = 0; o < g.O; o++)
    for (int64_t k = 0; k < K; k++)
      std::memcpy(static_cast<char*>(out.raw()) + ((o * K + k) * g.I) * es,
                  static_cast<const char*>(x.raw()) + ((o * g.N + I[k]) * g.I) * es, g.I * es);
  c.out.push_back(out);
}

// index_add(base, idx, src) {dim}: out = base.clone(); out.index_add_(dim, idx, src) (f32)
void op_index_add(OpCtx& c) {
  c.expect_inputs(3);
  Tensor base = c.f32(0);
  Tensor idx = index_i64(c, 1, "index");
  Tensor src = c.f32(2);
  int64_t d = norm_axis(c, c.i("dim", 0), base.dim());
  DimGeo g = dim_geo(base, d);
  auto want = base.shape;
  want[d] = idx.numel();
  if (src.shape != want) c.fail("ShapeError", "source " + shape_str(src.shape) + " must be " + shape_str(want));
  check_range(c, idx, g.N, "index");
  Tensor out = Tensor::empty(base.shape, DType::F32);
  copy_into(out, base);
  const int64_t* I = idx.data<int64_t>();
  int64_t K = idx.numel();
  for (int64_t o = 0; o < g.O; o++)
    for (int64_t k = 0; k < K; k++) {
      float* dst = out.data<float>() + (o * g.N + I[k]) * g.I;
      const float* s = src.data<float>() + (o * K + k) * g.I;
      for (int64_t j = 0; j < g.I; j++) dst[j] += s[j];
    }
  c.out.push_back(out);
}

// gather(x, idx) {dim}: out[i][j][k] = x[i][idx[i][j][k]][k] (dim = 1); idx same rank as x, and
// idx.size(e) <= x.size(e) for e != dim (PyTorch's rule)
void op_gather(OpCtx& c) {
  c.expect_inputs(2);
  Tensor x = contiguous(c.input(0));
  Tensor idx = index_i64(c, 1, "index");
  int64_t d = norm_axis(c, c.i("dim", 0), x.dim());
  if (idx.dim() != x.dim()) c.fail("ShapeError", "index " + shape_str(idx.shape) + " must have the rank of input " + shape_str(x.shape));
  for (int64_t e = 0; e < x.dim(); e++)
    if (e != d && idx.shape[e] > x.shape[e])
      c.fail("ShapeError", "index " + shape_str(idx.shape) + " exceeds input " + shape_str(x.shape) + " at dim " + std::to_string(e));
  check_range(c, idx, x.dim() ? x.shape[d] : 1, "index");
  Tensor out = Tensor::empty(idx.shape, x.dtype);
  size_t es = dtype_size(x.dtype);
  int64_t n = idx.numel(), nd = idx.dim();
  const int64_t* I = idx.data<int64_t>();
  for (int64_t k = 0; k < n; k++) {
    int64_t rem = k, off = 0;
    for (int64_t e = nd - 1; e >= 0; e--) {
      int64_t i = rem % idx.shape[e];
      rem /= idx.shape[e];
      off += (e == d ? I[k] : i) * x.strides[e];
    }
    std::memcpy(static_cast<char*>(out.raw()) + k * es, static_cast<const char*>(x.raw()) + off * es, es);
  }
  c.out.push_back(out);
}

// scatter_add(base, idx, src) {dim}: out = base.clone(); out.scatter_add_(dim, idx, src)  (f32)
void op_scatter_add(OpCtx& c) {
  c.expect_inputs(3);
  Tensor base = c.f32(0);
  Tensor idx = index_i64(c, 1, "index");
  Tensor src = c.f32(2);
  int64_t d = norm_axis(c, c.i("dim", 0), base.dim());
  if (idx.shape != src.shape) c.fail("ShapeError", "index " + shape_str(idx.shape) + " and source " + shape_str(src.shape) + " differ");
  if (idx.dim() != base.dim()) c.fail("ShapeError", "index rank must match input " + shape_str(base.shape));
  for (int64_t e = 0; e < base.dim(); e++)
    if (e != d && idx.shape[e] > base.shape[e]) c.fail("ShapeError", "index " + shape_str(idx.shape) + " exceeds " + shape_str(base.shape));
  check_range(c, idx, base.shape[d], "index");
  Tensor out = Tensor::empty(base.shape, DType::F32);
  copy_into(out, base);
  int64_t n = idx.numel(), nd = idx.dim();
  const int64_t* I = idx.data<int64_t>();
  for (int64_t k = 0; k < n; k++) {
    int64_t rem = k, off = 0;
    for (int64_t e = nd - 1; e >= 0; e--) {
      int64_t i = rem % idx.shape[e];
      rem /= idx.shape[e];
      off += (e == d ? I[k] : i) * out.strides[e];
    }
    out.data<float>()[off] += src.data<float>()[k];
  }
  c.out.push_back(out);
}

// cat(t0, t1, ...) {dim}: all same dtype and same shape except along dim
void op_cat(OpCtx& c) {
  if (c.n_in() == 0) c.fail("ValueError", "needs at least one tensor");
  c.expect_inputs(c.n_in());
  const Tensor& f = c.input(0);
  int64_t d = norm_axis(c, c.i("dim", 0), f.dim());
  if (f.dim() == 0) c.fail("ShapeError", "cannot concatenate 0-d tensors");
  auto shp = f.shape;
  int64_t total = 0;
  for (size_t k = 0; k < c.n_in(); k++) {
    const Tensor& t = c.input(k);
    if (t.dtype != f.dtype) c.fail("DTypeError", "tensor #" + std::to_string(k) + " is " + dtype_name(t.dtype) + ", expected " + dtype_name(f.dtype));
    if (t.dim() != f.dim()) c.fail("ShapeError", "tensor #" + std::to_string(k) + " " + shape_str(t.shape) + " vs " + shape_str(f.shape));
    for (int64_t e = 0; e < f.dim(); e++)
      if (e != d && t.shape[e] != f.shape[e])
        c.fail("ShapeError", "tensor #" + std::to_string(k) + " " + shape_str(t.shape) + " vs " + shape_str(f.shape) + " off dim " + std::to_string(d));
    total += t.shape[d];
  }
  shp[d] = total;
  Tensor out = Tensor::empty(shp, f.dtype, f.device());  // (also the CUDA slot: copy_into moves device slices)
  int64_t at = 0;
  for (size_t k = 0; k < c.n_in(); k++) {
    const Tensor& t = c.input(k);
    auto sh = out.shape;
    sh[d] = t.shape[d];
    copy_into(out.view(sh, out.strides, at * out.strides[d]), t);
    at += t.shape[d];
  }
  c.out.push_back(out);
}

}  // namespace ad
