// check.cu — standalone GPU check of the CUDA library (cuda/*.cu linked in directly, no Node addon):
// tests every kernel against a CPU reference on fresh random inputs, then times the GEMMs on transformer
// shapes. One JSON object per line on stdout (tests: "type":"test", timings: "type":"bench"), a summary
// line last. Exit status: 0 all tests passed, 1 a test failed, 77 no CUDA device (skipped), 2 bad usage.
//
// Build (from the repository root):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Icuda test/cuda/gpu/check.cu cuda/memory.cu cuda/gemm.cu
//        cuda/optim.cu cuda/table.cu -o check
//   (for the wgmma kernels: -gencode arch=compute_90a,code=sm_90a instead of -arch=sm_90;
//    scripts/gpu_check.sh builds both and runs everything)
// Run:   ./check [--tests] [--bench] [--quick] [--only=GROUP[,GROUP]] [--no-wgmma] [--no-pipe] [--probe] [--seed=N]
//   groups: alloc, errors, copy, bf16, bf16out (bf16 output, auto), f32, batched (batched f32), f32pipe (the
//   cp.async-pipelined 3xTF32 kernel), adamw, wgmma (the wgmma variants only; "bf16" excludes them). --no-pipe: the
//   f32 bench leaves the pipelined kernel out.
//   default: tests then benchmarks. --quick: small shapes only (for compute-sanitizer). --no-wgmma: the
//   library's wgmma kernels are switched off (ADAPTERS_CUDA_DISABLE_WGMMA=1), auto falls back to mma.sync.
//   --probe: the wgmma group runs only the "swapmn" descriptor probe (run it in its own process: a wrong
//   descriptor may fault, and a fault ends the process's CUDA context).
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "adapters_cuda.h"

// ---------------------------------------------------------------------------------------------------------
// small utilities
// ---------------------------------------------------------------------------------------------------------
namespace {

int g_failed = 0, g_passed = 0, g_skipped = 0;

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) * (1.0 / 16777216.0)); }
  int64_t below(int64_t n) { return (int64_t)(next() % (uint64_t)n); }
};

uint16_t f2bf(float f) {  // round to nearest even (inputs here are finite)
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

std::string jstr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (c == '\n') { o += "\\n"; continue; }
    o += c;
  }
  return o + "\"";
}

// One test result line. detail: extra JSON members (without braces), may be empty.
void report(const std::string& group, const std::string& name, bool ok, const std::string& detail = "",
            bool skipped = false) {
  if (skipped) g_skipped++;
  else if (ok) g_passed++;
  else g_failed++;
  printf("{\"type\":\"test\",\"group\":%s,\"name\":%s,\"status\":\"%s\"%s%s}\n", jstr(group).c_str(),
         jstr(name).c_str(), skipped ? "skip" : (ok ? "pass" : "FAIL"), detail.empty() ? "" : ",", detail.c_str());
  fflush(stdout);
}

std::string errtxt(int code) {
  return std::to_string(code) + " (" + adapters_cuda_error_string(code) + ")";
}

#define DEV_OK(expr)                                                                                  \
  do {                                                                                                \
    int e_ = (expr);                                                                                  \
    if (e_ != 0) {                                                                                    \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, errtxt(e_).c_str());      \
      return false;                                                                                   \
    }                                                                                                 \
  } while (0)

