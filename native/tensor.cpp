// tensor.cpp — dtype helpers, the pooled 64-byte aligned allocator, strided copy/cast.
#include "tensor.h"

#include "cuda_loader.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <list>
#include <map>
#include <unordered_map>
#include <mutex>

#include <sys/mman.h>

#include "bf16_simd.h"
#include "cpu_features.h"
#include "threadpool.h"

namespace ad {

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::I64: return 8;
    case DType::BOOL: return 1;
  }
  return 0;
}
const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::BOOL: return "bool";
  }
  return "?";
}
bool dtype_from_name(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> names[] = {{"f32", DType::F32}, {"float32", DType::F32},
      {"bf16", DType::BF16}, {"bfloat16", DType::BF16}, {"f16", DType::F16}, {"float16", DType::F16},
      {"i32", DType::I32}, {"int32", DType::I32}, {"i64", DType::I64}, {"int64", DType::I64},
      {"bool", DType::BOOL}};
  for (auto& n : names)
    if (s == n.first) { *out = n.second; return true; }
  return false;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else {  // subnormal
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; exp--; }
      man &= 0x3ff;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f; std::memcpy(&f, &u, 4); return f;
}
uint16_t f32_to_f16(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffff;
  if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
  if (exp >= 31) return (uint16_t)(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return (uint16_t)sign;
    man |= 0x800000;
    uint32_t shift = (uint32_t)(14 - exp);
    uint32_t half = 1u << (shift - 1), rem = man & ((1u << shift) - 1);
    uint32_t r = man >> shift;
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = (uint32_t)(exp << 10) | (man >> 13);
  uint32_t rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

// ---- pooled allocator ----------------------------------------------------------------------------
// Freed blocks are kept per rounded size and handed out again for the same size: a training step allocates
// the same sizes every step, and a fresh block costs a page fault per 4 KiB (about 100k faults per BERT-base
// step when the pool was too small to hold a step's worth).
// The pool does not raise the process's footprint above the most bytes ever live at once: when a request that
// the pool cannot serve would take (live + pooled) bytes above that high-water mark, the blocks freed longest
// ago are released first (so blocks that sit idle, e.g. full fine-tuning's gradients during the next forward,
// cannot add to the peak). Below the mark a miss maps fresh memory and the pool keeps the rest, so that next
// step's requests of those sizes hit. A cap bounds what an idle process keeps.
namespace {
constexpr size_t kAlign = 64;
// Bytes of freed blocks kept for reuse (ADAPTERS_POOL_MB overrides; 0 turns pooling off).
size_t cache_cap() {
  static const size_t cap = [] {
    if (const char* e = std::getenv("ADAPTERS_POOL_MB")) return (size_t)std::strtoull(e, nullptr, 10) << 20;
    return size_t(2048) << 20;
  }();
  return cap;
}
struct FreeBlock {
  size_t sz;
  void* p;
};
std::mutex g_mu;
std::list<FreeBlock> g_lru;  // oldest freed first
std::unordered_map<size_t, std::vector<std::list<FreeBlock>::iterator>> g_by_size;  // per size, newest last
size_t g_pooled = 0;
std::atomic<int64_t> g_live_bytes{0}, g_live{0}, g_peak{0};
std::atomic<int64_t> g_high_water{0};  // most live bytes ever (unlike g_peak, never reset)

size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n <= (1u << 20)) return (n + 4095) & ~size_t(4095);
  // above 1 MiB: 2 size classes per power of two (p, 1.5p), so that nearby sizes share blocks (a 768×768 f32
  // gradient and a 1024×768 activation both take 3 MiB). Only the pages a tensor writes become resident, so
  // the rounding costs address space, not memory.
  size_t p = size_t(1) << (63 - __builtin_clzll(n));
  if (n == p) return n;
  return n <= p + p / 2 ? p + p / 2 : 2 * p;
}
}  // namespace

Storage::Storage(size_t nbytes) { init_host(nbytes); }

