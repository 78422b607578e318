// gemm.cpp — packed GEMM (GotoBLAS / BLIS structure) for f32 and bf16, chosen at run time.
//
//   for jc (NC columns of C)            B block  KC x NC  packed into NR-wide micro-panels
//     for pc (KC of the k dimension)
//       pack B
//       for ic (MC rows of C)           A block  MC x KC  packed into MR-tall micro-panels
//         pack A
//         for jr (NR)  for ir (MR)      micro-kernel: MR x NR block of C, held in registers over KC
//
// Kernel families (all in this file, each inside target-attributed functions; the file itself is built
// for generic x86-64):
//   f32  avx512 : 14 x 32 (28 zmm accumulators, 2 zmm of B + 1 broadcast of A per k)
//        avx2   : 6 x 16  (12 ymm accumulators)
//        scalar : 4 x 8   (plain loops)
//   bf16 amx    : 32 x 32 (2 x 2 tiles of 16 x 16 f32 in tmm0-3; A tiles tmm4-5, B tiles tmm6-7 in VNNI pairs)
//        avx512bf16: 14 x 32 with vdpbf16ps on k pairs (CPUs without AMX, e.g. AMD Zen 4/5); a bf16 A that is not
//                 transposed is read in place (its rows are k pairs already), K up to 2048 runs in one chunk
//        f32    : converts to f32 and calls sgemm
// The bf16 kernels also take f32 operands, rounded to bf16 as they are packed (autocast's mixed GEMMs), a bias added in
// the epilogue, and a bf16 result written by the epilogue.
// Transposes are absorbed by the packing routines. Edge tiles are zero-padded in the packed panels and
// written back with masks (or through a small buffer), so nothing outside A, B, C is ever touched.
// GCC 12 reports false "may be used uninitialized" warnings from inside its AVX-512 intrinsic headers (the
// _mm512_undefined_* pass-through operands of unpack / shuffle) once they are inlined into the transposes
// below; the pragma has to precede the headers to cover those locations.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "gemm.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <type_traits>
#include <vector>

#include "../bf16_simd.h"  // the cast op's rounding in registers
#include "../tensor.h"
#include "../threadpool.h"

#define AD_TGT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
#define AD_TGT_AVX2 __attribute__((target("avx2,fma")))
#define AD_TGT_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2")))
#define AD_TGT_AMX \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2,prfchw")))

#ifndef ARCH_REQ_XCOMP_PERM
#define ARCH_REQ_XCOMP_PERM 0x1023
#endif
#ifndef XFEATURE_XTILEDATA
#define XFEATURE_XTILEDATA 18
#endif

namespace ad {
namespace {

// ---------------------------------------------------------------------------------------------------------
// CPU features and ISA selection

struct CpuFeatures {
  bool avx2 = false, avx512 = false, avx512bf16 = false, amx_hw = false;
};

uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}

CpuFeatures detect_cpu() {
  CpuFeatures f;
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  unsigned a, b, c, d;
  bool osxsave = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27));
  uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf >= 7 && f.avx512) {
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = (a >> 5) & 1;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
      bool os_tiles = ((xcr0 >> 17) & 3) == 3;  // XTILECFG and XTILEDATA enabled by the OS
      f.amx_hw = amx_bf16 && amx_tile && os_tiles && f.avx512bf16;
    }
  }
  return f;
}

const CpuFeatures& cpu() {
  static const CpuFeatures f = detect_cpu();
  return f;
}

// Linux requires a per-process permission request before the first tile instruction. Thread-safe
// (function-local static); the result is cached.
bool amx_permitted() {
  static const bool ok = [] {
    if (!cpu().amx_hw) return false;
    long r = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
    return r == 0;
  }();
  return ok;
}

enum F32Isa : int { F32_SCALAR = 0, F32_AVX2 = 1, F32_AVX512 = 2, F32_AUTO = 99 };
enum B16Isa : int { B16_F32 = 0, B16_AVX512BF16 = 1, B16_AMX = 2, B16_AUTO = 99 };

std::atomic<int> g_force_f32{F32_AUTO};
std::atomic<int> g_force_b16{B16_AUTO};

int best_f32() {
  const auto& f = cpu();
  return f.avx512 ? F32_AVX512 : f.avx2 ? F32_AVX2 : F32_SCALAR;
}
int cur_f32() { return std::min(g_force_f32.load(std::memory_order_relaxed), best_f32()); }

int best_b16_no_amx() { return cpu().avx512bf16 ? B16_AVX512BF16 : B16_F32; }
int cur_b16() {
  int want = g_force_b16.load(std::memory_order_relaxed);
  if (want >= B16_AMX && amx_permitted()) return B16_AMX;
  return std::min(want, best_b16_no_amx());
}

// ---------------------------------------------------------------------------------------------------------
// Thread-local, 64-byte aligned packing buffers (grown on demand, freed at thread exit)

struct AlignedBuf {
  void* p = nullptr;
  size_t cap = 0;
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { std::free(p); }
  template <class T>
  T* get(size_t n) {
    size_t bytes = (n * sizeof(T) + 63) & ~size_t(63);
    if (bytes == 0) bytes = 64;
    if (bytes > cap) {
      std::free(p);
      p = std::aligned_alloc(64, bytes);
      if (!p) {
        cap = 0;
        throw std::bad_alloc();
      }
      cap = bytes;
    }
    return static_cast<T*>(p);
  }
};

thread_local AlignedBuf tl_apack;
thread_local AlignedBuf tl_bpack;
thread_local AlignedBuf tl_wbuf;

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t rup(int64_t a, int64_t b) { return cdiv(a, b) * b; }

inline uint32_t ld32(const uint16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float bf16f(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class T>
struct Args {
  bool transA, transB;
  int64_t M, N, K;
  float alpha;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
  // bf16 kernels (AMX, AVX512-BF16) only: A / B really hold f32, rounded to bf16 as they are packed (mgemm)
  bool a32 = false, b32 = false;
  // with alpha == 1 and beta == 0: C = A·B + bias[j] (bias indexed by C's column); f32 kernels through sgemm_bias
  const float* bias = nullptr;
  // bf16 kernels only, with beta == 0: the result is written as bf16 here (rounded as the cast op rounds) and C is null
  uint16_t* C16 = nullptr;
};

// C = beta * C on an M x N block (used when K == 0 or alpha == 0).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    if (beta == 0.0f)
      for (int64_t j = 0; j < N; j++) c[j] = 0.0f;
    else if (beta != 1.0f)
      for (int64_t j = 0; j < N; j++) c[j] *= beta;
  }
}

// ---------------------------------------------------------------------------------------------------------
// f32 packing (generic code: O(MK + KN) work against O(MNK) flops)
//   A micro-panel (mr rows, mr <= MR): element (i, k) at k * mr + i.   Panel ir starts at ir * kc.
//   B micro-panel (NR cols, zero-padded): element (k, j) at k * NR + j. Panel jr starts at jr * kc.

template <int MR>
void pack_a_f32(bool transA, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
                float* dst) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = (int)std::min<int64_t>(MR, mc - ir);
    float* d = dst + ir * kc;
    if (!transA) {
      for (int i = 0; i < mr; i++) {
        const float* s = A + (i0 + ir + i) * lda + k0;
        for (int64_t k = 0; k < kc; k++) d[k * mr + i] = s[k];
      }
    } else {
      for (int64_t k = 0; k < kc; k++) {
        const float* s = A + (k0 + k) * lda + i0 + ir;
        for (int i = 0; i < mr; i++) d[k * mr + i] = s[i];
      }
    }
  }
}

template <int NR>
void pack_b_f32(bool transB, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                float* dst) {
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int nr = (int)std::min<int64_t>(NR, nc - jr);
    float* d = dst + jr * kc;
    if (!transB) {
      for (int64_t k = 0; k < kc; k++) {
        const float* s = B + (k0 + k) * ldb + j0 + jr;
        float* dk = d + k * NR;
        for (int j = 0; j < nr; j++) dk[j] = s[j];
        for (int j = nr; j < NR; j++) dk[j] = 0.0f;
      }
    } else {
      for (int j = 0; j < nr; j++) {
        const float* s = B + (j0 + jr + j) * ldb + k0;
        for (int64_t k = 0; k < kc; k++) d[k * NR + j] = s[k];
      }
      if (nr < NR)
        for (int64_t k = 0; k < kc; k++)
          for (int j = nr; j < NR; j++) d[k * NR + j] = 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// f32 micro-kernels. Signature: (kc, packed A panel, packed B panel, C, ldc, mr, nr, alpha, beta).
// beta == 0: C is write-only.

using KernF32 = void (*)(int64_t, const float*, const float*, float*, int64_t, int, int, float, float);

// --- scalar 4 x 8
constexpr int SC_MR = 4, SC_NR = 8;
void ukr_f32_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, float alpha,
                    float beta) {
  float acc[SC_MR][SC_NR] = {};
  if (mr == SC_MR) {
    for (int64_t k = 0; k < kc; k++, a += SC_MR, b += SC_NR)
      for (int i = 0; i < SC_MR; i++)
        for (int j = 0; j < SC_NR; j++) acc[i][j] += a[i] * b[j];
  } else {
    for (int64_t k = 0; k < kc; k++, a += mr, b += SC_NR)
      for (int i = 0; i < mr; i++)
        for (int j = 0; j < SC_NR; j++) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < mr; i++) {
    float* ci = c + i * ldc;
    for (int j = 0; j < nr; j++) ci[j] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * ci[j];
  }
}

// --- AVX2 6 x 16
constexpr int V2_MR = 6, V2_NR = 16;
// Epilogue for one 16-wide C row (nr <= 16 live): c = alpha·acc + beta·c, each rounding an explicit instruction (the edge
// columns' too: std::fma), so that every inlined copy (the packed kernel, gemv) gives the same bits.
AD_TGT_AVX2 inline void store_row16_avx2(float* c, __m256 acc0, __m256 acc1, int nr, float alpha, float beta) {
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  __m256 r0 = _mm256_mul_ps(va, acc0), r1 = _mm256_mul_ps(va, acc1);
  if (nr == V2_NR) {
    if (beta != 0.0f) {
      r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), r0);
      r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8), r1);
    }
    _mm256_storeu_ps(c, r0);
    _mm256_storeu_ps(c + 8, r1);
    return;
  }
  alignas(32) float tmp[V2_NR];
  _mm256_store_ps(tmp, r0);
  _mm256_store_ps(tmp + 8, r1);
  for (int j = 0; j < nr; j++) c[j] = beta == 0.0f ? tmp[j] : std::fma(beta, c[j], tmp[j]);
}
template <int MRt>
AD_TGT_AVX2 void ukr_f32_avx2_t(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int nr,
                                float alpha, float beta) {
  __m256 acc0[MRt], acc1[MRt];
#pragma GCC unroll 8
  for (int i = 0; i < MRt; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MRt; i++) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
    }
    a += MRt;
    b += V2_NR;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MRt; i++) store_row16_avx2(c + i * ldc, acc0[i], acc1[i], nr, alpha, beta);
}

template <int MRt>
void ukr_f32_avx2_w(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, float alpha,
                    float beta) {
  (void)mr;
  ukr_f32_avx2_t<MRt>(kc, a, b, c, ldc, nr, alpha, beta);
}
const KernF32 kAvx2Kernels[V2_MR + 1] = {nullptr,
                                         ukr_f32_avx2_w<1>,
                                         ukr_f32_avx2_w<2>,
                                         ukr_f32_avx2_w<3>,
                                         ukr_f32_avx2_w<4>,
                                         ukr_f32_avx2_w<5>,
                                         ukr_f32_avx2_w<6>};
void ukr_f32_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, float alpha,
                  float beta) {
  kAvx2Kernels[mr](kc, a, b, c, ldc, mr, nr, alpha, beta);
}

// --- AVX-512 14 x 32 (NV = 1: only the first 16 columns are live, for narrow edge tiles)
constexpr int V5_MR = 14, V5_NR = 32;
// packed A panels of this kernel keep a stride of 16 floats per k (rows 14, 15 are zero): the packing then
// writes whole aligned cache lines instead of 56-byte stores that straddle lines
constexpr int V5_AS = 16;
// software prefetch distances (elements) in the packed A / B streams of the AVX-512 kernel
constexpr int kPfA = V5_AS * 12, kPfB = 32 * 6;

