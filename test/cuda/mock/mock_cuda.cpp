// mock_cuda.cpp — a stand-in for libadapters_cuda.so that implements the C ABI of cuda/adapters_cuda.h on the
// host, so the addon's device plumbing (storage, transfers, op dispatch, errors, memory statistics) is tested on
// machines without a GPU. test/cuda/device.test.ts builds it with the system C++ compiler and points
// ADAPTERS_CUDA_LIB at it.
//
// "Device" pointers are host allocations shifted by kShift: arithmetic on them works as on real device pointers,
// but any host-side dereference by the addon lands in unmapped memory and crashes the test process, which is the
// bug class this mock exists to catch. Only this file's functions shift them back.
//
// Environment: MOCK_CUDA_DEVICES (default 1), MOCK_CUDA_MAX_BYTES (allocations above it fail with
// cudaErrorMemoryAllocation = 2).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "../../../cuda/adapters_cuda.h"  // the ABI this file implements (the compiler checks every signature)
#include "../../../cuda/elementwise_math.h"
#include "../../../cuda/index_math.h"
#include "../../../cuda/sgmv_math.h"
#include "../../../cuda/rows_math.h"
#include "../../../cuda/attention_gemm.h"
#include "../../../cuda/attention_math.h"
#include "../../../cuda/random_math.h"

#include <vector>


namespace {
constexpr uintptr_t kShift = uintptr_t(1) << 46;  // 64 TiB: outside anything the process maps
std::mutex g_mu;
std::map<uintptr_t, size_t> g_blocks;  // device address -> size
uint64_t g_alloc = 0, g_peak = 0, g_nalloc = 0, g_nfree = 0;
int g_dev = 0;

void* host(const void* d) { return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(d) - kShift); }
int devices() {
  const char* e = std::getenv("MOCK_CUDA_DEVICES");
  return e ? std::atoi(e) : 1;
}
float bf(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// true when [p, p + n) lies inside one live block
bool valid(const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_blocks.upper_bound(a);
  if (it == g_blocks.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}
// Reference GEMMs (double accumulation), the contract of adapters_cuda.h.
template <class T, class Cvt>
int gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
         float beta, float* C, int64_t ldc, Cvt cvt) {
  if (M == 0 || N == 0) return 0;
  const int64_t ar = ta ? K : M, br = tb ? N : K;
  if (!valid(A, (size_t)((ar - 1) * lda + (ta ? M : K)) * sizeof(T)) || !valid(B, (size_t)((br - 1) * ldb + (tb ? K : N)) * sizeof(T)) ||
      !valid(C, (size_t)((M - 1) * ldc + N) * sizeof(float)))
    return 700;  // what a kernel reading outside its buffers would end in
  const T* a = static_cast<const T*>(host(A));
  const T* b = static_cast<const T*>(host(B));
  float* c = static_cast<float*>(host(C));
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++)
        s += (double)cvt(ta ? a[k * lda + i] : a[i * lda + k]) * (double)cvt(tb ? b[j * ldb + k] : b[k * ldb + j]);
      float& o = c[i * ldc + j];
      o = beta == 0.f ? alpha * (float)s : alpha * (float)s + beta * o;
    }
  return 0;
}
template <class T>
T* H(T* p) { return p ? static_cast<T*>(host(p)) : nullptr; }
}  // namespace

extern "C" {

int adapters_cuda_abi_version(void) { return 1; }
int adapters_cuda_device_count(void) { return devices(); }
int adapters_cuda_device_name(int dev, char* buf, int len) {
  if (dev < 0 || dev >= devices()) return 101;  // cudaErrorInvalidDevice
  std::snprintf(buf, (size_t)len, "Mock CUDA device %d", dev);
  return 0;
}
const char* adapters_cuda_error_string(int code) {
  switch (code) {
    case 0: return "no error";
    case 1: return "invalid argument";
    case 2: return "out of memory";
    case 101: return "invalid device ordinal";
    case 700: return "an illegal memory access was encountered";
    default: return "unknown error";
  }
}
int adapters_cuda_set_device(int dev) {
  if (dev < 0 || dev >= devices()) return 101;
  g_dev = dev;
  return 0;
}
int adapters_cuda_get_device(int* dev) {
  *dev = g_dev;
  return 0;
}

int adapters_cuda_malloc(void** ptr, size_t bytes) {
  if (const char* e = std::getenv("MOCK_CUDA_MAX_BYTES"))
    if (bytes > (size_t)std::strtoull(e, nullptr, 10)) return 2;
  if (bytes == 0) {
    *ptr = nullptr;
    return 0;
  }
  void* h = std::calloc(1, bytes);
  if (!h) return 2;
  const uintptr_t d = reinterpret_cast<uintptr_t>(h) + kShift;
  std::lock_guard<std::mutex> lk(g_mu);
  g_blocks[d] = bytes;
  g_alloc += bytes;
  if (g_alloc > g_peak) g_peak = g_alloc;
  g_nalloc++;
  *ptr = reinterpret_cast<void*>(d);
  return 0;
}
int adapters_cuda_free(void* ptr) {
  if (!ptr) return 0;
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = g_blocks.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == g_blocks.end()) return 17;  // cudaErrorInvalidDevicePointer
  g_alloc -= it->second;
  g_nfree++;
  g_blocks.erase(it);
  std::free(host(ptr));
  return 0;
}
int adapters_cuda_empty_cache(void) { return 0; }


int adapters_cuda_memory_stats(adapters_cuda_mem_stats* s) {
  std::lock_guard<std::mutex> lk(g_mu);
  *s = adapters_cuda_mem_stats{g_alloc, g_peak, g_alloc, g_alloc, g_peak, 0, g_nalloc, g_nfree, 0, g_nalloc, g_nfree, 0};
  return 0;
}
int adapters_cuda_reset_peak_stats(void) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_peak = g_alloc;
  return 0;
}
size_t adapters_cuda_size_class(size_t bytes) { return bytes; }

