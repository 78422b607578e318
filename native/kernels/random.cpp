// random.cpp — counter-based random numbers (Philox-4x32-10): element k of a draw with (seed, offset)
// depends only on (seed, offset, k), so the same seed gives the same values on any thread count and
// dropout's backward regenerates its mask instead of storing it.
// Ops: rand (uniform [0,1)), randn (Box–Muller normal), dropout (scale kept values by 1/(1-p)).
// Reference: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11).
#include <cmath>

#include "../op.h"
#include "../threadpool.h"
#include "../../cuda/random_math.h"

namespace ad {
namespace {

using ad_rand::block4;  // Philox and the dropout rule: cuda/random_math.h (shared with the CUDA kernel)
using ad_rand::u01;

uint64_t seed_of(const OpCtx& c) {
  double s = c.f("seed");
  if (s < 0 || s != std::floor(s)) c.fail("ValueError", "seed must be a non-negative integer");
  return (uint64_t)s;
}

void fill_uniform(float* o, int64_t n, uint64_t seed, uint64_t offset) {
  parallel_for((n + 3) / 4, 4096, [&](int64_t b, int64_t e) {
    uint32_t r[4];
    for (int64_t blk = b; blk < e; blk++) {
      block4(seed, offset, (uint64_t)blk, r);
      for (int j = 0; j < 4 && blk * 4 + j < n; j++) o[blk * 4 + j] = u01(r[j]);
    }
  });
}

}  // namespace

// rand() {shape, seed, offset} -> f32 uniform [0, 1)
void op_rand(OpCtx& c) {
  Tensor o = Tensor::empty(c.ints("shape"), DType::F32);
  fill_uniform(o.data<float>(), o.numel(), seed_of(c), (uint64_t)c.i("offset", 0));
  c.out.push_back(o);
}

// randn() {shape, seed, offset, mean, std} -> f32 normal (Box–Muller on pairs)
void op_randn(OpCtx& c) {
  Tensor o = Tensor::empty(c.ints("shape"), DType::F32);
  float mean = (float)c.f("mean", 0), sd = (float)c.f("std", 1);
  uint64_t seed = seed_of(c), off = (uint64_t)c.i("offset", 0);
  float* O = o.data<float>();
  int64_t n = o.numel();
  parallel_for((n + 3) / 4, 2048, [&](int64_t b, int64_t e) {
    uint32_t r[4];
    for (int64_t blk = b; blk < e; blk++) {
      block4(seed, off, (uint64_t)blk, r);
      for (int j = 0; j < 4; j += 2) {
        float u1 = ((float)(r[j] >> 8) + 1.f) * (1.0f / 16777216.0f);  // (0, 1]
        float u2 = u01(r[j + 1]);
        float rad = std::sqrt(-2.f * std::log(u1));
        float th = 6.283185307179586f * u2;
        int64_t i0 = blk * 4 + j;
        if (i0 < n) O[i0] = mean + sd * rad * std::cos(th);
        if (i0 + 1 < n) O[i0 + 1] = mean + sd * rad * std::sin(th);
      }
    }
  });
  c.out.push_back(o);
}

// dropout(x) {p, seed, offset} -> x * keep / (1 - p), keep_k = u_k >= p. The backward is the same op
// applied to the gradient with the same (p, seed, offset).
void op_dropout(OpCtx& c) {
  c.expect_inputs(1);
  Tensor x = c.f32(0);
  float p = (float)c.f("p");
  if (!(p >= 0 && p <= 1)) c.fail("ValueError", "p must be in [0, 1], got " + std::to_string(p));
  uint64_t seed = seed_of(c), off = (uint64_t)c.i("offset", 0);
  Tensor o = Tensor::empty(x.shape, DType::F32);
  const float* X = x.data<float>();
  float* O = o.data<float>();
  int64_t n = x.numel();
  float scale = p >= 1 ? 0.f : 1.f / (1.f - p);
  parallel_for((n + 3) / 4, 4096, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) ad_rand::dropout_block((uint64_t)blk, n, X, O, p, scale, seed, off);
  });
  c.out.push_back(o);
}

}  // namespace ad