// 16 x 16 transpose of 32-bit elements: on return r[j] holds what was column j (element i = old r[i][j]).
AD_TGT_AVX512 inline void transpose16x16_epi32(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + c], 128-bit lane l: rows 4i..4i+3 of column 4l + c
  __m512i u[16];
  for (int i = 0; i < 4; i++) {
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; c++) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xDD);
    const __m512i w0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88),
                  w1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_i32x4(v0, w0, 0x88);
    r[8 + c] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
    r[4 + c] = _mm512_shuffle_i32x4(v1, w1, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
  }
}

inline __mmask32 mask32(int64_t n) {
  return n >= 32 ? (__mmask32)0xFFFFFFFFu : n <= 0 ? (__mmask32)0 : (__mmask32)((1u << n) - 1);
}
inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}


// AVX-512 packing for the 14 x 32 f32 kernel (same layouts as pack_a_f32 / pack_b_f32).
AD_TGT_AVX512 void pack_a_f32_avx512(bool transA, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0,
                                     int64_t kc, float* dst) {
  constexpr int MR = 14;
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = (int)std::min<int64_t>(MR, mc - ir);
    float* d = dst + (ir / MR) * V5_AS * kc;  // panels padded to 16 rows: every store is one aligned line
    const __mmask16 mm = mask16(mr);
    if (transA) {
      for (int64_t k = 0; k < kc; k++)
        _mm512_store_ps(d + k * V5_AS, _mm512_maskz_loadu_ps(mm, A + (k0 + k) * lda + i0 + ir));
      continue;
    }
    // rows of A -> [k][i]: transpose 16 (rows, mr used) x 16 (k) blocks
    for (int64_t kb = 0; kb < kc; kb += 16) {
      const int kn = (int)std::min<int64_t>(16, kc - kb);
      const __mmask16 mk = mask16(kn);
      __m512i r[16];
      for (int i = 0; i < 16; i++)
        r[i] = i < mr ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, A + (i0 + ir + i) * lda + k0 + kb))
                      : _mm512_setzero_si512();
      transpose16x16_epi32(r);
      for (int k = 0; k < kn; k++) _mm512_store_ps(d + (kb + k) * V5_AS, _mm512_castsi512_ps(r[k]));
    }
  }
}

AD_TGT_AVX512 void pack_b_f32_avx512(bool transB, const float* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0,
                                     int64_t nc, float* dst) {
  constexpr int NR = 32;
  if (!transB) {
    // 8 panels at a time, so that each row of B is read 1 KiB at a stretch: a panel at a time read 128 bytes per
    // row, 2x slower (1.6 vs 0.8 cycles per element; 1-2% of an NN GEMM)
    for (int64_t jb = 0; jb < nc; jb += 8 * NR)
      for (int64_t k = 0; k < kc; k++) {
        const float* s = B + (k0 + k) * ldb + j0;
        for (int64_t jr = jb; jr < std::min<int64_t>(nc, jb + 8 * NR); jr += NR) {
          const int64_t nr = nc - jr;
          float* d = dst + jr * kc + k * NR;
          _mm512_store_ps(d, _mm512_maskz_loadu_ps(mask16(nr), s + jr));
          _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(mask16(nr - 16), s + jr + 16));
        }
      }
    return;
  }
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int nr = (int)std::min<int64_t>(NR, nc - jr);
    float* d = dst + jr * kc;
    // B(k, j) = B[j * ldb + k]: transpose 16 (j) x 16 (k) blocks
    for (int64_t kb = 0; kb < kc; kb += 16) {
      const int kn = (int)std::min<int64_t>(16, kc - kb);
      const __mmask16 mk = mask16(kn);
      for (int h = 0; h < 2; h++) {
        __m512i r[16];
        for (int c = 0; c < 16; c++) {
          const int j = h * 16 + c;
          r[c] = j < nr ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, B + (j0 + jr + j) * ldb + k0 + kb))
                        : _mm512_setzero_si512();
        }
        transpose16x16_epi32(r);
        for (int k = 0; k < kn; k++) _mm512_store_ps(d + (kb + k) * NR + h * 16, _mm512_castsi512_ps(r[k]));
      }
    }
  }
}

AD_TGT_AVX512 inline __mmask16 col_mask(int n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// Epilogue for one 16-wide vector of a C row: c = alpha * acc + beta * c under a column mask. Every rounding step is
// an explicit instruction (alpha·acc + c as one FMA), so the compiler's choice to contract a multiply and an add cannot
// differ between the places this is inlined: the packed kernels and the small-M path give the same bits.
AD_TGT_AVX512 inline void store_row16(float* c, __m512 acc, __mmask16 m, bool full, __m512 va, __m512 vb,
                                      float beta) {
  const __m512 c0 = beta == 0.0f ? _mm512_setzero_ps() : full ? _mm512_loadu_ps(c) : _mm512_maskz_loadu_ps(m, c);
  __m512 r;
  if (beta == 0.0f)
    r = _mm512_mul_ps(va, acc);
  else if (beta == 1.0f)
    r = _mm512_fmadd_ps(va, acc, c0);
  else
    r = _mm512_fmadd_ps(vb, c0, _mm512_mul_ps(va, acc));
  if (full)
    _mm512_storeu_ps(c, r);
  else
    _mm512_mask_storeu_ps(c, m, r);
}

// DA: A read in place (not transposed, rows lda apart) instead of from a packed panel (rows 1 apart, V5_AS per k).
// ldb: the distance between B's k rows (V5_NR in a packed panel; B's row stride when it is read in place, as whole
// 32-column panels). Either way each output sums its products in the same order, so the results are the same bits.
template <int MRt, int NV, bool DA>
AD_TGT_AVX512 void ukr_f32_avx512_t(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, int64_t ldb,
                                    float* c, int64_t ldc, int nr, float alpha, float beta) {
  __m512 acc0[MRt], acc1[MRt];
#pragma GCC unroll 16
  for (int i = 0; i < MRt; i++) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
#pragma GCC unroll 16
  for (int i = 0; i < MRt; i++) {
    _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
    if (NV > 1) _mm_prefetch((const char*)(c + i * ldc + 16), _MM_HINT_T0);
  }
  const int64_t pfb = kPfB / V5_NR * ldb;
  for (int64_t k = 0; k < kc; k++) {
    if (!DA) _mm_prefetch((const char*)(a + kPfA), _MM_HINT_T0);
    _mm_prefetch((const char*)(b + pfb), _MM_HINT_T0);
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = NV > 1 ? _mm512_loadu_ps(b + 16) : b0;
#pragma GCC unroll 16
    for (int i = 0; i < MRt; i++) {
      const __m512 ai = _mm512_set1_ps(DA ? a[i * lda] : a[i]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      if (NV > 1) acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
    a += DA ? 1 : V5_AS;
    b += ldb;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const bool full = nr == NV * 16;
  const __mmask16 m0 = col_mask(nr), m1 = col_mask(nr - 16);
#pragma GCC unroll 16
  for (int i = 0; i < MRt; i++) {
    float* ci = c + i * ldc;
    store_row16(ci, acc0[i], m0, full, va, vb, beta);
    if (NV > 1) store_row16(ci + 16, acc1[i], m1, full, va, vb, beta);
  }
}

template <int MRt>
void ukr_f32_avx512_w(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
                      float alpha, float beta) {
  (void)mr;
  if (nr > 16)
    ukr_f32_avx512_t<MRt, 2, false>(kc, a, 0, b, V5_NR, c, ldc, nr, alpha, beta);
  else
    ukr_f32_avx512_t<MRt, 1, false>(kc, a, 0, b, V5_NR, c, ldc, nr, alpha, beta);
}
const KernF32 kAvx512Kernels[V5_MR + 1] = {
    nullptr,                 ukr_f32_avx512_w<1>,  ukr_f32_avx512_w<2>,  ukr_f32_avx512_w<3>,
    ukr_f32_avx512_w<4>,     ukr_f32_avx512_w<5>,  ukr_f32_avx512_w<6>,  ukr_f32_avx512_w<7>,
    ukr_f32_avx512_w<8>,     ukr_f32_avx512_w<9>,  ukr_f32_avx512_w<10>, ukr_f32_avx512_w<11>,
    ukr_f32_avx512_w<12>,    ukr_f32_avx512_w<13>, ukr_f32_avx512_w<14>};
void ukr_f32_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, float alpha,
                    float beta) {
  kAvx512Kernels[mr](kc, a, b, c, ldc, mr, nr, alpha, beta);
}
// Both operands read in place: A not transposed (rows lda apart), B not transposed (rows ldb apart), a full 32-column tile.
using KernF32Direct = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, int, float, float);
template <int MRt>
void ukr_f32_avx512_d(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int nr,
                      float alpha, float beta) {
  ukr_f32_avx512_t<MRt, 2, true>(kc, a, lda, b, ldb, c, ldc, nr, alpha, beta);
}
const KernF32Direct kAvx512DirectKernels[V5_MR + 1] = {
    nullptr,                 ukr_f32_avx512_d<1>,  ukr_f32_avx512_d<2>,  ukr_f32_avx512_d<3>,
    ukr_f32_avx512_d<4>,     ukr_f32_avx512_d<5>,  ukr_f32_avx512_d<6>,  ukr_f32_avx512_d<7>,
    ukr_f32_avx512_d<8>,     ukr_f32_avx512_d<9>,  ukr_f32_avx512_d<10>, ukr_f32_avx512_d<11>,
    ukr_f32_avx512_d<12>,    ukr_f32_avx512_d<13>, ukr_f32_avx512_d<14>};

// ---------------------------------------------------------------------------------------------------------
// Kernel traits for the blocked driver.
//   T: input element type. KG: k granularity of the packed panels (K padded with zeros to a multiple).
//   AS: rows per A panel as stored (>= MR; padding rows are zero). The panel of rows ir.. starts at
//   Ap + (ir / MR) * AS * kcp, B panel jr at Bp + jr * kcp (kcp = kc rounded up to KG).

struct F32Scalar {
  using T = float;
  static constexpr int MR = SC_MR, NR = SC_NR, KG = 1, AS = MR;
  static constexpr int64_t KC = 256, MC = 128, NC = 2048;
  static constexpr double kMacsPerCycle = 4;
  static constexpr double kPackB = 1;  // relative cost of packing an element of B (partition)
  static constexpr bool kAInL1 = false;
  static constexpr double kParMacs = 1 << 20;  // below this many multiply-adds: calling thread only
  static void pack_a(bool t, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* d) {
    pack_a_f32<MR>(t, A, lda, i0, mc, k0, kc, d);
  }
  static void pack_b(bool t, const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* d) {
    pack_b_f32<NR>(t, B, ldb, k0, kc, j0, nc, d);
  }
  static void kernel(int64_t kcp, const T* a, const T* b, float* c, int64_t ldc, int mr, int nr, float al,
                     float be) {
    ukr_f32_scalar(kcp, a, b, c, ldc, mr, nr, al, be);
  }
  static void begin() {}
  static void end() {}
};

struct F32Avx2 {
  using T = float;
  static constexpr int MR = V2_MR, NR = V2_NR, KG = 1, AS = MR;
  static constexpr int64_t KC = 256, MC = 144, NC = 4096;
  static constexpr double kMacsPerCycle = 16;
  static constexpr double kPackB = 1;  // relative cost of packing an element of B (partition)
  static constexpr bool kAInL1 = false;
  static constexpr double kParMacs = 1 << 21;  // below this many multiply-adds: calling thread only
  static void pack_a(bool t, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* d) {
    pack_a_f32<MR>(t, A, lda, i0, mc, k0, kc, d);
  }
  static void pack_b(bool t, const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* d) {
    pack_b_f32<NR>(t, B, ldb, k0, kc, j0, nc, d);
  }
  static void kernel(int64_t kcp, const T* a, const T* b, float* c, int64_t ldc, int mr, int nr, float al,
                     float be) {
    ukr_f32_avx2(kcp, a, b, c, ldc, mr, nr, al, be);
  }
  static void begin() {}
  static void end() {}
};

struct F32Avx512 {
  using T = float;
  static constexpr int MR = V5_MR, NR = V5_NR, KG = 1, AS = V5_AS;
  static constexpr int64_t KC = 256, MC = 14 * 24, NC = 1024;
  static constexpr double kMacsPerCycle = 32;
  static constexpr double kPackB = 1;  // relative cost of packing an element of B (partition)
  static constexpr bool kAInL1 = true;
  static constexpr double kParMacs = 6e6;  // below this many multiply-adds: calling thread only
  static void pack_a(bool t, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* d) {
    pack_a_f32_avx512(t, A, lda, i0, mc, k0, kc, d);
  }
  static void pack_b(bool t, const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc, T* d) {
    pack_b_f32_avx512(t, B, ldb, k0, kc, j0, nc, d);
  }
  static void kernel(int64_t kcp, const T* a, const T* b, float* c, int64_t ldc, int mr, int nr, float al,
                     float be) {
    ukr_f32_avx512(kcp, a, b, c, ldc, mr, nr, al, be);
  }
  static void begin() {}
  static void end() {}
};

// ---------------------------------------------------------------------------------------------------------
// bf16 AVX512-BF16 (CPUs without AMX, e.g. AMD Zen 4/5): 14 x 32, vdpbf16ps on k pairs.
//   A panel (14 rows, stored as 16): pair (i, kp) = {A(i,2kp), A(i,2kp+1)} at 2 * (kp * 16 + i), so each k pair is one
//   aligned 64-byte line (rows 14, 15 and rows past mr are zero). Panel ir starts at (ir / 14) * 16 * kcp.
//   B panel (32 cols, zero-padded): pair (kp, j) = {B(2kp,j), B(2kp+1,j)} at 2 * (kp * 32 + j).
// The packers read bf16 or f32 (rounded as it is packed, as the cast op rounds: mixed precision without a bf16 copy).
// The micro-kernel keeps its speed with both panels streaming from L2 (measured on Zen 5: ~530 GFLOP/s per thread
// with A and B re-read from 250-770 KiB, the register-only vdpbf16ps loop's rate), so no L1 blocking is needed.

// An operand of the bf16 packers (AMX and AVX512-BF16): bf16 bits, or f32 that is rounded to bf16 as it is packed (mixed precision
// without a separate cast pass). The rounding is the cast op's (round to nearest even, NaN kept quiet), so
// the packed panels hold the same bits either way. Indices are in elements.
struct B16Src {
  const void* p;
  bool f32;
  B16Src(const uint16_t* h) : p(h), f32(false) {}  // NOLINT: a bf16 pointer is the common case
  B16Src(const void* q, bool is_f32) : p(q), f32(is_f32) {}
};

// Elements [i, i + 16) (lanes outside m read as 0).
AD_TGT_BF16 inline __m256i load16(B16Src s, int64_t i, __mmask16 m) {
  if (!s.f32) return _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(s.p) + i);
  return bf16_round16_isa(_mm512_maskz_loadu_ps(m, static_cast<const float*>(s.p) + i));
}
// Elements [i, i + 32) (lanes outside m read as 0).
AD_TGT_BF16 inline __m512i load32(B16Src s, int64_t i, __mmask32 m) {
  if (!s.f32) return _mm512_maskz_loadu_epi16(m, static_cast<const uint16_t*>(s.p) + i);
  const float* f = static_cast<const float*>(s.p) + i;
  return bf16_round32_isa(_mm512_maskz_loadu_ps((__mmask16)(m & 0xFFFF), f), _mm512_maskz_loadu_ps((__mmask16)(m >> 16), f + 16));
}

// Interleaves two rows of 32 bf16 into k pairs: out_lo = pairs of columns 0..15, out_hi = 16..31.
AD_TGT_AVX512 inline void interleave32(__m512i x0, __m512i x1, uint16_t* out_lo, uint16_t* out_hi) {
  const __m512i idx_lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38,
                                          6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i idx_hi = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24, 55, 23,
                                          54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
  _mm512_storeu_si512(out_lo, _mm512_permutex2var_epi16(x0, idx_lo, x1));
  _mm512_storeu_si512(out_hi, _mm512_permutex2var_epi16(x0, idx_hi, x1));
}

// A panels: rows of A -> [k pair][row]. Non-transposed A holds k pairs as 32-bit units along each row, so a 16 x 16
// transpose of those units makes 16 pair lines at a time; a transposed A interleaves two k rows.
AD_TGT_BF16 void pack_a_b16(bool transA, B16Src A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
                            uint16_t* dst) {
  constexpr int MR = V5_MR, AS = V5_AS;
  const int64_t kcp = rup(kc, 2);
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = (int)std::min<int64_t>(MR, mc - ir);
    uint16_t* d = dst + (ir / MR) * AS * kcp;
    if (transA) {
      const __mmask16 m = mask16(mr);
      for (int64_t p = 0; 2 * p < kc; p++) {
        const int64_t k = k0 + 2 * p;
        const __m512i lo = _mm512_cvtepu16_epi32(load16(A, k * lda + i0 + ir, m));
        const __m512i hi = 2 * p + 1 < kc ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(load16(A, (k + 1) * lda + i0 + ir, m)), 16)
                                          : _mm512_setzero_si512();
        _mm512_store_si512(d + p * 2 * AS, _mm512_or_si512(lo, hi));
      }
      continue;
    }
    for (int64_t kb = 0; kb < kc; kb += 32) {
      const int64_t kn = std::min<int64_t>(32, kc - kb);
      const __mmask32 mk = mask32(kn);
      __m512i r[16];
      for (int i = 0; i < 16; i++) r[i] = i < mr ? load32(A, (i0 + ir + i) * lda + k0 + kb, mk) : _mm512_setzero_si512();
      transpose16x16_epi32(r);
      const int np = (int)cdiv(kn, 2);
      for (int p = 0; p < np; p++) _mm512_store_si512(d + (kb / 2 + p) * 2 * AS, r[p]);
    }
  }
}

