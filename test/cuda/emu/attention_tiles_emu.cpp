// attention_tiles_emu.cpp — runs the CUDA attention kernels of cuda/attention_tiles.cuh (register-tiled, heads <= 64)
// and cuda/attention_warp.cuh (warp-cooperative, heads <= 128) on the CPU and checks them against attention_math.h's
// per-row code, so that their indexing, barriers and shuffles are tested without a GPU.
// Each CUDA thread of a block is an OS thread; __syncthreads is a barrier over the block, the shuffles an exchange
// through one of two alternating per-warp buffers after a barrier over the warp; shared memory starts as NaN so that a read of
// anything not staged shows up in the results. Build: c++ -std=c++20 -O1 -pthread -Icuda (test/cuda/emu.test.ts).
// Prints one JSON line per case; exit status 1 when any case fails.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }

namespace emu {
// Two exchange buffers, used by alternate shuffles: a lane writes buffer c % 2 only after the barrier of shuffle
// c - 1, which every lane reaches after it has read shuffle c - 2's buffer, so one barrier per shuffle suffices.
struct Warp {
  std::unique_ptr<std::barrier<>> bar = std::make_unique<std::barrier<>>(32);
  uint64_t buf[2][32];
};
struct Block {
  explicit Block(size_t bytes) : smem((bytes + 15) / 16 + 1) {
    const float nan = std::nanf("");
    for (auto& v : smem) v = {nan, nan, nan, nan};
  }
  std::barrier<> bar{256};
  Warp warps[8];
  std::vector<float4> smem;
};
thread_local Block* block = nullptr;
thread_local int lane = 0, warp = 0;
thread_local unsigned shuffles = 0;
}  // namespace emu

thread_local dim3 threadIdx, blockIdx;
const dim3 blockDim{256, 1, 1};
inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }
// lane `from`'s value of v, exchanged through one of the warp's two buffers after a barrier over the warp
template <class T>
T exchange(T v, int from) {
  static_assert(sizeof(T) <= 8, "");
  emu::Warp& w = emu::block->warps[emu::warp];
  uint64_t* buf = w.buf[emu::shuffles++ % 2];
  std::memcpy(&buf[emu::lane], &v, sizeof(T));
  w.bar->arrive_and_wait();
  T r;
  std::memcpy(&r, &buf[from & 31], sizeof(T));
  return r;
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int o) { return exchange(v, emu::lane ^ o); }
template <class T>
T __shfl_sync(unsigned, T v, int src) { return exchange(v, src); }
#define AD_DYNAMIC_SMEM(name) float4* name = emu::block->smem.data()

#include "attention_tiles.cuh"
#include "attention_warp.cuh"

template <class K, class... A>
void launch(K kernel, dim3 grid, size_t bytes, A... args) {
  for (unsigned by = 0; by < grid.y; by++)
    for (unsigned bx = 0; bx < grid.x; bx++) {
      emu::Block blk(bytes);
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < 256; t++)
        ts.emplace_back([&, t] {
          threadIdx = {t, 0, 0};
          blockIdx = {bx, by, 0};
          emu::block = &blk;
          emu::lane = (int)t % 32, emu::warp = (int)t / 32;
          kernel(args...);
        });
      for (auto& th : ts) th.join();
    }
}

struct Case {
  int64_t B, H, Hkv, Tq, Tk, P, D, Dv;
  bool causal, mask, keep;
};

static double worst = 0;
static bool compare(const char* what, const std::vector<float>& got, const std::vector<float>& want, double tol, std::string& why) {
  double w = 0;
  for (size_t i = 0; i < want.size(); i++) {
    const double e = std::fabs((double)got[i] - want[i]) / (tol * (1 + std::fabs((double)want[i])));
    w = std::isfinite(e) ? std::max(w, e) : 1e30;
  }
  worst = std::max(worst, w);
  if (w > 1) why += std::string(why.empty() ? "" : ", ") + what + " off by " + std::to_string(w) + "x tol";
  return w <= 1;
}

