// elementwise_math.h — per-element arithmetic of the CUDA elementwise kernels (elementwise.cu), written so that
// it compiles as host C++ too: test/cuda/mock/mock_cuda.cpp runs exactly these functions on the CPU, so their
// formulas and broadcast indexing are checked against the CPU ops on machines without a GPU. The formulas are
// the CPU's too: native/kernels/unary.h takes vexp / verf / vtanh_abs_err from here (Cephes expf,
// Abramowitz–Stegun erf as PyTorch's CPU GELU, tanh-GELU from exp).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define AD_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define AD_HD inline __attribute__((always_inline))  // the CPU's vectorised loops need these inlined
#else
#define AD_HD inline
#endif

namespace ad_ew {

constexpr int kMaxDims = 8;

// Unary op codes: native/kernels/unary.h's UnOp order, then the two with parameters.
enum Unary : int {
  NEG = 0, EXP, LOG, SQRT, RSQRT, ABS, SIGN, SIN, COS, RELU, GELU, GELU_TANH, QUICK_GELU, SILU, TANH, SIGMOID, ATAN,
  IDENTITY, AFFINE /* p0·x + p1 */, POW /* x^p0 */, UNARY_COUNT
};
enum Binary : int { ADD = 0, SUB, MUL, DIV, MAX, MIN, BINARY_COUNT };
enum DType : int { F32 = 0, BF16 = 1 };

AD_HD float bits_to_float(int32_t b) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(b);
#else
  float f;
  memcpy(&f, &b, 4);
  return f;
#endif
}
AD_HD int32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int32_t b;
  memcpy(&b, &f, 4);
  return b;
#endif
}

AD_HD float bf16_to_f32(uint16_t h) { return bits_to_float((int32_t)((uint32_t)h << 16)); }
// round to nearest even, quiet NaN (tensor.h's f32_to_bf16)
AD_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = (uint32_t)float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

