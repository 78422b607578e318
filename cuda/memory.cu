// memory.cu — device memory for the CUDA backend: a caching allocator (cudaMalloc/cudaFree are slow and
// synchronising, and training allocates the same sizes every step), plus copies and synchronisation.
//
// Design: each request is rounded up to a size class; a block is cudaMalloc'd at exactly the class size,
// and on free it goes to the free list of its (device, class) instead of back to the driver. Classes:
// multiples of 512 B up to 1 MiB (small tensors: waste < 512 B), then 4 classes per power of two
// (2^k, 1.25·2^k, 1.5·2^k, 1.75·2^k: waste < 25%, and few distinct classes so reuse is likely).
// No block splitting or coalescing: simpler than PyTorch's allocator, and training's steady state (the
// same shapes each step) is served entirely from the lists. empty_cache() returns the lists to the driver;
// a failing cudaMalloc empties the cache and retries once before reporting cudaErrorMemoryAllocation.
// One mutex guards everything: allocations are per op, far rarer than the kernels they feed.
#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "adapters_cuda.h"
#include "common.cuh"

namespace {

constexpr size_t kSmallStep = 512;
constexpr size_t kSmallLimit = size_t(1) << 20;

size_t size_class(size_t bytes) {
  if (bytes == 0) return 0;
  if (bytes <= kSmallLimit) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  // largest power of two <= bytes - 1, then quarter steps of it
  size_t p = size_t(1) << (63 - __builtin_clzll((unsigned long long)(bytes - 1)));
  size_t q = p / 4;
  size_t c = (bytes + q - 1) / q * q;  // next multiple of a quarter of p: p + {1,2,3,4}·q
  return c;
}

struct Block {
  int device;
  size_t size;       // class size (what cudaMalloc got)
  size_t requested;  // what the caller asked for
};

struct Allocator {
  std::mutex mu;
  std::unordered_map<void*, Block> live;                        // handed out
  std::unordered_map<uint64_t, std::vector<void*>> free_lists;  // key: (device << 48) | class
  adapters_cuda_mem_stats st{};

  static uint64_t key(int dev, size_t cls) { return ((uint64_t)(unsigned)dev << 48) | (uint64_t)cls; }

  void note_reserved(int64_t delta) {
    st.reserved_bytes += delta;
    st.peak_reserved_bytes = std::max(st.peak_reserved_bytes, st.reserved_bytes);
  }

  // Frees every cached block (all devices); restores the caller's current device. Caller holds mu.
  cudaError_t release_cached() {
    int cur = 0;
    cudaError_t first = cudaGetDevice(&cur);
    if (first != cudaSuccess) return first;
    for (auto& kv : free_lists) {
      int dev = (int)(kv.first >> 48);
      size_t cls = (size_t)(kv.first & ((uint64_t(1) << 48) - 1));
      if (kv.second.empty()) continue;
      cudaError_t e = cudaSetDevice(dev);
      for (void* p : kv.second) {
        if (e == cudaSuccess) e = cudaFree(p);
        st.num_device_frees++;
        st.reserved_bytes -= cls;
        st.cached_bytes -= cls;
      }
      if (e != cudaSuccess && first == cudaSuccess) first = e;
      kv.second.clear();
    }
    free_lists.clear();
    cudaError_t e = cudaSetDevice(cur);
    return first != cudaSuccess ? first : e;
  }
};

Allocator& alloc() {
  static Allocator* a = new Allocator();  // leaked on purpose: no destructor ordering issues at exit
  return *a;
}

}  // namespace

