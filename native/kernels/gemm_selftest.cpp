// standalone: g++ -O3 -std=c++17 -pthread -Inative native/kernels/gemm_selftest.cpp native/kernels/gemm.cpp native/kernels/gemm_ref.cpp native/threadpool.cpp native/tensor.cpp native/cpu_features.cpp native/cuda_loader.cpp -ldl
// gemm_selftest.cpp — dev harness for gemm.cpp (not part of the addon build: *_selftest.cpp is excluded).
// Usage: ./a.out [check] [bench] [quick] [only=<shape substring>] [isa=<isa>] [nopeak] [f32only|bf16only] [c16|mixed] [amxloop]
//   c16: bench bf16 GEMMs with a bf16 result (bgemm_batched_bf16_out), as bf16 tensors' matmul runs
//   mixed: bench them as autocast runs them: f32 operands rounded while packed, a bias row, an f32 result (mgemm_batched)
//   (default: check + bench; isa= restricts check to one ISA name, e.g. isa=amx)
//   check: sgemm / bgemm vs the reference loops, random shapes, every ISA this CPU has (gemm_force_isa)
//   bench: GFLOP/s of the auto-selected kernels on square and transformer shapes, plus a register-only
//          AVX-512 FMA peak loop on the same threads for comparison.
//   amxloop: one thread's AMX 2x2 tile loop (the GEMM micro-kernel's k step: 4 tile loads, 4 tile products) with its
//          operands in L1 (32 KiB) and in L2 (192 KiB, re-read), next to the register-only loop, in alternation.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>
#include <time.h>

#include "../threadpool.h"
#include "gemm.h"

using namespace ad;

