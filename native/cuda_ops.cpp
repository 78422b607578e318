// cuda_ops.cpp — the CUDA slots of the op table: host code that checks an op's CUDA inputs and calls the kernels
// of libadapters_cuda.so (cuda/, C ABI in cuda/adapters_cuda.h) through native/cuda_loader. Every op here
// validates like its CPU twin (same messages); dtype/layout cases without a CUDA kernel yet throw a DeviceError
// naming the op rather than falling back to the CPU.
//
// CUDA ops so far: matmul (f32 and bf16 inputs, f32 accumulation; batched and broadcast batch dims), linear
// (incl. bias and the Conv1D layout), adamw_step (all parameters in one launch per step count), the elementwise
// family (add/sub/mul/div/maximum/minimum with broadcasting, unary maths and activations with their backward,
// affine, pow), casts f32 <-> bf16, clones / copies incl. strided gathers, and the row-wise family (softmax and
// log-softmax, layer / RMS norm, sums over any axes, embedding, cross-entropy; forward and backward), and
// scaled dot-product attention with masks, prefix keys/values and grouped-query heads (forward and backward).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cuda_loader.h"
#include "kernels/attention.h"
#include "kernels/matview.h"
#include "kernels/reduce_geo.h"
#include "kernels/unary.h"
#include "op.h"

namespace ad {
namespace {

Tensor copy_as(const OpCtx& c, const Tensor& t, DType dt);

// The device of the op's inputs, which must all be on it (like torch: no implicit copies between devices).
Device op_device(const OpCtx& c) {
  Device d{};
  bool first = true;
  for (size_t k = 0; k < c.in.size(); k++) {
    if (!c.present[k]) continue;
    if (first) d = c.in[k].device();
    else if (!(c.in[k].device() == d))
      c.fail("DeviceError", "expected all tensors on one device, but input #" + std::to_string(k) + " is on " + c.in[k].device().str() +
                                " and input #0 on " + d.str());
    first = false;
  }
  return d;
}

// C (device) = op(A)·op(B) (+ beta·C) through the library's f32 or bf16 GEMM; offsets in elements. C is f32, or bf16
// when c_bf16 (bf16 operands only: the epilogue rounds, no f32 copy of the result).
void gemm(const OpCtx& c, const CudaApi& api, DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& a,
          int64_t aoff, int64_t lda, const Tensor& b, int64_t boff, int64_t ldb, float beta, void* C, int64_t ldc, float alpha = 1.f,
          bool c_bf16 = false) {
  int rc;
  if (dt == DType::BF16 && c_bf16)
    rc = api.gemm_bf16_out(ta, tb, M, N, K, alpha, static_cast<const uint16_t*>(a.st->data) + aoff, lda,
                           static_cast<const uint16_t*>(b.st->data) + boff, ldb, beta, static_cast<uint16_t*>(C), ldc, nullptr);
  else if (dt == DType::BF16)
    rc = api.gemm_bf16(ta, tb, M, N, K, alpha, static_cast<const uint16_t*>(a.st->data) + aoff, lda,
                       static_cast<const uint16_t*>(b.st->data) + boff, ldb, beta, static_cast<float*>(C), ldc, nullptr);
  else
    rc = api.gemm_f32(ta, tb, M, N, K, alpha, static_cast<const float*>(a.st->data) + aoff, lda,
                      static_cast<const float*>(b.st->data) + boff, ldb, beta, static_cast<float*>(C), ldc, nullptr);
  cuda_check(rc, c.name + " on " + a.device().str());
}


// fill() {shape, value, dtype, device: 'cuda[:N]'}: zeros (gradient buffers of slices, token types) by a device
// memset; other values, rare (a backward seed of ones), are filled on the host and uploaded.
void op_fill_cuda(OpCtx& c) {
  Device dev{};
  const std::string ds = c.s("device", "cpu");
  if (!parse_device(ds, &dev) || dev.type != DeviceType::CUDA) c.fail("DeviceError", "unknown device '" + ds + "'");
  if (c.f("value", 0) != 0) {
    ad::op_fill(c);  // kernels/creation.cpp
    c.out[0] = to_device(c.out[0], dev);
    return;
  }
  DType dt = DType::F32;
  const std::string dn = c.s("dtype", "f32");
  if (!dtype_from_name(dn, &dt)) c.fail("DTypeError", "unknown dtype '" + dn + "'");
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
  Tensor o = Tensor::empty(c.ints("shape"), dt, dev);
  if (o.numel() > 0) cuda_check(api.memset(o.raw(), 0, o.nbytes(), nullptr), c.name + " on " + dev.str());
  c.out.push_back(o);
}

void check_gemm_dtypes(const OpCtx& c, DType a, DType b) {
  if (!dtype_is_float(a) || a != b)
    c.fail("DTypeError", std::string("input and weight must share a floating dtype, got ") + dtype_name(a) + " and " + dtype_name(b));
  if (a == DType::F16) c.fail("DeviceError", "f16 GEMMs have no CUDA kernel yet (use f32 or bf16)");
}

void op_matmul_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  Tensor a = c.input(0), b = c.input(1);
  if (!dtype_is_float(a.dtype) || !dtype_is_float(b.dtype) || a.dtype != b.dtype)
    c.fail("DTypeError", std::string("dtype mismatch: ") + dtype_name(a.dtype) + " @ " + dtype_name(b.dtype));
  check_gemm_dtypes(c, a.dtype, b.dtype);
  MatmulShapes ms = matmul_shapes(c, a, b);
  a = ms.a;
  b = ms.b;
  const int64_t M = ms.M, K = ms.K, N = ms.N;
  const auto& bshape = ms.bshape;
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
  MatView va{false, 1}, vb{false, 1};
  if (!mat_view(a, &va)) { a = copy_as(c, a, a.dtype); mat_view(a, &va); }
  if (!mat_view(b, &vb)) { b = copy_as(c, b, b.dtype); mat_view(b, &vb); }
  std::vector<int64_t> oshape = bshape;
  oshape.push_back(M);
  oshape.push_back(N);
  // f32_out: keep the f32 accumulator (mixed precision); else bf16 in, bf16 out (rounded in the GEMM's epilogue), as on the CPU
  const bool b16 = a.dtype == DType::BF16 && !c.i("f32_out", 0);
  Tensor out = Tensor::empty(oshape, b16 ? DType::BF16 : DType::F32, dev);
  char* obase = static_cast<char*>(out.raw());
  const int64_t oes = b16 ? 2 : 4;
  if (out.numel() > 0) {
    if (K == 0) cuda_check(api.memset(out.raw(), 0, out.nbytes(), nullptr), c.name + ": zero the output");
    else {
      auto ao = batch_offsets(a, bshape), bo = batch_offsets(b, bshape);
      for (auto& o : ao) o += a.offset;
      for (auto& o : bo) o += b.offset;
      // A shared right operand and a left one whose batch entries follow each other row after row ((B, T, K) @ (K, N),
      // e.g. a linear layer's input gradient) is one GEMM of B·T rows; the output is contiguous, so its rows line up.
      bool fold = ao.size() > 1 && !va.trans;
      for (size_t i = 1; fold && i < ao.size(); i++) fold = bo[i] == bo[0] && ao[i] == ao[0] + (int64_t)i * M * va.ld;
      if (fold)
        gemm(c, api, a.dtype, false, vb.trans, M * (int64_t)ao.size(), N, K, a, ao[0], va.ld, b, bo[0], vb.ld, 0.f, obase, N, 1.f, b16);
      else
        for (size_t i = 0; i < ao.size(); i++)  // one launch per batch entry (the library has no batched GEMM yet)
          gemm(c, api, a.dtype, va.trans, vb.trans, M, N, K, a, ao[i], va.ld, b, bo[i], vb.ld, 0.f, obase + (int64_t)i * M * N * oes, N, 1.f,
               b16);
    }
  }
  const auto fshape = matmul_out_shape(ms);
  out = out.view(fshape, contiguous_strides(fshape), 0);
  c.out.push_back(out);
}

// y (N, O) = the contiguous vector b broadcast over its rows (a strided copy with row stride 0)
void broadcast_rows(const Tensor& y, const Tensor& b, int64_t N, int64_t O) {
  if (N && O) copy_into(y.view({N, O}, {O, 1}, y.offset), b.view({N, O}, {0, 1}, b.offset));
}

void op_linear_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  Tensor x = c.input(0), w = c.input(1);
  const LinearShapes ls = linear_shapes(c, x, w);
  const bool conv = ls.conv;
  const int64_t in = ls.in, outf = ls.outf;
  check_gemm_dtypes(c, x.dtype, w.dtype);
  if (c.has(2)) {
    const Tensor& b = c.input(2);
    if (b.dtype != DType::F32) c.fail("DeviceError", std::string("a ") + dtype_name(b.dtype) + " bias needs a cast kernel, which CUDA has not yet (use an f32 bias)");
  }
  Tensor bias = c.has(2) ? (c.input(2).is_contiguous() ? c.input(2) : copy_as(c, c.input(2), DType::F32)) : Tensor();
  if (!x.is_contiguous()) x = copy_as(c, x, x.dtype);
  MatView vw{false, 1};
  if (!mat_view(w, &vw)) { w = copy_as(c, w, w.dtype); mat_view(w, &vw); }
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
  const int64_t rows = shape_numel(std::vector<int64_t>(x.shape.begin(), x.shape.end() - 1));
  const bool tb = conv ? vw.trans : !vw.trans;
  std::vector<int64_t> oshape(x.shape.begin(), x.shape.end() - 1);
  oshape.push_back(outf);
  // bf16 in, bf16 out without a bias: rounded in the GEMM's epilogue. An f32 bias is added to the f32 product first,
  // then rounded once, as on the CPU.
  const bool want16 = x.dtype == DType::BF16 && !c.i("f32_out", 0), b16 = want16 && !c.has(2);
  Tensor out = Tensor::empty(oshape, b16 ? DType::BF16 : DType::F32, dev);
  if (out.numel() == 0) {
    c.out.push_back(want16 && !b16 ? copy_as(c, out, DType::BF16) : out);
    return;
  }
  float beta = 0.f;
  if (c.has(2)) {
    // the product accumulates onto the broadcast bias
    broadcast_rows(out, bias, rows, outf);
    beta = 1.f;
  } else if (in == 0) {
    cuda_check(api.memset(out.raw(), 0, out.nbytes(), nullptr), c.name + ": zero the output");
  }
  if (in > 0) gemm(c, api, x.dtype, false, tb, rows, outf, in, x, x.offset, in, w, w.offset, vw.ld, beta, out.raw(), outf, 1.f, b16);
  c.out.push_back(want16 && !b16 ? copy_as(c, out, DType::BF16) : out);
}

