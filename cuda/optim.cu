// optim.cu — optimiser updates on the GPU: AdamW over all parameters in ONE launch.
//
// A training step updates hundreds of tensors (every LoRA / adapter matrix, bias and norm); one launch per
// tensor would cost more in launch latency than the arithmetic. Here a small table describes the tensors
// (pointers, length, per-tensor step size and decay) and the prefix sum of their chunk counts; each block
// takes one chunk of 4096 elements, finds its tensor by binary search over the prefix, and updates the
// chunk with 16-byte loads (when the tensor's four pointers are 16-byte aligned) or scalar loads.
// Up to kParamTensors tensors the table travels inside the kernel's parameters (no copy, nothing to wait
// for); larger tables go through a device buffer from the caching allocator (a pageable upload, which
// waits for the stream's earlier work before it returns).
//
// The arithmetic is native/kernels/optim.cpp's, operation for operation, with IEEE round-to-nearest
// intrinsics so that no multiply-add is fused (the CPU code has no FMA contraction): results are
// bit-identical to that loop. The per-tensor scalars (bias corrections, lr/(1-β1^t), 1-lr·wd) are
// computed on the host in the same precision as there (double powers, float products).
#include <cmath>
#include <cstring>
#include <vector>

#include "adapters_cuda.h"
#include "common.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kVec = 4;                           // floats per 16-byte access
constexpr int64_t kChunk = kThreads * kVec * 4;   // 4096 elements per block: 4 float4 per thread

struct AdamTensor {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  float decay;  // 1 - lr·wd
  float step;   // lr / (1 - β1^t)
  int use_decay;  // wd != 0
  int vec;        // all four pointers 16-byte aligned
};

struct AdamScalars {
  float b1, omb1, b2, omb2, eps, bc2s;  // omb = 1 - β (float, as on the CPU); bc2s = sqrt(1 - β2^t)
};

__device__ __forceinline__ void adam_one(float& p, float g, float& m, float& v, const AdamTensor& t,
                                         const AdamScalars& s) {
  if (t.use_decay) p = __fmul_rn(p, t.decay);
  m = __fadd_rn(m, __fmul_rn(s.omb1, __fsub_rn(g, m)));            // m += (1-β1)(g - m)
  v = __fadd_rn(__fmul_rn(v, s.b2), __fmul_rn(__fmul_rn(s.omb2, g), g));  // v = v·β2 + (1-β2)·g·g
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bc2s), s.eps);
  p = __fsub_rn(p, __fmul_rn(t.step, __fdiv_rn(m, denom)));
}

