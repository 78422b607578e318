// standalone: g++ -O3 -std=c++17 -pthread native/kernels/attention_selftest.cpp native/kernels/attention.cpp native/threadpool.cpp
// Self-test of the fused attention kernels against a naive double-precision reference:
//   forward (out, lse) and backward (dq, dk, dv, dpk, dpv) for many shapes and mask combinations, with 1 thread
//   (fused backward schedule) and several threads (split schedule); the reference's gradient is itself checked
//   by central finite differences. Then a T=4096 benchmark with peak RSS (skip with --no-bench).
// Exit status 0 iff every check passed.
#include <sys/resource.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../threadpool.h"
#include "attention.h"

namespace ad {
// Defined in attention.cpp (test-only, not part of attention.h).
void attention_ref_fwd(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, double* out, double* lse, bool round_scores);
void attention_ref_bwd(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, const float* dout, double* dq, double* dk, double* dv, double* dpk,
                       double* dpv, bool round_scores);
}  // namespace ad

using namespace ad;

static int g_fail = 0;
static std::mt19937 g_rng(1234);

static std::vector<float> randv(size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> U(lo, hi);
  std::vector<float> x(n);
  for (auto& e : x) e = U(g_rng);
  return x;
}

// max |a-b| / max(max|b|, floor); also flags non-finite values in a.
static bool close(const char* what, const std::string& name, const float* a, const double* b, size_t n, double tol,
                  double floor_ = 1e-3) {
  double mx = 0, err = 0;
  size_t worst = 0;
  bool finite = true;
  for (size_t i = 0; i < n; i++) {
    if (!std::isfinite(a[i])) finite = false;
    mx = std::max(mx, std::fabs(b[i]));
  }
  for (size_t i = 0; i < n; i++) {
    const double e = std::fabs((double)a[i] - b[i]);
    if (e > err) err = e, worst = i;
  }
  const double rel = err / std::max(mx, floor_);
  const bool ok = finite && rel <= tol;
  if (!ok) {
    std::printf("  FAIL %-44s %-4s rel err %.3g (max|ref| %.3g, worst #%zu: got %.9g want %.9g)%s\n", name.c_str(),
                what, rel, mx, worst, n ? (double)a[worst] : 0.0, n ? b[worst] : 0.0, finite ? "" : " NON-FINITE");
    g_fail++;
  }
  return ok;
}

enum class MaskKind { None, Full, BroadcastKeys, BroadcastQK, Transposed };

struct Case {
  std::string name;
  int64_t B, H, Hkv, Tq, Tk, P, D, Dv;
  bool causal;
  MaskKind mask;
  int keep;  // 0: none, 1: random padding, 2: random padding + batch 0 fully masked, 3: all-zero mask row
};

struct Inputs {
  AttnParams p{};
  std::vector<float> q, k, v, pk, pv, mask, dout;
  std::vector<uint8_t> keep;
};