// B panels: [k pair][32 columns]. Non-transposed B interleaves two k rows; a transposed B holds k pairs as 32-bit units
// along each of its rows (columns of op(B)), transposed 16 x 16 at a time.
AD_TGT_BF16 void pack_b_b16(bool transB, B16Src B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                            uint16_t* dst) {
  const int64_t kcp = rup(kc, 2);
  for (int64_t jr = 0; jr < nc; jr += 32) {
    const int nr = (int)std::min<int64_t>(32, nc - jr);
    uint16_t* d = dst + jr * kcp;
    if (!transB) {
      const __mmask32 m = mask32(nr);
      for (int64_t p = 0; 2 * p < kc; p++) {
        const int64_t k = k0 + 2 * p;
        const __m512i x0 = load32(B, k * ldb + j0 + jr, m);
        const __m512i x1 = 2 * p + 1 < kc ? load32(B, (k + 1) * ldb + j0 + jr, m) : _mm512_setzero_si512();
        interleave32(x0, x1, d + p * 64, d + p * 64 + 32);
      }
      continue;
    }
    for (int h = 0; h < 2; h++) {
      for (int64_t kb = 0; kb < kc; kb += 32) {
        const int64_t kn = std::min<int64_t>(32, kc - kb);
        const __mmask32 mk = mask32(kn);
        __m512i r[16];
        for (int c = 0; c < 16; c++) {
          const int j = h * 16 + c;
          r[c] = j < nr ? load32(B, (j0 + jr + j) * ldb + k0 + kb, mk) : _mm512_setzero_si512();
        }
        transpose16x16_epi32(r);
        const int np = (int)cdiv(kn, 2);
        for (int p = 0; p < np; p++) _mm512_store_si512(d + (kb / 2 + p) * 64 + h * 32, r[p]);
      }
    }
  }
}

// C (f32, c = alpha·acc [+ bias] + beta·c) or, with c16, the bf16 result alpha·acc [+ bias] rounded as the cast op rounds
// (bias: the nr floats of this tile's columns, or null).
// lda = 0: a is a packed panel; else a points into A itself (bf16, not transposed, rows lda apart, K even), whose k pairs
// are 32-bit units along each row already.
template <int MRt, int NV>
AD_TGT_BF16 void ukr_bf16_avx512_t(int64_t kcp, const uint16_t* __restrict a, int64_t lda, const uint16_t* __restrict b,
                                   float* c, uint16_t* c16, int64_t ldc, int nr, float alpha, float beta, const float* bias) {
  __m512 acc0[MRt], acc1[MRt];
#pragma GCC unroll 16
  for (int i = 0; i < MRt; i++) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  const int64_t np = kcp / 2;
  if (lda) {
    for (int64_t p = 0; p < np; p++) {
      const __m512bh b0 = (__m512bh)_mm512_load_si512(b);
      const __m512bh b1 = (__m512bh)(NV > 1 ? _mm512_load_si512(b + 32) : _mm512_setzero_si512());
#pragma GCC unroll 16
      for (int i = 0; i < MRt; i++) {
        const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ld32(a + i * lda + 2 * p));
        acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
        if (NV > 1) acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
      }
      b += 64;
    }
  } else {
    for (int64_t p = 0; p < np; p++) {
      const __m512bh b0 = (__m512bh)_mm512_load_si512(b);
      const __m512bh b1 = (__m512bh)(NV > 1 ? _mm512_load_si512(b + 32) : _mm512_setzero_si512());
#pragma GCC unroll 16
      for (int i = 0; i < MRt; i++) {
        const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ld32(a + 2 * i));
        acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
        if (NV > 1) acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
      }
      a += 2 * V5_AS;
      b += 64;
    }
  }
  const bool full = nr == NV * 16;
  const __mmask16 m0 = col_mask(nr), m1 = col_mask(nr - 16);
  if (bias) {  // alpha·acc + bias, then C as usual with alpha 1
    const __m512 va = _mm512_set1_ps(alpha), bb0 = _mm512_maskz_loadu_ps(m0, bias), bb1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MRt; i++) {
      acc0[i] = _mm512_fmadd_ps(va, acc0[i], bb0);
      acc1[i] = _mm512_fmadd_ps(va, acc1[i], bb1);
    }
    alpha = 1.0f;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (c16) {
    if (alpha != 1.0f)
#pragma GCC unroll 16
      for (int i = 0; i < MRt; i++) {
        acc0[i] = _mm512_mul_ps(va, acc0[i]);
        acc1[i] = _mm512_mul_ps(va, acc1[i]);
      }
#pragma GCC unroll 16
    for (int i = 0; i < MRt; i++) {
      uint16_t* ci = c16 + i * ldc;
      // both halves of a row in one conversion and one store
      if (NV > 1)
        _mm512_mask_storeu_epi16(ci, mask32(nr), bf16_round32_isa(acc0[i], acc1[i]));
      else
        _mm256_mask_storeu_epi16(ci, m0, bf16_round16_isa(acc0[i]));
    }
    return;
  }
#pragma GCC unroll 16
  for (int i = 0; i < MRt; i++) {
    float* ci = c + i * ldc;
    store_row16(ci, acc0[i], m0, full, va, vb, beta);
    if (NV > 1) store_row16(ci + 16, acc1[i], m1, full, va, vb, beta);
  }
}

using KernB16 = void (*)(int64_t, const uint16_t*, int64_t, const uint16_t*, float*, uint16_t*, int64_t, int, float, float,
                         const float*);
template <int MRt>
void ukr_bf16_avx512_w(int64_t kcp, const uint16_t* a, int64_t lda, const uint16_t* b, float* c, uint16_t* c16, int64_t ldc,
                       int nr, float alpha, float beta, const float* bias) {
  if (nr > 16)
    ukr_bf16_avx512_t<MRt, 2>(kcp, a, lda, b, c, c16, ldc, nr, alpha, beta, bias);
  else
    ukr_bf16_avx512_t<MRt, 1>(kcp, a, lda, b, c, c16, ldc, nr, alpha, beta, bias);
}
const KernB16 kBf16Kernels[V5_MR + 1] = {
    nullptr,                  ukr_bf16_avx512_w<1>,  ukr_bf16_avx512_w<2>,  ukr_bf16_avx512_w<3>,
    ukr_bf16_avx512_w<4>,     ukr_bf16_avx512_w<5>,  ukr_bf16_avx512_w<6>,  ukr_bf16_avx512_w<7>,
    ukr_bf16_avx512_w<8>,     ukr_bf16_avx512_w<9>,  ukr_bf16_avx512_w<10>, ukr_bf16_avx512_w<11>,
    ukr_bf16_avx512_w<12>,    ukr_bf16_avx512_w<13>, ukr_bf16_avx512_w<14>};

// Traits for partition / gemm_run / gemm_batched_run; the blocked loops are gemm_block<B16Avx512> below (they take
// the bf16 / f32 operand sources and the bf16 result, which the generic driver does not).
struct B16Avx512 {
  using T = uint16_t;
  static constexpr int MR = V5_MR, NR = 32, KG = 2, AS = V5_AS;
  // K up to KC runs in one chunk (no C read-modify-write passes; the bias joins in the epilogue). Zen 5, autocast shapes:
  // KC 512 -> 2048 1.0-1.1x (2048^3 1.07-1.15x); 4096 no better
  static constexpr int64_t KC = 2048, MC = 14 * 12, NC = 4096;
  static constexpr double kMacsPerCycle = 64;
  // B is mostly a weight matrix read cold from memory (f32 under autocast), A activations just written (in L3): weighing
  // B's packing double makes BERT's GEMMs split columns, each thread packing half of B (Zen 5: 3% on a training step's
  // GEMMs)
  static constexpr double kPackB = 2;
  static constexpr double kParMacs = 8e6;  // below this many multiply-adds: calling thread only
  static void begin() {}
  static void end() {}
};

