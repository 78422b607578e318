// dispatch.cpp — the op table built from ops.def, OpCtx helpers, and run_op(): validate device, apply the
// bf16/f16 upcast rule, call the kernel. An op with any CUDA input runs its CUDA slot (native/cuda_ops.cpp),
// which checks devices itself; a CUDA tensor reaching an op without one throws "no CUDA implementation for
// <op>" (never a silent fallback to the CPU).
#include "dispatch.h"

#include <cmath>
#include <unordered_map>

#include "cuda_loader.h"

namespace ad {

const Tensor& OpCtx::input(size_t k) const {
  if (k >= in.size() || !present[k]) fail("ValueError", "missing input #" + std::to_string(k));
  return in[k];
}
bool OpCtx::has_attr(const std::string& k) const {
  auto it = attrs.find(k);
  return it != attrs.end() && it->second.kind != AttrValue::NONE;
}
void OpCtx::fail(const std::string& kind, const std::string& msg) const { throw Error(kind, name + ": " + msg); }
double OpCtx::f(const std::string& k, double def) const {
  auto it = attrs.find(k);
  if (it == attrs.end() || it->second.kind == AttrValue::NONE) return def;
  if (it->second.kind == AttrValue::BOOL) return it->second.b ? 1 : 0;
  if (it->second.kind != AttrValue::NUM) fail("TypeError", "attribute '" + k + "' must be a number");
  return it->second.num;
}
double OpCtx::f(const std::string& k) const {
  if (!has_attr(k)) fail("ValueError", "missing attribute '" + k + "'");
  return f(k, 0);
}
int64_t OpCtx::i(const std::string& k, int64_t def) const {
  double v = f(k, (double)def);
  if (v != std::floor(v) || std::fabs(v) > 9.007199254740992e15)
    fail("TypeError", "attribute '" + k + "' must be an integer, got " + std::to_string(v));
  return (int64_t)v;
}
int64_t OpCtx::i(const std::string& k) const {
  if (!has_attr(k)) fail("ValueError", "missing attribute '" + k + "'");
  return i(k, 0);
}
bool OpCtx::b(const std::string& k, bool def) const {
  auto it = attrs.find(k);
  if (it == attrs.end() || it->second.kind == AttrValue::NONE) return def;
  if (it->second.kind == AttrValue::BOOL) return it->second.b;
  if (it->second.kind == AttrValue::NUM) return it->second.num != 0;
  fail("TypeError", "attribute '" + k + "' must be a boolean");
}
std::string OpCtx::s(const std::string& k, const std::string& def) const {
  auto it = attrs.find(k);
  if (it == attrs.end() || it->second.kind == AttrValue::NONE) return def;
  if (it->second.kind != AttrValue::STR) fail("TypeError", "attribute '" + k + "' must be a string");
  return it->second.s;
}
std::vector<int64_t> OpCtx::ints(const std::string& k, const std::vector<int64_t>& def) const {
  auto it = attrs.find(k);
  if (it == attrs.end() || it->second.kind == AttrValue::NONE) return def;
  if (it->second.kind == AttrValue::NUM) return {i(k)};
  if (it->second.kind != AttrValue::LIST) fail("TypeError", "attribute '" + k + "' must be a list of integers");
  std::vector<int64_t> r;
  for (double v : it->second.list) {
    if (v != std::floor(v)) fail("TypeError", "attribute '" + k + "' must hold integers");
    r.push_back((int64_t)v);
  }
  return r;
}
std::vector<int64_t> OpCtx::ints(const std::string& k) const {
  if (!has_attr(k)) fail("ValueError", "missing attribute '" + k + "'");
  return ints(k, {});
}
Tensor OpCtx::f32(size_t k) const {
  const Tensor& t = input(k);
  if (!dtype_is_float(t.dtype))
    fail("DTypeError", "input #" + std::to_string(k) + " must be floating point, got " + dtype_name(t.dtype));
  return contiguous(cast(t, DType::F32));
}
void OpCtx::expect_inputs(size_t n) const {
  if (in.size() < n) fail("ValueError", "expected " + std::to_string(n) + " inputs, got " + std::to_string(in.size()));
  for (size_t k = 0; k < n; k++)
    if (!present[k]) fail("ValueError", "input #" + std::to_string(k) + " is required");
}

int64_t norm_axis(const OpCtx& ctx, int64_t axis, int64_t ndim) {
  int64_t n = ndim == 0 ? 1 : ndim;
  if (axis < -n || axis >= n)
    ctx.fail("IndexError", "dimension " + std::to_string(axis) + " out of range for a " + std::to_string(ndim) +
                               "-d tensor");
  return axis < 0 ? axis + n : axis;
}

std::vector<int64_t> broadcast_shapes(const OpCtx& ctx, const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t n = std::max(a.size(), b.size());
  std::vector<int64_t> r(n);
  for (size_t k = 0; k < n; k++) {
    int64_t da = k < n - a.size() ? 1 : a[k - (n - a.size())];
    int64_t db = k < n - b.size() ? 1 : b[k - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      ctx.fail("ShapeError", "shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast");
    r[k] = da == 1 ? db : da;
  }
  return r;
}

std::vector<int64_t> broadcast_strides(const Tensor& t, const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 0);
  size_t off = shape.size() - t.shape.size();
  for (size_t k = 0; k < t.shape.size(); k++) s[k + off] = t.shape[k] == 1 ? 0 : t.strides[k];
  return s;
}

extern const std::vector<std::pair<const char*, OpFn>> kCudaOps;  // cuda_ops.cpp

namespace {
struct OpEntry {
  OpFn cpu;
  OpFn cuda;
  bool upcast;
};
std::unordered_map<std::string, OpEntry>& table() {
  static std::unordered_map<std::string, OpEntry> t = [] {
    std::unordered_map<std::string, OpEntry> m = {
#define OP(name, upcast) {#name, {&op_##name, nullptr, upcast != 0}},
#include "ops.def"
#undef OP
    };
    for (auto& [name, fn] : kCudaOps) m.at(name).cuda = fn;
    return m;
  }();
  return t;
}
}  // namespace

std::vector<std::string> op_names() {
  std::vector<std::string> r;
#define OP(name, upcast) r.push_back(#name);
#include "ops.def"
#undef OP
  return r;
}

bool supports_op(const std::string& name, const std::string& device) {
  auto it = table().find(name);
  if (it == table().end()) return false;
  if (device == "cpu") return it->second.cpu != nullptr;
  if (device.rfind("cuda", 0) == 0) return it->second.cuda != nullptr && has_cuda();
  return false;
}

void run_op(OpCtx& ctx) {
  auto it = table().find(ctx.name);
  if (it == table().end()) throw Error("ValueError", "unknown op '" + ctx.name + "'");
  // factory ops (no tensor inputs) run where their `device` attribute says
  if (ctx.in.empty() && ctx.attrs.count("device") && ctx.s("device", "cpu") != "cpu") {
    if (!it->second.cuda) throw Error("DeviceError", "no CUDA implementation for " + ctx.name);
    it->second.cuda(ctx);
    return;
  }
  for (size_t k = 0; k < ctx.in.size(); k++)
    if (ctx.present[k] && ctx.in[k].st->device.type != DeviceType::CPU) {
      if (!it->second.cuda) throw Error("DeviceError", "no CUDA implementation for " + ctx.name);
      it->second.cuda(ctx);
      return;
    }
  // bf16/f16: compute in f32, hand back the input's dtype (PyTorch's CPU kernels accumulate in f32 too).
  // Mixed f32 + bf16 inputs give f32 (PyTorch's promotion); only all-low-precision ops return low.
  DType low = DType::F32;
  if (it->second.upcast) {
    bool has_f32 = false;
    for (size_t k = 0; k < ctx.in.size(); k++)
      if (ctx.present[k] && ctx.in[k].dtype == DType::F32) has_f32 = true;
    for (size_t k = 0; k < ctx.in.size(); k++)
      if (ctx.present[k] && (ctx.in[k].dtype == DType::BF16 || ctx.in[k].dtype == DType::F16)) {
        if (!has_f32) low = ctx.in[k].dtype;
        ctx.in[k] = cast(ctx.in[k], DType::F32);
      }
  }
  it->second.cpu(ctx);
  if (low != DType::F32)
    for (auto& o : ctx.out)
      if (o.dtype == DType::F32) o = cast(o, low);
}

}  // namespace ad
