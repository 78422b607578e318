// attention_op.cpp — the attention op: validates shapes and masks, then runs the fused kernel in
// attention.cpp. Inputs: q (B,H,Tq,D), k (B,Hkv,Tk,D), v (B,Hkv,Tk,Dv), mask? additive float broadcastable
// to (B,H,Tq,P+Tk), key_keep? bool (B, P+Tk), prefix_k? (B,Hkv,P,D), prefix_v? (B,Hkv,P,Dv).
// Outputs: out (B,H,Tq,Dv), lse (B,H,Tq). attention_bwd adds out, lse, dout and returns dq, dk, dv,
// [dprefix_k, dprefix_v]. q, k, v given as the head split of a (B, T, H·D) projection are read as they are, and out,
// dq (dk, dv) come back in that layout (see is_bthd): a model's head split and merge then copy nothing.
#include "attention.h"

#include <cmath>

#include "../op.h"

namespace ad {
namespace {

struct Prepared {
  AttnParams p;
  Tensor q, k, v, pk, pv, mask, keep;
};

// Is t (B, H, T, W) the head split of a contiguous (B, T, H·W) projection — a (0, 2, 1, 3) permute of a contiguous
// (B, T, H, W) f32 tensor? The kernels read that layout as it is (AttnParams::q_bthd / k_bthd): no copy.
bool is_bthd(const Tensor& t) {
  if (t.dtype != DType::F32 || t.dim() != 4 || !t.on_cpu()) return false;
  const int64_t H = t.shape[1], T = t.shape[2], W = t.shape[3];
  return t.strides == std::vector<int64_t>{T * H * W, W, H * W, 1} || t.numel() == 0;
}
// A (B, H, T, W) tensor laid out as (B, T, H, W) contiguous, viewed as (B, H, T, W).
Tensor empty_bthd(int64_t B, int64_t H, int64_t T, int64_t W) {
  Tensor s = Tensor::empty({B, T, H, W}, DType::F32);
  return s.view({B, H, T, W}, {T * H * W, W, H * W, 1}, 0);
}
// t (float, (B, H, T, W)) in the layout the kernels were told: (B, T, H, W) contiguous when bthd (t itself if it is
// already so), else (B, H, T, W) contiguous.
Tensor in_layout(const OpCtx& c, size_t k, bool bthd) {
  const Tensor& t = c.input(k);
  if (!bthd) return c.f32(k);
  if (is_bthd(t)) return t;
  Tensor f = c.f32(k);
  if (f.dim() != 4) return f;  // the shape checks report it
  Tensor d = empty_bthd(f.shape[0], f.shape[1], f.shape[2], f.shape[3]);
  copy_into(d, f);
  return d;
}

Prepared prepare(OpCtx& c) {
  c.expect_inputs(3);
  Prepared r;
  // q as given when it is a head split (see is_bthd); k and v likewise when both are
  r.p.q_bthd = is_bthd(c.input(0));
  r.p.k_bthd = is_bthd(c.input(1)) && is_bthd(c.input(2));
  r.q = in_layout(c, 0, r.p.q_bthd);
  r.k = in_layout(c, 1, r.p.k_bthd);
  r.v = in_layout(c, 2, r.p.k_bthd);
  if (c.has(5)) r.pk = c.f32(5);
  if (c.has(6)) r.pv = c.f32(6);
  if (c.has(3)) r.mask = c.f32(3);
  if (c.has(4) && c.input(4).dtype == DType::BOOL) r.keep = contiguous(c.input(4));
  attention_check(c, r.q, r.k, r.v, r.pk, r.pv, r.mask, c.has(4) ? c.input(4) : Tensor(), r.p);
  if (r.mask.st) r.p.mask = r.mask.data<float>();
  if (r.keep.st) r.p.key_keep = r.keep.data<uint8_t>();
  r.p.mixed = c.i("mixed", 0) != 0;  // autocast (the CUDA slot passes it on to its products)
  // attention-probability dropout: its probability and counter-based stream (the same for forward and backward)
  const double pd = c.f("dropout", 0);
  if (!(pd >= 0 && pd < 1)) c.fail("ValueError", "dropout must be in [0, 1), got " + std::to_string(pd));
  r.p.dropout = (float)pd;
  if (pd > 0) {
    const double seed = c.f("seed", 0), off = c.f("offset", 0);
    if (seed < 0 || off < 0 || seed != std::floor(seed) || off != std::floor(off)) c.fail("ValueError", "seed and offset must be non-negative integers");
    r.p.seed = (uint64_t)seed;
    r.p.offset = (uint64_t)off;
  }
  return r;
}

}  // namespace

void attention_check(const OpCtx& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pk, const Tensor& pv,
                     const Tensor& mask, const Tensor& keep, AttnParams& p) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    c.fail("ShapeError", "q, k, v must be 4-D (B, H, T, D), got " + shape_str(q.shape) + ", " + shape_str(k.shape) + ", " + shape_str(v.shape));
  p.B = q.shape[0]; p.H = q.shape[1]; p.Tq = q.shape[2]; p.D = q.shape[3];
  p.Hkv = k.shape[1]; p.Tk = k.shape[2]; p.Dv = v.shape[3];
  if (k.shape[0] != p.B || v.shape[0] != p.B || v.shape[1] != p.Hkv || v.shape[2] != p.Tk || k.shape[3] != p.D)
    c.fail("ShapeError", "q " + shape_str(q.shape) + ", k " + shape_str(k.shape) + ", v " + shape_str(v.shape) + " are inconsistent");
  if (p.Hkv == 0 || p.H % p.Hkv)
    c.fail("ShapeError", "query heads (" + std::to_string(p.H) + ") must be a multiple of key/value heads (" + std::to_string(p.Hkv) + ")");
  p.P = 0;
  if (!!pk.st != !!pv.st) c.fail("ValueError", "prefix_k and prefix_v must be given together");
  if (pk.st) {
    p.P = pk.dim() == 4 ? pk.shape[2] : -1;
    if (pk.dim() != 4 || pk.shape[0] != p.B || pk.shape[1] != p.Hkv || pk.shape[3] != p.D || pv.dim() != 4 || pv.shape[0] != p.B ||
        pv.shape[1] != p.Hkv || pv.shape[2] != p.P || pv.shape[3] != p.Dv)
      c.fail("ShapeError", "prefix_k " + shape_str(pk.shape) + " / prefix_v " + shape_str(pv.shape) +
                               " must be (B, Hkv, P, D) / (B, Hkv, P, Dv) matching k " + shape_str(k.shape));
  }
  const int64_t S = p.P + p.Tk;
  p.scale = (float)c.f("scale", 1.0 / std::sqrt((double)p.D));
  p.causal = c.b("causal", false);
  if (mask.st) {
    std::vector<int64_t> full = {p.B, p.H, p.Tq, S};
    if (mask.dim() > 4) c.fail("ShapeError", "mask " + shape_str(mask.shape) + " has more than 4 dims");
    if (broadcast_shapes(c, full, mask.shape) != full) c.fail("ShapeError", "mask " + shape_str(mask.shape) + " does not broadcast to " + shape_str(full));
    auto st = broadcast_strides(mask, full);
    p.mask_sb = st[0]; p.mask_sh = st[1]; p.mask_si = st[2]; p.mask_sj = st[3];
  }
  if (keep.st) {
    if (keep.dtype != DType::BOOL) c.fail("DTypeError", "key padding mask must be bool, got " + std::string(dtype_name(keep.dtype)));
    if (keep.dim() != 2 || keep.shape[0] != p.B || keep.shape[1] != S)
      c.fail("ShapeError", "key padding mask " + shape_str(keep.shape) + " must be [B, P+Tk] = [" + std::to_string(p.B) + ", " + std::to_string(S) + "]");
  }
}

