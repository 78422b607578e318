// gemm_f32.cuh — the f32 GEMM kernels of gemm.cu (family 3), device code only so that test/cuda/emu/gemm_emu.cpp
// runs them on the CPU as well:
//   - FFMA on CUDA cores (SimtTile): full f32 precision, what torch does with TF32 off;
//   - 3xTF32 on tensor cores (Tf32x3Tile): each operand x = big + small with big = tf32(x), small = tf32(x - big),
//     and acc += a_small·b_big + a_big·b_small + a_big·b_big by mma.sync.m16n8k8.tf32 (f32 accumulation). The
//     dropped a_small·b_small term and the rounding of small are ~2^-22 of each product, against 2^-24 for one f32
//     rounding: f32-class, not TF32-class (2^-11).
// Both run inside the same double-buffered k-major shared tiles (128x128, BK deep) filled by the kernel's loaders;
// the TF32 tiles also run in a cp.async-pipelined kernel (gemm_tf32_pipe_kernel, at the end).
// The including file provides ad_cuda::ceil_div, and in a CPU build (AD_GEMM_EMU) the emulated mma, cp.async and
// dynamic shared memory (AD_F32_PIPE_SMEM).
#pragma once

#include "gemm_tile.cuh"

namespace ad_gemm {

// One k-step of double buffering shared by the f32 kernels: load tile 0, then per k-tile fetch the next one into
// registers (gload), multiply the current shared buffers (tile.multiply), store the fetched one into the other
// buffer (sstore), barrier. gload / sstore / tile are the kernel's; the last writes C (tile.store).
template <int BK, int PAD, class GLoad, class SStore, class Tile>
__device__ __forceinline__ void f32_pipeline(const GemmArgs& a, float (&As)[2][BK][128 + PAD], float (&Bs)[2][BK][128 + PAD],
                                             GLoad& gload, SStore& sstore, Tile& tile) {
  const int64_t KT = ad_cuda::ceil_div(a.K, BK);
  gload(0);
  sstore(0);
  __syncthreads();
  for (int64_t kt = 0; kt < KT; kt++) {
    const int buf = (int)(kt & 1);
    if (kt + 1 < KT) gload((kt + 1) * BK);
    tile.template multiply<BK>(As[buf], Bs[buf]);
    if (kt + 1 < KT) sstore(buf ^ 1);  // that buffer was last read in iteration kt-1, before the barrier
    __syncthreads();
  }
}

// The first row and column of this block's 128x128 tile of C (grouped tile order, gemm_tile.cuh).
__device__ __forceinline__ void f32_block_origin(const GemmArgs& a, int64_t& m0, int64_t& n0) {
  int64_t tm, tn;
  tile_coords(blockIdx.x, ad_cuda::ceil_div(a.M, 128), ad_cuda::ceil_div(a.N, 128), tm, tn);
  m0 = tm * 128, n0 = tn * 128;
}

// FFMA: each of the 256 threads (16x16) accumulates 8x8 outputs as two 4-row and two 4-column strips 64 apart
// (float4 shared reads of A and B per k, broadcast-friendly).
struct SimtTile {
  static constexpr int kPad = 4;
  int tx, ty;
  float acc[8][8];
  __device__ __forceinline__ explicit SimtTile(int tid) : tx(tid % 16), ty(tid / 16) {
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
      for (int j = 0; j < 8; j++) acc[i][j] = 0.f;
  }
  template <int BK, int W>
  __device__ __forceinline__ void multiply(const float (&As)[BK][W], const float (&Bs)[BK][W]) {
#pragma unroll
    for (int k = 0; k < BK; k++) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][64 + tx * 4]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }
  __device__ __forceinline__ void store(const GemmArgs& a, int64_t m0, int64_t n0) const {
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const int64_t row = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        const int64_t col = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
        store_pair(a, row, col, acc[i][j], acc[i][j + 1]);
      }
    }
  }
};

