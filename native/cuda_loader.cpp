// cuda_loader.cpp — finds libadapters_cuda.so next to the addon (or via ADAPTERS_CUDA_LIB) and dlopens it
// at run time, so one CPU build works with or without CUDA. hasCuda() is true only when the library
// loads and reports at least one device.
#include "cuda_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

namespace ad {
namespace {
struct CudaLib {
  void* handle = nullptr;
  int (*device_count)() = nullptr;
  std::string error;
};
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
    l.device_count = reinterpret_cast<int (*)()>(dlsym(l.handle, "adapters_cuda_device_count"));
    if (!l.device_count) l.error = "libadapters_cuda.so lacks adapters_cuda_device_count";
  });
  return l;
}
}  // namespace

int cuda_device_count() {
  auto& l = lib();
  return l.device_count ? l.device_count() : 0;
}
bool has_cuda() { return cuda_device_count() > 0; }
std::string cuda_load_error() { return lib().error; }

}  // namespace ad
