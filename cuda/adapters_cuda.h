/* adapters_cuda.h — the C ABI of libadapters_cuda.so (resolved with dlsym by native/cuda_loader.cpp).
 *
 * Plain C, no CUDA headers needed: device pointers are void* / typed host pointers to device memory,
 * streams are void* (a cudaStream_t; NULL is the legacy default stream).
 * Every function that can fail returns 0 on success or a cudaError_t code (> 0); nothing here aborts or
 * exits. adapters_cuda_error_string() turns a code into text.
 *
 * Matrices follow the CPU contract of native/kernels/gemm.h (row-major, BLAS-like transposes).
 */
#ifndef ADAPTERS_CUDA_H
#define ADAPTERS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- table.cu: discovery ---------------------------------------------------------------------------- */
int adapters_cuda_abi_version(void);
/* Number of usable CUDA devices (0 when the driver is missing or no device is present). */
int adapters_cuda_device_count(void);
/* Writes the device name into buf (NUL-terminated). */
int adapters_cuda_device_name(int dev, char* buf, int len);
/* Text for a code returned by any function here ("no error" for 0). Static storage. */
const char* adapters_cuda_error_string(int code);

/* ---- memory.cu: caching allocator, copies, synchronisation ------------------------------------------ */
/* Device memory from a caching allocator: sizes are rounded up to a size class (multiples of 512 B below
 * 1 MiB, then four classes per power of two), freed blocks go to a per-device, per-class free list and are
 * reused by the next allocation of that class. Reuse is stream-ordered for ONE stream: memory freed
 * while kernels that use it are still queued may be handed to the next allocation at once, which is safe
 * only when that allocation is used on the same stream (what the addon does). Synchronise before
 * handing memory between streams. bytes == 0 gives *ptr = NULL and success. When cudaMalloc fails the
 * cache is emptied and the allocation retried once; then cudaErrorMemoryAllocation is returned. */
int adapters_cuda_malloc(void** ptr, size_t bytes);
/* Returns the block to the cache (NULL is a no-op; a pointer not from adapters_cuda_malloc gives
 * cudaErrorInvalidDevicePointer). */
int adapters_cuda_free(void* ptr);
/* cudaFree's every cached (unused) block of every device. Blocks in use are untouched. */
int adapters_cuda_empty_cache(void);

typedef struct adapters_cuda_mem_stats {
  uint64_t allocated_bytes;      /* bytes in blocks handed out now (class sizes, not requested sizes) */
  uint64_t peak_allocated_bytes; /* high-water mark of allocated_bytes since the last reset */
  uint64_t requested_bytes;      /* sum of the sizes callers asked for, now */
  uint64_t reserved_bytes;       /* bytes held from cudaMalloc now (allocated + cached) */
  uint64_t peak_reserved_bytes;
  uint64_t cached_bytes;         /* reserved - allocated: free blocks waiting for reuse */
  uint64_t num_allocs;           /* adapters_cuda_malloc calls that returned memory */
  uint64_t num_frees;
  uint64_t num_cache_hits;       /* allocations served from the free lists */
  uint64_t num_device_mallocs;   /* cudaMalloc calls that succeeded */
  uint64_t num_device_frees;     /* cudaFree calls */
  uint64_t num_oom_retries;      /* cudaMalloc failures that emptied the cache and retried */
} adapters_cuda_mem_stats;
/* Totals over all devices. */
int adapters_cuda_memory_stats(adapters_cuda_mem_stats* out);
/* Peaks restart from the current values. */
int adapters_cuda_reset_peak_stats(void);
/* The size class an allocation of `bytes` gets (for tests and tools). */
size_t adapters_cuda_size_class(size_t bytes);

/* Copies enqueue on `stream`. H2D returns once the source may be reused (pageable sources are staged
 * by the driver). D2H returns once the bytes are in host memory (it synchronises the stream). */