// A device buffer from the library's allocator, freed on scope exit.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t b) : bytes(b) {
    if (adapters_cuda_malloc(&p, b) != 0) p = nullptr;
  }
  ~DevBuf() {
    if (p) adapters_cuda_free(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

template <class F>
void parallel_rows(int64_t rows, F f) {
  int nt = (int)std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  if (rows < 4 * nt) nt = 1;
  std::vector<std::thread> th;
  for (int t = 0; t < nt; t++)
    th.emplace_back([&, t] {
      for (int64_t r = t; r < rows; r += nt) f(r);
    });
  for (auto& x : th) x.join();
}

struct Opts {
  bool tests = true, bench = true, quick = false, wgmma = true, probe = false, pipe = true;
  std::set<std::string> only;  // empty: all groups
  uint64_t seed = 0;
  bool want(const std::string& g) const { return only.empty() || only.count(g); }
};
Opts g_opt;

// ---------------------------------------------------------------------------------------------------------
// allocator, copies, errors
// ---------------------------------------------------------------------------------------------------------
adapters_cuda_mem_stats stats() {
  adapters_cuda_mem_stats s{};
  adapters_cuda_memory_stats(&s);
  return s;
}

void test_alloc() {
  // size classes (host-only arithmetic)
  {
    bool ok = true;
    std::string why;
    size_t prev = 0;
    for (size_t b : {size_t(1), size_t(511), size_t(512), size_t(513), size_t(4000), size_t(1) << 20,
                     (size_t(1) << 20) + 1, size_t(3) << 20, (size_t(3) << 20) + 7, size_t(1) << 30}) {
      size_t c = adapters_cuda_size_class(b);
      if (c < b || c < prev) { ok = false; why = "class(" + std::to_string(b) + ")=" + std::to_string(c); }
      if (b <= (size_t(1) << 20) && c % 512 != 0) { ok = false; why = "small class not a multiple of 512"; }
      if (b > (size_t(1) << 20) && (double)c > 1.25 * (double)b + 1) { ok = false; why = "large class wastes > 25%"; }
      prev = c;
    }
    if (adapters_cuda_size_class(0) != 0) ok = false, why = "class(0) != 0";
    report("alloc", "size classes", ok, ok ? "" : "\"why\":" + jstr(why));
  }
  // reuse: a freed block comes back for the next request of its class
  {
    adapters_cuda_mem_stats s0 = stats();
    void *a = nullptr, *b = nullptr;
    int e1 = adapters_cuda_malloc(&a, 1000);
    int e2 = adapters_cuda_free(a);
    int e3 = adapters_cuda_malloc(&b, 900);  // same 1024-byte class
    adapters_cuda_mem_stats s1 = stats();
    bool ok = e1 == 0 && e2 == 0 && e3 == 0 && a == b && s1.num_cache_hits >= s0.num_cache_hits + 1 &&
              reinterpret_cast<uintptr_t>(a) % 256 == 0;
    adapters_cuda_free(b);
    report("alloc", "free list reuse", ok,
           "\"same_pointer\":" + std::string(a == b ? "true" : "false") + ",\"cache_hits\":" +
               std::to_string(s1.num_cache_hits - s0.num_cache_hits));
  }
  // stats: current / peak / reserved / cached, empty_cache, reset_peak
  {
    adapters_cuda_empty_cache();
    adapters_cuda_reset_peak_stats();
    adapters_cuda_mem_stats s0 = stats();
    const size_t MB = size_t(1) << 20;
    void* p[3] = {};
    bool ok = true;
    for (auto& q : p) ok &= adapters_cuda_malloc(&q, 3 * MB) == 0;  // class 3 MiB
    adapters_cuda_mem_stats s1 = stats();
    ok &= s1.allocated_bytes - s0.allocated_bytes == 9 * MB;
    ok &= s1.requested_bytes - s0.requested_bytes == 9 * MB;
    ok &= s1.reserved_bytes - s0.reserved_bytes == 9 * MB;
    ok &= s1.peak_allocated_bytes >= s0.allocated_bytes + 9 * MB;
    ok &= adapters_cuda_free(p[0]) == 0 && adapters_cuda_free(p[1]) == 0;
    adapters_cuda_mem_stats s2 = stats();
    ok &= s2.allocated_bytes - s0.allocated_bytes == 3 * MB;
    ok &= s2.peak_allocated_bytes == s1.peak_allocated_bytes;  // peak stays
    ok &= s2.cached_bytes - s0.cached_bytes == 6 * MB;
    ok &= s2.reserved_bytes == s1.reserved_bytes;
    ok &= adapters_cuda_empty_cache() == 0;
    adapters_cuda_mem_stats s3 = stats();
    ok &= s3.cached_bytes == 0 && s3.reserved_bytes - s0.reserved_bytes == 3 * MB;
    ok &= s3.num_device_frees >= s2.num_device_frees + 2;
    ok &= adapters_cuda_reset_peak_stats() == 0;
    adapters_cuda_mem_stats s4 = stats();
    ok &= s4.peak_allocated_bytes == s4.allocated_bytes && s4.peak_reserved_bytes == s4.reserved_bytes;
    ok &= adapters_cuda_free(p[2]) == 0;
    adapters_cuda_mem_stats s5 = stats();
    ok &= s5.allocated_bytes == s0.allocated_bytes;
    char d[256];
    snprintf(d, sizeof d,
             "\"allocated_after_3\":%llu,\"peak_after_free\":%llu,\"cached_after_free\":%llu,\"reserved_after_empty\":%llu",
             (unsigned long long)(s1.allocated_bytes - s0.allocated_bytes),
             (unsigned long long)s2.peak_allocated_bytes, (unsigned long long)(s2.cached_bytes - s0.cached_bytes),
             (unsigned long long)(s3.reserved_bytes - s0.reserved_bytes));
    report("alloc", "stats, empty_cache, reset_peak", ok, d);
  }
  // edge cases
  {
    void* p = (void*)1;
    bool ok = adapters_cuda_malloc(&p, 0) == 0 && p == nullptr;
    ok &= adapters_cuda_free(nullptr) == 0;
    int x = 0;
    ok &= adapters_cuda_free(&x) == (int)cudaErrorInvalidDevicePointer;
    ok &= adapters_cuda_malloc(nullptr, 16) == (int)cudaErrorInvalidValue;
    report("alloc", "zero size, NULL, foreign pointer", ok);
  }
  // impossible allocation: an error code, the process and the device stay usable
  {
    adapters_cuda_mem_stats s0 = stats();
    void* p = (void*)1;
    const int e1 = adapters_cuda_malloc(&p, size_t(1) << 45);  // 32 TiB: cudaMalloc fails
    const bool null1 = p == nullptr;
    p = (void*)1;
    const int e2 = adapters_cuda_malloc(&p, size_t(1) << 50);  // past the allocator's own limit
    adapters_cuda_mem_stats s1 = stats();
    // still usable: a real allocation, a copy and a kernel
    void* q = nullptr;
    bool usable = adapters_cuda_malloc(&q, 4096) == 0;
    float h[4] = {1, 2, 3, 4}, back[4] = {};
    usable = usable && adapters_cuda_memcpy_h2d(q, h, sizeof h, nullptr) == 0 &&
             adapters_cuda_memcpy_d2h(back, q, sizeof h, nullptr) == 0 && memcmp(h, back, sizeof h) == 0;
    usable = usable && adapters_cuda_synchronize(nullptr) == 0 && cudaGetLastError() == cudaSuccess;
    adapters_cuda_free(q);
    const bool ok = e1 == (int)cudaErrorMemoryAllocation && null1 && e2 == (int)cudaErrorMemoryAllocation &&
                    p == nullptr && s1.num_oom_retries == s0.num_oom_retries + 1 && usable;
    report("errors", "impossible allocation returns an error code", ok,
           "\"code_32TiB\":" + std::to_string(e1) + ",\"code_1PiB\":" + std::to_string(e2) +
               ",\"device_usable_after\":" + (usable ? "true" : "false"));
  }
}

void test_copy() {
  Rng r(g_opt.seed ^ 0xC0);
  const size_t n = (size_t(1) << 20) + 37;  // odd byte count
  std::vector<unsigned char> h(n), back(n, 0), back2(n, 0);
  for (auto& x : h) x = (unsigned char)r.next();
  DevBuf a(n), b(n);
  bool ok = a.p && b.p;
  ok = ok && adapters_cuda_memcpy_h2d(a.p, h.data(), n, nullptr) == 0;
  ok = ok && adapters_cuda_memcpy_d2d(b.p, a.p, n, nullptr) == 0;
  ok = ok && adapters_cuda_memcpy_d2h(back.data(), b.p, n, nullptr) == 0;
  ok = ok && back == h;
  ok = ok && adapters_cuda_memset(a.p, 0x5A, n, nullptr) == 0 &&
       adapters_cuda_memcpy_d2h(back2.data(), a.p, n, nullptr) == 0;
  ok = ok && std::all_of(back2.begin(), back2.end(), [](unsigned char c) { return c == 0x5A; });
  // a stream other than the default
  cudaStream_t s = nullptr;
  ok = ok && cudaStreamCreate(&s) == cudaSuccess;
  std::fill(back.begin(), back.end(), 0);
  ok = ok && adapters_cuda_memcpy_h2d(b.p, h.data(), n, s) == 0 && adapters_cuda_memcpy_d2h(back.data(), b.p, n, s) == 0 &&
       adapters_cuda_synchronize(s) == 0 && back == h;
  if (s) cudaStreamDestroy(s);
  ok = ok && adapters_cuda_memcpy_h2d(nullptr, h.data(), 4, nullptr) == (int)cudaErrorInvalidValue;
  report("copy", "h2d / d2d / d2h / memset round trip, default and own stream", ok);
}

void test_errors() {
  float c = 0;
  uint16_t x[4] = {};
  struct Bad {
    const char* what;
    int got, want;
  };
  // device pointers are not dereferenced on these paths: validation fails first
  std::vector<Bad> cases = {
      {"negative M", adapters_cuda_gemm_bf16(0, 0, -1, 4, 4, 1, x, 4, x, 4, 0, &c, 4, nullptr), (int)cudaErrorInvalidValue},
      {"lda < K", adapters_cuda_gemm_bf16(0, 0, 4, 4, 8, 1, x, 4, x, 4, 0, &c, 4, nullptr), (int)cudaErrorInvalidValue},
      {"ldb < N (transB=0)", adapters_cuda_gemm_bf16(0, 0, 4, 8, 4, 1, x, 4, x, 4, 0, &c, 8, nullptr), (int)cudaErrorInvalidValue},
      {"ldc < N", adapters_cuda_gemm_bf16(0, 0, 4, 8, 4, 1, x, 4, x, 8, 0, &c, 4, nullptr), (int)cudaErrorInvalidValue},
      {"lda < M (transA=1)", adapters_cuda_gemm_bf16(1, 0, 8, 4, 4, 1, x, 4, x, 4, 0, &c, 4, nullptr), (int)cudaErrorInvalidValue},
      {"C NULL", adapters_cuda_gemm_bf16(0, 0, 4, 4, 4, 1, x, 4, x, 4, 0, nullptr, 4, nullptr), (int)cudaErrorInvalidValue},
      {"A NULL", adapters_cuda_gemm_f32(0, 0, 4, 4, 4, 1, nullptr, 4, &c, 4, 0, &c, 4, nullptr), (int)cudaErrorInvalidValue},
      {"M == 0 is a no-op", adapters_cuda_gemm_bf16(0, 0, 0, 4, 4, 1, nullptr, 4, nullptr, 4, 0, nullptr, 4, nullptr), 0},
      {"bad variant", adapters_cuda_gemm_bf16_variant(99, 0, 0, 4, 4, 4, 1, x, 4, x, 4, 0, &c, 4, nullptr), (int)cudaErrorInvalidValue},
      {"adamw n=0", adapters_cuda_adamw_step(0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, .9f, .999f, 1e-8f, 1, nullptr), (int)cudaErrorInvalidValue},
      {"memset NULL", adapters_cuda_memset(nullptr, 0, 16, nullptr), (int)cudaErrorInvalidValue},
      {"set_device 4096", adapters_cuda_set_device(4096), (int)cudaErrorInvalidDevice},
  };
  bool ok = true;
  std::string bad;
  for (auto& b : cases)
    if (b.got != b.want) {
      ok = false;
      bad += std::string(bad.empty() ? "" : "; ") + b.what + ": got " + std::to_string(b.got) + " want " + std::to_string(b.want);
    }
  // a wgmma variant asked for an operand TMA cannot describe (ld not a multiple of 8) declines politely
  if (adapters_cuda_gemm_has_wgmma()) {
    DevBuf a(64 * 72 * 2), cb(64 * 64 * 4);
    int wg = 1;
    while (std::string(adapters_cuda_gemm_bf16_variant_name(wg)).rfind("wgmma", 0) != 0) wg++;
    int got = adapters_cuda_gemm_bf16_variant(wg, 0, 1, 64, 64, 64, 1, a.as<uint16_t>(), 67, a.as<uint16_t>(), 67, 0,
                                              cb.as<float>(), 64, nullptr);
    if (got != (int)cudaErrorNotSupported) ok = false, bad += "; wgmma with lda=67: got " + std::to_string(got);
  }
  const cudaError_t sticky = cudaGetLastError();
  if (sticky != cudaSuccess) ok = false, bad += "; pending error after the bad calls: " + std::to_string((int)sticky);
  report("errors", "argument validation returns codes", ok, bad.empty() ? "" : "\"why\":" + jstr(bad));
}

// ---------------------------------------------------------------------------------------------------------
// GEMM tests
// ---------------------------------------------------------------------------------------------------------
struct GemmCase {
  int64_t M, N, K;
  int ta, tb;
  int64_t pad_a, pad_b, pad_c;  // extra leading-dimension elements
  int misalign;                 // start A and B one element past a 16-byte boundary
  float alpha, beta;
};

std::string case_name(const GemmCase& c) {
  char b[200];
  snprintf(b, sizeof b, "%s%s M=%lld N=%lld K=%lld pad=%lld/%lld/%lld%s alpha=%g beta=%g", c.ta ? "t" : "n",
           c.tb ? "t" : "n", (long long)c.M, (long long)c.N, (long long)c.K, (long long)c.pad_a, (long long)c.pad_b,
           (long long)c.pad_c, c.misalign ? " misaligned" : "", c.alpha, c.beta);
  return b;
}

// Host operands (float values; for bf16 already rounded to bf16) and the double reference.
struct GemmData {
  int64_t lda, ldb, ldc, rows_a, rows_b;
  std::vector<float> A, B, C0;        // C0: initial C (random when beta != 0, else NaN poison)
  std::vector<double> ref, scale;     // expected alpha·AB + beta·C0 and sum |alpha·a·b| + |beta·c0|
};

GemmData make_data(const GemmCase& c, bool bf16, Rng& r) {
  GemmData d;
  const int64_t cols_a = c.ta ? c.M : c.K, cols_b = c.tb ? c.K : c.N;
  d.rows_a = c.ta ? c.K : c.M;
  d.rows_b = c.tb ? c.N : c.K;
  d.lda = std::max<int64_t>(1, cols_a + c.pad_a);
  d.ldb = std::max<int64_t>(1, cols_b + c.pad_b);
  d.ldc = std::max<int64_t>(1, c.N + c.pad_c);
  auto rnd = [&](float lo, float hi) { float v = r.uniform(lo, hi); return bf16 ? bf2f(f2bf(v)) : v; };
  d.A.resize((size_t)(d.rows_a * d.lda));
  d.B.resize((size_t)(d.rows_b * d.ldb));
  for (auto& v : d.A) v = rnd(-1, 1);  // padding too: it must not leak into the result
  for (auto& v : d.B) v = rnd(-1, 1);
  d.C0.resize((size_t)(c.M * d.ldc));
  for (auto& v : d.C0) v = rnd(-1, 1);  // bf16: representable, so that a bf16 C holds it exactly
  const float qnan = std::nanf("");
  if (c.beta == 0.f)  // write-only C: poison the visible part, NaN must not survive
    for (int64_t i = 0; i < c.M; i++)
      for (int64_t j = 0; j < c.N; j++) d.C0[(size_t)(i * d.ldc + j)] = qnan;
  d.ref.assign((size_t)(c.M * c.N), 0.0);
  d.scale.assign((size_t)(c.M * c.N), 0.0);
  parallel_rows(c.M, [&](int64_t i) {
    std::vector<double> arow((size_t)c.K);
    for (int64_t k = 0; k < c.K; k++) arow[(size_t)k] = c.ta ? d.A[(size_t)(k * d.lda + i)] : d.A[(size_t)(i * d.lda + k)];
    for (int64_t j = 0; j < c.N; j++) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < c.K; k++) {
        const double b = c.tb ? d.B[(size_t)(j * d.ldb + k)] : d.B[(size_t)(k * d.ldb + j)];
        const double p = arow[(size_t)k] * b;
        s += p;
        sa += std::fabs(p);
      }
      double out = (double)c.alpha * s, sc = std::fabs((double)c.alpha) * sa;
      if (c.beta != 0.f) {
        const double c0 = d.C0[(size_t)(i * d.ldc + j)];
        out += (double)c.beta * c0;
        sc += std::fabs((double)c.beta * c0);
      }
      d.ref[(size_t)(i * c.N + j)] = out;
      d.scale[(size_t)(i * c.N + j)] = sc;
    }
  });
  return d;
}

