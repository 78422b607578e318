// index_math.h — per-element code of the CUDA index kernels (index.cu): index_select, index_add, gather and
// scatter_add, host-compilable so that test/cuda/mock/mock_cuda.cpp runs it against the CPU ops (native/kernels/
// index.cpp) without a GPU. The sums (index_add, scatter_add) are computed per output element, adding the matching
// sources in increasing index order: the CPU's order, so results are deterministic and equal to the CPU's bit for bit.
// Indices are in range (the caller checks).
#pragma once
#include "elementwise_math.h"

namespace ad_idx {

// A tensor viewed as (O, N, I) around the indexed dim; K indices.
struct Geo {
  int64_t O, N, I, K;
};
// Gather / scatter geometry: the index tensor's shape (rank nd, the data's rank) and the data's strides.
struct NdGeo {
  int nd, dim;
  int64_t idx_shape[ad_ew::kMaxDims];
  int64_t data_strides[ad_ew::kMaxDims];
  int64_t data_shape[ad_ew::kMaxDims];
};

AD_HD void copy_bytes(void* dst, int64_t od, const void* src, int64_t os, int es) {
  switch (es) {
    case 8: static_cast<int64_t*>(dst)[od] = static_cast<const int64_t*>(src)[os]; return;
    case 4: static_cast<int32_t*>(dst)[od] = static_cast<const int32_t*>(src)[os]; return;
    case 2: static_cast<uint16_t*>(dst)[od] = static_cast<const uint16_t*>(src)[os]; return;
    default: static_cast<uint8_t*>(dst)[od] = static_cast<const uint8_t*>(src)[os]; return;
  }
}

// index_select: element t of out (O, K, I) = x (O, N, I) at row idx[k]
AD_HD void select_at(int64_t t, const Geo& g, const int64_t* idx, const void* x, void* out, int es) {
  const int64_t j = t % g.I, k = (t / g.I) % g.K, o = t / (g.I * g.K);
  copy_bytes(out, t, x, (o * g.N + idx[k]) * g.I + j, es);
}
// index_add: element t of out (O, N, I) = base + Σ_{k: idx[k] = n} src (O, K, I)
AD_HD void index_add_at(int64_t t, const Geo& g, const int64_t* idx, const float* base, const float* src, float* out) {
  const int64_t j = t % g.I, n = (t / g.I) % g.N, o = t / (g.I * g.N);
  float acc = base[t];
  for (int64_t k = 0; k < g.K; k++)
    if (idx[k] == n) acc += src[(o * g.K + k) * g.I + j];
  out[t] = acc;
}
// gather: element t of out (the index's shape) = x at the index's position with dim replaced by idx[t]
AD_HD void gather_at(int64_t t, const NdGeo& g, const int64_t* idx, const void* x, void* out, int es) {
  int64_t rem = t, off = 0;
  for (int e = g.nd - 1; e >= 0; e--) {
    const int64_t i = rem % g.idx_shape[e];
    rem /= g.idx_shape[e];
    off += (e == g.dim ? idx[t] : i) * g.data_strides[e];
  }
  copy_bytes(out, t, x, off, es);
}
// scatter_add: element t of out (base's shape, contiguous) = base + Σ src over the index positions that agree with
// t on every dim but g.dim and whose index there is t's coordinate
AD_HD void scatter_add_at(int64_t t, const NdGeo& g, const int64_t* idx, const float* base, const float* src, float* out) {
  int64_t coord[ad_ew::kMaxDims];
  int64_t rem = t;
  for (int e = g.nd - 1; e >= 0; e--) {
    coord[e] = rem % g.data_shape[e];
    rem /= g.data_shape[e];
  }
  float acc = base[t];
  bool inside = true;
  for (int e = 0; e < g.nd; e++)
    if (e != g.dim && coord[e] >= g.idx_shape[e]) inside = false;
  if (inside) {
    // flat position in the (contiguous) index / source of coord with dim at 0, and dim's stride there
    int64_t p0 = 0, stride = 1, dstride = 1;
    for (int e = g.nd - 1; e >= 0; e--) {
      if (e == g.dim) dstride = stride;
      else p0 += coord[e] * stride;
      stride *= g.idx_shape[e];
    }
    for (int64_t k = 0; k < g.idx_shape[g.dim]; k++)
      if (idx[p0 + k * dstride] == coord[g.dim]) acc += src[p0 + k * dstride];
  }
  out[t] = acc;
}

}  // namespace ad_idx
