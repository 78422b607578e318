// bf16_simd.h — f32 → bf16 in AVX-512 registers, rounded exactly as the cast op (f32_to_bf16 in tensor.h, PyTorch's
// c10::BFloat16): nearest even, NaN made quiet. Shared by the cast (tensor.cpp) and the GEMMs' packing and
// epilogues (kernels/gemm.cpp). Callers must have checked the CPU features (AVX-512 BW/VL/DQ; AVX512-BF16 for
// the _isa forms).
#pragma once
// GCC 12 reports false "may be used uninitialized" warnings from inside its AVX-512 headers (the _mm512_undefined_*
// pass-through operands) once they are inlined here; the diagnostic state is looked up at the header's own lines, so
// it is switched off around the include only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace ad {

#define AD_TGT_BF16RND_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define AD_TGT_BF16RND_ISA __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// 16 f32 (as raw bits) -> 16 bf16 with integer arithmetic.
AD_TGT_BF16RND_AVX512 inline __m256i bf16_round16(__m512i u) {
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

// The same with vcvtne(2)ps2bf16 (one instruction for 16 or 32 values instead of ~10 per 16). The instruction rounds
// exactly as above except that it flushes denormal inputs to zero, so a vector holding a denormal (rare) takes the
// integer rounding; bit-identical over all 2^32 inputs.
AD_TGT_BF16RND_ISA inline __m256i bf16_round16_isa(__m512 x) {
  if (__builtin_expect(_mm512_fpclass_ps_mask(x, 0x20) != 0, 0)) return bf16_round16(_mm512_castps_si512(x));
  return (__m256i)_mm512_cvtneps_pbh(x);
}
// lo: elements 0-15, hi: 16-31.
AD_TGT_BF16RND_ISA inline __m512i bf16_round32_isa(__m512 lo, __m512 hi) {
  if (__builtin_expect((_mm512_fpclass_ps_mask(lo, 0x20) | _mm512_fpclass_ps_mask(hi, 0x20)) != 0, 0))
    return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_round16(_mm512_castps_si512(lo))), bf16_round16(_mm512_castps_si512(hi)), 1);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

}  // namespace ad
