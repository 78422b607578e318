// gemm_emu.cpp — runs the f32 GEMM kernels of cuda/gemm_f32.cuh (FFMA tiles and 3xTF32 tensor-core tiles) on the
// CPU and checks them against a double-precision product, so that their loaders, fragment indexing, split-K
// slices and epilogues are tested without a GPU. Each CUDA thread of a block is an OS thread; __syncthreads is a
// barrier over the block; mma.sync.m16n8k8.tf32 is emulated warp-wide from the PTX fragment layout (every lane
// posts its A and B registers, then computes its four accumulators from all of them, reading the top 19 bits of
// each register as the hardware does). Blocks run one after another, so __shared__ arrays become function statics.
// A mutation run drops the two small-term products of every 3xTF32 triple (leaving plain TF32): it must fail the
// tolerance, which shows that the check can tell 3xTF32 from TF32. Build: c++ -std=c++20 -O1 -pthread -Icuda.
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
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define AD_GEMM_EMU 1
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct float4 {
  float x, y, z, w;
};
struct float2 {
  float x, y;
};
inline float2 make_float2(float a, float b) { return {a, b}; }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float fmaf(float a, float b, float c) { return std::fma(a, b, c); }
using std::min;
namespace ad_cuda {
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace ad_cuda

namespace emu {
// Two sets of fragment buffers, used by alternate mma calls: a lane writes set c % 2 only after the barrier of call
// c - 1, which every lane reaches after it has read call c - 2's set, so one barrier per call suffices.
struct Warp {
  std::unique_ptr<std::barrier<>> bar = std::make_unique<std::barrier<>>(32);
  uint32_t a[2][32][4], b[2][32][2];
};
struct Block {
  std::barrier<> bar{256};
  Warp warps[8];
  std::vector<float> dyn = std::vector<float>(64 * 1024, std::nanf(""));  // dynamic shared memory, NaN until written
};
thread_local Block* block = nullptr;
thread_local int lane = 0, warp = 0;
thread_local unsigned mma_calls = 0;
bool plain_tf32 = false;  // the mutation: only the big·big products
}  // namespace emu

thread_local dim3 threadIdx, blockIdx;
inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }

// the tensor core reads the top 19 bits of each 32-bit TF32 register
inline double tf32_in(uint32_t u) { return (double)__uint_as_float(u & 0xffffe000u); }

inline void mma_tf32_1688(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  // per row tile the kernel issues 4 small·big, 4 big·small, then 4 big·big products
  const unsigned call = emu::mma_calls++;
  const bool skip = emu::plain_tf32 && call % 12 < 8;
  emu::Warp& w = emu::block->warps[emu::warp];
  auto& fa = w.a[call % 2];
  auto& fb = w.b[call % 2];
  std::memcpy(fa[emu::lane], a, sizeof a);
  fb[emu::lane][0] = b0, fb[emu::lane][1] = b1;
  w.bar->arrive_and_wait();
  const int g = emu::lane / 4, t = emu::lane % 4;
  float out[4];
  for (int r = 0; r < 4; r++) {
    const int row = g + 8 * (r / 2), col = 2 * t + r % 2;
    double s = 0;
    for (int k = 0; k < 8; k++) {
      // A(row, k): lane (row % 8)·4 + k % 4, register row / 8 + 2·(k / 4); B(k, col): lane col·4 + k % 4, register k / 4
      const double av = tf32_in(fa[(row % 8) * 4 + k % 4][row / 8 + 2 * (k / 4)]);
      const double bv = tf32_in(fb[col * 4 + k % 4][k / 4]);
      s += av * bv;
    }
    out[r] = (float)((double)d[r] + s);
  }
  if (!skip)
    for (int r = 0; r < 4; r++) d[r] = out[r];
}

// cp.async as a synchronous 16-byte copy (zeros when src_bytes is 0); commit / wait have nothing left to wait for.
// The barrier logic around them is still exercised: a stage refilled before every thread is done reading it would
// change another thread's operands.
inline float* smem_u32(float* p) { return p; }
inline void cp_async16(float* dst, const void* src, int src_bytes) {
  std::memset(dst, 0, 16);
  std::memcpy(dst, src, (size_t)src_bytes);
}
inline void cp_async_commit() {}
template <int N>
void cp_async_wait() {}
#define AD_F32_PIPE_SMEM(name) float* name = emu::block->dyn.data()

#include "gemm_f32.cuh"

using namespace ad_gemm;

template <class K, class... A>
void launch(K kernel, dim3 grid, A... args) {
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
    for (unsigned bx = 0; bx < grid.x; bx++) {
      emu::Block blk;
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < 256; t++)
        ts.emplace_back([&, t] {
          threadIdx = {t, 0, 0};
          blockIdx = {bx, by, bz};
          emu::block = &blk;
          emu::lane = (int)t % 32, emu::warp = (int)t / 32;
          emu::mma_calls = 0;
          kernel(args...);
        });
      for (auto& th : ts) th.join();
    }
}

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  int extra_ld;  // added to each leading dimension (odd: the scalar loaders)
  int splits;    // K split over the grid's z (the k16 kernels)
  float beta;
  bool bf16_out;
  int batch = 1;  // items over the grid's y (the k16 kernels; f32 output, no split)
};