namespace {

std::mt19937_64 rng(12345);
const char* g_only = nullptr;  // bench only shapes whose name contains this
const char* g_isa = nullptr;   // check only this ISA
bool g_nopeak = false, g_f32 = true, g_bf16 = true;
bool g_c16 = false;  // bench bf16 with a bf16 result (bgemm_batched_bf16_out) instead of f32
bool g_mixed = false;  // bench bf16 as autocast runs it: f32 operands rounded while packed, a bias, an f32 result (mgemm)
double g_flops_done = 0;  // flops run by bench (for flop-per-cycle measurements under perf stat)

int64_t rnd(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
float rndf() { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng); }

uint16_t f32_to_bf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

double cpu_now() {  // process CPU time (all threads): immune to preemption by other load
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
double g_cpu_best = 0;  // best GFLOP/s per busy thread-second of the last bench_shape, times num_threads()

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Exactly-sized storage for a rows x cols matrix with leading dim ld (the last row has only `cols`),
// so that AddressSanitizer catches any read past the logical matrix.
size_t mat_size(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 ? 0 : (size_t)((rows - 1) * ld + cols); }

struct Case {
  int64_t batch, M, N, K, lda, ldb, ldc, sA, sB, sC;
  bool tA, tB;
  float alpha, beta;
};

const int64_t kDims[] = {1, 2, 3, 5, 7, 8, 13, 14, 15, 16, 17, 28, 29, 31, 32, 33, 47, 63, 64, 65, 97, 101,
                         127, 128, 129, 191, 193, 255, 256, 257, 293, 300};

Case random_case(bool allow_big) {
  Case c;
  const int nd = sizeof(kDims) / sizeof(kDims[0]);
  auto pick = [&] { return rnd(0, 3) == 0 ? rnd(1, 300) : kDims[rnd(0, nd - 1)]; };
  c.M = pick();
  c.N = pick();
  c.K = pick();
  if (allow_big && rnd(0, 9) == 0) {  // crosses the MC / KC / NC block boundaries
    c.M = rnd(300, 700);
    c.N = rnd(300, 700);
    c.K = rnd(513, 1300);
  }
  c.tA = rnd(0, 1);
  c.tB = rnd(0, 1);
  const float alphas[] = {1.0f, 0.5f, -1.25f};
  const float betas[] = {0.0f, 1.0f, 0.75f};
  c.alpha = alphas[rnd(0, 2)];
  c.beta = betas[rnd(0, 2)];
  const int64_t aw = c.tA ? c.M : c.K, bw = c.tB ? c.K : c.N;
  c.lda = aw + (rnd(0, 1) ? rnd(1, 9) : 0);
  c.ldb = bw + (rnd(0, 1) ? rnd(1, 9) : 0);
  c.ldc = c.N + (rnd(0, 1) ? rnd(1, 9) : 0);
  c.batch = rnd(0, 4) == 0 ? rnd(2, 5) : 1;
  const int64_t ar = c.tA ? c.K : c.M, br = c.tB ? c.N : c.K;
  c.sA = (c.batch > 1 && rnd(0, 2) == 0) ? 0 : (int64_t)mat_size(ar, aw, c.lda) + rnd(0, 5);
  c.sB = (c.batch > 1 && rnd(0, 2) == 0) ? 0 : (int64_t)mat_size(br, bw, c.ldb) + rnd(0, 5);
  c.sC = (int64_t)mat_size(c.M, c.N, c.ldc) + rnd(0, 5);
  return c;
}

// Runs one case for f32 (bf16 == false) or bf16; returns the max error relative to the magnitude bound
// |alpha| * sum_k |a||b| + |beta c| of each element (so cancellation does not inflate it).
double run_case(const Case& c, bool bf16, bool* nan_leak) {
  const int64_t aw = c.tA ? c.M : c.K, ar = c.tA ? c.K : c.M;
  const int64_t bw = c.tB ? c.K : c.N, br = c.tB ? c.N : c.K;
  const size_t nA = (size_t)((c.batch - 1) * c.sA) + mat_size(ar, aw, c.lda);
  const size_t nB = (size_t)((c.batch - 1) * c.sB) + mat_size(br, bw, c.ldb);
  const size_t nC = (size_t)((c.batch - 1) * c.sC) + mat_size(c.M, c.N, c.ldc);
  std::vector<float> A(nA), B(nB), C0(nC), C(nC), R(nC);
  std::vector<uint16_t> Ah(nA), Bh(nB);
  for (size_t i = 0; i < nA; i++) {
    Ah[i] = f32_to_bf16(rndf());
    A[i] = bf16 ? bf16_to_f32(Ah[i]) : rndf();
  }
  for (size_t i = 0; i < nB; i++) {
    Bh[i] = f32_to_bf16(rndf());
    B[i] = bf16 ? bf16_to_f32(Bh[i]) : rndf();
  }
  for (size_t i = 0; i < nC; i++) C0[i] = c.beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : rndf();
  C = C0;
  R = C0;
  if (bf16)
    bgemm_batched(c.batch, c.tA, c.tB, c.M, c.N, c.K, c.alpha, Ah.data(), c.lda, c.sA, Bh.data(), c.ldb, c.sB,
                  c.beta, C.data(), c.ldc, c.sC);
  else
    sgemm_batched(c.batch, c.tA, c.tB, c.M, c.N, c.K, c.alpha, A.data(), c.lda, c.sA, B.data(), c.ldb, c.sB,
                  c.beta, C.data(), c.ldc, c.sC);
  double maxerr = 0;
  for (int64_t b = 0; b < c.batch; b++) {
    const float* Ab = A.data() + b * c.sA;
    const float* Bb = B.data() + b * c.sB;
    if (bf16)
      bgemm_ref(c.tA, c.tB, c.M, c.N, c.K, c.alpha, Ah.data() + b * c.sA, c.lda, Bh.data() + b * c.sB, c.ldb,
                c.beta, R.data() + b * c.sC, c.ldc);
    else
      sgemm_ref(c.tA, c.tB, c.M, c.N, c.K, c.alpha, Ab, c.lda, Bb, c.ldb, c.beta, R.data() + b * c.sC, c.ldc);
    for (int64_t i = 0; i < c.M; i++)
      for (int64_t j = 0; j < c.N; j++) {
        double bound = 0;
        for (int64_t k = 0; k < c.K; k++) {
          double a = c.tA ? Ab[k * c.lda + i] : Ab[i * c.lda + k];
          double bb = c.tB ? Bb[j * c.ldb + k] : Bb[k * c.ldb + j];
          bound += std::fabs(a * bb);
        }
        const size_t idx = (size_t)(b * c.sC + i * c.ldc + j);
        bound = bound * std::fabs(c.alpha) + (c.beta != 0.0f ? std::fabs(c.beta * C0[idx]) : 0.0) + 1e-30;
        const double got = C[idx], want = R[idx];
        if (std::isnan(got) || std::isnan(want)) {
          *nan_leak = true;
          maxerr = 1e30;
          continue;
        }
        maxerr = std::max(maxerr, std::fabs(got - want) / bound);
      }
  }
  // elements in the ldc padding of C must be untouched
  for (int64_t b = 0; b < c.batch; b++)
    for (int64_t i = 0; i + 1 < c.M; i++)
      for (int64_t j = c.N; j < c.ldc; j++) {
        const size_t idx = (size_t)(b * c.sC + i * c.ldc + j);
        if (std::memcmp(&C[idx], &C0[idx], 4) != 0) {
          *nan_leak = true;  // wrote outside the logical C
          maxerr = 1e30;
        }
      }
  return maxerr;
}

bool check(bool quick) {
  bool ok = true;
  const char* f32_isas[] = {"avx512", "avx2", "scalar"};
  const char* b16_isas[] = {"amx", "avx512bf16", "f32"};
  const int ncases = quick ? 60 : 250;
  for (int pass = 0; pass < 2; pass++) {
    const bool bf16 = pass == 1;
    std::string seen;
    for (int t = 0; t < 3; t++) {
      if (bf16)
        gemm_force_isa("auto", b16_isas[t]);
      else
        gemm_force_isa(f32_isas[t], "auto");
      const char* isa = bf16 ? bgemm_isa() : sgemm_isa();
      if (g_isa && std::strcmp(g_isa, bf16 ? b16_isas[t] : f32_isas[t]) != 0) continue;
      if (std::strcmp(isa, bf16 ? b16_isas[t] : f32_isas[t]) != 0) {
        std::printf("%s %-10s: not available on this CPU (would run %s)\n", bf16 ? "bgemm" : "sgemm",
                    bf16 ? b16_isas[t] : f32_isas[t], isa);
        continue;
      }
      rng.seed(1000 + t + 10 * pass);
      double worst = 0;
      int fails = 0;
      bool leak = false;
      double t0 = now();
      // fixed cases big enough to run multi-threaded, with skinny / wide splits, odd edges and transposes
      const int64_t fixed[][6] = {{33, 1500, 700, 0, 0, 1},  {17, 2100, 300, 0, 1, 2}, {1000, 40, 600, 1, 0, 1},
                                  {250, 1100, 333, 1, 1, 2}, {64, 4096, 96, 0, 1, 1}, {515, 517, 1030, 0, 0, 1}};
      const int nfixed = (int)(sizeof(fixed) / sizeof(fixed[0]));
      for (int n = 0; n < ncases + nfixed; n++) {
        Case c = random_case(!quick);
        if (n >= ncases) {
          const int64_t* f = fixed[n - ncases];
          c.M = f[0];
          c.N = f[1];
          c.K = f[2];
          c.tA = f[3];
          c.tB = f[4];
          c.batch = f[5];
          c.lda = (c.tA ? c.M : c.K) + (n % 2) * 3;
          c.ldb = (c.tB ? c.K : c.N) + (n % 3);
          c.ldc = c.N + (n % 2) * 5;
          c.sA = (int64_t)mat_size(c.tA ? c.K : c.M, c.tA ? c.M : c.K, c.lda) + 1;
          c.sB = n % 2 ? 0 : (int64_t)mat_size(c.tB ? c.N : c.K, c.tB ? c.K : c.N, c.ldb);
          c.sC = (int64_t)mat_size(c.M, c.N, c.ldc) + 3;
          c.alpha = n % 2 ? 1.0f : -0.5f;
          c.beta = n % 3 == 0 ? 0.0f : 0.75f;
        }
        bool nl = false;
        double e = run_case(c, bf16, &nl);
        const double tol = bf16 ? 1e-4 : 2e-5;
        if (e > tol || nl) {
          if (fails < 5)
            std::printf("  FAIL %s: batch %lld M %lld N %lld K %lld tA %d tB %d alpha %g beta %g lda %lld ldb %lld "
                        "ldc %lld sA %lld sB %lld: err %.3g%s\n",
                        isa, (long long)c.batch, (long long)c.M, (long long)c.N, (long long)c.K, c.tA, c.tB,
                        c.alpha, c.beta, (long long)c.lda, (long long)c.ldb, (long long)c.ldc, (long long)c.sA,
                        (long long)c.sB, e, nl ? " (NaN / write outside C)" : "");
          fails++;
        }
        leak |= nl;
        worst = std::max(worst, e);
      }
      std::printf("%s %-10s: %d random + fixed cases, max rel err %.3g, %d failures (%.1fs)\n", bf16 ? "bgemm" : "sgemm",
                  isa, ncases, worst, fails, now() - t0);
      ok &= fails == 0;
    }
  }
  gemm_force_isa("auto", "auto");
  return ok;
}

// ------------------------------------------------------------------------------------------------
// Benchmarks

__attribute__((target("avx512f,fma"))) double fma_peak_thread(int64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps(0.001f * i);
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
  }
  __m512 s = a[0];
  for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, a[i]);
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  double r = 0;
  for (float f : v) r += f;
  return r;
}

