// dispatch.h — entry points of the op table (see ops.def).
#pragma once
#include <string>
#include <vector>

#include "op.h"

namespace ad {
void run_op(OpCtx& ctx);
bool supports_op(const std::string& name, const std::string& device);
std::vector<std::string> op_names();
}  // namespace ad