int adapters_cuda_memcpy_h2d(void* dst_device, const void* src_host, size_t bytes, void* stream);
int adapters_cuda_memcpy_d2h(void* dst_host, const void* src_device, size_t bytes, void* stream);
int adapters_cuda_memcpy_d2d(void* dst_device, const void* src_device, size_t bytes, void* stream);
int adapters_cuda_memset(void* dst_device, int byte_value, size_t bytes, void* stream);
/* Waits for `stream` (NULL: the whole device) and returns the first pending error, if any (including an
 * error of an earlier asynchronous kernel). */
int adapters_cuda_synchronize(void* stream);
int adapters_cuda_set_device(int dev);
int adapters_cuda_get_device(int* dev);

/* ---- gemm.cu: matrix products ------------------------------------------------------------------------ */
/* C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C (row-major, gemm.h's contract):
 *   A: transA ? (K,M) ld lda : (M,K) ld lda;  B: transB ? (N,K) ld ldb : (K,N) ld ldb;  C: (M,N) ld ldc.
 * beta == 0: C is write-only (NaNs in C are not propagated). M == 0 or N == 0: nothing to do. K == 0:
 * C = beta*C. Leading dimensions must be >= the row length (and >= 1); else cudaErrorInvalidValue.
 * All work is enqueued on `stream`; errors of the launch are returned, errors during the kernel show up
 * at the next synchronisation.
 *
 * bf16: A and B are raw bf16 bit patterns, products are exact in f32, accumulation and C are f32, on the
 * tensor cores. sm_90a builds use wgmma + TMA (needs lda, ldb multiples of 8 and 16-byte-aligned A, B);
 * other cases use mma.sync m16n8k16 (any shape, any alignment). The environment variable
 * ADAPTERS_CUDA_DISABLE_WGMMA=1 (read at the first call per device) turns the wgmma kernels off. */
int adapters_cuda_gemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                            const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
                            int64_t ldc, void* stream);
/* bf16 in, bf16 out: as adapters_cuda_gemm_bf16 (same kernels, f32 accumulation), with alpha·acc + beta·C rounded to
 * bf16 (nearest even) in the epilogue; C (and beta's C) is bf16. */
int adapters_cuda_gemm_bf16_out(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                                const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, uint16_t* C,
                                int64_t ldc, void* stream);
/* f32: full f32 precision by default (CUDA-core FFMA tiles, like torch with TF32 off); at precision 1 (below, or
 * ADAPTERS_CUDA_F32_GEMM=3xtf32) 3xTF32 on the tensor cores (each operand split into two TF32 parts; f32-class
 * error, ~2^-22 of each product). */
int adapters_cuda_gemm_f32(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                           void* stream);
/* f32 kernel variants, for tests and benchmarks: 0 auto (what gemm_f32 runs: 3 for skinny products with a long K,
 * else 2, or 4 where splitting K fills more of the GPU; 5 and 6 instead of 2 and 4 at precision 1),
 * 1 the 128x128x8 FFMA tile kernel, 2 the 128x128x16 FFMA kernel with float4 loads, 3 split-K 64x64 FFMA tiles, 4 the
 * 128x128x16 FFMA kernel with K split (at least in two), 5 and 6 the same 128x128x16 kernel (unsplit, split) with
 * 3xTF32 tensor-core tiles (two blocks per SM), 7 and 8 likewise with one block per SM, 9 and 10 (unsplit, split)
 * 3xTF32 with a cp.async pipeline (128x128x32 tiles, 3 stages; not yet run on a GPU). */
int adapters_cuda_gemm_f32_variant(int variant, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                                   int64_t ldc, void* stream);
const char* adapters_cuda_gemm_f32_variant_name(int variant);
/* f32 matmul precision for every f32 product of the library, as torch.set_float32_matmul_precision: 0 "highest"
 * (FFMA, the default), 1 "high" (3xTF32). Process-wide. */
int adapters_cuda_set_f32_matmul_precision(int mode);
int adapters_cuda_get_f32_matmul_precision(void);
/* batch independent f32 products C_i = alpha·op(A_i)·op(B_i) + beta·C_i with X_i = X + i·strideX (elements); the
 * 128x128x16 kernel (FFMA tiles, 3xTF32 at precision 1; tf32 nonzero: operands rounded to TF32 once, 1xTF32, for
 * autocast), one launch per 65535 items. */
