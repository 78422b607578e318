// cpu_features.cpp — CPUID leaf 7 plus XGETBV (the OS must save the wider registers), cached once.
#include "cpu_features.h"

#include <mutex>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ad {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r;
#if defined(__x86_64__)
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.avx512f = __builtin_cpu_supports("avx512f");
    r.avx512bw = __builtin_cpu_supports("avx512bw");
    r.avx512vl = __builtin_cpu_supports("avx512vl");
    r.avx512dq = __builtin_cpu_supports("avx512dq");
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) r.avx512bf16 = r.avx512f && (a & (1u << 5));
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      r.amx_bf16 = (d >> 22) & 1;
      r.amx_tile = (d >> 24) & 1;
    }
#endif
    return r;
  }();
  return f;
}

bool amx_request_permission() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    const auto& f = cpu_features();
    if (!f.amx_bf16 || !f.amx_tile) return;
    // ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 (Linux >= 5.16)
    ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#endif
  });
  return ok;
}

}  // namespace ad