#ifndef AD_GEMM_EMU
#define AD_F32_PIPE_SMEM(name) extern __shared__ __align__(16) float name[]
// D += A·B, A 16x8 (row-major fragment), B 8x8 (column), TF32 in (the tensor core reads the top 19 bits of each
// register: sign, exponent, 10 mantissa bits), f32 accumulate
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// x rounded to TF32 (10 mantissa bits, to nearest, ties away from zero: cvt.rna.tf32.f32's rule) with two integer
// operations; cvt is a conversion-pipe instruction at a fraction of the integer rate. For finite x only.
__device__ __forceinline__ uint32_t round_tf32(uint32_t u) { return (u + 0x1000u) & 0xffffe000u; }

// x as big + small, both rounded to TF32; x - big is exact in f32. (Leaving small to the tensor core's truncation
// doubles its error: a BERT-size linear's gradient then missed the 1e-5 device check.) A finite x within half a TF32
// step of FLT_MAX would round to infinity: big is truncated instead. For ±inf and NaN, big is x and small 0; the
// cross terms a_small·b_big + a_big·b_small then multiply an infinity by a zero, so at 3xTF32 a product with an
// infinite operand comes out NaN where FFMA gives ±inf (zeroing it would cost another register copy of every
// fragment; 3xTF32 is the opt-in 'high' precision, and 1xTF32 has no cross terms).
__device__ __forceinline__ void split_tf32(float x, uint32_t& big, uint32_t& small) {
  const uint32_t u = __float_as_uint(x);
  const bool finite = (u & 0x7f800000u) != 0x7f800000u;
  const uint32_t r = round_tf32(u);
  big = !finite ? u : (r & 0x7f800000u) == 0x7f800000u ? u & 0xffffe000u : r;
  small = finite ? round_tf32(__float_as_uint(x - __uint_as_float(big))) : 0u;
}

// TF32 tensor-core tiles, PASSES 3 (3xTF32, f32-class) or 1 (the operands rounded to TF32 once: 2^-11 of each
// product, for autocast's attention products, where torch rounds to bf16, 2^-8). 8 warps as 2 (rows) x 4 (columns)
// of 64x32 warp tiles, each 4x4 mma tiles of 16x8. Fragments come from the k-major shared tiles with scalar reads:
// lane (g = lane/4, t = lane%4) reads k row t (or t+4) at column g (+8); with a row stride of 136 floats (PAD 8)
// the 32 lanes hit 32 different banks.
template <int PASSES>
struct Tf32Tile {
  static_assert(PASSES == 1 || PASSES == 3, "1xTF32 or 3xTF32");
  static constexpr int kPad = 8;
  int wm, wn, g, t;
  float acc[4][4][4];
  __device__ __forceinline__ explicit Tf32Tile(int tid) {
    const int warp = tid / 32, lane = tid % 32;
    wm = warp % 2, wn = warp / 2, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int r = 0; r < 4; r++) acc[i][j][r] = 0.f;
  }
  template <int BK, int W>
  __device__ __forceinline__ void multiply(const float (&As)[BK][W], const float (&Bs)[BK][W]) {
    multiply_at<BK>([&](int k, int m) { return As[k][m]; }, [&](int k, int n) { return Bs[k][n]; });
  }
  // BK deep, operands through a(k, m) and b(k, n) (the shared layouts differ between kernels)
  template <int BK, class FA, class FB>
  __device__ __forceinline__ void multiply_at(FA a, FB b) {
#pragma unroll
    for (int ks = 0; ks < BK; ks += 8) {
      // B fragments of the four 8-column tiles: b0 = B[k = t][n = g], b1 = B[t + 4][g]
      uint32_t bb[4][2], bs[4][2];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int n = wn * 32 + j * 8 + g;
        split_tf32(b(ks + t, n), bb[j][0], bs[j][0]);
        split_tf32(b(ks + t + 4, n), bb[j][1], bs[j][1]);
      }
#pragma unroll
      for (int i = 0; i < 4; i++) {
        // A fragment of rows m .. m+15: a0 = A[g][t], a1 = A[g + 8][t], a2 = A[g][t + 4], a3 = A[g + 8][t + 4]
        const int m = wm * 64 + i * 16 + g;
        uint32_t ab[4], as[4];
        split_tf32(a(ks + t, m), ab[0], as[0]);
        split_tf32(a(ks + t, m + 8), ab[1], as[1]);
        split_tf32(a(ks + t + 4, m), ab[2], as[2]);
        split_tf32(a(ks + t + 4, m + 8), ab[3], as[3]);
        // the small terms first, the big product last; each pass runs over the four column tiles so that the three
        // mma of one accumulator, which depend on each other, are four instructions apart
        if (PASSES == 3) {
#pragma unroll
          for (int j = 0; j < 4; j++) mma_tf32_1688(acc[i][j], as, bb[j][0], bb[j][1]);
#pragma unroll
          for (int j = 0; j < 4; j++) mma_tf32_1688(acc[i][j], ab, bs[j][0], bs[j][1]);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) mma_tf32_1688(acc[i][j], ab, bb[j][0], bb[j][1]);
      }
    }
  }
  // accumulator r of tile (i, j): row g + 8·(r / 2), column 2t + r % 2
  __device__ __forceinline__ void store(const GemmArgs& a, int64_t m0, int64_t n0) const {
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int64_t row = m0 + wm * 64 + i * 16 + g, col = n0 + wn * 32 + j * 8 + 2 * t;
        store_pair(a, row, col, acc[i][j][0], acc[i][j][1]);
        store_pair(a, row + 8, col, acc[i][j][2], acc[i][j][3]);
      }
  }
};
using Tf32x3Tile = Tf32Tile<3>;
using Tf32x1Tile = Tf32Tile<1>;

