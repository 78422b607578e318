// elementwise.cpp — broadcasting binary ops, comparisons, unary maths and activations (forward), their
// activation backward (activation_bwd), scalar affine/pow/clamp, where and masked_fill.
// Shapes: outputs take the broadcast shape of the inputs and are contiguous. Float inputs compute in f32;
// integer inputs of add/sub/mul/maximum/minimum compute in i64 (i32 when both are i32).
// References: https://pytorch.org/docs/stable/nn.functional.html (gelu, silu, ...).
#include <cmath>
#include <functional>

#include "unary.h"
#include "../op.h"
#include "../threadpool.h"

namespace ad {
namespace {

// Iteration plan over a broadcast: dims coalesced, per-operand strides (elements).
struct Plan {
  std::vector<int64_t> shape;
  std::vector<std::vector<int64_t>> strides;  // [operand][dim]; operand 0 = output
};

Plan make_plan(const std::vector<int64_t>& shape, const std::vector<std::vector<int64_t>>& strides) {
  Plan p;
  size_t nops = strides.size();
  p.strides.resize(nops);
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 1) continue;
    if (!p.shape.empty()) {
      bool merge = true;
      for (size_t o = 0; o < nops; o++)
        if (p.strides[o].back() != strides[o][d] * shape[d]) { merge = false; break; }
      if (merge) {
        p.shape.back() *= shape[d];
        for (size_t o = 0; o < nops; o++) p.strides[o].back() = strides[o][d];
        continue;
      }
    }
    p.shape.push_back(shape[d]);
    for (size_t o = 0; o < nops; o++) p.strides[o].push_back(strides[o][d]);
  }
  if (p.shape.empty()) {
    p.shape.push_back(1);
    for (size_t o = 0; o < nops; o++) p.strides[o].push_back(0);
  }
  return p;
}

// Calls row(offsets[], len, inner_strides[]) for each innermost row, in parallel. A long row (a contiguous op
// coalesces to a single one) is cut into pieces of kPiece elements, so that it is still shared by the threads.
constexpr int64_t kPiece = 16384;
template <int N, typename F>
void for_rows(const Plan& p, F&& row) {
  int64_t nd = (int64_t)p.shape.size();
  int64_t inner = p.shape[nd - 1];
  int64_t rows = 1;
  for (int64_t d = 0; d < nd - 1; d++) rows *= p.shape[d];
  int64_t is[N];
  for (int o = 0; o < N; o++) is[o] = p.strides[o][nd - 1];
  const int64_t pieces = inner > 2 * kPiece ? (inner + kPiece - 1) / kPiece : 1;
  const int64_t plen = pieces > 1 ? kPiece : inner;
  parallel_for(rows * pieces, std::max<int64_t>(1, 32768 / std::max<int64_t>(plen, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t r = t / pieces, j0 = (t % pieces) * plen;
      int64_t off[N] = {0};
      int64_t rem = r;
      for (int64_t d = nd - 2; d >= 0; d--) {
        int64_t i = rem % p.shape[d];
        rem /= p.shape[d];
        for (int o = 0; o < N; o++) off[o] += i * p.strides[o][d];
      }
      for (int o = 0; o < N; o++) off[o] += j0 * is[o];
      row(off, std::min(plen, inner - j0), is);
    }
  });
}

enum BinOp { B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE, B_AND, B_OR };

template <typename T> inline T bin_apply(BinOp op, T a, T b) {
  switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAX: return (a != a) ? a : (a > b ? a : b);  // NaN propagates like torch.maximum
    case B_MIN: return (a != a) ? a : (a < b ? a : b);
    default: return a;
  }
}
template <typename T> inline uint8_t cmp_apply(BinOp op, T a, T b) {
  switch (op) {
    case B_EQ: return a == b;
    case B_NE: return a != b;
    case B_LT: return a < b;
    case B_LE: return a <= b;
    case B_GT: return a > b;
    case B_GE: return a >= b;
    case B_AND: return (a != 0) && (b != 0);
    case B_OR: return (a != 0) || (b != 0);
    default: return 0;
  }
}

