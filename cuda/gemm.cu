// gemm.cu — matrix products on the GPU, with the row-major contract of native/kernels/gemm.h:
//   C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C   (beta == 0: C is write-only)
//
// Three kernel families, chosen per call (adapters_cuda_gemm_bf16 / _f32 at the bottom):
//
// 1. bf16, Hopper (sm_90a builds only): wgmma + TMA, warp-specialised.
//    Block tile 128 x BN x 64 (BN = 256, 192 or 128, whichever fills the SMs best), 384 threads =
//    3 warpgroups: warpgroup 0 is the producer (one thread issues the bulk-tensor copies, TMA, of the A and
//    B tiles into a 4- to 6-stage ring of shared memory, 128-byte swizzled, completing on mbarriers);
//    warpgroups 1 and 2 are consumers, each owning 64 rows of the tile and issuing wgmma.m64nBNk16 straight
//    from shared memory (no ldmatrix, no register copies of A or B), accumulating in BN/2 f32 registers per
//    thread. setmaxnreg moves registers from the producer (40) to the consumers (232). The transposes are
//    wgmma's "MN-major" operand layouts, so all four combinations run without a transpose pass. TMA
//    zero-fills rows and columns outside the matrices, so edge tiles need no special code; it needs
//    16-byte-aligned A and B rows (lda, ldb multiples of 8).
//    Why these sizes: a 128x256 tile does 2·128·256·64 FLOP per 48 KB stage, the most math per byte of
//    shared memory that still fits 4 stages in the 227 KB of an SM; two consumer warpgroups keep the
//    tensor cores busy while one of them waits. BN = 192 exists for N = 768 (BERT): 4 column tiles x 32 row
//    tiles = 128 blocks fill 132 SMs in one wave, where BN = 256 leaves a quarter of them idle.
//
// 2. bf16, any sm_80+ GPU, any shape and alignment: mma.sync.m16n8k16 (Ampere-style).
//    Block tile BM x BN x 64 with 2x2 / 2x4 warps of 64x64 (or 32x32) warp tiles; operands stream through a
//    3-4 stage cp.async ring (zero-fill for edges) into XOR-swizzled shared memory (the 16-byte chunk index
//    XOR the row index mod 8: ldmatrix reads 8 rows of one chunk column without bank conflicts) and reach
//    registers with ldmatrix (.trans for the MN-major operands of a transposed product). Misaligned operands
//    (ld not a multiple of 8, or unaligned base) take the same kernel with plain element loads instead of
//    cp.async.
//
// 3. f32 (gemm_f32.cuh): 128x128 tiles, 256 threads, double-buffered shared memory; by default CUDA-core FFMA,
//    full f32 precision like torch with TF32 off; at matmul precision "high" 3xTF32 on the tensor cores (each
//    operand split into two TF32 parts, three mma.sync per product tile: f32-class error).
//
// Outputs are f32, or bf16 (adapters_cuda_gemm_bf16_out: every epilogue rounds alpha·acc + beta·C to nearest even).
//
// 4. Skinny products of either dtype (few output tiles, long K: adapter weight gradients): split-K, CUDA-core
//    64x64 tiles over chunks of K in the grid's z dimension, then a fixed-order sum of the chunks. The f32 kernel
//    of 3. splits K the same way when its tiles would leave much of a wave idle (f32_splits).
//
// All entry points validate arguments, return cudaError_t codes, and never abort.
#include <cuda.h>  // CUtensorMap and its enums (types only: the driver entry point is fetched at run time)
#include <cudaTypedefs.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "adapters_cuda.h"
#include "common.cuh"
#include "gemm_f32.cuh"  // family 3, with GemmArgs, tile order and epilogue stores (gemm_tile.cuh)

// wgmma / setmaxnreg / TMA code is compiled only for sm_90a (-gencode arch=compute_90a,code=sm_90a); other
// targets get empty kernel bodies and the host never launches them (adapters_cuda_gemm_has_wgmma() == 0).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AD_SM90A 1
#endif