// adamw_step(hyper (n,3) [lr, wd, step] on the host, params..., grads..., exp_avg..., exp_avg_sq...): the
// library updates all tensors of one step count in one launch.
void op_adamw_step_cuda(OpCtx& c) {
  if (c.in.size() < 1 || (c.in.size() - 1) % 4 != 0) c.fail("ValueError", "expected hyper + 4 lists of tensors");
  const int64_t n = (int64_t)(c.in.size() - 1) / 4;
  const Tensor& hyper = c.input(0);
  if (!hyper.on_cpu() || hyper.dtype != DType::F32 || hyper.shape != std::vector<int64_t>{n, 3} || !hyper.is_contiguous())
    c.fail("ShapeError", "hyper must be a contiguous f32 cpu tensor of shape [" + std::to_string(n) + ", 3], got " + shape_str(hyper.shape));
  static const char* what[4] = {"parameter", "gradient", "exp_avg", "exp_avg_sq"};
  Device dev{DeviceType::CUDA, -1};
  for (int64_t k = 0; k < n; k++)
    for (int g = 0; g < 4; g++) {
      const Tensor& t = c.input(1 + g * n + k);
      if (t.on_cpu()) c.fail("DeviceError", std::string(what[g]) + " #" + std::to_string(k) + " is on the cpu; the step runs on CUDA");
      if (dev.index < 0) dev = t.device();
      if (!(t.device() == dev)) c.fail("DeviceError", std::string(what[g]) + " #" + std::to_string(k) + " is on " + t.device().str() + ", not " + dev.str());
      if (t.dtype != DType::F32 || !t.is_contiguous()) c.fail("DTypeError", std::string(what[g]) + " #" + std::to_string(k) + " must be a contiguous f32 tensor");
      if (t.shape != c.input(1 + k).shape)
        c.fail("ShapeError", std::string(what[g]) + " #" + std::to_string(k) + " has shape " + shape_str(t.shape) + ", parameter " + shape_str(c.input(1 + k).shape));
    }
  const float* H = hyper.data<float>();
  for (int64_t k = 0; k < n; k++)
    if (!(H[3 * k + 2] >= 1) || H[3 * k + 2] != (float)(int64_t)H[3 * k + 2]) c.fail("ValueError", "step of tensor #" + std::to_string(k) + " must be an integer >= 1");
  if (n == 0) return;
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
  // group by step count (parameters skipped on some steps, e.g. under AdapterDrop, have their own)
  std::map<int64_t, std::vector<int64_t>> by_step;
  for (int64_t k = 0; k < n; k++) by_step[(int64_t)H[3 * k + 2]].push_back(k);
  const float b1 = (float)c.f("beta1"), b2 = (float)c.f("beta2"), eps = (float)c.f("eps");
  for (auto& [step, ks] : by_step) {
    std::vector<float*> P, M, V;
    std::vector<const float*> G;
    std::vector<int64_t> numel;
    std::vector<float> hy;
    for (int64_t k : ks) {
      P.push_back(c.input(1 + k).data<float>());
      G.push_back(c.input(1 + n + k).data<float>());
      M.push_back(c.input(1 + 2 * n + k).data<float>());
      V.push_back(c.input(1 + 3 * n + k).data<float>());
      numel.push_back(c.input(1 + k).numel());
      hy.push_back(H[3 * k]);
      hy.push_back(H[3 * k + 1]);
    }
    cuda_check(api.adamw_step((int64_t)ks.size(), P.data(), G.data(), M.data(), V.data(), numel.data(), hy.data(), b1, b2, eps, step, nullptr),
               c.name + " on " + dev.str());
  }
}


// ---- elementwise (cuda/elementwise.cu; the per-element code is cuda/elementwise_math.h) ------------------------

constexpr int kMaxDims = 8;  // ad_ew::kMaxDims
int ew_dtype(const OpCtx& c, DType d) {
  if (d == DType::F32) return 0;
  if (d == DType::BF16) return 1;
  c.fail("DeviceError", std::string(dtype_name(d)) + " tensors have no CUDA elementwise kernels yet (f32 and bf16 do)");
}
void check_dims(const OpCtx& c, size_t nd) {
  if (nd > (size_t)kMaxDims) c.fail("DeviceError", "CUDA elementwise kernels take up to 8 dims, got " + std::to_string(nd));
}

// The CUDA copy / comparison kernels' dtype code of d (cuda_dtype_code): every dtype but f16.
int any_dtype(const OpCtx& c, DType d) {
  const int code = cuda_dtype_code(d);
  if (code < 0) c.fail("DeviceError", std::string(dtype_name(d)) + " tensors have no CUDA kernels yet");
  return code;
}

// A contiguous copy of t (any strides) in dtype dt, on t's device.
Tensor copy_as(const OpCtx& c, const Tensor& t, DType dt) {
  check_dims(c, t.shape.size());
  const int sdt = any_dtype(c, t.dtype), ddt = any_dtype(c, dt);
  Tensor out = Tensor::empty(t.shape, dt, t.device());
  if (out.numel() == 0) return out;
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.copy_strided(sdt, ddt, (int)t.dim(), t.shape.data(), t.raw(), t.strides.data(), out.raw(), nullptr, nullptr),
             c.name + " on " + t.device().str());
  return out;
}
// t as contiguous f32 (t itself when it already is).
Tensor as_f32(const OpCtx& c, const Tensor& t) {
  return t.dtype == DType::F32 && t.is_contiguous() ? t : copy_as(c, t, DType::F32);
}

// add/sub/mul/div/maximum/minimum with broadcasting; f32 arithmetic; bf16 out only when every input is bf16 (the
// CPU's rule).
void binary_cuda(OpCtx& c, int op) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  Tensor a = c.input(0), b = c.input(1);
  ew_dtype(c, a.dtype);
  ew_dtype(c, b.dtype);
  const bool low = a.dtype == DType::BF16 && b.dtype == DType::BF16;
  if (a.dtype != DType::F32) a = copy_as(c, a, DType::F32);
  if (b.dtype != DType::F32) b = copy_as(c, b, DType::F32);
  const auto shape = broadcast_shapes(c, a.shape, b.shape);
  check_dims(c, shape.size());
  const auto sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  Tensor out = Tensor::empty(shape, DType::F32, dev);
  if (out.numel() > 0) {
    const CudaApi& api = cuda_api(c.name);
    cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
    cuda_check(api.binary_f32(op, (int)shape.size(), shape.data(), a.data<float>(), sa.data(), b.data<float>(), sb.data(),
                              out.data<float>(), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(low ? copy_as(c, out, DType::BF16) : out);
}
void op_add_cuda(OpCtx& c) { binary_cuda(c, 0); }
void op_sub_cuda(OpCtx& c) { binary_cuda(c, 1); }
void op_mul_cuda(OpCtx& c) { binary_cuda(c, 2); }
void op_div_cuda(OpCtx& c) { binary_cuda(c, 3); }
void op_maximum_cuda(OpCtx& c) { binary_cuda(c, 4); }
void op_minimum_cuda(OpCtx& c) { binary_cuda(c, 5); }

// unary ops and activations (codes: native/kernels/unary.h's UnOp; 18 affine, 19 pow); bf16 in -> bf16 out
void unary_cuda(OpCtx& c, int op, float p0 = 0.f, float p1 = 0.f) {
  c.expect_inputs(1);
  const Device dev = op_device(c);
  const Tensor& x0 = c.input(0);
  ew_dtype(c, x0.dtype);
  Tensor x = as_f32(c, x0);
  Tensor out = Tensor::empty(x.shape, DType::F32, dev);
  if (out.numel() > 0) {
    const CudaApi& api = cuda_api(c.name);
    cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
    cuda_check(api.unary_f32(op, x.numel(), x.data<float>(), out.data<float>(), p0, p1, nullptr), c.name + " on " + dev.str());
  }
  c.out.push_back(x0.dtype == DType::BF16 ? copy_as(c, out, DType::BF16) : out);
}
#define AD_UNARY_CUDA(name, code) \
  void op_##name##_cuda(OpCtx& c) { unary_cuda(c, code); }
AD_UNARY_CUDA(neg, 0)
AD_UNARY_CUDA(exp, 1)
AD_UNARY_CUDA(log, 2)
AD_UNARY_CUDA(sqrt, 3)
AD_UNARY_CUDA(rsqrt, 4)
AD_UNARY_CUDA(abs, 5)
AD_UNARY_CUDA(sign, 6)
AD_UNARY_CUDA(sin, 7)
AD_UNARY_CUDA(cos, 8)
AD_UNARY_CUDA(relu, 9)
AD_UNARY_CUDA(gelu, 10)
AD_UNARY_CUDA(gelu_tanh, 11)
AD_UNARY_CUDA(quick_gelu, 12)
AD_UNARY_CUDA(silu, 13)
AD_UNARY_CUDA(tanh, 14)
AD_UNARY_CUDA(sigmoid, 15)
AD_UNARY_CUDA(atan, 16)
#undef AD_UNARY_CUDA
void op_affine_cuda(OpCtx& c) { unary_cuda(c, 18, (float)c.f("scale", 1), (float)c.f("shift", 0)); }
void op_pow_scalar_cuda(OpCtx& c) { unary_cuda(c, 19, (float)c.f("exponent")); }

// activation_bwd(x, gout) {kind} -> gout · act'(x)
void op_activation_bwd_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  static const std::map<std::string, int> kinds = {{"relu", 9}, {"gelu", 10}, {"gelu_tanh", 11}, {"quick_gelu", 12},
                                                   {"silu", 13}, {"tanh", 14}, {"sigmoid", 15}, {"atan", 16}};
  auto it = kinds.find(c.s("kind", ""));
  if (it == kinds.end()) c.fail("ValueError", "unknown activation '" + c.s("kind", "") + "'");
  ew_dtype(c, c.input(0).dtype);
  ew_dtype(c, c.input(1).dtype);
  Tensor x = as_f32(c, c.input(0)), g = as_f32(c, c.input(1));
  if (x.shape != g.shape) c.fail("ShapeError", "x " + shape_str(x.shape) + " vs grad " + shape_str(g.shape));
  Tensor out = Tensor::empty(x.shape, DType::F32, dev);
  if (out.numel() > 0) {
    const CudaApi& api = cuda_api(c.name);
    cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
    cuda_check(api.unary_backward_f32(it->second, x.numel(), x.data<float>(), g.data<float>(), out.data<float>(), nullptr),
               c.name + " on " + dev.str());
  }
  const bool low = c.input(0).dtype == DType::BF16 && c.input(1).dtype == DType::BF16;
  c.out.push_back(low ? copy_as(c, out, DType::BF16) : out);
}

// cast(x) {dtype}: f32 <-> bf16 on the device (the same dtype: x itself, as on the CPU)
void op_cast_cuda(OpCtx& c) {
  c.expect_inputs(1);
  op_device(c);
  DType dt;
  const std::string dn = c.s("dtype", "");
  if (!dtype_from_name(dn, &dt)) c.fail("DTypeError", "unknown dtype '" + dn + "'");
  const Tensor& x = c.input(0);
  c.out.push_back(x.dtype == dt ? x : copy_as(c, x, dt));
}

// clone: a fresh contiguous copy (strided sources gathered on the device; f16 needs contiguity and is copied byte
// for byte)
void op_contiguous_cuda(OpCtx& c) {
  c.expect_inputs(1);
  op_device(c);
  const Tensor& x = c.input(0);
  if (x.dtype != DType::F16) c.out.push_back(copy_as(c, x, x.dtype));
  else op_contiguous(c);
}
// copy_(dst, src): src broadcast to dst's shape. On one device: any strides and dtype conversions but f16 (one gather /
// scatter kernel); between host and device: contiguous same-dtype copies (copy_into).
void op_copy__cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Tensor &d = c.input(0), &s = c.input(1);
  if (d.device() == s.device() && d.dtype != DType::F16 && s.dtype != DType::F16) {
    const auto shp = broadcast_shapes(c, d.shape, s.shape);
    if (shp != d.shape) c.fail("ShapeError", "source " + shape_str(s.shape) + " does not broadcast to " + shape_str(d.shape));
    check_dims(c, d.shape.size());
    const auto ss = broadcast_strides(s, d.shape);
    if (d.numel() == 0) return;
    const CudaApi& api = cuda_api(c.name);
    cuda_check(api.copy_strided(any_dtype(c, s.dtype), any_dtype(c, d.dtype), (int)d.dim(), d.shape.data(), s.raw(), ss.data(), d.raw(),
                                d.strides.data(), nullptr),
               c.name + " on " + d.device().str());
    return;
  }
  op_copy_(c);
}

const CudaApi& api_on(const OpCtx& c, Device dev);  // below: the library, with dev selected

// ---- comparisons, logical ops, where, masked_fill (cuda/elementwise.cu; element code in elementwise_math.h) -------
// Same shapes, dtypes and results as native/kernels/elementwise.cpp: comparisons give bool, in f32 when either operand
// is floating, else in int64; where / masked_fill compute floats in f32 and integers in int64, then cast back.

