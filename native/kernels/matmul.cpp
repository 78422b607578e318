// matmul.cpp — torch.matmul semantics (1-D promotion, broadcast batch dims) and linear (x·Wᵀ + b, or
// GPT-2's Conv1D layout x·W + b). Transposed views are passed to the GEMM as transpose flags, never
// copied; only views that are strided in both of the last two dims get packed first.
// Legend: A (..., M, K), B (..., K, N), C (..., M, N). bf16 × bf16 runs bgemm (f32 accumulate) and
// returns bf16 (f32 with {f32_out: 1}, for mixed precision); mixed dtypes are an error (as in PyTorch), except
// with {mixed: 1} (CPU autocast): then each operand may be f32 or bf16, the products are bf16 (f32 operands
// rounded to bf16 as the GEMM packs them, no cast pass) and the result is f32.
#include "gemm.h"

#include <algorithm>

#include "../op.h"
#include "matview.h"
#include "../threadpool.h"

namespace ad {
namespace {

// A pointer to element `off` of t's f32 or bf16 data.
const void* elem_ptr(const Tensor& t, int64_t off) {
  return t.dtype == DType::F32 ? (const void*)(t.data<float>() + off) : (const void*)(t.data<uint16_t>() + off);
}

void gemm_any(DType dt, bool mixed, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& a, int64_t lda,
              const std::vector<int64_t>& aoff, const Tensor& b, int64_t ldb, const std::vector<int64_t>& boff,
              float beta, float* C, int64_t ldc, int64_t strideC, uint16_t* C16 = nullptr) {
  // C16: bf16 × bf16 with a bf16 result, written by the GEMM (beta 0; C unused)
  int64_t batch = (int64_t)aoff.size();
  // uniform batch strides -> one batched call
  auto uniform = [&](const std::vector<int64_t>& o, int64_t* st) {
    *st = batch > 1 ? o[1] - o[0] : 0;
    for (int64_t i = 1; i < batch; i++) if (o[i] - o[i - 1] != *st) return false;
    return true;
  };
  int64_t sa, sb;
  if (uniform(aoff, &sa) && uniform(boff, &sb)) {
    // A shared right operand and a left one whose batch entries follow row after row ((B, T, K) @ (K, N): a linear
    // layer's input gradient) into a C laid out the same way: one GEMM of batch·M rows (B is packed once, and the
    // kernels get a tall M instead of several short ones).
    if (batch > 1 && sb == 0 && !ta && sa == M * lda && strideC == M * ldc) {
      M *= batch;
      batch = 1;
    }
    if (mixed)
      mgemm_batched(batch, ta, tb, M, N, K, elem_ptr(a, aoff[0]), a.dtype == DType::F32, lda, sa, elem_ptr(b, boff[0]),
                    b.dtype == DType::F32, ldb, sb, nullptr, C, ldc, strideC);
    else if (C16)
      bgemm_batched_bf16_out(batch, ta, tb, M, N, K, a.data<uint16_t>() + aoff[0], lda, sa, b.data<uint16_t>() + boff[0], ldb, sb, C16, ldc, strideC);
    else if (dt == DType::BF16)
      bgemm_batched(batch, ta, tb, M, N, K, 1.f, a.data<uint16_t>() + aoff[0], lda, sa, b.data<uint16_t>() + boff[0], ldb, sb, beta, C, ldc, strideC);
    else
      sgemm_batched(batch, ta, tb, M, N, K, 1.f, a.data<float>() + aoff[0], lda, sa, b.data<float>() + boff[0], ldb, sb, beta, C, ldc, strideC);
    return;
  }
  for (int64_t i = 0; i < batch; i++) {
    if (mixed)
      mgemm_batched(1, ta, tb, M, N, K, elem_ptr(a, aoff[i]), a.dtype == DType::F32, lda, 0, elem_ptr(b, boff[i]),
                    b.dtype == DType::F32, ldb, 0, nullptr, C + i * strideC, ldc, 0);
    else if (C16)
      bgemm_batched_bf16_out(1, ta, tb, M, N, K, a.data<uint16_t>() + aoff[i], lda, 0, b.data<uint16_t>() + boff[i], ldb, 0, C16 + i * strideC, ldc, 0);
    else if (dt == DType::BF16)
      bgemm(ta, tb, M, N, K, 1.f, a.data<uint16_t>() + aoff[i], lda, b.data<uint16_t>() + boff[i], ldb, beta, C + i * strideC, ldc);
    else
      sgemm(ta, tb, M, N, K, 1.f, a.data<float>() + aoff[i], lda, b.data<float>() + boff[i], ldb, beta, C + i * strideC, ldc);
  }
}

}  // namespace

// matmul(a, b) -> a @ b
void op_matmul(OpCtx& c) {
  c.expect_inputs(2);
  Tensor a = c.input(0), b = c.input(1);
  const bool mixed = c.i("mixed", 0) != 0;
  if (mixed && (!mixed_operand(a.dtype) || !mixed_operand(b.dtype)))
    c.fail("DTypeError", std::string("mixed-precision matmul needs f32 or bf16 tensors, got ") + dtype_name(a.dtype) + " and " + dtype_name(b.dtype));
  if (!dtype_is_float(a.dtype) || !dtype_is_float(b.dtype))
    c.fail("DTypeError", std::string("matmul needs floating tensors, got ") + dtype_name(a.dtype) + " and " + dtype_name(b.dtype));
  if (!mixed && a.dtype != b.dtype)
    c.fail("DTypeError", std::string("dtype mismatch: ") + dtype_name(a.dtype) + " @ " + dtype_name(b.dtype));
  DType out_dt = a.dtype;
  if (a.dtype == DType::F16) { a = cast(a, DType::F32); b = cast(b, DType::F32); }
  MatmulShapes ms = matmul_shapes(c, a, b);
  a = ms.a;
  b = ms.b;
  const int64_t M = ms.M, K = ms.K, N = ms.N;
  const auto& bshape = ms.bshape;
  MatView va{false, 1}, vb{false, 1};
  if (!mat_view(a, &va)) { a = contiguous(a); mat_view(a, &va); }
  if (!mat_view(b, &vb)) { b = contiguous(b); mat_view(b, &vb); }
  std::vector<int64_t> oshape = bshape;
  oshape.push_back(M);
  oshape.push_back(N);
  // bf16 @ bf16 -> bf16: the GEMM writes the rounded result itself (the same values as f32 output + cast)
  const bool out16 = out_dt == DType::BF16 && !mixed && !c.i("f32_out", 0);
  Tensor out = Tensor::empty(oshape, out16 ? DType::BF16 : DType::F32);
  if (out.numel() > 0) {
    if (K == 0) std::memset(out.raw(), 0, out.nbytes());
    else
      gemm_any(a.dtype, mixed, va.trans, vb.trans, M, N, K, a, va.ld, batch_offsets(a, bshape), b, vb.ld, batch_offsets(b, bshape),
               0.f, out16 ? nullptr : out.data<float>(), N, M * N, out16 ? out.data<uint16_t>() : nullptr);
  }
  // drop the promoted dims
  const auto fshape = matmul_out_shape(ms);
  out = out.view(fshape, contiguous_strides(fshape), 0);
  // f32_out: keep the f32 accumulator (mixed precision: bf16 inputs, f32 activations)
  c.out.push_back(out_dt == DType::F32 || mixed || out16 || c.i("f32_out", 0) ? out : cast(out, out_dt));
}

// linear(x, w, b?) {layout: "linear" (w: (out, in)) | "conv1d" (w: (in, out))} -> (..., out)
void op_linear(OpCtx& c) {
  c.expect_inputs(2);
  Tensor x = c.input(0), w = c.input(1);
  const bool mixed = c.i("mixed", 0) != 0;  // {mixed: 1}: as matmul's (f32 / bf16 operands, bf16 products, f32 result)
  const LinearShapes ls = linear_shapes(c, x, w, mixed);
  const bool conv = ls.conv;
  const int64_t in = ls.in, outf = ls.outf;
  DType out_dt = x.dtype;
  if (x.dtype == DType::F16) { x = cast(x, DType::F32); w = cast(w, DType::F32); }
  x = contiguous(x);
  int64_t rows = in ? x.numel() / in : 0;
  if (in == 0) rows = shape_numel(std::vector<int64_t>(x.shape.begin(), x.shape.end() - 1));
  MatView vw{false, 1};
  if (!mat_view(w, &vw)) { w = contiguous(w); mat_view(w, &vw); }
  // y = x · op(W): W (out,in) needs transB = !trans-of-view; Conv1D (in,out) needs transB = view-trans
  bool tb = conv ? vw.trans : !vw.trans;
  std::vector<int64_t> oshape(x.shape.begin(), x.shape.end() - 1);
  oshape.push_back(outf);
  // bf16 in, bf16 out: the GEMM's epilogue adds the bias and rounds (the same values as f32 output + cast)
  const bool out16 = x.dtype == DType::BF16 && out_dt == DType::BF16 && !mixed && !c.i("f32_out", 0);
  Tensor out = Tensor::empty(oshape, out16 ? DType::BF16 : DType::F32);
  float* Y = out16 ? nullptr : out.data<float>();
  if (mixed || x.dtype == DType::BF16) {
    // bf16 products; the bias is added by the GEMM's epilogue (no separate pass over the output)
    Tensor b = c.has(2) ? contiguous(cast(c.input(2), DType::F32)) : Tensor();
    if (rows > 0 && outf > 0)
      mgemm_batched(1, false, tb, rows, outf, in, elem_ptr(x, 0), x.dtype == DType::F32, in, 0, elem_ptr(w, 0),
                    w.dtype == DType::F32, vw.ld, 0, c.has(2) ? b.data<float>() : nullptr, Y, outf, 0,
                    out16 ? out.data<uint16_t>() : nullptr);
    c.out.push_back(out_dt == DType::F32 || mixed || out16 || c.i("f32_out", 0) ? out : cast(out, out_dt));
    return;
  }
  // f32: the GEMM writes the bias into each tile of the output just before adding the product to it (sgemm_bias)
  Tensor b = c.has(2) ? contiguous(cast(c.input(2), DType::F32)) : Tensor();
  if (rows > 0 && outf > 0) sgemm_bias(false, tb, rows, outf, in, x.data<float>(), in, w.data<float>(), vw.ld, c.has(2) ? b.data<float>() : nullptr, Y, outf);
  c.out.push_back(out_dt == DType::F32 || c.i("f32_out", 0) ? out : cast(out, out_dt));
}

}  // namespace ad