static Inputs make_inputs(const Case& c) {
  Inputs in;
  AttnParams& p = in.p;
  p.B = c.B, p.H = c.H, p.Hkv = c.Hkv, p.Tq = c.Tq, p.Tk = c.Tk, p.P = c.P, p.D = c.D, p.Dv = c.Dv;
  p.scale = 1.f / std::sqrt((float)c.D);
  p.causal = c.causal;
  const int64_t N = c.P + c.Tk;
  in.q = randv(c.B * c.H * c.Tq * c.D, -2.f, 2.f);
  in.k = randv(c.B * c.Hkv * c.Tk * c.D, -2.f, 2.f);
  in.v = randv(c.B * c.Hkv * c.Tk * c.Dv);
  if (c.P > 0) {
    in.pk = randv(c.B * c.Hkv * c.P * c.D, -2.f, 2.f);
    in.pv = randv(c.B * c.Hkv * c.P * c.Dv);
  }
  in.dout = randv(c.B * c.H * c.Tq * c.Dv);
  std::uniform_real_distribution<float> U(0.f, 1.f);
  switch (c.mask) {
    case MaskKind::None: break;
    case MaskKind::Full:  // (B,H,Tq,N) random additive values, some finfo.min or -inf, fully masked rows
      in.mask.resize(c.B * c.H * c.Tq * N);
      for (auto& m : in.mask) {
        const float u = U(g_rng);
        m = u < 0.08f ? -FLT_MAX : u < 0.15f ? -INFINITY : -2.f * U(g_rng);
      }
      for (int64_t j = 0; j < N; j++) in.mask[(c.Tq / 2) * N + j] = -FLT_MAX;         // b0 h0: all finfo.min
      for (int64_t j = 0; j < N; j++) in.mask[(c.Tq / 2 + 1) * N + j] = -INFINITY;    // b0 h0: all -inf
      for (int64_t j = 0; j < N; j++) in.mask[(c.Tq / 2 + 2) * N + j] = j % 2 ? -FLT_MAX : -INFINITY;
      p.mask_sb = c.H * c.Tq * N, p.mask_sh = c.Tq * N, p.mask_si = N, p.mask_sj = 1;
      break;
    case MaskKind::BroadcastKeys:  // (B,1,1,N): HF padding mask
      in.mask.resize(c.B * N);
      for (auto& m : in.mask) m = U(g_rng) < 0.3f ? -FLT_MAX : 0.f;
      p.mask_sb = N, p.mask_sh = 0, p.mask_si = 0, p.mask_sj = 1;
      break;
    case MaskKind::BroadcastQK:  // (1,1,Tq,N): e.g. HF's additive causal mask, plus a fully-min row
      in.mask.resize(c.Tq * N);
      for (int64_t i = 0; i < c.Tq; i++)
        for (int64_t j = 0; j < N; j++)
          in.mask[i * N + j] = (j >= c.P && j - c.P > i + (c.Tk - c.Tq)) || i == 1 ? -FLT_MAX : 0.25f * U(g_rng);
      p.mask_sb = 0, p.mask_sh = 0, p.mask_si = N, p.mask_sj = 1;
      break;
    case MaskKind::Transposed:  // (B,H,N,Tq) memory viewed as (B,H,Tq,N): non-unit key stride
      in.mask.resize(c.B * c.H * N * c.Tq);
      for (auto& m : in.mask) m = U(g_rng) < 0.1f ? -1e9f : U(g_rng) - 0.5f;
      p.mask_sb = c.H * N * c.Tq, p.mask_sh = N * c.Tq, p.mask_si = 1, p.mask_sj = c.Tq;
      break;
  }
  if (!in.mask.empty()) p.mask = in.mask.data();
  if (c.keep) {
    in.keep.assign(c.B * N, 1);
    for (auto& e : in.keep) e = U(g_rng) < 0.25f ? 0 : 1;
    if (c.keep >= 2)
      for (int64_t j = 0; j < N; j++) in.keep[j] = 0;  // batch 0: every key masked -> uniform rows
    p.key_keep = in.keep.data();
  }
  return in;
}

