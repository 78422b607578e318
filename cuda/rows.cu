// rows.cu — softmax / log-softmax, layer / RMS norm, sums, cross-entropy and embeddings, forward and backward, f32.
// Mostly one thread per line, row or column, running the per-row code of rows_math.h (shared with the host-side mock
// that tests it without a GPU). Where that was measured to cost (BERT training on an H200): layer / RMS norm run one
// warp per row (lanes stride the row, double partial sums reduced across the warp); their parameter gradients and
// column sums over many rows (bias gradients) run in two stages, row chunks into double partials, then the chunks
// summed in order per column (deterministic, no atomics).
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

// ---- warp-per-row norms and chunked column sums ------------------------------------------------------------------
constexpr int kWarpThreads = 256;  // 8 rows per block
__device__ inline double warp_sum(double v) {
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
int warp_blocks(int64_t rows) { return ad_cuda::grid_for(rows * 32, kWarpThreads); }
#define AD_WARP_FOR(r, n)                                                                               \
  for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; r < (n);                      \
       r += ((int64_t)gridDim.x * blockDim.x) >> 5)

// norm_fwd of rows_math.h, one warp per row
__global__ void norm_warp_kernel(int rms, int64_t N, int64_t C, const float* X, const float* W, const float* B, float eps, float* Y,
                                 float* M, float* RS) {
  const int lane = threadIdx.x & 31;
  AD_WARP_FOR(r, N) {
    const float* xr = X + r * C;
    double mu = 0, var = 0;
    if (!rms) {
      for (int64_t k = lane; k < C; k += 32) mu += xr[k];
      mu = warp_sum(mu) / C;
    }
    for (int64_t k = lane; k < C; k += 32) {
      const double d = xr[k] - mu;
      var += d * d;
    }
    var = warp_sum(var) / C;
    const float rs = (float)(1.0 / sqrt(var + eps)), m = (float)mu;
    if (lane == 0) {
      M[r] = m;
      RS[r] = rs;
    }
    for (int64_t k = lane; k < C; k += 32) {
      float v = (xr[k] - m) * rs;
      if (W) v *= W[k];
      if (B) v += B[k];
      Y[r * C + k] = v;
    }
  }
}

// norm_bwd_dx of rows_math.h, one warp per row
__global__ void norm_dx_warp_kernel(int rms, int64_t N, int64_t C, const float* X, const float* W, const float* M, const float* RS,
                                    const float* G, float* DX) {
  const int lane = threadIdx.x & 31;
  AD_WARP_FOR(r, N) {
    const float *xr = X + r * C, *gr = G + r * C;
    const float m = rms ? 0.f : M[r], rs = RS[r];
    double s1 = 0, s2 = 0;
    for (int64_t k = lane; k < C; k += 32) {
      const float xh = (xr[k] - m) * rs;
      const float d = W ? gr[k] * W[k] : gr[k];
      s1 += d;
      s2 += (double)d * xh;
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    const float a = rms ? 0.f : (float)(s1 / C), bcoef = (float)(s2 / C);
    for (int64_t k = lane; k < C; k += 32) {
      const float xh = (xr[k] - m) * rs;
      const float d = W ? gr[k] * W[k] : gr[k];
      DX[r * C + k] = rs * (d - a - xh * bcoef);
    }
  }
}

constexpr int64_t kChunkRows = 64;  // rows per partial sum in the two-stage column sums
// stage 1 of the norm parameter gradients: P[c][k] = (Σ g·xhat, Σ g) over rows of chunk c
__global__ void norm_dparams_part_kernel(int rms, int64_t N, int64_t C, int64_t chunks, const float* X, const float* M, const float* RS,
                                         const float* G, double* P) {
  AD_GRID_FOR(t, chunks * C) {
    const int64_t c = t / C, k = t % C, r1 = (c + 1) * kChunkRows < N ? (c + 1) * kChunkRows : N;
    double dw = 0, db = 0;
    for (int64_t r = c * kChunkRows; r < r1; r++) {
      const float xh = (X[r * C + k] - (rms ? 0.f : M[r])) * RS[r];
      dw += (double)G[r * C + k] * xh;
      db += G[r * C + k];
    }
    P[2 * t] = dw;
    P[2 * t + 1] = db;
  }
}
__global__ void norm_dparams_final_kernel(int64_t C, int64_t chunks, const double* P, float* DW, float* DB) {
  AD_GRID_FOR(k, C) {
    double dw = 0, db = 0;
    for (int64_t c = 0; c < chunks; c++) {
      dw += P[2 * (c * C + k)];
      db += P[2 * (c * C + k) + 1];
    }
    if (DW) DW[k] = (float)dw;
    if (DB) DB[k] = (float)db;
  }
}
// sum over axis R of an (O, R, I) view in two stages: P[c][t] over k in chunk c of line t, then the chunks in order
__global__ void sum_part_kernel(int64_t lines, int64_t R, int64_t I, int64_t chunks, const float* X, double* P) {
  AD_GRID_FOR(u, chunks * lines) {
    const int64_t c = u / lines, t = u % lines, k1 = (c + 1) * kChunkRows < R ? (c + 1) * kChunkRows : R;
    double s = 0;
    for (int64_t k = c * kChunkRows; k < k1; k++) s += X[ad_rows::at(t, R, I, k)];
    P[u] = s;
  }
}
__global__ void sum_final_kernel(int64_t lines, int64_t chunks, const double* P, float* OUT) {
  AD_GRID_FOR(t, lines) {
    double s = 0;
    for (int64_t c = 0; c < chunks; c++) s += P[c * lines + t];
    OUT[t] = (float)s;
  }
}
// Few long lines leave most of the GPU idle with one thread per line: split them when that gives more threads.
bool split_lines(int64_t lines, int64_t R) { return lines < (1 << 16) && R >= 4 * kChunkRows; }

}  // namespace