int adapters_cuda_memcpy_h2d(void* dst, const void* src, size_t n, void*) {
  if (!valid(dst, n)) return 1;
  std::memcpy(host(dst), src, n);
  return 0;
}
int adapters_cuda_memcpy_d2h(void* dst, const void* src, size_t n, void*) {
  if (!valid(src, n)) return 1;
  std::memcpy(dst, host(src), n);
  return 0;
}
int adapters_cuda_memcpy_d2d(void* dst, const void* src, size_t n, void*) {
  if (!valid(dst, n) || !valid(src, n)) return 1;
  std::memmove(host(dst), host(src), n);
  return 0;
}
int adapters_cuda_memset(void* dst, int v, size_t n, void*) {
  if (!valid(dst, n)) return 1;
  std::memset(host(dst), v, n);
  return 0;
}
int adapters_cuda_synchronize(void*) { return 0; }

int adapters_cuda_gemm_f32(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, void*) {
  return gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, [](float x) { return x; });
}
// the f32 matmul precision setting (the mock's products are plain f32 loops either way)
static int g_mock_f32_precision = 0;
int adapters_cuda_set_f32_matmul_precision(int mode) {
  if (mode != 0 && mode != 1) return 1;
  g_mock_f32_precision = mode;
  return 0;
}
int adapters_cuda_get_f32_matmul_precision(void) { return g_mock_f32_precision; }
int adapters_cuda_gemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                            const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, void*) {
  return gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bf);
}
// bf16 out: the f32 result (with beta's C read from bf16) rounded to nearest even, as the library's epilogue
int adapters_cuda_gemm_bf16_out(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                                const uint16_t* B, int64_t ldb, float beta, uint16_t* C, int64_t ldc, void*) {
  if (M == 0 || N == 0) return 0;
  if (!valid(C, (size_t)((M - 1) * ldc + N) * 2)) return 700;
  std::vector<float> c32((size_t)(M * N));
  uint16_t* c = static_cast<uint16_t*>(host(C));
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) c32[(size_t)(i * N + j)] = ad_ew::bf16_to_f32(c[i * ldc + j]);
  void* tmp = nullptr;
  if (int e = adapters_cuda_malloc(&tmp, c32.size() * 4)) return e;
  std::memcpy(host(tmp), c32.data(), c32.size() * 4);
  const int rc = gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, static_cast<float*>(tmp), N, bf);
  const float* r = static_cast<const float*>(host(tmp));
  if (rc == 0)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) c[i * ldc + j] = ad_ew::f32_to_bf16(r[i * N + j]);
  adapters_cuda_free(tmp);
  return rc;
}

// torch.optim.AdamW's arithmetic, as native/kernels/optim.cpp.
int adapters_cuda_adamw_step(int64_t n, float* const* params, const float* const* grads, float* const* exp_avg,
                             float* const* exp_avg_sq, const int64_t* numel, const float* hyper, float b1, float b2,
                             float eps, int64_t step, void*) {
  const double bc1 = 1.0 - std::pow((double)b1, (double)step), bc2 = 1.0 - std::pow((double)b2, (double)step);
  const float bc2s = (float)std::sqrt(bc2);
  for (int64_t k = 0; k < n; k++) {
    const size_t bytes = (size_t)numel[k] * 4;
    if (!valid(params[k], bytes) || !valid(grads[k], bytes) || !valid(exp_avg[k], bytes) || !valid(exp_avg_sq[k], bytes)) return 700;
    float* p = static_cast<float*>(host(params[k]));
    const float* g = static_cast<const float*>(host(grads[k]));
    float* m = static_cast<float*>(host(exp_avg[k]));
    float* v = static_cast<float*>(host(exp_avg_sq[k]));
    const float lr = hyper[2 * k], wd = hyper[2 * k + 1];
    const float decay = 1.f - lr * wd, stp = (float)(lr / bc1);
    for (int64_t i = 0; i < numel[k]; i++) {
      if (wd != 0.f) p[i] *= decay;
      m[i] += (1.f - b1) * (g[i] - m[i]);
      v[i] = v[i] * b2 + (1.f - b2) * g[i] * g[i];
      p[i] -= stp * (m[i] / (std::sqrt(v[i]) / bc2s + eps));
    }
  }
  return 0;
}

// Elementwise ops: the CUDA kernels' own per-element code (cuda/elementwise_math.h), run over every index.
namespace {
// the byte extent [lo, hi) an operand's strides reach over the index space
bool reach_ok(const void* base, const ad_ew::Layout& l, int k, size_t esize, int64_t n) {
  if (n == 0) return true;
  int64_t lo = 0, hi = 0;
  for (int d = 0; d < l.ndim; d++) {
    const int64_t span = (l.shape[d] - 1) * l.stride[k][d];
    (span < 0 ? lo : hi) += span;
  }
  return valid(static_cast<const char*>(base) + lo * (int64_t)esize, (size_t)(hi - lo + 1) * esize);
}
}  // namespace

