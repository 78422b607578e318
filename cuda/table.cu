// table.cu — the C ABI of libadapters_cuda.so that native/cuda_loader.cpp resolves with dlsym:
// device discovery and error text. The ops live beside it, one file per op family (memory.cu, gemm.cu,
// optim.cu); adapters_cuda.h declares everything the library exports.
#include "adapters_cuda.h"
#include "common.cuh"

extern "C" {

// 2: memory (caching allocator, copies), gemm (bf16 tensor cores, f32), fused AdamW.
int adapters_cuda_abi_version() { return 3; }  // 3: adapters_cuda_attn.mixed

// Number of usable CUDA devices (0 when the driver is missing or no device is present).
int adapters_cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: "no device" is an answer here, not a pending error
    return 0;
  }
  return n;
}

// Writes the device name into buf (NUL-terminated); returns 0 on success or a cudaError_t.
int adapters_cuda_device_name(int dev, char* buf, int len) {
  cudaDeviceProp p;
  AD_CUDA_TRY(cudaGetDeviceProperties(&p, dev));
  int i = 0;
  for (; i < len - 1 && p.name[i]; i++) buf[i] = p.name[i];
  if (len > 0) buf[i] = 0;
  return 0;
}

const char* adapters_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // extern "C"