// Block tile 128x128x8, 256 threads, FFMA (variant 1). Tiles are stored k-major ([k][m], [k][n], padded by 4
// floats) whatever the transposes; the global loads are arranged so that consecutive threads read consecutive
// addresses of the contiguous dimension. The next tile is fetched into registers while the current one is
// multiplied (double-buffered shared memory).
template <bool TA, bool TB>
__global__ void __launch_bounds__(256) gemm_f32_simt_kernel(GemmArgs a) {
  constexpr int BM = 128, BN = 128, BK = 8, PAD = SimtTile::kPad;
  __shared__ __align__(16) float As[2][BK][BM + PAD];
  __shared__ __align__(16) float Bs[2][BK][BN + PAD];
  int64_t m0, n0;
  f32_block_origin(a, m0, n0);
  const int tid = threadIdx.x;
  const float* A = static_cast<const float*>(a.A);
  const float* B = static_cast<const float*>(a.B);

  // (m, k) of A and (k, n) of B that thread slot idx = tid + i·256 loads
  auto a_mk = [&](int idx, int& m, int& k) {
    if (TA) { m = idx % BM; k = idx / BM; }  // A is (K,M): m contiguous
    else { k = idx % BK; m = idx / BK; }     // A is (M,K): k contiguous
  };
  auto b_kn = [&](int idx, int& k, int& n) {
    if (TB) { k = idx % BK; n = idx / BK; }  // B is (N,K): k contiguous
    else { n = idx % BN; k = idx / BN; }     // B is (K,N): n contiguous
  };
  float ra[4], rb[4];
  auto gload = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int m, k, n, kb;
      a_mk(tid + i * 256, m, k);
      b_kn(tid + i * 256, kb, n);
      const int64_t gm = m0 + m, gk = k0 + k, gn = n0 + n, gkb = k0 + kb;
      ra[i] = (gm < a.M && gk < a.K) ? (TA ? A[gk * a.lda + gm] : A[gm * a.lda + gk]) : 0.f;
      rb[i] = (gn < a.N && gkb < a.K) ? (TB ? B[gn * a.ldb + gkb] : B[gkb * a.ldb + gn]) : 0.f;
    }
  };
  auto sstore = [&](int buf) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int m, k, n, kb;
      a_mk(tid + i * 256, m, k);
      b_kn(tid + i * 256, kb, n);
      As[buf][k][m] = ra[i];
      Bs[buf][kb][n] = rb[i];
    }
  };
  SimtTile tile(tid);
  f32_pipeline<BK, PAD>(a, As, Bs, gload, sstore, tile);
  tile.store(a, m0, n0);
}