double fma_peak(int nth) {
  const int64_t iters = 20000000;
  double best = 0;
  for (int r = 0; r < 5; r++) {
    volatile double sink = 0;
    double t0 = now();
    parallel_run(nth, [&](int, int) {
      double v = fma_peak_thread(iters);
      sink = sink + v;
    });
    double dt = now() - t0;
    best = std::max(best, 2.0 * 16 * 16 * (double)iters * nth / dt / 1e9);
  }
  return best;
}

struct Shape {
  const char* name;
  int64_t batch, M, N, K;
  bool tA, tB;
};

double bench_shape(const Shape& s, bool bf16, int reps) {
  const int64_t M = s.M, N = s.N, K = s.K, bt = s.batch;
  std::vector<float> A((size_t)(bt * M * K)), B((size_t)(bt * K * N)), C((size_t)(bt * M * N));
  std::vector<uint16_t> Ah(A.size()), Bh(B.size()), C16(g_c16 ? C.size() : 0);
  std::vector<float> bias((size_t)N, 0.25f);
  for (size_t i = 0; i < A.size(); i++) Ah[i] = f32_to_bf16(A[i] = rndf());
  for (size_t i = 0; i < B.size(); i++) Bh[i] = f32_to_bf16(B[i] = rndf());
  const int64_t lda = s.tA ? M : K, ldb = s.tB ? K : N;
  auto run = [&] {
    if (bf16 && g_mixed)
      mgemm_batched(bt, s.tA, s.tB, M, N, K, A.data(), true, lda, M * K, B.data(), true, ldb, K * N, bias.data(), C.data(), N, M * N);
    else if (bf16 && g_c16)
      bgemm_batched_bf16_out(bt, s.tA, s.tB, M, N, K, Ah.data(), lda, M * K, Bh.data(), ldb, K * N, C16.data(), N, M * N);
    else if (bf16)
      bgemm_batched(bt, s.tA, s.tB, M, N, K, 1.0f, Ah.data(), lda, M * K, Bh.data(), ldb, K * N, 0.0f, C.data(), N,
                    M * N);
    else
      sgemm_batched(bt, s.tA, s.tB, M, N, K, 1.0f, A.data(), lda, M * K, B.data(), ldb, K * N, 0.0f, C.data(), N,
                    M * N);
  };
  const double flops = 2.0 * (double)bt * M * N * K;
  auto run_counted = [&] {
    run();
    g_flops_done += flops;
  };
  run();  // warm-up (buffers, page faults)
  g_flops_done += flops;
  // enough inner iterations for ~20 ms per sample
  double t0 = now();
  run_counted();
  double one = std::max(now() - t0, 1e-7);
  int inner = (int)std::max(1.0, std::min(1000.0, 0.02 / one));
  double best = 0;
  g_cpu_best = 0;
  for (int r = 0; r < reps; r++) {
    t0 = now();
    const double c0 = cpu_now();
    for (int i = 0; i < inner; i++) run_counted();
    double dt = (now() - t0) / inner;
    const double dc = (cpu_now() - c0) / inner / num_threads();
    best = std::max(best, flops / dt / 1e9);
    g_cpu_best = std::max(g_cpu_best, flops / dc / 1e9);
  }
  return best;
}