uint16_t to_bf16(float f) {  // nearest even, as the epilogue rounds
  const uint32_t u = __float_as_uint(f);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// kernel: 1 the 128x128x8 FFMA kernel, 2 the 128x128x16 FFMA kernel, 5 the 128x128x16 3xTF32 kernel, 3 the same
// with 1xTF32 tiles, 9 the cp.async-pipelined 3xTF32 kernel (only where f32_pipe_ok: the caller skips other cases)
template <bool TA, bool TB>
bool run_case(const Case& c, int kernel, std::mt19937& rng, double& worst, std::string& why) {
  const int64_t lda = (TA ? c.M : c.K) + c.extra_ld, ldb = (TB ? c.K : c.N) + c.extra_ld, ldc = c.N + c.extra_ld;
  std::normal_distribution<float> nd(0.f, 1.f);
  // batch items lie sX = item size + 4 floats apart
  const int64_t sA = (TA ? c.K : c.M) * lda + 4, sB = (TB ? c.N : c.K) * ldb + 4, sC = c.M * ldc + 4, nb = c.batch;
  std::vector<float> A(sA * nb), B(sB * nb), C(sC * nb);
  for (auto& v : A) v = nd(rng);
  for (auto& v : B) v = nd(rng);
  for (auto& v : C) v = nd(rng);
  std::vector<uint16_t> Cb(C.size());
  for (size_t i = 0; i < C.size(); i++) Cb[i] = to_bf16(C[i]);
  const std::vector<float> C0 = C;
  const float alpha = 0.75f;
  GemmArgs a{c.M, c.N, c.K, alpha, c.beta, A.data(), lda, B.data(), ldb, c.bf16_out ? nullptr : C.data(), ldc, 0,
             c.bf16_out ? Cb.data() : nullptr};
  a.c_vec2 = ldc % 2 == 0;
  a.sa = sA, a.sb = sB, a.sc = sC;
  const int vec = lda % 4 == 0 && ldb % 4 == 0;
  const unsigned tiles = (unsigned)(ad_cuda::ceil_div(c.M, 128) * ad_cuda::ceil_div(c.N, 128));
  if (kernel == 1) {
    launch(gemm_f32_simt_kernel<TA, TB>, dim3{tiles, 1, 1}, a);
  } else {
    // K chunks of the kernel's depth (16, the pipelined kernel's 32), slices summed in a fixed order as
    // splitk_reduce_kernel does
    const int64_t bk = kernel == 9 ? kPipeBK : 16;
    const int64_t kchunk = ad_cuda::ceil_div(ad_cuda::ceil_div(c.K, c.splits), bk) * bk;
    const int64_t splits = ad_cuda::ceil_div(c.K, kchunk);
    std::vector<float> ws(c.splits > 1 ? splits * c.M * c.N : 0, std::nanf(""));
    float* w = c.splits > 1 ? ws.data() : nullptr;
    const dim3 grid{tiles, (unsigned)nb, (unsigned)splits};
    if (kernel == 9) launch(gemm_tf32_pipe_kernel<TA, TB, 3>, grid, a, kchunk, w);
    else if (kernel == 2) launch(gemm_f32_k16_kernel<TA, TB, SimtTile, 2>, grid, a, vec, kchunk, w);
    else if (kernel == 3) launch(gemm_f32_k16_kernel<TA, TB, Tf32x1Tile, 2>, grid, a, vec, kchunk, w);
    else launch(gemm_f32_k16_kernel<TA, TB, Tf32x3Tile, 2>, grid, a, vec, kchunk, w);
    if (w)
      for (int64_t i = 0; i < c.M; i++)
        for (int64_t j = 0; j < c.N; j++) {
          float s = 0;
          for (int64_t z = 0; z < splits; z++) s += ws[(z * c.M + i) * c.N + j];
          float& o = C[i * ldc + j];
          o = c.beta != 0.f ? alpha * s + c.beta * o : alpha * s;
        }
  }
  // error per element relative to alpha·Σ|a·b| (+ |beta·C|): 3xTF32 1e-5, 1xTF32 2e-3 (two roundings to 10 bits),
  // FFMA 1e-6; bf16 output adds its rounding
  const double tol = kernel == 5 || kernel == 9 ? 1e-5 : kernel == 3 ? 2e-3 : 1e-6;
  double w = 0;
  for (int64_t z = 0; z < nb; z++)
  for (int64_t i = 0; i < c.M; i++)
    for (int64_t j = 0; j < c.N; j++) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < c.K; k++) {
        const double x = A[z * sA + (TA ? k * lda + i : i * lda + k)], y = B[z * sB + (TB ? j * ldb + k : k * ldb + j)];
        ref += x * y, mag += std::fabs(x * y);
      }
      const int64_t ci = z * sC + i * ldc + j;
      const double c0 = c.bf16_out ? (double)__uint_as_float((uint32_t)to_bf16(C0[ci]) << 16) : C0[ci];
      ref = alpha * ref + c.beta * c0, mag = alpha * mag + std::fabs(c.beta * c0);
      const double got = c.bf16_out ? (double)__uint_as_float((uint32_t)Cb[ci] << 16) : C[ci];
      const double allowed = tol * mag + (c.bf16_out ? std::fabs(ref) * 0x1p-7 : 0) + 1e-30;
      const double e = std::fabs(got - ref) / allowed;
      w = std::isfinite(e) ? std::max(w, e) : 1e30;
    }
  // outside each item's M x N block C is untouched
  for (int64_t z = 0; z < nb; z++)
    for (int64_t i = 0; i <= c.M; i++)
      for (int64_t j = i < c.M ? c.N : 0; j < (i < c.M ? ldc : sC - c.M * ldc); j++) {
        const int64_t ci = z * sC + i * ldc + j;
        if (c.bf16_out ? Cb[ci] != to_bf16(C0[ci]) : C[ci] != C0[ci]) w = 1e30;
      }
  worst = std::max(worst, w);
  if (w > 1) why = "off by " + std::to_string(w) + "x tol";
  return w <= 1;
}

