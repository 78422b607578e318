// matview.h — how matmul operands are handed to a GEMM (shared by the CPU ops in matmul.cpp and the CUDA slots
// in native/cuda_ops.cpp): transposed views become transpose flags, broadcast batch dims become offsets.
#pragma once
#include <algorithm>
#include <vector>

#include "../op.h"
#include "../tensor.h"

namespace ad {

// How a (rows, cols) matrix view is handed to the GEMM.
struct MatView {
  bool trans;
  int64_t ld;
};
inline bool mat_view(const Tensor& t, MatView* mv) {
  int64_t nd = t.dim();
  int64_t r = t.shape[nd - 2], c = t.shape[nd - 1];
  int64_t sr = t.strides[nd - 2], sc = t.strides[nd - 1];
  if ((sc == 1 || c == 1) && sr >= std::max<int64_t>(c, 1)) { *mv = {false, std::max<int64_t>(sr, 1)}; return true; }
  if ((sr == 1 || r == 1) && sc >= std::max<int64_t>(r, 1)) { *mv = {true, std::max<int64_t>(sc, 1)}; return true; }
  if (r == 1 && c == 1) { *mv = {false, 1}; return true; }
  return false;
}

// Offsets (elements, relative to the view offset) of each broadcast batch entry.
inline std::vector<int64_t> batch_offsets(const Tensor& t, const std::vector<int64_t>& bshape) {
  int64_t nb = (int64_t)bshape.size(), tb = t.dim() - 2;
  int64_t n = shape_numel(bshape);
  std::vector<int64_t> off(n);
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, o = 0;  // relative to t.data<T>(), which already includes the view offset
    for (int64_t d = nb - 1; d >= 0; d--) {
      int64_t k = rem % bshape[d];
      rem /= bshape[d];
      int64_t td = d - (nb - tb);
      if (td >= 0 && t.shape[td] != 1) o += k * t.strides[td];
    }
    off[i] = o;
  }
  return off;
}

// matmul's operands after torch.matmul's 1-D promotion: a (..., M, K), b (..., K, N), broadcast batch shape.
struct MatmulShapes {
  Tensor a, b;
  bool a1, b1;  // promoted from 1-D (their dims are dropped from the result)
  int64_t M, K, N;
  std::vector<int64_t> bshape;
};
inline MatmulShapes matmul_shapes(const OpCtx& c, Tensor a, Tensor b) {
  if (a.dim() == 0 || b.dim() == 0) c.fail("ShapeError", "both arguments must be at least 1-D, got " + shape_str(a.shape) + " and " + shape_str(b.shape));
  MatmulShapes s;
  s.a1 = a.dim() == 1;
  s.b1 = b.dim() == 1;
  if (s.a1) a = a.view({1, a.shape[0]}, {a.shape[0] * a.strides[0], a.strides[0]}, a.offset);
  if (s.b1) b = b.view({b.shape[0], 1}, {b.strides[0], 1}, b.offset);
  s.M = a.shape[a.dim() - 2];
  s.K = a.shape[a.dim() - 1];
  s.N = b.shape[b.dim() - 1];
  if (b.shape[b.dim() - 2] != s.K)
    c.fail("ShapeError", "shapes " + shape_str(c.input(0).shape) + " and " + shape_str(c.input(1).shape) + " cannot be multiplied (" +
                             std::to_string(s.K) + " vs " + std::to_string(b.shape[b.dim() - 2]) + ")");
  std::vector<int64_t> ab(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  s.bshape = broadcast_shapes(c, ab, bb);
  s.a = a;
  s.b = b;
  return s;
}

// linear's operands: x (..., in), w (out, in) or Conv1D (in, out), optional bias (out); validated like nn.Linear.
struct LinearShapes {
  bool conv;
  int64_t in, outf;
};
// mixed (autocast on the CPU): x and w may each be f32 or bf16.
inline bool mixed_operand(DType d) { return d == DType::F32 || d == DType::BF16; }
inline LinearShapes linear_shapes(const OpCtx& c, const Tensor& x, const Tensor& w, bool mixed = false) {
  const std::string layout = c.s("layout", "linear");
  if (layout != "linear" && layout != "conv1d") c.fail("ValueError", "layout must be 'linear' or 'conv1d', got '" + layout + "'");
  const bool conv = layout == "conv1d";
  if (mixed && (!mixed_operand(x.dtype) || !mixed_operand(w.dtype)))
    c.fail("DTypeError", std::string("mixed-precision linear needs f32 or bf16 input and weight, got ") + dtype_name(x.dtype) + " and " + dtype_name(w.dtype));
  if (!mixed && (!dtype_is_float(x.dtype) || x.dtype != w.dtype))
    c.fail("DTypeError", std::string("input and weight must share a floating dtype, got ") + dtype_name(x.dtype) + " and " + dtype_name(w.dtype));
  if (w.dim() != 2) c.fail("ShapeError", "weight must be 2-D, got " + shape_str(w.shape));
  if (x.dim() == 0) c.fail("ShapeError", "input must be at least 1-D");
  const int64_t in = conv ? w.shape[0] : w.shape[1], outf = conv ? w.shape[1] : w.shape[0];
  if (x.shape.back() != in)
    c.fail("ShapeError", "input " + shape_str(x.shape) + " does not match weight " + shape_str(w.shape) + " (" + layout + " layout expects last dim " + std::to_string(in) + ")");
  if (c.has(2)) {
    const Tensor& b = c.input(2);
    if (b.dim() != 1 || b.shape[0] != outf) c.fail("ShapeError", "bias must be [" + std::to_string(outf) + "], got " + shape_str(b.shape));
  }
  return {conv, in, outf};
}

// The result's shape: batch dims, then M and N unless promoted.
inline std::vector<int64_t> matmul_out_shape(const MatmulShapes& s) {
  std::vector<int64_t> f = s.bshape;
  if (!s.a1) f.push_back(s.M);
  if (!s.b1) f.push_back(s.N);
  return f;
}

}  // namespace ad