int adapters_cuda_gemm_f32_batched(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                                   int64_t strideA, const float* B, int64_t ldb, int64_t strideB, float beta, float* C, int64_t ldc,
                                   int64_t strideC, int64_t batch, int tf32, void* stream);
/* The variant auto runs for an f32 product of this size on the current device (diagnostics; negative on error). */
int adapters_cuda_gemm_f32_pick(int64_t M, int64_t N, int64_t K);

/* Kernel variants, for tests and benchmarks: variant 0 is the automatic choice (what gemm_bf16 runs);
 * 1.. name fixed kernels (see adapters_cuda_gemm_bf16_variant_name). A variant that cannot run the given
 * problem (alignment, missing sm_90a code) returns cudaErrorNotSupported without launching. */
int adapters_cuda_gemm_bf16_variant(int variant, int transA, int transB, int64_t M, int64_t N, int64_t K,
                                    float alpha, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
                                    float beta, float* C, int64_t ldc, void* stream);
/* Name of a variant ("" past the last one). */
const char* adapters_cuda_gemm_bf16_variant_name(int variant);
/* The variant adapters_cuda_gemm_bf16 would run for this problem on the current device (diagnostics;
 * 0 when there is nothing to launch, negative (-code) on invalid arguments). */
int adapters_cuda_gemm_bf16_pick(int transA, int transB, int64_t M, int64_t N, int64_t K, const uint16_t* A,
                                 int64_t lda, const uint16_t* B, int64_t ldb);
/* 1 when the wgmma (sm_90a) kernels are in this build and the current device runs them. */
int adapters_cuda_gemm_has_wgmma(void);

/* ---- optim.cu: optimiser steps ------------------------------------------------------------------------ */
/* AdamW over n tensors in ONE kernel launch, in place, with the arithmetic of native/kernels/optim.cpp
 * (torch.optim.AdamW, single-tensor path):
 *   p ← p·(1 − lr·wd)   (skipped when wd == 0);  m ← m + (1−β1)(g − m);  v ← β2·v + (1−β2)·g·g;
 *   p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + eps)
 * params/grads/exp_avg/exp_avg_sq/numel are HOST arrays of n entries holding DEVICE pointers (contiguous
 * f32 tensors); hyper is a host array (n,2) of [lr, weight_decay]. The tensor table is copied to the
 * device (through the caching allocator) with the launch; the call does not wait for the kernel. */
int adapters_cuda_adamw_step(int64_t n, float* const* params, const float* const* grads, float* const* exp_avg,
                             float* const* exp_avg_sq, const int64_t* numel, const float* hyper, float beta1,
                             float beta2, float eps, int64_t step, void* stream);

/* ---- elementwise.cu: elementwise ops (per-element code in elementwise_math.h) ----------------------------- */
/* out[i] = a[·] op b[·] over a broadcast index space of ndim <= 8 dims (row-major over shape); a and b are
 * addressed by their strides in elements (0 on broadcast dims; offsets folded into the pointers; bstrides NULL =
 * contiguous); out is contiguous. op: 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum (NaN-propagating). f32. */
int adapters_cuda_binary_f32(int op, int ndim, const int64_t* shape, const float* a, const int64_t* astrides,
                             const float* b, const int64_t* bstrides, float* out, void* stream);
/* y = f(x) over n contiguous floats. op: native/kernels/unary.h's UnOp codes 0..17 (neg … identity), 18 affine
 * (p0·x + p1), 19 pow (x^p0). */
int adapters_cuda_unary_f32(int op, int64_t n, const float* x, float* y, float p0, float p1, void* stream);
/* out = g · f'(x) for the activations (relu, gelu, gelu_tanh, quick_gelu, silu, tanh, sigmoid, atan, identity). */
int adapters_cuda_unary_backward_f32(int op, int64_t n, const float* x, const float* g, float* out, void* stream);
/* dst = src over an index space of ndim <= 8 dims, each addressed through its strides (dstrides NULL =
 * contiguous; sstrides may hold 0 to broadcast), converted; dtypes: 0 f32, 1 bf16 (round to nearest even, as the
 * CPU). The destination elements must not overlap. */