int adapters_cuda_binary_f32(int op, int ndim, const int64_t* shape, const float* a, const int64_t* astrides, const float* b,
                             const int64_t* bstrides, float* out, void*) {
  ad_ew::Layout l;
  int64_t n;
  if (op < 0 || op >= ad_ew::BINARY_COUNT || !ad_ew::make_layout(ndim, shape, astrides, bstrides, &l, &n)) return 1;
  if (n == 0) return 0;
  if (!reach_ok(a, l, 0, 4, n) || !reach_ok(b, l, 1, 4, n) || !valid(out, (size_t)n * 4)) return 700;
  const float* ha = static_cast<const float*>(host(a));
  const float* hb = static_cast<const float*>(host(b));
  float* ho = static_cast<float*>(host(out));
  // the kernels' three paths: flat, 32-bit indices, 64-bit indices
  if (ad_ew::layout_flat(l)) for (int64_t i = 0; i < n; i++) ho[i] = ad_ew::binary(op, ha[i], hb[i]);
  else if (n <= 0xffffffffLL) for (uint32_t i = 0; i < (uint32_t)n; i++) ad_ew::binary_at<uint32_t>(i, op, l, ha, hb, ho);
  else for (int64_t i = 0; i < n; i++) ad_ew::binary_at(i, op, l, ha, hb, ho);
  return 0;
}
int adapters_cuda_unary_f32(int op, int64_t n, const float* x, float* y, float p0, float p1, void*) {
  if (op < 0 || op >= ad_ew::UNARY_COUNT || n < 0) return 1;
  if (n == 0) return 0;
  if (!valid(x, (size_t)n * 4) || !valid(y, (size_t)n * 4)) return 700;
  const float* hx = static_cast<const float*>(host(x));
  float* hy = static_cast<float*>(host(y));
  for (int64_t i = 0; i < n; i++) hy[i] = ad_ew::unary(op, hx[i], p0, p1);
  return 0;
}
int adapters_cuda_unary_backward_f32(int op, int64_t n, const float* x, const float* g, float* out, void*) {
  if (op < 0 || op >= ad_ew::UNARY_COUNT || n < 0) return 1;
  if (n == 0) return 0;
  if (!valid(x, (size_t)n * 4) || !valid(g, (size_t)n * 4) || !valid(out, (size_t)n * 4)) return 700;
  const float* hx = static_cast<const float*>(host(x));
  const float* hg = static_cast<const float*>(host(g));
  float* ho = static_cast<float*>(host(out));
  for (int64_t i = 0; i < n; i++) ho[i] = ad_ew::unary_backward(op, hx[i], hg[i]);
  return 0;
}
int adapters_cuda_copy_strided(int sdt, int ddt, int ndim, const int64_t* shape, const void* src, const int64_t* sstrides,
                               void* dst, const int64_t* dstrides, void*) {
  ad_ew::Layout l;
  int64_t n;
  if (sdt < 0 || sdt >= ad_ew::DTYPE_COUNT || ddt < 0 || ddt >= ad_ew::DTYPE_COUNT || !ad_ew::make_layout(ndim, shape, sstrides, dstrides, &l, &n))
    return 1;
  if (n == 0) return 0;
  const size_t ses = (size_t)ad_ew::dtype_size(sdt), des = (size_t)ad_ew::dtype_size(ddt);
  if (!reach_ok(src, l, 0, ses, n) || !reach_ok(dst, l, 1, des, n)) return 700;
  if (ad_ew::layout_flat(l)) for (int64_t i = 0; i < n; i++) ad_ew::copy_elem(host(src), sdt, i, host(dst), ddt, i);
  else if (n <= 0xffffffffLL) for (uint32_t i = 0; i < (uint32_t)n; i++) ad_ew::copy_at<uint32_t>(i, l, host(src), sdt, host(dst), ddt);
  else for (int64_t i = 0; i < n; i++) ad_ew::copy_at(i, l, host(src), sdt, host(dst), ddt);
  return 0;
}

// segmented multi-LoRA: the single-launch kernels' element code (sgmv_math.h)
namespace {
// the table with host views of its device pointers (the element code reads A and B)
adapters_cuda_sgmv host_table(const adapters_cuda_sgmv* t, bool* ok) {
  adapters_cuda_sgmv h = *t;
  *ok = true;
  for (int i = 0; i < t->n; i++) {
    if (t->rank[i] && (!valid(t->A[i], (size_t)(t->rank[i] * t->K) * 4 + !t->K) || !valid(t->B[i], (size_t)(t->O * t->rank[i]) * 4 + !t->O))) *ok = false;
    h.A[i] = static_cast<const float*>(host(t->A[i]));
    h.B[i] = static_cast<const float*>(host(t->B[i]));
  }
  return h;
}
}  // namespace
int adapters_cuda_lora_sgmv_f32(const adapters_cuda_sgmv* t, const float* x, float* T, float* D, void*) {
  if (!ad_sgmv::table_ok(t)) return 1;
  bool ok;
  const adapters_cuda_sgmv h = host_table(t, &ok);
  if (!ok || (t->M * t->K && !valid(x, (size_t)(t->M * t->K) * 4)) || (t->M * t->R && !valid(T, (size_t)(t->M * t->R) * 4)) ||
      (t->M * t->O && !valid(D, (size_t)(t->M * t->O) * 4)))
    return 700;
  for (int64_t e = 0; e < t->M * t->R; e++) ad_sgmv::shrink_at(e, h, static_cast<const float*>(host(x)), static_cast<float*>(host(T)));
  for (int64_t e = 0; e < t->M * t->O; e++) ad_sgmv::expand_at(e, h, static_cast<const float*>(host(T)), static_cast<float*>(host(D)));
  return 0;
}
int adapters_cuda_lora_sgmv_backward_f32(const adapters_cuda_sgmv* t, const float* g, const float* x, const float* T, float* GT, float* gx,
                                         float* dA, float* dB, void*) {
  if (!ad_sgmv::table_ok(t)) return 1;
  bool ok;
  const adapters_cuda_sgmv h = host_table(t, &ok);
  const int64_t M = t->M, K = t->K, O = t->O, R = t->R;
  if (!ok || (M * O && !valid(g, (size_t)(M * O) * 4)) || (M * K && (!valid(x, (size_t)(M * K) * 4) || !valid(gx, (size_t)(M * K) * 4))) ||
      (M * R && (!valid(T, (size_t)(M * R) * 4) || !valid(GT, (size_t)(M * R) * 4))) || (t->aoff[t->n] && !valid(dA, (size_t)t->aoff[t->n] * 4)) ||
      (t->boff[t->n] && !valid(dB, (size_t)t->boff[t->n] * 4)))
    return 700;
  const float *hg = static_cast<const float*>(host(g)), *hx = static_cast<const float*>(host(x)), *hT = static_cast<const float*>(host(T));
  float* hGT = static_cast<float*>(host(GT));
  for (int64_t e = 0; e < M * R; e++) ad_sgmv::gt_at(e, h, hg, hGT);
  for (int64_t e = 0; e < M * K; e++) ad_sgmv::gx_at(e, h, hGT, static_cast<float*>(host(gx)));
  for (int64_t e = 0; e < t->aoff[t->n]; e++) ad_sgmv::da_at(e, h, hGT, hx, static_cast<float*>(host(dA)));
  for (int64_t e = 0; e < t->boff[t->n]; e++) ad_sgmv::db_at(e, h, hg, hT, static_cast<float*>(host(dB)));
  return 0;
}