void bench(bool quick) {
  const int nth = num_threads();
  const int reps = quick ? 3 : 7;
  std::printf("\nthreads: %d, sgemm isa %s, bgemm isa %s\n", nth, sgemm_isa(), bgemm_isa());
  const double p1 = g_nopeak ? 135.0 : fma_peak(1), pn = g_nopeak ? 135.0 * nth : fma_peak(nth);
  std::printf("register-only AVX-512 FMA peak: %.1f GFLOP/s (1 thread), %.1f GFLOP/s (%d threads)\n", p1, pn, nth);
  const Shape shapes[] = {
      {"512^3", 1, 512, 512, 512, false, false},
      {"1024^3", 1, 1024, 1024, 1024, false, false},
      {"2048^3", 1, 2048, 2048, 2048, false, false},
      {"1024x768x768 (NT)", 1, 1024, 768, 768, false, true},
      {"1024x3072x768 (NT)", 1, 1024, 3072, 768, false, true},
      {"1024x768x3072 (NT)", 1, 1024, 768, 3072, false, true},
      {"1024x768x768 (NN)", 1, 1024, 768, 768, false, false},
      {"768x768x1024 (TN)", 1, 768, 768, 1024, true, false},
      {"96 x 128x128x64 (NT)", 96, 128, 128, 64, false, true},
      {"96 x 128x64x128 (NN)", 96, 128, 64, 128, false, false},
      {"96 x 128x128x64 (NN)", 96, 128, 128, 64, false, false},
  };
  std::printf("%-24s %12s %8s %14s\n", "shape MxNxK", "f32 GFLOP/s", "% peak", "bf16 GFLOP/s");
  for (const Shape& s : shapes) {
    if (g_only && !std::strstr(s.name, g_only)) continue;
    g_cpu_best = 0;
    double f = g_f32 ? bench_shape(s, false, reps) : 0.0;
    const double fc = g_cpu_best;
    g_cpu_best = 0;
    double b = g_bf16 ? bench_shape(s, true, reps) : 0.0;
    const double bc = g_cpu_best;
    std::printf("%-24s %12.1f %7.0f%% %14.1f   (per CPU-time: f32 %.1f, bf16 %.1f)\n", s.name, f, 100.0 * f / pn, b,
                fc, bc);
    std::fflush(stdout);
  }
}

}  // namespace