int main(int argc, char** argv) {
  const bool mutation = argc > 1 && std::strcmp(argv[1], "--plain-tf32") == 0;
  emu::plain_tf32 = mutation;
  const Case cases[] = {
      {128, 128, 48, false, false, 0, 1, 0.f, false},   // whole tile, float4 loads
      {150, 136, 37, false, false, 0, 1, 0.5f, false},  // edge tiles, K tail, beta
      {70, 200, 40, false, false, 1, 1, 0.f, false},    // odd leading dims: scalar loads
      {130, 96, 80, false, false, 0, 2, 0.f, false},    // split-K slices
      {136, 130, 24, false, false, 0, 1, 0.25f, true},  // bf16 output with beta
      {40, 136, 24, false, false, 0, 1, 0.5f, false, 3},  // batched: three items, strided
      // multiples of 4 (the pipelined kernel's domain): edge tiles, K tail within a stage, split, bf16 output
      {132, 200, 72, false, false, 4, 1, 0.5f, false},
      {256, 128, 100, false, false, 0, 2, 0.f, false},
      {136, 132, 40, false, false, 0, 1, 0.25f, true},
      {132, 136, 37, false, false, 0, 1, 1.f, false},  // K not a multiple of 4: only (ta, !tb) takes the pipeline
  };
  std::mt19937 rng(11);
  int failed = 0, ran = 0;
  double worst = 0;
  const int kernels[] = {5, 3, 2, 1, 9};
  for (int kernel : kernels) {
    if (mutation && kernel != 5) continue;
    for (const Case& c0 : cases) {
      if (kernel == 1 && (c0.splits > 1 || c0.batch > 1)) continue;
      if (kernel == 9 && c0.batch > 1) continue;
      for (int lay = 0; lay < 4; lay++) {
        Case c = c0;
        c.ta = lay & 1, c.tb = lay & 2;
        if (kernel == 9) {  // the pipelined kernel's domain only
          GemmArgs probe{c.M, c.N, c.K, 1.f, 0.f, nullptr, (c.ta ? c.M : c.K) + c.extra_ld, nullptr, (c.tb ? c.K : c.N) + c.extra_ld, nullptr, 0, 0, nullptr};
          if (!f32_pipe_ok(probe, c.ta, c.tb)) continue;
        }
        std::string why;
        bool ok;
        if (!c.ta && !c.tb) ok = run_case<false, false>(c, kernel, rng, worst, why);
        else if (!c.ta && c.tb) ok = run_case<false, true>(c, kernel, rng, worst, why);
        else if (c.ta && !c.tb) ok = run_case<true, false>(c, kernel, rng, worst, why);
        else ok = run_case<true, true>(c, kernel, rng, worst, why);
        ran++;
        failed += !ok;
        std::printf("{\"kernel\":%d,\"case\":[%lld,%lld,%lld,%d,%d,%d,%d,%g,%d,%d],\"ok\":%s,\"why\":\"%s\"}\n", kernel,
                    (long long)c.M, (long long)c.N, (long long)c.K, c.ta, c.tb, c.extra_ld, c.splits, c.beta, c.bf16_out, c.batch,
                    ok ? "true" : "false", why.c_str());
        std::fflush(stdout);
      }
    }
  }
  std::printf("{\"cases\":%d,\"failed\":%d,\"worst\":%g,\"mutation\":%s}\n", ran, failed, worst, mutation ? "true" : "false");
  return failed ? 1 : 0;
}
