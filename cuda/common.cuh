// common.cuh — CUDA error handling for the adapters CUDA library. Errors are returned as codes and
// turned into JS exceptions by the addon; nothing here may call exit().
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

// On failure, returns the code after clearing the runtime's "last error" record: otherwise a failed call
// here (say cudaSetDevice(bad)) would be reported again by the next launch's cudaGetLastError(). Sticky
// errors (a faulted kernel) are unaffected: every later call reports them anyway.
#define AD_CUDA_TRY(expr)          \
  do {                             \
    cudaError_t err_ = (expr);     \
    if (err_ != cudaSuccess) {     \
      (void)cudaGetLastError();    \
      return (int)err_;            \
    }                              \
  } while (0)

// After a kernel launch: a launch-configuration error (bad grid, too much shared memory) is reported by
// cudaGetLastError, which also clears it (such errors are not sticky).
#define AD_CUDA_CHECK_LAUNCH() AD_CUDA_TRY(cudaGetLastError())

namespace ad_cuda {
inline cudaStream_t as_stream(void* s) { return reinterpret_cast<cudaStream_t>(s); }
__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// Blocks of `threads` for n work items in a grid-stride loop (at least 1, capped: the loop covers the rest).
inline int grid_for(int64_t n, int threads) {
  const int64_t b = ceil_div(n, threads);
  return (int)(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}
}  // namespace ad_cuda

// for (i over [0, n)) spread over the grid, 64-bit indices
#define AD_GRID_FOR(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// Launches kernel over n work items (ad_cuda::grid_for blocks of `threads`, on the calling function's `stream`) when
// n > 0; a launch error returns its code from the calling function. AD_LAUNCH_RETURN then returns 0.
#define AD_LAUNCH_FOR(n, threads, kernel, ...)                                                               \
  do {                                                                                                       \
    if ((n) > 0) {                                                                                           \
      kernel<<<ad_cuda::grid_for((n), (threads)), (threads), 0, ad_cuda::as_stream(stream)>>>(__VA_ARGS__);   \
      AD_CUDA_CHECK_LAUNCH();                                                                                \
    }                                                                                                        \
  } while (0)
#define AD_LAUNCH_RETURN(n, threads, kernel, ...) \
  do {                                            \
    AD_LAUNCH_FOR(n, threads, kernel, __VA_ARGS__); \
    return 0;                                     \
  } while (0)
