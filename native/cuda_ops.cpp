// cuda_ops.cpp — the CUDA slots of the op table: host code that checks an op's CUDA inputs and calls the kernels
// of libadapters_cuda.so (cuda/, C ABI in cuda/adapters_cuda.h) through native/cuda_loader. Every op here
// validates like its CPU twin (same messages); dtype/layout cases without a CUDA kernel yet throw a DeviceError
// naming the op rather than falling back to the CPU.
//
// CUDA ops so far: matmul (f32 and bf16 inputs, f32 accumulation; batched and broadcast batch dims), linear
// (incl. bias and the Conv1D layout), adamw_step (all parameters in one launch per step count), and clone /
// copy_ of contiguous tensors.
#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cuda_loader.h"
#include "kernels/matview.h"
#include "op.h"

namespace ad {
namespace {

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

// C (f32, device) = op(A)·op(B) (+ beta·C) through the library's f32 or bf16 GEMM; offsets in elements.
void gemm(const OpCtx& c, const CudaApi& api, DType dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& a,
          int64_t aoff, int64_t lda, const Tensor& b, int64_t boff, int64_t ldb, float beta, float* C, int64_t ldc) {
  int rc;
  if (dt == DType::BF16)
    rc = api.gemm_bf16(ta, tb, M, N, K, 1.f, static_cast<const uint16_t*>(a.st->data) + aoff, lda,
                       static_cast<const uint16_t*>(b.st->data) + boff, ldb, beta, C, ldc, nullptr);
  else
    rc = api.gemm_f32(ta, tb, M, N, K, 1.f, static_cast<const float*>(a.st->data) + aoff, lda,
                      static_cast<const float*>(b.st->data) + boff, ldb, beta, C, ldc, nullptr);
  cuda_check(rc, c.name + " on " + a.device().str());
}

void check_gemm_dtypes(const OpCtx& c, DType a, DType b) {
  if (!dtype_is_float(a) || a != b)
    c.fail("DTypeError", std::string("input and weight must share a floating dtype, got ") + dtype_name(a) + " and " + dtype_name(b));
  if (a == DType::F16) c.fail("DeviceError", "f16 GEMMs have no CUDA kernel yet (use f32 or bf16)");
  if (a == DType::BF16 && !c.i("f32_out", 0))
    c.fail("DeviceError", "a bf16 result needs a cast kernel, which CUDA has not yet; pass f32_out (autocast does)");
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
  if (!mat_view(a, &va) || !mat_view(b, &vb))
    c.fail("DeviceError", "operands strided in both matrix dims need a strided-copy kernel, which CUDA has not yet");
  std::vector<int64_t> oshape = bshape;
  oshape.push_back(M);
  oshape.push_back(N);
  Tensor out = Tensor::empty(oshape, DType::F32, dev);
  if (out.numel() > 0) {
    if (K == 0) cuda_check(api.memset(out.raw(), 0, out.nbytes(), nullptr), c.name + ": zero the output");
    else {
      auto ao = batch_offsets(a, bshape), bo = batch_offsets(b, bshape);
      for (auto& o : ao) o += a.offset;
      for (auto& o : bo) o += b.offset;
      for (size_t i = 0; i < ao.size(); i++)  // one launch per batch entry (the library has no batched GEMM yet)
        gemm(c, api, a.dtype, va.trans, vb.trans, M, N, K, a, ao[i], va.ld, b, bo[i], vb.ld, 0.f, out.data<float>() + (int64_t)i * M * N, N);
    }
  }
  const auto fshape = matmul_out_shape(ms);
  c.out.push_back(out.view(fshape, contiguous_strides(fshape), 0));
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
    if (!b.is_contiguous()) c.fail("DeviceError", "a strided bias needs a strided-copy kernel, which CUDA has not yet");
  }
  if (!x.is_contiguous()) c.fail("DeviceError", "a non-contiguous input needs a strided-copy kernel, which CUDA has not yet");
  MatView vw{false, 1};
  if (!mat_view(w, &vw)) c.fail("DeviceError", "a weight strided in both dims needs a strided-copy kernel, which CUDA has not yet");
  const CudaApi& api = cuda_api(c.name);
  cuda_check(api.set_device(dev.index), c.name + ": select " + dev.str());
  const int64_t rows = shape_numel(std::vector<int64_t>(x.shape.begin(), x.shape.end() - 1));
  const bool tb = conv ? vw.trans : !vw.trans;
  std::vector<int64_t> oshape(x.shape.begin(), x.shape.end() - 1);
  oshape.push_back(outf);
  Tensor out = Tensor::empty(oshape, DType::F32, dev);
  if (out.numel() == 0) {
    c.out.push_back(out);
    return;
  }
  float beta = 0.f;
  if (c.has(2)) {
    // Y = 1·bᵀ first (a K = 1 GEMM against a column of ones), then the product accumulates onto it
    const Tensor& b = c.input(2);
    Tensor ones_host = Tensor::empty({rows, 1}, DType::F32);
    std::fill(ones_host.data<float>(), ones_host.data<float>() + rows, 1.f);
    Tensor ones = to_device(ones_host, dev);
    gemm(c, api, DType::F32, false, false, rows, outf, 1, ones, 0, 1, b, b.offset, outf, 0.f, out.data<float>(), outf);
    beta = 1.f;
  } else if (in == 0) {
    cuda_check(api.memset(out.raw(), 0, out.nbytes(), nullptr), c.name + ": zero the output");
  }
  if (in > 0) gemm(c, api, x.dtype, false, tb, rows, outf, in, x, x.offset, in, w, w.offset, vw.ld, beta, out.data<float>(), outf);
  c.out.push_back(out);
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

}  // namespace

// clone / copy_ of contiguous same-dtype tensors: copy_into moves the bytes (device <-> device or host) and refuses
// strided or converting copies, which need kernels CUDA has not yet.
void op_contiguous_cuda(OpCtx& c) {
  c.expect_inputs(1);
  op_device(c);
  op_contiguous(c);
}
void op_copy__cuda(OpCtx& c) {
  c.expect_inputs(2);
  op_copy_(c);  // the destination decides; a cpu source is copied over
}

// The CUDA column of the op table (dispatch.cpp installs these next to the CPU kernels).
extern const std::vector<std::pair<const char*, OpFn>> kCudaOps = {
    {"contiguous", &op_contiguous_cuda},
    {"copy_", &op_copy__cuda},
    {"matmul", &op_matmul_cuda},
    {"linear", &op_linear_cuda},
    {"adamw_step", &op_adamw_step_cuda},
};

}  // namespace ad