// ---------------------------------------------------------------------------------------------------------
// bf16 AMX: 32 x 32 block of C = 2 x 2 tiles (tmm0..3), A tiles tmm4/5, B tiles tmm6/7; k steps of 32.
//   A panel (32 rows, zero-padded): per k step s, two tiles [half h][row r][32 k] at s*1024 + h*512 + r*32.
//   B panel (32 cols, zero-padded): per k step s, two tiles [half h][kpair p][col 16][2] at
//     s*1024 + h*512 + p*32 + col*2.

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

AD_TGT_AMX void amx_begin() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; t++) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  // inline asm rather than _tile_loadconfig: GCC 12 drops the stores to cfg before the builtin (it does not
  // model ldtilecfg as reading memory), leaving an all-zero config and a #UD on the first tile instruction.
  __asm__ volatile("ldtilecfg %0" ::"m"(cfg) : "memory");
}
AD_TGT_AMX void amx_end() { _tile_release(); }

// The micro-kernel's k step (ukr_amx's tile loads and products) over ns k steps of packed panels (1024 elements of A
// and of B each), repeated reps times; loads false: the products alone, on tiles loaded once (amx_peak).
AD_TGT_AMX void amx_steps(const uint16_t* a, const uint16_t* b, int64_t ns, int64_t reps, bool loads) {
  amx_begin();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, a, 64);
  _tile_loadd(5, a + 512, 64);
  _tile_loadd(6, b, 64);
  _tile_loadd(7, b + 512, 64);
  for (int64_t r = 0; r < reps; r++)
    for (int64_t s = 0; s < ns; s++) {
      if (loads) {  // in ukr_amx's order
        _tile_loadd(4, a + s * 1024, 64);
        _tile_loadd(6, b + s * 1024, 64);
        _tile_loadd(5, a + s * 1024 + 512, 64);
        _tile_loadd(7, b + s * 1024 + 512, 64);
      }
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  amx_end();
}

AD_TGT_BF16 void pack_a_amx(bool transA, B16Src A, int64_t lda, int64_t i0, int64_t mc, int64_t k0,
                              int64_t kc, uint16_t* dst) {
  const int64_t kcp = rup(kc, 32), ns = kcp / 32;
  for (int64_t ir = 0; ir < mc; ir += 32) {
    const int mr = (int)std::min<int64_t>(32, mc - ir);
    uint16_t* d = dst + ir * kcp;
    if (!transA) {
      // row by row, so that each source row is read sequentially
      for (int r = 0; r < 32; r++) {
        uint16_t* dr = d + (r >> 4) * 512 + (r & 15) * 32;  // [h][r][k] with h*512 + r*32 == (h*16 + r)*32
        if (r >= mr) {
          for (int64_t s = 0; s < ns; s++) _mm512_store_si512(dr + s * 1024, _mm512_setzero_si512());
          continue;
        }
        const int64_t src = (i0 + ir + r) * lda + k0;
        for (int64_t s = 0; s < ns; s++) _mm512_store_si512(dr + s * 1024, load32(A, src + s * 32, mask32(kc - s * 32)));
      }
    } else {
      // A(i, k) = A[k * lda + i]: per half tile, build 16 k-pair rows of 16 (i) dwords, then transpose.
      for (int64_t s = 0; s < ns; s++) {
        for (int h = 0; h < 2; h++) {
          const __mmask16 mi = mask16(mr - h * 16);
          __m512i r[16];
          for (int p = 0; p < 16; p++) {
            const int64_t k = s * 32 + 2 * p;
            const int64_t s0 = (k0 + k) * lda + i0 + ir + h * 16;
            const __m256i x0 = k < kc ? load16(A, s0, mi) : _mm256_setzero_si256();
            const __m256i x1 = k + 1 < kc ? load16(A, s0 + lda, mi) : _mm256_setzero_si256();
            r[p] = _mm512_or_si512(_mm512_cvtepu16_epi32(x0), _mm512_slli_epi32(_mm512_cvtepu16_epi32(x1), 16));
          }
          transpose16x16_epi32(r);
          uint16_t* ds = d + s * 1024 + h * 512;
          for (int i = 0; i < 16; i++) _mm512_store_si512(ds + i * 32, r[i]);
        }
      }
    }
  }
}

// B (k0.., j0..) as VNNI panels of 32 columns: panel jr (a multiple of 32) at dst + (jr / 32) * pstride, its k
// step s (32 k, zero-padded past kc) at + s * 1024. pstride = 32 * rup(kc, 32) unless a caller packs one k segment
// of a deeper B (then dst points at the segment's first step in panel 0, pstride is the whole panel).
AD_TGT_BF16 void pack_b_amx(bool transB, B16Src B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0,
                              int64_t nc, uint16_t* dst, int64_t pstride = -1) {
  const int64_t kcp = rup(kc, 32), ns = kcp / 32;
  if (pstride < 0) pstride = 32 * kcp;
  if (transB) {
    // B(k, j) = B[j * ldb + k]: each column j holds its k pairs contiguously (32-bit words); per half tile,
    // load 16 columns x 16 pairs and transpose to [pair][column].
    for (int64_t jr = 0; jr < nc; jr += 32) {
      const int nr = (int)std::min<int64_t>(32, nc - jr);
      uint16_t* d = dst + (jr / 32) * pstride;
      for (int64_t s = 0; s < ns; s++) {
        const __mmask32 m = mask32(kc - s * 32);
        for (int h = 0; h < 2; h++) {
          __m512i r[16];
          for (int c = 0; c < 16; c++) {
            const int j = h * 16 + c;
            r[c] = j < nr ? load32(B, (j0 + jr + j) * ldb + k0 + s * 32, m) : _mm512_setzero_si512();
          }
          transpose16x16_epi32(r);
          uint16_t* ds = d + s * 1024 + h * 512;
          for (int p = 0; p < 16; p++) _mm512_store_si512(ds + p * 32, r[p]);
        }
      }
    }
    return;
  }
  // rows k, k+1 interleaved into pairs; 8 panels (256 columns) at a time, so that each row is read 1 KiB (f32)
  // at a stretch (one panel at a time read 128 bytes per row: 1.5x slower for a 768 x 3072 f32 weight)
  for (int64_t jb = 0; jb < nc; jb += 256)
    for (int64_t s = 0; s < ns; s++)
      for (int p = 0; p < 16; p++) {
        const int64_t k = s * 32 + 2 * p;
        for (int64_t jr = jb; jr < std::min<int64_t>(nc, jb + 256); jr += 32) {
          uint16_t* ds = dst + (jr / 32) * pstride + s * 1024;
          if (k < kc) {
            const __mmask32 m = mask32(std::min<int64_t>(32, nc - jr));
            const int64_t s0 = (k0 + k) * ldb + j0 + jr;
            interleave32(load32(B, s0, m), k + 1 < kc ? load32(B, s0 + ldb, m) : _mm512_setzero_si512(), ds + p * 32,
                         ds + 512 + p * 32);
          } else {
            _mm512_store_si512(ds + p * 32, _mm512_setzero_si512());
            _mm512_store_si512(ds + 512 + p * 32, _mm512_setzero_si512());
          }
        }
      }
}

// Where the A tiles of one 32-row block come from: packed panels (64-byte rows, 1024 elements per k step,
// second half tile at +512) or straight from a row-major A (row stride lda, 32 elements per k step, second
// half tile 16 rows down).
struct APanel {
  const uint16_t* p;
  int64_t stride_b, step, half;
};

// A finished 32 x 32 block of C whose write-out (the epilogue) is deferred to the next ukr_amx call, which does it a
// few rows per k step while its tile products run: the vector loads and stores (and C's cache misses) then overlap
// the tile unit's work instead of following it.
struct AmxPending {
  alignas(64) float buf[32 * 32];  // the block's accumulators, rows of 32 floats
  bool active = false;
  float* c = nullptr;
  uint16_t* c16 = nullptr;
  int64_t ldc = 0;
  int mr = 0, nr = 0, done = 0;  // rows [0, done) written so far
  float alpha = 1.f, beta = 0.f;
  const float* bias = nullptr;
};

// Writes rows [r0, r1) of a finished block from buf (rows of 32 floats): C = alpha * acc + beta * C, or
// acc + bias[0..nr) (bias set: alpha 1, beta 0), or as bf16 into c16 (beta 0: alpha·(acc + bias), rounded as the
// cast op rounds).
AD_TGT_BF16 inline void amx_write_rows(const float* buf, float* c, uint16_t* c16, int64_t ldc, int nr, float alpha, float beta,
                                         const float* bias, int r0, int r1) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __mmask16 m0 = col_mask(nr), m1 = col_mask(nr - 16);
  const bool fullc = nr == 32;
  // added after the products, as torch's addmm does
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 b1 = bias && nr > 16 ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
  if (c16) {
    // rounded in registers, 32 per instruction (bf16_round32_isa; a call per row to the cast cost ~17% of a 512³ GEMM)
    const bool plain = alpha == 1.f && !bias;  // the usual case: no scale, no bias
    const __mmask32 m = mask32(nr);
    for (int i = r0; i < r1; i++) {
      __m512 x0 = _mm512_load_ps(buf + i * 32), x1 = _mm512_load_ps(buf + i * 32 + 16);
      if (!plain) {
        x0 = _mm512_mul_ps(va, _mm512_add_ps(x0, b0));
        x1 = _mm512_mul_ps(va, _mm512_add_ps(x1, b1));
      }
      const __m512i r = bf16_round32_isa(x0, x1);
      if (fullc)
        _mm512_storeu_si512(c16 + i * ldc, r);
      else
        _mm512_mask_storeu_epi16(c16 + i * ldc, m, r);
    }
    return;
  }
  for (int i = r0; i < r1; i++) {
    float* ci = c + i * ldc;
    store_row16(ci, _mm512_add_ps(_mm512_load_ps(buf + i * 32), b0), m0, fullc, va, vb, beta);
    if (nr > 16) store_row16(ci + 16, _mm512_add_ps(_mm512_load_ps(buf + i * 32 + 16), b1), m1, fullc, va, vb, beta);
  }
}

// Writes the rows of a pending block up to `upto`.
AD_TGT_BF16 inline void amx_flush(AmxPending& p, int upto) {
  if (!p.active) return;
  upto = std::min(upto, p.mr);
  if (upto > p.done) amx_write_rows(p.buf, p.c, p.c16, p.ldc, p.nr, p.alpha, p.beta, p.bias, p.done, upto);
  p.done = std::max(p.done, upto);
  if (p.done >= p.mr) p.active = false;
}

