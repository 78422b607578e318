// warp_reduce.cuh — butterfly reductions over aligned groups of W lanes of a warp (W a power of two, at most 32):
// every lane of the group ends with the group's max / sum. Shared by the attention kernels.
#pragma once

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