// Blocks of 1 MiB and more are mapped straight from the kernel and unmapped when the pool does not keep them,
// so the process's memory follows what is live: through malloc, glibc's dynamic mmap threshold would move such
// blocks onto its heap after the first frees and keep them resident (hundreds of MB of training-step RSS).
// Sanitizer builds keep malloc so that ASan still checks these blocks.
constexpr size_t kMmapMin = size_t(1) << 20;
void* raw_alloc(size_t sz) {
#if !defined(__SANITIZE_ADDRESS__)
  if (sz >= kMmapMin) {
    void* p = mmap(nullptr, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
#endif
  return std::aligned_alloc(kAlign, sz);
}
void raw_free(void* p, size_t sz) {
#if !defined(__SANITIZE_ADDRESS__)
  if (sz >= kMmapMin) {
    munmap(p, sz);
    return;
  }
#endif
  std::free(p);
}

namespace {
// Removes block `it` from the pool (caller holds g_mu) and returns its memory.
void* pool_take(std::list<FreeBlock>::iterator it) {
  auto& v = g_by_size[it->sz];
  v.erase(std::find(v.begin(), v.end(), it));
  if (v.empty()) g_by_size.erase(it->sz);
  void* p = it->p;
  g_pooled -= it->sz;
  g_lru.erase(it);
  return p;
}

#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
// A miss that has to evict pooled blocks (a training step's mix of sizes shifts between the forward and the
// backward pass) builds its block from the evicted blocks' pages instead of unmapping them and faulting in
// fresh ones: mremap moves resident pages into a new range without copying them (a BERT-base bf16 step took
// ~210k page faults, ~0.5 s of kernel time, before). A donor larger than what is still needed gives its head and
// its tail goes back to the pool as the oldest block. Returns null when no evicted block is mapped memory.
// Caller holds g_mu; `ev` keeps the blocks not used.
void* recycle_pages(size_t sz, std::vector<FreeBlock>& ev) {
  if (std::none_of(ev.begin(), ev.end(), [](const FreeBlock& b) { return b.sz >= kMmapMin; })) return nullptr;
  void* m = mmap(nullptr, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  char* dst = static_cast<char*>(m);
  size_t off = 0;
  std::vector<FreeBlock> rest;
  for (const FreeBlock& b : ev) {
    if (off == sz || b.sz < kMmapMin) {
      rest.push_back(b);
      continue;
    }
    const size_t take = std::min(b.sz, sz - off);  // multiples of the page size, as every block size is
    if (mremap(b.p, take, take, MREMAP_MAYMOVE | MREMAP_FIXED, dst + off) == MAP_FAILED) {
      rest.push_back(b);
      continue;
    }
    off += take;
    if (take == b.sz) continue;
    FreeBlock tail{b.sz - take, static_cast<char*>(b.p) + take};
    if (tail.sz < kMmapMin) {  // raw_free would hand a block this small to free(): unmap it here
      munmap(tail.p, tail.sz);
      continue;
    }
    auto& v = g_by_size[tail.sz];
    v.insert(v.begin(), g_lru.insert(g_lru.begin(), tail));
    g_pooled += tail.sz;
  }
  ev.swap(rest);
  return dst;
}
#endif
}  // namespace

void Storage::init_host(size_t nbytes) {
  size_t sz = round_size(nbytes);
  std::vector<FreeBlock> evicted;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto hit = g_by_size.find(sz);
    if (hit != g_by_size.end()) {
      data = pool_take(hit->second.back());  // the most recently freed block of this size: likely still cached
    } else {
      const int64_t live = g_live_bytes.load();
      while (!g_lru.empty() && live + (int64_t)(g_pooled + sz) > g_high_water.load()) {
        const size_t bsz = g_lru.front().sz;
        evicted.push_back({bsz, pool_take(g_lru.begin())});
      }
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
      if (sz >= kMmapMin && !evicted.empty()) data = recycle_pages(sz, evicted);
#endif
    }
  }
  for (const FreeBlock& b : evicted) raw_free(b.p, b.sz);
  if (!data) {
    data = raw_alloc(sz);
    if (!data) {
      mem_empty_cache();
      data = raw_alloc(sz);
    }
    if (!data) throw Error("MemoryError", "out of memory allocating " + std::to_string(nbytes) + " bytes");
  }
  bytes = sz;
  requested = nbytes;
  g_live++;
  int64_t now = g_live_bytes += (int64_t)sz;
  for (std::atomic<int64_t>* m : {&g_peak, &g_high_water}) {
    int64_t pk = m->load();
    while (now > pk && !m->compare_exchange_weak(pk, now)) {}
  }
}

Storage::Storage(size_t nbytes, Device dev) {
  if (dev.type == DeviceType::CPU) {
    init_host(nbytes);
    return;
  }
  const CudaApi& api = cuda_api("allocate " + std::to_string(nbytes) + " bytes on " + dev.str());
  cuda_check(api.set_device(dev.index), "select " + dev.str());
  void* p = nullptr;
  cuda_check(api.malloc(&p, nbytes), "allocate " + std::to_string(nbytes) + " bytes on " + dev.str());
  data = p;
  bytes = requested = nbytes;
  device = dev;
}

Storage::~Storage() {
  if (device.type == DeviceType::CUDA) {
    // a failing free cannot throw from a destructor; the caching allocator only fails for foreign pointers
    if (data) cuda_api("free device memory").free(data);
    return;
  }
  g_live--;
  g_live_bytes -= (int64_t)bytes;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_pooled + bytes <= cache_cap()) {
      g_by_size[bytes].push_back(g_lru.insert(g_lru.end(), FreeBlock{bytes, data}));
      g_pooled += bytes;
      return;
    }
  }
  raw_free(data, bytes);
}