static void run_case(const Case& c) {
  const int nthreads = num_threads();
  Inputs in = make_inputs(c);
  const AttnParams& p = in.p;
  const std::string name = c.name + " t" + std::to_string(nthreads);
  const int64_t N = c.P + c.Tk;
  const size_t nout = c.B * c.H * c.Tq * c.Dv, nrow = c.B * c.H * c.Tq;
  const float* pk = c.P ? in.pk.data() : nullptr;
  const float* pv = c.P ? in.pv.data() : nullptr;

  std::vector<float> out(nout, NAN), lse(nrow, NAN);
  attention_fwd_cpu(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, out.data(), lse.data());
  std::vector<double> rout(nout), rlse(nrow);
  attention_ref_fwd(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, rout.data(), rlse.data(), true);
  bool ok = close("out", name, out.data(), rout.data(), nout, 2e-5);
  // lse: compare relative to max(1, |lse|) per element
  for (size_t i = 0; i < nrow; i++) {
    const double e = std::fabs(lse[i] - rlse[i]) / std::max(1.0, std::fabs(rlse[i]));
    if (!(e < 1e-5)) {
      std::printf("  FAIL %-44s lse row %zu: got %.9g want %.9g\n", name.c_str(), i, lse[i], rlse[i]);
      g_fail++, ok = false;
      break;
    }
  }
  // explicit uniform check: batch 0 fully masked by key_keep -> mean of all values
  if (c.keep >= 2) {
    for (int64_t h = 0; h < c.H; h++) {
      const int64_t g = h / (c.H / c.Hkv);
      for (int64_t cc = 0; cc < c.Dv; cc++) {
        double mean = 0;
        for (int64_t j = 0; j < N; j++)
          mean += j < c.P ? in.pv[(g * c.P + j) * c.Dv + cc] : in.v[(g * c.Tk + j - c.P) * c.Dv + cc];
        mean /= N;
        for (int64_t i = 0; i < c.Tq; i++)
          if (std::fabs(out[(h * c.Tq + i) * c.Dv + cc] - mean) > 1e-5) {
            std::printf("  FAIL %-44s uniform row h%lld i%lld\n", name.c_str(), (long long)h, (long long)i);
            g_fail++, ok = false, h = c.H, cc = c.Dv;
            break;
          }
      }
    }
  }

  // backward
  const size_t nq = c.B * c.H * c.Tq * c.D, nk = c.B * c.Hkv * c.Tk * c.D, nv = c.B * c.Hkv * c.Tk * c.Dv;
  const size_t npk = c.B * c.Hkv * c.P * c.D, npv = c.B * c.Hkv * c.P * c.Dv;
  std::vector<float> dq(nq, NAN), dk(nk, NAN), dv(nv, NAN), dpk(npk, NAN), dpv(npv, NAN);
  attention_bwd_cpu(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, out.data(), lse.data(), in.dout.data(),
                    dq.data(), dk.data(), dv.data(), c.P ? dpk.data() : nullptr, c.P ? dpv.data() : nullptr);
  std::vector<double> rdq(nq), rdk(nk), rdv(nv), rdpk(npk), rdpv(npv);
  attention_ref_bwd(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, in.dout.data(), rdq.data(), rdk.data(),
                    rdv.data(), rdpk.data(), rdpv.data(), true);
  ok &= close("dq", name, dq.data(), rdq.data(), nq, 1e-4);
  ok &= close("dk", name, dk.data(), rdk.data(), nk, 1e-4);
  ok &= close("dv", name, dv.data(), rdv.data(), nv, 1e-4);
  if (c.P) {
    ok &= close("dpk", name, dpk.data(), rdpk.data(), npk, 1e-4);
    ok &= close("dpv", name, dpv.data(), rdpv.data(), npv, 1e-4);
  }
  std::printf("  %s %s\n", ok ? "ok  " : "FAIL", name.c_str());
}

// Central finite differences of L = sum(out * W) w.r.t. a few entries of every input, on the double reference
// (round_scores = false, so L is smooth), compared with the reference gradient and the kernel's gradient.
// Cases avoid all-masked rows: there the float function is flat (every score saturates at -FLT_MAX) while the
// gradient convention (HF: masks are additive constants) still sends uniform-weight gradients to q and k.
static void fd_check(const Case& c) {
  Inputs in = make_inputs(c);
  AttnParams p = in.p;
  float* pk = c.P ? in.pk.data() : nullptr;
  float* pv = c.P ? in.pv.data() : nullptr;
  const size_t nout = c.B * c.H * c.Tq * c.Dv, nrow = c.B * c.H * c.Tq;
  std::vector<double> o(nout);
  auto loss = [&]() {
    attention_ref_fwd(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, o.data(), nullptr, false);
    double L = 0;
    for (size_t i = 0; i < nout; i++) L += o[i] * in.dout[i];
    return L;
  };
  const size_t nq = in.q.size(), nk = in.k.size(), nv = in.v.size(), npk = in.pk.size(), npv = in.pv.size();
  std::vector<double> rdq(nq), rdk(nk), rdv(nv), rdpk(npk), rdpv(npv);
  attention_ref_bwd(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, in.dout.data(), rdq.data(), rdk.data(),
                    rdv.data(), rdpk.data(), rdpv.data(), false);
  std::vector<float> out(nout), lse(nrow), dq(nq), dk(nk), dv(nv), dpk(npk), dpv(npv);
  attention_fwd_cpu(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, out.data(), lse.data());
  attention_bwd_cpu(p, in.q.data(), in.k.data(), in.v.data(), pk, pv, out.data(), lse.data(), in.dout.data(),
                    dq.data(), dk.data(), dv.data(), c.P ? dpk.data() : nullptr, c.P ? dpv.data() : nullptr);
  bool ok = true;
  double worst_ref = 0, worst_kern = 0;
  auto probe = [&](const char* what, std::vector<float>& x, const std::vector<double>& g_ref,
                   const std::vector<float>& g_kern) {
    if (x.empty()) return;
    std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
    for (int t = 0; t < 12; t++) {
      const size_t i = pick(g_rng);
      const float x0 = x[i];
      const float xp = x0 + 1e-2f, xm = x0 - 1e-2f;
      x[i] = xp;
      const double Lp = loss();
      x[i] = xm;
      const double Lm = loss();
      x[i] = x0;
      const double fd = (Lp - Lm) / ((double)xp - (double)xm);
      const double scale = std::max(1e-2, std::fabs(fd));
      const double er = std::fabs(fd - g_ref[i]) / scale, ek = std::fabs(fd - g_kern[i]) / scale;
      worst_ref = std::max(worst_ref, er), worst_kern = std::max(worst_kern, ek);
      if (er > 1e-3 || ek > 2e-3) {
        std::printf("  FAIL fd %-8s %s #%zu: fd %.8g ref %.8g kernel %.8g\n", c.name.c_str(), what, i, fd, g_ref[i],
                    (double)g_kern[i]);
        ok = false;
      }
    }
  };
  probe("q", in.q, rdq, dq);
  probe("k", in.k, rdk, dk);
  probe("v", in.v, rdv, dv);
  probe("pk", in.pk, rdpk, dpk);
  probe("pv", in.pv, rdpv, dpv);
  if (!ok) g_fail++;
  std::printf("  %s finite differences %s (worst rel err: ref %.2g, kernel %.2g)\n", ok ? "ok  " : "FAIL",
              c.name.c_str(), worst_ref, worst_kern);
}

