// file_io.h — file regions read into tensors (checkpoint loading).
#pragma once
#include <string>
#include <vector>

#include "../tensor.h"

namespace ad {
// Reads numel(shape) elements of dt at byte `offset` of `path` into a new contiguous tensor.
Tensor read_file_region(const std::string& path, int64_t offset, DType dt, const std::vector<int64_t>& shape);
}  // namespace ad