// Contiguous fast paths that vectorise.
AD_CLONES void vadd(float* o, const float* a, const float* b, int64_t n) { for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i]; }
AD_CLONES void vacc(float* d, const float* s, int64_t n) { for (int64_t i = 0; i < n; i++) d[i] += s[i]; }
AD_CLONES void vsub(float* o, const float* a, const float* b, int64_t n) { for (int64_t i = 0; i < n; i++) o[i] = a[i] - b[i]; }
AD_CLONES void vmul(float* o, const float* a, const float* b, int64_t n) { for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[i]; }
AD_CLONES void vdiv(float* o, const float* a, const float* b, int64_t n) { for (int64_t i = 0; i < n; i++) o[i] = a[i] / b[i]; }
AD_CLONES void vadd_s(float* o, const float* a, float b, int64_t n) { for (int64_t i = 0; i < n; i++) o[i] = a[i] + b; }
AD_CLONES void vmul_s(float* o, const float* a, float b, int64_t n) { for (int64_t i = 0; i < n; i++) o[i] = a[i] * b; }

DType compute_type(const OpCtx& ctx, DType a, DType b) {
  if (dtype_is_float(a) || dtype_is_float(b)) return DType::F32;
  if (a == DType::I64 || b == DType::I64) return DType::I64;
  if (a == DType::BOOL && b == DType::BOOL) return DType::I32;
  (void)ctx;
  return DType::I32;
}

template <typename T>
void binary_typed(BinOp op, bool cmp, const Tensor& a, const Tensor& b, Tensor& out) {
  Plan p = make_plan(out.shape, {out.strides, broadcast_strides(a, out.shape), broadcast_strides(b, out.shape)});
  const T* A = a.data<T>();
  const T* B = b.data<T>();
  if (cmp) {
    uint8_t* O = out.data<uint8_t>();
    for_rows<3>(p, [&](const int64_t* off, int64_t n, const int64_t* is) {
      for (int64_t j = 0; j < n; j++) O[off[0] + j * is[0]] = cmp_apply<T>(op, A[off[1] + j * is[1]], B[off[2] + j * is[2]]);
    });
    return;
  }
  T* O = out.data<T>();
  for_rows<3>(p, [&](const int64_t* off, int64_t n, const int64_t* is) {
    if constexpr (std::is_same<T, float>::value) {
      if (is[0] == 1 && is[1] == 1 && is[2] == 1) {
        float* o = O + off[0]; const float* x = A + off[1]; const float* y = B + off[2];
        switch (op) {
          case B_ADD: vadd(o, x, y, n); return;
          case B_SUB: vsub(o, x, y, n); return;
          case B_MUL: vmul(o, x, y, n); return;
          case B_DIV: vdiv(o, x, y, n); return;
          default: break;
        }
      } else if (is[0] == 1 && is[1] == 1 && is[2] == 0) {
        float* o = O + off[0]; const float* x = A + off[1]; float y = B[off[2]];
        if (op == B_ADD) { vadd_s(o, x, y, n); return; }
        if (op == B_SUB) { vadd_s(o, x, -y, n); return; }
        if (op == B_MUL) { vmul_s(o, x, y, n); return; }
      }
    }
    for (int64_t j = 0; j < n; j++) O[off[0] + j * is[0]] = bin_apply<T>(op, A[off[1] + j * is[1]], B[off[2] + j * is[2]]);
  });
}

void binary(OpCtx& ctx, BinOp op, bool cmp) {
  ctx.expect_inputs(2);
  const Tensor& a0 = ctx.input(0);
  const Tensor& b0 = ctx.input(1);
  auto shape = broadcast_shapes(ctx, a0.shape, b0.shape);
  DType ct = compute_type(ctx, a0.dtype, b0.dtype);
  if (op == B_DIV && ct != DType::F32) ct = DType::F32;  // true division, like torch.div
  Tensor a = cast(a0, ct), b = cast(b0, ct);
  Tensor out = Tensor::empty(shape, cmp ? DType::BOOL : ct);
  if (out.numel() > 0) {
    if (ct == DType::F32) binary_typed<float>(op, cmp, a, b, out);
    else if (ct == DType::I64) binary_typed<int64_t>(op, cmp, a, b, out);
    else binary_typed<int32_t>(op, cmp, a, b, out);
  }
  ctx.out.push_back(out);
}

