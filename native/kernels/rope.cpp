// rope.cpp — rotary position embedding applied with precomputed cos/sin tables, forward and backward.
// Legend: x (..., T, D); cos, sin (T, D) shared by all leading dims, or (B, T, D) per batch row with x
// (B, H, T, D). Both forms take full-width tables (each frequency present twice), as HF builds them.
//   half-split (LLaMA, rotate_half):  y[i] = x[i]c[i] − x[i+h]s[i];  y[i+h] = x[i+h]c[i+h] + x[i]s[i+h]
//   interleaved (GPT-J style pairs):  y[2i] = x[2i]c[2i] − x[2i+1]s[2i];  y[2i+1] = x[2i+1]c[2i+1] + x[2i]s[2i+1]
// The backward is the transpose of that rotation, selected with {backward: true}.
// https://arxiv.org/abs/2104.09864
#include "../op.h"
#include "../threadpool.h"
#include "../../cuda/rows_math.h"

namespace ad {

// rope(x, cos, sin) {interleaved, backward} -> y (or dx when backward, with x = the incoming gradient)
void op_rope(OpCtx& c) {
  c.expect_inputs(3);
  Tensor x = c.f32(0), cs = c.f32(1), sn = c.f32(2);
  bool inter = c.b("interleaved", false), bwd = c.b("backward", false);
  if (x.dim() < 2) c.fail("ShapeError", "x must be (..., T, D), got " + shape_str(x.shape));
  int64_t T = x.shape[x.dim() - 2], D = x.shape[x.dim() - 1];
  if (D % 2) c.fail("ShapeError", "head dim must be even, got " + std::to_string(D));
  if (cs.shape != sn.shape) c.fail("ShapeError", "cos " + shape_str(cs.shape) + " and sin " + shape_str(sn.shape) + " differ");
  bool per_batch = cs.dim() == 3;
  if (!((cs.dim() == 2 && cs.shape[0] == T && cs.shape[1] == D) ||
        (per_batch && x.dim() == 4 && cs.shape[0] == x.shape[0] && cs.shape[1] == T && cs.shape[2] == D)))
    c.fail("ShapeError", "cos/sin " + shape_str(cs.shape) + " must be [T, D] = [" + std::to_string(T) + ", " + std::to_string(D) +
                             "] or [B, T, D] for x " + shape_str(x.shape));
  Tensor y = Tensor::empty(x.shape, DType::F32);
  int64_t rows = x.numel() / D;  // each row is one (…, t) vector
  int64_t perB = per_batch ? x.shape[1] * T : 0;
  const float *X = x.data<float>(), *CS = cs.data<float>(), *SN = sn.data<float>();
  float* Y = y.data<float>();
  parallel_for(rows, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) ad_rows::rope_row(r, T, D, perB, X, CS, SN, Y, inter, bwd);  // shared with CUDA
  });
  c.out.push_back(y);
}

}  // namespace ad