int adapters_cuda_copy_strided(int src_dtype, int dst_dtype, int ndim, const int64_t* shape, const void* src,
                               const int64_t* sstrides, void* dst, const int64_t* dstrides, void* stream);
/* Dtype codes of the functions below and of copy_strided: 0 f32, 1 bf16, 2 i64, 3 i32, 4 bool (one byte). */
/* out (bool bytes, contiguous over shape) = a op b, broadcast through strides (0 on broadcast dims); op: 0 eq, 1 ne,
 * 2 lt, 3 le, 4 gt, 5 ge (in f32 when either operand is floating, else int64), 6 logical and, 7 logical or. */
int adapters_cuda_compare(int op, int ndim, const int64_t* shape, const void* a, int adtype, const int64_t* astrides,
                          const void* b, int bdtype, const int64_t* bstrides, uint8_t* out, void* stream);
/* out (contiguous, dtype 0 f32 or 2 i64) = cond ? a : b; cond bool bytes, a and b of out's dtype, all through strides. */
int adapters_cuda_where(int ndim, const int64_t* shape, const uint8_t* cond, const int64_t* cstrides, const void* a,
                        const int64_t* astrides, const void* b, const int64_t* bstrides, int dtype, void* out, void* stream);
/* out (contiguous, dtype 0 f32 or 2 i64) = mask ? value : x; x of out's dtype and mask (bool bytes) through strides. */
int adapters_cuda_masked_fill(int ndim, const int64_t* shape, const void* x, const int64_t* xstrides, const uint8_t* mask,
                              const int64_t* mstrides, int dtype, double value, void* out, void* stream);

/* ---- sgmv.cu: segmented multi-LoRA in single launches (per-element code in sgmv_math.h) ------------------------ */
#define ADAPTERS_CUDA_SGMV_MAX 32
/* The adapter table, passed by value to the kernels: adapter i owns rows [start[i], start[i+1]) of x (M, K), has
 * rank rank[i] <= R, scale scale[i], A[i] (rank, K) and B[i] (O, rank) on the device; aoff / boff are the prefix sums of
 * rank·K and O·rank (where dA_i / dB_i start in the gradient buffers). */
typedef struct adapters_cuda_sgmv {
  int n;
  int64_t M, K, O, R;
  int64_t start[ADAPTERS_CUDA_SGMV_MAX + 1];
  int64_t rank[ADAPTERS_CUDA_SGMV_MAX];
  float scale[ADAPTERS_CUDA_SGMV_MAX];
  const float* A[ADAPTERS_CUDA_SGMV_MAX];
  const float* B[ADAPTERS_CUDA_SGMV_MAX];
  int64_t aoff[ADAPTERS_CUDA_SGMV_MAX + 1];
  int64_t boff[ADAPTERS_CUDA_SGMV_MAX + 1];
} adapters_cuda_sgmv;
/* t (M, R) = A_i·x per row (0 past the rank, and on rows of no segment); d (M, O) = s_i·B_i·t (0 on rows of no segment). */
int adapters_cuda_lora_sgmv_f32(const adapters_cuda_sgmv* table, const float* x, float* t, float* d, void* stream);
/* gt (M, R) scratch = s_i·g·B_i; gx (M, K) = gt·A_i; dA (Σ rank·K) = gtᵀ·x per segment; dB (Σ O·rank) = s_i·gᵀ·t per segment. */
int adapters_cuda_lora_sgmv_backward_f32(const adapters_cuda_sgmv* table, const float* g, const float* x, const float* t, float* gt,
                                         float* gx, float* dA, float* dB, void* stream);

/* The bottleneck table: adapter i owns rows [start[i], start[i+1]) of h (M, C), has width width[i] <= D, activation
 * act (the unary op code), scale scale[i], Wd[i] (width, C), bd[i] (width), Wu[i] (C, width), bu[i] (C) on the device;
 * woff = prefix sums of width·C (where dWd_i and dWu_i start in their buffers), doff = prefix sums of width. */
