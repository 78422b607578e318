// cuda_loader.h — run-time loading of the optional CUDA library.
#pragma once
#include <string>

namespace ad {
bool has_cuda();
int cuda_device_count();
std::string cuda_load_error();
}  // namespace ad
