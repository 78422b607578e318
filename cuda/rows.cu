// rows.cu — softmax / log-softmax, layer / RMS norm, sums, cross-entropy and embeddings, forward and backward, f32.
// One thread per line, row or column, running the per-row code of rows_math.h (shared with the host-side mock that
// tests it without a GPU). This is the correctness-first form: block-per-row kernels with warp reductions are the
// next step once these have been measured on a GPU.
#include "adapters_cuda.h"
#include "common.cuh"
#include "rows_math.h"

namespace {

constexpr int kThreads = 128;
int blocks_for(int64_t n) { return ad_cuda::grid_for(n, kThreads); }
#define AD_FOR AD_GRID_FOR

__global__ void softmax_kernel(int log, int64_t lines, int64_t R, int64_t I, const float* x, float* y) {
  AD_FOR(t, lines) ad_rows::softmax_fwd(t, R, I, x, y, log != 0);
}
__global__ void softmax_bwd_kernel(int log, int64_t lines, int64_t R, int64_t I, const float* y, const float* g, float* gi) {
  AD_FOR(t, lines) ad_rows::softmax_bwd(t, R, I, y, g, gi, log != 0);
}
__global__ void norm_kernel(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* b, float eps, float* y,
                            float* m, float* rs) {
  AD_FOR(r, N) ad_rows::norm_fwd(r, C, x, w, b, eps, rms != 0, y, m, rs);
}
__global__ void norm_dx_kernel(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* m, const float* rs,
                               const float* g, float* dx) {
  AD_FOR(r, N) ad_rows::norm_bwd_dx(r, C, x, w, m, rs, g, rms != 0, dx);
}
__global__ void norm_dparams_kernel(int rms, int64_t N, int64_t C, const float* x, const float* m, const float* rs,
                                    const float* g, float* dw, float* db) {
  AD_FOR(k, C) ad_rows::norm_bwd_dparams(k, N, C, x, m, rs, g, rms != 0, dw, db);
}
__global__ void sum_kernel(int64_t lines, int64_t R, int64_t I, const float* x, float* out) {
  AD_FOR(t, lines) ad_rows::sum_line(t, R, I, x, out);
}
__global__ void ce_kernel(int64_t N, int64_t C, const float* x, const int64_t* t, int64_t ignore, float eps, float* lse,
                          float* rows) {
  AD_FOR(i, N) ad_rows::ce_fwd(i, C, x, t, ignore, eps, lse, rows);
}
__global__ void ce_bwd_kernel(int64_t N, int64_t C, const float* x, const int64_t* t, const float* lse, int64_t ignore,
                              float eps, const float* g, int per_row, float scale, float* d) {
  AD_FOR(i, N) ad_rows::ce_bwd(i, C, x, t, lse, ignore, eps, (per_row ? g[i] : g[0]) * scale, d);
}
__global__ void embedding_kernel(int64_t n, int64_t C, const int64_t* ids, const float* w, float* out) {
  AD_FOR(k, n) ad_rows::embedding_row(k, C, ids, w, out);
}
__global__ void embedding_bwd_kernel(int64_t n, int64_t C, const int64_t* ids, const float* g, float* d) {
  AD_FOR(j, C) ad_rows::embedding_bwd_col(j, n, C, ids, g, d);
}

__global__ void rope_kernel(int64_t rows, int64_t T, int64_t D, int64_t perB, const float* x, const float* cs, const float* sn, float* y,
                            int inter, int bwd) {
  AD_FOR(r, rows) ad_rows::rope_row(r, T, D, perB, x, cs, sn, y, inter != 0, bwd != 0);
}

}  // namespace

#define AD_LAUNCH(n, kernel, ...)                                                                   \
  do {                                                                                              \
    if ((n) > 0) {                                                                                  \
      kernel<<<blocks_for(n), kThreads, 0, ad_cuda::as_stream(stream)>>>(__VA_ARGS__);             \
      AD_CUDA_CHECK_LAUNCH();                                                                       \
    }                                                                                               \
    return 0;                                                                                       \
  } while (0)

extern "C" {

int adapters_cuda_softmax_f32(int log, int64_t O, int64_t R, int64_t I, const float* x, float* y, void* stream) {
  if (O < 0 || R < 0 || I < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(O * I, softmax_kernel, log, O * I, R, I, x, y);
}
int adapters_cuda_softmax_backward_f32(int log, int64_t O, int64_t R, int64_t I, const float* y, const float* g, float* gi,
                                       void* stream) {
  if (O < 0 || R < 0 || I < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(O * I, softmax_bwd_kernel, log, O * I, R, I, y, g, gi);
}
int adapters_cuda_norm_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* b, float eps, float* y,
                           float* mean, float* rstd, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(N, norm_kernel, rms, N, C, x, w, b, eps, y, mean, rstd);
}
int adapters_cuda_norm_backward_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* mean,
                                    const float* rstd, const float* g, float* dx, float* dw, float* db, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  if (N > 0) {
    norm_dx_kernel<<<blocks_for(N), kThreads, 0, ad_cuda::as_stream(stream)>>>(rms, N, C, x, w, mean, rstd, g, dx);
    AD_CUDA_CHECK_LAUNCH();
  }
  if (dw || db) AD_LAUNCH(C, norm_dparams_kernel, rms, N, C, x, mean, rstd, g, dw, db);
  return 0;
}
int adapters_cuda_sum_f32(int64_t O, int64_t R, int64_t I, const float* x, float* out, void* stream) {
  if (O < 0 || R < 0 || I < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(O * I, sum_kernel, O * I, R, I, x, out);
}
int adapters_cuda_cross_entropy_f32(int64_t N, int64_t C, const float* logits, const int64_t* targets, int64_t ignore_index,
                                    float label_smoothing, float* lse, float* row_loss, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(N, ce_kernel, N, C, logits, targets, ignore_index, label_smoothing, lse, row_loss);
}
int adapters_cuda_cross_entropy_backward_f32(int64_t N, int64_t C, const float* logits, const int64_t* targets, const float* lse,
                                             int64_t ignore_index, float label_smoothing, const float* gout, int per_row,
                                             float scale, float* dlogits, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(N, ce_bwd_kernel, N, C, logits, targets, lse, ignore_index, label_smoothing, gout, per_row, scale, dlogits);
}
int adapters_cuda_embedding_f32(int64_t n, int64_t C, const int64_t* ids, const float* weight, float* out, void* stream) {
  if (n < 0 || C < 0) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(C > 0 ? n : 0, embedding_kernel, n, C, ids, weight, out);
}
int adapters_cuda_embedding_backward_f32(int64_t n, int64_t C, const int64_t* ids, const float* g, float* dweight, void* stream) {
  if (n < 0 || C < 0) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(C, embedding_bwd_kernel, n, C, ids, g, dweight);
}

int adapters_cuda_rope_f32(int64_t rows, int64_t T, int64_t D, int64_t per_batch_rows, const float* x, const float* cos, const float* sin,
                           float* y, int interleaved, int backward, void* stream) {
  if (rows < 0 || T < 1 || D < 2 || D % 2 || per_batch_rows < 0) return (int)cudaErrorInvalidValue;
  AD_LAUNCH(rows, rope_kernel, rows, T, D, per_batch_rows, x, cos, sin, y, interleaved, backward);
}

}  // extern "C"