typedef struct adapters_cuda_bn_sgmv {
  int n, act;
  int64_t M, C, D;
  int64_t start[ADAPTERS_CUDA_SGMV_MAX + 1];
  int64_t width[ADAPTERS_CUDA_SGMV_MAX];
  float scale[ADAPTERS_CUDA_SGMV_MAX];
  const float* Wd[ADAPTERS_CUDA_SGMV_MAX];
  const float* bd[ADAPTERS_CUDA_SGMV_MAX];
  const float* Wu[ADAPTERS_CUDA_SGMV_MAX];
  const float* bu[ADAPTERS_CUDA_SGMV_MAX];
  int64_t woff[ADAPTERS_CUDA_SGMV_MAX + 1];
  int64_t doff[ADAPTERS_CUDA_SGMV_MAX + 1];
} adapters_cuda_bn_sgmv;
/* pre (M, D) = h·Wd_iᵀ + bd_i (0 past the width and on rows of no segment);
 * y (M, C) = residual + s_i·(act(pre)·Wu_iᵀ + bu_i) (the residual on rows of no segment). */
int adapters_cuda_bottleneck_sgmv_f32(const adapters_cuda_bn_sgmv* table, const float* h, const float* residual, float* pre, float* y,
                                      void* stream);
/* gpre (M, D) scratch; gh (M, C); dWd / dWu (Σ width·C, dWu_i stored (C, width)), dbd (Σ width), dbu (n·C). */
int adapters_cuda_bottleneck_sgmv_backward_f32(const adapters_cuda_bn_sgmv* table, const float* g, const float* h, const float* pre, float* gpre,
                                               float* gh, float* dWd, float* dbd, float* dWu, float* dbu, void* stream);

/* ---- index.cu: index ops (per-element code in index_math.h; the caller checks the indices' range) -------------- */
/* out (O, K, I) = x (O, N, I, contiguous, any dtype code) at rows idx[0..K) of its middle dim. */
int adapters_cuda_index_select(int64_t O, int64_t N, int64_t I, int64_t K, const int64_t* idx, const void* x, int dtype, void* out,
                               void* stream);
/* out (O, N, I) = base + src (O, K, I) added at rows idx[0..K) (duplicates summed in index order); f32, contiguous. */
int adapters_cuda_index_add_f32(int64_t O, int64_t N, int64_t I, int64_t K, const int64_t* idx, const float* base, const float* src,
                                float* out, void* stream);
/* out (idx_shape, contiguous) = x at the index positions with dim replaced by idx (x through data_strides). */
int adapters_cuda_gather(int nd, int dim, const int64_t* idx_shape, const int64_t* data_strides, const int64_t* idx, const void* x,
                         int dtype, void* out, void* stream);
/* out (data_shape) = base + src (idx_shape) scattered along dim by idx; f32, all contiguous; sums in index order. */
int adapters_cuda_scatter_add_f32(int nd, int dim, const int64_t* data_shape, const int64_t* idx_shape, const int64_t* idx,
                                  const float* base, const float* src, float* out, void* stream);

/* ---- rows.cu: row-wise ops (per-row code in rows_math.h; arithmetic as native/kernels/) ------------------ */
/* softmax (log = 0) / log-softmax (log = 1) over axis R of a contiguous (O, R, I) f32 tensor; backward from the
 * forward output y and its gradient g. */
int adapters_cuda_softmax_f32(int log, int64_t O, int64_t R, int64_t I, const float* x, float* y, void* stream);
int adapters_cuda_softmax_backward_f32(int log, int64_t O, int64_t R, int64_t I, const float* y, const float* g, float* gi,
                                       void* stream);
/* layer norm (rms = 0) / RMS norm (rms = 1) over rows of C; w, b may be NULL; writes y and the per-row mean (0 for
 * RMS) and rstd. Backward: dx always, dw / db when not NULL (column sums over the N rows). */
int adapters_cuda_norm_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* b, float eps, float* y,
                           float* mean, float* rstd, void* stream);
int adapters_cuda_norm_backward_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* mean,
                                    const float* rstd, const float* g, float* dx, float* dw, float* db, void* stream);
