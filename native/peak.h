// peak.h — register-only loops measuring the machine's f32 FMA and bf16 dot-product peaks (used by bench/gemm).
#pragma once
#include <cstdint>

namespace ad {
struct PeakResult {
  double gflops;
  const char* isa;
};
// Runs `iters` iterations of 12 independent vector FMAs on `threads` pool threads.
PeakResult fma_peak(int threads, int64_t iters);
// GFLOP/s of `iters` iterations of 16 independent vdpbf16ps (AVX512-BF16) on `threads` pool threads, best of 3; 0 where
// the CPU lacks AVX512-BF16. bench/gemm reports bf16 GEMMs against it on CPUs without AMX.
double bf16_dot_peak(int threads, int64_t iters);
}  // namespace ad