// One 32 x 32 block over ns k steps of 32. w: a 4 KiB accumulator block (four 16 x 16 tiles, 64-byte rows)
// used between K chunks: w_in = start from it (else from zero), w_out = leave the sum there instead of
// writing C. The final chunk writes C = alpha * acc + beta * C, or acc + bias[0..nr) (bias set: alpha 1, beta 0).
// pend: the deferred write-out of the previous block, done during this call's k steps; this call's own block is
// then left pending in it (the caller flushes the last one, amx_flush(pend, 32)).
AD_TGT_AMX inline __attribute__((always_inline)) void ukr_amx(int64_t ns, APanel ap, const uint16_t* b, float* c, int64_t ldc, int mr, int nr,
                        float alpha, float beta, float* w, bool w_in, bool w_out, const float* bias, AmxPending& pend,
                        uint16_t* c16 = nullptr) {
  if (w_in) {
    _tile_loadd(0, w, 64);
    _tile_loadd(1, w + 256, 64);
    _tile_loadd(2, w + 512, 64);
    _tile_loadd(3, w + 768, 64);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  // The block of C this call writes: asked for with write intent now, so that its misses overlap the tile products
  // instead of stalling the epilogue's stores (with the buffered epilogue below: BERT-shape AMX GEMMs 1.2-1.8x).
  if (!w_out && c16)
    for (int i = 0; i < mr; i++) __builtin_prefetch(c16 + i * ldc, 1, 3);
  else if (!w_out)
    for (int i = 0; i < mr; i++) {
      __builtin_prefetch(c + i * ldc, 1, 3);
      if (nr > 16) __builtin_prefetch(c + i * ldc + 16, 1, 3);
    }
  const uint16_t* a = ap.p;
  const int64_t sa = ap.stride_b, astep = ap.step, ahalf = ap.half;
  // rows of the pending block to write per k step (all of them by the last step)
  const int per = pend.active ? (int)((pend.mr - pend.done + ns - 1) / ns) : 0;
  for (int64_t s = 0; s < ns; s++) {
    _tile_loadd(4, a, sa);
    _tile_loadd(6, b, 64);
    _tile_loadd(5, a + ahalf, sa);
    _tile_loadd(7, b + 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
    if (per) amx_flush(pend, pend.done + per);
    a += astep;
    b += 1024;
  }
  amx_flush(pend, 32);  // whatever ns left over (ns == 0)
  if (w_out) {
    _tile_stored(0, w, 64);
    _tile_stored(1, w + 256, 64);
    _tile_stored(2, w + 512, 64);
    _tile_stored(3, w + 768, 64);
    return;
  }
  // Tiles go to an L1 buffer and from there to C with vector stores, even for a full 32 x 32 block: tile stores
  // straight into C (rows ldc apart, lines not yet in cache) held the tile unit up for every missing line.
  _tile_stored(0, pend.buf, 128);
  _tile_stored(1, pend.buf + 16, 128);
  _tile_stored(2, pend.buf + 16 * 32, 128);
  _tile_stored(3, pend.buf + 16 * 32 + 16, 128);
  pend.active = mr > 0;
  pend.c = c;
  pend.c16 = c16;
  pend.ldc = ldc;
  pend.mr = mr;
  pend.nr = nr;
  pend.done = 0;
  pend.alpha = alpha;
  pend.beta = beta;
  pend.bias = bias;
}

struct B16Amx {
  using T = uint16_t;
  static constexpr int MR = 32, NR = 32, KG = 32;
  static constexpr int64_t KC = 512, MC = 256, NC = 256;
  static constexpr double kMacsPerCycle = 512;
  static constexpr double kPackB = 1;  // relative cost of packing an element of B (partition)
  static constexpr double kParMacs = 1 << 24;  // below this many multiply-adds: calling thread only
  static void begin() { amx_begin(); }
  static void end() { amx_end(); }
};

// ---------------------------------------------------------------------------------------------------------
// The blocked driver: computes the block rows [m0, m1) x cols [n0, n1) of C on the calling thread.

// f32 with a bias (g.bias, beta 0): before the first K chunk writes a tile of C, the tile is set to the bias rows and
// the kernel accumulates onto it (beta 1). The same bits as a C filled with the bias beforehand, without that separate
// pass over C (which went through memory for a large C). Returns the beta for the kernel call.
inline float bias_tile(const Args<float>& g, int64_t pc, int64_t i0, int64_t j0, int64_t mr, int64_t nr, float beta) {
  if (!g.bias || pc != 0) return beta;
  for (int64_t i = 0; i < mr; i++) std::memcpy(g.C + (i0 + i) * g.ldc + j0, g.bias + j0, (size_t)nr * sizeof(float));
  return 1.0f;
}

// Small f32 products with both operands not transposed (a batched attention's 128 x 128 x 64 items): no packing, the
// kernel reads A's rows and B's rows in place, and the rows split into equal tiles (128 = 8 x 13 + 2 x 12 rather than
// 9 x 14 + 2). Packing was 11% of such a product (Zen 5) and cannot pay off over four 32-column panels. K in one chunk
// (at most F32Avx512::KC, as the packed path would) and B small enough to stay in L1/L2, so the sums, and the bits, are
// the packed path's.
constexpr int64_t kDirectMaxB = 32 * 1024;  // floats of B
bool direct_f32_ok(const Args<float>& g, int64_t n0, int64_t n1, int64_t kc_max) {
  // (rows of A a multiple of 4 KiB apart would share one L1 set: packed, as in the AVX512-BF16 driver)
  return !g.transA && !g.transB && !g.bias && g.K >= 1 && g.K <= kc_max && (n1 - n0) % V5_NR == 0 &&
         (n1 - n0) * g.K <= kDirectMaxB && (g.lda * 4) % 4096 != 0;
}
void direct_block_f32(const Args<float>& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t Mb = m1 - m0, ntile = cdiv(Mb, V5_MR);
  for (int64_t t = 0, i = m0, mr; t < ntile; t++, i += mr) {
    mr = Mb / ntile + (t < Mb % ntile);
    for (int64_t j = n0; j < n1; j += V5_NR)
      kAvx512DirectKernels[mr](g.K, g.A + i * g.lda, g.lda, g.B + j, g.ldb, g.C + i * g.ldc + j, g.ldc, V5_NR, g.alpha, g.beta);
  }
}

template <class KT>
void gemm_block(const Args<typename KT::T>& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  using T = typename KT::T;
  if (m1 <= m0 || n1 <= n0) return;
  if constexpr (std::is_same<KT, F32Avx512>::value)
    if (direct_f32_ok(g, n0, n1, KT::KC)) return direct_block_f32(g, m0, m1, n0, n1);
  const int64_t Mb = m1 - m0, Nb = n1 - n0;
  constexpr int64_t KC = KT::KC, MC = KT::MC, NC = KT::NC;
  const int64_t kc_max = std::min<int64_t>(KC, rup(g.K, KT::KG));
  const int64_t mc_max = std::min<int64_t>(MC, rup(Mb, KT::MR));
  const int64_t nc_max = std::min<int64_t>(NC, rup(Nb, KT::NR));
  T* Ap = tl_apack.get<T>((size_t)(cdiv(mc_max, KT::MR) * KT::AS * rup(kc_max, KT::KG)));
  T* Bp = tl_bpack.get<T>((size_t)(rup(nc_max, KT::NR) * rup(kc_max, KT::KG)));
  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, n1 - jc);
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, g.K - pc);
      const int64_t kcp = rup(kc, KT::KG);
      const float beta = pc == 0 ? g.beta : 1.0f;
      KT::pack_b(g.transB, g.B, g.ldb, pc, kc, jc, nc, Bp);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, m1 - ic);
        KT::pack_a(g.transA, g.A, g.lda, ic, mc, pc, kc, Ap);
        if (KT::kAInL1) {
          // A micro-panel stays in L1 across the row of C micro-tiles; the B block streams from L2
          for (int64_t ir = 0; ir < mc; ir += KT::MR) {
            const int mr = (int)std::min<int64_t>(KT::MR, mc - ir);
            for (int64_t jr = 0; jr < nc; jr += KT::NR) {
              const int nr = (int)std::min<int64_t>(KT::NR, nc - jr);
              KT::kernel(kcp, Ap + (ir / KT::MR) * KT::AS * kcp, Bp + jr * kcp, g.C + (ic + ir) * g.ldc + jc + jr, g.ldc, mr, nr,
                         g.alpha, bias_tile(g, pc, ic + ir, jc + jr, mr, nr, beta));
            }
          }
        } else {
          for (int64_t jr = 0; jr < nc; jr += KT::NR) {
            const int nr = (int)std::min<int64_t>(KT::NR, nc - jr);
            const T* bp = Bp + jr * kcp;
            for (int64_t ir = 0; ir < mc; ir += KT::MR) {
              const int mr = (int)std::min<int64_t>(KT::MR, mc - ir);
              KT::kernel(kcp, Ap + (ir / KT::MR) * KT::AS * kcp, bp, g.C + (ic + ir) * g.ldc + jc + jr, g.ldc, mr, nr, g.alpha,
                         bias_tile(g, pc, ic + ir, jc + jr, mr, nr, beta));
            }
          }
        }
      }
    }
  }
}

// AMX driver for rows [m0, m1) x cols [n0, n1) of C, with B already packed: Bp = the VNNI panel of column n0
// (panels of 32 columns, kcp = K rounded up to 32 per panel). A is packed once per MC row block (kept in
// L2), or, when it is not transposed, K is a multiple of 32 and either this block of C is narrow (packing
// would not pay off) or A's rows are short (a 32-row block is one small contiguous region), its tiles are
// loaded straight from A (only a partial last 32-row block is packed).
// K is split into KC chunks so that each A micro-panel chunk (32 x KC, 32 KiB) stays in L1 while the B
// micro-panels stream from L2 straight into the tiles (the k step runs at ~0.7 of the register-only loop with its
// operands in L2, ~0.95 in L1, in fast phases: gemm_selftest amxloop). A software prefetch of the next B micro-panel
// into L1 (32 lines per k step) made GEMMs 4-18% slower, measured in alternation (it evicted the A panel); KC 256 or
// 1024, MC 128, NC 128 or 512 measured within ±4% of these;
// partial sums of the MC x NC block of C live in a 4 KiB-per-block buffer between chunks (tile rows of 64 bytes,
// no power-of-two ldc conflicts).
AD_TGT_AMX void amx_block(const Args<uint16_t>& g, const uint16_t* Bp, int64_t m0, int64_t m1, int64_t n0,
                          int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t Mb = m1 - m0, Nb = n1 - n0;
  const int64_t kcp = rup(g.K, 32);
  constexpr int64_t KC = B16Amx::KC, MC0 = B16Amx::MC, NC = B16Amx::NC;
  const bool direct = !g.transA && !g.a32 && g.K % 32 == 0 && (Nb <= 128 || g.lda <= 128);
  constexpr int64_t a_budget = 1 << 20;  // bytes of packed A kept in L2
  const int64_t MC = std::max<int64_t>(32, std::min<int64_t>(MC0, (a_budget / (2 * kcp)) / 32 * 32));
  const int64_t mc_max = std::min<int64_t>(MC, rup(Mb, 32));
  uint16_t* Ap = tl_apack.get<uint16_t>((size_t)((direct ? 32 : mc_max) * kcp));
  float* W = kcp > KC ? tl_wbuf.get<float>((size_t)(rup(mc_max, 32) * NC)) : nullptr;
  // each block's write-out runs during the next block's tile products (ukr_amx); the last one is flushed below
  AmxPending pend;
  for (int64_t ic = m0; ic < m1; ic += MC) {
    const int64_t mc = std::min<int64_t>(MC, m1 - ic);
    if (!direct)
      pack_a_amx(g.transA, B16Src(g.A, g.a32), g.lda, ic, mc, 0, g.K, Ap);
    else if (mc % 32)
      pack_a_amx(false, g.A, g.lda, ic + mc / 32 * 32, mc % 32, 0, g.K, Ap);
    auto apanel = [&](int64_t ir, int64_t pc) -> APanel {
      if (direct && ir + 32 <= mc) {
        const uint16_t* p = g.A + (ic + ir) * g.lda + pc;
        return APanel{p, g.lda * 2, 32, 16 * g.lda};
      }
      const uint16_t* p = direct ? Ap : Ap + ir * kcp;
      return APanel{p + pc * 32, 64, 1024, 512};
    };
    for (int64_t jc = 0; jc < Nb; jc += NC) {
      const int64_t nc = std::min<int64_t>(NC, Nb - jc);
      for (int64_t pc = 0; pc < kcp; pc += KC) {
        const int64_t kc = std::min<int64_t>(KC, kcp - pc);
        const bool w_in = pc > 0, w_out = pc + kc < kcp;
        for (int64_t ir = 0; ir < mc; ir += 32) {
          const int mr = (int)std::min<int64_t>(32, mc - ir);
          const APanel ap = apanel(ir, pc);
          for (int64_t jr = jc; jr < jc + nc; jr += 32) {
            const int nr = (int)std::min<int64_t>(32, Nb - jr);
            const uint16_t* bp = Bp + jr * kcp + pc * 32;
            float* w = W ? W + (((jr - jc) / 32) * (mc_max / 32) + ir / 32) * 1024 : nullptr;
            const int64_t co = (ic + ir) * g.ldc + n0 + jr;
            ukr_amx(kc / 32, ap, bp, g.C ? g.C + co : nullptr, g.ldc, mr, nr, g.alpha, g.beta, w, w_in, w_out,
                    g.bias ? g.bias + n0 + jr : nullptr, pend, g.C16 ? g.C16 + co : nullptr);
          }
        }
      }
    }
  }
  amx_flush(pend, 32);
}

// Single-thread AMX block (batched items, small problems): packs this block's B, then runs amx_block.
template <>
void gemm_block<B16Amx>(const Args<uint16_t>& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t Nb = n1 - n0, kcp = rup(g.K, 32);
  uint16_t* Bp = tl_bpack.get<uint16_t>((size_t)(rup(Nb, 32) * kcp));
  pack_b_amx(g.transB, B16Src(g.B, g.b32), g.ldb, 0, g.K, n0, Nb, Bp);
  amx_block(g, Bp, m0, m1, n0, n1);
}

