// sgmv.cu — segmented multi-LoRA and multi-bottleneck in single launches: every adapter of a BatchSplit / Parallel / mixed batch is served
// by one shrink and one expand launch forward, and four launches backward, whatever the number of adapters (up to
// ad_sgmv::kMaxAdapters; the adapter table is a kernel parameter). One thread per output element runs sgmv_math.h,
// which the host-side mock shares. For few, large segments the per-segment GEMM path in native/cuda_ops.cpp is used.
#include "adapters_cuda.h"
#include "common.cuh"
#include "sgmv_math.h"

namespace {

constexpr int kThreads = 256;

__global__ void shrink_kernel(ad_sgmv::Table t, const float* x, float* T) { AD_GRID_FOR(e, t.M * t.R) ad_sgmv::shrink_at(e, t, x, T); }
__global__ void expand_kernel(ad_sgmv::Table t, const float* T, float* D) { AD_GRID_FOR(e, t.M * t.O) ad_sgmv::expand_at(e, t, T, D); }
__global__ void gt_kernel(ad_sgmv::Table t, const float* g, float* GT) { AD_GRID_FOR(e, t.M * t.R) ad_sgmv::gt_at(e, t, g, GT); }
__global__ void gx_kernel(ad_sgmv::Table t, const float* GT, float* gx) { AD_GRID_FOR(e, t.M * t.K) ad_sgmv::gx_at(e, t, GT, gx); }
__global__ void da_kernel(ad_sgmv::Table t, const float* GT, const float* x, float* dA) { AD_GRID_FOR(e, t.aoff[t.n]) ad_sgmv::da_at(e, t, GT, x, dA); }
__global__ void db_kernel(ad_sgmv::Table t, const float* g, const float* T, float* dB) { AD_GRID_FOR(e, t.boff[t.n]) ad_sgmv::db_at(e, t, g, T, dB); }

__global__ void bn_pre_kernel(ad_sgmv::BnTable t, const float* h, float* pre) { AD_GRID_FOR(e, t.M * t.D) ad_sgmv::bn_pre_at(e, t, h, pre); }
__global__ void bn_out_kernel(ad_sgmv::BnTable t, const float* pre, const float* res, float* y) { AD_GRID_FOR(e, t.M * t.C) ad_sgmv::bn_out_at(e, t, pre, res, y); }
__global__ void bn_gpre_kernel(ad_sgmv::BnTable t, const float* g, const float* pre, float* gp) { AD_GRID_FOR(e, t.M * t.D) ad_sgmv::bn_gpre_at(e, t, g, pre, gp); }
__global__ void bn_gh_kernel(ad_sgmv::BnTable t, const float* gp, float* gh) { AD_GRID_FOR(e, t.M * t.C) ad_sgmv::bn_gh_at(e, t, gp, gh); }
__global__ void bn_dwd_kernel(ad_sgmv::BnTable t, const float* gp, const float* h, float* d) { AD_GRID_FOR(e, t.woff[t.n]) ad_sgmv::bn_dwd_at(e, t, gp, h, d); }
__global__ void bn_dwu_kernel(ad_sgmv::BnTable t, const float* g, const float* pre, float* d) { AD_GRID_FOR(e, t.woff[t.n]) ad_sgmv::bn_dwu_at(e, t, g, pre, d); }
__global__ void bn_dbd_kernel(ad_sgmv::BnTable t, const float* gp, float* d) { AD_GRID_FOR(e, t.doff[t.n]) ad_sgmv::bn_dbd_at(e, t, gp, d); }
__global__ void bn_dbu_kernel(ad_sgmv::BnTable t, const float* g, float* d) { AD_GRID_FOR(e, t.n * t.C) ad_sgmv::bn_dbu_at(e, t, g, d); }


}  // namespace

extern "C" {

int adapters_cuda_lora_sgmv_f32(const adapters_cuda_sgmv* table, const float* x, float* t, float* d, void* stream) {
  const ad_sgmv::Table* tb = table;
  if (!ad_sgmv::table_ok(tb)) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_FOR(tb->M * tb->R, kThreads, shrink_kernel, *tb, x, t);
  AD_LAUNCH_FOR(tb->M * tb->O, kThreads, expand_kernel, *tb, t, d);
  return 0;
}

int adapters_cuda_lora_sgmv_backward_f32(const adapters_cuda_sgmv* table, const float* g, const float* x, const float* t, float* gt,
                                         float* gx, float* dA, float* dB, void* stream) {
  const ad_sgmv::Table* tb = table;
  if (!ad_sgmv::table_ok(tb)) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_FOR(tb->M * tb->R, kThreads, gt_kernel, *tb, g, gt);
  AD_LAUNCH_FOR(tb->M * tb->K, kThreads, gx_kernel, *tb, gt, gx);
  AD_LAUNCH_FOR(tb->aoff[tb->n], kThreads, da_kernel, *tb, gt, x, dA);
  AD_LAUNCH_FOR(tb->boff[tb->n], kThreads, db_kernel, *tb, g, t, dB);
  return 0;
}

int adapters_cuda_bottleneck_sgmv_f32(const adapters_cuda_bn_sgmv* tb, const float* h, const float* res, float* pre, float* y, void* stream) {
  if (!ad_sgmv::bn_table_ok(tb)) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_FOR(tb->M * tb->D, kThreads, bn_pre_kernel, *tb, h, pre);
  AD_LAUNCH_FOR(tb->M * tb->C, kThreads, bn_out_kernel, *tb, pre, res, y);
  return 0;
}

int adapters_cuda_bottleneck_sgmv_backward_f32(const adapters_cuda_bn_sgmv* tb, const float* g, const float* h, const float* pre, float* gpre,
                                               float* gh, float* dWd, float* dbd, float* dWu, float* dbu, void* stream) {
  if (!ad_sgmv::bn_table_ok(tb)) return (int)cudaErrorInvalidValue;
  AD_LAUNCH_FOR(tb->M * tb->D, kThreads, bn_gpre_kernel, *tb, g, pre, gpre);
  AD_LAUNCH_FOR(tb->M * tb->C, kThreads, bn_gh_kernel, *tb, gpre, gh);
  AD_LAUNCH_FOR(tb->woff[tb->n], kThreads, bn_dwd_kernel, *tb, gpre, h, dWd);
  AD_LAUNCH_FOR(tb->woff[tb->n], kThreads, bn_dwu_kernel, *tb, g, pre, dWu);
  AD_LAUNCH_FOR(tb->doff[tb->n], kThreads, bn_dbd_kernel, *tb, gpre, dbd);
  AD_LAUNCH_FOR(tb->n * tb->C, kThreads, bn_dbu_kernel, *tb, g, dbu);
  return 0;
}

}  // extern "C"