struct CompareResult {
  bool ok;
  double worst;       // max |out - ref| / (tol · scale): <= 1 passes
  double rel_fro;     // ||out - ref|| / ||ref||
  double max_err_rel; // max |out - ref| / scale
  int64_t bad, pad_changed;
};

CompareResult compare(const GemmCase& c, const GemmData& d, const std::vector<float>& out, double tol) {
  CompareResult r{true, 0, 0, 0, 0, 0};
  double num = 0, den = 0;
  for (int64_t i = 0; i < c.M; i++) {
    for (int64_t j = 0; j < c.N; j++) {
      const double o = out[(size_t)(i * d.ldc + j)], e = d.ref[(size_t)(i * c.N + j)];
      const double sc = d.scale[(size_t)(i * c.N + j)];
      const double err = std::fabs(o - e);
      const double bound = tol * sc + 1e-30;
      if (!(err <= bound)) r.bad++;  // NaN fails
      r.worst = std::max(r.worst, std::isfinite(err) ? err / bound : 1e30);
      if (sc > 0) r.max_err_rel = std::max(r.max_err_rel, std::isfinite(err) ? err / sc : 1e30);
      num += std::isfinite(err) ? err * err : 1e30;
      den += e * e;
    }
    for (int64_t j = c.N; j < d.ldc; j++)  // padding columns of C are not ours to write
      if (fbits(out[(size_t)(i * d.ldc + j)]) != fbits(d.C0[(size_t)(i * d.ldc + j)])) r.pad_changed++;
  }
  r.rel_fro = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  r.ok = r.bad == 0 && r.pad_changed == 0;
  return r;
}

std::vector<GemmCase> gemm_cases(bool quick) {
  std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1},      {1, 17, 5},      {17, 1, 33},     {17, 17, 17},     {33, 65, 129},   {64, 64, 64},
      {127, 129, 65}, {128, 256, 64},  {130, 260, 190}, {1, 1000, 127},   {1000, 1, 127},  {127, 1000, 17},
      {129, 257, 1000}, {256, 384, 512}, {1000, 127, 1000}, {512, 512, 1024}, {200, 300, 2048}, {384, 768, 768},
      // multiples of 8 but not of the tile sizes: edge tiles through the wgmma/TMA kernels too
      {200, 136, 264}, {72, 520, 136}, {1, 64, 64}, {8, 64, 128}, {256, 8, 128},
      // skinny with a long K (LoRA / bottleneck weight gradients): split-K, also through auto
      {8, 768, 4096}, {768, 8, 4096}, {48, 200, 3000}, {5, 3, 5000}, {70, 130, 1100}};
  if (quick) shapes = {{17, 17, 17}, {127, 129, 65}, {200, 136, 264}, {48, 200, 3000}};
  const float alphas[] = {1.f, 0.5f, -2.f};
  const float betas[] = {0.f, 0.f, 1.5f, -1.f};
  const int64_t pads[] = {0, 8, 0, 3, 16};  // 3: ld not a multiple of 8 (the element-load path)
  std::vector<GemmCase> cs;
  int i = 0;
  for (auto& s : shapes)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++, i++) {
        GemmCase c{s[0], s[1], s[2], ta, tb, pads[i % 5], pads[(i + 2) % 5], pads[(i + 1) % 5] == 3 ? 1 : pads[(i + 1) % 5],
                   0, alphas[i % 3], betas[i % 4]};
        cs.push_back(c);
      }
  // misaligned base pointers; K = 0 (C = beta·C, or zeros)
  cs.push_back({65, 70, 80, 0, 1, 0, 0, 0, 1, 1.f, 0.f});
  cs.push_back({65, 70, 80, 1, 0, 8, 8, 0, 1, 1.f, 0.5f});
  cs.push_back({17, 9, 0, 0, 0, 0, 0, 2, 0, 1.f, 2.f});
  cs.push_back({17, 9, 0, 1, 1, 0, 0, 0, 0, 1.f, 0.f});
  return cs;
}