namespace {

using ad_cuda::ceil_div;
using namespace ad_gemm;

// C = beta·C (K == 0, where no product term exists; beta == 0 writes zeros).
__global__ void scale_c_kernel(GemmArgs a) {
  const int64_t total = a.M * a.N;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    store_one(a, i / a.N, i % a.N, 0.f);
}

// ------------------------------------------------------------------------------------------------------
// 2. mma.sync bf16 kernel
// ------------------------------------------------------------------------------------------------------

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// D += A·B, A 16x16 (row), B 16x8 (col), bf16 in, f32 accumulate.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Element offset of (r, c) in a shared tile of COLS bf16 per row (COLS a multiple of 64: rows are whole
// 128-byte lines): the 16-byte chunk index is XOR'd with r mod 8.
template <int COLS>
__device__ __forceinline__ int swz(int r, int c) {
  return r * COLS + ((((c >> 3) ^ (r & 7))) << 3) + (c & 7);
}

// Copies the R x C sub-block at (row0, col0) of a row-major bf16 matrix (rows x cols, leading dim ld) into
// a swizzled shared tile, zero-filling outside the matrix. ALIGNED: ld % 8 == 0 and a 16-byte-aligned base,
// so each 8-element chunk is one 16-byte cp.async (its src-size shortens it at the right edge).
template <int R, int C, int THREADS, bool ALIGNED>
__device__ __forceinline__ void load_tile(uint16_t* tile, const uint16_t* g, int64_t ld, int64_t row0, int64_t col0,
                                          int64_t rows, int64_t cols, int tid) {
  constexpr int CPR = C / 8;  // chunks per row
  constexpr int CHUNKS = R * CPR;
  static_assert(CHUNKS % THREADS == 0, "tile chunks must spread evenly over the threads");
#pragma unroll
  for (int i = 0; i < CHUNKS / THREADS; i++) {
    const int idx = tid + i * THREADS;
    const int r = idx / CPR, c8 = idx % CPR;
    const int64_t gr = row0 + r, gc = col0 + c8 * 8;
    uint16_t* dst = tile + swz<C>(r, c8 * 8);
    if (ALIGNED) {
      int64_t valid = gr < rows ? cols - gc : 0;
      valid = valid < 0 ? 0 : (valid > 8 ? 8 : valid);
      const uint16_t* src = valid > 0 ? g + gr * ld + gc : g;
      cp_async16(smem_u32(dst), src, (int)valid * 2);
    } else {
      const int64_t lim = gr < rows ? cols - gc : 0;  // elements of this chunk inside the matrix
      const uint16_t* src = g + (lim > 0 ? gr * ld + gc : 0);
      uint32_t w[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const uint32_t lo = 2 * e < lim ? src[2 * e] : 0u;
        const uint32_t hi = 2 * e + 1 < lim ? src[2 * e + 1] : 0u;
        w[e] = lo | (hi << 16);
      }
      *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

// Block tile BM x BN x 64, WARPS_M x WARPS_N warps, STAGES-deep cp.async ring.
// TA / TB: A is (K,M) / B is (N,K) in memory (gemm.h's transA / transB).
// Shared tiles keep the global contiguous dimension contiguous:
//   A: TA ? [64 k][BM m] : [BM m][64 k];   B: TB ? [BN n][64 k] : [64 k][BN n]
// and fragments come out with ldmatrix (K-major tiles) or ldmatrix.trans (MN-major tiles).
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, bool TA, bool TB, bool ALIGNED>
__global__ void __launch_bounds__(WARPS_M* WARPS_N * 32)
    gemm_bf16_mma_kernel(GemmArgs a) {
  constexpr int BK = 64;
  constexpr int THREADS = WARPS_M * WARPS_N * 32;
  constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  constexpr int MI = WM / 16, NI = WN / 8;             // mma tiles per warp
  static_assert(NI % 2 == 0, "B fragments are loaded 16 columns at a time");
  constexpr int A_ELEMS = BM * BK, B_ELEMS = BN * BK;
  extern __shared__ __align__(128) uint8_t smem_mma[];
  uint16_t* smem = reinterpret_cast<uint16_t*>(smem_mma);

  const int64_t tiles_m = ceil_div(a.M, BM), tiles_n = ceil_div(a.N, BN);
  int64_t tm, tn;
  tile_coords(blockIdx.x, tiles_m, tiles_n, tm, tn);
  const int64_t m0 = tm * BM, n0 = tn * BN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const uint16_t* A = static_cast<const uint16_t*>(a.A);
  const uint16_t* B = static_cast<const uint16_t*>(a.B);

  auto load_stage = [&](int stage, int64_t kt) {
    uint16_t* sA = smem + stage * (A_ELEMS + B_ELEMS);
    uint16_t* sB = sA + A_ELEMS;
    const int64_t k0 = kt * BK;
    if (TA) load_tile<BK, BM, THREADS, ALIGNED>(sA, A, a.lda, k0, m0, a.K, a.M, tid);
    else load_tile<BM, BK, THREADS, ALIGNED>(sA, A, a.lda, m0, k0, a.M, a.K, tid);
    if (TB) load_tile<BN, BK, THREADS, ALIGNED>(sB, B, a.ldb, n0, k0, a.N, a.K, tid);
    else load_tile<BK, BN, THREADS, ALIGNED>(sB, B, a.ldb, k0, n0, a.K, a.N, tid);
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < NI; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

  const int64_t KT = ceil_div(a.K, BK);
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT) load_stage(s, s);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < KT; kt++) {
    cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's copies) ...
    __syncthreads();              // ... everyone's, and everyone is done with the stage we refill next
    {
      const int64_t nk = kt + STAGES - 1;
      if (nk < KT) load_stage((int)(nk % STAGES), nk);
      cp_async_commit();
    }
    const uint16_t* sA = smem + (int)(kt % STAGES) * (A_ELEMS + B_ELEMS);
    const uint16_t* sB = sA + A_ELEMS;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[MI][4], bfr[NI][2];
#pragma unroll
      for (int i = 0; i < MI; i++) {
        const int mb = wm * WM + i * 16;
        if (!TA) {  // [m][k]: lanes 0-15 rows m, lanes 16-31 the k+8 half
          ldsm_x4(af[i], smem_u32(sA + swz<BK>(mb + (lane & 15), kk + (lane >> 4) * 8)));
        } else {  // [k][m]: matrix q = lane/8 covers m + (q&1)·8, k + (q>>1)·8
          const int q = lane >> 3;
          ldsm_x4_trans(af[i], smem_u32(sA + swz<BM>(kk + (lane & 7) + (q >> 1) * 8, mb + (q & 1) * 8)));
        }
      }
#pragma unroll
      for (int j = 0; j < NI / 2; j++) {
        const int nb = wn * WN + j * 16;
        const int q = lane >> 3;
        uint32_t r[4];
        if (TB) {  // [n][k]: matrix q covers n + (q>>1)·8, k + (q&1)·8
          ldsm_x4(r, smem_u32(sB + swz<BK>(nb + (lane & 7) + (q >> 1) * 8, kk + (q & 1) * 8)));
        } else {  // [k][n]: matrix q covers k + (q&1)·8, n + (q>>1)·8
          ldsm_x4_trans(r, smem_u32(sB + swz<BN>(kk + (lane & 7) + (q & 1) * 8, nb + (q >> 1) * 8)));
        }
        bfr[2 * j][0] = r[0];
        bfr[2 * j][1] = r[1];
        bfr[2 * j + 1][0] = r[2];
        bfr[2 * j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++) mma_16816(acc[i][j], af[i], bfr[j][0], bfr[j][1]);
    }
  }
  cp_async_wait<0>();

  // Epilogue straight from the accumulators: thread (g = lane/4, t = lane%4) holds rows g, g+8 and
  // columns 2t, 2t+1 of each 16x8 tile; a quad writes 32 contiguous bytes of a row.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < NI; j++) {
      const int64_t row = m0 + wm * WM + i * 16 + g, col = n0 + wn * WN + j * 8 + 2 * t;
      store_pair(a, row, col, acc[i][j][0], acc[i][j][1]);
      store_pair(a, row + 8, col, acc[i][j][2], acc[i][j][3]);
    }
}

// ------------------------------------------------------------------------------------------------------
// 1. wgmma + TMA bf16 kernel (sm_90a)
// ------------------------------------------------------------------------------------------------------
#ifdef AD_SM90A
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
// The producer's arrival: one arrive plus the number of bytes the copies will deliver.
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the barrier's phase with this parity has completed. A lost arrival would hang the whole
// process; after 10 s of waiting (legitimate waits are microseconds) the kernel traps instead, which the
// host sees as an error at its next synchronisation.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_u32(bar);
  uint64_t t0 = 0;
  for (uint32_t spins = 1;; spins++) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
    if (done) return;
    if ((spins & 1023) == 0) {
      uint64_t now;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
      if (t0 == 0) t0 = now;
      else if (now - t0 > 10000000000ull) __trap();
    }
  }
}
// 2-D bulk tensor copy global -> shared (box given by the tensor map), completing on bar.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c_inner, int c_outer,
                                            uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c_inner), "r"(c_outer), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator registers while wgmma owns them.
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle (the layout TMA's SWIZZLE_128B writes; tiles are
// 1024-byte aligned). K-major tiles (rows of 64 k = 128 B): SBO = 1024 (8 rows), LBO unused; stepping 16
// k inside the 128-byte row adds 32 B to the start address. MN-major tiles (rows of 64 m or n = 128 B,
// one row per k): LBO = distance between 64-wide MN blocks, SBO = 1024 (8 k rows); a 16-k step is 2048 B.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
         ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

// wgmma.mma_async m64nNk16, f32 += bf16·bf16, A and B from shared memory (descriptors), scale-d = 1.
// TA / TB select the MN-major ("transposed") layouts. Operand lists generated (one register per output).
template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, %130, %131;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "n"(TA), "n"(TB));
}

template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n192k16(float (&d)[96], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
      "}, %96, %97, p, 1, 1, %98, %99;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(da), "l"(db), "n"(TA), "n"(TB));
}

template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, %66, %67;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "n"(TA), "n"(TB));
}

#endif  // AD_SM90A