extern "C" {

int adapters_cuda_softmax_f32(int log, int64_t O, int64_t R, int64_t I, const float* x, float* y, void* stream) {
  if (O < 0 || R < 0 || I < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(O * I, kThreads, softmax_kernel, log, O * I, R, I, x, y);
}
int adapters_cuda_softmax_backward_f32(int log, int64_t O, int64_t R, int64_t I, const float* y, const float* g, float* gi,
                                       void* stream) {
  if (O < 0 || R < 0 || I < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(O * I, kThreads, softmax_bwd_kernel, log, O * I, R, I, y, g, gi);
}
int adapters_cuda_norm_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* b, float eps, float* y,
                           float* mean, float* rstd, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  if (N > 0) {
    norm_warp_kernel<<<warp_blocks(N), kWarpThreads, 0, ad_cuda::as_stream(stream)>>>(rms, N, C, x, w, b, eps, y, mean, rstd);
    AD_CUDA_CHECK_LAUNCH();
  }
  return 0;
}
int adapters_cuda_norm_backward_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* mean,
                                    const float* rstd, const float* g, float* dx, float* dw, float* db, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (N > 0) {
    norm_dx_warp_kernel<<<warp_blocks(N), kWarpThreads, 0, s>>>(rms, N, C, x, w, mean, rstd, g, dx);
    AD_CUDA_CHECK_LAUNCH();
  }
  if (!dw && !db) return 0;
  if (!split_lines(C, N)) AD_LAUNCH_RETURN(C, kThreads, norm_dparams_kernel, rms, N, C, x, mean, rstd, g, dw, db);
  const int64_t chunks = ad_cuda::ceil_div(N, kChunkRows);
  void* scratch = nullptr;
  AD_CUDA_TRY((cudaError_t)adapters_cuda_malloc(&scratch, (size_t)chunks * C * 2 * sizeof(double)));
  double* P = static_cast<double*>(scratch);
  norm_dparams_part_kernel<<<blocks_for(chunks * C), kThreads, 0, s>>>(rms, N, C, chunks, x, mean, rstd, g, P);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) {
    norm_dparams_final_kernel<<<blocks_for(C), kThreads, 0, s>>>(C, chunks, P, dw, db);
    e = cudaGetLastError();
  }
  const int frc = adapters_cuda_free(scratch);  // stream-ordered reuse
  return e != cudaSuccess ? (int)e : frc;
}
int adapters_cuda_sum_f32(int64_t O, int64_t R, int64_t I, const float* x, float* out, void* stream) {
  if (O < 0 || R < 0 || I < 1) return (int)cudaErrorInvalidValue;
  if (!split_lines(O * I, R)) AD_LAUNCH_RETURN(O * I, kThreads, sum_kernel, O * I, R, I, x, out);
  cudaStream_t s = ad_cuda::as_stream(stream);
  const int64_t lines = O * I, chunks = ad_cuda::ceil_div(R, kChunkRows);
  void* scratch = nullptr;
  AD_CUDA_TRY((cudaError_t)adapters_cuda_malloc(&scratch, (size_t)chunks * lines * sizeof(double)));
  double* P = static_cast<double*>(scratch);
  sum_part_kernel<<<blocks_for(chunks * lines), kThreads, 0, s>>>(lines, R, I, chunks, x, P);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) {
    sum_final_kernel<<<blocks_for(lines), kThreads, 0, s>>>(lines, chunks, P, out);
    e = cudaGetLastError();
  }
  const int frc = adapters_cuda_free(scratch);
  return e != cudaSuccess ? (int)e : frc;
}
int adapters_cuda_cross_entropy_f32(int64_t N, int64_t C, const float* logits, const int64_t* targets, int64_t ignore_index,
                                    float label_smoothing, float* lse, float* row_loss, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(N, kThreads, ce_kernel, N, C, logits, targets, ignore_index, label_smoothing, lse, row_loss);
}
int adapters_cuda_cross_entropy_backward_f32(int64_t N, int64_t C, const float* logits, const int64_t* targets, const float* lse,
                                             int64_t ignore_index, float label_smoothing, const float* gout, int per_row,
                                             float scale, float* dlogits, void* stream) {
  if (N < 0 || C < 1) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(N, kThreads, ce_bwd_kernel, N, C, logits, targets, lse, ignore_index, label_smoothing, gout, per_row, scale, dlogits);
}
int adapters_cuda_embedding_f32(int64_t n, int64_t C, const int64_t* ids, const float* weight, float* out, void* stream) {
  if (n < 0 || C < 0) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(C > 0 ? n : 0, kThreads, embedding_kernel, n, C, ids, weight, out);
}
int adapters_cuda_embedding_backward_f32(int64_t n, int64_t C, const int64_t* ids, const float* g, float* dweight, void* stream) {
  if (n < 0 || C < 0) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(C, kThreads, embedding_bwd_kernel, n, C, ids, g, dweight);
}

int adapters_cuda_rope_f32(int64_t rows, int64_t T, int64_t D, int64_t per_batch_rows, const float* x, const float* cos, const float* sin,
                           float* y, int interleaved, int backward, void* stream) {
  if (rows < 0 || T < 1 || D < 2 || D % 2 || per_batch_rows < 0) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_RETURN(rows, kThreads, rope_kernel, rows, T, D, per_batch_rows, x, cos, sin, y, interleaved, backward);
}

}  // extern "C"