namespace {
adapters_cuda_bn_sgmv bn_host_table(const adapters_cuda_bn_sgmv* t, bool* ok) {
  adapters_cuda_bn_sgmv h = *t;
  *ok = true;
  for (int i = 0; i < t->n; i++) {
    const size_t wc = (size_t)(t->width[i] * t->C) * 4;
    if ((wc && (!valid(t->Wd[i], wc) || !valid(t->Wu[i], wc))) || (t->width[i] && !valid(t->bd[i], (size_t)t->width[i] * 4)) ||
        (t->C && !valid(t->bu[i], (size_t)t->C * 4)))
      *ok = false;
    h.Wd[i] = static_cast<const float*>(host(t->Wd[i]));
    h.bd[i] = static_cast<const float*>(host(t->bd[i]));
    h.Wu[i] = static_cast<const float*>(host(t->Wu[i]));
    h.bu[i] = static_cast<const float*>(host(t->bu[i]));
  }
  return h;
}
const float* hcf(const float* p) { return static_cast<const float*>(host(p)); }  // host views of device floats
float* hmf(float* p) { return static_cast<float*>(host(p)); }
}  // namespace
int adapters_cuda_bottleneck_sgmv_f32(const adapters_cuda_bn_sgmv* t, const float* h, const float* res, float* pre, float* y, void*) {
  if (!ad_sgmv::bn_table_ok(t)) return 1;
  bool ok;
  const adapters_cuda_bn_sgmv ht = bn_host_table(t, &ok);
  const size_t mc = (size_t)(t->M * t->C) * 4, md = (size_t)(t->M * t->D) * 4;
  if (!ok || (mc && (!valid(h, mc) || !valid(res, mc) || !valid(y, mc))) || (md && !valid(pre, md))) return 700;
  for (int64_t e = 0; e < t->M * t->D; e++) ad_sgmv::bn_pre_at(e, ht, hcf(h), hmf(pre));
  for (int64_t e = 0; e < t->M * t->C; e++) ad_sgmv::bn_out_at(e, ht, hmf(pre), hcf(res), hmf(y));
  return 0;
}
int adapters_cuda_bottleneck_sgmv_backward_f32(const adapters_cuda_bn_sgmv* t, const float* g, const float* h, const float* pre, float* gpre,
                                               float* gh, float* dWd, float* dbd, float* dWu, float* dbu, void*) {
  if (!ad_sgmv::bn_table_ok(t)) return 1;
  bool ok;
  const adapters_cuda_bn_sgmv ht = bn_host_table(t, &ok);
  const size_t mc = (size_t)(t->M * t->C) * 4, md = (size_t)(t->M * t->D) * 4, w = (size_t)t->woff[t->n] * 4, d = (size_t)t->doff[t->n] * 4,
               u = (size_t)(t->n * t->C) * 4;
  if (!ok || (mc && (!valid(g, mc) || !valid(h, mc) || !valid(gh, mc))) || (md && (!valid(pre, md) || !valid(gpre, md))) ||
      (w && (!valid(dWd, w) || !valid(dWu, w))) || (d && !valid(dbd, d)) || (u && !valid(dbu, u)))
    return 700;
  for (int64_t e = 0; e < t->M * t->D; e++) ad_sgmv::bn_gpre_at(e, ht, hcf(g), hcf(pre), hmf(gpre));
  for (int64_t e = 0; e < t->M * t->C; e++) ad_sgmv::bn_gh_at(e, ht, hmf(gpre), hmf(gh));
  for (int64_t e = 0; e < t->woff[t->n]; e++) ad_sgmv::bn_dwd_at(e, ht, hmf(gpre), hcf(h), hmf(dWd));
  for (int64_t e = 0; e < t->woff[t->n]; e++) ad_sgmv::bn_dwu_at(e, ht, hcf(g), hcf(pre), hmf(dWu));
  for (int64_t e = 0; e < t->doff[t->n]; e++) ad_sgmv::bn_dbd_at(e, ht, hmf(gpre), hmf(dbd));
  for (int64_t e = 0; e < t->n * t->C; e++) ad_sgmv::bn_dbu_at(e, ht, hcf(g), hmf(dbu));
  return 0;
}