// --- amxloop: is the tile loop bound by its loads? (Session 9 concluded from an L1 loop that tile loads do not overlap
// the products here; this re-measures it in alternation with the register-only loop.)
void amx_loop_bench() {
  if (amx_step_rate(8, false, 1) == 0) {
    std::printf("amxloop: no AMX on this CPU (or the OS refused tile state)\n");
    return;
  }
  std::printf("amxloop (1 thread, GFLOP/s; register-only / loads from L1 / loads from L2, ratios to register-only):\n");
  for (int r = 0; r < 6; r++) {
    const double g0 = amx_step_rate(8, false, 125000), g1 = amx_step_rate(8, true, 125000), g2 = amx_step_rate(48, true, 20833);
    std::printf("  %7.0f  %7.0f (%.2f)  %7.0f (%.2f)\n", g0, g1, g1 / g0, g2, g2 / g0);
  }
}

int main(int argc, char** argv) {
  bool do_check = false, do_bench = false, quick = false, do_amx = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "check")) do_check = true;
    if (!std::strcmp(argv[i], "bench")) do_bench = true;
    if (!std::strcmp(argv[i], "quick")) quick = true;
    if (!std::strncmp(argv[i], "only=", 5)) g_only = argv[i] + 5;
    if (!std::strcmp(argv[i], "c16")) g_c16 = true;
    if (!std::strcmp(argv[i], "mixed")) g_mixed = true;
    if (!std::strncmp(argv[i], "isa=", 4)) g_isa = argv[i] + 4;
    if (!std::strcmp(argv[i], "nopeak")) g_nopeak = true;
    if (!std::strcmp(argv[i], "f32only")) g_bf16 = false;
    if (!std::strcmp(argv[i], "bf16only")) g_f32 = false;
    if (!std::strcmp(argv[i], "amxloop")) do_amx = true;
  }
  if (do_amx) {
    amx_loop_bench();
    if (!do_check && !do_bench) return 0;
  }
  if (!do_check && !do_bench) do_check = do_bench = true;
  bool ok = true;
  if (do_check) {
    ok = check(quick);
    std::printf("correctness: %s\n", ok ? "PASS" : "FAIL");
  }
  if (do_bench) {
    bench(quick);
    std::printf("total GFLOP run by bench: %.3f\n", g_flops_done / 1e9);
  }
  return ok ? 0 : 1;
}