// ---- unary ----------------------------------------------------------------------------------------
AD_CLONES void unary_loop(UnOp op, float* o, const float* x, int64_t n) {
  switch (op) {  // the common cheap ones get straight loops so they vectorise
    case U_NEG: for (int64_t i = 0; i < n; i++) o[i] = -x[i]; return;
    case U_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 || x[i] != x[i] ? x[i] : 0.f; return;  // (NaN stays NaN, as torch)
    case U_ABS: for (int64_t i = 0; i < n; i++) o[i] = std::fabs(x[i]); return;
    case U_SQRT: for (int64_t i = 0; i < n; i++) o[i] = std::sqrt(x[i]); return;
    // activations built on vexp / verf: a constant op inlines to branch-free code that vectorises
    case U_GELU: for (int64_t i = 0; i < n; i++) o[i] = un_apply(U_GELU, x[i]); return;
    case U_GELU_TANH: for (int64_t i = 0; i < n; i++) o[i] = un_apply(U_GELU_TANH, x[i]); return;
    case U_SILU: for (int64_t i = 0; i < n; i++) o[i] = un_apply(U_SILU, x[i]); return;
    case U_SIGMOID: for (int64_t i = 0; i < n; i++) o[i] = un_apply(U_SIGMOID, x[i]); return;
    case U_QUICK_GELU: for (int64_t i = 0; i < n; i++) o[i] = un_apply(U_QUICK_GELU, x[i]); return;
    default: for (int64_t i = 0; i < n; i++) o[i] = un_apply(op, x[i]);
  }
}

// o = g * act'(x), with the same per-op loops as unary_loop.
AD_CLONES void act_grad_loop(UnOp op, float* o, const float* g, const float* x, int64_t n) {
  switch (op) {
    case U_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? g[i] : 0.f; return;
    case U_GELU: for (int64_t i = 0; i < n; i++) o[i] = g[i] * un_grad(U_GELU, x[i]); return;
    case U_GELU_TANH: for (int64_t i = 0; i < n; i++) o[i] = g[i] * un_grad(U_GELU_TANH, x[i]); return;
    case U_SILU: for (int64_t i = 0; i < n; i++) o[i] = g[i] * un_grad(U_SILU, x[i]); return;
    case U_SIGMOID: for (int64_t i = 0; i < n; i++) o[i] = g[i] * un_grad(U_SIGMOID, x[i]); return;
    case U_QUICK_GELU: for (int64_t i = 0; i < n; i++) o[i] = g[i] * un_grad(U_QUICK_GELU, x[i]); return;
    default: for (int64_t i = 0; i < n; i++) o[i] = g[i] * un_grad(op, x[i]);
  }
}

void unary(OpCtx& ctx, UnOp op) {
  ctx.expect_inputs(1);
  const Tensor& x0 = ctx.input(0);
  if (!dtype_is_float(x0.dtype) && op != U_NEG && op != U_ABS && op != U_SIGN && op != U_RELU) {
    // integer inputs promote to float for transcendental ops, like torch
  }
  if ((op == U_NEG || op == U_ABS || op == U_SIGN) && (x0.dtype == DType::I64 || x0.dtype == DType::I32)) {
    Tensor x = contiguous(cast(x0, DType::I64));
    Tensor o = Tensor::empty(x.shape, DType::I64);
    const int64_t* X = x.data<int64_t>(); int64_t* O = o.data<int64_t>();
    for (int64_t i = 0; i < x.numel(); i++)
      O[i] = op == U_NEG ? -X[i] : op == U_ABS ? (X[i] < 0 ? -X[i] : X[i]) : (X[i] > 0) - (X[i] < 0);
    ctx.out.push_back(cast(o, x0.dtype));
    return;
  }
  Tensor x = contiguous(cast(x0, DType::F32));
  // out_bf16 (CPU autocast, an activation whose consumer is a bf16 GEMM that would round it anyway): the result is
  // written as bf16 (f32_to_bf16's rounding), half the bytes to write and for the GEMM to read
  const bool out16 = ctx.i("out_bf16", 0) != 0;
  Tensor o = Tensor::empty(x.shape, out16 ? DType::BF16 : DType::F32);
  const float* X = x.data<float>();
  float* O = out16 ? nullptr : o.data<float>();
  uint16_t* O16 = out16 ? o.data<uint16_t>() : nullptr;
  // save_bf16 (CPU autocast): also a bf16 copy of an f32 input, for the backward, written by the same pass
  const bool save16 = ctx.i("save_bf16", 0) && x0.dtype == DType::F32;
  Tensor xb = save16 ? Tensor::empty(x.shape, DType::BF16) : Tensor();
  uint16_t* XB = save16 ? xb.data<uint16_t>() : nullptr;
  parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
    if (O16) {
      alignas(64) float buf[2048];
      for (int64_t s = b; s < e; s += 2048) {
        const int64_t m = std::min<int64_t>(2048, e - s);
        unary_loop(op, buf, X + s, m);
        f32_to_bf16_run(O16 + s, buf, m);
      }
    } else {
      unary_loop(op, O + b, X + b, e - b);
    }
    if (XB) f32_to_bf16_run(XB + b, X + b, e - b);
  });
  ctx.out.push_back(o);
  if (save16) ctx.out.push_back(xb);
}