// index ops: the kernels' element code (index_math.h), one output element at a time
int adapters_cuda_index_select(int64_t O, int64_t N, int64_t I, int64_t K, const int64_t* idx, const void* x, int dt, void* out, void*) {
  if (O < 0 || N < 0 || I < 0 || K < 0 || dt < 0 || dt >= ad_ew::DTYPE_COUNT) return 1;
  const int64_t n = O * K * I, es = ad_ew::dtype_size(dt);
  if (n == 0) return 0;
  if (!valid(idx, (size_t)K * 8) || !valid(x, (size_t)(O * N * I * es)) || !valid(out, (size_t)(n * es))) return 700;
  const ad_idx::Geo g{O, N, I, K};
  for (int64_t t = 0; t < n; t++) ad_idx::select_at(t, g, static_cast<const int64_t*>(host(idx)), host(x), host(out), (int)es);
  return 0;
}
int adapters_cuda_index_add_f32(int64_t O, int64_t N, int64_t I, int64_t K, const int64_t* idx, const float* base, const float* src, float* out,
                                void*) {
  if (O < 0 || N < 0 || I < 0 || K < 0) return 1;
  const int64_t n = O * N * I;
  if (n == 0) return 0;
  if (!valid(idx, (size_t)K * 8 + (K == 0)) || !valid(base, (size_t)n * 4) || !valid(src, (size_t)(O * K * I) * 4 + (K == 0)) || !valid(out, (size_t)n * 4))
    return 700;
  const ad_idx::Geo g{O, N, I, K};
  for (int64_t t = 0; t < n; t++)
    ad_idx::index_add_at(t, g, static_cast<const int64_t*>(host(idx)), static_cast<const float*>(host(base)), static_cast<const float*>(host(src)),
                         static_cast<float*>(host(out)));
  return 0;
}
int adapters_cuda_gather(int nd, int dim, const int64_t* idx_shape, const int64_t* data_strides, const int64_t* idx, const void* x, int dt,
                         void* out, void*) {
  if (nd < 1 || nd > ad_ew::kMaxDims || dim < 0 || dim >= nd || !idx_shape || !data_strides || dt < 0 || dt >= ad_ew::DTYPE_COUNT) return 1;
  ad_idx::NdGeo g{};
  g.nd = nd;
  g.dim = dim;
  int64_t n = 1;
  for (int e = 0; e < nd; e++) {
    g.idx_shape[e] = idx_shape[e];
    g.data_strides[e] = data_strides[e];
    n *= idx_shape[e];
  }
  if (n == 0) return 0;
  const int es = ad_ew::dtype_size(dt);
  if (!valid(idx, (size_t)n * 8) || !valid(out, (size_t)(n * es))) return 700;
  const int64_t* hi = static_cast<const int64_t*>(host(idx));
  for (int64_t t = 0; t < n; t++) {  // every element it reads must lie in an allocation
    int64_t rem = t, off = 0;
    for (int e = nd - 1; e >= 0; e--) {
      const int64_t i = rem % g.idx_shape[e];
      rem /= g.idx_shape[e];
      off += (e == dim ? hi[t] : i) * g.data_strides[e];
    }
    if (!valid(static_cast<const char*>(x) + off * es, (size_t)es)) return 700;
  }
  for (int64_t t = 0; t < n; t++) ad_idx::gather_at(t, g, hi, host(x), host(out), es);
  return 0;
}
int adapters_cuda_scatter_add_f32(int nd, int dim, const int64_t* data_shape, const int64_t* idx_shape, const int64_t* idx, const float* base,
                                  const float* src, float* out, void*) {
  if (nd < 1 || nd > ad_ew::kMaxDims || dim < 0 || dim >= nd || !idx_shape || !data_shape) return 1;
  ad_idx::NdGeo g{};
  g.nd = nd;
  g.dim = dim;
  int64_t n = 1, ni = 1;
  for (int e = 0; e < nd; e++) {
    g.idx_shape[e] = idx_shape[e];
    g.data_shape[e] = data_shape[e];
    n *= data_shape[e];
    ni *= idx_shape[e];
  }
  if (n == 0) return 0;
  if (!valid(base, (size_t)n * 4) || !valid(out, (size_t)n * 4) || (ni > 0 && (!valid(idx, (size_t)ni * 8) || !valid(src, (size_t)ni * 4)))) return 700;
  for (int64_t t = 0; t < n; t++)
    ad_idx::scatter_add_at(t, g, static_cast<const int64_t*>(host(idx)), static_cast<const float*>(host(base)), static_cast<const float*>(host(src)),
                           static_cast<float*>(host(out)));
  return 0;
}