static double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // KiB on Linux
}

static void bench(int64_t T, bool causal) {
  AttnParams p{};
  p.B = 1, p.H = 12, p.Hkv = 12, p.Tq = T, p.Tk = T, p.P = 0, p.D = 64, p.Dv = 64;
  p.scale = 0.125f, p.causal = causal;
  const size_t n = p.B * p.H * T * p.D;
  const double rss0 = peak_rss_mb();
  std::vector<float> q = randv(n), k = randv(n), v = randv(n), dout = randv(n), out(n), lse(p.B * p.H * T), dq(n),
                     dk(n), dv(n);
  const double tensors_mb = 9.0 * n * 4 / 1048576.0;
  auto t0 = std::chrono::steady_clock::now();
  attention_fwd_cpu(p, q.data(), k.data(), v.data(), nullptr, nullptr, out.data(), lse.data());
  auto t1 = std::chrono::steady_clock::now();
  attention_bwd_cpu(p, q.data(), k.data(), v.data(), nullptr, nullptr, out.data(), lse.data(), dout.data(), dq.data(),
                    dk.data(), dv.data(), nullptr, nullptr);
  auto t2 = std::chrono::steady_clock::now();
  const double f = std::chrono::duration<double>(t1 - t0).count(), b = std::chrono::duration<double>(t2 - t1).count();
  const double flops = 4.0 * p.B * p.H * T * (double)T * p.D * (causal ? 0.5 : 1.0);
  bool finite = true;
  for (size_t i = 0; i < n; i += 97) finite &= std::isfinite(out[i]) && std::isfinite(dq[i]) && std::isfinite(dk[i]);
  if (!finite) g_fail++;
  std::printf(
      "  B=1 H=12 T=%lld D=64 %-8s fwd %.3f s (%.1f GFLOP/s)  bwd %.3f s (%.1f GFLOP/s, 2.5x fwd flops)  "
      "peak RSS %.0f MiB (before %.0f MiB, tensors %.0f MiB; a materialised score matrix would be %.0f MiB)%s\n",
      (long long)T, causal ? "causal" : "full", f, flops / f * 1e-9, b, 2.5 * flops / b * 1e-9, peak_rss_mb(), rss0,
      tensors_mb, 12.0 * T * T * 4 / 1048576.0, finite ? "" : "  NON-FINITE");
}