template <int BN>
struct WgmmaOp;
#ifdef AD_SM90A
template <>
struct WgmmaOp<256> {
  template <int TA, int TB>
  static __device__ __forceinline__ void run(float (&d)[128], uint64_t da, uint64_t db) {
    wgmma_m64n256k16<TA, TB>(d, da, db);
  }
};
template <>
struct WgmmaOp<192> {
  template <int TA, int TB>
  static __device__ __forceinline__ void run(float (&d)[96], uint64_t da, uint64_t db) {
    wgmma_m64n192k16<TA, TB>(d, da, db);
  }
};
template <>
struct WgmmaOp<128> {
  template <int TA, int TB>
  static __device__ __forceinline__ void run(float (&d)[64], uint64_t da, uint64_t db) {
    wgmma_m64n128k16<TA, TB>(d, da, db);
  }
};
#endif

constexpr int kWgBM = 128, kWgBK = 64, kWgThreads = 384;
template <int BN, int STAGES>
constexpr int wgmma_smem_bytes() {
  return STAGES * (kWgBM * kWgBK * 2 + BN * kWgBK * 2) + 1024;  // + slack to align the ring to 1024 B
}

// Block tile 128 x BN x 64; warpgroup 0 produces (TMA), warpgroups 1-2 consume (64 rows each).
// Shared stage layout (each 64-element box row is 128 B, boxes 8 KB, 128B-swizzled by TMA):
//   A: TA ? two boxes [64 k][64 m] (m 0-63, 64-127) : one box [128 m][64 k]   -> consumer c at +c·8 KB
//   B: TB ? one box [BN n][64 k] : BN/64 boxes [64 k][64 n]
// SWAP_MN swaps LBO/SBO of the MN-major descriptors: a probe variant for the test program only.
template <int BN, int STAGES, bool TA, bool TB, bool SWAP_MN>
__global__ void __launch_bounds__(kWgThreads, 1)
    gemm_bf16_wgmma_kernel(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB,
                           GemmArgs a) {
#ifdef AD_SM90A
  constexpr int BM = kWgBM, BK = kWgBK;
  constexpr uint32_t A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
  extern __shared__ __align__(1024) uint8_t smem_wg[];
  __shared__ __align__(8) uint64_t full_bar[STAGES], empty_bar[STAGES];
  uint8_t* smem = smem_wg + ((1024 - (smem_u32(smem_wg) & 1023)) & 1023);

  const int64_t tiles_m = ceil_div(a.M, BM), tiles_n = ceil_div(a.N, BN);
  int64_t tm, tn;
  tile_coords(blockIdx.x, tiles_m, tiles_n, tm, tn);
  const int m0 = (int)(tm * BM), n0 = (int)(tn * BN);
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; s++) {
      mbar_init(&full_bar[s], 1);   // the producer's expect_tx arrival (+ the copies' bytes)
      mbar_init(&empty_bar[s], 2);  // one arrival per consumer warpgroup
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  const int KT = (int)ceil_div(a.K, BK);

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (threadIdx.x == 0) {
      for (int kt = 0; kt < KT; kt++) {
        const int s = kt % STAGES;
        if (kt >= STAGES) mbar_wait(&empty_bar[s], ((kt / STAGES) - 1) & 1);
        uint8_t* sA = smem + s * STAGE_BYTES;
        uint8_t* sB = sA + A_BYTES;
        mbar_expect_tx(&full_bar[s], STAGE_BYTES);  // out-of-range parts of a box still count (zero-filled)
        const int k0 = kt * BK;
        if (!TA) {
          tma_load_2d(sA, &tmA, k0, m0, &full_bar[s]);
        } else {
          tma_load_2d(sA, &tmA, m0, k0, &full_bar[s]);
          tma_load_2d(sA + 8192, &tmA, m0 + 64, k0, &full_bar[s]);
        }
        if (TB) {
          tma_load_2d(sB, &tmB, k0, n0, &full_bar[s]);
        } else {
#pragma unroll
          for (int j = 0; j < BN / 64; j++) tma_load_2d(sB + j * 8192, &tmB, n0 + 64 * j, k0, &full_bar[s]);
        }
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int c = wg - 1;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.f;
    for (int kt = 0; kt < KT; kt++) {
      const int s = kt % STAGES;
      mbar_wait(&full_bar[s], (kt / STAGES) & 1);
      const uint32_t a_base = smem_u32(smem + s * STAGE_BYTES) + c * 8192;
      const uint32_t b_base = smem_u32(smem + s * STAGE_BYTES + A_BYTES);
      fence_regs(acc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) {
        // MN-major: LBO = 8 KB (next 64-wide MN box), SBO = 1 KB (next 8 k rows); SWAP_MN probes the reverse.
        constexpr uint32_t LBO = SWAP_MN ? 1024 : 8192, SBO = SWAP_MN ? 8192 : 1024;
        const uint64_t da = TA ? smem_desc(a_base + kk * 2048, LBO, SBO) : smem_desc(a_base + kk * 32, 16, 1024);
        const uint64_t db = TB ? smem_desc(b_base + kk * 32, 16, 1024) : smem_desc(b_base + kk * 2048, LBO, SBO);
        WgmmaOp<BN>::template run<TA ? 1 : 0, TB ? 0 : 1>(acc, da, db);
      }
      wgmma_commit();
      fence_regs(acc);
      // Keep this k-tile's wgmmas in flight; the previous tile's are done, so its stage can be refilled.
      wgmma_wait<1>();
      fence_regs(acc);
      if (kt > 0 && threadIdx.x % 128 == 0) mbar_arrive(&empty_bar[(kt - 1) % STAGES]);
    }
    wgmma_wait<0>();
    fence_regs(acc);
    // Accumulator layout of m64nN: warp w of the warpgroup owns rows 16w..16w+15; for each 8-column
    // block j, acc[4j..4j+3] = (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1) with g = lane/4, t = lane%4.
    const int lt = threadIdx.x % 128, w = lt / 32, lane = lt % 32, g = lane / 4, t = lane % 4;
    const int64_t row = (int64_t)m0 + c * 64 + w * 16 + g;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
      const int64_t col = (int64_t)n0 + j * 8 + 2 * t;
      store_pair(a, row, col, acc[4 * j], acc[4 * j + 1]);
      store_pair(a, row + 8, col, acc[4 * j + 2], acc[4 * j + 3]);
    }
  }
#endif  // AD_SM90A
}

// Writes 1 when this module's code for the current device is sm_90a (so the kernels above are real).
__global__ void probe_sm90a_kernel(int* out) {
#ifdef AD_SM90A
  *out = 1;
#else
  *out = 0;
#endif
}

// ------------------------------------------------------------------------------------------------------
// 4. Split-K for skinny products (both dtypes)
// ------------------------------------------------------------------------------------------------------
// Weight gradients of adapters are skinny: LoRA's dA = dHᵀ·X is 8 x 768 over K = 4096 tokens, a bottleneck's
// 48 x 768. The kernels above give such a product 6 output tiles, so 6 of 132 SMs each walk all of K. Here the
// grid's z dimension cuts K into chunks; each block computes a 64x64 tile over its chunk (CUDA-core FFMA,
// 4x4 outputs per thread, operands converted to f32 as they are staged) and writes it to its own slice of a
// workspace; a second kernel sums the slices in a fixed order (deterministic, unlike atomics) and applies
// alpha / beta. With one chunk the tile kernel writes C itself.
constexpr int kSkBM = 64, kSkBN = 64, kSkBK = 16;