MemStats mem_stats() {
  std::lock_guard<std::mutex> lk(g_mu);
  return {g_live.load(), g_live_bytes.load(), (int64_t)g_pooled, g_peak.load()};
}
void mem_reset_peak() { g_peak = g_live_bytes.load(); }
void mem_empty_cache() {
  std::lock_guard<std::mutex> lk(g_mu);
  for (const FreeBlock& b : g_lru) raw_free(b.p, b.sz);
  g_lru.clear();
  g_by_size.clear();
  g_pooled = 0;
}

// ---- Tensor --------------------------------------------------------------------------------------
int64_t shape_numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t acc = 1;
  for (int64_t i = (int64_t)shape.size() - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}
int64_t Tensor::numel() const { return shape_numel(shape); }
bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; i--) {
    if (shape[i] != 1 && strides[i] != acc) return false;
    acc *= shape[i];
  }
  return true;
}
Tensor Tensor::empty(const std::vector<int64_t>& shape, DType dt) {
  for (auto d : shape) AD_CHECK(d >= 0, "ShapeError", "negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.dtype = dt;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.st = std::make_shared<Storage>(std::max<size_t>(1, (size_t)shape_numel(shape) * dtype_size(dt)));
  return t;
}
Tensor Tensor::empty(const std::vector<int64_t>& shape, DType dt, Device dev) {
  if (dev.type == DeviceType::CPU) return empty(shape, dt);
  for (auto d : shape) AD_CHECK(d >= 0, "ShapeError", "negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.dtype = dt;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.st = std::make_shared<Storage>(std::max<size_t>(1, (size_t)shape_numel(shape) * dtype_size(dt)), dev);
  return t;
}

bool parse_device(const std::string& s, Device* out) {
  if (s == "cpu") { *out = Device{DeviceType::CPU, 0}; return true; }
  if (s == "cuda") { *out = Device{DeviceType::CUDA, 0}; return true; }
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() < 9) {
    int idx = 0;
    for (size_t k = 5; k < s.size(); k++) {
      if (s[k] < '0' || s[k] > '9') return false;
      idx = idx * 10 + (s[k] - '0');
    }
    *out = Device{DeviceType::CUDA, idx};
    return true;
  }
  return false;
}

Tensor to_device(const Tensor& t, Device dev) {
  const Device from = t.device();
  if (from == dev && t.is_contiguous()) return t;
  Tensor src = t;
  if (from.type == DeviceType::CPU) src = contiguous(t);
  else if (!t.is_contiguous()) {
    // a strided device view: gathered on the device first (every dtype but f16: the copy kernel's dtypes)
    AD_CHECK(t.dtype != DType::F16, "DeviceError",
             "to(" + dev.str() + "): a non-contiguous " + std::string(dtype_name(t.dtype)) + " " + from.str() + " tensor has to be made contiguous there first");
    src = Tensor::empty(t.shape, t.dtype, from);
    copy_into(src, t);
  }
  Tensor out = Tensor::empty(src.shape, src.dtype, dev);
  const size_t n = src.nbytes();
  if (n == 0) return out;
  if (dev.type == DeviceType::CPU && from.type == DeviceType::CPU) {
    std::memcpy(out.raw(), src.raw(), n);
    return out;
  }
  const CudaApi& api = cuda_api("copy " + from.str() + " -> " + dev.str());
  if (from.type == DeviceType::CPU) {
    cuda_check(api.set_device(dev.index), "select " + dev.str());
    cuda_check(api.memcpy_h2d(out.raw(), src.raw(), n, nullptr), "copy cpu -> " + dev.str());
  } else if (dev.type == DeviceType::CPU) {
    cuda_check(api.set_device(from.index), "select " + from.str());
    cuda_check(api.memcpy_d2h(out.raw(), src.raw(), n, nullptr), "copy " + from.str() + " -> cpu");
  } else {
    AD_CHECK(from == dev, "DeviceError", "copies between CUDA devices (" + from.str() + " -> " + dev.str() + ") are not supported");
    cuda_check(api.memcpy_d2d(out.raw(), src.raw(), n, nullptr), "copy on " + dev.str());
  }
  return out;
}

Tensor Tensor::zeros(const std::vector<int64_t>& shape, DType dt) {
  Tensor t = empty(shape, dt);
  std::memset(t.st->data, 0, t.nbytes());
  return t;
}
Tensor Tensor::view(const std::vector<int64_t>& sh, const std::vector<int64_t>& str, int64_t off) const {
  Tensor t = *this;
  t.shape = sh;
  t.strides = str;
  t.offset = off;
  return t;
}

// ---- strided copy with conversion ----------------------------------------------------------------
namespace {
template <typename T> inline double load_as_d(const void* p) { return (double)*static_cast<const T*>(p); }

inline float load_f(const char* p, DType d) {
  switch (d) {
    case DType::F32: return *reinterpret_cast<const float*>(p);
    case DType::BF16: return bf16_to_f32(*reinterpret_cast<const uint16_t*>(p));
    case DType::F16: return f16_to_f32(*reinterpret_cast<const uint16_t*>(p));
    case DType::I32: return (float)*reinterpret_cast<const int32_t*>(p);
    case DType::I64: return (float)*reinterpret_cast<const int64_t*>(p);
    case DType::BOOL: return *reinterpret_cast<const uint8_t*>(p) ? 1.f : 0.f;
  }
  return 0;
}
inline int64_t load_i(const char* p, DType d) {
  switch (d) {
    case DType::I32: return *reinterpret_cast<const int32_t*>(p);
    case DType::I64: return *reinterpret_cast<const int64_t*>(p);
    case DType::BOOL: return *reinterpret_cast<const uint8_t*>(p) ? 1 : 0;
    default: {
      float f = load_f(p, d);
      if (!(f == f)) return 0;
      if (f >= 9.2e18f) return INT64_MAX;
      if (f <= -9.2e18f) return INT64_MIN;
      return (int64_t)f;  // truncation toward zero, like PyTorch's .to(int64)
    }
  }
}
inline void store(char* p, DType d, const char* src, DType sd) {
  switch (d) {
    case DType::F32: *reinterpret_cast<float*>(p) = load_f(src, sd); break;
    case DType::BF16: *reinterpret_cast<uint16_t*>(p) = f32_to_bf16(load_f(src, sd)); break;
    case DType::F16: *reinterpret_cast<uint16_t*>(p) = f32_to_f16(load_f(src, sd)); break;
    case DType::I32: *reinterpret_cast<int32_t*>(p) = (int32_t)load_i(src, sd); break;
    case DType::I64: *reinterpret_cast<int64_t*>(p) = load_i(src, sd); break;
    case DType::BOOL:
      *reinterpret_cast<uint8_t*>(p) = dtype_is_float(sd) ? (load_f(src, sd) != 0.f) : (load_i(src, sd) != 0);
      break;
  }
}
}  // namespace

// Contiguous f32 <-> bf16 runs (mixed precision casts every Linear input): branch-free loops that vectorise.
namespace {
AD_CLONES void f32_to_bf16_portable(uint16_t* d, const float* s, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    std::memcpy(&u, &s[i], 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    d[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);  // quiet NaN, else round-to-nearest-even
  }
}
// The same rounding 32 elements per instruction (vcvtne2ps2bf16, bf16_simd.h).
AD_TGT_BF16RND_ISA void f32_to_bf16_bf16isa(uint16_t* d, const float* s, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) _mm512_storeu_si512(d + i, bf16_round32_isa(_mm512_loadu_ps(s + i), _mm512_loadu_ps(s + i + 16)));
  if (i < n) f32_to_bf16_portable(d + i, s + i, n - i);
}
}  // namespace

