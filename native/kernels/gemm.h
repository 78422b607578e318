// gemm.h — the GEMM contract every matmul-like op (matmul, bmm, linear, attention blocks) goes through.
// Row-major. C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C, where op(A) = A or Aᵀ.
//   A: transA ? (K,M) with leading dim lda : (M,K) with leading dim lda
//   B: transB ? (N,K) with leading dim ldb : (K,N) with leading dim ldb
//   C: (M,N) with leading dim ldc
// beta == 0 means C is write-only (NaNs in C are not propagated), as in BLAS.
// Implementations: a plain-loop reference (gemm_ref.cpp, the oracle), packed AVX2 / AVX-512 micro-kernels
// for f32 and AMX tiles / AVX512-BF16 for bf16, chosen at run time (gemm.cpp). All use the pool.
#pragma once
#include <cstdint>

namespace ad {

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// C = op(A)·op(B) + bias (bias: N floats added to every row of C, or null), f32; the bias is written into each tile of C
// just before the kernel adds to it, so no separate pass over C is made (the same bits as filling C first).
void sgemm_bias(bool transA, bool transB, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                const float* bias, float* C, int64_t ldc);
// Batched: batch i uses A + i*strideA, B + i*strideB, C + i*strideC (strides in elements; 0 broadcasts).
void sgemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t strideA, const float* B, int64_t ldb, int64_t strideB,
                   float beta, float* C, int64_t ldc, int64_t strideC);

// bf16 inputs (raw uint16 bit patterns), f32 accumulation and f32 output.
void bgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
           const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
void bgemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const uint16_t* A, int64_t lda, int64_t strideA, const uint16_t* B, int64_t ldb, int64_t strideB,
                   float beta, float* C, int64_t ldc, int64_t strideC);

// bf16 inputs and a bf16 result C = op(A)·B, rounded as the cast op rounds; on AMX the epilogue writes it (no f32
// result and cast pass), elsewhere through an f32 buffer.
void bgemm_batched_bf16_out(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                            int64_t strideA, const uint16_t* B, int64_t ldb, int64_t strideB, uint16_t* C, int64_t ldc,
                            int64_t strideC);

// Mixed precision: A and B each bf16 (raw bits) or f32 (a_f32 / b_f32), f32 rounded to bf16 exactly as a cast
// would (on AMX while it is packed, so no bf16 copy is made), products accumulated in f32:
// C = op(A)·op(B) + bias (bias: N floats added to every row of C, or null). Batched like bgemm_batched. With C16 the
// result is bf16 there instead (rounded as the cast op rounds; C unused).
void mgemm_batched(int64_t batch, bool transA, bool transB, int64_t M, int64_t N, int64_t K, const void* A, bool a_f32,
                   int64_t lda, int64_t strideA, const void* B, bool b_f32, int64_t ldb, int64_t strideB,
                   const float* bias, float* C, int64_t ldc, int64_t strideC, uint16_t* C16 = nullptr);

// A small product on the bf16 kernels (AMX tiles, or AVX512-BF16 without AMX) in the calling thread, no pool
// (attention's tiles under autocast): C (M x N, ldc) = alpha·op(A)·op(B) [+ C] with A f32 (transA ? (K,M) : (M,K), leading
// dim lda) and B f32 (transB ? (N,K) : (K,N), leading dim ldb), both rounded to bf16 as the cast op rounds, products
// accumulated in f32. Returns false, doing nothing, where the bf16 GEMMs run on neither (they widen to f32, by CPU or
// gemm_force_isa); bf16_small_available() tells beforehand.
bool bf16_small_gemm(int64_t M, int64_t N, int64_t K, const float* A, bool transA, int64_t lda, const float* B, int64_t ldb, float* C,
                     int64_t ldc, bool accumulate, bool transB = false, float alpha = 1.f);
bool bf16_small_available();

// Reference kernels (plain loops, f64-free, single thread): the oracle for tests and benches.
void sgemm_ref(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void bgemm_ref(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// GFLOP/s of AMX bf16 tile products on resident tiles (no memory traffic) on `threads` pool threads, best of 3 runs of
// `iters` x 4 products each; 0 without usable AMX. bench/gemm reports bf16 GEMMs against it.
double amx_peak(int threads, int64_t iters);
// GFLOP/s of the calling thread running the AMX micro-kernel's k step (4 tile loads, 4 tile products) over ns k steps of
// packed panels (2 KiB of A and of B each), re-read reps times (ns 8: 32 KiB, in L1; ns 48: 192 KiB, in L2), or with
// loads false the products alone on resident tiles; 0 without usable AMX. A dev measurement (gemm_selftest amxloop).
double amx_step_rate(int ns, bool loads, int64_t reps);

// Which kernel family sgemm/bgemm picked on this CPU: "avx512", "avx2", "scalar"; bf16: "amx", "avx512bf16", "f32".
const char* sgemm_isa();
const char* bgemm_isa();
// Force a lower ISA (for tests/benches): "auto", "avx512", "avx2", "scalar" / "amx", "avx512bf16", "f32".
void gemm_force_isa(const char* f32_isa, const char* bf16_isa);

}  // namespace ad
