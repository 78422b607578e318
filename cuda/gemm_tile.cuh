// gemm_tile.cuh — what every GEMM kernel of gemm.cu shares: the argument block, the grouped tile order, the
// epilogue stores (alpha·acc + beta·C into an f32 or bf16 C) and the cp.async helpers. Device code only, no CUDA headers of its own, so that
// test/cuda/emu/gemm_emu.cpp compiles it for the CPU too.
#pragma once

namespace ad_gemm {

struct GemmArgs {
  int64_t M, N, K;
  float alpha, beta;
  const void* A;
  int64_t lda;
  const void* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  int c_vec2;     // C rows take paired stores (ldc even, C aligned to a pair): float2 / bf16x2 stores
  uint16_t* Cb;   // non-null: C is bf16 here (rounded to nearest even), C itself unused
  int64_t sa = 0, sb = 0, sc = 0;  // batched (the f32 k16 kernel): item blockIdx.y starts this many elements further on
};

// ------------------------------------------------------------------------------------------------------
// Shared helpers
// ------------------------------------------------------------------------------------------------------

// Grouped tile order: consecutive blocks walk GROUP tile-rows of one tile-column band before moving on,
// so the A rows and B columns they share stay in L2.
__device__ __forceinline__ void tile_coords(int64_t bid, int64_t tiles_m, int64_t tiles_n, int64_t& tm,
                                            int64_t& tn) {
  constexpr int64_t GROUP = 8;
  const int64_t per_group = GROUP * tiles_n;
  const int64_t group = bid / per_group;
  const int64_t first_m = group * GROUP;
  const int64_t gm = min(tiles_m - first_m, GROUP);
  const int64_t in_group = bid % per_group;
  tm = first_m + in_group % gm;
  tn = in_group / gm;
}

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16_rne(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays a (quiet) NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// alpha·v + beta·C for one output into a bf16 C (bounds checked by the caller)
__device__ __forceinline__ void store_bf16(const GemmArgs& a, int64_t row, int64_t col, float v) {
  uint16_t* p = a.Cb + row * a.ldc + col;
  v *= a.alpha;
  if (a.beta != 0.f) v += a.beta * bf16_bits_to_f32(*p);
  *p = f32_to_bf16_rne(v);
}

// alpha·acc + beta·C for two horizontally adjacent outputs (col even), bounds-checked.
__device__ __forceinline__ void store_pair(const GemmArgs& a, int64_t row, int64_t col, float v0, float v1) {
  if (row >= a.M || col >= a.N) return;
  if (a.Cb) {
    if (a.c_vec2 && col + 1 < a.N) {
      uint16_t* p = a.Cb + row * a.ldc + col;
      v0 *= a.alpha, v1 *= a.alpha;
      if (a.beta != 0.f) {
        const uint32_t old = *reinterpret_cast<const uint32_t*>(p);
        v0 += a.beta * bf16_bits_to_f32((uint16_t)(old & 0xffffu));
        v1 += a.beta * bf16_bits_to_f32((uint16_t)(old >> 16));
      }
      *reinterpret_cast<uint32_t*>(p) = (uint32_t)f32_to_bf16_rne(v0) | ((uint32_t)f32_to_bf16_rne(v1) << 16);
    } else {
      store_bf16(a, row, col, v0);
      if (col + 1 < a.N) store_bf16(a, row, col + 1, v1);
    }
    return;
  }
  float* p = a.C + row * a.ldc + col;
  v0 *= a.alpha;
  v1 *= a.alpha;
  if (a.c_vec2 && col + 1 < a.N) {
    if (a.beta != 0.f) {
      float2 old = *reinterpret_cast<const float2*>(p);
      v0 += a.beta * old.x;
      v1 += a.beta * old.y;
    }
    *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
  } else {
    p[0] = a.beta != 0.f ? v0 + a.beta * p[0] : v0;
    if (col + 1 < a.N) p[1] = a.beta != 0.f ? v1 + a.beta * p[1] : v1;
  }
}

// alpha·v + beta·C for one output (either C dtype), bounds checked by the caller
__device__ __forceinline__ void store_one(const GemmArgs& a, int64_t row, int64_t col, float v) {
  if (a.Cb) return store_bf16(a, row, col, v);
  float* p = a.C + row * a.ldc + col;
  *p = a.beta == 0.f ? a.alpha * v : a.alpha * v + a.beta * *p;
}

#ifndef AD_GEMM_EMU
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
// 16 bytes global -> shared without passing through registers; src_bytes < 16 fills the rest with zeros (0: all
// zeros, for a chunk outside the matrix). Completes at cp_async_wait.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// until at most N of this thread's committed groups are still in flight
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

}  // namespace ad_gemm
