// peak.cpp — the machine's f32 FMA peak, measured with a register-only loop (no memory traffic): 12
// independent accumulators hide the FMA latency. Benches report GEMM GFLOP/s as a fraction of this.
#include "peak.h"

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
__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iters) {
  __m512 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(0.5f + i * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t k = 0; k < iters; k++) {
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
    // keep the compiler from reordering across iterations while staying in registers
    __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]), "+v"(a[5]));
    __asm__ volatile("" : "+v"(a[6]), "+v"(a[7]), "+v"(a[8]), "+v"(a[9]), "+v"(a[10]), "+v"(a[11]));
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  return (double)_mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iters) {
  __m256 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(0.5f + i * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t k = 0; k < iters; k++) {
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
    __asm__ volatile("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), "+x"(a[4]), "+x"(a[5]));
    __asm__ volatile("" : "+x"(a[6]), "+x"(a[7]), "+x"(a[8]), "+x"(a[9]), "+x"(a[10]), "+x"(a[11]));
  }
  float out[8];
  __m256 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
  _mm256_storeu_ps(out, s);
  return out[0];
}
#endif

}  // namespace

PeakResult fma_peak(int threads, int64_t iters) {
  PeakResult r{0, "scalar"};
#if defined(__x86_64__)
  const auto& f = cpu_features();
  int lanes = f.avx512f ? 16 : (f.avx2 && f.fma ? 8 : 0);
  if (!lanes) return r;
  r.isa = lanes == 16 ? "avx512" : "avx2";
  std::vector<double> sink(threads);
  auto t0 = std::chrono::steady_clock::now();
  parallel_run(threads, [&](int tid, int) { sink[tid] = lanes == 16 ? fma_loop_avx512(iters) : fma_loop_avx2(iters); });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double flops = 2.0 * 12 * lanes * (double)iters * threads;
  r.gflops = flops / s / 1e9;
#endif
  return r;
}

}  // namespace ad