// Elements (r, c .. c+3) of a row-major matrix with `rows` rows, `cols` columns and leading dim ld: one float4 when
// `full` (the caller knows all four are inside and 16-byte aligned), else four bounds-checked loads (0 outside).
__device__ __forceinline__ float4 load4_rows(const float* p, int64_t ld, int64_t r, int64_t rows, int64_t c, int64_t cols,
                                             bool full) {
  if (full) return *reinterpret_cast<const float4*>(p + r * ld + c);
  const bool ok = r < rows;
  float4 v;
  v.x = ok && c < cols ? p[r * ld + c] : 0.f;
  v.y = ok && c + 1 < cols ? p[r * ld + c + 1] : 0.f;
  v.z = ok && c + 2 < cols ? p[r * ld + c + 2] : 0.f;
  v.w = ok && c + 3 < cols ? p[r * ld + c + 3] : 0.f;
  return v;
}

// Batched (grid.y > 1): item y reads A + y·sa, B + y·sb and writes C + y·sc (f32 C only). Split-K (ws non-null):
// block z takes K rows z·kchunk .. +kchunk and writes its partial product to slice z of the workspace (M x N, alpha 1,
// beta 0); splitk_reduce_kernel then sums the slices into C. kchunk is a multiple of the kernel's BK, so the advanced
// operand pointers keep the alignment their loaders rely on. Never both.
template <bool TA, bool TB>
__device__ __forceinline__ void f32_batch_and_split(GemmArgs& a, int64_t kchunk, float* ws) {
  if (blockIdx.y) {
    a.A = static_cast<const float*>(a.A) + blockIdx.y * a.sa;
    a.B = static_cast<const float*>(a.B) + blockIdx.y * a.sb;
    a.C += blockIdx.y * a.sc;
  }
  if (ws) {
    const int64_t kb = blockIdx.z * kchunk;
    a.A = static_cast<const float*>(a.A) + (TA ? kb * a.lda : kb);
    a.B = static_cast<const float*>(a.B) + (TB ? kb : kb * a.ldb);
    a.K = min(kchunk, a.K - kb);
    a.C = ws + blockIdx.z * a.M * a.N, a.Cb = nullptr;
    a.ldc = a.N, a.alpha = 1.f, a.beta = 0.f, a.c_vec2 = a.N % 2 == 0;
  }
}