__device__ __forceinline__ void adamw_body(const AdamTensor* tensors, const int64_t* chunk_prefix, int n,
                                           const AdamScalars& s) {
  const int64_t chunk = blockIdx.x;
  // largest k with chunk_prefix[k] <= chunk (chunk_prefix[0] = 0, chunk_prefix[n] = total)
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (chunk_prefix[mid] <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const AdamTensor t = tensors[lo];
  const int64_t begin = (chunk - chunk_prefix[lo]) * kChunk;
  const int64_t end = min(begin + kChunk, t.n);
  if (t.vec) {
    const int64_t vend = begin + (end - begin) / kVec * kVec;  // begin is a multiple of 4
    for (int64_t i = begin + (int64_t)threadIdx.x * kVec; i < vend; i += (int64_t)kThreads * kVec) {
      float4 p = *reinterpret_cast<const float4*>(t.p + i);
      const float4 g = *reinterpret_cast<const float4*>(t.g + i);
      float4 m = *reinterpret_cast<const float4*>(t.m + i);
      float4 v = *reinterpret_cast<const float4*>(t.v + i);
      adam_one(p.x, g.x, m.x, v.x, t, s);
      adam_one(p.y, g.y, m.y, v.y, t, s);
      adam_one(p.z, g.z, m.z, v.z, t, s);
      adam_one(p.w, g.w, m.w, v.w, t, s);
      *reinterpret_cast<float4*>(t.p + i) = p;
      *reinterpret_cast<float4*>(t.m + i) = m;
      *reinterpret_cast<float4*>(t.v + i) = v;
    }
    for (int64_t i = vend + threadIdx.x; i < end; i += kThreads) {  // tail of the last chunk
      float p = t.p[i], m = t.m[i], v = t.v[i];
      adam_one(p, t.g[i], m, v, t, s);
      t.p[i] = p, t.m[i] = m, t.v[i] = v;
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      float p = t.p[i], m = t.m[i], v = t.v[i];
      adam_one(p, t.g[i], m, v, t, s);
      t.p[i] = p, t.m[i] = m, t.v[i] = v;
    }
  }
}

constexpr int kParamTensors = 200;  // 200·56 + 201·8 B = 12.8 KB of kernel parameters (limit: 32 KB)
struct AdamParamTable {
  AdamTensor t[kParamTensors];
  int64_t prefix[kParamTensors + 1];
};

__global__ void __launch_bounds__(kThreads)
    adamw_param_kernel(const __grid_constant__ AdamParamTable tab, int n, AdamScalars s) {
  adamw_body(tab.t, tab.prefix, n, s);
}

__global__ void __launch_bounds__(kThreads)
    adamw_table_kernel(const AdamTensor* __restrict__ tensors, const int64_t* __restrict__ chunk_prefix, int n,
                       AdamScalars s) {
  adamw_body(tensors, chunk_prefix, n, s);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

extern "C" {

int adapters_cuda_adamw_step(int64_t n, float* const* params, const float* const* grads, float* const* exp_avg,
                             float* const* exp_avg_sq, const int64_t* numel, const float* hyper, float beta1,
                             float beta2, float eps, int64_t step, void* stream) {
  if (n < 1 || n > 0x7fffffff || step < 1 || !params || !grads || !exp_avg || !exp_avg_sq || !numel || !hyper)
    return (int)cudaErrorInvalidValue;
  // host scalars, exactly as optim.cpp computes them
  const double bc1 = 1.0 - std::pow((double)beta1, (double)step);
  const double bc2 = 1.0 - std::pow((double)beta2, (double)step);
  AdamScalars s;
  s.b1 = beta1, s.omb1 = 1.f - beta1, s.b2 = beta2, s.omb2 = 1.f - beta2, s.eps = eps;
  s.bc2s = (float)std::sqrt(bc2);

  // table: n AdamTensor, then n+1 chunk prefix entries (int64), in one device buffer
  std::vector<AdamTensor> tab((size_t)n);
  std::vector<int64_t> prefix((size_t)n + 1, 0);
  for (int64_t k = 0; k < n; k++) {
    if (numel[k] < 0) return (int)cudaErrorInvalidValue;
    if (numel[k] > 0 && (!params[k] || !grads[k] || !exp_avg[k] || !exp_avg_sq[k])) return (int)cudaErrorInvalidValue;
    const float lr = hyper[2 * k], wd = hyper[2 * k + 1];
    AdamTensor& t = tab[(size_t)k];
    t.p = params[k], t.g = grads[k], t.m = exp_avg[k], t.v = exp_avg_sq[k], t.n = numel[k];
    t.decay = 1.f - lr * wd;
    t.step = (float)(lr / bc1);
    t.use_decay = wd != 0.f;
    t.vec = aligned16(t.p) && aligned16(t.g) && aligned16(t.m) && aligned16(t.v);
    prefix[(size_t)k + 1] = prefix[(size_t)k] + ad_cuda::ceil_div(numel[k], kChunk);
  }
  const int64_t total = prefix[(size_t)n];
  if (total == 0) return 0;
  if (total > 0x7fffffff) return (int)cudaErrorInvalidValue;

  cudaStream_t st = ad_cuda::as_stream(stream);
  if (n <= kParamTensors) {
    static_assert(sizeof(AdamParamTable) <= 32000, "kernel parameters are limited to 32764 bytes");
    AdamParamTable pt;
    memcpy(pt.t, tab.data(), sizeof(AdamTensor) * (size_t)n);
    memcpy(pt.prefix, prefix.data(), sizeof(int64_t) * ((size_t)n + 1));
    adamw_param_kernel<<<(unsigned)total, kThreads, 0, st>>>(pt, (int)n, s);
    AD_CUDA_CHECK_LAUNCH();
    return 0;
  }
  const size_t tab_bytes = sizeof(AdamTensor) * (size_t)n;  // a multiple of 8: the prefix stays aligned
  const size_t bytes = tab_bytes + sizeof(int64_t) * ((size_t)n + 1);
  std::vector<unsigned char> host(bytes);
  memcpy(host.data(), tab.data(), tab_bytes);
  memcpy(host.data() + tab_bytes, prefix.data(), sizeof(int64_t) * ((size_t)n + 1));
  void* dev = nullptr;
  if (int e = adapters_cuda_malloc(&dev, bytes)) return e;
  // pageable source: the copy is staged before cudaMemcpyAsync returns, so `host` may go out of scope
  cudaError_t e = cudaMemcpyAsync(dev, host.data(), bytes, cudaMemcpyHostToDevice, st);
  if (e == cudaSuccess) {
    adamw_table_kernel<<<(unsigned)total, kThreads, 0, st>>>(
        static_cast<const AdamTensor*>(dev),
        reinterpret_cast<const int64_t*>(static_cast<unsigned char*>(dev) + tab_bytes), (int)n, s);
    e = cudaGetLastError();
  }
  // back to the cache: the next user of this block is queued on the same stream, after the kernel
  adapters_cuda_free(dev);
  return (int)e;
}

}  // extern "C"