AD_HD float vexp(float x) {
  x = x < -87.3f ? -87.3f : x > 88.3f ? 88.3f : x;
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  return p * bits_to_float(((int32_t)n + 127) << 23);
}
AD_HD float vtanh_abs_err(float x) {
  const float e = vexp(2.f * fabsf(x));
  return copysignf(1.f - 2.f / (e + 1.f), x);
}
AD_HD float verf(float x) {
  const float ax = fabsf(x);
  const float t = 1.f / (0.3275911f * ax + 1.f);
  const float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  return copysignf(1.f - r * vexp(-ax * ax), x);
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

AD_HD float unary(int op, float x, float p0, float p1) {
  switch (op) {
    case NEG: return -x;
    case EXP: return expf(x);
    case LOG: return logf(x);
    case SQRT: return sqrtf(x);
    case RSQRT: return 1.f / sqrtf(x);
    case ABS: return fabsf(x);
    case SIGN: return (float)((x > 0) - (x < 0));
    case SIN: return sinf(x);
    case COS: return cosf(x);
    case RELU: return x > 0 ? x : 0.f;
    case GELU: return 0.5f * x * (1.f + verf(x * kInvSqrt2));
    case GELU_TANH: return 0.5f * x * (1.f + vtanh_abs_err(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    case QUICK_GELU: return x / (1.f + vexp(-1.702f * x));
    case SILU: return x / (1.f + vexp(-x));
    case TANH: return tanhf(x);
    case SIGMOID: return 1.f / (1.f + vexp(-x));
    case ATAN: return atanf(x);
    case AFFINE: return p0 * x + p1;
    case POW: return powf(x, p0);
    default: return x;
  }
}

// d/dx of the activation at x (the activation_bwd kinds).
AD_HD float unary_grad(int op, float x) {
  switch (op) {
    case RELU: return x > 0 ? 1.f : 0.f;
    case GELU: {
      const float cdf = 0.5f * (1.f + verf(x * kInvSqrt2));
      const float pdf = vexp(-0.5f * x * x) * 0.3989422804014327f;
      return cdf + x * pdf;
    }
    case GELU_TANH: {
      const float inner = kSqrt2OverPi * (x + 0.044715f * x * x * x);
      const float t = vtanh_abs_err(inner);
      const float dinner = kSqrt2OverPi * (1.f + 3.f * 0.044715f * x * x);
      return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * dinner;
    }
    case QUICK_GELU: {
      const float s = 1.f / (1.f + vexp(-1.702f * x));
      return s + 1.702f * x * s * (1.f - s);
    }
    case SILU: {
      const float s = 1.f / (1.f + vexp(-x));
      return s * (1.f + x * (1.f - s));
    }
    case TANH: {
      const float t = tanhf(x);
      return 1.f - t * t;
    }
    case SIGMOID: {
      const float s = 1.f / (1.f + vexp(-x));
      return s * (1.f - s);
    }
    case ATAN: return 1.f / (1.f + x * x);
    case IDENTITY: return 1.f;
    default: return 0.f;
  }
}

// g · act'(x); relu passes g through where x > 0 (0 elsewhere, also for an infinite g), as torch's threshold_backward
AD_HD float unary_backward(int op, float x, float g) {
  if (op == RELU) return x > 0 ? g : 0.f;
  return g * unary_grad(op, x);
}

AD_HD float binary(int op, float a, float b) {
  switch (op) {
    case ADD: return a + b;
    case SUB: return a - b;
    case MUL: return a * b;
    case DIV: return a / b;
    // torch.maximum / minimum propagate NaN
    case MAX: return (a != a || b != b) ? a + b : (a > b ? a : b);
    case MIN: return (a != a || b != b) ? a + b : (a < b ? a : b);
    default: return 0.f;
  }
}

// A broadcast / strided index space: element i (row-major over shape) sits at offset Σ idx_d · stride[k][d] in
// operand k (strides in elements; 0 on broadcast dims).
struct Layout {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t stride[2][kMaxDims];
};
// Idx: int64_t, or uint32_t when the element count fits (a GPU divides 32-bit integers several times faster).
template <typename Idx = int64_t>
AD_HD void offsets(const Layout& l, Idx i, int64_t* o0, int64_t* o1) {
  int64_t a = 0, b = 0;
  for (int d = l.ndim - 1; d >= 0; d--) {
    const Idx n = (Idx)l.shape[d];
    const Idx k = i % n;
    i /= n;
    a += (int64_t)k * l.stride[0][d];
    b += (int64_t)k * l.stride[1][d];
  }
  *o0 = a;
  *o1 = b;
}
// Both operands walk this index space with unit stride (one flat dimension after collapse_layout).
AD_HD bool layout_flat(const Layout& l) { return l.ndim == 0 || (l.ndim == 1 && l.stride[0][0] == 1 && l.stride[1][0] == 1); }

// The same index space with fewer dimensions: size-1 dims dropped, and a dim merged into the one before it where
// both operands step over it contiguously (stride[d-1] == stride[d]·shape[d]); a (B, T, C) + (C) bias add becomes
// (B·T, C), a contiguous add one flat dimension. The elements and their offsets do not change.
inline void collapse_layout(Layout* l) {
  Layout o;
  o.ndim = 0;
  for (int d = 0; d < l->ndim; d++) {
    if (l->shape[d] == 1) continue;
    if (o.ndim > 0) {
      const int p = o.ndim - 1;
      if (o.stride[0][p] == l->stride[0][d] * l->shape[d] && o.stride[1][p] == l->stride[1][d] * l->shape[d]) {
        o.shape[p] *= l->shape[d];
        o.stride[0][p] = l->stride[0][d];
        o.stride[1][p] = l->stride[1][d];
        continue;
      }
    }
    o.shape[o.ndim] = l->shape[d];
    o.stride[0][o.ndim] = l->stride[0][d];
    o.stride[1][o.ndim] = l->stride[1][d];
    o.ndim++;
  }
  *l = o;
}

// row-major strides of a shape (the layout of a contiguous operand)
AD_HD void contiguous_strides(int ndim, const int64_t* shape, int64_t* out) {
  int64_t acc = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    out[d] = acc;
    acc *= shape[d] > 1 ? shape[d] : 1;
  }
}
// Fills l from a C-ABI description (s1 null = a contiguous second operand) and the element count; false on bad
// arguments. Shared by the kernels' launchers and the mock.
inline bool make_layout(int ndim, const int64_t* shape, const int64_t* s0, const int64_t* s1, Layout* l, int64_t* n) {
  if (ndim < 0 || ndim > kMaxDims) return false;
  l->ndim = ndim;
  *n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return false;
    l->shape[d] = shape[d];
    l->stride[0][d] = s0[d];
    *n *= shape[d];
  }
  if (s1)
    for (int d = 0; d < ndim; d++) l->stride[1][d] = s1[d];
  else
    contiguous_strides(ndim, shape, l->stride[1]);
  if (*n > 0) collapse_layout(l);
  return true;
}

AD_HD float load(const void* p, int dtype, int64_t off) {
  return dtype == BF16 ? bf16_to_f32(static_cast<const uint16_t*>(p)[off]) : static_cast<const float*>(p)[off];
}
AD_HD void store(void* p, int dtype, int64_t off, float v) {
  if (dtype == BF16) static_cast<uint16_t*>(p)[off] = f32_to_bf16(v);
  else static_cast<float*>(p)[off] = v;
}

// The element bodies of the kernels (index i of n).
template <typename Idx = int64_t>
AD_HD void binary_at(Idx i, int op, const Layout& l, const float* a, const float* b, float* out) {
  int64_t oa, ob;
  offsets<Idx>(l, i, &oa, &ob);
  out[i] = binary(op, a[oa], b[ob]);
}
// one element, converted
AD_HD void copy_elem(const void* src, int src_dtype, int64_t os, void* dst, int dst_dtype, int64_t od) {
  if (src_dtype == dst_dtype && src_dtype == BF16)
    static_cast<uint16_t*>(dst)[od] = static_cast<const uint16_t*>(src)[os];  // bit copy (keeps NaN payloads)
  else
    store(dst, dst_dtype, od, load(src, src_dtype, os));
}
// dst (strided per l.stride[1], dst_dtype) = src (strided per l.stride[0], src_dtype)
template <typename Idx = int64_t>
AD_HD void copy_at(Idx i, const Layout& l, const void* src, int src_dtype, void* dst, int dst_dtype) {
  int64_t os, od;
  offsets<Idx>(l, i, &os, &od);
  copy_elem(src, src_dtype, os, dst, dst_dtype, od);
}

}  // namespace ad_ew
