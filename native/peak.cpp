// peak.cpp — the machine's f32 FMA peak, measured with a register-only loop (no memory traffic): 12
// independent accumulators hide the FMA latency. Benches report GEMM GFLOP/s as a fraction of this.
// GCC 12 reports a false "used uninitialized" inside its own _mm512_reduce_add_ps (the _mm512_undefined_pd operand
// of an extract) under node-gyp's warning flags; the pragma has to precede the headers to cover that location.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "peak.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "cpu_features.h"
#include "threadpool.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ad {
namespace {

#if defined(__x86_64__)
// 16 independent accumulators: enough to cover FMA latency (4 cycles) on two FMA ports.
__attribute__((target("avx512f,fma"))) double fma_loop_avx512(int64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps(0.001f * i);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t k = 0; k < iters; k++) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, a[i]);
  return (double)_mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iters) {
  __m256 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(0.001f * i);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t k = 0; k < iters; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0];
}
// The AVX512-BF16 dot-product peak (bf16 GEMMs without AMX): 16 accumulators of vdpbf16ps (32 multiply-adds each).
__attribute__((target("avx512f,avx512bf16"))) double dpbf16_loop(int64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps(0.001f * i);
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3000);  // 1, 2^-31
  for (int64_t k = 0; k < iters; k++) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  }
  __m512 s = a[0];
  for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, a[i]);
  return (double)_mm512_reduce_add_ps(s);
}
#endif

// GFLOP/s of `loop` (iters iterations of `flops_per_iter` each) run on `threads` pool threads at once, best of 3.
template <class Loop>
double best_rate(int threads, int64_t iters, double flops_per_iter, Loop loop) {
  std::vector<double> sink(threads);  // the loops' results, so that they are not optimised away
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_run(threads, [&](int tid, int) { sink[tid] = loop(iters); });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops_per_iter * (double)iters * threads / s / 1e9);
  }
  return best;
}

}  // namespace

double bf16_dot_peak(int threads, int64_t iters) {
#if defined(__x86_64__)
  if (cpu_features().avx512bf16) return best_rate(threads, iters, 2.0 * 16 * 32, dpbf16_loop);
#endif
  return 0;
}

PeakResult fma_peak(int threads, int64_t iters) {
  PeakResult r{0, "scalar"};
#if defined(__x86_64__)
  const auto& f = cpu_features();
  if (f.avx512f) r = {best_rate(threads, iters, 2.0 * 16 * 16, fma_loop_avx512), "avx512"};
  else if (f.avx2 && f.fma) r = {best_rate(threads, iters, 2.0 * 12 * 8, fma_loop_avx2), "avx2"};
#endif
  return r;
}

}  // namespace ad
