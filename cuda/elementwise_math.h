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
enum DType : int { F32 = 0, BF16 = 1, I64 = 2, I32 = 3, BOOL = 4, DTYPE_COUNT };
// comparison / logical op codes (adapters_cuda_compare)
enum Compare : int { EQ = 0, NE, LT, LE, GT, GE, AND, OR, COMPARE_COUNT };

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
template <int K>
struct LayoutN {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t stride[K][kMaxDims];
};
using Layout = LayoutN<2>;
// Idx: int64_t, or uint32_t when the element count fits (a GPU divides 32-bit integers several times faster).
template <typename Idx, int K>
AD_HD void offsets_n(const LayoutN<K>& l, Idx i, int64_t* o) {
  for (int k = 0; k < K; k++) o[k] = 0;
  for (int d = l.ndim - 1; d >= 0; d--) {
    const Idx n = (Idx)l.shape[d];
    const Idx q = i % n;
    i /= n;
    for (int k = 0; k < K; k++) o[k] += (int64_t)q * l.stride[k][d];
  }
}
template <typename Idx = int64_t>
AD_HD void offsets(const Layout& l, Idx i, int64_t* o0, int64_t* o1) {
  int64_t o[2];
  offsets_n<Idx, 2>(l, i, o);
  *o0 = o[0];
  *o1 = o[1];
}
// Every operand walks this index space with unit stride (one flat dimension after collapse_layout).
template <int K>
AD_HD bool layout_flat(const LayoutN<K>& l) {
  if (l.ndim == 0) return true;
  if (l.ndim != 1) return false;
  for (int k = 0; k < K; k++)
    if (l.stride[k][0] != 1) return false;
  return true;
}

// The same index space with fewer dimensions: size-1 dims dropped, and a dim merged into the one before it where
// both operands step over it contiguously (stride[d-1] == stride[d]·shape[d]); a (B, T, C) + (C) bias add becomes
// (B·T, C), a contiguous add one flat dimension. The elements and their offsets do not change.
template <int K>
inline void collapse_layout(LayoutN<K>* l) {
  LayoutN<K> o;
  o.ndim = 0;
  for (int d = 0; d < l->ndim; d++) {
    if (l->shape[d] == 1) continue;
    if (o.ndim > 0) {
      const int p = o.ndim - 1;
      bool merge = true;
      for (int k = 0; k < K; k++) merge = merge && o.stride[k][p] == l->stride[k][d] * l->shape[d];
      if (merge) {
        o.shape[p] *= l->shape[d];
        for (int k = 0; k < K; k++) o.stride[k][p] = l->stride[k][d];
        continue;
      }
    }
    o.shape[o.ndim] = l->shape[d];
    for (int k = 0; k < K; k++) o.stride[k][o.ndim] = l->stride[k][d];
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
// K operands' strides (a null one = contiguous over shape).
template <int K>
inline bool make_layout_n(int ndim, const int64_t* shape, const int64_t* const* strides, LayoutN<K>* l, int64_t* n) {
  if (ndim < 0 || ndim > kMaxDims) return false;
  l->ndim = ndim;
  *n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return false;
    l->shape[d] = shape[d];
    *n *= shape[d];
  }
  for (int k = 0; k < K; k++) {
    if (strides[k])
      for (int d = 0; d < ndim; d++) l->stride[k][d] = strides[k][d];
    else
      contiguous_strides(ndim, shape, l->stride[k]);
  }
  if (*n > 0) collapse_layout(l);
  return true;
}
inline bool make_layout(int ndim, const int64_t* shape, const int64_t* s0, const int64_t* s1, Layout* l, int64_t* n) {
  const int64_t* st[2] = {s0, s1};
  return make_layout_n<2>(ndim, shape, st, l, n);
}

AD_HD bool is_float(int dtype) { return dtype == F32 || dtype == BF16; }
AD_HD int dtype_size(int dtype) { return dtype == I64 ? 8 : dtype == F32 || dtype == I32 ? 4 : dtype == BF16 ? 2 : 1; }
// element off of any dtype as float / as int64, with native/tensor.cpp's conversions (float -> int truncates
// toward zero, NaN -> 0, saturating; bool -> 0/1)
AD_HD float load(const void* p, int dtype, int64_t off) {
  switch (dtype) {
    case BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[off]);
    case I64: return (float)static_cast<const int64_t*>(p)[off];
    case I32: return (float)static_cast<const int32_t*>(p)[off];
    case BOOL: return static_cast<const uint8_t*>(p)[off] ? 1.f : 0.f;
    default: return static_cast<const float*>(p)[off];
  }
}
AD_HD int64_t load_i(const void* p, int dtype, int64_t off) {
  switch (dtype) {
    case I64: return static_cast<const int64_t*>(p)[off];
    case I32: return static_cast<const int32_t*>(p)[off];
    case BOOL: return static_cast<const uint8_t*>(p)[off] ? 1 : 0;
    default: {
      const float f = load(p, dtype, off);
      if (!(f == f)) return 0;
      if (f >= 9.2e18f) return INT64_MAX;
      if (f <= -9.2e18f) return INT64_MIN;
      return (int64_t)f;
    }
  }
}
AD_HD bool load_b(const void* p, int dtype, int64_t off) { return is_float(dtype) ? load(p, dtype, off) != 0.f : load_i(p, dtype, off) != 0; }
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
  if (src_dtype == dst_dtype && src_dtype != F32) {  // bit copies (bf16 keeps NaN payloads)
    switch (dst_dtype) {
      case BF16: static_cast<uint16_t*>(dst)[od] = static_cast<const uint16_t*>(src)[os]; return;
      case I64: static_cast<int64_t*>(dst)[od] = static_cast<const int64_t*>(src)[os]; return;
      case I32: static_cast<int32_t*>(dst)[od] = static_cast<const int32_t*>(src)[os]; return;
      default: static_cast<uint8_t*>(dst)[od] = static_cast<const uint8_t*>(src)[os]; return;
    }
  }
  switch (dst_dtype) {
    case I64: static_cast<int64_t*>(dst)[od] = load_i(src, src_dtype, os); return;
    case I32: static_cast<int32_t*>(dst)[od] = (int32_t)load_i(src, src_dtype, os); return;
    case BOOL: static_cast<uint8_t*>(dst)[od] = load_b(src, src_dtype, os) ? 1 : 0; return;
    default: store(dst, dst_dtype, od, load(src, src_dtype, os));
  }
}