extern "C" {

size_t adapters_cuda_size_class(size_t bytes) { return size_class(bytes); }

int adapters_cuda_malloc(void** ptr, size_t bytes) {
  if (!ptr) return (int)cudaErrorInvalidValue;
  *ptr = nullptr;
  if (bytes == 0) return 0;
  if (bytes > (size_t(1) << 47)) return (int)cudaErrorMemoryAllocation;  // no such device; keeps classes < 2^48
  int dev = 0;
  AD_CUDA_TRY(cudaGetDevice(&dev));
  const size_t cls = size_class(bytes);
  Allocator& A = alloc();
  std::lock_guard<std::mutex> lock(A.mu);
  void* p = nullptr;
  auto it = A.free_lists.find(Allocator::key(dev, cls));
  if (it != A.free_lists.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    A.st.num_cache_hits++;
    A.st.cached_bytes -= cls;
  } else {
    cudaError_t e = cudaMalloc(&p, cls);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // allocation failures are not sticky; clear the record of it
      A.st.num_oom_retries++;
      A.release_cached();
      e = cudaMalloc(&p, cls);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return (int)e;
    }
    A.st.num_device_mallocs++;
    A.note_reserved((int64_t)cls);
  }
  A.live.emplace(p, Block{dev, cls, bytes});
  A.st.num_allocs++;
  A.st.allocated_bytes += cls;
  A.st.requested_bytes += bytes;
  A.st.peak_allocated_bytes = std::max(A.st.peak_allocated_bytes, A.st.allocated_bytes);
  *ptr = p;
  return 0;
}

int adapters_cuda_free(void* ptr) {
  if (!ptr) return 0;
  Allocator& A = alloc();
  std::lock_guard<std::mutex> lock(A.mu);
  auto it = A.live.find(ptr);
  if (it == A.live.end()) return (int)cudaErrorInvalidDevicePointer;
  const Block b = it->second;
  A.live.erase(it);
  A.free_lists[Allocator::key(b.device, b.size)].push_back(ptr);
  A.st.num_frees++;
  A.st.allocated_bytes -= b.size;
  A.st.requested_bytes -= b.requested;
  A.st.cached_bytes += b.size;
  return 0;
}

int adapters_cuda_empty_cache(void) {
  Allocator& A = alloc();
  std::lock_guard<std::mutex> lock(A.mu);
  return (int)A.release_cached();
}

int adapters_cuda_memory_stats(adapters_cuda_mem_stats* out) {
  if (!out) return (int)cudaErrorInvalidValue;
  Allocator& A = alloc();
  std::lock_guard<std::mutex> lock(A.mu);
  *out = A.st;
  return 0;
}

int adapters_cuda_reset_peak_stats(void) {
  Allocator& A = alloc();
  std::lock_guard<std::mutex> lock(A.mu);
  A.st.peak_allocated_bytes = A.st.allocated_bytes;
  A.st.peak_reserved_bytes = A.st.reserved_bytes;
  return 0;
}

int adapters_cuda_memcpy_h2d(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return 0;
  if (!dst || !src) return (int)cudaErrorInvalidValue;
  AD_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ad_cuda::as_stream(stream)));
  return 0;
}

int adapters_cuda_memcpy_d2h(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return 0;
  if (!dst || !src) return (int)cudaErrorInvalidValue;
  cudaStream_t s = ad_cuda::as_stream(stream);
  AD_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  AD_CUDA_TRY(cudaStreamSynchronize(s));  // the caller reads dst next
  return 0;
}

int adapters_cuda_memcpy_d2d(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return 0;
  if (!dst || !src) return (int)cudaErrorInvalidValue;
  AD_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ad_cuda::as_stream(stream)));
  return 0;
}

int adapters_cuda_memset(void* dst, int value, size_t bytes, void* stream) {
  if (bytes == 0) return 0;
  if (!dst) return (int)cudaErrorInvalidValue;
  AD_CUDA_TRY(cudaMemsetAsync(dst, value, bytes, ad_cuda::as_stream(stream)));
  return 0;
}

int adapters_cuda_synchronize(void* stream) {
  if (stream) AD_CUDA_TRY(cudaStreamSynchronize(ad_cuda::as_stream(stream)));
  else AD_CUDA_TRY(cudaDeviceSynchronize());
  AD_CUDA_TRY(cudaGetLastError());
  return 0;
}

int adapters_cuda_set_device(int dev) {
  AD_CUDA_TRY(cudaSetDevice(dev));
  return 0;
}

int adapters_cuda_get_device(int* dev) {
  if (!dev) return (int)cudaErrorInvalidValue;
  AD_CUDA_TRY(cudaGetDevice(dev));
  return 0;
}

}  // extern "C"