UnOp parse_act(const OpCtx& ctx, const std::string& k) {
  static const std::pair<const char*, UnOp> m[] = {{"relu", U_RELU}, {"gelu", U_GELU}, {"gelu_tanh", U_GELU_TANH},
      {"quick_gelu", U_QUICK_GELU}, {"silu", U_SILU}, {"tanh", U_TANH}, {"sigmoid", U_SIGMOID}, {"atan", U_ATAN}};
  for (auto& e : m) if (k == e.first) return e.second;
  ctx.fail("ValueError", "unknown activation '" + k + "'");
}

}  // namespace

void op_add(OpCtx& c) { binary(c, B_ADD, false); }
// accumulate_(dst, src): dst += src in place; two contiguous f32 CPU tensors of one shape. Returns nothing. The tape
// sums a gradient into one it alone holds with it (no new buffer, whose first write would also read every line in).
void op_accumulate_(OpCtx& c) {
  c.expect_inputs(2);
  const Tensor& d = c.input(0);
  const Tensor& s = c.input(1);
  if (d.dtype != DType::F32 || s.dtype != DType::F32 || d.shape != s.shape || !d.is_contiguous() || !s.is_contiguous())
    c.fail("ValueError", "accumulate_: needs two contiguous f32 tensors of one shape, got " + std::string(dtype_name(d.dtype)) +
                             shape_str(d.shape) + " and " + dtype_name(s.dtype) + shape_str(s.shape));
  float* D = d.data<float>();
  const float* S = s.data<float>();
  parallel_for(d.numel(), 1 << 15, [&](int64_t b, int64_t e) { vacc(D + b, S + b, e - b); });
}
void op_sub(OpCtx& c) { binary(c, B_SUB, false); }
void op_mul(OpCtx& c) { binary(c, B_MUL, false); }
void op_div(OpCtx& c) { binary(c, B_DIV, false); }
void op_maximum(OpCtx& c) { binary(c, B_MAX, false); }
void op_minimum(OpCtx& c) { binary(c, B_MIN, false); }
void op_eq(OpCtx& c) { binary(c, B_EQ, true); }
void op_ne(OpCtx& c) { binary(c, B_NE, true); }
void op_lt(OpCtx& c) { binary(c, B_LT, true); }
void op_le(OpCtx& c) { binary(c, B_LE, true); }
void op_gt(OpCtx& c) { binary(c, B_GT, true); }
void op_ge(OpCtx& c) { binary(c, B_GE, true); }
void op_logical_and(OpCtx& c) { binary(c, B_AND, true); }
void op_logical_or(OpCtx& c) { binary(c, B_OR, true); }
void op_logical_not(OpCtx& c) {
  c.expect_inputs(1);
  Tensor x = contiguous(cast(c.input(0), DType::BOOL));
  Tensor o = Tensor::empty(x.shape, DType::BOOL);
  for (int64_t i = 0; i < x.numel(); i++) o.data<uint8_t>()[i] = !x.data<uint8_t>()[i];
  c.out.push_back(o);
}