// Runs one case through the given variants of bf16 (dtype_bf16) or through gemm_f32.
void run_gemm_case(const GemmCase& c, bool bf16, const std::vector<int>& variants, Rng& r, const char* group) {
  GemmData d = make_data(c, bf16, r);
  const size_t esz = bf16 ? 2 : 4;
  const int64_t off = c.misalign ? 1 : 0;
  DevBuf dA((d.A.size() + 8) * esz), dB((d.B.size() + 8) * esz), dC(d.C0.size() * 4 + 4);
  if (!dA.p || !dB.p || !dC.p) {
    report(group, case_name(c), false, "\"why\":\"allocation failed\"");
    return;
  }
  if (bf16) {
    std::vector<uint16_t> a(d.A.size()), b(d.B.size());
    for (size_t i = 0; i < a.size(); i++) a[i] = f2bf(d.A[i]);
    for (size_t i = 0; i < b.size(); i++) b[i] = f2bf(d.B[i]);
    adapters_cuda_memcpy_h2d(dA.as<uint16_t>() + off, a.data(), a.size() * 2, nullptr);
    adapters_cuda_memcpy_h2d(dB.as<uint16_t>() + off, b.data(), b.size() * 2, nullptr);
  } else {
    adapters_cuda_memcpy_h2d(dA.as<float>() + off, d.A.data(), d.A.size() * 4, nullptr);
    adapters_cuda_memcpy_h2d(dB.as<float>() + off, d.B.data(), d.B.size() * 4, nullptr);
  }
  std::vector<float> out(d.C0.size());
  for (int v : variants) {
    adapters_cuda_memcpy_h2d(dC.p, d.C0.data(), d.C0.size() * 4, nullptr);
    int e;
    std::string vname;
    if (bf16) {
      vname = adapters_cuda_gemm_bf16_variant_name(v);
      e = adapters_cuda_gemm_bf16_variant(v, c.ta, c.tb, c.M, c.N, c.K, c.alpha, dA.as<uint16_t>() + off, d.lda,
                                          dB.as<uint16_t>() + off, d.ldb, c.beta, dC.as<float>(), d.ldc, nullptr);
    } else {
      vname = adapters_cuda_gemm_f32_variant_name(v);
      e = adapters_cuda_gemm_f32_variant(v, c.ta, c.tb, c.M, c.N, c.K, c.alpha, dA.as<float>() + off, d.lda, dB.as<float>() + off,
                                         d.ldb, c.beta, dC.as<float>(), d.ldc, nullptr);
    }
    std::string name = std::string(bf16 ? "bf16 " : "f32 ") + vname + " " + case_name(c);
    const bool probe = bf16 && vname.find("swapmn") != std::string::npos;
    if (e == (int)cudaErrorNotSupported) {
      report(group, name, true, "\"why\":\"variant does not take this problem\"", true);
      continue;
    }
    if (e == 0) e = adapters_cuda_synchronize(nullptr);
    if (e != 0) {
      report(group, name, probe, "\"error\":" + jstr(errtxt(e)) + (probe ? ",\"probe\":true" : ""), probe);
      if (e != (int)cudaErrorNotSupported && e != (int)cudaErrorInvalidValue) {
        // a kernel fault poisons the context: nothing after it can be trusted
        fprintf(stderr, "fatal device error in %s: %s\n", name.c_str(), errtxt(e).c_str());
        report(group, "device context lost, stopping", false);
        printf("{\"type\":\"summary\",\"passed\":%d,\"failed\":%d,\"skipped\":%d,\"aborted\":true}\n", g_passed, g_failed, g_skipped);
        fflush(stdout);
        exit(1);
      }
      continue;
    }
    adapters_cuda_memcpy_d2h(out.data(), dC.p, out.size() * 4, nullptr);
    // bf16 operands: products exact in f32, f32 accumulation -> error ~ K·2^-24 of sum|a·b| at worst;
    // 1e-3 leaves room for the tensor cores' accumulation order yet catches any missing or wrong term
    // for K <= ~1000. f32 (FFMA, or 3xTF32 at ~2^-22 per product): 1e-4.
    const double tol = bf16 ? 1e-3 : 1e-4;
    CompareResult cr = compare(c, d, out, tol);
    char det[320];
    snprintf(det, sizeof det,
             "\"M\":%lld,\"N\":%lld,\"K\":%lld,\"worst_over_tol\":%.3g,\"max_err_over_sum_abs\":%.3g,\"rel_fro\":%.3g,"
             "\"bad\":%lld,\"pad_changed\":%lld%s",
             (long long)c.M, (long long)c.N, (long long)c.K, cr.worst, cr.max_err_rel, cr.rel_fro, (long long)cr.bad,
             (long long)cr.pad_changed, probe ? ",\"probe\":true" : "");
    // the swapmn probe is expected to fail where MN-major descriptors matter: informative, not a failure
    report(group, name, cr.ok || probe, det, probe && !cr.ok);
  }
}