// AVX512-BF16 driver for the block rows [m0, m1) x cols [n0, n1) of C on the calling thread: the generic loops, with
// A and B read as bf16 or f32 (g.a32 / g.b32) and, for a bf16 result (g.C16), K in one chunk so that the epilogue
// sees the whole sum (K up to kC16MaxK; bf16_out / mgemm take an f32 buffer beyond it).
constexpr int64_t kC16MaxK = 8192;
constexpr int64_t kGemvMaxM = 4;  // products of at most this many rows are "decode-sized" (gemv_f32, small-M bf16)
// elements of packed A per block (256 KiB, kept in L2): MC shrinks for a long K in one chunk (bf16 result). On Zen 5,
// 84 Ki-512 Ki elements measured within ±3% of each other; without the limit a K = 3072 block overflowed the 1 MiB L2.
constexpr int64_t kABudget = 131072;
template <>
void gemm_block<B16Avx512>(const Args<uint16_t>& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  using KT = B16Avx512;
  if (m1 <= m0 || n1 <= n0) return;
  const int64_t Mb = m1 - m0, Nb = n1 - n0;
  // decode-sized products (a few rows): B is packed 64 columns at a time right before its use, so it stays in L2 instead
  // of making a pass of its own through memory (the rows of C come out the same: only the column blocking differs)
  const int64_t KC = g.C16 || g.K <= KT::KC ? rup(g.K, 2) : KT::KC, NC = Mb <= kGemvMaxM ? 64 : KT::NC;
  const int64_t kc_max = std::min<int64_t>(KC, rup(g.K, 2));
  const int64_t MC = std::max<int64_t>(KT::MR, std::min<int64_t>(KT::MC, (kABudget / kc_max) / KT::MR * KT::MR));
  const int64_t mc_max = std::min<int64_t>(MC, rup(Mb, KT::MR));
  const int64_t nc_max = std::min<int64_t>(NC, rup(Nb, KT::NR));
  uint16_t* Ap = tl_apack.get<uint16_t>((size_t)(cdiv(mc_max, KT::MR) * KT::AS * kc_max));
  uint16_t* Bp = tl_bpack.get<uint16_t>((size_t)(rup(nc_max, KT::NR) * kc_max));
  const B16Src A(g.A, g.a32), B(g.B, g.b32);
  // A read straight from A (no packing) where its rows are bf16 k pairs already: on Zen 5 1.0-1.07x on 2-D shapes and
  // 1.1-1.25x on batched 128 x 128 products with K = 64-128, where packing A cost ~10% (lda >= K >= 2 there, as BLAS
  // requires, so the kernel's lda = 0, "packed", never collides with it). Not when the rows are a multiple of 4 KiB
  // apart: then a tile's 14 rows fall in one set of the 12-way L1 and evict each other (2048^3: packing A is
  // 1.02-1.04x, in alternation).
  const bool direct = !g.transA && !g.a32 && g.K % 2 == 0 && g.lda >= g.K && (g.lda * 2) % 4096 != 0;
  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, n1 - jc);
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, g.K - pc);
      const int64_t kcp = rup(kc, 2);
      const float beta = pc == 0 ? g.beta : 1.0f;
      pack_b_b16(g.transB, B, g.ldb, pc, kc, jc, nc, Bp);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, m1 - ic);
        if (!direct) pack_a_b16(g.transA, A, g.lda, ic, mc, pc, kc, Ap);
        for (int64_t jr = 0; jr < nc; jr += KT::NR) {
          const int nr = (int)std::min<int64_t>(KT::NR, nc - jr);
          const uint16_t* bp = Bp + jr * kcp;
          // read straight from A, the rows split into equal tiles (128 = 8 x 13 + 2 x 12, not 9 x 14 + 2: a 2-row tile runs
          // at a fraction of the rate); packed panels are MR rows each
          const int64_t ntile = cdiv(mc, KT::MR);
          for (int64_t t = 0, ir = 0, mr; t < ntile; t++, ir += mr) {
            mr = direct ? mc / ntile + (t < mc % ntile) : std::min<int64_t>(KT::MR, mc - ir);
            const int64_t co = (ic + ir) * g.ldc + jc + jr;
            const uint16_t* ap = direct ? g.A + (ic + ir) * g.lda + pc : Ap + (ir / KT::MR) * KT::AS * kcp;
            kBf16Kernels[mr](kcp, ap, direct ? g.lda : 0, bp, g.C16 ? nullptr : g.C + co, g.C16 ? g.C16 + co : nullptr, g.ldc, nr,
                             g.alpha, beta, g.bias && pc == 0 ? g.bias + jc + jr : nullptr);
          }
        }
      }
    }
  }
}

// Splits C over nt threads as a tm x tn grid of whole micro-tiles, minimising the estimated time of the
// slowest thread (compute plus packing), and returns this thread's block.
template <class KT>
void partition(int64_t M, int64_t N, int64_t K, int nt, int tid, int64_t& m0, int64_t& m1, int64_t& n0,
               int64_t& n1) {
  const int64_t mt = cdiv(M, KT::MR), ntl = cdiv(N, KT::NR);
  int best_tm = 1;
  double best = 1e300;
  for (int tm = 1; tm <= nt; tm++) {
    if (nt % tm) continue;
    const int tn = nt / tm;
    const double mb = (double)(cdiv(mt, tm) * KT::MR), nb = (double)(cdiv(ntl, tn) * KT::NR);
    const double kk = (double)rup(K, KT::KG);
    const double t = mb * nb * kk / KT::kMacsPerCycle + mb * kk * (double)cdiv((int64_t)nb, KT::NC) + KT::kPackB * kk * nb;
    if (t < best - 1e-9) {
      best = t;
      best_tm = tm;
    }
  }
  const int tm = best_tm, tn = nt / tm;
  const int ti = tid / tn, tj = tid % tn;
  m0 = std::min(M, (mt * ti / tm) * KT::MR);
  m1 = std::min(M, (mt * (ti + 1) / tm) * KT::MR);
  n0 = std::min(N, (ntl * tj / tn) * KT::NR);
  n1 = std::min(N, (ntl * (tj + 1) / tn) * KT::NR);
}

// Below KT::kParMacs multiply-adds (roughly 50-100 us of single-thread work) a GEMM runs on the calling
// thread only: the pool's fork-join waits for every worker to pick the job up, and a worker that is asleep
// (futex, then a halted vCPU to wake) or preempted by other load costs ~50-200 us on this kind of VM.

template <class KT>
void gemm_run(const Args<typename KT::T>& g) {
  const double macs = (double)g.M * (double)g.N * (double)g.K;
  int nth = num_threads();
  // decode-sized bf16 products are bound by reading B: the threads split its columns from 64 Ki multiply-adds on
  const bool small_m = std::is_same<KT, B16Avx512>::value && g.M <= kGemvMaxM && g.N >= 128 && macs >= 65536;
  if (macs < KT::kParMacs && !small_m) nth = 1;
  if (nth <= 1) {
    KT::begin();
    gemm_block<KT>(g, 0, g.M, 0, g.N);
    KT::end();
    return;
  }
  parallel_run(nth, [&](int tid, int nt) {
    int64_t m0, m1, n0, n1;
    partition<KT>(g.M, g.N, g.K, nt, tid, m0, m1, n0, n1);
    if (m1 <= m0 || n1 <= n0) return;
    KT::begin();
    gemm_block<KT>(g, m0, m1, n0, n1);
    KT::end();
  });
}

thread_local AlignedBuf tl_bshared;   // the calling thread's B, packed once and shared by the pool
thread_local AlignedBuf tl_bprivate;  // a worker's own copy of a small B (gemm_run<B16Amx>)
constexpr int64_t kPrivateB = 768 * 1024;  // elements of packed B up to which each thread packs its own copy


// AMX: the threads pack B (VNNI panels) into one shared buffer, meet at a spin barrier, then compute blocks of
// rows (or of columns, when M is short) against the whole packed B; both phases balance through ChunkQueue.
template <>
void gemm_run<B16Amx>(const Args<uint16_t>& g) {
  const double macs = (double)g.M * (double)g.N * (double)g.K;
  int nth = num_threads();
  if (macs < B16Amx::kParMacs) nth = 1;
  if (nth <= 1) {
    amx_begin();
    gemm_block<B16Amx>(g, 0, g.M, 0, g.N);
    amx_end();
    return;
  }
  const int64_t kcp = rup(g.K, 32), np = cdiv(g.N, 32), mt = cdiv(g.M, 32);
  uint16_t* Bp = tl_bshared.get<uint16_t>((size_t)(np * 32 * kcp));
  // split rows unless that leaves a thread clearly more work than splitting columns
  const bool split_m = cdiv(mt, nth) * np <= cdiv(np, nth) * mt;
  // each thread takes its own share of the work first and then helps with the other's (ChunkQueue): packing B,
  // then 128-row (or 64-column) blocks of C. 128 rows rather than 64: each block sweeps the packed B once, and
  // half as many sweeps made BERT shapes, 512³ and 2048³ 1.0-1.08x faster (in alternation).
  // B is packed in 256 x 256 (k x column) units: each reads whole 1 KiB stretches of B's rows or columns
  // (2-panel units read 256-byte stretches, 1.5x slower packing for a non-transposed f32 B)
  const int64_t ncb = cdiv(np, 8), nkb = cdiv(kcp, 256);
  ChunkQueue qc(split_m ? cdiv(mt, 4) : cdiv(np, 2), nth);
  auto pack_unit = [&](int64_t u, uint16_t* dst) {
    const int64_t j0 = (u / nkb) * 256, k0 = (u % nkb) * 256;
    pack_b_amx(g.transB, B16Src(g.B, g.b32), g.ldb, k0, std::min<int64_t>(256, g.K - k0), j0, std::min<int64_t>(256, g.N - j0),
               dst + j0 * kcp + (k0 / 32) * 1024, 32 * kcp);
  };
  if (split_m && np * 32 * kcp <= kPrivateB) {
    // A small B (up to 1.5 MiB packed: BERT's 768 x 768 projections) is packed by every thread into its own buffer,
    // with no barrier. Packing it twice costs less than sharing one copy: each thread's copy stays in its own L2,
    // where a shared one was half written by the other core (and every rewrite invalidated the other core's lines).
    // 1.06-1.09x on 1024x768x768, 1.10-1.20x on 512³, 1.0x at 1024 x 1024 (in alternation); 0.9x at 2048³.
    parallel_run(nth, [&](int tid, int) {
      uint16_t* Bq = tid == 0 ? Bp : tl_bprivate.get<uint16_t>((size_t)(np * 32 * kcp));
      for (int64_t u = 0; u < ncb * nkb; u++) pack_unit(u, Bq);
      amx_begin();
      qc.run(tid, [&](int64_t u) { amx_block(g, Bq, u * 128, std::min(g.M, u * 128 + 128), 0, g.N); });
      amx_end();
    });
    return;
  }
  ChunkQueue qb(ncb * nkb, nth);
  std::atomic<int> arrived{0};
  parallel_run(nth, [&](int tid, int nt) {
    qb.run(tid, [&](int64_t u) { pack_unit(u, Bp); });
    // spin barrier (yielding after a while, in case the pool has more threads than free cores)
    arrived.fetch_add(1, std::memory_order_acq_rel);
    for (int spins = 0; arrived.load(std::memory_order_acquire) < nt; spins++) {
      if (spins < 2000)
        _mm_pause();
      else
        std::this_thread::yield();
    }
    amx_begin();
    qc.run(tid, [&](int64_t u) {
      if (split_m)
        amx_block(g, Bp, u * 128, std::min(g.M, u * 128 + 128), 0, g.N);
      else
        amx_block(g, Bp + u * 64 * kcp, 0, g.M, u * 64, std::min(g.N, u * 64 + 64));
    });
    amx_end();
  });
}

