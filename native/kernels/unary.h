// unary.h — scalar forms of the unary maths and activations and their derivatives, shared by the elementwise
// ops (elementwise.cpp) and the fused adapter kernels (adapters.cpp, multi_bottleneck.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

namespace ad {

enum UnOp { U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_ABS, U_SIGN, U_SIN, U_COS, U_RELU, U_GELU, U_GELU_TANH,
            U_QUICK_GELU, U_SILU, U_TANH, U_SIGMOID, U_ATAN, U_IDENTITY };

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

// exp and erf in plain branch-free arithmetic, so that the activation loops vectorise (std::exp / std::erf are
// scalar libm calls, which dominated GELU in a BERT training step). vexp: Cephes' expf polynomial after
// n·ln2 range reduction, ~1 ulp; the input is clamped to [-87.3, 88.3] (activations only need it there).
__attribute__((always_inline)) inline float vexp(float x) {
  x = x < -87.3f ? -87.3f : x > 88.3f ? 88.3f : x;  // (NaN stays NaN: both compares are false)
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (|n| < 2^22)
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// tanh from vexp for the tanh-GELU: sign(x) (1 - 2 / (e^{2|x|} + 1)), absolute error ~1e-7 (the standalone
// tanh op keeps std::tanh, whose relative accuracy near 0 this form lacks).
__attribute__((always_inline)) inline float vtanh_abs_err(float x) {
  const float e = vexp(2.f * std::fabs(x));
  return std::copysign(1.f - 2.f / (e + 1.f), x);
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), the form PyTorch's own vectorised CPU GELU
// uses, so GELU here agrees with torch's CPU kernels at the same level.
__attribute__((always_inline)) inline float verf(float x) {
  const float ax = std::fabs(x);
  const float t = 1.f / (0.3275911f * ax + 1.f);
  const float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  return std::copysign(1.f - r * vexp(-ax * ax), x);
}

inline float un_apply(UnOp op, float x) {
  switch (op) {
    case U_NEG: return -x;
    case U_EXP: return std::exp(x);
    case U_LOG: return std::log(x);
    case U_SQRT: return std::sqrt(x);
    case U_RSQRT: return 1.f / std::sqrt(x);
    case U_ABS: return std::fabs(x);
    case U_SIGN: return (float)((x > 0) - (x < 0));
    case U_SIN: return std::sin(x);
    case U_COS: return std::cos(x);
    case U_RELU: return x > 0 ? x : 0.f;
    case U_GELU: return 0.5f * x * (1.f + verf(x * kInvSqrt2));
    case U_GELU_TANH: return 0.5f * x * (1.f + vtanh_abs_err(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    case U_QUICK_GELU: return x / (1.f + vexp(-1.702f * x));
    case U_SILU: return x / (1.f + vexp(-x));
    case U_TANH: return std::tanh(x);
    case U_SIGMOID: return 1.f / (1.f + vexp(-x));
    case U_ATAN: return std::atan(x);
    case U_IDENTITY: return x;
  }
  return x;
}

// d/dx of the activation given x (all activations here are computed from the saved input).
inline float un_grad(UnOp op, float x) {
  switch (op) {
    case U_RELU: return x > 0 ? 1.f : 0.f;
    case U_GELU: {
      float cdf = 0.5f * (1.f + verf(x * kInvSqrt2));
      float pdf = vexp(-0.5f * x * x) * 0.3989422804014327f;
      return cdf + x * pdf;
    }
    case U_GELU_TANH: {
      float x3 = x * x * x;
      float inner = kSqrt2OverPi * (x + 0.044715f * x3);
      float t = vtanh_abs_err(inner);
      float dinner = kSqrt2OverPi * (1.f + 3.f * 0.044715f * x * x);
      return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * dinner;
    }
    case U_QUICK_GELU: {
      float s = 1.f / (1.f + vexp(-1.702f * x));
      return s + 1.702f * x * s * (1.f - s);
    }
    case U_SILU: {
      float s = 1.f / (1.f + vexp(-x));
      return s * (1.f + x * (1.f - s));
    }
    case U_TANH: { float t = std::tanh(x); return 1.f - t * t; }
    case U_SIGMOID: { float s = 1.f / (1.f + vexp(-x)); return s * (1.f - s); }
    case U_ATAN: return 1.f / (1.f + x * x);
    case U_IDENTITY: return 1.f;
    default: return 0.f;
  }
}


// The adapter configs' non_linearity names (transformers' ACT2FN spelling) → UnOp; false when unknown.
inline bool adapter_act_kind(const std::string& a, UnOp* out) {
  if (a == "relu") *out = U_RELU;
  else if (a == "swish" || a == "silu") *out = U_SILU;
  else if (a == "gelu") *out = U_GELU;
  else if (a == "tanh") *out = U_TANH;
  else if (a == "gelu_new" || a == "gelu_tanh") *out = U_GELU_TANH;
  else if (a == "linear" || a == "identity") *out = U_IDENTITY;
  else return false;
  return true;
}

}  // namespace ad
