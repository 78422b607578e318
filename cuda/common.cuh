// common.cuh — CUDA error handling for the adapters CUDA library. Errors are returned as codes and
// turned into JS exceptions by the addon; nothing here may call exit().
#pragma once
#include <cuda_runtime.h>

#define AD_CUDA_TRY(expr)                      \
  do {                                         \
    cudaError_t err_ = (expr);                 \
    if (err_ != cudaSuccess) return (int)err_; \
  } while (0)
