// elementwise.cu — broadcasting binary ops, unary ops and activations with their backward, and strided /
// converting copies (f32 ↔ bf16), all in f32 arithmetic. The per-element code is elementwise_math.h, shared with
// the host-side mock library that tests it without a GPU; the kernels here only map threads onto elements
// (grid-stride loops, 64-bit indices).
#include "adapters_cuda.h"
#include "common.cuh"
#include "elementwise_math.h"

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return ad_cuda::grid_for(n, kThreads); }

template <typename Idx>
__global__ void binary_kernel(int op, ad_ew::Layout l, Idx n, const float* a, const float* b, float* out) {
  for (Idx i = blockIdx.x * (Idx)blockDim.x + threadIdx.x; i < n; i += (Idx)gridDim.x * blockDim.x)
    ad_ew::binary_at<Idx>(i, op, l, a, b, out);
}
// both operands contiguous with the output (after collapse_layout): no index arithmetic at all
__global__ void binary_flat_kernel(int op, int64_t n, const float* a, const float* b, float* out) {
  AD_GRID_FOR(i, n)
    out[i] = ad_ew::binary(op, a[i], b[i]);
}
__global__ void unary_kernel(int op, int64_t n, const float* x, float* y, float p0, float p1) {
  AD_GRID_FOR(i, n)
    y[i] = ad_ew::unary(op, x[i], p0, p1);
}
__global__ void unary_bwd_kernel(int op, int64_t n, const float* x, const float* g, float* out) {
  AD_GRID_FOR(i, n)
    out[i] = ad_ew::unary_backward(op, x[i], g[i]);
}
template <typename Idx>
__global__ void copy_kernel(ad_ew::Layout l, Idx n, const void* src, int sdt, void* dst, int ddt) {
  for (Idx i = blockIdx.x * (Idx)blockDim.x + threadIdx.x; i < n; i += (Idx)gridDim.x * blockDim.x)
    ad_ew::copy_at<Idx>(i, l, src, sdt, dst, ddt);
}
__global__ void copy_flat_kernel(int64_t n, const void* src, int sdt, void* dst, int ddt) {
  AD_GRID_FOR(i, n)
    ad_ew::copy_elem(src, sdt, i, dst, ddt, i);
}
template <typename Idx>
__global__ void compare_kernel(int op, ad_ew::Layout l, Idx n, const void* a, int adt, const void* b, int bdt, uint8_t* out) {
  for (Idx i = blockIdx.x * (Idx)blockDim.x + threadIdx.x; i < n; i += (Idx)gridDim.x * blockDim.x)
    ad_ew::compare_at<Idx>(i, op, l, a, adt, b, bdt, out);
}
template <typename Idx>
__global__ void where_kernel(ad_ew::LayoutN<3> l, Idx n, const uint8_t* cond, const void* a, const void* b, int dt, void* out) {
  for (Idx i = blockIdx.x * (Idx)blockDim.x + threadIdx.x; i < n; i += (Idx)gridDim.x * blockDim.x)
    ad_ew::where_at<Idx>(i, l, cond, a, b, dt, out);
}
template <typename Idx>
__global__ void masked_fill_kernel(ad_ew::Layout l, Idx n, const void* x, const uint8_t* mask, int dt, double value, void* out) {
  for (Idx i = blockIdx.x * (Idx)blockDim.x + threadIdx.x; i < n; i += (Idx)gridDim.x * blockDim.x)
    ad_ew::masked_fill_at<Idx>(i, l, x, mask, dt, value, out);
}
constexpr int64_t kIdx32 = 0xffffffffLL - 65535LL * 8 * kThreads;  // a grid-stride loop in 32 bits stays below 2^32

}  // namespace

