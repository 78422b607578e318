// index.cu — index_select, index_add, gather and scatter_add: one thread per output element running index_math.h
// (shared with the host-side mock). The sums loop over the indices per output element instead of scattering with
// atomics: deterministic, and in the CPU's order.
#include "adapters_cuda.h"
#include "common.cuh"
#include "index_math.h"

namespace {

constexpr int kThreads = 256;

__global__ void select_kernel(ad_idx::Geo g, int64_t n, const int64_t* idx, const void* x, void* out, int es) {
  AD_GRID_FOR(t, n) ad_idx::select_at(t, g, idx, x, out, es);
}
__global__ void index_add_kernel(ad_idx::Geo g, int64_t n, const int64_t* idx, const float* base, const float* src, float* out) {
  AD_GRID_FOR(t, n) ad_idx::index_add_at(t, g, idx, base, src, out);
}
__global__ void gather_kernel(ad_idx::NdGeo g, int64_t n, const int64_t* idx, const void* x, void* out, int es) {
  AD_GRID_FOR(t, n) ad_idx::gather_at(t, g, idx, x, out, es);
}
__global__ void scatter_add_kernel(ad_idx::NdGeo g, int64_t n, const int64_t* idx, const float* base, const float* src, float* out) {
  AD_GRID_FOR(t, n) ad_idx::scatter_add_at(t, g, idx, base, src, out);
}

bool nd_geo(int nd, int dim, const int64_t* idx_shape, const int64_t* data_shape, const int64_t* data_strides, ad_idx::NdGeo* g) {
  if (nd < 1 || nd > ad_ew::kMaxDims || dim < 0 || dim >= nd || !idx_shape) return false;
  g->nd = nd;
  g->dim = dim;
  for (int e = 0; e < nd; e++) {
    if (idx_shape[e] < 0) return false;
    g->idx_shape[e] = idx_shape[e];
    g->data_shape[e] = data_shape ? data_shape[e] : 0;
    g->data_strides[e] = data_strides ? data_strides[e] : 0;
  }
  return true;
}

}  // namespace


extern "C" {

int adapters_cuda_index_select(int64_t O, int64_t N, int64_t I, int64_t K, const int64_t* idx, const void* x, int dtype, void* out,
                               void* stream) {
  if (O < 0 || N < 0 || I < 0 || K < 0 || dtype < 0 || dtype >= ad_ew::DTYPE_COUNT) return (int)cudaErrorInvalidValue;
  const ad_idx::Geo g{O, N, I, K};
  AD_LAUNCH_RETURN(O * K * I, kThreads, select_kernel, g, O * K * I, idx, x, out, ad_ew::dtype_size(dtype));
}
int adapters_cuda_index_add_f32(int64_t O, int64_t N, int64_t I, int64_t K, const int64_t* idx, const float* base, const float* src,
                                float* out, void* stream) {
  if (O < 0 || N < 0 || I < 0 || K < 0) return (int)cudaErrorInvalidValue;
  const ad_idx::Geo g{O, N, I, K};
  AD_LAUNCH_RETURN(O * N * I, kThreads, index_add_kernel, g, O * N * I, idx, base, src, out);
}
int adapters_cuda_gather(int nd, int dim, const int64_t* idx_shape, const int64_t* data_strides, const int64_t* idx, const void* x,
                         int dtype, void* out, void* stream) {
  ad_idx::NdGeo g;
  if (!data_strides || dtype < 0 || dtype >= ad_ew::DTYPE_COUNT || !nd_geo(nd, dim, idx_shape, nullptr, data_strides, &g))
    return (int)cudaErrorInvalidValue;
  int64_t n = 1;
  for (int e = 0; e < nd; e++) n *= idx_shape[e];
  AD_LAUNCH_RETURN(n, kThreads, gather_kernel, g, n, idx, x, out, ad_ew::dtype_size(dtype));
}
int adapters_cuda_scatter_add_f32(int nd, int dim, const int64_t* data_shape, const int64_t* idx_shape, const int64_t* idx,
                                  const float* base, const float* src, float* out, void* stream) {
  ad_idx::NdGeo g;
  if (!data_shape || !nd_geo(nd, dim, idx_shape, data_shape, nullptr, &g)) return (int)cudaErrorInvalidValue;
  int64_t n = 1;
  for (int e = 0; e < nd; e++) {
    if (data_shape[e] < 0) return (int)cudaErrorInvalidValue;
    n *= data_shape[e];
  }
  AD_LAUNCH_RETURN(n, kThreads, scatter_add_kernel, g, n, idx, base, src, out);
}

}  // extern "C"