int main() {
  const Case cases[] = {
      {2, 4, 2, 5, 6, 3, 8, 8, true, false, false},   {2, 4, 2, 5, 6, 3, 8, 8, false, true, true},
      {2, 4, 2, 5, 6, 3, 8, 8, true, true, true},     {1, 2, 1, 70, 70, 3, 64, 64, true, true, true},
      {3, 2, 2, 1, 37, 0, 20, 20, true, true, false}, {1, 2, 1, 33, 45, 0, 40, 24, false, false, true},
      {1, 1, 1, 130, 129, 0, 64, 48, false, true, false}, {1, 2, 2, 64, 64, 64, 17, 33, true, false, true},
      // heads the tiles do not take: warp kernels only (NPL 4)
      {1, 2, 1, 33, 45, 0, 128, 96, false, false, true},  {2, 2, 2, 40, 40, 5, 80, 80, true, true, true},
  };
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  bool all = true;
  for (const Case& c : cases) {
    const int64_t S = c.P + c.Tk;
    auto rnd = [&](int64_t n) {
      std::vector<float> v((size_t)n);
      for (auto& x : v) x = nd(rng);
      return v;
    };
    std::vector<float> q = rnd(c.B * c.H * c.Tq * c.D), k = rnd(c.B * c.Hkv * c.Tk * c.D), v = rnd(c.B * c.Hkv * c.Tk * c.Dv);
    std::vector<float> pk = rnd(c.B * c.Hkv * c.P * c.D), pv = rnd(c.B * c.Hkv * c.P * c.Dv), dout = rnd(c.B * c.H * c.Tq * c.Dv);
    std::vector<float> mask = rnd(c.B * S);
    for (auto& x : mask) x *= 2;
    std::vector<uint8_t> keep((size_t)(c.B * S));
    for (int64_t i = 0; i < c.B * S; i++) keep[(size_t)i] = (i % 5 != 2) && !(c.B > 1 && i >= S && i < 2 * S && c.Tq < 10);  // batch 1 all masked when short
    ad_attn::Params p{c.B, c.H, c.Hkv, c.Tq, c.Tk, c.P, c.D, c.Dv, 1.f / std::sqrt((float)c.D), c.causal,
                      c.mask ? mask.data() : nullptr, S, 0, 0, 1, c.keep ? keep.data() : nullptr};
    const float* PK = c.P ? pk.data() : nullptr;
    const float* PV = c.P ? pv.data() : nullptr;
    const int64_t rows = c.B * c.H * c.Tq, keys = c.B * c.Hkv * S;
    // reference: the per-row code
    std::vector<float> out_r((size_t)(rows * c.Dv)), lse_r((size_t)rows), M_r((size_t)rows), L_r((size_t)rows), D_r((size_t)rows);
    std::vector<float> dq_r((size_t)(rows * c.D)), dk_r(k.size()), dv_r(v.size()), dpk_r(pk.size()), dpv_r(pv.size());
    for (int64_t r = 0; r < rows; r++) ad_attn::fwd_row(p, r, q.data(), k.data(), v.data(), PK, PV, out_r.data(), lse_r.data());
    for (int64_t r = 0; r < rows; r++) ad_attn::bwd_stats(p, r, q.data(), k.data(), PK, out_r.data(), dout.data(), M_r.data(), L_r.data(), D_r.data());
    for (int64_t r = 0; r < rows; r++)
      ad_attn::dq_row(p, r, q.data(), k.data(), v.data(), PK, PV, dout.data(), M_r.data(), L_r.data(), D_r.data(), dq_r.data());
    for (int64_t cc = 0; cc < keys; cc++)
      ad_attn::dkv_row(p, cc, q.data(), k.data(), v.data(), PK, PV, dout.data(), M_r.data(), L_r.data(), D_r.data(), dk_r.data(),
                       dv_r.data(), dpk_r.data(), dpv_r.data());
    // the kernels under test: the tiles (heads <= 64) and the warp kernels (heads <= 128)
    struct Out {
      std::vector<float> out, lse, M, L, Dd, dq, dk, dv, dpk, dpv;
    };
    auto fresh = [&] {
      Out o;
      o.out.resize(out_r.size()), o.lse.resize(rows), o.M.resize(rows), o.L.resize(rows), o.Dd.resize(rows), o.dq.resize(dq_r.size());
      o.dk.resize(k.size()), o.dv.resize(v.size()), o.dpk.resize(pk.size()), o.dpv.resize(pv.size());
      return o;
    };
    std::vector<std::pair<std::string, Out>> runs;
    const int D = (int)c.D, Dv = (int)c.Dv, mx = std::max(D, Dv);
    if (mx <= 64) {
      Out o = fresh();
      const unsigned qb = (unsigned)((c.Tq + ad_attn3::kT3 - 1) / ad_attn3::kT3), kb = (unsigned)((S + ad_attn3::kT3 - 1) / ad_attn3::kT3);
      launch(ad_attn3::fwd_kernel, dim3{qb, (unsigned)(c.B * c.H), 1}, ad_attn3::fwd_smem_bytes(), p, (const float*)q.data(),
             (const float*)k.data(), (const float*)v.data(), PK, PV, o.out.data(), o.lse.data());
      launch(ad_attn3::bwd_q_kernel, dim3{qb, (unsigned)(c.B * c.H), 1}, ad_attn3::bwd_q_smem_bytes(), p, (const float*)q.data(),
             (const float*)k.data(), (const float*)v.data(), PK, PV, (const float*)out_r.data(), (const float*)dout.data(), o.M.data(),
             o.L.data(), o.Dd.data(), o.dq.data());
      launch(ad_attn3::bwd_kv_kernel, dim3{kb, (unsigned)(c.B * c.Hkv), 1}, ad_attn3::bwd_kv_smem_bytes(), p, (const float*)q.data(),
             (const float*)k.data(), (const float*)v.data(), PK, PV, (const float*)dout.data(), (const float*)M_r.data(),
             (const float*)L_r.data(), (const float*)D_r.data(), o.dk.data(), o.dv.data(), o.dpk.data(), o.dpv.data());
      runs.emplace_back("tiles", std::move(o));
    }
    auto warp = [&](auto npl, const char* name) {
      constexpr int NPL = decltype(npl)::value;
      using namespace ad_attn_warp;
      Out o = fresh();
      const unsigned qb = (unsigned)((c.Tq + kBlockRows - 1) / kBlockRows), kb = (unsigned)((S + kBlockRows - 1) / kBlockRows);
      launch(fwd_warp_kernel<NPL>, dim3{qb, (unsigned)(c.B * c.H), 1}, fwd_smem_bytes(D, Dv), p, (const float*)q.data(), (const float*)k.data(),
             (const float*)v.data(), PK, PV, o.out.data(), o.lse.data());
      launch(bwd_q_warp_kernel<NPL>, dim3{qb, (unsigned)(c.B * c.H), 1}, bwd_q_smem_bytes(D, Dv), p, (const float*)q.data(),
             (const float*)k.data(), (const float*)v.data(), PK, PV, (const float*)out_r.data(), (const float*)dout.data(), o.M.data(),
             o.L.data(), o.Dd.data(), o.dq.data());
      launch(bwd_kv_warp_kernel<NPL>, dim3{kb, (unsigned)(c.B * c.Hkv), 1}, bwd_kv_smem_bytes(D, Dv), p, (const float*)q.data(),
             (const float*)k.data(), (const float*)v.data(), PK, PV, (const float*)dout.data(), (const float*)M_r.data(),
             (const float*)L_r.data(), (const float*)D_r.data(), o.dk.data(), o.dv.data(), o.dpk.data(), o.dpv.data());
      runs.emplace_back(name, std::move(o));
    };
    // the instantiation attention.cu's warp_npl picks for these heads (the warp kernels also run heads <= 64 when
    // ADAPTERS_CUDA_ATTN=2)
    if (mx <= 32) warp(std::integral_constant<int, 1>{}, "warp1");
    else if (mx <= 64) warp(std::integral_constant<int, 2>{}, "warp2");
    else if (mx <= 128) warp(std::integral_constant<int, 4>{}, "warp4");
    std::string why;
    bool ok = !runs.empty();
    for (auto& [name, o] : runs) {
      std::string w;
      const bool r = compare("out", o.out, out_r, 1e-5, w) & compare("lse", o.lse, lse_r, 1e-5, w) & compare("M", o.M, M_r, 1e-5, w) &
                     compare("L", o.L, L_r, 1e-5, w) & compare("D", o.Dd, D_r, 1e-5, w) & compare("dq", o.dq, dq_r, 1e-4, w) &
                     compare("dk", o.dk, dk_r, 1e-4, w) & compare("dv", o.dv, dv_r, 1e-4, w) & compare("dpk", o.dpk, dpk_r, 1e-4, w) &
                     compare("dpv", o.dpv, dpv_r, 1e-4, w);
      if (!r) why += (why.empty() ? "" : "; ") + name + ": " + w;
      ok &= r;
    }
    all &= ok;
    printf("{\"case\":[%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%d,%d,%d],\"kernels\":%d,\"ok\":%s,\"why\":\"%s\"}\n", (long long)c.B, (long long)c.H,
           (long long)c.Hkv, (long long)c.Tq, (long long)c.Tk, (long long)c.P, (long long)c.D, (long long)c.Dv, c.causal, c.mask, c.keep,
           (int)runs.size(), ok ? "true" : "false", why.c_str());
    fflush(stdout);
  }
  printf("{\"worst_over_tol\":%.3g,\"ok\":%s}\n", worst, all ? "true" : "false");
  return all ? 0 : 1;
}
