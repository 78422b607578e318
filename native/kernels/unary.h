// unary.h — scalar forms of the unary maths and activations and their derivatives, shared by the elementwise
// ops (elementwise.cpp) and the fused adapter kernels (adapters.cpp, multi_bottleneck.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "../../cuda/elementwise_math.h"

namespace ad {

enum UnOp { U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_ABS, U_SIGN, U_SIN, U_COS, U_RELU, U_GELU, U_GELU_TANH,
            U_QUICK_GELU, U_SILU, U_TANH, U_SIGMOID, U_ATAN, U_IDENTITY };

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

// exp, erf and the tanh-GELU's tanh in plain branch-free arithmetic, so that the activation loops vectorise
// (std::exp / std::erf are scalar libm calls, which dominated GELU in a BERT training step); shared with the CUDA
// kernels (cuda/elementwise_math.h), so both backends compute the same formulas.
using ad_ew::verf;
using ad_ew::vexp;
using ad_ew::vtanh_abs_err;

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
    case U_RELU: return x > 0 || x != x ? x : 0.f;  // (NaN stays NaN, as torch)
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
