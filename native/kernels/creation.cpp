// creation.cpp — fill / arange, and the copy family: contiguous (packed copy), cast (dtype conversion),
// copy_ (write src into a view of dst in place; used for in-place parameter updates).
#include <cmath>

#include "../op.h"
#include "../threadpool.h"

namespace ad {

// fill() {shape, value, dtype}
void op_fill(OpCtx& c) {
  DType dt = DType::F32;
  std::string dn = c.s("dtype", "f32");
  if (!dtype_from_name(dn, &dt)) c.fail("DTypeError", "unknown dtype '" + dn + "'");
  Tensor o = Tensor::empty(c.ints("shape"), dt);
  double v = c.f("value", 0);
  int64_t n = o.numel();
  switch (dt) {
    case DType::F32: { float f = (float)v; float* p = o.data<float>(); for (int64_t i = 0; i < n; i++) p[i] = f; break; }
    case DType::BF16: { uint16_t h = f32_to_bf16((float)v); auto* p = o.data<uint16_t>(); for (int64_t i = 0; i < n; i++) p[i] = h; break; }
    case DType::F16: { uint16_t h = f32_to_f16((float)v); auto* p = o.data<uint16_t>(); for (int64_t i = 0; i < n; i++) p[i] = h; break; }
    case DType::I32: { auto* p = o.data<int32_t>(); for (int64_t i = 0; i < n; i++) p[i] = (int32_t)v; break; }
    case DType::I64: { auto* p = o.data<int64_t>(); for (int64_t i = 0; i < n; i++) p[i] = (int64_t)v; break; }
    case DType::BOOL: { auto* p = o.data<uint8_t>(); for (int64_t i = 0; i < n; i++) p[i] = v != 0; break; }
  }
  c.out.push_back(o);
}

// arange() {start, end, step, dtype} -> 1-D, ceil((end-start)/step) elements
void op_arange(OpCtx& c) {
  double s = c.f("start", 0), e = c.f("end"), st = c.f("step", 1);
  if (st == 0) c.fail("ValueError", "step must be nonzero");
  double cnt = std::ceil((e - s) / st);
  if (cnt < 0) cnt = 0;
  if (cnt > 1e12) c.fail("ValueError", "arange would create " + std::to_string(cnt) + " elements");
  DType dt = DType::I64;
  std::string dn = c.s("dtype", "i64");
  if (!dtype_from_name(dn, &dt)) c.fail("DTypeError", "unknown dtype '" + dn + "'");
  int64_t n = (int64_t)cnt;
  Tensor o = Tensor::empty({n}, DType::F32);
  if (dt == DType::I64 || dt == DType::I32) {
    Tensor oi = Tensor::empty({n}, DType::I64);
    for (int64_t i = 0; i < n; i++) oi.data<int64_t>()[i] = (int64_t)(s + i * st);
    c.out.push_back(cast(oi, dt));
    return;
  }
  for (int64_t i = 0; i < n; i++) o.data<float>()[i] = (float)(s + i * st);
  c.out.push_back(cast(o, dt));
}

void op_contiguous(OpCtx& c) {
  c.expect_inputs(1);
  const Tensor& x = c.input(0);
  Tensor o = Tensor::empty(x.shape, x.dtype, x.device());  // always a fresh copy (clone semantics)
  copy_into(o, x);
  c.out.push_back(o);
}

// cast(x) {dtype}
void op_cast(OpCtx& c) {
  c.expect_inputs(1);
  DType dt;
  std::string dn = c.s("dtype", "");
  if (!dtype_from_name(dn, &dt)) c.fail("DTypeError", "unknown dtype '" + dn + "'");
  const Tensor& x = c.input(0);
  Tensor o = Tensor::empty(x.shape, dt);
  copy_into(o, x);
  c.out.push_back(o);
}

// copy_(dst, src): writes src (broadcast to dst's shape, converted to dst's dtype) into dst in place.
// Returns nothing. The only in-place op: parameters are updated through it.
void op_copy_(OpCtx& c) {
  c.expect_inputs(2);
  const Tensor& d = c.input(0);
  const Tensor& s = c.input(1);
  auto shp = broadcast_shapes(c, d.shape, s.shape);
  if (shp != d.shape) c.fail("ShapeError", "source " + shape_str(s.shape) + " does not broadcast to " + shape_str(d.shape));
  copy_into(d, s.view(d.shape, broadcast_strides(s, d.shape), s.offset));
}

}  // namespace ad
