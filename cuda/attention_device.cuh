// attention_device.cuh — device helpers shared by the attention kernels (attention_tiles.cuh, attention_warp.cuh):
// butterfly reductions over aligned groups of W lanes of a warp (W a power of two, at most 32; every lane of the
// group ends with the group's max / sum), and the staging of the backward's per-query statistics.
#pragma once
#include "attention_math.h"

template <int W>
__device__ __forceinline__ float group_max(float v) {
  for (int o = W / 2; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <int W, class T>
__device__ __forceinline__ T group_sum(T v) {
  for (int o = W / 2; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The max M, sum L and D = dO·O of queries i0 .. i0+n of head bh into St (at 0, n and 2n); past Tq the neutral 0, 1, 0.
__device__ inline void stage_row_stats(const ad_attn::Params& p, const float* M, const float* L, const float* Dd, int64_t bh, int64_t i0,
                                       int n, float* St) {
  if (threadIdx.x < (unsigned)n) {
    const int64_t i = i0 + threadIdx.x, row = bh * p.Tq + i;
    St[threadIdx.x] = i < p.Tq ? M[row] : 0.f;
    St[n + threadIdx.x] = i < p.Tq ? L[row] : 1.f;
    St[2 * n + threadIdx.x] = i < p.Tq ? Dd[row] : 0.f;
  }
}
