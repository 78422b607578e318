// op.h — what every op kernel sees: its inputs, attributes and outputs (OpCtx), plus shared helpers.
// Ops are synchronous; they validate their inputs (shapes, dtypes, index ranges) and throw ad::Error.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tensor.h"

namespace ad {

struct AttrValue {
  enum Kind { NONE, NUM, BOOL, STR, LIST } kind = NONE;
  double num = 0;
  bool b = false;
  std::string s;
  std::vector<double> list;
};

struct OpCtx {
  std::string name;
  std::vector<Tensor> in;
  std::vector<bool> present;  // false for a null input slot (optional tensor)
  std::map<std::string, AttrValue> attrs;
  std::vector<Tensor> out;

  size_t n_in() const { return in.size(); }
  bool has(size_t i) const { return i < in.size() && present[i]; }
  const Tensor& input(size_t i) const;
  bool has_attr(const std::string& k) const;
  double f(const std::string& k, double def) const;
  double f(const std::string& k) const;
  int64_t i(const std::string& k, int64_t def) const;
  int64_t i(const std::string& k) const;
  bool b(const std::string& k, bool def) const;
  std::string s(const std::string& k, const std::string& def) const;
  std::vector<int64_t> ints(const std::string& k) const;
  std::vector<int64_t> ints(const std::string& k, const std::vector<int64_t>& def) const;
  [[noreturn]] void fail(const std::string& kind, const std::string& msg) const;
  // Contiguous f32 view of input i (copy when needed); checks the dtype is floating.
  Tensor f32(size_t i) const;
  void expect_inputs(size_t n) const;
};

using OpFn = void (*)(OpCtx&);
#define OP(name, upcast) void op_##name(OpCtx& ctx);
#include "ops.def"
#undef OP

// Normalises a possibly negative axis; throws IndexError naming the op.
int64_t norm_axis(const OpCtx& ctx, int64_t axis, int64_t ndim);
std::vector<int64_t> broadcast_shapes(const OpCtx& ctx, const std::vector<int64_t>& a, const std::vector<int64_t>& b);
// Strides of t when broadcast to `shape` (0 on broadcast dims).
std::vector<int64_t> broadcast_strides(const Tensor& t, const std::vector<int64_t>& shape);

}  // namespace ad

// AD_CLONES (run-time ISA clones of hot loops) is defined in tensor.h.