// bf16 in, bf16 out (adapters_cuda_gemm_bf16_out, auto dispatch): C uploaded and read back as bf16; the bound adds the
// output's rounding (at most 2^-9 of |alpha·AB + beta·C|, itself at most the scale) to the f32 accumulation's 1e-3.
// Batched f32 products (adapters_cuda_gemm_f32_batched, what attention through products runs): every item against a
// double-precision product, with strides that leave gaps between items (which must stay untouched), all four
// layouts, edge tiles, an odd leading dimension (scalar loads), beta, and more items than SMs.
void test_gemm_f32_batched() {
  struct BC { int64_t M, N, K, batch, pad; float alpha, beta; int tf32; };
  const BC cases[] = {{128, 128, 64, 7, 4, 0.125f, 0.f, 0}, {70, 130, 33, 5, 0, 1.f, 1.f, 0}, {256, 64, 128, 300, 4, 1.f, 0.f, 0},
                      {17, 200, 129, 3, 3, -0.5f, 0.5f, 0}, {128, 158, 64, 2, 0, 1.f, 0.f, 0},
                      // 1xTF32 (autocast's attention products): two roundings to 10 mantissa bits per product
                      {128, 128, 64, 7, 4, 0.125f, 0.f, 1}, {70, 130, 33, 5, 3, 1.f, 1.f, 1}};
  Rng r(g_opt.seed ^ 0xBA7C);
  for (const BC& bc : cases)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int64_t lda = (ta ? bc.M : bc.K) + bc.pad, ldb = (tb ? bc.K : bc.N) + bc.pad, ldc = bc.N + bc.pad;
        const int64_t sA = (ta ? bc.K : bc.M) * lda + 8, sB = (tb ? bc.N : bc.K) * ldb + 8, sC = bc.M * ldc + 8;
        std::vector<float> A(sA * bc.batch), B(sB * bc.batch), C0(sC * bc.batch), C(sC * bc.batch);
        for (auto& v : A) v = r.uniform(-1, 1);
        for (auto& v : B) v = r.uniform(-1, 1);
        for (auto& v : C0) v = r.uniform(-1, 1);
        DevBuf dA(A.size() * 4), dB(B.size() * 4), dC(C0.size() * 4);
        char nm[160];
        snprintf(nm, sizeof nm, "batched%s %lldx%lldx%lld x%lld %s%s", bc.tf32 ? " 1xTF32" : "", (long long)bc.M, (long long)bc.N,
                 (long long)bc.K, (long long)bc.batch, ta ? "t" : "n", tb ? "t" : "n");
        if (!dA.p || !dB.p || !dC.p) {
          report("batched", nm, false, "\"why\":\"allocation failed\"");
          continue;
        }
        adapters_cuda_memcpy_h2d(dA.p, A.data(), A.size() * 4, nullptr);
        adapters_cuda_memcpy_h2d(dB.p, B.data(), B.size() * 4, nullptr);
        adapters_cuda_memcpy_h2d(dC.p, C0.data(), C0.size() * 4, nullptr);
        int e = adapters_cuda_gemm_f32_batched(ta, tb, bc.M, bc.N, bc.K, bc.alpha, dA.as<float>(), lda, sA, dB.as<float>(), ldb, sB, bc.beta,
                                               dC.as<float>(), ldc, sC, bc.batch, bc.tf32, nullptr);
        if (!e) e = adapters_cuda_synchronize(nullptr);
        if (!e) e = adapters_cuda_memcpy_d2h(C.data(), dC.p, C.size() * 4, nullptr);
        if (e) {
          report("batched", nm, false, "\"why\":\"" + errtxt(e) + "\"");
          continue;
        }
        double worst = 0;
        int64_t bad = 0;
        for (int64_t z = 0; z < bc.batch; z++)
          for (int64_t i = 0; i < bc.M; i++)
            for (int64_t j = 0; j < ldc; j++) {
              const int64_t ci = z * sC + i * ldc + j;
              if (j >= bc.N) {  // padding of C: untouched
                bad += fbits(C[ci]) != fbits(C0[ci]);
                continue;
              }
              double s = 0, sa = 0;
              for (int64_t k = 0; k < bc.K; k++) {
                const double p = (double)A[z * sA + (ta ? k * lda + i : i * lda + k)] * B[z * sB + (tb ? j * ldb + k : k * ldb + j)];
                s += p, sa += std::fabs(p);
              }
              const double ref = bc.alpha * s + bc.beta * C0[ci], scale = std::fabs(bc.alpha) * sa + std::fabs(bc.beta * C0[ci]);
              const double err = std::fabs(C[ci] - ref) / ((bc.tf32 ? 2e-3 : 1e-4) * scale + 1e-30);
              worst = std::max(worst, std::isfinite(err) ? err : 1e30);
            }
        for (int64_t z = 0; z < bc.batch; z++)  // the gaps between items: untouched
          for (int64_t g = bc.M * ldc; g < sC; g++) bad += fbits(C[z * sC + g]) != fbits(C0[z * sC + g]);
        char det[96];
        snprintf(det, sizeof det, "\"worst_over_tol\":%.3g,\"changed_outside\":%lld", worst, (long long)bad);
        report("batched", nm, worst <= 1 && bad == 0, det);
      }
}

void test_gemm_bf16_out() {
  Rng r(g_opt.seed ^ 0xB160);
  for (const GemmCase& c : gemm_cases(g_opt.quick)) {
    GemmData d = make_data(c, true, r);
    const int64_t off = c.misalign ? 1 : 0;
    DevBuf dA((d.A.size() + 8) * 2), dB((d.B.size() + 8) * 2), dC(d.C0.size() * 2 + 4);
    std::vector<uint16_t> a(d.A.size()), b(d.B.size()), c0(d.C0.size()), got(d.C0.size());
    for (size_t i = 0; i < a.size(); i++) a[i] = f2bf(d.A[i]);
    for (size_t i = 0; i < b.size(); i++) b[i] = f2bf(d.B[i]);
    for (size_t i = 0; i < c0.size(); i++) c0[i] = f2bf(d.C0[i]);
    adapters_cuda_memcpy_h2d(dA.as<uint16_t>() + off, a.data(), a.size() * 2, nullptr);
    adapters_cuda_memcpy_h2d(dB.as<uint16_t>() + off, b.data(), b.size() * 2, nullptr);
    adapters_cuda_memcpy_h2d(dC.p, c0.data(), c0.size() * 2, nullptr);
    int e = adapters_cuda_gemm_bf16_out(c.ta, c.tb, c.M, c.N, c.K, c.alpha, dA.as<uint16_t>() + off, d.lda, dB.as<uint16_t>() + off, d.ldb,
                                        c.beta, dC.as<uint16_t>(), d.ldc, nullptr);
    if (e == 0) e = adapters_cuda_synchronize(nullptr);
    const std::string name = "bf16 out auto " + case_name(c);
    if (e != 0) {
      report("bf16out", name, false, "\"error\":" + jstr(errtxt(e)));
      if (e != (int)cudaErrorInvalidValue) {
        printf("{\"type\":\"summary\",\"passed\":%d,\"failed\":%d,\"skipped\":%d,\"aborted\":true}\n", g_passed, g_failed, g_skipped);
        fflush(stdout);
        exit(1);
      }
      continue;
    }
    adapters_cuda_memcpy_d2h(got.data(), dC.p, got.size() * 2, nullptr);
    std::vector<float> out(got.size());
    for (size_t i = 0; i < out.size(); i++) out[i] = bf2f(got[i]);
    CompareResult cr = compare(c, d, out, 1e-3 + 1.0 / 256);
    char det[200];
    snprintf(det, sizeof det, "\"M\":%lld,\"N\":%lld,\"K\":%lld,\"worst_over_tol\":%.3g,\"bad\":%lld,\"pad_changed\":%lld", (long long)c.M,
             (long long)c.N, (long long)c.K, cr.worst, (long long)cr.bad, (long long)cr.pad_changed);
    report("bf16out", name, cr.ok, det);
  }
}

std::vector<int> bf16_variants(bool want_wgmma_only) {
  std::vector<int> v;
  for (int i = 0;; i++) {
    std::string n = adapters_cuda_gemm_bf16_variant_name(i);
    if (n.empty()) break;
    const bool is_wg = n.rfind("wgmma", 0) == 0, is_probe = n.find("swapmn") != std::string::npos;
    // the wgmma group also runs "auto" (variant 0): in an sm_90a build it dispatches to wgmma
    if (want_wgmma_only ? ((is_wg && is_probe == g_opt.probe) || (i == 0 && !g_opt.probe)) : !is_wg) v.push_back(i);
  }
  return v;
}

void test_gemm(bool bf16, bool wgmma_only) {
  Rng r(g_opt.seed ^ (bf16 ? 0xB16 : 0xF32) ^ (wgmma_only ? 0x3A : 0));
  const char* group = wgmma_only ? "wgmma" : (bf16 ? "bf16" : "f32");
  if (wgmma_only && !adapters_cuda_gemm_has_wgmma()) {
    report(group, "wgmma kernels", true, "\"why\":\"not in this build (needs sm_90a) or device is not sm_90\"", true);
    return;
  }
  std::vector<int> variants = bf16 ? bf16_variants(wgmma_only) : std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8};  // f32: auto and the fixed kernels
  for (const GemmCase& c : gemm_cases(g_opt.quick)) run_gemm_case(c, bf16, variants, r, group);
}

// The cp.async-pipelined 3xTF32 kernel (f32 variants 9 and 10), a group of its own: it has not run on a GPU before,
// and a fault would end the process (scripts/gpu_check.sh runs this group alone and benchmarks the kernel only after
// it passed). Cases it cannot take run the 128x128x16 3xTF32 kernel instead.
void test_gemm_f32_pipe() {
  Rng r(g_opt.seed ^ 0xF32B);
  for (const GemmCase& c : gemm_cases(g_opt.quick)) run_gemm_case(c, false, {9, 10}, r, "f32pipe");
}