// comparisons / where / masked_fill: the kernels' element code, with their 32-bit / 64-bit index paths
int adapters_cuda_compare(int op, int ndim, const int64_t* shape, const void* a, int adt, const int64_t* astrides, const void* b, int bdt,
                          const int64_t* bstrides, uint8_t* out, void*) {
  ad_ew::Layout l;
  int64_t n;
  if (op < 0 || op >= ad_ew::COMPARE_COUNT || adt < 0 || adt >= ad_ew::DTYPE_COUNT || bdt < 0 || bdt >= ad_ew::DTYPE_COUNT || !astrides ||
      !bstrides || !ad_ew::make_layout(ndim, shape, astrides, bstrides, &l, &n))
    return 1;
  if (n == 0) return 0;
  if (!reach_ok(a, l, 0, (size_t)ad_ew::dtype_size(adt), n) || !reach_ok(b, l, 1, (size_t)ad_ew::dtype_size(bdt), n) || !valid(out, (size_t)n))
    return 700;
  uint8_t* ho = static_cast<uint8_t*>(host(out));
  if (n <= 0xffffffffLL) for (uint32_t i = 0; i < (uint32_t)n; i++) ad_ew::compare_at<uint32_t>(i, op, l, host(a), adt, host(b), bdt, ho);
  else for (int64_t i = 0; i < n; i++) ad_ew::compare_at(i, op, l, host(a), adt, host(b), bdt, ho);
  return 0;
}
int adapters_cuda_where(int ndim, const int64_t* shape, const uint8_t* cond, const int64_t* cstrides, const void* a, const int64_t* astrides,
                        const void* b, const int64_t* bstrides, int dt, void* out, void*) {
  ad_ew::LayoutN<3> l;
  int64_t n;
  const int64_t* st[3] = {cstrides, astrides, bstrides};
  if ((dt != ad_ew::F32 && dt != ad_ew::I64) || !cstrides || !astrides || !bstrides || !ad_ew::make_layout_n<3>(ndim, shape, st, &l, &n)) return 1;
  if (n == 0) return 0;
  const size_t es = (size_t)ad_ew::dtype_size(dt);
  ad_ew::Layout lc, la, lb;  // per-operand reach checks through 2-operand views of the same index space
  for (ad_ew::Layout* v : {&lc, &la, &lb}) {
    v->ndim = l.ndim;
    for (int d = 0; d < l.ndim; d++) v->shape[d] = l.shape[d];
  }
  for (int d = 0; d < l.ndim; d++) {
    lc.stride[0][d] = l.stride[0][d];
    la.stride[0][d] = l.stride[1][d];
    lb.stride[0][d] = l.stride[2][d];
  }
  if (!reach_ok(cond, lc, 0, 1, n) || !reach_ok(a, la, 0, es, n) || !reach_ok(b, lb, 0, es, n) || !valid(out, (size_t)n * es)) return 700;
  if (n <= 0xffffffffLL)
    for (uint32_t i = 0; i < (uint32_t)n; i++) ad_ew::where_at<uint32_t>(i, l, static_cast<const uint8_t*>(host(cond)), host(a), host(b), dt, host(out));
  else
    for (int64_t i = 0; i < n; i++) ad_ew::where_at(i, l, static_cast<const uint8_t*>(host(cond)), host(a), host(b), dt, host(out));
  return 0;
}
int adapters_cuda_masked_fill(int ndim, const int64_t* shape, const void* x, const int64_t* xstrides, const uint8_t* mask,
                              const int64_t* mstrides, int dt, double value, void* out, void*) {
  ad_ew::Layout l;
  int64_t n;
  if ((dt != ad_ew::F32 && dt != ad_ew::I64) || !xstrides || !mstrides || !ad_ew::make_layout(ndim, shape, xstrides, mstrides, &l, &n)) return 1;
  if (n == 0) return 0;
  const size_t es = (size_t)ad_ew::dtype_size(dt);
  if (!reach_ok(x, l, 0, es, n) || !reach_ok(mask, l, 1, 1, n) || !valid(out, (size_t)n * es)) return 700;
  if (n <= 0xffffffffLL)
    for (uint32_t i = 0; i < (uint32_t)n; i++) ad_ew::masked_fill_at<uint32_t>(i, l, host(x), static_cast<const uint8_t*>(host(mask)), dt, value, host(out));
  else
    for (int64_t i = 0; i < n; i++) ad_ew::masked_fill_at(i, l, host(x), static_cast<const uint8_t*>(host(mask)), dt, value, host(out));
  return 0;
}

// Row-wise ops: cuda/rows_math.h over every line / row / column.
#define MOCK_NEED(p, bytes) \
  if ((p) && !valid((p), (size_t)(bytes))) return 700