template <typename T>
__device__ __forceinline__ float sk_load(const T* p, int64_t i) {
  if constexpr (sizeof(T) == 2) return __uint_as_float((uint32_t)reinterpret_cast<const uint16_t*>(p)[i] << 16);
  else return p[i];
}

template <typename T, bool TA, bool TB>
__global__ void __launch_bounds__(256) gemm_splitk_kernel(GemmArgs a, int64_t kchunk, float* ws) {
  __shared__ float As[kSkBK][kSkBM + 4];
  __shared__ float Bs[kSkBK][kSkBN + 4];
  const T* A = static_cast<const T*>(a.A);
  const T* B = static_cast<const T*>(a.B);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = (int64_t)blockIdx.x * kSkBM, n0 = (int64_t)blockIdx.y * kSkBN;
  const int64_t kb = (int64_t)blockIdx.z * kchunk, ke = min(a.K, kb + kchunk);
  float acc[4][4] = {};
  for (int64_t k0 = kb; k0 < ke; k0 += kSkBK) {
    // 64x16 of op(A) and 16x64 of op(B), four elements per thread; consecutive threads walk the stored rows
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int e = tid + 256 * q;
      const int mm = TA ? e % kSkBM : e / kSkBK, ka = TA ? e / kSkBM : e % kSkBK;
      const int64_t gm = m0 + mm, gka = k0 + ka;
      As[ka][mm] = (gm < a.M && gka < ke) ? sk_load(A, TA ? gka * a.lda + gm : gm * a.lda + gka) : 0.f;
      const int nn = TB ? e / kSkBK : e % kSkBN, kb2 = TB ? e % kSkBK : e / kSkBN;
      const int64_t gn = n0 + nn, gkb = k0 + kb2;
      Bs[kb2][nn] = (gn < a.N && gkb < ke) ? sk_load(B, TB ? gn * a.ldb + gkb : gkb * a.ldb + gn) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSkBK; kk++) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i], bv[i] = Bs[kk][tx + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= a.M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= a.N) continue;
      if (ws) ws[((int64_t)blockIdx.z * a.M + m) * a.N + n] = acc[i][j];
      else store_one(a, m, n, acc[i][j]);
    }
  }
}

__global__ void splitk_reduce_kernel(GemmArgs a, const float* ws, int splits) {
  const int64_t mn = a.M * a.N;
  AD_GRID_FOR(idx, mn) {
    float s = 0.f;
    for (int z = 0; z < splits; z++) s += ws[z * mn + idx];
    store_one(a, idx / a.N, idx % a.N, s);
  }
}

// ------------------------------------------------------------------------------------------------------
// Host side: validation, variant table, dispatch
// ------------------------------------------------------------------------------------------------------

struct DeviceInfo {
  int sms = 0;
  int wgmma = -1;  // -1 unknown, 0 / 1
};
std::mutex g_dev_mu;
DeviceInfo g_dev[64];

int current_device_info(DeviceInfo& out) {
  int dev = 0;
  AD_CUDA_TRY(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return (int)cudaErrorInvalidDevice;
  std::lock_guard<std::mutex> lock(g_dev_mu);
  DeviceInfo& d = g_dev[dev];
  if (d.sms == 0) AD_CUDA_TRY(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  if (d.wgmma < 0) {
    int major = 0, minor = 0;
    AD_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    AD_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    d.wgmma = 0;
    const char* off = std::getenv("ADAPTERS_CUDA_DISABLE_WGMMA");  // kill switch: mma.sync kernels only
    if (major == 9 && minor == 0 && !(off && *off && std::strcmp(off, "0") != 0)) {
      int* flag = nullptr;
      int host = 0;
      AD_CUDA_TRY(cudaMalloc(&flag, sizeof(int)));
      probe_sm90a_kernel<<<1, 1>>>(flag);
      cudaError_t e = cudaGetLastError();
      if (e == cudaSuccess) e = cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost);
      cudaFree(flag);
      if (e != cudaSuccess) return (int)e;
      d.wgmma = host == 1 ? 1 : 0;
    }
  }
  out = d;
  return 0;
}

// BLAS-style argument checks; *nothing = true when there is no work (M or N is 0).
int validate(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, const void* B,
             int64_t ldb, const void* C, int64_t ldc, bool* nothing) {
  *nothing = false;
  if (M < 0 || N < 0 || K < 0) return (int)cudaErrorInvalidValue;
  if (M == 0 || N == 0) {
    *nothing = true;
    return 0;
  }
  const int64_t arow = ta ? M : K, brow = tb ? K : N;
  if (lda < std::max<int64_t>(1, arow) || ldb < std::max<int64_t>(1, brow) || ldc < std::max<int64_t>(1, N))
    return (int)cudaErrorInvalidValue;
  if (!C || (K > 0 && (!A || !B))) return (int)cudaErrorInvalidValue;
  return 0;
}

GemmArgs make_args(int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda, const void* B,
                   int64_t ldb, float beta, float* C, int64_t ldc) {
  GemmArgs a;
  a.M = M, a.N = N, a.K = K, a.alpha = alpha, a.beta = beta;
  a.A = A, a.lda = lda, a.B = B, a.ldb = ldb, a.C = C, a.ldc = ldc;
  a.c_vec2 = (ldc % 2 == 0 && reinterpret_cast<uintptr_t>(C) % 8 == 0) ? 1 : 0;
  a.Cb = nullptr;
  return a;
}

int launch_scale(const GemmArgs& a, cudaStream_t s) {
  const int64_t total = a.M * a.N;
  const int blocks = (int)std::min<int64_t>(ceil_div(total, 256), 4096);
  scale_c_kernel<<<blocks, 256, 0, s>>>(a);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}

int64_t tile_count(int64_t M, int64_t N, int bm, int bn) { return ceil_div(M, bm) * ceil_div(N, bn); }

// Raises a kernel's dynamic shared-memory limit once per device (the call costs about a microsecond, which
// matters next to a 10 µs GEMM). `done` is one static bit mask per kernel instantiation.
template <class Kernel>
int set_smem_limit(Kernel kern, int bytes, std::atomic<uint64_t>& done) {
  int dev = 0;
  AD_CUDA_TRY(cudaGetDevice(&dev));
  const uint64_t bit = uint64_t(1) << (dev & 63);
  if (done.load(std::memory_order_acquire) & bit) return 0;
  AD_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.fetch_or(bit, std::memory_order_acq_rel);
  return 0;
}

// ---- split-K launches ----
// Chunks of K for a skinny product: about two blocks per SM, each chunk at least 256 long.
int64_t splitk_splits(const GemmArgs& a, int sms) {
  const int64_t tiles = tile_count(a.M, a.N, kSkBM, kSkBN);
  return std::max<int64_t>(1, std::min(ceil_div(2 * (int64_t)sms, tiles), a.K / 256));
}
// Whether the automatic choice takes split-K: fewer 128x128 output tiles than half the SMs and a long K. In bf16
// only when a side is at most 64 (LoRA ranks, bottleneck widths): for wider products the tensor-core kernels win
// even with idle SMs.
bool splitk_wanted(const GemmArgs& a, int sms, bool bf16) {
  if (a.K < 512 || tile_count(a.M, a.N, 128, 128) * 2 >= sms) return false;
  if (bf16 && std::min(a.M, a.N) > 64) return false;
  return splitk_splits(a, sms) > 1;
}

// Runs launch(ws) — the tile kernel over `splits` chunks of K — with a workspace of `splits` M x N partial products
// when splits > 1 (null: the kernel writes C itself), then sums the partials into C in a fixed order.
template <class Launch>
int run_split(const GemmArgs& a, int64_t splits, cudaStream_t s, Launch launch) {
  void* ws = nullptr;
  if (splits > 1) AD_CUDA_TRY((cudaError_t)adapters_cuda_malloc(&ws, (size_t)(splits * a.M * a.N) * sizeof(float)));
  float* w = static_cast<float*>(ws);
  launch(w);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && w) {
    splitk_reduce_kernel<<<ad_cuda::grid_for(a.M * a.N, 256), 256, 0, s>>>(a, w, (int)splits);
    e = cudaGetLastError();
  }
  const int frc = ws ? adapters_cuda_free(ws) : 0;  // stream-ordered reuse (memory.cu's contract)
  return e != cudaSuccess ? (int)e : frc;
}

