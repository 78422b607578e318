// unary.h — scalar forms of the unary maths and activations and their derivatives, shared by the elementwise
// ops (elementwise.cpp) and the fused adapter kernels (adapters.cpp, multi_bottleneck.cpp).
#pragma once
#include <cmath>
#include <string>

namespace ad {

enum UnOp { U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_ABS, U_SIGN, U_SIN, U_COS, U_RELU, U_GELU, U_GELU_TANH,
            U_QUICK_GELU, U_SILU, U_TANH, U_SIGMOID, U_ATAN, U_IDENTITY };

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

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
    case U_GELU: return 0.5f * x * (1.f + std::erf(x * kInvSqrt2));
    case U_GELU_TANH: return 0.5f * x * (1.f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    case U_QUICK_GELU: return x / (1.f + std::exp(-1.702f * x));
    case U_SILU: return x / (1.f + std::exp(-x));
    case U_TANH: return std::tanh(x);
    case U_SIGMOID: return 1.f / (1.f + std::exp(-x));
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
      float cdf = 0.5f * (1.f + std::erf(x * kInvSqrt2));
      float pdf = std::exp(-0.5f * x * x) * 0.3989422804014327f;
      return cdf + x * pdf;
    }
    case U_GELU_TANH: {
      float x3 = x * x * x;
      float inner = kSqrt2OverPi * (x + 0.044715f * x3);
      float t = std::tanh(inner);
      float dinner = kSqrt2OverPi * (1.f + 3.f * 0.044715f * x * x);
      return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * dinner;
    }
    case U_QUICK_GELU: {
      float s = 1.f / (1.f + std::exp(-1.702f * x));
      return s + 1.702f * x * s * (1.f - s);
    }
    case U_SILU: {
      float s = 1.f / (1.f + std::exp(-x));
      return s * (1.f + x * (1.f - s));
    }
    case U_TANH: { float t = std::tanh(x); return 1.f - t * t; }
    case U_SIGMOID: { float s = 1.f / (1.f + std::exp(-x)); return s * (1.f - s); }
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