// Block tile 128x128x16 (variants 2 and 4 with SimtTile, 5 to 8 with Tf32x3Tile; Tf32x1Tile for batched products
// under autocast; batched products of either precision through adapters_cuda_gemm_f32_batched): 256 threads, global loads as
// float4 where the whole tile is inside the matrices and rows are 16-byte aligned (scalar, bounds-checked loads
// otherwise), operand pointers advanced per tile rather than re-indexed. MINB 2: at most 128 registers so that two
// blocks share an SM (one block's loads overlap the other's arithmetic; the 3xTF32 tile then spills a little);
// MINB 1: one block per SM with all the registers it wants.
// Batches and K splits: f32_batch_and_split.
template <bool TA, bool TB, class Tile, int MINB>
__global__ void __launch_bounds__(256, MINB) gemm_f32_k16_kernel(GemmArgs a, int vec_ok, int64_t kchunk, float* ws) {
  constexpr int BM = 128, BN = 128, BK = 16, PAD = Tile::kPad;
  f32_batch_and_split<TA, TB>(a, kchunk, ws);
  __shared__ __align__(16) float As[2][BK][BM + PAD];
  __shared__ __align__(16) float Bs[2][BK][BN + PAD];
  int64_t m0, n0;
  f32_block_origin(a, m0, n0);
  const int tid = threadIdx.x;
  const float* A = static_cast<const float*>(a.A);
  const float* B = static_cast<const float*>(a.B);
  // the float4 path: both tiles of this block lie inside M and N (K is checked per tile)
  const bool vec = vec_ok && m0 + BM <= a.M && n0 + BN <= a.N;

  // Each thread moves two float4 of A and two of B per tile. For a k-contiguous operand (A as (M,K), B as (N,K))
  // slot i covers row (tid / 4 + 64·i), k (tid % 4)·4 .. +3; for an m/n-contiguous one (A as (K,M), B as (K,N))
  // k (tid / 32 + 8·i), columns (tid % 32)·4 .. +3.
  const int kr_row = tid / 4, kr_k = (tid % 4) * 4;  // k-contiguous slots
  const int mc_k = tid / 32, mc_c = (tid % 32) * 4;  // m/n-contiguous slots
  float4 ra[2], rb[2];
  auto gload = [&](int64_t k0) {
    const bool full = vec && k0 + BK <= a.K;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      if (!TA) ra[i] = load4_rows(A, a.lda, m0 + kr_row + 64 * i, a.M, k0 + kr_k, a.K, full);  // A (M,K)
      else ra[i] = load4_rows(A, a.lda, k0 + mc_k + 8 * i, a.K, m0 + mc_c, a.M, full);        // A (K,M)
      if (TB) rb[i] = load4_rows(B, a.ldb, n0 + kr_row + 64 * i, a.N, k0 + kr_k, a.K, full);  // B (N,K)
      else rb[i] = load4_rows(B, a.ldb, k0 + mc_k + 8 * i, a.K, n0 + mc_c, a.N, full);        // B (K,N)
    }
  };
  auto sstore = [&](int buf) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      if (!TA) {
        const int m = kr_row + 64 * i;
        As[buf][kr_k + 0][m] = ra[i].x;
        As[buf][kr_k + 1][m] = ra[i].y;
        As[buf][kr_k + 2][m] = ra[i].z;
        As[buf][kr_k + 3][m] = ra[i].w;
      } else {
        *reinterpret_cast<float4*>(&As[buf][mc_k + 8 * i][mc_c]) = ra[i];
      }
      if (TB) {
        const int n = kr_row + 64 * i;
        Bs[buf][kr_k + 0][n] = rb[i].x;
        Bs[buf][kr_k + 1][n] = rb[i].y;
        Bs[buf][kr_k + 2][n] = rb[i].z;
        Bs[buf][kr_k + 3][n] = rb[i].w;
      } else {
        *reinterpret_cast<float4*>(&Bs[buf][mc_k + 8 * i][mc_c]) = rb[i];
      }
    }
  };
  Tile tile(tid);
  f32_pipeline<BK, PAD>(a, As, Bs, gload, sstore, tile);
  tile.store(a, m0, n0);
}

// 3xTF32 (or 1xTF32) with a cp.async pipeline (variants 9 and 10; not yet run on a GPU, so auto does not pick it):
// the k16 kernel keeps its tensor cores about a quarter busy, and its register-staged, double-buffered loads are the
// suspect. Here each stage (BK = 32) goes global -> shared directly, STAGES deep. Shared layouts without transposes:
// a k-contiguous operand (A as (M,K), B as (N,K)) as [row][k] with a row stride of 36 floats (lane (g, t) reads
// g·36 + t: 32 different banks), an m/n-contiguous one as [k][row] with a stride of 136 (t·136 + g). Needs 16-byte
// aligned operands with ld, K and the m/n-contiguous sides' lengths multiples of 4 (f32_pipe_ok), so that every
// 16-byte chunk is wholly inside the matrix or wholly outside (zero-filled).
constexpr int kPipeBK = 32, kPipeStages = 3;
template <bool T>  // floats of one operand's stage: [128][36] (k-contiguous) or [32][136]
__host__ __device__ constexpr int pipe_operand_floats() { return T ? 128 * (kPipeBK + 4) : kPipeBK * (128 + 8); }
template <bool TA, bool TB>
constexpr int pipe_smem_bytes() {
  return kPipeStages * (pipe_operand_floats<!TA>() + pipe_operand_floats<TB>()) * (int)sizeof(float);
}
inline bool f32_pipe_ok(const GemmArgs& a, bool ta, bool tb) {
  const bool aligned = (reinterpret_cast<uintptr_t>(a.A) | reinterpret_cast<uintptr_t>(a.B)) % 16 == 0;
  const bool k_chunks = (ta && !tb) || a.K % 4 == 0;  // K is chunked only in a k-contiguous operand
  return aligned && a.lda % 4 == 0 && a.ldb % 4 == 0 && a.sa % 4 == 0 && a.sb % 4 == 0 && k_chunks &&
         (!ta || a.M % 4 == 0) && (tb || a.N % 4 == 0);
}

