// cuda_loader.h — run-time loading of the optional CUDA library (libadapters_cuda.so, C ABI in
// cuda/adapters_cuda.h). Nothing here needs CUDA headers; without the library every entry is absent and
// hasCuda() is false.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../cuda/adapters_cuda.h"  // plain C: the structs passed by pointer (adapters_cuda_sgmv)

namespace ad {

// The library's entry points (same signatures as cuda/adapters_cuda.h).
struct CudaApi {
  const char* (*error_string)(int);
  int (*device_name)(int, char*, int);
  int (*malloc)(void**, size_t);
  int (*free)(void*);
  int (*empty_cache)();
  int (*memory_stats)(void*);  // adapters_cuda_mem_stats*
  int (*reset_peak_stats)();
  int (*memcpy_h2d)(void*, const void*, size_t, void*);
  int (*memcpy_d2h)(void*, const void*, size_t, void*);
  int (*memcpy_d2d)(void*, const void*, size_t, void*);
  int (*memset)(void*, int, size_t, void*);
  int (*synchronize)(void*);
  int (*set_device)(int);
  int (*gemm_bf16)(int, int, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t, float,
                   float*, int64_t, void*);
  int (*gemm_bf16_out)(int, int, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t, float,
                       uint16_t*, int64_t, void*);
  int (*gemm_f32)(int, int, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
                  int64_t, void*);
  int (*set_f32_matmul_precision)(int);
  int (*get_f32_matmul_precision)();
  int (*adamw_step)(int64_t, float* const*, const float* const*, float* const*, float* const*, const int64_t*,
                    const float*, float, float, float, int64_t, void*);
  int (*binary_f32)(int, int, const int64_t*, const float*, const int64_t*, const float*, const int64_t*, float*, void*);
  int (*unary_f32)(int, int64_t, const float*, float*, float, float, void*);
  int (*unary_backward_f32)(int, int64_t, const float*, const float*, float*, void*);
  int (*copy_strided)(int, int, int, const int64_t*, const void*, const int64_t*, void*, const int64_t*, void*);
  int (*compare)(int, int, const int64_t*, const void*, int, const int64_t*, const void*, int, const int64_t*, uint8_t*, void*);
  int (*where)(int, const int64_t*, const uint8_t*, const int64_t*, const void*, const int64_t*, const void*, const int64_t*, int, void*,
               void*);
  int (*masked_fill)(int, const int64_t*, const void*, const int64_t*, const uint8_t*, const int64_t*, int, double, void*, void*);
  int (*lora_sgmv_f32)(const adapters_cuda_sgmv*, const float*, float*, float*, void*);
  int (*lora_sgmv_backward_f32)(const adapters_cuda_sgmv*, const float*, const float*, const float*, float*, float*, float*, float*, void*);
  int (*bottleneck_sgmv_f32)(const adapters_cuda_bn_sgmv*, const float*, const float*, float*, float*, void*);
  int (*bottleneck_sgmv_backward_f32)(const adapters_cuda_bn_sgmv*, const float*, const float*, const float*, float*, float*, float*, float*,
                                      float*, float*, void*);
  int (*index_select)(int64_t, int64_t, int64_t, int64_t, const int64_t*, const void*, int, void*, void*);
  int (*index_add_f32)(int64_t, int64_t, int64_t, int64_t, const int64_t*, const float*, const float*, float*, void*);
  int (*gather)(int, int, const int64_t*, const int64_t*, const int64_t*, const void*, int, void*, void*);
  int (*scatter_add_f32)(int, int, const int64_t*, const int64_t*, const int64_t*, const float*, const float*, float*, void*);
  int (*softmax_f32)(int, int64_t, int64_t, int64_t, const float*, float*, void*);
  int (*softmax_backward_f32)(int, int64_t, int64_t, int64_t, const float*, const float*, float*, void*);
  int (*norm_f32)(int, int64_t, int64_t, const float*, const float*, const float*, float, float*, float*, float*, void*);
  int (*norm_backward_f32)(int, int64_t, int64_t, const float*, const float*, const float*, const float*, const float*, float*,
                           float*, float*, void*);
  int (*sum_f32)(int64_t, int64_t, int64_t, const float*, float*, void*);
  int (*cross_entropy_f32)(int64_t, int64_t, const float*, const int64_t*, int64_t, float, float*, float*, void*);
  int (*cross_entropy_backward_f32)(int64_t, int64_t, const float*, const int64_t*, const float*, int64_t, float, const float*,
                                    int, float, float*, void*);
  int (*embedding_f32)(int64_t, int64_t, const int64_t*, const float*, float*, void*);
  int (*embedding_backward_f32)(int64_t, int64_t, const int64_t*, const float*, float*, void*);
  int (*rope_f32)(int64_t, int64_t, int64_t, int64_t, const float*, const float*, const float*, float*, int, int, void*);
  int (*dropout_f32)(int64_t, const float*, float*, float, uint64_t, uint64_t, void*);
  int (*attention_f32)(const void*, const float*, const float*, const float*, const float*, const float*, float*, float*, void*);
  int (*attention_backward_f32)(const void*, const float*, const float*, const float*, const float*, const float*, const float*,
                                const float*, float*, float*, float*, float*, float*, void*);
};

// cuda/adapters_cuda.h's adapters_cuda_attn, field for field.
struct CudaAttn {
  int64_t B, H, Hkv, Tq, Tk, P, D, Dv;
  float scale;
  int causal;
  const float* mask;
  int64_t mask_sb, mask_sh, mask_si, mask_sj;
  const uint8_t* key_keep;
  int mixed;
};

// Memory statistics of the CUDA caching allocator (adapters_cuda_mem_stats).
struct CudaMemStats {
  uint64_t allocated_bytes, peak_allocated_bytes, requested_bytes, reserved_bytes, peak_reserved_bytes, cached_bytes,
      num_allocs, num_frees, num_cache_hits, num_device_mallocs, num_device_frees, num_oom_retries;
};

bool has_cuda();
int cuda_device_count();
std::string cuda_load_error();
// The entry points when the library is loaded and reports a device; throws a DeviceError naming `what`
// otherwise.
const CudaApi& cuda_api(const std::string& what);
// Throws (DeviceError, or MemoryError for out-of-memory) when code != 0, naming `what` and the CUDA error.
void cuda_check(int code, const std::string& what);

}  // namespace ad
