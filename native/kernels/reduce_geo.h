// reduce_geo.h — brings a reduction over any set of axes to the form x: (O, R, I) -> out: (O, I), the reduced axes
// contiguous in the middle (permuting them to the end first when they are not adjacent). Shared by the CPU sums
// (reduce.cpp) and the CUDA ones (native/cuda_ops.cpp), which pass their own way of making a contiguous copy.
#pragma once
#include <algorithm>
#include <vector>

#include "../op.h"

namespace ad {

struct ORI {
  Tensor x;  // contiguous, viewed as (O, R, I)
  int64_t O, R, I;
  std::vector<int64_t> out_shape, out_shape_keep;
};

template <class Contig>
ORI to_ori(const OpCtx& ctx, const Tensor& x0, std::vector<int64_t> axes, Contig make_contiguous) {
  int64_t nd = x0.dim();
  for (auto& a : axes) a = norm_axis(ctx, a, nd);
  if (nd == 0) axes.clear();  // a 0-d tensor accepts dim 0 / -1 (as torch) and has no axis to reduce
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  ORI r;
  std::vector<bool> red(std::max<int64_t>(nd, 1), false);
  for (auto a : axes) red[a] = true;
  for (int64_t d = 0; d < nd; d++) {
    r.out_shape_keep.push_back(red[d] ? 1 : x0.shape[d]);
    if (!red[d]) r.out_shape.push_back(x0.shape[d]);
  }
  bool adjacent = axes.empty() || axes.back() - axes.front() + 1 == (int64_t)axes.size();
  Tensor x = x0;
  int64_t lo = axes.empty() ? nd : axes.front(), hi = axes.empty() ? nd : axes.back() + 1;
  if (!adjacent) {
    std::vector<int64_t> perm, sh, st;
    for (int64_t d = 0; d < nd; d++) if (!red[d]) perm.push_back(d);
    for (auto a : axes) perm.push_back(a);
    for (auto p : perm) { sh.push_back(x0.shape[p]); st.push_back(x0.strides[p]); }
    x = x0.view(sh, st, x0.offset);
    lo = nd - (int64_t)axes.size();
    hi = nd;
  }
  r.x = make_contiguous(x);
  r.O = 1; r.R = 1; r.I = 1;
  for (int64_t d = 0; d < lo; d++) r.O *= r.x.shape[d];
  for (int64_t d = lo; d < hi; d++) r.R *= r.x.shape[d];
  for (int64_t d = hi; d < nd; d++) r.I *= r.x.shape[d];
  return r;
}

inline std::vector<int64_t> all_axes(int64_t nd) {
  std::vector<int64_t> a;
  for (int64_t d = 0; d < nd; d++) a.push_back(d);
  return a;
}

}  // namespace ad
