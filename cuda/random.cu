// random.cu — dropout with the CPU's counter-based Philox stream (random_math.h): the same (seed, offset) drops
// the same elements as native/kernels/random.cpp, so a run is reproducible across devices and the backward
// regenerates the mask. One thread per block of 4 elements.
#include "adapters_cuda.h"
#include "common.cuh"
#include "random_math.h"

namespace {
constexpr int kThreads = 256;
__global__ void dropout_kernel(int64_t n, const float* x, float* y, float p, float scale, uint64_t seed, uint64_t off) {
  const int64_t blocks = (n + 3) / 4;
  AD_GRID_FOR(b, blocks)
    ad_rand::dropout_block((uint64_t)b, n, x, y, p, scale, seed, off);
}
}  // namespace

extern "C" int adapters_cuda_dropout_f32(int64_t n, const float* x, float* y, float p, uint64_t seed, uint64_t offset, void* stream) {
  if (n < 0 || !(p >= 0.f && p <= 1.f)) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  const float scale = p >= 1.f ? 0.f : 1.f / (1.f - p);
  dropout_kernel<<<ad_cuda::grid_for(ad_cuda::ceil_div(n, 4), kThreads), kThreads, 0, ad_cuda::as_stream(stream)>>>(n, x, y, p, scale, seed, offset);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}