// ---------------------------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------------------------
// native/kernels/optim.cpp's loop, verbatim in arithmetic
void adamw_cpu(float* p, const float* g, float* m, float* v, int64_t n, float lr, float wd, float b1, float b2,
               float eps, int64_t t) {
  const double bc1 = 1.0 - std::pow((double)b1, (double)t), bc2 = 1.0 - std::pow((double)b2, (double)t);
  const float bc2s = (float)std::sqrt(bc2);
  const float decay = 1.f - lr * wd, step = (float)(lr / bc1);
  for (int64_t i = 0; i < n; i++) {
    if (wd != 0.f) p[i] *= decay;
    m[i] += (1.f - b1) * (g[i] - m[i]);
    v[i] = v[i] * b2 + (1.f - b2) * g[i] * g[i];
    p[i] -= step * (m[i] / (std::sqrt(v[i]) / bc2s + eps));
  }
}

void test_adamw_set(const std::string& name, const std::vector<int64_t>& sizes, Rng& r, int steps) {
  const int64_t n = (int64_t)sizes.size();
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  struct T {
    std::vector<float> p, m, v;
    DevBuf *dp, *dg, *dm, *dv;
    int off;
  };
  std::vector<T> ts((size_t)n);
  std::vector<float> hyper((size_t)(2 * n));
  bool ok = true;
  for (int64_t k = 0; k < n; k++) {
    T& t = ts[(size_t)k];
    const int64_t s = sizes[(size_t)k];
    t.off = (k % 5 == 3) ? 1 : 0;  // some tensors start off a 16-byte boundary: scalar path
    t.p.resize((size_t)s), t.m.assign((size_t)s, 0.f), t.v.assign((size_t)s, 0.f);
    for (auto& x : t.p) x = r.uniform(-1, 1);
    t.dp = new DevBuf((size_t)(s + 1) * 4), t.dg = new DevBuf((size_t)(s + 1) * 4);
    t.dm = new DevBuf((size_t)(s + 1) * 4), t.dv = new DevBuf((size_t)(s + 1) * 4);
    ok &= adapters_cuda_memcpy_h2d(t.dp->as<float>() + t.off, t.p.data(), (size_t)s * 4, nullptr) == 0;
    ok &= adapters_cuda_memcpy_h2d(t.dm->as<float>() + t.off, t.m.data(), (size_t)s * 4, nullptr) == 0;
    ok &= adapters_cuda_memcpy_h2d(t.dv->as<float>() + t.off, t.v.data(), (size_t)s * 4, nullptr) == 0;
    hyper[(size_t)(2 * k)] = r.uniform(1e-4f, 1e-2f);
    hyper[(size_t)(2 * k + 1)] = (k % 3 == 0) ? 0.f : 0.01f;
  }
  int64_t mismatched = 0, max_ulp = 0;
  for (int step = 1; step <= steps && ok; step++) {
    std::vector<float*> P((size_t)n), M((size_t)n), V((size_t)n);
    std::vector<const float*> G((size_t)n);
    for (int64_t k = 0; k < n; k++) {
      T& t = ts[(size_t)k];
      const int64_t s = sizes[(size_t)k];
      std::vector<float> g((size_t)s);
      for (auto& x : g) x = r.uniform(-1, 1) * (k % 2 ? 1e-3f : 1.f);
      ok &= adapters_cuda_memcpy_h2d(t.dg->as<float>() + t.off, g.data(), (size_t)s * 4, nullptr) == 0;
      adamw_cpu(t.p.data(), g.data(), t.m.data(), t.v.data(), s, hyper[(size_t)(2 * k)], hyper[(size_t)(2 * k + 1)], b1, b2,
                eps, step);
      P[(size_t)k] = t.dp->as<float>() + t.off, G[(size_t)k] = t.dg->as<float>() + t.off;
      M[(size_t)k] = t.dm->as<float>() + t.off, V[(size_t)k] = t.dv->as<float>() + t.off;
    }
    int e = adapters_cuda_adamw_step(n, P.data(), G.data(), M.data(), V.data(), sizes.data(), hyper.data(), b1, b2, eps,
                                     step, nullptr);
    if (e == 0) e = adapters_cuda_synchronize(nullptr);
    if (e != 0) {
      ok = false;
      report("adamw", name, false, "\"error\":" + jstr(errtxt(e)));
      break;
    }
  }
  if (ok) {
    for (int64_t k = 0; k < n; k++) {
      T& t = ts[(size_t)k];
      const int64_t s = sizes[(size_t)k];
      std::vector<float> p((size_t)s), m((size_t)s), v((size_t)s);
      adapters_cuda_memcpy_d2h(p.data(), t.dp->as<float>() + t.off, (size_t)s * 4, nullptr);
      adapters_cuda_memcpy_d2h(m.data(), t.dm->as<float>() + t.off, (size_t)s * 4, nullptr);
      adapters_cuda_memcpy_d2h(v.data(), t.dv->as<float>() + t.off, (size_t)s * 4, nullptr);
      for (int64_t i = 0; i < s; i++) {
        const float got[3] = {p[(size_t)i], m[(size_t)i], v[(size_t)i]};
        const float want[3] = {t.p[(size_t)i], t.m[(size_t)i], t.v[(size_t)i]};
        for (int q = 0; q < 3; q++) {
          const int64_t ulp = std::llabs((int64_t)(int32_t)fbits(got[q]) - (int64_t)(int32_t)fbits(want[q]));
          if (ulp != 0) mismatched++;
          max_ulp = std::max(max_ulp, std::isfinite(got[q]) ? ulp : (int64_t)1 << 40);
        }
      }
    }
    // the kernel is written to be bit-identical; allow 1 ulp so a libm difference does not hide the rest
    report("adamw", name, max_ulp <= 1,
           "\"tensors\":" + std::to_string(n) + ",\"steps\":" + std::to_string(steps) + ",\"values_not_bit_identical\":" +
               std::to_string(mismatched) + ",\"max_ulp\":" + std::to_string(max_ulp));
  } else if (g_failed == 0) {
    report("adamw", name, false, "\"why\":\"upload failed\"");
  }
  for (auto& t : ts) delete t.dp, delete t.dg, delete t.dm, delete t.dv;
}

void test_adamw() {
  Rng r(g_opt.seed ^ 0xADA);
  test_adamw_set("adamw, mixed sizes (param-table launch)", {1, 3, 4096, 4097, 12345, 0, 65536 + 5, 768 * 768, 7, 3072}, r, 3);
  std::vector<int64_t> many;
  for (int i = 0; i < 300; i++) many.push_back(1 + (i * 7919) % 5000);
  test_adamw_set("adamw, 300 tensors (device-table launch)", many, r, 2);
}

// ---------------------------------------------------------------------------------------------------------
// benchmarks
// ---------------------------------------------------------------------------------------------------------
__global__ void fill_random_bf16(uint16_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float f = (float)((z >> 40) * (1.0 / 16777216.0)) * 2.f - 1.f;
    uint32_t u = __float_as_uint(f);
    u += 0x7FFF + ((u >> 16) & 1);
    p[i] = (uint16_t)(u >> 16);
  }
}
__global__ void fill_random_f32(float* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = (float)((z >> 40) * (1.0 / 16777216.0)) * 2.f - 1.f;
  }
}

struct Shape {
  const char* name;
  int64_t M, N, K;
};
const Shape kBenchShapes[] = {
    {"square-4096", 4096, 4096, 4096},      {"square-8192", 8192, 8192, 8192},
    {"bert-qkvo 4096x768x768", 4096, 768, 768}, {"bert-ffn-up 4096x3072x768", 4096, 3072, 768},
    {"bert-ffn-down 4096x768x3072", 4096, 768, 3072}, {"llama-up 4096x11008x4096", 4096, 11008, 4096},
    // adapter weight gradients over 4096 tokens (skinny: split-K)
    {"skinny lora-dA 8x768x4096", 8, 768, 4096}, {"skinny bn-dW 48x768x4096", 48, 768, 4096},
    {"skinny ft-dW 768x768x4096", 768, 768, 4096},
};

