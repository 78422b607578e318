// cpu_features.h — run-time CPU feature detection (CPUID + OS support), and the AMX permission request.
#pragma once

namespace ad {
struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false,
       avx512bf16 = false, amx_bf16 = false, amx_tile = false;
};
const CpuFeatures& cpu_features();
// Asks the kernel for AMX tile state (once per process). True when tiles may be used.
bool amx_request_permission();
}  // namespace ad