void compare_cuda(OpCtx& c, int op) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor &a = c.input(0), &b = c.input(1);
  const int adt = any_dtype(c, a.dtype), bdt = any_dtype(c, b.dtype);
  const auto shape = broadcast_shapes(c, a.shape, b.shape);
  check_dims(c, shape.size());
  Tensor out = Tensor::empty(shape, DType::BOOL, dev);
  if (out.numel() > 0) {
    const auto sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
    cuda_check(api_on(c, dev).compare(op, (int)shape.size(), shape.data(), a.raw(), adt, sa.data(), b.raw(), bdt, sb.data(),
                                      static_cast<uint8_t*>(out.raw()), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(out);
}
void op_eq_cuda(OpCtx& c) { compare_cuda(c, 0); }
void op_ne_cuda(OpCtx& c) { compare_cuda(c, 1); }
void op_lt_cuda(OpCtx& c) { compare_cuda(c, 2); }
void op_le_cuda(OpCtx& c) { compare_cuda(c, 3); }
void op_gt_cuda(OpCtx& c) { compare_cuda(c, 4); }
void op_ge_cuda(OpCtx& c) { compare_cuda(c, 5); }
void op_logical_and_cuda(OpCtx& c) { compare_cuda(c, 6); }
void op_logical_or_cuda(OpCtx& c) { compare_cuda(c, 7); }
// logical_not(x) = (x == 0)
void op_logical_not_cuda(OpCtx& c) {
  c.expect_inputs(1);
  const Device dev = op_device(c);
  const Tensor& x = c.input(0);
  const int xdt = any_dtype(c, x.dtype);
  check_dims(c, x.shape.size());
  Tensor out = Tensor::empty(x.shape, DType::BOOL, dev);
  if (out.numel() > 0) {
    const uint8_t zero_host = 0;
    Tensor zero = Tensor::empty({}, DType::BOOL, dev);
    cuda_check(api_on(c, dev).memcpy_h2d(zero.raw(), &zero_host, 1, nullptr), c.name + ": upload");
    const std::vector<int64_t> zs(x.shape.size(), 0);
    cuda_check(api_on(c, dev).compare(0, (int)x.dim(), x.shape.data(), x.raw(), xdt, x.strides.data(), zero.raw(), 4, zs.data(),
                                      static_cast<uint8_t*>(out.raw()), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(out);
}

// the compute dtype of where / masked_fill: f32 for floating inputs, i64 for integer / bool ones
DType wm_compute(const OpCtx& c, DType a, DType b) {
  any_dtype(c, a);
  any_dtype(c, b);
  return dtype_is_float(a) || dtype_is_float(b) ? DType::F32 : DType::I64;
}
Tensor as_dtype(const OpCtx& c, const Tensor& t, DType dt) { return t.dtype == dt ? t : copy_as(c, t, dt); }

void op_where_cuda(OpCtx& c) {
  c.expect_inputs(3);
  const Device dev = op_device(c);
  const Tensor& cond = c.input(0);
  if (cond.dtype != DType::BOOL) c.fail("DTypeError", "condition must be bool, got " + std::string(dtype_name(cond.dtype)));
  const auto shape = broadcast_shapes(c, broadcast_shapes(c, cond.shape, c.input(1).shape), c.input(2).shape);
  check_dims(c, shape.size());
  const DType ct = wm_compute(c, c.input(1).dtype, c.input(2).dtype);
  const Tensor a = as_dtype(c, c.input(1), ct), b = as_dtype(c, c.input(2), ct);
  Tensor out = Tensor::empty(shape, ct, dev);
  if (out.numel() > 0) {
    const auto sc = broadcast_strides(cond, shape), sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
    cuda_check(api_on(c, dev).where((int)shape.size(), shape.data(), static_cast<const uint8_t*>(cond.raw()), sc.data(), a.raw(), sa.data(),
                                    b.raw(), sb.data(), any_dtype(c, ct), out.raw(), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(out);
}

void op_masked_fill_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor &x0 = c.input(0), &m = c.input(1);
  if (m.dtype != DType::BOOL) c.fail("DTypeError", "mask must be bool, got " + std::string(dtype_name(m.dtype)));
  const auto shape = broadcast_shapes(c, x0.shape, m.shape);
  if (shape != x0.shape) c.fail("ShapeError", "mask " + shape_str(m.shape) + " does not broadcast to " + shape_str(x0.shape));
  check_dims(c, shape.size());
  const DType ct = wm_compute(c, x0.dtype, x0.dtype);
  const Tensor x = as_dtype(c, x0, ct);
  Tensor out = Tensor::empty(shape, ct, dev);
  if (out.numel() > 0) {
    const auto sm = broadcast_strides(m, shape);
    cuda_check(api_on(c, dev).masked_fill((int)shape.size(), shape.data(), x.raw(), x.strides.data(), static_cast<const uint8_t*>(m.raw()),
                                          sm.data(), any_dtype(c, ct), c.f("value"), out.raw(), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(ct == x0.dtype ? out : copy_as(c, out, x0.dtype));
}

// ---- fused adapter ops (the CUDA twins of native/kernels/adapters.cpp: same validation, same arithmetic order) -------
// Each is one op for the adapter's whole forward: GEMMs that accumulate into the output (beta = 1, alpha = the
// adapter's scale) instead of separate scale / add passes, so the output is written by GEMM epilogues only.

// (rows, cols) of t: its last dim must be cols
int64_t rows_of(const OpCtx& c, const Tensor& t, int64_t cols, const char* what) {
  if (t.dim() < 1 || t.shape.back() != cols)
    c.fail("ShapeError", std::string(what) + " " + shape_str(t.shape) + " must end in " + std::to_string(cols));
  return cols ? t.numel() / cols : 0;
}
void expect_shape_cuda(const OpCtx& c, const Tensor& t, const std::vector<int64_t>& want, const char* what) {
  if (t.shape != want) c.fail("ShapeError", std::string(what) + " has shape " + shape_str(t.shape) + ", expected " + shape_str(want));
}
// out (n) = scale · v (the unary kernel's affine op)
Tensor scaled(const OpCtx& c, const CudaApi& api, const Tensor& v, float scale) {
  Tensor o = Tensor::empty({v.numel()}, DType::F32, v.device());
  if (v.numel()) cuda_check(api.unary_f32(18, v.numel(), v.data<float>(), o.data<float>(), scale, 0.f, nullptr), c.name + ": scale");
  return o;
}
// out (N, C) = a (N, C) op v (C) broadcast over the rows
void rows_op_vec(const OpCtx& c, const CudaApi& api, int op, const Tensor& a, const Tensor& v, const Tensor& out, int64_t N, int64_t C) {
  if (!N || !C) return;
  const int64_t shape[2] = {N, C}, sa[2] = {C, 1}, sv[2] = {0, 1};
  cuda_check(api.binary_f32(op, 2, shape, a.data<float>(), sa, v.data<float>(), sv, out.data<float>(), nullptr), c.name + " on " + a.device().str());
}

// out (N, O) = x·Wᵀ + the bias at input #2 when there is one (broadcast first, then the GEMM accumulates onto it): the
// base projection of lora_linear and ia3_linear
void base_projection(const OpCtx& c, const CudaApi& api, const Tensor& x, const Tensor& W, int64_t N, int64_t O, int64_t I, const Tensor& out) {
  float beta = 0.f;
  if (c.has(2)) {
    ew_dtype(c, c.input(2).dtype);
    const Tensor b = as_f32(c, c.input(2));
    expect_shape_cuda(c, b, {O}, "bias");
    broadcast_rows(out, b, N, O);
    beta = 1.f;
  }
  if (N && O) gemm(c, api, DType::F32, false, true, N, O, I, x, x.offset, I, W, W.offset, I, beta, out.data<float>(), O);
}

// lora_linear(x, W, b?, A, B) {scale} -> y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, t = x·Aᵀ
void op_lora_linear_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor& W0 = c.input(1);
  if (W0.dim() != 2) c.fail("ShapeError", "weight must be 2-D (out, in), got " + shape_str(W0.shape));
  const int64_t O = W0.shape[0], I = W0.shape[1];
  for (size_t k : {0, 1, 3, 4}) ew_dtype(c, c.input(k).dtype);
  const Tensor x = as_f32(c, c.input(0)), W = as_f32(c, W0), A = as_f32(c, c.input(3)), B = as_f32(c, c.input(4));
  const int64_t N = rows_of(c, x, I, "input");
  if (A.dim() != 2 || A.shape[1] != I) c.fail("ShapeError", "lora_A " + shape_str(A.shape) + " must be (r, " + std::to_string(I) + ")");
  const int64_t r = A.shape[0];
  expect_shape_cuda(c, B, {O, r}, "lora_B");
  const float s = (float)c.f("scale", 1.0);
  std::vector<int64_t> ys(x.shape.begin(), x.shape.end() - 1), ts = ys;
  ys.push_back(O);
  ts.push_back(r);
  Tensor y = Tensor::empty(ys, DType::F32, dev), t = Tensor::empty(ts, DType::F32, dev);
  const CudaApi& api = api_on(c, dev);
  base_projection(c, api, x, W, N, O, I, y);
  if (N && r) gemm(c, api, DType::F32, false, true, N, r, I, x, x.offset, I, A, A.offset, I, 0.f, t.data<float>(), r);
  if (N && O && r) gemm(c, api, DType::F32, false, true, N, O, r, t, 0, r, B, B.offset, r, 1.f, y.data<float>(), O, s);  // the rank-r update
  c.out.push_back(y);
  c.out.push_back(t);
}

// ia3_linear(x, W, b?, v) {scale} -> y = (x·Wᵀ + b) ∘ (s·v), base = x·Wᵀ + b
void op_ia3_linear_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor& W0 = c.input(1);
  if (W0.dim() != 2) c.fail("ShapeError", "weight must be 2-D (out, in), got " + shape_str(W0.shape));
  const int64_t O = W0.shape[0], I = W0.shape[1];
  for (size_t k : {0, 1, 3}) ew_dtype(c, c.input(k).dtype);
  const Tensor x = as_f32(c, c.input(0)), W = as_f32(c, W0), v = as_f32(c, c.input(3));
  const int64_t N = rows_of(c, x, I, "input");
  if (v.numel() != O) c.fail("ShapeError", "scale vector " + shape_str(v.shape) + " must have " + std::to_string(O) + " elements");
  std::vector<int64_t> ys(x.shape.begin(), x.shape.end() - 1);
  ys.push_back(O);
  Tensor base = Tensor::empty(ys, DType::F32, dev), y = Tensor::empty(ys, DType::F32, dev);
  const CudaApi& api = api_on(c, dev);
  base_projection(c, api, x, W, N, O, I, base);
  rows_op_vec(c, api, 2, base, scaled(c, api, v, (float)c.f("scale", 1.0)), y, N, O);  // base ∘ (s·v)
  c.out.push_back(y);
  c.out.push_back(base);
}

// bottleneck(h, Wd, bd, Wu, bu, residual) {act, scale} -> y = s·(act(h·Wdᵀ + bd)·Wuᵀ + bu) + residual, pre
void op_bottleneck_cuda(OpCtx& c) {
  c.expect_inputs(6);
  const Device dev = op_device(c);
  const Tensor& Wd0 = c.input(1);
  if (Wd0.dim() != 2) c.fail("ShapeError", "down weight must be 2-D (d, C), got " + shape_str(Wd0.shape));
  const int64_t d = Wd0.shape[0], C = Wd0.shape[1];
  for (size_t k = 0; k < 6; k++) ew_dtype(c, c.input(k).dtype);
  const Tensor h = as_f32(c, c.input(0)), Wd = as_f32(c, Wd0), bd = as_f32(c, c.input(2)), Wu = as_f32(c, c.input(3)), bu = as_f32(c, c.input(4)),
               res = as_f32(c, c.input(5));
  const int64_t N = rows_of(c, h, C, "input");
  expect_shape_cuda(c, bd, {d}, "down bias");
  expect_shape_cuda(c, Wu, {C, d}, "up weight");
  expect_shape_cuda(c, bu, {C}, "up bias");
  if (res.shape != h.shape) c.fail("ShapeError", "residual " + shape_str(res.shape) + " vs input " + shape_str(h.shape));
  UnOp kind;
  const std::string a = c.s("act", "relu");
  if (!adapter_act_kind(a, &kind)) c.fail("ValueError", "unsupported activation '" + a + "'");
  const float s = (float)c.f("scale", 1.0);
  std::vector<int64_t> ps(h.shape.begin(), h.shape.end() - 1);
  ps.push_back(d);
  Tensor pre = Tensor::empty(ps, DType::F32, dev), act = Tensor::empty(ps, DType::F32, dev), y = Tensor::empty(h.shape, DType::F32, dev);
  const CudaApi& api = api_on(c, dev);
  broadcast_rows(pre, bd, N, d);
  if (N && d) gemm(c, api, DType::F32, false, true, N, d, C, h, h.offset, C, Wd, Wd.offset, C, 1.f, pre.data<float>(), d);
  if (N > 0 && d > 0) cuda_check(api.unary_f32((int)kind, N * d, pre.data<float>(), act.data<float>(), 0.f, 0.f, nullptr), c.name + ": activation");
  rows_op_vec(c, api, 0, res, scaled(c, api, bu, s), y, N, C);  // residual + s·bu
  if (N && C) gemm(c, api, DType::F32, false, true, N, C, d, act, 0, d, Wu, Wu.offset, d, 1.f, y.data<float>(), C, s);
  c.out.push_back(y);
  c.out.push_back(pre);
}

// ---- segmented multi-LoRA (the CUDA twin of native/kernels/multi_lora.cpp) ---------------------------------------
// One op for a whole BatchSplit / Parallel / mixed-adapter batch of plain LoRA adapters, as on the CPU; on the GPU each
// segment runs as GEMM launches on its rows (shrink, then expand with the segment's scale as alpha) — not yet one
// segmented kernel for all adapters. The scales are read on the host (they may live there).

// What every segmented op reads first (as native/kernels/segments.h): the row segments from `starts` (n+1
// non-decreasing offsets in [0, M]), `per` tensors per adapter after the scales at input #first, all on input #0's
// device except the scales, whose values are read on the host.
struct SegHead {
  int64_t n = 0;
  std::vector<int64_t> starts;
  std::vector<float> scale;
  Device dev{};
};
SegHead seg_head(const OpCtx& c, size_t first, int64_t per, int64_t M) {
  SegHead a;
  a.dev = c.input(0).device();
  a.starts = c.ints("starts");
  if (a.starts.size() < 2) c.fail("ValueError", "starts must hold n+1 >= 2 row offsets");
  a.n = (int64_t)a.starts.size() - 1;
  for (int64_t i = 0; i <= a.n; i++) {
    if (a.starts[i] < 0 || a.starts[i] > M)
      c.fail("IndexError", "starts[" + std::to_string(i) + "] = " + std::to_string(a.starts[i]) + " out of [0, " + std::to_string(M) + "]");
    if (i && a.starts[i] < a.starts[i - 1]) c.fail("ValueError", "starts must not decrease");
  }
  const size_t want = first + 1 + (size_t)(per * a.n);
  if (c.n_in() != want) c.fail("ValueError", "expected " + std::to_string(want) + " inputs for " + std::to_string(a.n) + " adapters, got " + std::to_string(c.n_in()));
  c.expect_inputs(want);
  for (size_t k = 0; k < want; k++)
    if (k != first && !(c.input(k).device() == a.dev))
      c.fail("DeviceError", "expected all tensors on one device, but input #" + std::to_string(k) + " is on " + c.input(k).device().str() + " and input #0 on " + a.dev.str());
  const Tensor sc = to_device(c.input(first), Device{});
  if (sc.numel() != a.n) c.fail("ShapeError", "scales " + shape_str(sc.shape) + " must have " + std::to_string(a.n) + " elements");
  const Tensor scf = sc.dtype == DType::F32 ? sc : cast(sc, DType::F32);
  a.scale.assign(scf.data<float>(), scf.data<float>() + a.n);
  return a;
}

struct SgmvArgs : SegHead {
  int64_t O = 0, R = 0;
  std::vector<int64_t> ranks;
  std::vector<Tensor> A, B;
};
// inputs [first] = scales (n), then A_0..A_{n-1} (r_i, K), B_0..B_{n-1} (O, r_i)
SgmvArgs sgmv_args(const OpCtx& c, size_t first, int64_t M, int64_t K) {
  SgmvArgs a;
  static_cast<SegHead&>(a) = seg_head(c, first, 2, M);
  for (int64_t i = 0; i < a.n; i++) {
    ew_dtype(c, c.input(first + 1 + i).dtype);
    ew_dtype(c, c.input(first + 1 + a.n + i).dtype);
    const Tensor A = as_f32(c, c.input(first + 1 + i)), B = as_f32(c, c.input(first + 1 + a.n + i));
    if (A.dim() != 2 || A.shape[1] != K) c.fail("ShapeError", "lora_A #" + std::to_string(i) + " " + shape_str(A.shape) + " must be (r, " + std::to_string(K) + ")");
    const int64_t r = A.shape[0];
    if (B.dim() != 2 || B.shape[1] != r) c.fail("ShapeError", "lora_B #" + std::to_string(i) + " " + shape_str(B.shape) + " must be (out, " + std::to_string(r) + ")");
    if (i == 0) a.O = B.shape[0];
    else if (B.shape[0] != a.O) c.fail("ShapeError", "lora_B #" + std::to_string(i) + " " + shape_str(B.shape) + " has " + std::to_string(B.shape[0]) + " outputs, #0 has " + std::to_string(a.O));
    a.R = std::max(a.R, r);
    a.ranks.push_back(r);
    a.A.push_back(A);
    a.B.push_back(B);
  }
  return a;
}
void zero(const OpCtx& c, const CudaApi& api, const Tensor& t) {
  if (t.numel()) cuda_check(api.memset(t.raw(), 0, t.nbytes(), nullptr), c.name + ": zero");
}
// From three adapters on (up to the table's size), the single-launch kernels of cuda/sgmv.cu serve the whole batch;
// fewer, typically larger, segments run as GEMMs per segment. (The switch-over point is not measured yet.)
bool sgmv_single_launch(const SgmvArgs& a) { return a.n >= 3 && a.n <= ADAPTERS_CUDA_SGMV_MAX; }
adapters_cuda_sgmv sgmv_table(const SgmvArgs& a, int64_t M, int64_t K) {
  adapters_cuda_sgmv t{};
  t.n = (int)a.n;
  t.M = M;
  t.K = K;
  t.O = a.O;
  t.R = a.R;
  t.aoff[0] = t.boff[0] = 0;
  for (int64_t i = 0; i < a.n; i++) {
    t.start[i] = a.starts[i];
    t.rank[i] = a.ranks[i];
    t.scale[i] = a.scale[i];
    t.A[i] = a.A[i].data<float>();
    t.B[i] = a.B[i].data<float>();
    t.aoff[i + 1] = t.aoff[i] + a.ranks[i] * K;
    t.boff[i + 1] = t.boff[i] + a.O * a.ranks[i];
  }
  t.start[a.n] = a.starts[a.n];
  return t;
}

// lora_sgmv(x, scales, A..., B...) {starts} -> d (x's rows, O), t (M, R)
void op_lora_sgmv_cuda(OpCtx& c) {
  c.expect_inputs(1);
  ew_dtype(c, c.input(0).dtype);
  const Tensor x = as_f32(c, c.input(0));
  if (x.dim() < 1) c.fail("ShapeError", "input must have a feature axis");
  const int64_t K = x.shape.back(), M = K ? x.numel() / K : 0;
  const SgmvArgs a = sgmv_args(c, 1, M, K);
  auto ds = x.shape;
  ds.back() = a.O;
  Tensor d = Tensor::empty(ds, DType::F32, a.dev), t = Tensor::empty({M, a.R}, DType::F32, a.dev);
  const CudaApi& api = api_on(c, a.dev);
  if (sgmv_single_launch(a)) {  // the kernels write every element of t and d (zeros outside the segments)
    const adapters_cuda_sgmv tb = sgmv_table(a, M, K);
    cuda_check(api.lora_sgmv_f32(&tb, x.data<float>(), t.data<float>(), d.data<float>(), nullptr), c.name + " on " + a.dev.str());
    c.out.push_back(d);
    c.out.push_back(t);
    return;
  }
  zero(c, api, d);  // rows outside every segment (and segments of rank 0) get no delta
  zero(c, api, t);
  for (int64_t i = 0; i < a.n; i++) {
    const int64_t m0 = a.starts[i], rows = a.starts[i + 1] - m0, r = a.ranks[i];
    if (!rows || !r || !K || !a.O) continue;
    gemm(c, api, DType::F32, false, true, rows, r, K, x, x.offset + m0 * K, K, a.A[i], a.A[i].offset, K, 0.f, t.data<float>() + m0 * a.R, a.R);  // shrink
    gemm(c, api, DType::F32, false, true, rows, a.O, r, t, m0 * a.R, a.R, a.B[i], a.B[i].offset, r, 0.f, d.data<float>() + m0 * a.O, a.O, a.scale[i]);  // expand
  }
  c.out.push_back(d);
  c.out.push_back(t);
}

// lora_sgmv_bwd(g, x, t, scales, A..., B...) {starts} -> gx, dA_0..dA_{n-1}, dB_0..dB_{n-1}
void op_lora_sgmv_bwd_cuda(OpCtx& c) {
  c.expect_inputs(3);
  for (size_t k : {0, 1, 2}) ew_dtype(c, c.input(k).dtype);
  const Tensor x = as_f32(c, c.input(1));
  const int64_t K = x.dim() ? x.shape.back() : 0, M = K ? x.numel() / K : 0;
  const SgmvArgs a = sgmv_args(c, 3, M, K);
  const Tensor g = as_f32(c, c.input(0)), t = as_f32(c, c.input(2));
  if (g.numel() != M * a.O) c.fail("ShapeError", "gradient " + shape_str(g.shape) + " does not match " + std::to_string(M) + " rows of " + std::to_string(a.O));
  if (t.numel() != M * a.R) c.fail("ShapeError", "saved t " + shape_str(t.shape) + " must be (" + std::to_string(M) + ", " + std::to_string(a.R) + ")");
  const CudaApi& api = api_on(c, a.dev);
  Tensor gx = Tensor::empty(x.shape, DType::F32, a.dev), gt = Tensor::empty({M, a.R}, DType::F32, a.dev);
  if (sgmv_single_launch(a)) {  // all adapters' dA (and dB) back to back in one buffer; the outputs are views of it
    const adapters_cuda_sgmv tb = sgmv_table(a, M, K);
    Tensor dAall = Tensor::empty({std::max<int64_t>(tb.aoff[a.n], 1)}, DType::F32, a.dev), dBall = Tensor::empty({std::max<int64_t>(tb.boff[a.n], 1)}, DType::F32, a.dev);
    cuda_check(api.lora_sgmv_backward_f32(&tb, g.data<float>(), x.data<float>(), t.data<float>(), gt.data<float>(), gx.data<float>(), dAall.data<float>(),
                                          dBall.data<float>(), nullptr),
               c.name + " on " + a.dev.str());
    c.out.push_back(gx);
    for (int64_t i = 0; i < a.n; i++) c.out.push_back(dAall.view({a.ranks[i], K}, {K, 1}, tb.aoff[i]));
    for (int64_t i = 0; i < a.n; i++) c.out.push_back(dBall.view({a.O, a.ranks[i]}, {a.ranks[i], 1}, tb.boff[i]));
    return;
  }
  zero(c, api, gx);
  std::vector<Tensor> dA, dB;
  for (int64_t i = 0; i < a.n; i++) {
    const int64_t m0 = a.starts[i], rows = a.starts[i + 1] - m0, r = a.ranks[i];
    dA.push_back(Tensor::empty({r, K}, DType::F32, a.dev));
    dB.push_back(Tensor::empty({a.O, r}, DType::F32, a.dev));
    if (!rows || !r || !a.O || !K) {
      zero(c, api, dA.back());
      zero(c, api, dB.back());
      continue;
    }
    float* gti = gt.data<float>() + m0 * a.R;
    gemm(c, api, DType::F32, false, false, rows, r, a.O, g, g.offset + m0 * a.O, a.O, a.B[i], a.B[i].offset, r, 0.f, gti, a.R, a.scale[i]);  // gt = s·g·B
    gemm(c, api, DType::F32, false, false, rows, K, r, gt, m0 * a.R, a.R, a.A[i], a.A[i].offset, K, 0.f, gx.data<float>() + m0 * K, K);  // gx = gt·A
    gemm(c, api, DType::F32, true, false, r, K, rows, gt, m0 * a.R, a.R, x, x.offset + m0 * K, K, 0.f, dA.back().data<float>(), K);  // dA = gtᵀ·x
    gemm(c, api, DType::F32, true, false, a.O, r, rows, g, g.offset + m0 * a.O, a.O, t, t.offset + m0 * a.R, a.R, 0.f, dB.back().data<float>(), r, a.scale[i]);  // dB = s·gᵀ·t
  }
  c.out.push_back(gx);
  for (auto& v : dA) c.out.push_back(v);
  for (auto& v : dB) c.out.push_back(v);
}

// ---- segmented multi-bottleneck (the CUDA twin of native/kernels/multi_bottleneck.cpp), GEMMs per segment as above ----

struct BnArgs : SegHead {
  int64_t C = 0, D = 0;
  std::vector<int64_t> width;
  std::vector<Tensor> Wd, bd, Wu, bu;
  UnOp act = U_RELU;
};
// inputs [first] = scales (n), then Wd_i (d_i, C)…, bd_i (d_i)…, Wu_i (C, d_i)…, bu_i (C)…
BnArgs bn_args(const OpCtx& c, size_t first, int64_t M, int64_t C) {
  BnArgs a;
  static_cast<SegHead&>(a) = seg_head(c, first, 4, M);
  a.C = C;
  const std::string an = c.s("act", "relu");
  if (!adapter_act_kind(an, &a.act)) c.fail("ValueError", "unsupported activation '" + an + "'");
  auto want_shape = [&](const Tensor& t, const std::vector<int64_t>& shape, const char* what, int64_t i) {
    if (t.shape != shape) c.fail("ShapeError", std::string(what) + " #" + std::to_string(i) + " has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
  };
  for (int64_t i = 0; i < a.n; i++) {
    for (int64_t q = 0; q < 4; q++) ew_dtype(c, c.input(first + 1 + q * a.n + i).dtype);
    const Tensor wd = as_f32(c, c.input(first + 1 + i)), bdi = as_f32(c, c.input(first + 1 + a.n + i)), wu = as_f32(c, c.input(first + 1 + 2 * a.n + i)),
                 bui = as_f32(c, c.input(first + 1 + 3 * a.n + i));
    if (wd.dim() != 2 || wd.shape[1] != C) c.fail("ShapeError", "down weight #" + std::to_string(i) + " " + shape_str(wd.shape) + " must be (d, " + std::to_string(C) + ")");
    const int64_t d = wd.shape[0];
    want_shape(bdi, {d}, "down bias", i);
    want_shape(wu, {C, d}, "up weight", i);
    want_shape(bui, {C}, "up bias", i);
    a.D = std::max(a.D, d);
    a.width.push_back(d);
    a.Wd.push_back(wd);
    a.bd.push_back(bdi);
    a.Wu.push_back(wu);
    a.bu.push_back(bui);
  }
  return a;
}
// rows [m0, m0+rows) x cols [0, d) of the (M, D) tensor t, as a view
Tensor block(const Tensor& t, int64_t m0, int64_t rows, int64_t d, int64_t D) { return t.view({rows, d}, {D, 1}, t.offset + m0 * D); }
// rows [m0, m0+rows) of the (M, C) tensor t (contiguous rows), as a view
Tensor row_slice(const Tensor& t, int64_t m0, int64_t rows, int64_t C) { return t.view({rows, C}, {C, 1}, t.offset + m0 * C); }
// column sums of a contiguous (rows, cols) f32 tensor, times scale
Tensor col_sums(const OpCtx& c, const CudaApi& api, const Tensor& t, int64_t rows, int64_t cols, float scale) {
  Tensor o = Tensor::empty({cols}, DType::F32, t.device());
  if (!cols) return o;
  if (!rows) {
    zero(c, api, o);
    return o;
  }
  cuda_check(api.sum_f32(1, rows, cols, t.data<float>(), o.data<float>(), nullptr), c.name + ": column sums");
  if (scale != 1.f) cuda_check(api.unary_f32(18, cols, o.data<float>(), o.data<float>(), scale, 0.f, nullptr), c.name + ": scale");
  return o;
}

// From three adapters on, the single-launch kernels of cuda/sgmv.cu (as for LoRA; switch-over point unmeasured).
bool bn_single_launch(const BnArgs& a) { return a.n >= 3 && a.n <= ADAPTERS_CUDA_SGMV_MAX; }
adapters_cuda_bn_sgmv bn_table(const BnArgs& a, int64_t M) {
  adapters_cuda_bn_sgmv t{};
  t.n = (int)a.n;
  t.act = (int)a.act;
  t.M = M;
  t.C = a.C;
  t.D = a.D;
  t.woff[0] = t.doff[0] = 0;
  for (int64_t i = 0; i < a.n; i++) {
    t.start[i] = a.starts[i];
    t.width[i] = a.width[i];
    t.scale[i] = a.scale[i];
    t.Wd[i] = a.Wd[i].data<float>();
    t.bd[i] = a.bd[i].data<float>();
    t.Wu[i] = a.Wu[i].data<float>();
    t.bu[i] = a.bu[i].data<float>();
    t.woff[i + 1] = t.woff[i] + a.width[i] * a.C;
    t.doff[i + 1] = t.doff[i] + a.width[i];
  }
  t.start[a.n] = a.starts[a.n];
  return t;
}

// bottleneck_sgmv(h, residual, scales, Wd…, bd…, Wu…, bu…) {starts, act} -> y, pre (M, D)
void op_bottleneck_sgmv_cuda(OpCtx& c) {
  c.expect_inputs(2);
  ew_dtype(c, c.input(0).dtype);
  ew_dtype(c, c.input(1).dtype);
  const Tensor h = as_f32(c, c.input(0)), res = as_f32(c, c.input(1));
  if (h.dim() < 1) c.fail("ShapeError", "input must have a feature axis");
  if (res.shape != h.shape) c.fail("ShapeError", "residual " + shape_str(res.shape) + " vs input " + shape_str(h.shape));
  const int64_t C = h.shape.back(), M = C ? h.numel() / C : 0;
  const BnArgs a = bn_args(c, 2, M, C);
  Tensor y = Tensor::empty(h.shape, DType::F32, a.dev), pre = Tensor::empty({M, a.D}, DType::F32, a.dev);
  const CudaApi& api = api_on(c, a.dev);
  if (bn_single_launch(a)) {  // the kernels write every element of pre and y
    const adapters_cuda_bn_sgmv tb = bn_table(a, M);
    cuda_check(api.bottleneck_sgmv_f32(&tb, h.data<float>(), res.data<float>(), pre.data<float>(), y.data<float>(), nullptr), c.name + " on " + a.dev.str());
    c.out.push_back(y);
    c.out.push_back(pre);
    return;
  }
  if (M && C) copy_into(y.view({M, C}, {C, 1}, 0), res.view({M, C}, {C, 1}, res.offset));  // rows outside every segment: the residual
  zero(c, api, pre);
  for (int64_t i = 0; i < a.n; i++) {
    const int64_t m0 = a.starts[i], rows = a.starts[i + 1] - m0, d = a.width[i];
    if (!rows || !C) continue;
    const Tensor yi = row_slice(y, m0, rows, C);
    rows_op_vec(c, api, 0, row_slice(res, m0, rows, C), scaled(c, api, a.bu[i], a.scale[i]), yi, rows, C);  // residual + s·bu
    if (!d) continue;
    Tensor p = Tensor::empty({rows, d}, DType::F32, a.dev), act = Tensor::empty({rows, d}, DType::F32, a.dev);
    broadcast_rows(p, a.bd[i], rows, d);
    gemm(c, api, DType::F32, false, true, rows, d, C, h, h.offset + m0 * C, C, a.Wd[i], a.Wd[i].offset, C, 1.f, p.data<float>(), d);  // pre
    copy_into(block(pre, m0, rows, d, a.D), p);
    cuda_check(api.unary_f32((int)a.act, rows * d, p.data<float>(), act.data<float>(), 0.f, 0.f, nullptr), c.name + ": activation");
    gemm(c, api, DType::F32, false, true, rows, C, d, act, 0, d, a.Wu[i], a.Wu[i].offset, d, 1.f, y.data<float>() + m0 * C, C, a.scale[i]);  // y += s·act·Wuᵀ
  }
  c.out.push_back(y);
  c.out.push_back(pre);
}

// bottleneck_sgmv_bwd(g, h, pre, scales, Wd…, bd…, Wu…, bu…) {starts, act} -> gh, dWd…, dbd…, dWu…, dbu…
void op_bottleneck_sgmv_bwd_cuda(OpCtx& c) {
  c.expect_inputs(3);
  for (size_t k : {0, 1, 2}) ew_dtype(c, c.input(k).dtype);
  const Tensor h = as_f32(c, c.input(1));
  const int64_t C = h.dim() ? h.shape.back() : 0, M = C ? h.numel() / C : 0;
  const BnArgs a = bn_args(c, 3, M, C);
  const Tensor g = as_f32(c, c.input(0)), pre = as_f32(c, c.input(2));
  if (g.shape != h.shape) c.fail("ShapeError", "gradient " + shape_str(g.shape) + " vs input " + shape_str(h.shape));
  if (pre.numel() != M * a.D) c.fail("ShapeError", "saved pre " + shape_str(pre.shape) + " must be (" + std::to_string(M) + ", " + std::to_string(a.D) + ")");
  const CudaApi& api = api_on(c, a.dev);
  Tensor gh = Tensor::empty(h.shape, DType::F32, a.dev);
  if (bn_single_launch(a)) {  // each parameter gradient of all adapters back to back in one buffer; the outputs are views
    const adapters_cuda_bn_sgmv tb = bn_table(a, M);
    const auto buf = [&](int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, a.dev); };
    Tensor gpre = buf(M * a.D), dWd = buf(tb.woff[a.n]), dbd = buf(tb.doff[a.n]), dWu = buf(tb.woff[a.n]), dbu = buf(a.n * C);
    cuda_check(api.bottleneck_sgmv_backward_f32(&tb, g.data<float>(), h.data<float>(), pre.data<float>(), gpre.data<float>(), gh.data<float>(),
                                                dWd.data<float>(), dbd.data<float>(), dWu.data<float>(), dbu.data<float>(), nullptr),
               c.name + " on " + a.dev.str());
    c.out.push_back(gh);
    for (int64_t i = 0; i < a.n; i++) c.out.push_back(dWd.view({a.width[i], C}, {C, 1}, tb.woff[i]));
    for (int64_t i = 0; i < a.n; i++) c.out.push_back(dbd.view({a.width[i]}, {1}, tb.doff[i]));
    for (int64_t i = 0; i < a.n; i++) c.out.push_back(dWu.view({C, a.width[i]}, {a.width[i], 1}, tb.woff[i]));
    for (int64_t i = 0; i < a.n; i++) c.out.push_back(dbu.view({C}, {1}, i * C));
    return;
  }
  zero(c, api, gh);
  std::vector<Tensor> dWd, dbd, dWu, dbu;
  for (int64_t i = 0; i < a.n; i++) {
    const int64_t m0 = a.starts[i], rows = a.starts[i + 1] - m0, d = a.width[i];
    const float sc = a.scale[i];
    dWd.push_back(Tensor::empty({d, C}, DType::F32, a.dev));
    dWu.push_back(Tensor::empty({C, d}, DType::F32, a.dev));
    dbu.push_back(col_sums(c, api, C ? row_slice(g, m0, rows, C) : g, rows, C, sc));  // dbu = s·Σ g
    if (!rows || !d || !C) {
      zero(c, api, dWd.back());
      zero(c, api, dWu.back());
      Tensor z = Tensor::empty({d}, DType::F32, a.dev);
      zero(c, api, z);
      dbd.push_back(z);
      continue;
    }
    Tensor p = Tensor::empty({rows, d}, DType::F32, a.dev), act = Tensor::empty({rows, d}, DType::F32, a.dev),
           ga = Tensor::empty({rows, d}, DType::F32, a.dev), gp = Tensor::empty({rows, d}, DType::F32, a.dev);
    copy_into(p, block(pre, m0, rows, d, a.D));
    cuda_check(api.unary_f32((int)a.act, rows * d, p.data<float>(), act.data<float>(), 0.f, 0.f, nullptr), c.name + ": activation");
    gemm(c, api, DType::F32, true, false, C, d, rows, g, g.offset + m0 * C, C, act, 0, d, 0.f, dWu.back().data<float>(), d, sc);  // dWu = s·gᵀ·act
    gemm(c, api, DType::F32, false, false, rows, d, C, g, g.offset + m0 * C, C, a.Wu[i], a.Wu[i].offset, d, 0.f, ga.data<float>(), d, sc);  // ga = s·g·Wu
    cuda_check(api.unary_backward_f32((int)a.act, rows * d, p.data<float>(), ga.data<float>(), gp.data<float>(), nullptr), c.name + ": activation gradient");
    dbd.push_back(col_sums(c, api, gp, rows, d, 1.f));
    gemm(c, api, DType::F32, true, false, d, C, rows, gp, 0, d, h, h.offset + m0 * C, C, 0.f, dWd.back().data<float>(), C);  // dWd = gpreᵀ·h
    gemm(c, api, DType::F32, false, false, rows, C, d, gp, 0, d, a.Wd[i], a.Wd[i].offset, C, 0.f, gh.data<float>() + m0 * C, C);  // gh = gpre·Wd
  }
  c.out.push_back(gh);
  for (auto* v : {&dWd, &dbd, &dWu, &dbu})
    for (auto& t : *v) c.out.push_back(t);
}

// ---- row-wise ops (cuda/rows.cu; per-row code in cuda/rows_math.h) ---------------------------------------------

const CudaApi& api_on(const OpCtx& c, Device dev) {
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
  return api;
}
Tensor f32_out(const OpCtx& c, Tensor out, DType in_dt) { return in_dt == DType::BF16 ? copy_as(c, out, DType::BF16) : out; }
float* fp(const Tensor& t) { return t.st ? t.data<float>() : nullptr; }

// (O, R, I) of a softmax over `dim`
void geo(const OpCtx& c, const Tensor& x, int64_t* O, int64_t* R, int64_t* I) {
  const int64_t d = norm_axis(c, c.i("dim", -1), x.dim());
  *O = 1; *R = 1; *I = 1;
  if (x.dim() == 0) return;
  for (int64_t k = 0; k < d; k++) *O *= x.shape[k];
  *R = x.shape[d];
  for (int64_t k = d + 1; k < x.dim(); k++) *I *= x.shape[k];
}
void softmax_cuda(OpCtx& c, bool log) {
  c.expect_inputs(1);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(0).dtype);
  Tensor x = as_f32(c, c.input(0));
  int64_t O, R, I;
  geo(c, x, &O, &R, &I);
  Tensor y = Tensor::empty(x.shape, DType::F32, dev);
  if (y.numel() > 0) cuda_check(api_on(c, dev).softmax_f32(log, O, R, I, x.data<float>(), y.data<float>(), nullptr), c.name + " on " + dev.str());
  c.out.push_back(f32_out(c, y, c.input(0).dtype));
}
void softmax_bwd_cuda(OpCtx& c, bool log) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(0).dtype);
  ew_dtype(c, c.input(1).dtype);
  Tensor y = as_f32(c, c.input(0)), g = as_f32(c, c.input(1));
  if (y.shape != g.shape) c.fail("ShapeError", "output " + shape_str(y.shape) + " vs grad " + shape_str(g.shape));
  int64_t O, R, I;
  geo(c, y, &O, &R, &I);
  Tensor gi = Tensor::empty(y.shape, DType::F32, dev);
  if (gi.numel() > 0)
    cuda_check(api_on(c, dev).softmax_backward_f32(log, O, R, I, y.data<float>(), g.data<float>(), gi.data<float>(), nullptr), c.name + " on " + dev.str());
  c.out.push_back(f32_out(c, gi, c.input(0).dtype == DType::BF16 && c.input(1).dtype == DType::BF16 ? DType::BF16 : DType::F32));
}
void op_softmax_cuda(OpCtx& c) { softmax_cuda(c, false); }
void op_log_softmax_cuda(OpCtx& c) { softmax_cuda(c, true); }
void op_softmax_bwd_cuda(OpCtx& c) { softmax_bwd_cuda(c, false); }
void op_log_softmax_bwd_cuda(OpCtx& c) { softmax_bwd_cuda(c, true); }

void check_param(const OpCtx& c, size_t k, int64_t C, const char* what) {
  if (!c.has(k)) return;
  const Tensor& w = c.input(k);
  if (w.dim() != 1 || w.shape[0] != C)
    c.fail("ShapeError", std::string(what) + " must have shape [" + std::to_string(C) + "], got " + shape_str(w.shape));
  ew_dtype(c, w.dtype);
}
// layer_norm(x, w?, b?) {eps} / rms_norm(x, w?) {eps} -> y, mean, rstd
void norm_cuda(OpCtx& c, bool rms) {
  c.expect_inputs(1);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(0).dtype);
  Tensor x = as_f32(c, c.input(0));
  if (x.dim() == 0) c.fail("ShapeError", "input must have at least one dimension");
  const int64_t C = x.shape.back(), N = C ? x.numel() / C : 0;
  check_param(c, 1, C, "weight");
  if (!rms) check_param(c, 2, C, "bias");
  Tensor w = c.has(1) ? as_f32(c, c.input(1)) : Tensor(), b = (!rms && c.has(2)) ? as_f32(c, c.input(2)) : Tensor();
  std::vector<int64_t> st(x.shape.begin(), x.shape.end() - 1);
  Tensor y = Tensor::empty(x.shape, DType::F32, dev), mean = Tensor::empty(st, DType::F32, dev), rstd = Tensor::empty(st, DType::F32, dev);
  if (N > 0 && C > 0)
    cuda_check(api_on(c, dev).norm_f32(rms, N, C, x.data<float>(), fp(w), fp(b), (float)c.f("eps", 1e-5), y.data<float>(),
                                       mean.data<float>(), rstd.data<float>(), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(f32_out(c, y, c.input(0).dtype));
  c.out.push_back(mean);
  c.out.push_back(rstd);
}
// layer_norm_bwd(x, w?, mean, rstd, gout) {has_bias} -> dx, [dw], [db];  rms_norm_bwd(...) -> dx, [dw]
void norm_bwd_cuda(OpCtx& c, bool rms) {
  if (c.in.size() < 5) c.fail("ValueError", "expected 5 inputs (x, weight?, mean, rstd, gout), got " + std::to_string(c.in.size()));
  const Device dev = op_device(c);
  for (size_t k : {0, 2, 3, 4}) ew_dtype(c, c.input(k).dtype);
  Tensor x = as_f32(c, c.input(0));
  const int64_t C = x.shape.back(), N = C ? x.numel() / C : 0;
  const bool hw = c.has(1), has_bias = c.b("has_bias", !rms);
  check_param(c, 1, C, "weight");
  Tensor w = hw ? as_f32(c, c.input(1)) : Tensor();
  Tensor mean = as_f32(c, c.input(2)), rstd = as_f32(c, c.input(3)), g = as_f32(c, c.input(4));
  if (g.shape != x.shape) c.fail("ShapeError", "grad " + shape_str(g.shape) + " vs input " + shape_str(x.shape));
  Tensor dx = Tensor::empty(x.shape, DType::F32, dev);
  Tensor dw = hw ? Tensor::empty({C}, DType::F32, dev) : Tensor(), db = has_bias ? Tensor::empty({C}, DType::F32, dev) : Tensor();
  const CudaApi& api = api_on(c, dev);
  if (C > 0 && N == 0) {  // no rows: zero parameter gradients
    if (hw) cuda_check(api.memset(dw.raw(), 0, dw.nbytes(), nullptr), c.name);
    if (has_bias) cuda_check(api.memset(db.raw(), 0, db.nbytes(), nullptr), c.name);
  } else if (C > 0) {
    cuda_check(api.norm_backward_f32(rms, N, C, x.data<float>(), fp(w), mean.data<float>(), rstd.data<float>(), g.data<float>(),
                                     dx.data<float>(), fp(dw), fp(db), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(dx);
  if (hw) c.out.push_back(dw);
  if (has_bias) c.out.push_back(db);
}
void op_layer_norm_cuda(OpCtx& c) { norm_cuda(c, false); }
void op_rms_norm_cuda(OpCtx& c) { norm_cuda(c, true); }
void op_layer_norm_bwd_cuda(OpCtx& c) { norm_bwd_cuda(c, false); }
void op_rms_norm_bwd_cuda(OpCtx& c) { norm_bwd_cuda(c, true); }

// sum(x) {dims?, keepdim}: floating tensors (f32 result; bf16 in -> bf16 out)
void op_sum_cuda(OpCtx& c) {
  c.expect_inputs(1);
  const Device dev = op_device(c);
  const Tensor& x0 = c.input(0);
  ew_dtype(c, x0.dtype);
  std::vector<int64_t> axes = c.has_attr("dims") ? c.ints("dims") : all_axes(x0.dim());
  ORI r = to_ori(c, x0, axes, [&](const Tensor& t) { return copy_as(c, t, DType::F32); });
  Tensor out = Tensor::empty(c.b("keepdim", false) ? r.out_shape_keep : r.out_shape, DType::F32, dev);
  if (out.numel() > 0)
    cuda_check(api_on(c, dev).sum_f32(r.O, r.R, r.I, r.x.data<float>(), out.data<float>(), nullptr), c.name + " on " + dev.str());
  c.out.push_back(f32_out(c, out, x0.dtype));
}

// integer index tensors: copied to the host (they are small) for the bounds check the CPU op does, and uploaded as i64
std::vector<int64_t> indices_host(const OpCtx& c, const Tensor& t, const char* what) {
  if (t.dtype != DType::I64 && t.dtype != DType::I32)
    c.fail("DTypeError", std::string(what) + " must be an integer tensor (i64/i32), got " + dtype_name(t.dtype));
  Tensor h = to_device(t, Device{});  // (a strided device view is gathered on the device first)
  std::vector<int64_t> v((size_t)h.numel());
  for (int64_t k = 0; k < h.numel(); k++) v[k] = t.dtype == DType::I64 ? h.data<int64_t>()[k] : h.data<int32_t>()[k];
  return v;
}
Tensor upload_i64(const std::vector<int64_t>& v, Device dev) {
  Tensor h = Tensor::empty({(int64_t)v.size()}, DType::I64);
  if (!v.empty()) std::memcpy(h.raw(), v.data(), v.size() * 8);
  return to_device(h, dev);
}
void check_range(const OpCtx& c, const std::vector<int64_t>& v, int64_t n, const char* what) {
  for (int64_t i : v)
    if (i < 0 || i >= n) c.fail("IndexError", std::string(what) + " " + std::to_string(i) + " is out of range [0, " + std::to_string(n) + ")");
}

// ---- index ops (cuda/index.cu; per-element code in cuda/index_math.h): validation as native/kernels/index.cpp ------
// The indices are read back to the host for their range check (an IndexError naming the value, never a device fault).

struct DimGeo3 {
  int64_t O, N, I;
};
DimGeo3 dim_geo3(const Tensor& t, int64_t d) {
  DimGeo3 g{1, t.shape[d], 1};
  for (int64_t k = 0; k < d; k++) g.O *= t.shape[k];
  for (int64_t k = d + 1; k < t.dim(); k++) g.I *= t.shape[k];
  return g;
}
Tensor contig(const OpCtx& c, const Tensor& t) { return t.is_contiguous() ? t : copy_as(c, t, t.dtype); }

// index_select(x, idx) {dim}: idx 1-D
void op_index_select_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor& x0 = c.input(0);
  const int dt = any_dtype(c, x0.dtype);
  if (c.input(1).dim() > 1) c.fail("ShapeError", "index must be 1-D, got " + shape_str(c.input(1).shape));
  if (x0.dim() == 0) c.fail("ShapeError", "index_select on a 0-d tensor");
  const int64_t d = norm_axis(c, c.i("dim", 0), x0.dim());
  const auto idx = indices_host(c, c.input(1), "index");
  const DimGeo3 g = dim_geo3(x0, d);
  check_range(c, idx, g.N, "index");
  const Tensor x = contig(c, x0), idd = upload_i64(idx, dev);
  auto shp = x0.shape;
  shp[d] = (int64_t)idx.size();
  Tensor out = Tensor::empty(shp, x0.dtype, dev);
  if (out.numel() > 0)
    cuda_check(api_on(c, dev).index_select(g.O, g.N, g.I, (int64_t)idx.size(), idd.data<int64_t>(), x.raw(), dt, out.raw(), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(out);
}

// index_add(base, idx, src) {dim}: base with src's rows added at idx along dim (f32)
void op_index_add_cuda(OpCtx& c) {
  c.expect_inputs(3);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(0).dtype);
  ew_dtype(c, c.input(2).dtype);
  const Tensor base = as_f32(c, c.input(0)), src = as_f32(c, c.input(2));
  const int64_t d = norm_axis(c, c.i("dim", 0), base.dim());
  const auto idx = indices_host(c, c.input(1), "index");
  const DimGeo3 g = dim_geo3(base, d);
  auto want = base.shape;
  want[d] = (int64_t)idx.size();
  if (src.shape != want) c.fail("ShapeError", "source " + shape_str(src.shape) + " must be " + shape_str(want));
  check_range(c, idx, g.N, "index");
  const Tensor idd = upload_i64(idx, dev);
  Tensor out = Tensor::empty(base.shape, DType::F32, dev);
  if (out.numel() > 0)
    cuda_check(api_on(c, dev).index_add_f32(g.O, g.N, g.I, (int64_t)idx.size(), idx.empty() ? nullptr : idd.data<int64_t>(), base.data<float>(),
                                            src.numel() ? src.data<float>() : nullptr, out.data<float>(), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(out);
}

// gather(x, idx) {dim}: idx has x's rank and fits in x on every other dim (PyTorch's rule)
void op_gather_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor& x = c.input(0);
  const int dt = any_dtype(c, x.dtype);
  const Tensor& it = c.input(1);
  const int64_t d = norm_axis(c, c.i("dim", 0), x.dim());
  if (it.dim() != x.dim()) c.fail("ShapeError", "index " + shape_str(it.shape) + " must have the rank of input " + shape_str(x.shape));
  for (int64_t e = 0; e < x.dim(); e++)
    if (e != d && it.shape[e] > x.shape[e])
      c.fail("ShapeError", "index " + shape_str(it.shape) + " exceeds input " + shape_str(x.shape) + " at dim " + std::to_string(e));
  check_dims(c, x.shape.size());
  const auto idx = indices_host(c, it, "index");
  check_range(c, idx, x.dim() ? x.shape[d] : 1, "index");
  Tensor out = Tensor::empty(it.shape, x.dtype, dev);
  if (out.numel() > 0) {
    const Tensor idd = upload_i64(idx, dev);
    cuda_check(api_on(c, dev).gather((int)x.dim(), (int)d, it.shape.data(), x.strides.data(), idd.data<int64_t>(), x.raw(), dt, out.raw(), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(out);
}

// scatter_add(base, idx, src) {dim}: base with src added at idx along dim (f32)
void op_scatter_add_cuda(OpCtx& c) {
  c.expect_inputs(3);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(0).dtype);
  ew_dtype(c, c.input(2).dtype);
  const Tensor base = as_f32(c, c.input(0)), src = as_f32(c, c.input(2));
  const Tensor& it = c.input(1);
  const int64_t d = norm_axis(c, c.i("dim", 0), base.dim());
  if (it.shape != src.shape) c.fail("ShapeError", "index " + shape_str(it.shape) + " and source " + shape_str(src.shape) + " differ");
  if (it.dim() != base.dim()) c.fail("ShapeError", "index rank must match input " + shape_str(base.shape));
  for (int64_t e = 0; e < base.dim(); e++)
    if (e != d && it.shape[e] > base.shape[e]) c.fail("ShapeError", "index " + shape_str(it.shape) + " exceeds " + shape_str(base.shape));
  check_dims(c, base.shape.size());
  const auto idx = indices_host(c, it, "index");
  check_range(c, idx, base.shape[d], "index");
  Tensor out = Tensor::empty(base.shape, DType::F32, dev);
  if (out.numel() > 0) {
    const Tensor idd = upload_i64(idx, dev);
    cuda_check(api_on(c, dev).scatter_add_f32((int)base.dim(), (int)d, base.shape.data(), it.shape.data(), idx.empty() ? nullptr : idd.data<int64_t>(),
                                              base.data<float>(), src.numel() ? src.data<float>() : nullptr, out.data<float>(), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(out);
}

// embedding(ids, weight) -> weight[ids]
void op_embedding_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  const Tensor& w0 = c.input(1);
  if (w0.dim() != 2) c.fail("ShapeError", "weight must be 2-D (num_embeddings, dim), got " + shape_str(w0.shape));
  if (w0.dtype != DType::F32) c.fail("DeviceError", std::string("a ") + dtype_name(w0.dtype) + " embedding table has no CUDA kernel yet (f32 has)");
  const auto ids = indices_host(c, c.input(0), "ids");
  const int64_t V = w0.shape[0], C = w0.shape[1];
  check_range(c, ids, V, "id");
  Tensor w = as_f32(c, w0), idd = upload_i64(ids, dev);
  std::vector<int64_t> shp = c.input(0).shape;
  shp.push_back(C);
  Tensor out = Tensor::empty(shp, DType::F32, dev);
  if (out.numel() > 0)
    cuda_check(api_on(c, dev).embedding_f32((int64_t)ids.size(), C, idd.data<int64_t>(), w.data<float>(), out.data<float>(), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(out);
}
// embedding_bwd(ids, gout) {num_embeddings} -> dweight (V, C)
void op_embedding_bwd_cuda(OpCtx& c) {
  c.expect_inputs(2);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(1).dtype);
  const auto ids = indices_host(c, c.input(0), "ids");
  Tensor g = as_f32(c, c.input(1));
  const int64_t V = c.i("num_embeddings"), C = g.dim() ? g.shape.back() : 1;
  if (g.numel() != (int64_t)ids.size() * C) c.fail("ShapeError", "grad " + shape_str(g.shape) + " vs ids " + shape_str(c.input(0).shape));
  check_range(c, ids, V, "id");
  Tensor dw = Tensor::empty({V, C}, DType::F32, dev), idd = upload_i64(ids, dev);
  const CudaApi& api = api_on(c, dev);
  if (dw.numel() > 0) {
    cuda_check(api.memset(dw.raw(), 0, dw.nbytes(), nullptr), c.name);
    cuda_check(api.embedding_backward_f32((int64_t)ids.size(), C, idd.data<int64_t>(), g.data<float>(), dw.data<float>(), nullptr),
               c.name + " on " + dev.str());
  }
  c.out.push_back(dw);
}

// cross_entropy(logits, targets) {ignore_index, label_smoothing, reduction} -> loss, lse;  _bwd(..., lse, gout) -> dlogits
struct CECuda {
  Tensor x, t;
  int64_t N, C, ignore, count;
  float eps;
  std::string red;
};
CECuda ce_parse(OpCtx& c, Device dev) {
  c.expect_inputs(2);
  CECuda r;
  ew_dtype(c, c.input(0).dtype);
  r.x = as_f32(c, c.input(0));
  if (r.x.dim() != 2) c.fail("ShapeError", "logits must be (N, C), got " + shape_str(r.x.shape));
  r.N = r.x.shape[0];
  r.C = r.x.shape[1];
  const Tensor& t0 = c.input(1);
  if (t0.dtype != DType::I64 && t0.dtype != DType::I32)
    c.fail("DTypeError", "targets must be integer class indices (i64), got " + std::string(dtype_name(t0.dtype)));
  if (t0.dim() != 1 || t0.shape[0] != r.N)
    c.fail("ShapeError", "targets " + shape_str(t0.shape) + " must be [" + std::to_string(r.N) + "] for logits " + shape_str(r.x.shape));
  r.ignore = c.i("ignore_index", -100);
  r.eps = (float)c.f("label_smoothing", 0.0);
  if (r.eps < 0 || r.eps > 1) c.fail("ValueError", "label_smoothing must be in [0, 1], got " + std::to_string(r.eps));
  r.red = c.s("reduction", "mean");
  if (r.red != "mean" && r.red != "sum" && r.red != "none") c.fail("ValueError", "reduction must be mean, sum or none, got '" + r.red + "'");
  const auto t = indices_host(c, t0, "targets");
  r.count = 0;
  for (int64_t i = 0; i < r.N; i++) {
    if (t[i] != r.ignore && (t[i] < 0 || t[i] >= r.C))
      c.fail("IndexError", "target " + std::to_string(t[i]) + " at row " + std::to_string(i) + " is out of range [0, " + std::to_string(r.C) + ")");
    r.count += t[i] != r.ignore;
  }
  r.t = upload_i64(t, dev);
  return r;
}
void op_cross_entropy_cuda(OpCtx& c) {
  const Device dev = op_device(c);
  CECuda r = ce_parse(c, dev);
  const CudaApi& api = api_on(c, dev);
  Tensor lse = Tensor::empty({r.N}, DType::F32, dev), rows = Tensor::empty({r.N}, DType::F32, dev);
  if (r.N > 0 && r.C > 0)
    cuda_check(api.cross_entropy_f32(r.N, r.C, r.x.data<float>(), r.t.data<int64_t>(), r.ignore, r.eps, lse.data<float>(), rows.data<float>(), nullptr),
               c.name + " on " + dev.str());
  if (r.red == "none") {
    c.out.push_back(rows);
  } else {
    Tensor tot = Tensor::empty({}, DType::F32, dev);
    cuda_check(api.sum_f32(1, r.N, 1, rows.data<float>(), tot.data<float>(), nullptr), c.name + " on " + dev.str());
    if (r.red == "mean") {  // tot / count (0/0 = NaN without targets, as on the CPU)
      Tensor m = Tensor::empty({}, DType::F32, dev);
      cuda_check(api.unary_f32(18, 1, tot.data<float>(), m.data<float>(), 1.f / (float)r.count, 0.f, nullptr), c.name);
      tot = m;
    }
    c.out.push_back(tot);
  }
  c.out.push_back(lse);
}
void op_cross_entropy_bwd_cuda(OpCtx& c) {
  const Device dev = op_device(c);
  CECuda r = ce_parse(c, dev);
  c.expect_inputs(4);
  Tensor lse = as_f32(c, c.input(2)), g = as_f32(c, c.input(3));
  if (r.red == "none" && g.numel() != r.N) c.fail("ShapeError", "grad must have " + std::to_string(r.N) + " elements");
  Tensor dx = Tensor::empty(r.x.shape, DType::F32, dev);
  const float scale = r.red == "mean" ? 1.f / (float)r.count : 1.f;
  if (dx.numel() > 0)
    cuda_check(api_on(c, dev).cross_entropy_backward_f32(r.N, r.C, r.x.data<float>(), r.t.data<int64_t>(), lse.data<float>(), r.ignore,
                                                         r.eps, g.data<float>(), r.red == "none", scale, dx.data<float>(), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(dx);
}

// rope(x, cos, sin) {interleaved, backward}: rope.cpp's validation, rows_math.h's rotation
void op_rope_cuda(OpCtx& c) {
  c.expect_inputs(3);
  const Device dev = op_device(c);
  for (size_t i : {0, 1, 2}) ew_dtype(c, c.input(i).dtype);
  Tensor x = as_f32(c, c.input(0)), cs = as_f32(c, c.input(1)), sn = as_f32(c, c.input(2));
  if (x.dim() < 2) c.fail("ShapeError", "x must be (..., T, D), got " + shape_str(x.shape));
  const int64_t T = x.shape[x.dim() - 2], D = x.shape[x.dim() - 1];
  if (D % 2) c.fail("ShapeError", "head dim must be even, got " + std::to_string(D));
  if (cs.shape != sn.shape) c.fail("ShapeError", "cos " + shape_str(cs.shape) + " and sin " + shape_str(sn.shape) + " differ");
  const bool per_batch = cs.dim() == 3;
  if (!((cs.dim() == 2 && cs.shape[0] == T && cs.shape[1] == D) ||
        (per_batch && x.dim() == 4 && cs.shape[0] == x.shape[0] && cs.shape[1] == T && cs.shape[2] == D)))
    c.fail("ShapeError", "cos/sin " + shape_str(cs.shape) + " must be [T, D] = [" + std::to_string(T) + ", " + std::to_string(D) +
                             "] or [B, T, D] for x " + shape_str(x.shape));
  Tensor y = Tensor::empty(x.shape, DType::F32, dev);
  if (y.numel() > 0 && D > 0)
    cuda_check(api_on(c, dev).rope_f32(x.numel() / D, T, D, per_batch ? x.shape[1] * T : 0, x.data<float>(), cs.data<float>(), sn.data<float>(),
                                       y.data<float>(), c.b("interleaved", false), c.b("backward", false), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(f32_out(c, y, c.input(0).dtype));
}

// cat(tensors...) {dim}: cat.cpp's validation; each input lands in its slice of the output by a device copy
void op_cat_cuda(OpCtx& c) {
  op_device(c);
  op_cat(c);
}

// dropout(x) {p, seed, offset}: the CPU's Philox mask (cuda/random.cu); bf16 in -> bf16 out
void op_dropout_cuda(OpCtx& c) {
  c.expect_inputs(1);
  const Device dev = op_device(c);
  ew_dtype(c, c.input(0).dtype);
  Tensor x = as_f32(c, c.input(0));
  const float p = (float)c.f("p");
  if (!(p >= 0 && p <= 1)) c.fail("ValueError", "p must be in [0, 1], got " + std::to_string(p));
  const double s = c.f("seed");
  if (s < 0 || s != std::floor(s)) c.fail("ValueError", "seed must be a non-negative integer");
  Tensor y = Tensor::empty(x.shape, DType::F32, dev);
  if (y.numel() > 0)
    cuda_check(api_on(c, dev).dropout_f32(x.numel(), x.data<float>(), y.data<float>(), p, (uint64_t)s, (uint64_t)c.i("offset", 0), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(f32_out(c, y, c.input(0).dtype));
}

// ---- attention (cuda/attention.cu; per-row code in cuda/attention_math.h) ---------------------------------------
// attention(q, k, v, mask?, key_keep?, prefix_k?, prefix_v?) {scale, causal} -> out, lse;
// attention_bwd(..., out, lse, dout) -> dq, dk, dv, [dprefix_k, dprefix_v]. Validation as attention_op.cpp.
struct AttnCuda {
  CudaAttn p{};
  Tensor q, k, v, pk, pv, mask, keep;
};
AttnCuda attn_prepare(OpCtx& c) {
  c.expect_inputs(3);
  AttnCuda r;
  for (size_t i : {0, 1, 2, 3, 5, 6})
    if (c.has(i)) ew_dtype(c, c.input(i).dtype);
  r.q = as_f32(c, c.input(0));
  r.k = as_f32(c, c.input(1));
  r.v = as_f32(c, c.input(2));
  if (c.has(5)) r.pk = as_f32(c, c.input(5));
  if (c.has(6)) r.pv = as_f32(c, c.input(6));
  if (c.has(3)) r.mask = as_f32(c, c.input(3));
  if (c.has(4)) r.keep = c.input(4);
  AttnParams a;
  attention_check(c, r.q, r.k, r.v, r.pk, r.pv, r.mask, r.keep, a);
  if (c.f("dropout", 0) != 0)  // (lib/ops/nn.ts sends attention dropout on a GPU through its explicit path)
    c.fail("DeviceError", "attention-probability dropout has no fused CUDA kernel");
  if (r.keep.st && !r.keep.is_contiguous())
    c.fail("DeviceError", "a strided key padding mask needs a strided-copy kernel for bool, which CUDA has not yet");
  r.p = CudaAttn{a.B, a.H, a.Hkv, a.Tq, a.Tk, a.P, a.D, a.Dv, a.scale, a.causal ? 1 : 0, r.mask.st ? r.mask.data<float>() : nullptr,
                 a.mask_sb, a.mask_sh, a.mask_si, a.mask_sj, r.keep.st ? static_cast<const uint8_t*>(r.keep.raw()) : nullptr,
                 c.i("mixed", 0) != 0 ? 1 : 0};
  return r;
}
void op_attention_cuda(OpCtx& c) {
  const Device dev = op_device(c);
  AttnCuda r = attn_prepare(c);
  const CudaAttn& p = r.p;
  Tensor out = Tensor::empty({p.B, p.H, p.Tq, p.Dv}, DType::F32, dev), lse = Tensor::empty({p.B, p.H, p.Tq}, DType::F32, dev);
  if (out.numel() > 0 || lse.numel() > 0)
    cuda_check(api_on(c, dev).attention_f32(&p, r.q.data<float>(), r.k.data<float>(), r.v.data<float>(), fp(r.pk), fp(r.pv), out.data<float>(),
                                            lse.data<float>(), nullptr),
               c.name + " on " + dev.str());
  c.out.push_back(out);
  c.out.push_back(lse);
}
void op_attention_bwd_cuda(OpCtx& c) {
  const Device dev = op_device(c);
  AttnCuda r = attn_prepare(c);
  const CudaAttn& p = r.p;
  if (c.n_in() < 10) c.fail("ValueError", "expects q, k, v, mask, key_keep, prefix_k, prefix_v, out, lse, dout");
  for (size_t i : {7, 8, 9}) ew_dtype(c, c.input(i).dtype);
  Tensor out = as_f32(c, c.input(7)), lse = as_f32(c, c.input(8)), dout = as_f32(c, c.input(9));
  if (out.shape != std::vector<int64_t>{p.B, p.H, p.Tq, p.Dv} || dout.shape != out.shape || lse.shape != std::vector<int64_t>{p.B, p.H, p.Tq})
    c.fail("ShapeError", "out/lse/dout shapes do not match q, v");
  Tensor dq = Tensor::empty(r.q.shape, DType::F32, dev), dk = Tensor::empty(r.k.shape, DType::F32, dev), dv = Tensor::empty(r.v.shape, DType::F32, dev);
  Tensor dpk, dpv;
  if (p.P) {
    dpk = Tensor::empty(r.pk.shape, DType::F32, dev);
    dpv = Tensor::empty(r.pv.shape, DType::F32, dev);
  }
  cuda_check(api_on(c, dev).attention_backward_f32(&p, r.q.data<float>(), r.k.data<float>(), r.v.data<float>(), fp(r.pk), fp(r.pv),
                                                   out.data<float>(), dout.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                                   fp(dpk), fp(dpv), nullptr),
             c.name + " on " + dev.str());
  c.out.push_back(dq);
  c.out.push_back(dk);
  c.out.push_back(dv);
  if (p.P) {
    c.out.push_back(dpk);
    c.out.push_back(dpv);
  }
}

}  // namespace

// The CUDA column of the op table (dispatch.cpp installs these next to the CPU kernels).
extern const std::vector<std::pair<const char*, OpFn>> kCudaOps = {
    {"contiguous", &op_contiguous_cuda},
    {"copy_", &op_copy__cuda},
    {"cast", &op_cast_cuda},
    {"add", &op_add_cuda},
    {"sub", &op_sub_cuda},
    {"mul", &op_mul_cuda},
    {"div", &op_div_cuda},
    {"maximum", &op_maximum_cuda},
    {"minimum", &op_minimum_cuda},
    {"neg", &op_neg_cuda},
    {"exp", &op_exp_cuda},
    {"log", &op_log_cuda},
    {"sqrt", &op_sqrt_cuda},
    {"rsqrt", &op_rsqrt_cuda},
    {"abs", &op_abs_cuda},
    {"sign", &op_sign_cuda},
    {"sin", &op_sin_cuda},
    {"cos", &op_cos_cuda},
    {"relu", &op_relu_cuda},
    {"gelu", &op_gelu_cuda},
    {"gelu_tanh", &op_gelu_tanh_cuda},
    {"quick_gelu", &op_quick_gelu_cuda},
    {"silu", &op_silu_cuda},
    {"tanh", &op_tanh_cuda},
    {"sigmoid", &op_sigmoid_cuda},
    {"atan", &op_atan_cuda},
    {"affine", &op_affine_cuda},
    {"pow_scalar", &op_pow_scalar_cuda},
    {"activation_bwd", &op_activation_bwd_cuda},
    {"softmax", &op_softmax_cuda},
    {"softmax_bwd", &op_softmax_bwd_cuda},
    {"log_softmax", &op_log_softmax_cuda},
    {"log_softmax_bwd", &op_log_softmax_bwd_cuda},
    {"layer_norm", &op_layer_norm_cuda},
    {"layer_norm_bwd", &op_layer_norm_bwd_cuda},
    {"rms_norm", &op_rms_norm_cuda},
    {"rms_norm_bwd", &op_rms_norm_bwd_cuda},
    {"sum", &op_sum_cuda},
    {"embedding", &op_embedding_cuda},
    {"embedding_bwd", &op_embedding_bwd_cuda},
    {"cross_entropy", &op_cross_entropy_cuda},
    {"cross_entropy_bwd", &op_cross_entropy_bwd_cuda},
    {"dropout", &op_dropout_cuda},
    {"cat", &op_cat_cuda},
    {"rope", &op_rope_cuda},
    {"attention", &op_attention_cuda},
    {"attention_bwd", &op_attention_bwd_cuda},
    {"matmul", &op_matmul_cuda},
    {"fill", &op_fill_cuda},
    {"eq", &op_eq_cuda}, {"ne", &op_ne_cuda}, {"lt", &op_lt_cuda}, {"le", &op_le_cuda}, {"gt", &op_gt_cuda}, {"ge", &op_ge_cuda},
    {"logical_and", &op_logical_and_cuda}, {"logical_or", &op_logical_or_cuda}, {"logical_not", &op_logical_not_cuda},
    {"where", &op_where_cuda}, {"masked_fill", &op_masked_fill_cuda},
    {"bottleneck_sgmv", &op_bottleneck_sgmv_cuda}, {"bottleneck_sgmv_bwd", &op_bottleneck_sgmv_bwd_cuda},
    {"lora_sgmv", &op_lora_sgmv_cuda}, {"lora_sgmv_bwd", &op_lora_sgmv_bwd_cuda},
    {"lora_linear", &op_lora_linear_cuda}, {"ia3_linear", &op_ia3_linear_cuda}, {"bottleneck", &op_bottleneck_cuda},
    {"index_select", &op_index_select_cuda}, {"index_add", &op_index_add_cuda}, {"gather", &op_gather_cuda}, {"scatter_add", &op_scatter_add_cuda},
    {"linear", &op_linear_cuda},
    {"adamw_step", &op_adamw_step_cuda},
};

}  // namespace ad
