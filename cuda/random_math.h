// random_math.h — the counter-based generator (Philox-4x32-10, Salmon et al., SC'11) shared by the CPU ops
// (native/kernels/random.cpp), the CUDA dropout kernel (random.cu) and the host-side mock: element k of a draw with
// (seed, offset) depends only on (seed, offset, k), so the same seed gives the same dropout mask on any thread count
// and on either device, and the backward regenerates the mask instead of storing it.
#pragma once
#include "elementwise_math.h"

namespace ad_rand {

AD_HD void philox(uint32_t ctr[4], uint32_t key0, uint32_t key1) {
  for (int r = 0; r < 10; r++) {
    const uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0], p1 = (uint64_t)0xCD9E8D57u * ctr[2];
    const uint32_t n0 = (uint32_t)(p1 >> 32) ^ ctr[1] ^ key0, n2 = (uint32_t)(p0 >> 32) ^ ctr[3] ^ key1;
    ctr[1] = (uint32_t)p1;  // lo of p1
    ctr[3] = (uint32_t)p0;
    ctr[0] = n0;
    ctr[2] = n2;
    key0 += 0x9E3779B9u;
    key1 += 0xBB67AE85u;
  }
}
// 4 uniform uint32 for block index `blk` of stream (seed, offset)
AD_HD void block4(uint64_t seed, uint64_t offset, uint64_t blk, uint32_t out[4]) {
  const uint64_t c = blk + offset;
  out[0] = (uint32_t)c;
  out[1] = (uint32_t)(c >> 32);
  out[2] = 0x243F6A88u;
  out[3] = 0x85A308D3u;
  philox(out, (uint32_t)seed, (uint32_t)(seed >> 32));
}
AD_HD float u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }  // [0,1), 24 bits

// dropout of the (up to) 4 elements of block blk: o = x·scale where u >= p, else 0
AD_HD void dropout_block(uint64_t blk, int64_t n, const float* X, float* O, float p, float scale, uint64_t seed, uint64_t off) {
  uint32_t r[4];
  block4(seed, off, blk, r);
  for (int j = 0; j < 4 && (int64_t)blk * 4 + j < n; j++) {
    const int64_t i = (int64_t)blk * 4 + j;
    O[i] = u01(r[j]) >= p ? X[i] * scale : 0.f;
  }
}

}  // namespace ad_rand