/* out (O, I) = Σ over axis R of a contiguous (O, R, I) tensor (double accumulation). */
int adapters_cuda_sum_f32(int64_t O, int64_t R, int64_t I, const float* x, float* out, void* stream);
/* cross-entropy rows: lse (N) and the per-row loss (0 for ignore_index rows); targets are int64 and must be in
 * range (checked by the caller). Backward: dlogits = w_i·(softmax − ε/C − (1−ε)·onehot) with
 * w_i = (per_row ? gout[i] : gout[0]) · scale (0 for ignored rows). */
int adapters_cuda_cross_entropy_f32(int64_t N, int64_t C, const float* logits, const int64_t* targets, int64_t ignore_index,
                                    float label_smoothing, float* lse, float* row_loss, void* stream);
int adapters_cuda_cross_entropy_backward_f32(int64_t N, int64_t C, const float* logits, const int64_t* targets, const float* lse,
                                             int64_t ignore_index, float label_smoothing, const float* gout, int per_row,
                                             float scale, float* dlogits, void* stream);
/* embedding rows out[k] = weight[ids[k]] (ids checked by the caller); backward scatter-adds g into a zeroed
 * dweight in index order (deterministic). */
int adapters_cuda_embedding_f32(int64_t n, int64_t C, const int64_t* ids, const float* weight, float* out, void* stream);
int adapters_cuda_embedding_backward_f32(int64_t n, int64_t C, const int64_t* ids, const float* g, float* dweight, void* stream);

/* ---- attention.cu: scaled dot-product attention (per-row code in attention_math.h) --------------------------- */
/* Shapes (contiguous f32): q (B,H,Tq,D), k (B,Hkv,Tk,D), v (B,Hkv,Tk,Dv), prefix pk (B,Hkv,P,D) / pv (B,Hkv,P,Dv)
 * (NULL when P = 0), out (B,H,Tq,Dv), lse (B,H,Tq). Masks as native/kernels/attention.h (device pointers). */
typedef struct adapters_cuda_attn {
  int64_t B, H, Hkv, Tq, Tk, P, D, Dv;
  float scale;
  int causal;
  const float* mask; /* additive, broadcast to (B,H,Tq,P+Tk) by these element strides; NULL = none */
  int64_t mask_sb, mask_sh, mask_si, mask_sj;
  const uint8_t* key_keep; /* (B, P+Tk) bool, nonzero = keep; NULL = none */
  int mixed; /* autocast: where attention runs through products, they round their operands to TF32 once (1xTF32) */
} adapters_cuda_attn;
int adapters_cuda_attention_f32(const adapters_cuda_attn* p, const float* q, const float* k, const float* v, const float* pk,
                                const float* pv, float* out, float* lse, void* stream);
/* Writes dq, dk, dv (and dpk, dpv when P > 0) from the forward's out and the gradient dout. */
int adapters_cuda_attention_backward_f32(const adapters_cuda_attn* p, const float* q, const float* k, const float* v, const float* pk,
                                         const float* pv, const float* out, const float* dout, float* dq, float* dk, float* dv,
                                         float* dpk, float* dpv, void* stream);

/* rotary embedding of `rows` vectors of D (row r at position r % T) with full-width cos / sin tables (T, D), or
 * (B, T, D) with per_batch_rows = H·T rows per batch entry (0 = shared tables); half-split or interleaved;
 * backward = the transposed rotation (x is then the incoming gradient). */
int adapters_cuda_rope_f32(int64_t rows, int64_t T, int64_t D, int64_t per_batch_rows, const float* x, const float* cos, const float* sin,
                           float* y, int interleaved, int backward, void* stream);

/* ---- random.cu ------------------------------------------------------------------------------------------- */
/* y = x·1/(1−p) where the Philox stream (seed, offset) keeps the element, else 0 — the CPU's mask, bit for bit. */
int adapters_cuda_dropout_f32(int64_t n, const float* x, float* y, float p, uint64_t seed, uint64_t offset, void* stream);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* ADAPTERS_CUDA_H */