int adapters_cuda_softmax_f32(int log, int64_t O, int64_t R, int64_t I, const float* x, float* y, void*) {
  if (O < 0 || R < 0 || I < 1) return 1;
  const int64_t n = O * R * I;
  if (n == 0) return 0;
  MOCK_NEED(x, n * 4);
  MOCK_NEED(y, n * 4);
  for (int64_t t = 0; t < O * I; t++) ad_rows::softmax_fwd(t, R, I, H(x), H(y), log != 0);
  return 0;
}
int adapters_cuda_softmax_backward_f32(int log, int64_t O, int64_t R, int64_t I, const float* y, const float* g, float* gi, void*) {
  if (O < 0 || R < 0 || I < 1) return 1;
  const int64_t n = O * R * I;
  if (n == 0) return 0;
  MOCK_NEED(y, n * 4);
  MOCK_NEED(g, n * 4);
  MOCK_NEED(gi, n * 4);
  for (int64_t t = 0; t < O * I; t++) ad_rows::softmax_bwd(t, R, I, H(y), H(g), H(gi), log != 0);
  return 0;
}
int adapters_cuda_norm_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* b, float eps, float* y,
                           float* mean, float* rstd, void*) {
  if (N < 0 || C < 1) return 1;
  if (N == 0) return 0;
  MOCK_NEED(x, N * C * 4);
  MOCK_NEED(y, N * C * 4);
  MOCK_NEED(w, C * 4);
  MOCK_NEED(b, C * 4);
  MOCK_NEED(mean, N * 4);
  MOCK_NEED(rstd, N * 4);
  for (int64_t r = 0; r < N; r++) ad_rows::norm_fwd(r, C, H(x), H(w), H(b), eps, rms != 0, H(y), H(mean), H(rstd));
  return 0;
}
int adapters_cuda_norm_backward_f32(int rms, int64_t N, int64_t C, const float* x, const float* w, const float* mean,
                                    const float* rstd, const float* g, float* dx, float* dw, float* db, void*) {
  if (N < 0 || C < 1) return 1;
  MOCK_NEED(x, N * C * 4);
  MOCK_NEED(g, N * C * 4);
  MOCK_NEED(dx, N * C * 4);
  MOCK_NEED(w, C * 4);
  MOCK_NEED(dw, C * 4);
  MOCK_NEED(db, C * 4);
  for (int64_t r = 0; r < N; r++) ad_rows::norm_bwd_dx(r, C, H(x), H(w), H(mean), H(rstd), H(g), rms != 0, H(dx));
  if (dw || db)
    for (int64_t k = 0; k < C; k++) ad_rows::norm_bwd_dparams(k, N, C, H(x), H(mean), H(rstd), H(g), rms != 0, H(dw), H(db));
  return 0;
}
int adapters_cuda_sum_f32(int64_t O, int64_t R, int64_t I, const float* x, float* out, void*) {
  if (O < 0 || R < 0 || I < 1) return 1;
  if (O * I == 0) return 0;
  MOCK_NEED(out, O * I * 4);
  if (R > 0) MOCK_NEED(x, O * R * I * 4);
  for (int64_t t = 0; t < O * I; t++) ad_rows::sum_line(t, R, I, H(x), H(out));
  return 0;
}
int adapters_cuda_cross_entropy_f32(int64_t N, int64_t C, const float* x, const int64_t* t, int64_t ignore, float eps, float* lse,
                                    float* rows, void*) {
  if (N < 0 || C < 1) return 1;
  if (N == 0) return 0;
  MOCK_NEED(x, N * C * 4);
  MOCK_NEED(t, N * 8);
  MOCK_NEED(lse, N * 4);
  MOCK_NEED(rows, N * 4);
  for (int64_t i = 0; i < N; i++) ad_rows::ce_fwd(i, C, H(x), H(t), ignore, eps, H(lse), H(rows));
  return 0;
}
int adapters_cuda_cross_entropy_backward_f32(int64_t N, int64_t C, const float* x, const int64_t* t, const float* lse, int64_t ignore,
                                             float eps, const float* g, int per_row, float scale, float* d, void*) {
  if (N < 0 || C < 1) return 1;
  if (N == 0) return 0;
  MOCK_NEED(x, N * C * 4);
  MOCK_NEED(d, N * C * 4);
  MOCK_NEED(t, N * 8);
  MOCK_NEED(lse, N * 4);
  MOCK_NEED(g, (per_row ? N : 1) * 4);
  const float* hg = H(g);
  for (int64_t i = 0; i < N; i++) ad_rows::ce_bwd(i, C, H(x), H(t), H(lse), ignore, eps, (per_row ? hg[i] : hg[0]) * scale, H(d));
  return 0;
}
int adapters_cuda_embedding_f32(int64_t n, int64_t C, const int64_t* ids, const float* w, float* out, void*) {
  if (n < 0 || C < 0) return 1;
  if (n == 0 || C == 0) return 0;
  MOCK_NEED(ids, n * 8);
  MOCK_NEED(out, n * C * 4);
  const int64_t* hi = H(ids);
  for (int64_t k = 0; k < n; k++) MOCK_NEED(w + hi[k] * C, C * 4);
  for (int64_t k = 0; k < n; k++) ad_rows::embedding_row(k, C, hi, H(w), H(out));
  return 0;
}
int adapters_cuda_embedding_backward_f32(int64_t n, int64_t C, const int64_t* ids, const float* g, float* d, void*) {
  if (n < 0 || C < 0) return 1;
  if (n == 0 || C == 0) return 0;
  MOCK_NEED(ids, n * 8);
  MOCK_NEED(g, n * C * 4);
  const int64_t* hi = H(ids);
  for (int64_t k = 0; k < n; k++) MOCK_NEED(d + hi[k] * C, C * 4);
  for (int64_t j = 0; j < C; j++) ad_rows::embedding_bwd_col(j, n, C, hi, H(g), H(d));
  return 0;
}
// Attention, as the library chooses: where cuda/attention_gemm.h's eligible() allows (and ADAPTERS_CUDA_ATTN is unset),
// its sequence of batched products and row passes with host loops (MockOps); otherwise cuda/attention_math.h over
// every query / key row. Both on host copies of the device arrays' addresses.
namespace {
bool attn_params(const adapters_cuda_attn* a, ad_attn::Params* p) {
  if (!a || a->B < 0 || a->H < 1 || a->Hkv < 1 || a->H % a->Hkv) return false;
  *p = ad_attn::Params{a->B, a->H, a->Hkv, a->Tq, a->Tk, a->P, a->D, a->Dv, a->scale, a->causal, H(a->mask),
                       a->mask_sb, a->mask_sh, a->mask_si, a->mask_sj, H(a->key_keep)};
  return true;
}
// as attention.cu's attn_mode(): "1" or "2" ask for the fused kernels, anything else leaves the choice to eligible()
bool attn_products(const ad_attn::Params& p) {
  const char* e = std::getenv("ADAPTERS_CUDA_ATTN");
  const bool fused = e && (e[0] == '1' || e[0] == '2') && !e[1];
  return !fused && ad_attn_gemm::eligible(p);
}
// attention_gemm.h's operations on the mock "device": the products through the reference gemm above, item by item,
// which checks every operand's extent as a faulting kernel would; the row passes on host views of the arrays.
struct MockOps {
  int gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, int64_t sa, const float* B, int64_t ldb,
           int64_t sb, float beta, float* C, int64_t ldc, int64_t sc, int64_t batch) {
    for (int64_t z = 0; z < batch; z++)
      if (int e = ::gemm(ta, tb, M, N, K, alpha, A + z * sa, lda, B + z * sb, ldb, beta, C + z * sc, ldc, [](float x) { return x; }))
        return e;
    return 0;
  }
  int softmax_rows(const ad_attn::Params& p, const ad_attn_gemm::Layout& l, float* S, float* lse) {
    MOCK_NEED(S, l.rows * l.LS * 4);
    MOCK_NEED(lse, l.rows * 4);
    for (int64_t r = 0; r < l.rows; r++) ad_attn_gemm::softmax_row(p, l, r, H(S), H(lse));
    return 0;
  }
  int ds_rows(const ad_attn::Params& p, const ad_attn_gemm::Layout& l, const float* P, float* dP, const float* out, const float* dout) {
    MOCK_NEED(P, l.rows * l.LS * 4);
    MOCK_NEED(dP, l.rows * l.LS * 4);
    for (int64_t r = 0; r < l.rows; r++) ad_attn_gemm::ds_row(p, l, r, H(P), H(dP), H(out), H(dout));
    return 0;
  }
  // from the mock allocator (so MOCK_CUDA_MAX_BYTES can refuse it), NaN so that a read of a column nothing wrote shows
  int alloc(float** ws, int64_t n) {
    void* p = nullptr;
    if (int rc = adapters_cuda_malloc(&p, (size_t)n * 4)) return rc == 2 ? ad_attn_gemm::kNoWorkspace : rc;
    *ws = static_cast<float*>(p);
    std::fill(H(*ws), H(*ws) + n, std::nanf(""));
    return 0;
  }
  int release(float* ws) { return adapters_cuda_free(ws); }
};
}  // namespace
int adapters_cuda_attention_f32(const adapters_cuda_attn* a, const float* q, const float* k, const float* v, const float* pk,
                                const float* pv, float* out, float* lse, void*) {
  ad_attn::Params p;
  if (!attn_params(a, &p)) return 1;
  const int64_t rows = p.B * p.H * p.Tq, kv = p.B * p.Hkv;
  if (rows == 0) return 0;
  MOCK_NEED(q, rows * p.D * 4);
  MOCK_NEED(k, kv * p.Tk * p.D * 4);
  MOCK_NEED(v, kv * p.Tk * p.Dv * 4);
  if (p.P) { MOCK_NEED(pk, kv * p.P * p.D * 4); MOCK_NEED(pv, kv * p.P * p.Dv * 4); }
  MOCK_NEED(out, rows * p.Dv * 4);
  MOCK_NEED(lse, rows * 4);
  if (attn_products(p)) {
    MockOps ops;
    const int rc = ad_attn_gemm::with_workspace(ops, ad_attn_gemm::workspace_floats(p),
                                                [&](float* S) { return ad_attn_gemm::forward(ops, p, q, k, v, pk, pv, out, lse, S); });
    if (rc != ad_attn_gemm::kNoWorkspace) return rc;  // else the per-row path, as the library takes its fused kernels
  }
  for (int64_t r = 0; r < rows; r++) ad_attn::fwd_row(p, r, H(q), H(k), H(v), H(pk), H(pv), H(out), H(lse));
  return 0;
}
int adapters_cuda_attention_backward_f32(const adapters_cuda_attn* a, const float* q, const float* k, const float* v, const float* pk,
                                         const float* pv, const float* out, const float* dout, float* dq, float* dk, float* dv,
                                         float* dpk, float* dpv, void*) {
  ad_attn::Params p;
  if (!attn_params(a, &p)) return 1;
  const int64_t rows = p.B * p.H * p.Tq, kv = p.B * p.Hkv, keys = kv * (p.P + p.Tk);
  MOCK_NEED(dk, kv * p.Tk * p.D * 4);
  MOCK_NEED(dv, kv * p.Tk * p.Dv * 4);
  if (p.P) { MOCK_NEED(dpk, kv * p.P * p.D * 4); MOCK_NEED(dpv, kv * p.P * p.Dv * 4); }
  if (rows > 0) {
    MOCK_NEED(dq, rows * p.D * 4);
    MOCK_NEED(out, rows * p.Dv * 4);
    MOCK_NEED(dout, rows * p.Dv * 4);
  }
  if (rows > 0 && attn_products(p)) {
    MockOps ops;
    const int64_t n = ad_attn_gemm::workspace_floats(p);
    const int rc = ad_attn_gemm::with_workspace(ops, 2 * n, [&](float* S) {
      return ad_attn_gemm::backward(ops, p, q, k, v, pk, pv, out, dout, dq, dk, dv, dpk, dpv, S, S + n);
    });
    if (rc != ad_attn_gemm::kNoWorkspace) return rc;
  }
  std::vector<float> M(rows), L(rows), Dd(rows);
  for (int64_t r = 0; r < rows; r++) ad_attn::bwd_stats(p, r, H(q), H(k), H(pk), H(out), H(dout), M.data(), L.data(), Dd.data());
  for (int64_t r = 0; r < rows; r++) ad_attn::dq_row(p, r, H(q), H(k), H(v), H(pk), H(pv), H(dout), M.data(), L.data(), Dd.data(), H(dq));
  for (int64_t c = 0; c < keys; c++)
    ad_attn::dkv_row(p, c, H(q), H(k), H(v), H(pk), H(pv), H(dout), M.data(), L.data(), Dd.data(), H(dk), H(dv), H(dpk), H(dpv));
  return 0;
}
int adapters_cuda_rope_f32(int64_t rows, int64_t T, int64_t D, int64_t perB, const float* x, const float* cs, const float* sn, float* y,
                           int inter, int bwd, void*) {
  if (rows < 0 || T < 1 || D < 2 || D % 2 || perB < 0) return 1;
  if (rows == 0) return 0;
  MOCK_NEED(x, rows * D * 4);
  MOCK_NEED(y, rows * D * 4);
  const int64_t tab = perB ? (rows / perB) * T * D : T * D;
  MOCK_NEED(cs, tab * 4);
  MOCK_NEED(sn, tab * 4);
  for (int64_t r = 0; r < rows; r++) ad_rows::rope_row(r, T, D, perB, H(x), H(cs), H(sn), H(y), inter != 0, bwd != 0);
  return 0;
}
int adapters_cuda_dropout_f32(int64_t n, const float* x, float* y, float p, uint64_t seed, uint64_t off, void*) {
  if (n < 0 || !(p >= 0.f && p <= 1.f)) return 1;
  if (n == 0) return 0;
  MOCK_NEED(x, n * 4);
  MOCK_NEED(y, n * 4);
  const float scale = p >= 1.f ? 0.f : 1.f / (1.f - p);
  for (int64_t b = 0; b < (n + 3) / 4; b++) ad_rand::dropout_block((uint64_t)b, n, H(x), H(y), p, scale, seed, off);
  return 0;
}
#undef MOCK_NEED

}  // extern "C"