template <class KT>
void gemm_batched_run(int64_t batch, const Args<typename KT::T>& g0, int64_t sA, int64_t sB, int64_t sC) {
  const int nth = num_threads();
  const double macs = (double)g0.M * (double)g0.N * (double)g0.K;
  auto one = [&](int64_t i) {
    using T = typename KT::T;
    Args<T> g = g0;  // f32 operands of the bf16 kernels (a32 / b32) step in f32 elements
    g.A = g.a32 ? reinterpret_cast<const T*>(reinterpret_cast<const float*>(g0.A) + i * sA) : g0.A + i * sA;
    g.B = g.b32 ? reinterpret_cast<const T*>(reinterpret_cast<const float*>(g0.B) + i * sB) : g0.B + i * sB;
    if (g.C) g.C += i * sC;
    if (g.C16) g.C16 += i * sC;
    return g;
  };
  const bool by_batch = nth > 1 && batch >= nth && (batch % nth == 0 || batch >= 4 * nth) &&
                        macs * (double)batch >= KT::kParMacs;
  if (!by_batch) {
    for (int64_t i = 0; i < batch; i++) gemm_run<KT>(one(i));
    return;
  }
  ChunkQueue q(batch, nth);
  parallel_run(nth, [&](int tid, int) {
    KT::begin();
    q.run(tid, [&](int64_t i) {
      Args<typename KT::T> g = one(i);
      gemm_block<KT>(g, 0, g.M, 0, g.N);
    });
    KT::end();
  });
}

// ---------------------------------------------------------------------------------------------------------
// Small problems: direct loops, no packing, no threads.

constexpr double kSmallMacs = 32 * 1024;

template <class T, class Cvt>
void gemm_small(const Args<T>& g, Cvt cvt) {
  for (int64_t i = 0; i < g.M; i++) {
    float* c = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; j++) {
      float acc = 0.0f;
      if (!g.transA && g.transB) {
        const T* a = g.A + i * g.lda;
        const T* b = g.B + j * g.ldb;
        for (int64_t k = 0; k < g.K; k++) acc += cvt(a[k]) * cvt(b[k]);
      } else {
        for (int64_t k = 0; k < g.K; k++) {
          float a = cvt(g.transA ? g.A[k * g.lda + i] : g.A[i * g.lda + k]);
          float b = cvt(g.transB ? g.B[j * g.ldb + k] : g.B[k * g.ldb + j]);
          acc += a * b;
        }
      }
      c[j] = g.beta == 0.0f ? g.alpha * acc : g.alpha * acc + g.beta * c[j];
    }
  }
}

// bf16_small_gemm's body on AMX: A and B packed into this thread's panels (f32 rounded to bf16 as they are packed), then
// one 32 x 32 block of C at a time. C = alpha·op(A)·op(B) [+ C].
AD_TGT_AMX void amx_small_run(int64_t M, int64_t N, int64_t K, const float* A, bool transA, int64_t lda, const float* B, int64_t ldb,
                              float* C, int64_t ldc, bool accumulate, bool transB, float alpha) {
  const int64_t kcp = rup(K, 32), ns = kcp / 32;
  uint16_t* ap = tl_apack.get<uint16_t>((size_t)(rup(M, 32) * kcp));
  uint16_t* bp = tl_bpack.get<uint16_t>((size_t)(rup(N, 32) * kcp));
  pack_a_amx(transA, B16Src(A, true), lda, 0, M, 0, K, ap);
  pack_b_amx(transB, B16Src(B, true), ldb, 0, K, 0, N, bp);
  amx_begin();
  AmxPending pend;  // each block's write-out overlaps the next block's tile products
  for (int64_t ir = 0; ir < M; ir += 32)
    for (int64_t jr = 0; jr < N; jr += 32)
      ukr_amx(ns, APanel{ap + ir * kcp, 64, 1024, 512}, bp + jr * kcp, C + ir * ldc + jr, ldc, (int)std::min<int64_t>(32, M - ir),
              (int)std::min<int64_t>(32, N - jr), alpha, accumulate ? 1.f : 0.f, nullptr, false, false, nullptr, pend);
  amx_flush(pend, 32);
  amx_end();
}

// The same on the AVX512-BF16 kernels (CPUs without AMX): their blocked driver on the calling thread, f32 operands.
void avx512bf16_small_run(int64_t M, int64_t N, int64_t K, const float* A, bool transA, int64_t lda, const float* B, int64_t ldb,
                          float* C, int64_t ldc, bool accumulate, bool transB, float alpha) {
  Args<uint16_t> g{transA, transB, M, N, K, alpha, reinterpret_cast<const uint16_t*>(A), lda, reinterpret_cast<const uint16_t*>(B), ldb,
                   accumulate ? 1.f : 0.f, C, ldc};
  g.a32 = g.b32 = true;
  gemm_block<B16Avx512>(g, 0, M, 0, N);
}

// Small-M f32 products (decoding: one new token per sequence) without packing: the threads take ranges of C's columns
// and stream their part of B once, A's few rows broadcast from cache (Zen 5, M = 1: 2.1-2.8x the packed path with the
// weight in L3, 1.55x from memory; packing B was a full extra pass over it, and these ran on one thread). Each output is summed over k in the packed AVX-512
// kernel's order (one FMA chain per F32Avx512::KC-deep chunk, the chunks added through C by the same epilogue), so the
// result is bit-identical to the packed path's: generation with and without a KV cache agrees bit for bit.
template <int M>
AD_TGT_AVX512 void gemv_f32_cols(const Args<float>& g, int64_t n0, int64_t n1) {
  constexpr int64_t KC = F32Avx512::KC;
  const __m512 va = _mm512_set1_ps(g.alpha);
  for (int64_t j = n0; j < n1; j += 32) {
    const int nr = (int)std::min<int64_t>(32, n1 - j);
    const __mmask16 m0 = col_mask(nr), m1 = col_mask(nr - 16);
    const bool full = nr == 32;
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      const int64_t kc = std::min(KC, g.K - pc);
      __m512 acc0[M], acc1[M];
      for (int i = 0; i < M; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
      if (!g.transB) {
        for (int64_t k = pc; k < pc + kc; k++) {
          const float* b = g.B + k * g.ldb + j;
          const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
          for (int i = 0; i < M; i++) {
            const __m512 ai = _mm512_set1_ps(g.A[i * g.lda + k]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
          }
        }
      } else {
        // B(k, j) = B[j * ldb + k]: 16 columns x 16 k transposed in registers
        for (int64_t kb = pc; kb < pc + kc; kb += 16) {
          const int kn = (int)std::min<int64_t>(16, pc + kc - kb);
          const __mmask16 mk = mask16(kn);
          __m512i r0[16], r1[16];
          for (int c = 0; c < 16; c++) {
            r0[c] = c < nr ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, g.B + (j + c) * g.ldb + kb)) : _mm512_setzero_si512();
            r1[c] = c + 16 < nr ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, g.B + (j + 16 + c) * g.ldb + kb)) : _mm512_setzero_si512();
          }
          transpose16x16_epi32(r0);
          transpose16x16_epi32(r1);
          for (int kk = 0; kk < kn; kk++)
            for (int i = 0; i < M; i++) {
              const __m512 ai = _mm512_set1_ps(g.A[i * g.lda + kb + kk]);
              acc0[i] = _mm512_fmadd_ps(ai, _mm512_castsi512_ps(r0[kk]), acc0[i]);
              acc1[i] = _mm512_fmadd_ps(ai, _mm512_castsi512_ps(r1[kk]), acc1[i]);
            }
        }
      }
      const float beta = bias_tile(g, pc, 0, j, M, nr, pc == 0 ? g.beta : 1.0f);
      const __m512 vb = _mm512_set1_ps(beta);
      for (int i = 0; i < M; i++) {
        float* ci = g.C + i * g.ldc + j;
        store_row16(ci, acc0[i], m0, full, va, vb, beta);
        if (nr > 16) store_row16(ci + 16, acc1[i], m1, full, va, vb, beta);
      }
    }
  }
}

// 8 x 8 transpose: on return r[j] holds what was column j.
AD_TGT_AVX2 inline void transpose8x8_ps(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; i++) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int c = 0; c < 4; c++) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

// The same for the AVX2 kernel family (16-column blocks, F32Avx2::KC-deep chunks, its epilogue).
template <int M>
AD_TGT_AVX2 void gemv_f32_cols_avx2(const Args<float>& g, int64_t n0, int64_t n1) {
  constexpr int64_t KC = F32Avx2::KC;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t j = n0; j < n1; j += 16) {
    const int nr = (int)std::min<int64_t>(16, n1 - j);
    const __m256i mk0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane), mk1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      const int64_t kc = std::min(KC, g.K - pc);
      __m256 acc0[M], acc1[M];
      for (int i = 0; i < M; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
      if (!g.transB) {
        for (int64_t k = pc; k < pc + kc; k++) {
          const float* b = g.B + k * g.ldb + j;
          const __m256 b0 = _mm256_maskload_ps(b, mk0), b1 = _mm256_maskload_ps(b + 8, mk1);
          for (int i = 0; i < M; i++) {
            const __m256 ai = _mm256_broadcast_ss(g.A + i * g.lda + k);
            acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
          }
        }
      } else {
        // B(k, j) = B[j * ldb + k]: 8 columns x 8 k transposed in registers, twice per 16 columns
        for (int64_t kb = pc; kb < pc + kc; kb += 8) {
          const int kn = (int)std::min<int64_t>(8, pc + kc - kb);
          const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn), lane);
          __m256 r0[8], r1[8];
          for (int c = 0; c < 8; c++) {
            r0[c] = c < nr ? _mm256_maskload_ps(g.B + (j + c) * g.ldb + kb, mk) : _mm256_setzero_ps();
            r1[c] = c + 8 < nr ? _mm256_maskload_ps(g.B + (j + 8 + c) * g.ldb + kb, mk) : _mm256_setzero_ps();
          }
          transpose8x8_ps(r0);
          transpose8x8_ps(r1);
          for (int kk = 0; kk < kn; kk++)
            for (int i = 0; i < M; i++) {
              const __m256 ai = _mm256_broadcast_ss(g.A + i * g.lda + kb + kk);
              acc0[i] = _mm256_fmadd_ps(ai, r0[kk], acc0[i]);
              acc1[i] = _mm256_fmadd_ps(ai, r1[kk], acc1[i]);
            }
        }
      }
      const float beta = bias_tile(g, pc, 0, j, M, nr, pc == 0 ? g.beta : 1.0f);
      for (int i = 0; i < M; i++) store_row16_avx2(g.C + i * g.ldc + j, acc0[i], acc1[i], nr, g.alpha, beta);
    }
  }
}

// Runs gemv_f32_cols (or its AVX2 form) over C's columns on the pool (on the calling thread for a small product).
void gemv_f32(const Args<float>& g, bool avx512) {
  void (*fn)(const Args<float>&, int64_t, int64_t) =
      avx512 ? (g.M == 1 ? gemv_f32_cols<1> : g.M == 2 ? gemv_f32_cols<2> : g.M == 3 ? gemv_f32_cols<3> : gemv_f32_cols<4>)
             : (g.M == 1 ? gemv_f32_cols_avx2<1> : g.M == 2 ? gemv_f32_cols_avx2<2> : g.M == 3 ? gemv_f32_cols_avx2<3> : gemv_f32_cols_avx2<4>);
  const int64_t panels = cdiv(g.N, 32);
  const int nth = (double)g.M * (double)g.N * (double)g.K < 65536 ? 1 : (int)std::min<int64_t>(num_threads(), panels);
  if (nth <= 1) {
    fn(g, 0, g.N);
    return;
  }
  parallel_run(nth, [&](int tid, int nt) {
    fn(g, std::min(g.N, panels * tid / nt * 32), std::min(g.N, panels * (tid + 1) / nt * 32));
  });
}

void sgemm_dispatch_batched(int64_t batch, const Args<float>& g, int64_t sA, int64_t sB, int64_t sC) {
  if (batch == 1 && (cur_f32() == F32_AVX512 || cur_f32() == F32_AVX2) && g.M <= kGemvMaxM && !g.transA) {
    gemv_f32(g, cur_f32() == F32_AVX512);  // decode-sized: no packing
    return;
  }
  switch (cur_f32()) {
    case F32_AVX512: gemm_batched_run<F32Avx512>(batch, g, sA, sB, sC); break;
    case F32_AVX2: gemm_batched_run<F32Avx2>(batch, g, sA, sB, sC); break;
    default: gemm_batched_run<F32Scalar>(batch, g, sA, sB, sC); break;
  }
}

// Each of the M rows of C (leading dim ldc) set to the N-float bias row, or to zero.
void fill_rows(float* C, int64_t M, int64_t N, int64_t ldc, const float* bias) {
  for (int64_t r = 0; r < M; r++) {
    if (bias) std::memcpy(C + r * ldc, bias, (size_t)N * sizeof(float));
    else std::memset(C + r * ldc, 0, (size_t)N * sizeof(float));
  }
}