void op_attention(OpCtx& c) {
  Prepared r = prepare(c);
  const AttnParams& p = r.p;
  // out in q's layout: with a head-split q, merging the heads back ((0, 2, 1, 3) permute + reshape) is a view
  Tensor out = p.q_bthd ? empty_bthd(p.B, p.H, p.Tq, p.Dv) : Tensor::empty({p.B, p.H, p.Tq, p.Dv}, DType::F32);
  Tensor lse = Tensor::empty({p.B, p.H, p.Tq}, DType::F32);
  if (out.numel() > 0 || lse.numel() > 0)
    attention_fwd_cpu(p, r.q.data<float>(), r.k.data<float>(), r.v.data<float>(), p.P ? r.pk.data<float>() : nullptr,
                      p.P ? r.pv.data<float>() : nullptr, out.data<float>(), lse.data<float>());
  c.out.push_back(out);
  c.out.push_back(lse);
}

// attention_bwd(q, k, v, mask?, key_keep?, prefix_k?, prefix_v?, out, lse, dout) {same attrs}
void op_attention_bwd(OpCtx& c) {
  Prepared r = prepare(c);
  const AttnParams& p = r.p;
  if (c.n_in() < 10) c.fail("ValueError", "expects q, k, v, mask, key_keep, prefix_k, prefix_v, out, lse, dout");
  const std::vector<int64_t> oshape{p.B, p.H, p.Tq, p.Dv};
  if (c.input(7).shape != oshape || c.input(9).shape != oshape || c.input(8).shape != std::vector<int64_t>{p.B, p.H, p.Tq})
    c.fail("ShapeError", "out/lse/dout shapes do not match q, v");
  // out and dout in q's layout, the gradients in their inputs' layouts
  Tensor out = in_layout(c, 7, p.q_bthd), lse = c.f32(8), dout = in_layout(c, 9, p.q_bthd);
  auto like = [](const Tensor& t, bool bthd) {
    return bthd ? empty_bthd(t.shape[0], t.shape[1], t.shape[2], t.shape[3]) : Tensor::empty(t.shape, DType::F32);
  };
  Tensor dq = like(r.q, p.q_bthd), dk = like(r.k, p.k_bthd), dv = like(r.v, p.k_bthd);
  Tensor dpk, dpv;
  if (p.P) { dpk = Tensor::empty(r.pk.shape, DType::F32); dpv = Tensor::empty(r.pv.shape, DType::F32); }
  attention_bwd_cpu(p, r.q.data<float>(), r.k.data<float>(), r.v.data<float>(), p.P ? r.pk.data<float>() : nullptr,
                    p.P ? r.pv.data<float>() : nullptr, out.data<float>(), lse.data<float>(), dout.data<float>(),
                    dq.data<float>(), dk.data<float>(), dv.data<float>(), p.P ? dpk.data<float>() : nullptr,
                    p.P ? dpv.data<float>() : nullptr);
  c.out.push_back(dq);
  c.out.push_back(dk);
  c.out.push_back(dv);
  if (p.P) { c.out.push_back(dpk); c.out.push_back(dpv); }
}

}  // namespace ad