template <typename T>
int launch_splitk(const GemmArgs& a, bool ta, bool tb, int sms, cudaStream_t s) {
  const int64_t tm = ceil_div(a.M, kSkBM), tn = ceil_div(a.N, kSkBN);
  if (tm > 0x7fffffff || tn > 65535) return (int)cudaErrorNotSupported;
  const int64_t kchunk = ceil_div(ceil_div(a.K, splitk_splits(a, sms)), kSkBK) * kSkBK;
  const int64_t splits = ceil_div(a.K, kchunk);
  const dim3 grid((unsigned)tm, (unsigned)tn, (unsigned)splits);
  return run_split(a, splits, s, [&](float* w) {
    if (!ta && !tb) gemm_splitk_kernel<T, false, false><<<grid, 256, 0, s>>>(a, kchunk, w);
    else if (!ta && tb) gemm_splitk_kernel<T, false, true><<<grid, 256, 0, s>>>(a, kchunk, w);
    else if (ta && !tb) gemm_splitk_kernel<T, true, false><<<grid, 256, 0, s>>>(a, kchunk, w);
    else gemm_splitk_kernel<T, true, true><<<grid, 256, 0, s>>>(a, kchunk, w);
  });
}

// Split count for the f32 128x128 kernel (two blocks per SM): a product with few tiles runs part of a wave; cutting
// K into s chunks multiplies the tiles by s at the price of a sum over s partial products. Minimises a simple time
// model (waves x chunk length, plus the partials' bytes at ~3 TB/s against ~0.17 TFLOP/s per block); chunks of at
// least 256.
int64_t f32_splits(const GemmArgs& a, int sms) {
  const int64_t tiles = tile_count(a.M, a.N, 128, 128), slots = 2 * (int64_t)sms;
  int64_t best = 1;
  double best_t = 0;
  for (int64_t sp = 1; sp <= 16; sp++) {
    const int64_t chunk = ceil_div(ceil_div(a.K, sp), 16) * 16;
    if (sp > 1 && (chunk < 256 || ceil_div(a.K, chunk) != sp)) break;
    const double t = (double)ceil_div(tiles * sp, slots) * 2.0 * 128 * 128 * (double)chunk / 0.17e12 +
                     (sp > 1 ? (double)(sp + 1) * a.M * a.N * 4 / 3e12 : 0);
    if (sp == 1 || t < 0.95 * best_t) best = sp, best_t = t;
  }
  return best;
}

template <class T>
struct TileTag {
  using type = T;
};

// The 128x128x16 f32 kernel with FFMA (tc 0) or 3xTF32 tiles (tc 1: two blocks per SM; tc 2: one), or 1xTF32 tiles
// (tc 3), K split `splits` ways.
int launch_f32_k16(const GemmArgs& a, bool ta, bool tb, int64_t splits, int tc, cudaStream_t s, int64_t batch) {
  const int64_t tiles = tile_count(a.M, a.N, 128, 128);
  if (tiles > 0x7fffffff || batch > 65535 || (batch > 1 && splits > 1)) return (int)cudaErrorInvalidConfiguration;
  // float4 loads need 16-byte aligned rows of both operands (and of every batch item's)
  const int vec = ((reinterpret_cast<uintptr_t>(a.A) | reinterpret_cast<uintptr_t>(a.B)) % 16 == 0) && a.lda % 4 == 0 && a.ldb % 4 == 0 &&
                  a.sa % 4 == 0 && a.sb % 4 == 0;
  const int64_t kchunk = ceil_div(ceil_div(a.K, std::max<int64_t>(1, splits)), 16) * 16;
  splits = ceil_div(a.K, kchunk);
  const dim3 grid((unsigned)tiles, (unsigned)batch, (unsigned)splits);
  auto go = [&](auto tag, auto minb, float* w) {
    using Tile = typename decltype(tag)::type;
    constexpr int MB = decltype(minb)::value;
    if (!ta && !tb) gemm_f32_k16_kernel<false, false, Tile, MB><<<grid, 256, 0, s>>>(a, vec, kchunk, w);
    else if (!ta && tb) gemm_f32_k16_kernel<false, true, Tile, MB><<<grid, 256, 0, s>>>(a, vec, kchunk, w);
    else if (ta && !tb) gemm_f32_k16_kernel<true, false, Tile, MB><<<grid, 256, 0, s>>>(a, vec, kchunk, w);
    else gemm_f32_k16_kernel<true, true, Tile, MB><<<grid, 256, 0, s>>>(a, vec, kchunk, w);
  };
  return run_split(a, splits, s, [&](float* w) {
    if (tc == 1) go(TileTag<Tf32x3Tile>{}, std::integral_constant<int, 2>{}, w);
    else if (tc == 3) go(TileTag<Tf32x1Tile>{}, std::integral_constant<int, 2>{}, w);
    else if (tc == 2) go(TileTag<Tf32x3Tile>{}, std::integral_constant<int, 1>{}, w);
    else go(TileTag<SimtTile>{}, std::integral_constant<int, 2>{}, w);
  });
}

// One layout of the cp.async-pipelined 3xTF32 kernel (gemm_f32.cuh): its shared-memory limit raised once per device
// (a static mask per <TA, TB>).
template <bool TA, bool TB>
int launch_tf32_pipe_t(const GemmArgs& a, dim3 grid, int64_t kchunk, float* w, cudaStream_t s) {
  auto kern = gemm_tf32_pipe_kernel<TA, TB, 3>;
  constexpr int bytes = pipe_smem_bytes<TA, TB>();
  static std::atomic<uint64_t> attr_done{0};
  if (int e = set_smem_limit(kern, bytes, attr_done)) return e;
  kern<<<grid, 256, bytes, s>>>(a, kchunk, w);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}