void op_neg(OpCtx& c) { unary(c, U_NEG); }
void op_exp(OpCtx& c) { unary(c, U_EXP); }
void op_log(OpCtx& c) { unary(c, U_LOG); }
void op_sqrt(OpCtx& c) { unary(c, U_SQRT); }
void op_rsqrt(OpCtx& c) { unary(c, U_RSQRT); }
void op_abs(OpCtx& c) { unary(c, U_ABS); }
void op_sign(OpCtx& c) { unary(c, U_SIGN); }
void op_sin(OpCtx& c) { unary(c, U_SIN); }
void op_cos(OpCtx& c) { unary(c, U_COS); }
void op_relu(OpCtx& c) { unary(c, U_RELU); }
void op_gelu(OpCtx& c) { unary(c, U_GELU); }
void op_gelu_tanh(OpCtx& c) { unary(c, U_GELU_TANH); }
void op_quick_gelu(OpCtx& c) { unary(c, U_QUICK_GELU); }
void op_silu(OpCtx& c) { unary(c, U_SILU); }
void op_tanh(OpCtx& c) { unary(c, U_TANH); }
void op_sigmoid(OpCtx& c) { unary(c, U_SIGMOID); }
void op_atan(OpCtx& c) { unary(c, U_ATAN); }

// activation_bwd(x, gout) {kind} -> gin = gout * act'(x)
void op_activation_bwd(OpCtx& c) {
  c.expect_inputs(2);
  UnOp op = parse_act(c, c.s("kind", ""));
  // a bf16 x (kept by CPU autocast) is widened a chunk at a time, without an f32 copy
  const bool x16 = c.input(0).dtype == DType::BF16;
  Tensor x = x16 ? contiguous(c.input(0)) : c.f32(0), g = c.f32(1);
  if (x.shape != g.shape) c.fail("ShapeError", "x " + shape_str(x.shape) + " vs grad " + shape_str(g.shape));
  Tensor o = Tensor::empty(x.shape, DType::F32);
  const float* G = g.data<float>();
  float* O = o.data<float>();
  if (x16) {
    const uint16_t* X = x.data<uint16_t>();
    parallel_for(x.numel(), 8192, [&](int64_t b, int64_t e) {
      alignas(64) float buf[1024];
      for (int64_t s = b; s < e; s += 1024) {
        const int64_t m = std::min<int64_t>(1024, e - s);
        bf16_to_f32_run(buf, X + s, m);
        act_grad_loop(op, O + s, G + s, buf, m);
      }
    });
  } else {
    const float* X = x.data<float>();
    parallel_for(x.numel(), 8192, [&](int64_t b, int64_t e) { act_grad_loop(op, O + b, G + b, X + b, e - b); });
  }
  c.out.push_back(o);
}

// affine(x) {scale, shift} -> scale * x + shift   (scalar add/sub/mul/div all map here)
void op_affine(OpCtx& c) {
  c.expect_inputs(1);
  float s = (float)c.f("scale", 1), t = (float)c.f("shift", 0);
  Tensor x = c.f32(0);
  Tensor o = Tensor::empty(x.shape, DType::F32);
  const float* X = x.data<float>();
  float* O = o.data<float>();
  parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) O[i] = s * X[i] + t;
  });
  c.out.push_back(o);
}

// pow_scalar(x) {exponent}
void op_pow_scalar(OpCtx& c) {
  c.expect_inputs(1);
  double p = c.f("exponent");
  Tensor x = c.f32(0);
  Tensor o = Tensor::empty(x.shape, DType::F32);
  const float* X = x.data<float>();
  float* O = o.data<float>();
  parallel_for(x.numel(), 8192, [&](int64_t b, int64_t e) {
    if (p == 2.0) for (int64_t i = b; i < e; i++) O[i] = X[i] * X[i];
    else if (p == 1.0) for (int64_t i = b; i < e; i++) O[i] = X[i];
    else if (p == 0.5) for (int64_t i = b; i < e; i++) O[i] = std::sqrt(X[i]);
    else for (int64_t i = b; i < e; i++) O[i] = std::pow(X[i], (float)p);
  });
  c.out.push_back(o);
}

