// table.cu — the C ABI of libadapters_cuda.so that native/cuda_loader.cpp resolves with dlsym.
// This issue ships the library skeleton only: device discovery. Op kernels (cuda/<op>.cu, mirroring
// native/kernels/<op>.cpp) fill the table in the CUDA backend issue.
#include "common.cuh"

extern "C" {

int adapters_cuda_abi_version() { return 1; }

// Number of usable CUDA devices (0 when the driver is missing or no device is present).
int adapters_cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
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

}  // extern "C"