// The pipelined kernel, K split `splits` ways; operands it cannot take (f32_pipe_ok) run the 128x128x16 3xTF32 kernel.
int launch_tf32_pipe(const GemmArgs& a, bool ta, bool tb, int64_t splits, cudaStream_t s) {
  if (!f32_pipe_ok(a, ta, tb)) return launch_f32_k16(a, ta, tb, splits, 1, s, 1);
  const int64_t tiles = tile_count(a.M, a.N, 128, 128);
  if (tiles > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
  const int64_t kchunk = ceil_div(ceil_div(a.K, std::max<int64_t>(1, splits)), kPipeBK) * kPipeBK;
  splits = ceil_div(a.K, kchunk);
  const dim3 grid((unsigned)tiles, 1, (unsigned)splits);
  int rc = 0;
  const int src = run_split(a, splits, s, [&](float* w) {
    if (!ta && !tb) rc = launch_tf32_pipe_t<false, false>(a, grid, kchunk, w, s);
    else if (!ta && tb) rc = launch_tf32_pipe_t<false, true>(a, grid, kchunk, w, s);
    else if (ta && !tb) rc = launch_tf32_pipe_t<true, false>(a, grid, kchunk, w, s);
    else rc = launch_tf32_pipe_t<true, true>(a, grid, kchunk, w, s);
  });
  return rc ? rc : src;
}

// ---- mma.sync launches ----
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, bool TA, bool TB, bool ALIGNED>
int launch_mma_t(const GemmArgs& a, cudaStream_t s) {
  constexpr int smem = STAGES * (BM + BN) * 64 * 2;
  auto kern = gemm_bf16_mma_kernel<BM, BN, WARPS_M, WARPS_N, STAGES, TA, TB, ALIGNED>;
  static std::atomic<uint64_t> attr_done{0};
  if (int e = set_smem_limit(kern, smem, attr_done)) return e;
  const int64_t tiles = tile_count(a.M, a.N, BM, BN);
  if (tiles > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
  kern<<<(unsigned)tiles, WARPS_M * WARPS_N * 32, smem, s>>>(a);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}
template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, bool ALIGNED>
int launch_mma(const GemmArgs& a, bool ta, bool tb, cudaStream_t s) {
  if (!ta && !tb) return launch_mma_t<BM, BN, WARPS_M, WARPS_N, STAGES, false, false, ALIGNED>(a, s);
  if (!ta && tb) return launch_mma_t<BM, BN, WARPS_M, WARPS_N, STAGES, false, true, ALIGNED>(a, s);
  if (ta && !tb) return launch_mma_t<BM, BN, WARPS_M, WARPS_N, STAGES, true, false, ALIGNED>(a, s);
  return launch_mma_t<BM, BN, WARPS_M, WARPS_N, STAGES, true, true, ALIGNED>(a, s);
}

// ---- wgmma launches ----
using EncodeTiledFn = PFN_cuTensorMapEncodeTiled_v12000;
EncodeTiledFn tensor_map_encoder() {
  static EncodeTiledFn fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) ==
            cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiledFn>(p);
    else
      (void)cudaGetLastError();
  });
  return fn;
}