struct Timing {
  double median_ms, min_ms, max_ms;
  int iters, samples;
};

// Median over samples of the mean time per call, each sample several calls so it lasts >= ~2 ms.
template <class F>
bool time_calls(F call, Timing& t, int samples = 11) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  int i = 0;
  for (int w = 0; w < 3; w++)
    if (call(i++) != 0) return false;
  if (adapters_cuda_synchronize(nullptr) != 0) return false;
  cudaEventRecord(e0);
  if (call(i++) != 0) return false;
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float one = 0;
  cudaEventElapsedTime(&one, e0, e1);
  const int iters = std::max(1, std::min(500, (int)std::ceil(2.0 / std::max(one, 1e-3f))));
  std::vector<double> v;
  for (int s = 0; s < samples; s++) {
    cudaEventRecord(e0);
    for (int k = 0; k < iters; k++)
      if (call(i++) != 0) return false;
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    v.push_back(ms / iters);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (adapters_cuda_synchronize(nullptr) != 0) return false;
  std::sort(v.begin(), v.end());
  t = {v[v.size() / 2], v.front(), v.back(), iters, samples};
  return true;
}

void print_bench(const char* dtype, const char* layout, const std::string& variant, const std::string& kernel,
                 const Shape& s, const Timing& t, int sets) {
  const double tflops = 2.0 * s.M * s.N * s.K / (t.median_ms * 1e-3) / 1e12;
  printf("{\"type\":\"bench\",\"impl\":\"ours\",\"dtype\":\"%s\",\"layout\":\"%s\",\"variant\":%s,\"kernel\":%s,"
         "\"shape\":%s,\"M\":%lld,\"N\":%lld,\"K\":%lld,\"ms\":%.5f,\"ms_min\":%.5f,\"ms_max\":%.5f,\"tflops\":%.2f,"
         "\"iters\":%d,\"samples\":%d,\"input_sets\":%d}\n",
         dtype, layout, jstr(variant).c_str(), jstr(kernel).c_str(), jstr(s.name).c_str(), (long long)s.M,
         (long long)s.N, (long long)s.K, t.median_ms, t.min_ms, t.max_ms, tflops, t.iters, t.samples, sets);
  fflush(stdout);
}

// Spot check of a large product: 256 random outputs against double dot products of the same inputs.
bool spot_check(const Shape& s, int ta, int tb, const void* dA, const void* dB, const float* dC, bool bf16, double tol,
                std::string& why) {
  const int64_t na = s.M * s.K, nb = s.K * s.N;
  const size_t esz = bf16 ? 2 : 4;
  std::vector<unsigned char> a((size_t)na * esz), b((size_t)nb * esz);
  std::vector<float> c((size_t)(s.M * s.N));
  if (adapters_cuda_memcpy_d2h(a.data(), dA, a.size(), nullptr) || adapters_cuda_memcpy_d2h(b.data(), dB, b.size(), nullptr) ||
      adapters_cuda_memcpy_d2h(c.data(), dC, c.size() * 4, nullptr)) {
    why = "copy back failed";
    return false;
  }
  auto at = [&](const std::vector<unsigned char>& v, int64_t idx) -> double {
    if (bf16) { uint16_t h; memcpy(&h, &v[(size_t)idx * 2], 2); return bf2f(h); }
    float f; memcpy(&f, &v[(size_t)idx * 4], 4); return f;
  };
  Rng r(g_opt.seed ^ (uint64_t)(s.M * 31 + s.N * 7 + s.K));
  const int64_t lda = ta ? s.M : s.K, ldb = tb ? s.K : s.N;
  double worst = 0;
  for (int q = 0; q < 256; q++) {
    const int64_t i = r.below(s.M), j = r.below(s.N);
    double sum = 0, sa = 0;
    for (int64_t k = 0; k < s.K; k++) {
      const double p = at(a, ta ? k * lda + i : i * lda + k) * at(b, tb ? j * ldb + k : k * ldb + j);
      sum += p, sa += std::fabs(p);
    }
    const double err = std::fabs((double)c[(size_t)(i * s.N + j)] - sum) / (tol * sa + 1e-30);
    worst = std::max(worst, std::isfinite(err) ? err : 1e30);
  }
  why = "worst_over_tol=" + std::to_string(worst);
  return worst <= 1.0;
}