// comparisons and logical and/or of two elements, in f32 when either operand is floating, else in int64
// (native/kernels/elementwise.cpp's compute type); the result is a bool byte
template <typename T>
AD_HD uint8_t compare_values(int op, T x, T y) {
  switch (op) {
    case EQ: return x == y;
    case NE: return x != y;
    case LT: return x < y;
    case LE: return x <= y;
    case GT: return x > y;
    default: return x >= y;
  }
}
AD_HD uint8_t compare(int op, const void* a, int adt, int64_t oa, const void* b, int bdt, int64_t ob) {
  if (op == AND) return load_b(a, adt, oa) && load_b(b, bdt, ob);
  if (op == OR) return load_b(a, adt, oa) || load_b(b, bdt, ob);
  if (is_float(adt) || is_float(bdt)) return compare_values(op, load(a, adt, oa), load(b, bdt, ob));
  return compare_values(op, load_i(a, adt, oa), load_i(b, bdt, ob));
}
template <typename Idx = int64_t>
AD_HD void compare_at(Idx i, int op, const Layout& l, const void* a, int adt, const void* b, int bdt, uint8_t* out) {
  int64_t o[2];
  offsets_n<Idx, 2>(l, i, o);
  out[i] = compare(op, a, adt, o[0], b, bdt, o[1]);
}
// where(cond, a, b) into a contiguous out of dtype dt (F32 or I64; a and b already in dt): operands cond, a, b
template <typename Idx = int64_t>
AD_HD void where_at(Idx i, const LayoutN<3>& l, const uint8_t* cond, const void* a, const void* b, int dt, void* out) {
  int64_t o[3];
  offsets_n<Idx, 3>(l, i, o);
  if (dt == I64) static_cast<int64_t*>(out)[i] = cond[o[0]] ? static_cast<const int64_t*>(a)[o[1]] : static_cast<const int64_t*>(b)[o[2]];
  else static_cast<float*>(out)[i] = cond[o[0]] ? static_cast<const float*>(a)[o[1]] : static_cast<const float*>(b)[o[2]];
}
// masked_fill: out (contiguous, dt F32 or I64) = mask ? value : x; operands x, mask
template <typename Idx = int64_t>
AD_HD void masked_fill_at(Idx i, const Layout& l, const void* x, const uint8_t* mask, int dt, double value, void* out) {
  int64_t o[2];
  offsets_n<Idx, 2>(l, i, o);
  if (dt == I64) static_cast<int64_t*>(out)[i] = mask[o[1]] ? (int64_t)value : static_cast<const int64_t*>(x)[o[0]];
  else static_cast<float*>(out)[i] = mask[o[1]] ? (float)value : static_cast<const float*>(x)[o[0]];
}
// dst (strided per l.stride[1], dst_dtype) = src (strided per l.stride[0], src_dtype)
template <typename Idx = int64_t>
AD_HD void copy_at(Idx i, const Layout& l, const void* src, int src_dtype, void* dst, int dst_dtype) {
  int64_t os, od;
  offsets<Idx>(l, i, &os, &od);
  copy_elem(src, src_dtype, os, dst, dst_dtype, od);
}

}  // namespace ad_ew