// clamp(x) {min?, max?} = min(max(x, min), max) as torch defines it (so min > max gives max everywhere); NaN stays NaN.
// clamp_bwd(x, gout) passes the gradient where min <= x <= max (torch's rule)
void op_clamp(OpCtx& c) {
  c.expect_inputs(1);
  float lo = (float)c.f("min", -INFINITY), hi = (float)c.f("max", INFINITY);
  Tensor x = c.f32(0);
  Tensor o = Tensor::empty(x.shape, DType::F32);
  const float* X = x.data<float>();
  float* O = o.data<float>();
  parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float v = X[i];
      const float m = v < lo ? lo : v;
      O[i] = v != v ? v : (m > hi ? hi : m);
    }
  });
  c.out.push_back(o);
}
void op_clamp_bwd(OpCtx& c) {
  c.expect_inputs(2);
  float lo = (float)c.f("min", -INFINITY), hi = (float)c.f("max", INFINITY);
  Tensor x = c.f32(0), g = c.f32(1);
  if (x.shape != g.shape) c.fail("ShapeError", "x " + shape_str(x.shape) + " vs grad " + shape_str(g.shape));
  Tensor o = Tensor::empty(x.shape, DType::F32);
  for (int64_t i = 0; i < x.numel(); i++) {
    float v = x.data<float>()[i];
    o.data<float>()[i] = (v >= lo && v <= hi) ? g.data<float>()[i] : 0.f;
  }
  c.out.push_back(o);
}

// where(cond, a, b): broadcasting; a and b float (f32) or integer (computed as i64 then cast back)
void op_where(OpCtx& c) {
  c.expect_inputs(3);
  const Tensor& cond0 = c.input(0);
  if (cond0.dtype != DType::BOOL) c.fail("DTypeError", "condition must be bool, got " + std::string(dtype_name(cond0.dtype)));
  auto shape = broadcast_shapes(c, broadcast_shapes(c, cond0.shape, c.input(1).shape), c.input(2).shape);
  DType ct = compute_type(c, c.input(1).dtype, c.input(2).dtype);
  if (ct == DType::I32) ct = DType::I64;
  Tensor a = cast(c.input(1), ct), b = cast(c.input(2), ct);
  Tensor out = Tensor::empty(shape, ct);
  if (out.numel() == 0) { c.out.push_back(out); return; }
  Plan p = make_plan(shape, {out.strides, broadcast_strides(cond0, shape), broadcast_strides(a, shape), broadcast_strides(b, shape)});
  const uint8_t* C = cond0.data<uint8_t>();
  auto run = [&](auto* O, const auto* A, const auto* B) {
    for_rows<4>(p, [&](const int64_t* off, int64_t n, const int64_t* is) {
      for (int64_t j = 0; j < n; j++)
        O[off[0] + j * is[0]] = C[off[1] + j * is[1]] ? A[off[2] + j * is[2]] : B[off[3] + j * is[3]];
    });
  };
  if (ct == DType::F32) run(out.data<float>(), a.data<float>(), b.data<float>());
  else run(out.data<int64_t>(), a.data<int64_t>(), b.data<int64_t>());
  c.out.push_back(out);
}

// masked_fill(x, mask) {value}: mask (bool) broadcasts to x's shape
void op_masked_fill(OpCtx& c) {
  c.expect_inputs(2);
  const Tensor& x0 = c.input(0);
  const Tensor& m = c.input(1);
  if (m.dtype != DType::BOOL) c.fail("DTypeError", "mask must be bool, got " + std::string(dtype_name(m.dtype)));
  auto shape = broadcast_shapes(c, x0.shape, m.shape);
  if (shape != x0.shape) c.fail("ShapeError", "mask " + shape_str(m.shape) + " does not broadcast to " + shape_str(x0.shape));
  double v = c.f("value");
  DType ct = dtype_is_float(x0.dtype) ? DType::F32 : DType::I64;
  Tensor x = cast(x0, ct);
  Tensor out = Tensor::empty(shape, ct);
  if (out.numel() == 0) { c.out.push_back(out); return; }
  Plan p = make_plan(shape, {out.strides, broadcast_strides(m, shape), broadcast_strides(x, shape)});
  const uint8_t* M = m.data<uint8_t>();
  auto run = [&](auto* O, const auto* X, auto val) {
    for_rows<3>(p, [&](const int64_t* off, int64_t n, const int64_t* is) {
      for (int64_t j = 0; j < n; j++) O[off[0] + j * is[0]] = M[off[1] + j * is[1]] ? val : X[off[2] + j * is[2]];
    });
  };
  if (ct == DType::F32) run(out.data<float>(), x.data<float>(), (float)v);
  else run(out.data<int64_t>(), x.data<int64_t>(), (int64_t)v);
  c.out.push_back(ct == x0.dtype ? out : cast(out, x0.dtype));
}

}  // namespace ad