void f32_to_bf16_run(uint16_t* d, const float* s, int64_t n) {
  static const bool isa = [] {
    const CpuFeatures& f = cpu_features();
    return f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512bf16;
  }();
  if (isa)
    f32_to_bf16_bf16isa(d, s, n);
  else
    f32_to_bf16_portable(d, s, n);
}
AD_CLONES void bf16_to_f32_run(float* d, const uint16_t* s, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const uint32_t u = (uint32_t)s[i] << 16;
    std::memcpy(&d[i], &u, 4);
  }
}

void copy_into(const Tensor& dst, const Tensor& src) {
  AD_CHECK(dst.shape == src.shape, "ShapeError",
           "copy: shape mismatch " + shape_str(dst.shape) + " vs " + shape_str(src.shape));
  int64_t n = dst.numel();
  if (n == 0) return;
  if (!dst.on_cpu() || !src.on_cpu()) {
    // on one device, any strides and dtypes but f16: the CUDA gather/scatter kernel (cuda/elementwise.cu)
    if (dst.device() == src.device() && cuda_dtype_code(dst.dtype) >= 0 && cuda_dtype_code(src.dtype) >= 0 && dst.dim() <= 8) {
      cuda_check(cuda_api("copy").copy_strided(cuda_dtype_code(src.dtype), cuda_dtype_code(dst.dtype), (int)dst.dim(), dst.shape.data(), src.raw(), src.strides.data(),
                                               dst.raw(), dst.strides.data(), nullptr),
                 "copy on " + dst.device().str());
      return;
    }
    // between devices (or other dtypes): whole contiguous same-dtype copies
    AD_CHECK(dst.dtype == src.dtype && dst.is_contiguous() && src.is_contiguous(), "DeviceError",
             "copy " + src.device().str() + " -> " + dst.device().str() + ": only contiguous copies of one dtype are supported between devices");
    if (dst.on_cpu() || src.on_cpu()) {
      Tensor moved = to_device(src, dst.device());
      if (dst.on_cpu()) std::memcpy(dst.raw(), moved.raw(), (size_t)n * dtype_size(dst.dtype));
      else cuda_check(cuda_api("copy_").memcpy_d2d(dst.raw(), moved.raw(), (size_t)n * dtype_size(dst.dtype), nullptr), "copy_ on " + dst.device().str());
    } else {
      AD_CHECK(dst.device() == src.device(), "DeviceError", "copy between " + src.device().str() + " and " + dst.device().str());
      cuda_check(cuda_api("copy_").memcpy_d2d(dst.raw(), src.raw(), (size_t)n * dtype_size(dst.dtype), nullptr), "copy_ on " + dst.device().str());
    }
    return;
  }
  if (dst.dtype == src.dtype && dst.is_contiguous() && src.is_contiguous()) {
    std::memcpy(dst.raw(), src.raw(), (size_t)n * dtype_size(dst.dtype));
    return;
  }
  if (dst.is_contiguous() && src.is_contiguous() &&
      ((dst.dtype == DType::BF16 && src.dtype == DType::F32) || (dst.dtype == DType::F32 && src.dtype == DType::BF16))) {
    const bool down = dst.dtype == DType::BF16;
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
      if (down) f32_to_bf16_run(static_cast<uint16_t*>(dst.raw()) + b, static_cast<const float*>(src.raw()) + b, e - b);
      else bf16_to_f32_run(static_cast<float*>(dst.raw()) + b, static_cast<const uint16_t*>(src.raw()) + b, e - b);
    });
    return;
  }
  int64_t nd = dst.dim();
  if (nd == 0) {
    store((char*)dst.raw(), dst.dtype, (const char*)src.raw(), src.dtype);
    return;
  }
  const int64_t inner = dst.shape[nd - 1];
  const int64_t rows = n / inner;
  const size_t des = dtype_size(dst.dtype), ses = dtype_size(src.dtype);
  const int64_t dsi = dst.strides[nd - 1], ssi = src.strides[nd - 1];
  const bool same = dst.dtype == src.dtype;
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t rem = r, doff = dst.offset, soff = src.offset;
      for (int64_t d = nd - 2; d >= 0; d--) {
        int64_t i = rem % dst.shape[d];
        rem /= dst.shape[d];
        doff += i * dst.strides[d];
        soff += i * src.strides[d];
      }
      char* dp = static_cast<char*>(dst.st->data) + doff * des;
      const char* sp = static_cast<const char*>(src.st->data) + soff * ses;
      if (same && des == 4) {
        auto* d4 = reinterpret_cast<uint32_t*>(dp); auto* s4 = reinterpret_cast<const uint32_t*>(sp);
        for (int64_t j = 0; j < inner; j++) d4[j * dsi] = s4[j * ssi];
      } else if (same && des == 2) {
        auto* d2 = reinterpret_cast<uint16_t*>(dp); auto* s2 = reinterpret_cast<const uint16_t*>(sp);
        for (int64_t j = 0; j < inner; j++) d2[j * dsi] = s2[j * ssi];
      } else if (same) {
        for (int64_t j = 0; j < inner; j++) std::memcpy(dp + j * dsi * des, sp + j * ssi * ses, des);
      } else {
        for (int64_t j = 0; j < inner; j++) store(dp + j * dsi * des, dst.dtype, sp + j * ssi * ses, src.dtype);
      }
    }
  });
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  AD_CHECK(t.on_cpu(), "DeviceError", "contiguous: strided copies of " + t.device().str() + " tensors have no CUDA kernel yet");
  Tensor o = Tensor::empty(t.shape, t.dtype);
  copy_into(o, t);
  return o;
}

Tensor cast(const Tensor& t, DType dt) {
  if (t.dtype == dt) return t;
  AD_CHECK(t.on_cpu(), "DeviceError", std::string("cast to ") + dtype_name(dt) + ": dtype conversion of " + t.device().str() + " tensors has no CUDA kernel yet");
  Tensor o = Tensor::empty(t.shape, dt);
  copy_into(o, t);
  return o;
}

}  // namespace ad