// bf16 -> f32 copy of a (rows x cols, leading dim ld) matrix into a dense one.
void bf16_to_f32_matrix(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = bf16f(src[r * ld + c]);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Public API

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm_batched(1, transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

void sgemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t strideA, const float* B, int64_t ldb, int64_t strideB,
                   float beta, float* C, int64_t ldc, int64_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    for (int64_t i = 0; i < batch; i++) scale_c(M, N, beta, C + i * strideC, ldc);
    return;
  }
  const Args<float> g{transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  if ((double)M * (double)N * (double)K < kSmallMacs) {
    for (int64_t i = 0; i < batch; i++) {
      Args<float> gi = g;
      gi.A += i * strideA;
      gi.B += i * strideB;
      gi.C += i * strideC;
      gemm_small(gi, [](float x) { return x; });
    }
    return;
  }
  sgemm_dispatch_batched(batch, g, strideA, strideB, strideC);
}

void sgemm_bias(bool transA, bool transB, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                const float* bias, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (!bias || K <= 0 || (double)M * (double)N * (double)K < kSmallMacs) {  // the bias rows first, then C += A·B
    fill_rows(C, M, N, ldc, bias);
    sgemm(transA, transB, M, N, K, 1.f, A, lda, B, ldb, 1.f, C, ldc);
    return;
  }
  Args<float> g{transA, transB, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc};
  g.bias = bias;  // the driver sets each tile of C to the bias just before the kernel adds to it
  sgemm_dispatch_batched(1, g, 0, 0, 0);
}

void bgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
           const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  bgemm_batched(1, transA, transB, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

void bgemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const uint16_t* A, int64_t lda, int64_t strideA, const uint16_t* B, int64_t ldb, int64_t strideB,
                   float beta, float* C, int64_t ldc, int64_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    for (int64_t i = 0; i < batch; i++) scale_c(M, N, beta, C + i * strideC, ldc);
    return;
  }
  const Args<uint16_t> g{transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  if ((double)M * (double)N * (double)K < kSmallMacs) {
    for (int64_t i = 0; i < batch; i++) {
      Args<uint16_t> gi = g;
      gi.A += i * strideA;
      gi.B += i * strideB;
      gi.C += i * strideC;
      gemm_small(gi, bf16f);
    }
    return;
  }
  const int isa = cur_b16();
  if (isa == B16_AMX) {
    gemm_batched_run<B16Amx>(batch, g, strideA, strideB, strideC);
    return;
  }
  if (isa == B16_AVX512BF16) {
    gemm_batched_run<B16Avx512>(batch, g, strideA, strideB, strideC);
    return;
  }
  // f32 fallback: widen A and B (each distinct batch slice once) and run sgemm.
  const int64_t ar = transA ? K : M, ac = transA ? M : K;
  const int64_t br = transB ? N : K, bc = transB ? K : N;
  const int64_t na = strideA == 0 ? 1 : batch, nb = strideB == 0 ? 1 : batch;
  std::vector<float> Af((size_t)(na * ar * ac)), Bf((size_t)(nb * br * bc));
  for (int64_t i = 0; i < na; i++) bf16_to_f32_matrix(A + i * strideA, ar, ac, lda, Af.data() + i * ar * ac);
  for (int64_t i = 0; i < nb; i++) bf16_to_f32_matrix(B + i * strideB, br, bc, ldb, Bf.data() + i * br * bc);
  sgemm_batched(batch, transA, transB, M, N, K, alpha, Af.data(), ac, strideA == 0 ? 0 : ar * ac, Bf.data(), bc,
                strideB == 0 ? 0 : br * bc, beta, C, ldc, strideC);
}

// Whether a product of this size runs on the AMX kernels (smaller ones take the direct loops).
static bool amx_runs(int64_t M, int64_t N, int64_t K) {
  return K > 0 && cur_b16() == B16_AMX && (double)M * (double)N * (double)K >= kSmallMacs;
}
// Whether it runs on the AVX512-BF16 kernels with f32 operands rounded as they are packed and, for a bf16 result, the
// rounding in the epilogue (K in one chunk).
static bool avx512bf16_runs(int64_t M, int64_t N, int64_t K, bool c16) {
  return K > 0 && cur_b16() == B16_AVX512BF16 && (double)M * (double)N * (double)K >= kSmallMacs && (!c16 || K <= kC16MaxK);
}

void bgemm_batched_bf16_out(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                            int64_t strideA, const uint16_t* B, int64_t ldb, int64_t strideB, uint16_t* C, int64_t ldc,
                            int64_t strideC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (avx512bf16_runs(M, N, K, true)) {
    Args<uint16_t> g{transA, transB, M, N, K, 1.f, A, lda, B, ldb, 0.f, nullptr, ldc};
    g.C16 = C;
    gemm_batched_run<B16Avx512>(batch, g, strideA, strideB, strideC);
    return;
  }
  if (!amx_runs(M, N, K)) {  // mgemm's f32 result and rounding
    mgemm_batched(batch, transA, transB, M, N, K, A, false, lda, strideA, B, false, ldb, strideB, nullptr, nullptr, ldc, strideC, C);
    return;
  }
  Args<uint16_t> g{transA, transB, M, N, K, 1.f, A, lda, B, ldb, 0.f, nullptr, ldc};
  g.C16 = C;
  gemm_batched_run<B16Amx>(batch, g, strideA, strideB, strideC);  // batch items split over the threads
}

bool bf16_small_available() { return cur_b16() == B16_AMX || cur_b16() == B16_AVX512BF16; }

bool bf16_small_gemm(int64_t M, int64_t N, int64_t K, const float* A, bool transA, int64_t lda, const float* B, int64_t ldb, float* C,
                    int64_t ldc, bool accumulate, bool transB, float alpha) {
  if (!bf16_small_available()) return false;
  if (M <= 0 || N <= 0) return true;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; i++) std::memset(C + i * ldc, 0, (size_t)N * sizeof(float));
    return true;
  }
  if (cur_b16() == B16_AMX)
    amx_small_run(M, N, K, A, transA, lda, B, ldb, C, ldc, accumulate, transB, alpha);
  else
    avx512bf16_small_run(M, N, K, A, transA, lda, B, ldb, C, ldc, accumulate, transB, alpha);
  return true;
}

void mgemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, const void* A, bool a_f32,
                   int64_t lda, int64_t strideA, const void* B, bool b_f32, int64_t ldb, int64_t strideB,
                   const float* bias, float* C, int64_t ldc, int64_t strideC, uint16_t* C16) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (avx512bf16_runs(M, N, K, C16 != nullptr)) {
    // the packers round f32 operands to bf16 on the fly; the epilogue adds the bias (and writes the bf16 result)
    Args<uint16_t> g{transA, transB, M, N, K, 1.f, static_cast<const uint16_t*>(A), lda, static_cast<const uint16_t*>(B), ldb,
                     0.f, C16 ? nullptr : C, ldc};
    g.a32 = a_f32;
    g.b32 = b_f32;
    g.bias = bias;
    g.C16 = C16;
    gemm_batched_run<B16Avx512>(batch, g, strideA, strideB, strideC);
    return;
  }
  if (C16 && !amx_runs(M, N, K)) {
    // a bf16 result where the epilogue cannot write it: the f32 result, then the cast's rounding
    std::vector<float> tmp((size_t)(M * N));
    for (int64_t i = 0; i < batch; i++) {
      mgemm_batched(1, transA, transB, M, N, K, static_cast<const char*>(A) + i * strideA * (a_f32 ? 4 : 2), a_f32, lda, 0,
                    static_cast<const char*>(B) + i * strideB * (b_f32 ? 4 : 2), b_f32, ldb, 0, bias, tmp.data(), N, 0, nullptr);
      for (int64_t r = 0; r < M; r++) f32_to_bf16_run(C16 + i * strideC + r * ldc, tmp.data() + r * N, N);
    }
    return;
  }
  auto at = [](const void* p, int64_t off, bool f32) {
    return reinterpret_cast<const uint16_t*>(static_cast<const char*>(p) + off * (f32 ? 4 : 2));
  };
  if (amx_runs(M, N, K)) {
    // the packers round f32 operands to bf16 on the fly; the bias is added in the kernel's epilogue
    for (int64_t i = 0; i < batch; i++) {
      Args<uint16_t> g{transA, transB, M, N, K, 1.f, at(A, i * strideA, a_f32), lda, at(B, i * strideB, b_f32), ldb, 0.f,
                       C16 ? nullptr : C + i * strideC, ldc};
      g.a32 = a_f32;
      g.b32 = b_f32;
      g.bias = bias;
      g.C16 = C16 ? C16 + i * strideC : nullptr;
      gemm_run<B16Amx>(g);
    }
    return;
  }
  // Elsewhere: bf16 copies of the f32 operands (dense, one per distinct batch item), C starts as the bias rows
  // (or zero), and bgemm accumulates onto it.
  auto to_bf16 = [](const void* src, bool f32, int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t n,
                    std::vector<uint16_t>& buf, int64_t* new_ld, int64_t* new_stride) -> const uint16_t* {
    if (!f32) {
      *new_ld = ld;
      *new_stride = stride;
      return static_cast<const uint16_t*>(src);
    }
    buf.resize((size_t)(n * rows * cols));
    const float* s = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; i++)
      for (int64_t r = 0; r < rows; r++) f32_to_bf16_run(buf.data() + (i * rows + r) * cols, s + i * stride + r * ld, cols);
    *new_ld = cols;
    *new_stride = stride == 0 ? 0 : rows * cols;
    return buf.data();
  };
  std::vector<uint16_t> ab, bb;
  int64_t lda2, sa2, ldb2, sb2;
  const uint16_t* A2 = to_bf16(A, a_f32, transA ? K : M, transA ? M : K, lda, strideA, strideA == 0 ? 1 : batch, ab, &lda2, &sa2);
  const uint16_t* B2 = to_bf16(B, b_f32, transB ? N : K, transB ? K : N, ldb, strideB, strideB == 0 ? 1 : batch, bb, &ldb2, &sb2);
  for (int64_t i = 0; i < batch; i++) fill_rows(C + i * strideC, M, N, ldc, bias);
  if (K > 0) bgemm_batched(batch, transA, transB, M, N, K, 1.f, A2, lda2, sa2, B2, ldb2, sb2, 1.f, C, ldc, strideC);
}

// The AMX bf16 peak: 2 x 2 accumulator tiles fed from tiles that stay loaded (no memory traffic), as the GEMM's
// inner loop would run with free operands. 0 where the CPU has no usable AMX.
alignas(64) const uint16_t kZeroPanel[1024] = {};

double amx_peak(int threads, int64_t iters) {
  if (!amx_permitted()) return 0;
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_run(threads, [&](int, int) { amx_steps(kZeroPanel, kZeroPanel, 1, iters, false); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 4.0 * 2 * 16 * 16 * 32 * (double)iters * threads / s / 1e9);  // 4 tile products per iteration
  }
  return best;
}

double amx_step_rate(int ns, bool loads, int64_t reps) {
  if (!amx_permitted() || ns <= 0 || reps <= 0) return 0;
  AlignedBuf ab, bb;
  uint16_t *a = ab.get<uint16_t>((size_t)ns * 1024), *b = bb.get<uint16_t>((size_t)ns * 1024);
  for (int64_t i = 0; i < (int64_t)ns * 1024; i++) a[i] = b[i] = 0x3c00;  // 2^-7: no overflow over many reps
  const auto t0 = std::chrono::steady_clock::now();
  amx_steps(a, b, ns, reps, loads);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 4.0 * 2 * 16 * 16 * 32 * (double)reps * ns / s / 1e9;
}

const char* sgemm_isa() {
  switch (cur_f32()) {
    case F32_AVX512: return "avx512";
    case F32_AVX2: return "avx2";
    default: return "scalar";
  }
}

const char* bgemm_isa() {
  switch (cur_b16()) {
    case B16_AMX: return "amx";
    case B16_AVX512BF16: return "avx512bf16";
    default: return "f32";
  }
}

void gemm_force_isa(const char* f32_isa, const char* bf16_isa) {
  auto eq = [](const char* a, const char* b) { return a && std::strcmp(a, b) == 0; };
  if (f32_isa) {
    int v = eq(f32_isa, "avx512") ? F32_AVX512
            : eq(f32_isa, "avx2") ? F32_AVX2
            : eq(f32_isa, "scalar") ? F32_SCALAR
                                    : F32_AUTO;
    g_force_f32.store(v);
  }
  if (bf16_isa) {
    int v = eq(bf16_isa, "amx") ? B16_AMX
            : eq(bf16_isa, "avx512bf16") ? B16_AVX512BF16
            : eq(bf16_isa, "f32") ? B16_F32
                                  : B16_AUTO;
    g_force_b16.store(v);
  }
}

}  // namespace ad