// Pool workers created by set_num_threads read the pool's job generation when they first run, so a job
// published before a new worker has started can be missed (seen here as a hang). Give them time to start.
static void set_threads(int n) {
  set_num_threads(n);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

int main(int argc, char** argv) {
  bool do_bench = true;
  for (int i = 1; i < argc; i++)
    if (!std::strcmp(argv[i], "--no-bench")) do_bench = false;

  const MaskKind None = MaskKind::None, Full = MaskKind::Full, BK = MaskKind::BroadcastKeys,
                 BQK = MaskKind::BroadcastQK, Tr = MaskKind::Transposed;
  // name, B, H, Hkv, Tq, Tk, P, D, Dv, causal, mask, keep
  const std::vector<Case> cases = {
      {"plain", 2, 2, 2, 37, 37, 0, 16, 16, false, None, 0},
      {"causal", 2, 2, 2, 70, 70, 0, 16, 16, true, None, 0},
      {"causal-multiblock", 1, 2, 1, 150, 150, 0, 32, 24, true, None, 0},
      {"prefix", 2, 2, 2, 45, 45, 7, 16, 16, false, None, 0},
      {"prefix-causal", 2, 3, 3, 70, 70, 67, 24, 16, true, None, 0},
      {"gqa", 2, 4, 2, 66, 66, 0, 16, 16, false, None, 0},
      {"gqa-causal-prefix", 2, 4, 2, 130, 130, 5, 32, 32, true, None, 0},
      {"kvcache-causal Tk>Tq", 2, 4, 2, 9, 140, 0, 16, 16, true, None, 0},
      {"kvcache-causal Tq=1", 1, 4, 2, 1, 77, 3, 16, 8, true, None, 0},
      {"causal Tq>Tk (uniform rows)", 1, 2, 2, 100, 40, 0, 16, 16, true, None, 0},
      {"causal Tq>Tk prefix", 1, 2, 2, 100, 40, 6, 16, 16, true, None, 0},
      {"D!=Dv", 2, 2, 2, 50, 61, 0, 72, 20, false, None, 0},
      {"D!=Dv causal odd", 1, 2, 1, 67, 67, 3, 5, 3, true, None, 0},
      {"mask full", 2, 2, 2, 70, 70, 0, 16, 16, false, Full, 0},
      {"mask full causal prefix gqa", 2, 4, 2, 70, 75, 4, 16, 24, true, Full, 0},
      {"mask bcast keys", 3, 2, 2, 40, 70, 0, 16, 16, false, BK, 0},
      {"mask bcast keys causal prefix", 2, 4, 2, 65, 65, 9, 16, 16, true, BK, 0},
      {"mask bcast qk (HF causal)", 2, 2, 2, 70, 70, 3, 16, 16, false, BQK, 0},
      {"mask bcast qk + causal", 2, 2, 1, 70, 70, 0, 16, 16, true, BQK, 0},
      {"mask transposed", 2, 2, 2, 33, 70, 2, 16, 16, false, Tr, 0},
      {"keep", 2, 2, 2, 50, 50, 0, 16, 16, false, None, 1},
      {"keep uniform batch", 2, 2, 2, 50, 50, 0, 16, 16, false, None, 2},
      {"keep uniform causal prefix gqa", 2, 4, 2, 130, 130, 5, 16, 16, true, None, 2},
      {"keep+mask+causal", 2, 4, 2, 70, 90, 3, 16, 16, true, Full, 2},
      {"prefix only (Tk=0)", 2, 2, 2, 20, 0, 10, 16, 16, false, None, 0},
  };
  std::printf("attention self-test: %zu cases x {1 thread (fused bwd), 4 threads (split bwd)}\n", cases.size());
  set_threads(1);
  for (const auto& c : cases) run_case(c);
  set_threads(4);
  for (const auto& c : cases) run_case(c);
  // B*Hkv >= 2*threads: the multi-thread run takes the fused schedule too
  run_case({"fused schedule mt", 4, 4, 4, 70, 70, 3, 16, 16, true, BK, 1});

  std::printf("finite differences (double reference, L = sum(out * dout)):\n");
  fd_check({"plain", 1, 2, 1, 9, 11, 3, 8, 6, false, None, 0});
  fd_check({"causal-gqa", 1, 4, 2, 70, 75, 4, 8, 8, true, Tr, 0});
  fd_check({"keep", 2, 2, 2, 12, 12, 2, 8, 8, false, None, 1});

  if (do_bench) {
    set_threads((int)std::max(1u, std::thread::hardware_concurrency()));
    std::printf("benchmark (%d threads):\n", num_threads());
    bench(4096, false);
    bench(4096, true);
  }
  std::printf(g_fail ? "FAILED (%d)\n" : "all passed\n", g_fail);
  return g_fail ? 1 : 0;
}