void bench_gemm(bool bf16) {
  const bool has_wg = adapters_cuda_gemm_has_wgmma() != 0;
  for (const Shape& s : kBenchShapes) {
    const size_t esz = bf16 ? 2 : 4;
    const size_t ab = (size_t)(s.M * s.K + s.K * s.N) * esz;
    // rotate among input sets so that repeated calls do not run out of L2 (50 MB on an H100)
    const int sets = (int)std::max<size_t>(1, std::min<size_t>(4, (size_t(256) << 20) / ab));
    std::vector<DevBuf*> As, Bs;
    bool ok = true;
    for (int q = 0; q < sets; q++) {
      As.push_back(new DevBuf((size_t)(s.M * s.K) * esz));
      Bs.push_back(new DevBuf((size_t)(s.K * s.N) * esz));
      ok &= As.back()->p && Bs.back()->p;
    }
    DevBuf C((size_t)(s.M * s.N) * 4);
    ok &= C.p != nullptr;
    if (!ok) {
      report("bench", std::string("allocate ") + s.name, false);
      for (auto* p : As) delete p;
      for (auto* p : Bs) delete p;
      continue;
    }
    for (int q = 0; q < sets; q++) {
      if (bf16) {
        fill_random_bf16<<<1024, 256>>>(As[q]->as<uint16_t>(), s.M * s.K, g_opt.seed + 17 * q + 1);
        fill_random_bf16<<<1024, 256>>>(Bs[q]->as<uint16_t>(), s.K * s.N, g_opt.seed + 17 * q + 2);
      } else {
        fill_random_f32<<<1024, 256>>>(As[q]->as<float>(), s.M * s.K, g_opt.seed + 17 * q + 1);
        fill_random_f32<<<1024, 256>>>(Bs[q]->as<float>(), s.K * s.N, g_opt.seed + 17 * q + 2);
      }
    }
    adapters_cuda_synchronize(nullptr);
    // layouts: nn = A·B (torch.matmul), nt = A·Bᵀ (nn.Linear forward), tn = Aᵀ·B (weight gradient)
    struct L { const char* name; int ta, tb; };
    const L layouts_bf16[] = {{"nn", 0, 0}, {"nt", 0, 1}, {"tn", 1, 0}};
    const L layouts_f32[] = {{"nn", 0, 0}, {"nt", 0, 1}, {"tn", 1, 0}};
    const int nl = 3;
    for (int li = 0; li < nl; li++) {
      const L& l = bf16 ? layouts_bf16[li] : layouts_f32[li];
      const int64_t lda = l.ta ? s.M : s.K, ldb = l.tb ? s.K : s.N;
      std::vector<int> variants = {0};
      if (!bf16) variants.push_back(2);  // FFMA (torch's arithmetic with TF32 off), without the K split auto may add
      if (!bf16) variants.push_back(5);  // 3xTF32, likewise (two blocks per SM)
      if (!bf16) variants.push_back(7);  // 3xTF32, one block per SM
      if (!bf16 && g_opt.pipe) variants.push_back(9);  // 3xTF32, cp.async pipeline (once its tests passed)
      if (!bf16 && std::string(s.name).rfind("skinny", 0) == 0) variants.push_back(3);
      if (bf16) {
        // fixed kernels on the two layouts that matter most; auto on all three
        if (li < 2)
          for (int v = 1;; v++) {
            std::string n = adapters_cuda_gemm_bf16_variant_name(v);
            if (n.empty()) break;
            if (n.find("swapmn") != std::string::npos || n.find("generic") != std::string::npos) continue;
            if (n.rfind("wgmma", 0) == 0 && !has_wg) continue;
            variants.push_back(v);
          }
      }
      if (bf16) {  // bf16 output through the auto dispatch (what bf16 matmuls without f32_out run)
        DevBuf Cb((size_t)(s.M * s.N) * 2);
        auto call16 = [&](int i) -> int {
          const int q = i % sets;
          return adapters_cuda_gemm_bf16_out(l.ta, l.tb, s.M, s.N, s.K, 1.f, As[q]->as<uint16_t>(), lda, Bs[q]->as<uint16_t>(), ldb, 0.f,
                                             Cb.as<uint16_t>(), s.N, nullptr);
        };
        Timing t16;
        if (Cb.p && time_calls(call16, t16, s.M * s.N * s.K > (int64_t(1) << 38) ? 7 : 11)) {
          const int pick = adapters_cuda_gemm_bf16_pick(l.ta, l.tb, s.M, s.N, s.K, As[0]->as<uint16_t>(), lda, Bs[0]->as<uint16_t>(), ldb);
          print_bench("bf16", l.name, "auto bf16-out", pick > 0 ? adapters_cuda_gemm_bf16_variant_name(pick) : "?", s, t16, sets);
        }
      }
      for (int v : variants) {
        auto call = [&](int i) -> int {
          const int q = i % sets;
          if (bf16)
            return adapters_cuda_gemm_bf16_variant(v, l.ta, l.tb, s.M, s.N, s.K, 1.f, As[q]->as<uint16_t>(), lda,
                                                   Bs[q]->as<uint16_t>(), ldb, 0.f, C.as<float>(), s.N, nullptr);
          return adapters_cuda_gemm_f32_variant(v, l.ta, l.tb, s.M, s.N, s.K, 1.f, As[q]->as<float>(), lda, Bs[q]->as<float>(),
                                                ldb, 0.f, C.as<float>(), s.N, nullptr);
        };
        std::string vname = bf16 ? adapters_cuda_gemm_bf16_variant_name(v) : adapters_cuda_gemm_f32_variant_name(v);
        std::string kernel = vname;
        if (bf16 && v == 0) {
          const int pick = adapters_cuda_gemm_bf16_pick(l.ta, l.tb, s.M, s.N, s.K, As[0]->as<uint16_t>(), lda,
                                                        Bs[0]->as<uint16_t>(), ldb);
          kernel = pick > 0 ? adapters_cuda_gemm_bf16_variant_name(pick) : "?";
        } else if (!bf16) {
          kernel = adapters_cuda_gemm_f32_variant_name(v == 0 ? adapters_cuda_gemm_f32_pick(s.M, s.N, s.K) : v);
        }
        Timing t;
        if (!time_calls(call, t, s.M * s.N * s.K > (int64_t(1) << 38) ? 7 : 11)) {
          const int e = adapters_cuda_synchronize(nullptr);
          report("bench", std::string(bf16 ? "bf16 " : "f32 ") + vname + " " + l.name + " " + s.name, false,
                 "\"error\":" + jstr(errtxt(e)));
          if (e != 0) {  // the context is gone: nothing after this can run
            printf("{\"type\":\"summary\",\"passed\":%d,\"failed\":%d,\"skipped\":%d,\"aborted\":true}\n", g_passed,
                   g_failed, g_skipped);
            fflush(stdout);
            exit(1);
          }
          continue;
        }
        print_bench(bf16 ? "bf16" : "f32", l.name, vname, kernel, s, t, sets);
        if (v == 0 || (bf16 && std::string(vname).rfind("wgmma", 0) == 0)) {
          // the last call used input set (calls-1) % sets; recompute with set 0 to check the output
          std::string why;
          bool good = call(0) == 0 && adapters_cuda_synchronize(nullptr) == 0 &&
                      spot_check(s, l.ta, l.tb, As[0]->p, Bs[0]->p, C.as<float>(), bf16, bf16 ? 1e-3 : 1e-4, why);
          report(bf16 ? (v == 0 ? "bf16" : "wgmma") : "f32",
                 std::string("spot check ") + (bf16 ? "bf16 " : "f32 ") + vname + " " + l.name + " " + s.name, good,
                 "\"detail\":" + jstr(why));
        }
      }
    }
    for (auto* p : As) delete p;
    for (auto* p : Bs) delete p;
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool tests_flag = false, bench_flag = false;
  g_opt.seed = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--tests") tests_flag = true;
    else if (a == "--bench") bench_flag = true;
    else if (a == "--quick") g_opt.quick = true;
    else if (a == "--no-wgmma") g_opt.wgmma = false;
    else if (a == "--no-pipe") g_opt.pipe = false;
    else if (a == "--probe") g_opt.probe = true;
    else if (a.rfind("--seed=", 0) == 0) g_opt.seed = strtoull(a.c_str() + 7, nullptr, 10);
    else if (a.rfind("--only=", 0) == 0) {
      std::string l = a.substr(7);
      size_t p = 0;
      while (p <= l.size()) {
        size_t q = l.find(',', p);
        if (q == std::string::npos) q = l.size();
        if (q > p) g_opt.only.insert(l.substr(p, q - p));
        p = q + 1;
      }
    } else {
      fprintf(stderr, "usage: %s [--tests] [--bench] [--quick] [--only=alloc,errors,copy,bf16,bf16out,f32,batched,f32pipe,adamw,wgmma] [--no-wgmma] [--no-pipe] [--probe] [--seed=N]\n", argv[0]);
      return 2;
    }
  }
  if (tests_flag || bench_flag) g_opt.tests = tests_flag, g_opt.bench = bench_flag;
  if (!g_opt.wgmma) setenv("ADAPTERS_CUDA_DISABLE_WGMMA", "1", 1);  // read by the library on first use

  const int ndev = adapters_cuda_device_count();
  if (ndev <= 0) {
    printf("{\"type\":\"summary\",\"skipped\":true,\"why\":\"no CUDA device\"}\n");
    fprintf(stderr, "no CUDA device: nothing to check (exit 77 = skipped)\n");
    return 77;
  }
  char name[256] = "?";
  adapters_cuda_device_name(0, name, sizeof name);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  printf("{\"type\":\"device\",\"name\":%s,\"cc\":\"%d.%d\",\"sms\":%d,\"l2_mb\":%.1f,\"smem_per_block_optin\":%zu,"
         "\"runtime\":%d,\"driver\":%d,\"abi\":%d,\"wgmma\":%d,\"seed\":%llu}\n",
         jstr(name).c_str(), prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0,
         prop.sharedMemPerBlockOptin, rt, drv, adapters_cuda_abi_version(), adapters_cuda_gemm_has_wgmma(),
         (unsigned long long)g_opt.seed);
  fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  if (g_opt.tests) {
    if (g_opt.want("alloc")) test_alloc();
    if (g_opt.want("copy")) test_copy();
    if (g_opt.want("errors")) test_errors();
    if (g_opt.want("adamw")) test_adamw();
    if (g_opt.want("f32")) test_gemm(false, false);
    if (g_opt.want("bf16")) test_gemm(true, false);
    if (g_opt.want("bf16out")) test_gemm_bf16_out();
    if (g_opt.want("batched")) test_gemm_f32_batched();
    if (g_opt.want("f32pipe")) test_gemm_f32_pipe();
    if (g_opt.want("wgmma") && g_opt.wgmma) test_gemm(true, true);  // last: a fault here cannot hide the rest
  }
  if (g_opt.bench) {
    if (g_opt.want("bf16") || g_opt.want("wgmma")) bench_gemm(true);
    if (g_opt.want("f32")) bench_gemm(false);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("{\"type\":\"summary\",\"passed\":%d,\"failed\":%d,\"skipped\":%d,\"seconds\":%.1f}\n", g_passed, g_failed,
         g_skipped, secs);
  fprintf(stderr, "%d passed, %d failed, %d skipped (%.1f s)\n", g_passed, g_failed, g_skipped, secs);
  return g_failed ? 1 : 0;
}
