// peak.h — register-only FMA loop for measuring the machine's f32 peak (used by bench/gemm).
#pragma once
#include <cstdint>

namespace ad {
struct PeakResult {
  double gflops;
  const char* isa;
};
// Runs `iters` iterations of 12 independent vector FMAs on `threads` pool threads.
PeakResult fma_peak(int threads, int64_t iters);
}  // namespace ad
