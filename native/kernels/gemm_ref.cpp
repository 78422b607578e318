// gemm_ref.cpp — the oracle: plain loops, single thread, f32 accumulation in natural k order.
// Used by tests and benches to check the packed / vectorised kernels of gemm.cpp.
#include <cstdint>
#include <cstring>

#include "gemm.h"

namespace ad {
namespace {

// bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <class T, class Cvt>
void gemm_ref_impl(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, float beta, float* C, int64_t ldc, Cvt cvt) {
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        float a = cvt(transA ? A[k * lda + i] : A[i * lda + k]);
        float b = cvt(transB ? B[j * ldb + k] : B[k * ldb + j]);
        acc += a * b;
      }
      float* c = &C[i * ldc + j];
      *c = (beta == 0.0f) ? alpha * acc : alpha * acc + beta * *c;
    }
  }
}

}  // namespace

void sgemm_ref(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_ref_impl(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, [](float x) { return x; });
}

void bgemm_ref(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_ref_impl(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bf16_to_f32);
}

}  // namespace ad