extern "C" {

int adapters_cuda_binary_f32(int op, int ndim, const int64_t* shape, const float* a, const int64_t* astrides,
                             const float* b, const int64_t* bstrides, float* out, void* stream) {
  ad_ew::Layout l;
  int64_t n;
  if (op < 0 || op >= ad_ew::BINARY_COUNT || !ad_ew::make_layout(ndim, shape, astrides, bstrides, &l, &n)) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (ad_ew::layout_flat(l)) binary_flat_kernel<<<blocks_for(n), kThreads, 0, s>>>(op, n, a, b, out);
  else if (n <= kIdx32) binary_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(op, l, (uint32_t)n, a, b, out);
  else binary_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(op, l, n, a, b, out);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_unary_f32(int op, int64_t n, const float* x, float* y, float p0, float p1, void* stream) {
  if (op < 0 || op >= ad_ew::UNARY_COUNT || n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  unary_kernel<<<blocks_for(n), kThreads, 0, ad_cuda::as_stream(stream)>>>(op, n, x, y, p0, p1);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_unary_backward_f32(int op, int64_t n, const float* x, const float* g, float* out, void* stream) {
  if (op < 0 || op >= ad_ew::UNARY_COUNT || n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  unary_bwd_kernel<<<blocks_for(n), kThreads, 0, ad_cuda::as_stream(stream)>>>(op, n, x, g, out);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_copy_strided(int src_dtype, int dst_dtype, int ndim, const int64_t* shape, const void* src,
                               const int64_t* sstrides, void* dst, const int64_t* dstrides, void* stream) {
  ad_ew::Layout l;
  int64_t n;
  if (src_dtype < 0 || src_dtype >= ad_ew::DTYPE_COUNT || dst_dtype < 0 || dst_dtype >= ad_ew::DTYPE_COUNT ||
      !ad_ew::make_layout(ndim, shape, sstrides, dstrides, &l, &n))
    return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (ad_ew::layout_flat(l)) copy_flat_kernel<<<blocks_for(n), kThreads, 0, s>>>(n, src, src_dtype, dst, dst_dtype);
  else if (n <= kIdx32) copy_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(l, (uint32_t)n, src, src_dtype, dst, dst_dtype);
  else copy_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(l, n, src, src_dtype, dst, dst_dtype);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_compare(int op, int ndim, const int64_t* shape, const void* a, int adt, const int64_t* astrides,
                          const void* b, int bdt, const int64_t* bstrides, uint8_t* out, void* stream) {
  ad_ew::Layout l;
  int64_t n;
  if (op < 0 || op >= ad_ew::COMPARE_COUNT || adt < 0 || adt >= ad_ew::DTYPE_COUNT || bdt < 0 || bdt >= ad_ew::DTYPE_COUNT ||
      !astrides || !bstrides || !ad_ew::make_layout(ndim, shape, astrides, bstrides, &l, &n))
    return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (n <= kIdx32) compare_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(op, l, (uint32_t)n, a, adt, b, bdt, out);
  else compare_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(op, l, n, a, adt, b, bdt, out);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_where(int ndim, const int64_t* shape, const uint8_t* cond, const int64_t* cstrides, const void* a,
                        const int64_t* astrides, const void* b, const int64_t* bstrides, int dt, void* out, void* stream) {
  ad_ew::LayoutN<3> l;
  int64_t n;
  const int64_t* st[3] = {cstrides, astrides, bstrides};
  if ((dt != ad_ew::F32 && dt != ad_ew::I64) || !cstrides || !astrides || !bstrides || !ad_ew::make_layout_n<3>(ndim, shape, st, &l, &n))
    return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (n <= kIdx32) where_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(l, (uint32_t)n, cond, a, b, dt, out);
  else where_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(l, n, cond, a, b, dt, out);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int adapters_cuda_masked_fill(int ndim, const int64_t* shape, const void* x, const int64_t* xstrides, const uint8_t* mask,
                              const int64_t* mstrides, int dt, double value, void* out, void* stream) {
  ad_ew::Layout l;
  int64_t n;
  if ((dt != ad_ew::F32 && dt != ad_ew::I64) || !xstrides || !mstrides || !ad_ew::make_layout(ndim, shape, xstrides, mstrides, &l, &n))
    return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (n <= kIdx32) masked_fill_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(l, (uint32_t)n, x, mask, dt, value, out);
  else masked_fill_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(l, n, x, mask, dt, value, out);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

}  // extern "C"
