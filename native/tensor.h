// tensor.h — dtypes, refcounted Storage from the pooled allocator, and Tensor (a strided view of a Storage).
// Invariants: offsets and strides are in elements; a Tensor never owns more than a shared_ptr to its
// Storage, so views (transpose/permute/slice/reshape) share memory and keep it alive.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include <stdexcept>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(AD_NO_CLONES) && !defined(__SANITIZE_ADDRESS__)
// Hot loops get AVX-512 / AVX2 clones chosen at load time (ifunc); the default is plain x86-64.
#define AD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AD_CLONES
#endif

namespace ad {

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, I64 = 4, BOOL = 5 };
enum class DeviceType : int32_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int32_t index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

size_t dtype_size(DType d);
const char* dtype_name(DType d);
bool dtype_from_name(const std::string& s, DType* out);
inline bool dtype_is_float(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }
// The dtype codes of the CUDA library's copy / comparison / index kernels (cuda/adapters_cuda.h): 0 f32, 1 bf16,
// 2 i64, 3 i32, 4 bool; -1 for f16, which has no CUDA kernels.
inline int cuda_dtype_code(DType d) {
  switch (d) {
    case DType::F32: return 0;
    case DType::BF16: return 1;
    case DType::I64: return 2;
    case DType::I32: return 3;
    case DType::BOOL: return 4;
    default: return -1;
  }
}

// Errors carry a kind that the JS side maps to an AdaptersError subclass.
struct Error : std::runtime_error {
  std::string kind;
  Error(std::string k, const std::string& m) : std::runtime_error(m), kind(std::move(k)) {}
};
#define AD_CHECK(cond, kind, msg)                 \
  do {                                            \
    if (!(cond)) throw ::ad::Error(kind, (msg));  \
  } while (0)

std::string shape_str(const std::vector<int64_t>& s);

// 64-byte aligned, size-class pooled host memory; or device memory from the CUDA library's caching allocator
// (data is then a device pointer: only CUDA kernels and the copy functions below may touch it).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;      // allocated (rounded up to the size class)
  size_t requested = 0;  // asked for: the bound for views
  Device device;
  // Bumped by every in-place write (copy_, accumulate_, optimiser steps; counted in lib/tensor.ts's callOp): the
  // autograd tape compares it with the version a node saved, as PyTorch's version counter does.
  uint64_t version = 0;
  explicit Storage(size_t nbytes);
  Storage(size_t nbytes, Device dev);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

 private:
  void init_host(size_t nbytes);
};

struct MemStats {
  int64_t live_storages, live_bytes, pooled_bytes, peak_bytes;
};
MemStats mem_stats();
void mem_empty_cache();
// Restarts peak tracking from the current live bytes.
void mem_reset_peak();

struct Tensor {
  std::shared_ptr<Storage> st;
  DType dtype = DType::F32;
  std::vector<int64_t> shape, strides;
  int64_t offset = 0;

  static Tensor empty(const std::vector<int64_t>& shape, DType dt);
  static Tensor empty(const std::vector<int64_t>& shape, DType dt, Device dev);
  Device device() const { return st->device; }
  bool on_cpu() const { return st->device.type == DeviceType::CPU; }
  static Tensor zeros(const std::vector<int64_t>& shape, DType dt);
  int64_t dim() const { return (int64_t)shape.size(); }
  int64_t numel() const;
  int64_t size(int64_t d) const { return shape[d < 0 ? d + dim() : d]; }
  bool is_contiguous() const;
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype); }
  template <typename T> T* data() const { return reinterpret_cast<T*>(static_cast<char*>(st->data)) + offset; }
  void* raw() const { return static_cast<char*>(st->data) + offset * dtype_size(dtype); }
  Tensor view(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t offset) const;
};

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);
int64_t shape_numel(const std::vector<int64_t>& shape);

// Returns t itself when contiguous, else a packed copy.
Tensor contiguous(const Tensor& t);
// Copy src (any strides, same shape) into dst (any strides), with dtype conversion.
void copy_into(const Tensor& dst, const Tensor& src);
Tensor cast(const Tensor& t, DType dt);
// A contiguous copy of t on `dev` (host <-> device, or device -> device); t itself when it is already a
// contiguous tensor there.
Tensor to_device(const Tensor& t, Device dev);
// Parses "cpu", "cuda", "cuda:N"; false when malformed.
bool parse_device(const std::string& s, Device* out);

// bf16/f16 <-> f32, round-to-nearest-even like PyTorch.
inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; std::memcpy(&f, &u, 4); return f; }
// Contiguous runs of f32 -> bf16 (f32_to_bf16's rounding) and bf16 -> f32, vectorised (tensor.cpp).
void f32_to_bf16_run(uint16_t* d, const float* s, int64_t n);
void bf16_to_f32_run(float* d, const uint16_t* s, int64_t n);
inline uint16_t f32_to_bf16(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return (uint16_t)(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace ad