// A row-major bf16 matrix (outer x inner, leading dim ld) as a TMA map with box {64, box_outer}, 128B swizzle.
int make_tensor_map(CUtensorMap* map, const void* base, int64_t inner, int64_t outer, int64_t ld, int box_outer) {
  EncodeTiledFn enc = tensor_map_encoder();
  if (!enc) return (int)cudaErrorNotSupported;
  cuuint64_t dims[2] = {(cuuint64_t)inner, (cuuint64_t)outer};
  cuuint64_t strides[1] = {(cuuint64_t)ld * 2};
  cuuint32_t box[2] = {64, (cuuint32_t)box_outer};
  cuuint32_t elem_strides[2] = {1, 1};
  CUresult r = enc(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box,
                   elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? 0 : (int)cudaErrorInvalidValue;
}

bool wgmma_operands_ok(const GemmArgs& a) {
  const uint64_t pa = reinterpret_cast<uintptr_t>(a.A), pb = reinterpret_cast<uintptr_t>(a.B);
  return pa % 16 == 0 && pb % 16 == 0 && a.lda % 8 == 0 && a.ldb % 8 == 0 && a.M < (1ll << 31) &&
         a.N < (1ll << 31) && a.K < (1ll << 31) && a.lda < (1ll << 36) && a.ldb < (1ll << 36);
}

template <int BN, int STAGES, bool TA, bool TB, bool SWAP>
int launch_wgmma_t(const GemmArgs& a, cudaStream_t s) {
  CUtensorMap ma, mb;
  // A: TA ? (K,M): inner M, box {64 m, 64 k} : (M,K): inner K, box {64 k, 128 m}
  int e = TA ? make_tensor_map(&ma, a.A, a.M, a.K, a.lda, 64) : make_tensor_map(&ma, a.A, a.K, a.M, a.lda, kWgBM);
  if (e) return e;
  // B: TB ? (N,K): inner K, box {64 k, BN n} : (K,N): inner N, box {64 n, 64 k}
  e = TB ? make_tensor_map(&mb, a.B, a.K, a.N, a.ldb, BN) : make_tensor_map(&mb, a.B, a.N, a.K, a.ldb, 64);
  if (e) return e;
  constexpr int smem = wgmma_smem_bytes<BN, STAGES>();
  auto kern = gemm_bf16_wgmma_kernel<BN, STAGES, TA, TB, SWAP>;
  static std::atomic<uint64_t> attr_done{0};
  if (int e = set_smem_limit(kern, smem, attr_done)) return e;
  const int64_t tiles = tile_count(a.M, a.N, kWgBM, BN);
  if (tiles > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
  kern<<<(unsigned)tiles, kWgThreads, smem, s>>>(ma, mb, a);
  AD_CUDA_CHECK_LAUNCH();
  return 0;
}
template <int BN, int STAGES, bool SWAP>
int launch_wgmma(const GemmArgs& a, bool ta, bool tb, cudaStream_t s) {
  if (!ta && !tb) return launch_wgmma_t<BN, STAGES, false, false, SWAP>(a, s);
  if (!ta && tb) return launch_wgmma_t<BN, STAGES, false, true, SWAP>(a, s);
  if (ta && !tb) return launch_wgmma_t<BN, STAGES, true, false, SWAP>(a, s);
  return launch_wgmma_t<BN, STAGES, true, true, SWAP>(a, s);
}

// ---- variant table ----
enum Variant {
  kAuto = 0,
  kMma128x128,
  kMma128x256,
  kMma256x128,
  kMma64x64,
  kMmaUnaligned,
  kWgmma128x256,
  kWgmma128x192,
  kWgmma128x128,
  kWgmma128x256Swap,
  kSplitK,
  kNumVariants
};
const char* const kVariantNames[kNumVariants] = {
    "auto",
    "mma_128x128x64_s3",      // 4 warps (2x2) of 64x64, 96 KB: two blocks per SM
    "mma_128x256x64_s3",      // 8 warps (2x4) of 64x64, 144 KB
    "mma_256x128x64_s3",      // 8 warps (4x2) of 64x64, 144 KB
    "mma_64x64x64_s4",        // 4 warps (2x2) of 32x32, 64 KB: small problems, more blocks
    "mma_128x128x64_generic", // element loads: any ld / alignment
    "wgmma_128x256x64_s4",    // 3 warpgroups, 192 KB ring
    "wgmma_128x192x64_s5",    // 3 warpgroups, 200 KB ring: N = 768 makes 4 column tiles, not 3
    "wgmma_128x128x64_s6",    // 3 warpgroups, 192 KB ring: more tiles for narrow problems
    "wgmma_128x256x64_s4_swapmn",  // probe: LBO/SBO of MN-major descriptors swapped (tests only)
    "simt_splitk_64x64x16",   // skinny products: K cut over the grid's z dimension, CUDA cores
};

bool aligned_for_cp_async(const GemmArgs& a) {
  return reinterpret_cast<uintptr_t>(a.A) % 16 == 0 && reinterpret_cast<uintptr_t>(a.B) % 16 == 0 &&
         a.lda % 8 == 0 && a.ldb % 8 == 0;
}

// Useful fraction of the machine's tile slots over all waves: idle SMs in the last wave and the padding of
// partial tiles both count as waste (one tile per SM at a time).
double fill_efficiency(int64_t M, int64_t N, int bm, int bn, int64_t slots) {
  const int64_t tiles = tile_count(M, N, bm, bn), waves = ceil_div(tiles, slots);
  return (double)M * (double)N / ((double)waves * (double)slots * bm * bn);
}

int choose_variant(const GemmArgs& a, const DeviceInfo& d) {
  if (splitk_wanted(a, d.sms, true)) return kSplitK;
  if (d.wgmma == 1 && wgmma_operands_ok(a) && a.M >= 64 && a.N >= 64 && a.K >= 64) {
    // Narrower tiles do the same work at a lower rate (A is re-read for each column tile, and fewer FLOPs
    // per byte of shared memory): weights 1 / 0.97 / 0.9, guesses to be replaced by measurements.
    const double s256 = fill_efficiency(a.M, a.N, 128, 256, d.sms);
    const double s192 = 0.97 * fill_efficiency(a.M, a.N, 128, 192, d.sms);
    const double s128 = 0.90 * fill_efficiency(a.M, a.N, 128, 128, d.sms);
    if (s256 >= s192 && s256 >= s128) return kWgmma128x256;
    return s192 >= s128 ? kWgmma128x192 : kWgmma128x128;
  }
  if (!aligned_for_cp_async(a)) return kMmaUnaligned;
  if (tile_count(a.M, a.N, 128, 128) < d.sms) return kMma64x64;  // fewer tiles than SMs: smaller tiles
  return kMma128x128;
}

int run_variant(int v, const GemmArgs& a, bool ta, bool tb, cudaStream_t s) {
  switch (v) {
    case kMma128x128:
      return aligned_for_cp_async(a) ? launch_mma<128, 128, 2, 2, 3, true>(a, ta, tb, s) : (int)cudaErrorNotSupported;
    case kMma128x256:
      return aligned_for_cp_async(a) ? launch_mma<128, 256, 2, 4, 3, true>(a, ta, tb, s) : (int)cudaErrorNotSupported;
    case kMma256x128:
      return aligned_for_cp_async(a) ? launch_mma<256, 128, 4, 2, 3, true>(a, ta, tb, s) : (int)cudaErrorNotSupported;
    case kMma64x64:
      return aligned_for_cp_async(a) ? launch_mma<64, 64, 2, 2, 4, true>(a, ta, tb, s) : (int)cudaErrorNotSupported;
    case kMmaUnaligned:
      return launch_mma<128, 128, 2, 2, 3, false>(a, ta, tb, s);
    case kWgmma128x256:
    case kWgmma128x192:
    case kWgmma128x128:
    case kWgmma128x256Swap: {
      DeviceInfo d;
      if (int e = current_device_info(d)) return e;
      if (d.wgmma != 1 || !wgmma_operands_ok(a)) return (int)cudaErrorNotSupported;
      if (v == kWgmma128x256) return launch_wgmma<256, 4, false>(a, ta, tb, s);
      if (v == kWgmma128x192) return launch_wgmma<192, 5, false>(a, ta, tb, s);
      if (v == kWgmma128x128) return launch_wgmma<128, 6, false>(a, ta, tb, s);
      return launch_wgmma<256, 4, true>(a, ta, tb, s);
    }
    case kSplitK: {
      DeviceInfo d;
      if (int e = current_device_info(d)) return e;
      return launch_splitk<uint16_t>(a, ta, tb, d.sms, s);
    }
    default:
      return (int)cudaErrorInvalidValue;
  }
}

// C is f32 (C) or bf16 (Cb non-null, C null)
int gemm_bf16_impl(int variant, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, uint16_t* Cb, int64_t ldc,
                   void* stream) {
  if (variant < 0 || variant >= kNumVariants) return (int)cudaErrorInvalidValue;
  const bool ta = transA != 0, tb = transB != 0;
  bool nothing = false;
  if (int e = validate(ta, tb, M, N, K, A, lda, B, ldb, Cb ? static_cast<const void*>(Cb) : C, ldc, &nothing)) return e;
  if (nothing) return 0;
  GemmArgs a = make_args(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (Cb) a.Cb = Cb, a.c_vec2 = ldc % 2 == 0 && reinterpret_cast<uintptr_t>(Cb) % 4 == 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (K == 0) return launch_scale(a, s);
  if (variant == kAuto) {
    DeviceInfo d;
    if (int e = current_device_info(d)) return e;
    variant = choose_variant(a, d);
  }
  return run_variant(variant, a, ta, tb, s);
}

}  // namespace

extern "C" {

int adapters_cuda_gemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                            int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc,
                            void* stream) {
  return gemm_bf16_impl(kAuto, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, nullptr, ldc, stream);
}

int adapters_cuda_gemm_bf16_out(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                                const uint16_t* B, int64_t ldb, float beta, uint16_t* C, int64_t ldc, void* stream) {
  return gemm_bf16_impl(kAuto, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, nullptr, C, ldc, stream);
}

int adapters_cuda_gemm_bf16_variant(int variant, int transA, int transB, int64_t M, int64_t N, int64_t K,
                                    float alpha, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
                                    float beta, float* C, int64_t ldc, void* stream) {
  return gemm_bf16_impl(variant, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, nullptr, ldc, stream);
}

const char* adapters_cuda_gemm_bf16_variant_name(int variant) {
  return (variant >= 0 && variant < kNumVariants) ? kVariantNames[variant] : "";
}

int adapters_cuda_gemm_bf16_pick(int transA, int transB, int64_t M, int64_t N, int64_t K, const uint16_t* A,
                                 int64_t lda, const uint16_t* B, int64_t ldb) {
  bool nothing = false;
  static float dummy_c;  // validate() wants a C; the pick does not depend on it
  if (int e = validate(transA != 0, transB != 0, M, N, K, A, lda, B, ldb, &dummy_c, std::max<int64_t>(1, N), &nothing))
    return -e;
  if (nothing || K == 0) return 0;
  DeviceInfo d;
  if (int e = current_device_info(d)) return -e;
  return choose_variant(make_args(M, N, K, 1.f, A, lda, B, ldb, 0.f, &dummy_c, std::max<int64_t>(1, N)), d);
}

int adapters_cuda_gemm_has_wgmma(void) {
  DeviceInfo d;
  if (current_device_info(d) != 0) {
    (void)cudaGetLastError();
    return 0;
  }
  return d.wgmma == 1 ? 1 : 0;
}

namespace {
const char* const kF32Variants[] = {"auto", "simt_f32_128x128x8", "simt_f32_128x128x16", "simt_splitk_64x64x16",
                                    "simt_f32_128x128x16_splitk", "tf32x3_128x128x16", "tf32x3_128x128x16_splitk",
                                    "tf32x3_128x128x16_1blk", "tf32x3_128x128x16_1blk_splitk",
                                    "tf32x3_pipe_128x128x32_s3", "tf32x3_pipe_128x128x32_s3_splitk"};
constexpr int kF32NumVariants = 11;

// f32 matmul precision (adapters_cuda_set_f32_matmul_precision): 0 "highest", CUDA-core FFMA, torch's arithmetic
// with TF32 off (the default); 1 "high", 3xTF32 on the tensor cores (~2^-22 of each product, against 2^-24 for one
// f32 rounding; 2-15% faster than FFMA on an H200). -1 until first use, when ADAPTERS_CUDA_F32_GEMM=3xtf32 selects 1.
std::atomic<int> g_f32_precision{-1};
bool f32_on_tensor_cores() {
  int m = g_f32_precision.load(std::memory_order_relaxed);
  if (m < 0) {
    const char* e = std::getenv("ADAPTERS_CUDA_F32_GEMM");
    int want = e && std::strcmp(e, "3xtf32") == 0 ? 1 : 0;
    g_f32_precision.compare_exchange_strong(m, want);
    m = g_f32_precision.load(std::memory_order_relaxed);
  }
  return m == 1;
}

// The variant auto picks: split-K CUDA-core tiles for skinny products, else the 128x128x16 kernel, K split when its
// tiles leave much of a wave idle.
int f32_auto_variant(const GemmArgs& a, const DeviceInfo& d) {
  if (std::min(a.M, a.N) <= 64 && splitk_wanted(a, d.sms, false)) return 3;
  const bool split = f32_splits(a, d.sms) > 1;
  if (f32_on_tensor_cores()) return split ? 6 : 5;
  return split ? 4 : 2;
}
}  // namespace

int adapters_cuda_gemm_f32_variant(int variant, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                                   int64_t ldc, void* stream) {
  if (variant < 0 || variant >= kF32NumVariants) return (int)cudaErrorInvalidValue;
  const bool ta = transA != 0, tb = transB != 0;
  bool nothing = false;
  if (int e = validate(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, &nothing)) return e;
  if (nothing) return 0;
  const GemmArgs a = make_args(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (K == 0) return launch_scale(a, s);
  const int64_t tiles = tile_count(M, N, 128, 128);
  if (tiles > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
  if (variant == 1) {
    if (!ta && !tb) gemm_f32_simt_kernel<false, false><<<(unsigned)tiles, 256, 0, s>>>(a);
    else if (!ta && tb) gemm_f32_simt_kernel<false, true><<<(unsigned)tiles, 256, 0, s>>>(a);
    else if (ta && !tb) gemm_f32_simt_kernel<true, false><<<(unsigned)tiles, 256, 0, s>>>(a);
    else gemm_f32_simt_kernel<true, true><<<(unsigned)tiles, 256, 0, s>>>(a);
    AD_CUDA_CHECK_LAUNCH();
    return 0;
  }
  DeviceInfo d;  // the SM count: auto's choice, split-K and the K splits
  if (int e = current_device_info(d)) return e;
  if (variant == 0) variant = f32_auto_variant(a, d);
  if (variant == 3) return launch_splitk<float>(a, ta, tb, d.sms, s);
  // 128x128 tiles, unsplit / K split (at least two ways when forced): 2 / 4 FFMA, 5 / 6 3xTF32, 7 / 8 3xTF32 with
  // one block per SM, 9 / 10 the pipelined 3xTF32 kernel
  const bool split = variant == 4 || variant == 6 || variant == 8 || variant == 10;
  const int64_t splits = split ? std::max<int64_t>(2, f32_splits(a, d.sms)) : 1;
  if (variant == 9 || variant == 10) return launch_tf32_pipe(a, ta, tb, splits, s);
  const int tc = variant == 5 || variant == 6 ? 1 : variant == 7 || variant == 8 ? 2 : 0;
  return launch_f32_k16(a, ta, tb, splits, tc, s, 1);
}

int adapters_cuda_gemm_f32_pick(int64_t M, int64_t N, int64_t K) {
  DeviceInfo d;
  if (int e = current_device_info(d)) return -e;
  static float dummy;
  return f32_auto_variant(make_args(M, N, K, 1.f, &dummy, 1, &dummy, 1, 0.f, &dummy, 1), d);
}

const char* adapters_cuda_gemm_f32_variant_name(int variant) {
  return variant >= 0 && variant < kF32NumVariants ? kF32Variants[variant] : "";
}

int adapters_cuda_gemm_f32(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                           void* stream) {
  static const int pick = [] {
    const char* e = std::getenv("ADAPTERS_CUDA_F32_VARIANT");  // benchmarking switch: 1 .. 10 forces a kernel
    char* end = nullptr;
    const long v = e ? std::strtol(e, &end, 10) : 0;
    return e && end != e && !*end && v >= 1 && v < kF32NumVariants ? (int)v : 0;
  }();
  return adapters_cuda_gemm_f32_variant(pick, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, stream);
}

int adapters_cuda_set_f32_matmul_precision(int mode) {
  if (mode != 0 && mode != 1) return (int)cudaErrorInvalidValue;
  g_f32_precision.store(mode);
  return 0;
}
int adapters_cuda_get_f32_matmul_precision(void) { return f32_on_tensor_cores() ? 1 : 0; }

int adapters_cuda_gemm_f32_batched(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                                   int64_t strideA, const float* B, int64_t ldb, int64_t strideB, float beta, float* C, int64_t ldc,
                                   int64_t strideC, int64_t batch, int tf32, void* stream) {
  const bool ta = transA != 0, tb = transB != 0;
  bool nothing = false;
  if (batch < 0 || strideA < 0 || strideB < 0 || strideC < 0) return (int)cudaErrorInvalidValue;
  if (batch == 0) return 0;
  if (int e = validate(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, &nothing)) return e;
  if (nothing) return 0;
  GemmArgs a = make_args(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  a.sa = strideA, a.sb = strideB, a.sc = strideC;
  a.c_vec2 = a.c_vec2 && strideC % 2 == 0;
  cudaStream_t s = ad_cuda::as_stream(stream);
  if (K == 0) {  // C = beta·C, item by item
    for (int64_t i = 0; i < batch; i++) {
      GemmArgs ai = a;
      ai.C = C + i * strideC;
      if (int e = launch_scale(ai, s)) return e;
    }
    return 0;
  }
  const int tc = tf32 ? 3 : f32_on_tensor_cores() ? 1 : 0;
  for (int64_t done = 0; done < batch; done += 65535) {  // the grid's y dimension holds 65535 items
    GemmArgs ai = a;
    ai.A = A + done * strideA, ai.B = B + done * strideB, ai.C = C + done * strideC;
    if (int e = launch_f32_k16(ai, ta, tb, 1, tc, s, std::min<int64_t>(65535, batch - done))) return e;
  }
  return 0;
}

}  // extern "C"