// One operand's tile of a stage: `rows` (128) of the output side by kPipeBK of k. KC: k-contiguous in memory.
template <bool KC>
__device__ __forceinline__ void pipe_load(float* sm, const float* g, int64_t ld, int64_t row0, int64_t rows, int64_t k0, int64_t K, int tid) {
#pragma unroll
  for (int i = 0; i < 4; i++) {  // 1024 chunks of 16 bytes, 4 per thread
    const int c = tid + i * 256;
    int r, k;
    if (KC) r = c / 8, k = (c % 8) * 4;   // [row][k]: 8 chunks per row
    else k = c / 32, r = (c % 32) * 4;    // [k][row]: 32 chunks per k
    const bool in = row0 + r < rows && k0 + k < K;
    const float* src = in ? (KC ? g + (row0 + r) * ld + k0 + k : g + (k0 + k) * ld + row0 + r) : g;
    float* dst = KC ? sm + r * (kPipeBK + 4) + k : sm + k * (128 + 8) + r;
    cp_async16(smem_u32(dst), src, in ? 16 : 0);
  }
}

template <bool TA, bool TB, int PASSES>
__global__ void __launch_bounds__(256, 2) gemm_tf32_pipe_kernel(GemmArgs a, int64_t kchunk, float* ws) {
  f32_batch_and_split<TA, TB>(a, kchunk, ws);
  AD_F32_PIPE_SMEM(smem);
  constexpr int FA = pipe_operand_floats<!TA>(), FB = pipe_operand_floats<TB>();
  int64_t m0, n0;
  f32_block_origin(a, m0, n0);
  const int tid = threadIdx.x;
  const float* A = static_cast<const float*>(a.A);
  const float* B = static_cast<const float*>(a.B);
  const int64_t KT = ad_cuda::ceil_div(a.K, kPipeBK);
  auto load = [&](int stage, int64_t kt) {
    float* sa = smem + stage * (FA + FB);
    pipe_load<!TA>(sa, A, a.lda, m0, a.M, kt * kPipeBK, a.K, tid);
    pipe_load<TB>(sa + FA, B, a.ldb, n0, a.N, kt * kPipeBK, a.K, tid);
  };
#pragma unroll
  for (int s = 0; s < kPipeStages - 1; s++) {
    if (s < KT) load(s, s);
    cp_async_commit();  // empty groups keep the count uniform
  }
  Tf32Tile<PASSES> tile(tid);
  for (int64_t kt = 0; kt < KT; kt++) {
    cp_async_wait<kPipeStages - 2>();  // this thread's copies of stage kt have landed ...
    __syncthreads();                   // ... everyone's, and stage kt-1 is no longer read
    const int64_t next = kt + kPipeStages - 1;
    if (next < KT) load((int)(next % kPipeStages), next);
    cp_async_commit();
    const float* sa = smem + (kt % kPipeStages) * (FA + FB);
    const float* sb = sa + FA;
    tile.template multiply_at<kPipeBK>(
        [&](int k, int m) { return TA ? sa[k * (128 + 8) + m] : sa[m * (kPipeBK + 4) + k]; },
        [&](int k, int n) { return TB ? sb[n * (kPipeBK + 4) + k] : sb[k * (128 + 8) + n]; });
  }
  cp_async_wait<0>();
  tile.store(a, m0, n0);
}

}  // namespace ad_gemm
