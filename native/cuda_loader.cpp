// cuda_loader.cpp — finds libadapters_cuda.so next to the addon (or via ADAPTERS_CUDA_LIB) and dlopens it
// at run time, so one CPU build works with or without CUDA. hasCuda() is true only when the library
// loads, has every entry point this addon uses, and reports at least one device.
#include "cuda_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "tensor.h"

namespace ad {
namespace {
struct CudaLib {
  void* handle = nullptr;
  int (*device_count)() = nullptr;
  CudaApi api{};
  bool complete = false;
  std::string error;
};

template <class F>
bool sym(CudaLib& l, F& slot, const char* name) {
  slot = reinterpret_cast<F>(dlsym(l.handle, name));
  if (!slot && l.error.empty()) l.error = std::string("libadapters_cuda.so lacks ") + name;
  return slot != nullptr;
}

CudaLib& lib() {
  static CudaLib l;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string path;
    if (const char* e = std::getenv("ADAPTERS_CUDA_LIB")) path = e;
    else {
      Dl_info info;
      if (dladdr((void*)&lib, &info) && info.dli_fname) {
        path = info.dli_fname;
        auto slash = path.rfind('/');
        path = (slash == std::string::npos ? std::string(".") : path.substr(0, slash)) + "/libadapters_cuda.so";
      }
    }
    l.handle = path.empty() ? nullptr : dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!l.handle) {
      const char* err = dlerror();
      l.error = err ? err : "libadapters_cuda.so not found";
      return;
    }
    bool ok = sym(l, l.device_count, "adapters_cuda_device_count");
    CudaApi& a = l.api;
    ok &= sym(l, a.error_string, "adapters_cuda_error_string");
    ok &= sym(l, a.device_name, "adapters_cuda_device_name");
    ok &= sym(l, a.malloc, "adapters_cuda_malloc");
    ok &= sym(l, a.free, "adapters_cuda_free");
    ok &= sym(l, a.empty_cache, "adapters_cuda_empty_cache");
    ok &= sym(l, a.memory_stats, "adapters_cuda_memory_stats");
    ok &= sym(l, a.reset_peak_stats, "adapters_cuda_reset_peak_stats");
    ok &= sym(l, a.memcpy_h2d, "adapters_cuda_memcpy_h2d");
    ok &= sym(l, a.memcpy_d2h, "adapters_cuda_memcpy_d2h");
    ok &= sym(l, a.memcpy_d2d, "adapters_cuda_memcpy_d2d");
    ok &= sym(l, a.memset, "adapters_cuda_memset");
    ok &= sym(l, a.synchronize, "adapters_cuda_synchronize");
    ok &= sym(l, a.set_device, "adapters_cuda_set_device");
    ok &= sym(l, a.gemm_bf16, "adapters_cuda_gemm_bf16");
    ok &= sym(l, a.gemm_bf16_out, "adapters_cuda_gemm_bf16_out");
    ok &= sym(l, a.gemm_f32, "adapters_cuda_gemm_f32");
    ok &= sym(l, a.set_f32_matmul_precision, "adapters_cuda_set_f32_matmul_precision");
    ok &= sym(l, a.get_f32_matmul_precision, "adapters_cuda_get_f32_matmul_precision");
    ok &= sym(l, a.adamw_step, "adapters_cuda_adamw_step");
    ok &= sym(l, a.binary_f32, "adapters_cuda_binary_f32");
    ok &= sym(l, a.unary_f32, "adapters_cuda_unary_f32");
    ok &= sym(l, a.unary_backward_f32, "adapters_cuda_unary_backward_f32");
    ok &= sym(l, a.copy_strided, "adapters_cuda_copy_strided");
    ok &= sym(l, a.compare, "adapters_cuda_compare");
    ok &= sym(l, a.where, "adapters_cuda_where");
    ok &= sym(l, a.masked_fill, "adapters_cuda_masked_fill");
    ok &= sym(l, a.lora_sgmv_f32, "adapters_cuda_lora_sgmv_f32");
    ok &= sym(l, a.lora_sgmv_backward_f32, "adapters_cuda_lora_sgmv_backward_f32");
    ok &= sym(l, a.bottleneck_sgmv_f32, "adapters_cuda_bottleneck_sgmv_f32");
    ok &= sym(l, a.bottleneck_sgmv_backward_f32, "adapters_cuda_bottleneck_sgmv_backward_f32");
    ok &= sym(l, a.index_select, "adapters_cuda_index_select");
    ok &= sym(l, a.index_add_f32, "adapters_cuda_index_add_f32");
    ok &= sym(l, a.gather, "adapters_cuda_gather");
    ok &= sym(l, a.scatter_add_f32, "adapters_cuda_scatter_add_f32");
    ok &= sym(l, a.softmax_f32, "adapters_cuda_softmax_f32");
    ok &= sym(l, a.softmax_backward_f32, "adapters_cuda_softmax_backward_f32");
    ok &= sym(l, a.norm_f32, "adapters_cuda_norm_f32");
    ok &= sym(l, a.norm_backward_f32, "adapters_cuda_norm_backward_f32");
    ok &= sym(l, a.sum_f32, "adapters_cuda_sum_f32");
    ok &= sym(l, a.cross_entropy_f32, "adapters_cuda_cross_entropy_f32");
    ok &= sym(l, a.cross_entropy_backward_f32, "adapters_cuda_cross_entropy_backward_f32");
    ok &= sym(l, a.embedding_f32, "adapters_cuda_embedding_f32");
    ok &= sym(l, a.embedding_backward_f32, "adapters_cuda_embedding_backward_f32");
    ok &= sym(l, a.rope_f32, "adapters_cuda_rope_f32");
    ok &= sym(l, a.dropout_f32, "adapters_cuda_dropout_f32");
    ok &= sym(l, a.attention_f32, "adapters_cuda_attention_f32");
    ok &= sym(l, a.attention_backward_f32, "adapters_cuda_attention_backward_f32");
    l.complete = ok;
  });
  return l;
}
}  // namespace

int cuda_device_count() {
  auto& l = lib();
  return l.complete && l.device_count ? l.device_count() : 0;
}
bool has_cuda() { return cuda_device_count() > 0; }
std::string cuda_load_error() { return lib().error; }

const CudaApi& cuda_api(const std::string& what) {
  auto& l = lib();
  if (!l.complete) throw Error("DeviceError", what + ": CUDA is not available (" + (l.error.empty() ? "no library" : l.error) + ")");
  static const int n = l.device_count();  // the device count cannot change within a process
  if (n <= 0) throw Error("DeviceError", what + ": CUDA is not available (no CUDA device)");
  return l.api;
}

void cuda_check(int code, const std::string& what) {
  if (code == 0) return;
  const char* msg = lib().complete ? lib().api.error_string(code) : "unknown error";
  // cudaErrorMemoryAllocation = 2
  throw Error(code == 2 ? "MemoryError" : "DeviceError", what + ": CUDA error " + std::to_string(code) + " (" + (msg ? msg : "?") + ")");
}

}  // namespace ad
