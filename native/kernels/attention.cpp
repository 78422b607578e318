// attention.cpp — fused scaled dot-product attention on the CPU (flash-attention style).
//
// Forward: one task per (b, h, block of BQ queries). For each block of BK keys (prefix keys first, then the
// regular keys) the task computes the score tile S = (scale·Q)·Kᵀ, applies the masks, and folds it into a
// running max / running sum (online softmax) while accumulating P·V. Only small per-thread tiles are
// allocated; the Tq×(P+Tk) matrix never exists. lse = m + log(l) is saved for the backward.
//
// Backward (FlashAttention-2): P is recomputed from lse, D_i = dO_i·O_i, then per tile
//   dV += Pᵀ dO,  dP = dO Vᵀ,  dS = P ∘ (dP − D),  dK += scale·dSᵀ Q,  dQ += scale·dS K.
// Two schedules, chosen by the amount of parallelism:
//   fused: one task per (b, kv head) owns dK/dV of that kv head and dQ of its query-head group;
//   split: one task per (b, kv head, key block) for dK/dV, then one task per (b, h, query block) for dQ
//          (recomputes S and dP once more, but keeps every core busy when B·Hkv is small).
// Tasks are handed out dynamically (an atomic counter) since causal tiles have uneven cost.
//
// Masking semantics (as Hugging Face eager attention):
//   s = clamp(scale·q·k + mask, −FLT_MAX, FLT_MAX); then s = −FLT_MAX where the key is causally hidden or
//   key_keep == 0. All-masked rows therefore attend uniformly over all P+Tk keys. The gradient treats every
//   mask as an additive constant (dS = P∘(dP−D) everywhere), which is what autograd through HF's
//   `scores + causal_mask` gives; in particular an all-masked row still sends (uniform-weight) gradients to q/k.
//
// Precision note: when a row's lse is large in magnitude (e.g. all-masked rows, lse ≈ −FLT_MAX) the float
// lse cannot carry log(l); the backward then recomputes the row's max and sum exactly instead of using lse.
//
// Vectorisation: tile kernels use GCC vector extensions (8 floats) and are compiled twice, for AVX2+FMA and
// for the baseline ISA; the tile GEMM and the softmax-side kernels (exp, max, sums, clamp) also have 16-float AVX-512
// forms. The choice is made once at run time (__builtin_cpu_supports; ADAPTERS_ATTN_NO_AVX512=1 keeps the AVX2 ones).
// No ifuncs. Under mixed precision (p.mixed, CPU autocast) the tile products go to bf16_small_gemm (gemm.cpp:
// bf16-rounded operands on AMX tiles or AVX512-BF16, f32 accumulation) where the bf16 GEMMs run on either, taking K, V and Q rows as they
// are (scale applied to the f32 product: S = scale·(Q·Kᵀ), as torch's q @ kᵀ / √d); masks, softmax and the statistics
// stay f32.
#include "attention.h"
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "../threadpool.h"
#include "../../cuda/random_math.h"

namespace ad {
namespace {

// 128 x 128 tiles: a BERT-length sequence (128 tokens) is one tile, so under autocast each tile product is one
// bf16 GEMM call instead of four smaller ones, each packing its operands (BERT-base shape, forward 4.3 -> 3.5 ms, backward
// 8.0 -> 7 ms); long sequences run as fast as with 64 x 64 tiles (bench:attention, T = 1k...4k).
constexpr int64_t BQ = 128;  // queries per tile
constexpr int64_t BK = 128;  // keys per tile (also the leading dimension of score tiles)

#define AD_AI inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
#define AD_LD8(dst, p) std::memcpy(&(dst), (p), 32)
#define AD_ST8(p, src) std::memcpy((p), &(src), 32)

// ---------------------------------------------------------------------------------------------------------
// Tile kernels (always_inline bodies, instantiated per ISA below)
// ---------------------------------------------------------------------------------------------------------

// C[MR x 16] (+)= A[MR x k] · B[k x 16]; A element (r, kk) at A[r*rsa + kk*csa]; B rows contiguous.
template <int MR>
AD_AI void mk16(int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B, int64_t ldb, float* C,
                int64_t ldc, bool accumulate) {
  v8f c0[MR], c1[MR];
  for (int r = 0; r < MR; r++) {
    if (accumulate) {
      AD_LD8(c0[r], C + r * ldc);
      AD_LD8(c1[r], C + r * ldc + 8);
    } else {
      c0[r] = v8f{};
      c1[r] = v8f{};
    }
  }
  for (int64_t kk = 0; kk < k; kk++) {
    v8f b0, b1;
    AD_LD8(b0, B + kk * ldb);
    AD_LD8(b1, B + kk * ldb + 8);
    for (int r = 0; r < MR; r++) {
      const float a = A[r * rsa + kk * csa];
      c0[r] += a * b0;
      c1[r] += a * b1;
    }
  }
  for (int r = 0; r < MR; r++) {
    AD_ST8(C + r * ldc, c0[r]);
    AD_ST8(C + r * ldc + 8, c1[r]);
  }
}

template <int MR>
AD_AI void mk8(int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B, int64_t ldb, float* C,
               int64_t ldc, bool accumulate) {
  v8f c0[MR];
  for (int r = 0; r < MR; r++) {
    if (accumulate)
      AD_LD8(c0[r], C + r * ldc);
    else
      c0[r] = v8f{};
  }
  for (int64_t kk = 0; kk < k; kk++) {
    v8f b0;
    AD_LD8(b0, B + kk * ldb);
    for (int r = 0; r < MR; r++) c0[r] += A[r * rsa + kk * csa] * b0;
  }
  for (int r = 0; r < MR; r++) AD_ST8(C + r * ldc, c0[r]);
}

template <int MR>
AD_AI void mk_rows(int64_t n, int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B, int64_t ldb,
                   float* C, int64_t ldc, bool accumulate) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) mk16<MR>(k, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
  for (; j + 8 <= n; j += 8) mk8<MR>(k, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
  for (; j < n; j++) {  // scalar tail columns
    for (int r = 0; r < MR; r++) {
      float acc = accumulate ? C[r * ldc + j] : 0.f;
      for (int64_t kk = 0; kk < k; kk++) acc += A[r * rsa + kk * csa] * B[kk * ldb + j];
      C[r * ldc + j] = acc;
    }
  }
}

// C[m x n] (+)= A[m x k] · B[k x n]   (A strided arbitrarily, B and C row-major with leading dims).
AD_AI void gemm_body(int64_t m, int64_t n, int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B,
                     int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) mk_rows<6>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate);
  switch (m - i) {
    case 5: mk_rows<5>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate); break;
    case 4: mk_rows<4>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate); break;
    case 3: mk_rows<3>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate); break;
    case 2: mk_rows<2>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate); break;
    case 1: mk_rows<1>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate); break;
    default: break;
  }
}

// AVX-512 form of gemm_body: 32 columns per row block as two 16-float vectors (up to 12 rows = 24 accumulators),
// then 16, then the 8-wide and scalar tails above. Compiled only into gemm_avx512 below.
typedef float v16f __attribute__((vector_size(64)));
#define AD_LD16(dst, p) std::memcpy(&(dst), (p), 64)
#define AD_ST16(p, src) std::memcpy((p), &(src), 64)

template <int MR, int NV>
AD_AI void mk16w(int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B, int64_t ldb, float* C, int64_t ldc,
                 bool accumulate) {
  v16f c[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) {
      if (accumulate) AD_LD16(c[r][v], C + r * ldc + 16 * v);
      else c[r][v] = v16f{};
    }
  for (int64_t kk = 0; kk < k; kk++) {
    v16f b[NV];
    for (int v = 0; v < NV; v++) AD_LD16(b[v], B + kk * ldb + 16 * v);
    for (int r = 0; r < MR; r++) {
      const float a = A[r * rsa + kk * csa];
      for (int v = 0; v < NV; v++) c[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) AD_ST16(C + r * ldc + 16 * v, c[r][v]);
}

template <int MR>
AD_AI void mk_rows16(int64_t n, int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B, int64_t ldb,
                     float* C, int64_t ldc, bool accumulate) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) mk16w<MR, 2>(k, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
  for (; j + 16 <= n; j += 16) mk16w<MR, 1>(k, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
  if (j < n) mk_rows<MR>(n - j, k, A, rsa, csa, B + j, ldb, C + j, ldc, accumulate);
}

AD_AI void gemm_body16(int64_t m, int64_t n, int64_t k, const float* A, int64_t rsa, int64_t csa, const float* B,
                       int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + 12 <= m; i += 12) mk_rows16<12>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate);
  for (; i + 4 <= m; i += 4) mk_rows16<4>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate);
  for (; i < m; i++) mk_rows16<1>(n, k, A + i * rsa, rsa, csa, B, ldb, C + i * ldc, ldc, accumulate);
}

// Columns past the last full W-wide vector would take mk_rows' scalar tail: with a 30-key prefix block that was 6 of
// its 30 columns and most of the tile's time. They run instead as one zero-padded vector block: B's tail columns
// copied into a W-wide panel, C's through a W-wide scratch, so a tile costs about the same for any key count.
#define AD_GEMM_PADDED(BODY, W)                                                                                 \
  do {                                                                                                          \
    const int64_t nf_ = n / (W) * (W), t_ = n - nf_;                                                            \
    if (nf_ > 0) BODY(m, nf_, k, A, rsa, csa, B, ldb, C, ldc, accumulate);                                     \
    if (t_ == 0 || m == 0) break;                                                                               \
    thread_local std::vector<float> bt_, ct_;                                                                   \
    bt_.assign((size_t)(std::max<int64_t>(k, 1) * (W)), 0.f);                                                   \
    ct_.assign((size_t)(m * (W)), 0.f);                                                                         \
    for (int64_t kk = 0; kk < k; kk++) std::memcpy(&bt_[kk * (W)], B + kk * ldb + nf_, t_ * sizeof(float));   \
    if (accumulate)                                                                                             \
      for (int64_t r = 0; r < m; r++) std::memcpy(&ct_[r * (W)], C + r * ldc + nf_, t_ * sizeof(float));     \
    BODY(m, (W), k, A, rsa, csa, bt_.data(), (W), ct_.data(), (W), accumulate);                                 \
    for (int64_t r = 0; r < m; r++) std::memcpy(C + r * ldc + nf_, &ct_[r * (W)], t_ * sizeof(float));       \
  } while (0)

typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
// The softmax-side kernels are written once over a vector type: v8f (AVX2 / baseline) or v16f (AVX-512).
template <class V> struct VecT;
template <> struct VecT<v8f> { using I = v8i; static constexpr int W = 8; };
template <> struct VecT<v16f> { using I = v16i; static constexpr int W = 16; };

// exp(x) for float (Cephes-style range reduction + degree-6 polynomial, ~2 ulp), a vector at a time.
// Returns exactly 0 for x < -87.33 (incl. -inf) so that masked scores contribute nothing.
// Written with vector extensions because GCC does not if-convert the scalar clamps without -ffast-math.
#define AD_SPLAT(x) (V{} + (float)(x))
template <class V>
AD_AI void fexpv(const float* src, float sub, float mul, float* dst) {  // dst = exp(src - sub) * mul
  using VI = typename VecT<V>::I;
  V x;
  std::memcpy(&x, src, sizeof(V));
  x = x - sub;
  const V lo = AD_SPLAT(-87.33654f), hi = AD_SPLAT(88.37626f), magic = AD_SPLAT(12582912.f);
  const VI under = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V t = x * 1.44269504088896341f + magic;  // round to nearest via the 1.5·2^23 trick
  const V n = t - magic;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = AD_SPLAT(1.9875691500E-4f);
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  const V y = p * r * r + r + 1.f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;  // exponent in [0, 255) after the clamps
  V sc;
  std::memcpy(&sc, &bits, sizeof(V));
  V res = y * sc * mul;
  res = under ? V{} : res;
  std::memcpy(dst, &res, sizeof(V));
}

AD_AI float fexp(float x) {  // scalar: the same arithmetic through one (partial) vector
  float buf[8] = {x, x, x, x, x, x, x, x};
  fexpv<v8f>(buf, 0.f, 1.f, buf);
  return buf[0];
}

// dst[j] = exp(src[j] - sub) * mul for j < n
template <class V>
AD_AI void exp_row(const float* src, float sub, float mul, float* dst, int64_t n) {
  constexpr int W = VecT<V>::W;
  int64_t j = 0;
  for (; j + W <= n; j += W) fexpv<V>(src + j, sub, mul, dst + j);
  if (j < n) {
    float buf[W] = {};
    for (int64_t t = j; t < n; t++) buf[t - j] = src[t];
    fexpv<V>(buf, sub, mul, buf);
    for (int64_t t = j; t < n; t++) dst[t] = buf[t - j];
  }
}

// Lane sum: halves folded down to 4 lanes, then (b0+b1)+(b2+b3) (for v8f: ((b0+b4)+(b1+b5))+((b2+b6)+(b3+b7))).
template <class V>
AD_AI float hsum(const V& v) {
  constexpr int W = VecT<V>::W;
  float b[W];
  std::memcpy(b, &v, sizeof(V));
  for (int w = W / 2; w >= 4; w /= 2)
    for (int l = 0; l < w; l++) b[l] += b[l + w];
  return (b[0] + b[1]) + (b[2] + b[3]);
}

template <class V>
AD_AI float row_max(const float* s, int64_t n) {
  constexpr int W = VecT<V>::W;
  V mv = AD_SPLAT(-FLT_MAX);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    V x;
    std::memcpy(&x, s + j, sizeof(V));
    mv = x > mv ? x : mv;
  }
  float b[W];
  std::memcpy(b, &mv, sizeof(V));
  float mx = -FLT_MAX;
  for (int l = 0; l < W; l++) mx = b[l] > mx ? b[l] : mx;
  for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
  return mx;
}

template <class V>
AD_AI float row_sum(const float* s, int64_t n) {
  constexpr int W = VecT<V>::W;
  V acc = V{};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    V x;
    std::memcpy(&x, s + j, sizeof(V));
    acc += x;
  }
  float sum = hsum<V>(acc);
  for (; j < n; j++) sum += s[j];
  return sum;
}

AD_AI float row_dot(const float* a, const float* b, int64_t n) {
  v8f acc = v8f{};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    v8f x, y;
    AD_LD8(x, a + j);
    AD_LD8(y, b + j);
    acc += x * y;
  }
  float sum = hsum<v8f>(acc);
  for (; j < n; j++) sum += a[j] * b[j];
  return sum;
}

// s[j] = clamp(s[j], -FLT_MAX, FLT_MAX) for j < n (NaN stays NaN): the masking rule's clamp when there is no mask.
template <class V>
AD_AI void clamp_row(float* s, int64_t n) {
  constexpr int W = VecT<V>::W;
  const V lo = AD_SPLAT(-FLT_MAX), hi = AD_SPLAT(FLT_MAX);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    V x;
    std::memcpy(&x, s + j, sizeof(V));
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    std::memcpy(s + j, &x, sizeof(V));
  }
  for (; j < n; j++) s[j] = s[j] < -FLT_MAX ? -FLT_MAX : (s[j] > FLT_MAX ? FLT_MAX : s[j]);
}

// Online-softmax step for a tile: S (rows x n, ld BK) holds masked scores; m, l running max/sum;
// acc (rows x dv, ld dv) running output. On return S holds P = exp(S - m_new) and acc is rescaled.
template <class V>
AD_AI void online_softmax_body(int64_t rows, int64_t n, float* S, float* m, float* l, float* acc, int64_t dv) {
  for (int64_t r = 0; r < rows; r++) {
    float* s = S + r * BK;
    const float mx = row_max<V>(s, n);
    const float m_old = m[r];
    const float m_new = mx > m_old ? mx : m_old;
    exp_row<V>(s, m_new, 1.f, s, n);
    const float sum = row_sum<V>(s, n);
    if (m_new != m_old) {
      const float alpha = fexp(m_old - m_new);
      l[r] = l[r] * alpha + sum;
      float* a = acc + r * dv;
      for (int64_t c = 0; c < dv; c++) a[c] *= alpha;
    } else {
      l[r] += sum;
    }
    m[r] = m_new;
  }
}

// Backward: S (rows x n, ld BK) masked scores -> P = exp(S - mrow) * invl (in place).
template <class V>
AD_AI void probs_body(int64_t rows, int64_t n, float* S, const float* mrow, const float* invl) {
  for (int64_t r = 0; r < rows; r++) exp_row<V>(S + r * BK, mrow[r], invl[r], S + r * BK, n);
}

// dS = P ∘ (dP − D) in place into dP.
template <class V>
AD_AI void dsoft_body(int64_t rows, int64_t n, const float* P, float* dP, const float* Drow) {
  constexpr int W = VecT<V>::W;
  for (int64_t r = 0; r < rows; r++) {
    const float* p = P + r * BK;
    float* d = dP + r * BK;
    const float dd = Drow[r];
    int64_t j = 0;
    for (; j + W <= n; j += W) {
      V x, y;
      std::memcpy(&x, p + j, sizeof(V));
      std::memcpy(&y, d + j, sizeof(V));
      y = x * (y - dd);
      std::memcpy(d + j, &y, sizeof(V));
    }
    for (; j < n; j++) d[j] = p[j] * (d[j] - dd);
  }
}

// Running (max, sum) statistics only (for the backward's exact recomputation of large-|lse| rows).
template <class V>
AD_AI void stats_body(int64_t rows, int64_t n, float* S, float* m, float* l) {
  for (int64_t r = 0; r < rows; r++) {
    float* s = S + r * BK;
    const float mx = row_max<V>(s, n);
    const float m_old = m[r];
    const float m_new = mx > m_old ? mx : m_old;
    exp_row<V>(s, m_new, 1.f, s, n);
    const float sum = row_sum<V>(s, n);
    l[r] = (m_new != m_old ? l[r] * fexp(m_old - m_new) : l[r]) + sum;
    m[r] = m_new;
  }
}

// clamp_row over the rows of a score tile (ld BK)
template <class V>
AD_AI void clamp_body(int64_t rows, int64_t n, float* S) {
  for (int64_t r = 0; r < rows; r++) clamp_row<V>(S + r * BK, n);
}

struct Kernels {
  void (*gemm)(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
               bool);
  void (*online_softmax)(int64_t, int64_t, float*, float*, float*, float*, int64_t);
  void (*probs)(int64_t, int64_t, float*, const float*, const float*);
  void (*dsoft)(int64_t, int64_t, const float*, float*, const float*);
  void (*stats)(int64_t, int64_t, float*, float*, float*);
  void (*clamp)(int64_t, int64_t, float*);
  const char* name;
};

// The softmax-side kernels of one ISA (V: its vector type), each a plain function with that target.
#define AD_DEFINE_SOFTMAX(SUF, ATTR, V)                                                                       \
  ATTR void online_softmax_##SUF(int64_t rows, int64_t n, float* S, float* m, float* l, float* acc,          \
                                 int64_t dv) {                                                                \
    online_softmax_body<V>(rows, n, S, m, l, acc, dv);                                                        \
  }                                                                                                           \
  ATTR void probs_##SUF(int64_t rows, int64_t n, float* S, const float* mrow, const float* invl) {           \
    probs_body<V>(rows, n, S, mrow, invl);                                                                    \
  }                                                                                                           \
  ATTR void dsoft_##SUF(int64_t rows, int64_t n, const float* P, float* dP, const float* Drow) {             \
    dsoft_body<V>(rows, n, P, dP, Drow);                                                                      \
  }                                                                                                           \
  ATTR void stats_##SUF(int64_t rows, int64_t n, float* S, float* m, float* l) { stats_body<V>(rows, n, S, m, l); } \
  ATTR void clamp_##SUF(int64_t rows, int64_t n, float* S) { clamp_body<V>(rows, n, S); }

#define AD_DEFINE_KERNELS(SUF, ATTR)                                                                          \
  ATTR void gemm_##SUF(int64_t m, int64_t n, int64_t k, const float* A, int64_t rsa, int64_t csa,           \
                       const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {                \
    AD_GEMM_PADDED(gemm_body, 8);                                                                             \
  }                                                                                                           \
  AD_DEFINE_SOFTMAX(SUF, ATTR, v8f)

AD_DEFINE_KERNELS(generic, )
#if defined(__x86_64__) && defined(__GNUC__)
AD_DEFINE_KERNELS(avx2, __attribute__((target("avx2,fma"))))
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void gemm_avx512(int64_t m, int64_t n, int64_t k, const float* A,
                                                                    int64_t rsa, int64_t csa, const float* B, int64_t ldb,
                                                                    float* C, int64_t ldc, bool accumulate) {
  AD_GEMM_PADDED(gemm_body16, 16);
}
AD_DEFINE_SOFTMAX(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))), v16f)
#endif

const Kernels& kernels() {
  static const Kernels k = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && !std::getenv("ADAPTERS_ATTN_NO_AVX512"))
      return Kernels{gemm_avx512, online_softmax_avx512, probs_avx512, dsoft_avx512, stats_avx512, clamp_avx512, "avx512"};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernels{gemm_avx2, online_softmax_avx2, probs_avx2, dsoft_avx2, stats_avx2, clamp_avx2, "avx2"};
#endif
    return Kernels{gemm_generic, online_softmax_generic, probs_generic, dsoft_generic, stats_generic, clamp_generic, "generic"};
  }();
  return k;
}

// ---------------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------------

// A block of keys: either prefix keys [j0, j0+n) of pk/pv or regular keys [j0, j0+n) of k/v.
struct KeyBlock {
  bool prefix;
  int64_t j0, n;
};

int64_t num_key_blocks(const AttnParams& p) { return (p.P + BK - 1) / BK + (p.Tk + BK - 1) / BK; }

KeyBlock key_block(const AttnParams& p, int64_t kb) {
  const int64_t npb = (p.P + BK - 1) / BK;
  if (kb < npb) return {true, kb * BK, std::min(BK, p.P - kb * BK)};
  const int64_t r = kb - npb;
  return {false, r * BK, std::min(BK, p.Tk - r * BK)};
}

// Is the whole key block causally hidden from every query of [i0, i0+nq)?
bool causally_hidden(const AttnParams& p, const KeyBlock& kb, int64_t i0, int64_t nq) {
  if (!p.causal || kb.prefix) return false;
  return kb.j0 > (i0 + nq - 1) + (p.Tk - p.Tq);
}

// Row (b, h, t) of a query-side tensor whose rows hold W floats (q, dq: D; out, dout: Dv), and the distance between its
// consecutive rows t, t+1: (B, H, Tq, W) contiguous, or (B, Tq, H, W) contiguous with p.q_bthd.
inline int64_t qrow(const AttnParams& p, int64_t b, int64_t h, int64_t t, int64_t W) {
  return p.q_bthd ? ((b * p.Tq + t) * p.H + h) * W : ((b * p.H + h) * p.Tq + t) * W;
}
inline int64_t qld(const AttnParams& p, int64_t W) { return p.q_bthd ? p.H * W : W; }
// The same for key-side tensors (k, dk: D; v, dv: Dv) of kv head g, with p.k_bthd. Prefix rows are always (B, Hkv, P, W).
inline int64_t krow(const AttnParams& p, int64_t b, int64_t g, int64_t t, int64_t W) {
  return p.k_bthd ? ((b * p.Tk + t) * p.Hkv + g) * W : ((b * p.Hkv + g) * p.Tk + t) * W;
}
inline int64_t kld(const AttnParams& p, int64_t W) { return p.k_bthd ? p.Hkv * W : W; }
// Row stride of a key block's rows of width W (its prefix rows are contiguous).
inline int64_t kb_ld(const AttnParams& p, const KeyBlock& kb, int64_t W) { return kb.prefix ? W : kld(p, W); }

// Key/value row pointers of a block for batch b, kv head g (rows kb_ld apart).
const float* key_rows(const AttnParams& p, const float* k, const float* pk, int64_t b, int64_t g,
                      const KeyBlock& kb) {
  if (kb.prefix) return pk + ((b * p.Hkv + g) * p.P + kb.j0) * p.D;
  return k + krow(p, b, g, kb.j0, p.D);
}
const float* value_rows(const AttnParams& p, const float* v, const float* pv, int64_t b, int64_t g,
                        const KeyBlock& kb) {
  if (kb.prefix) return pv + ((b * p.Hkv + g) * p.P + kb.j0) * p.Dv;
  return v + krow(p, b, g, kb.j0, p.Dv);
}

// rows x cols (ld src_ld) -> cols x rows (ld dst_ld)
// Attention dropout (AttnParams::dropout): the keep-scales of a tile (nq rows of query block i0, key block kb; ld BK),
// 1/(1 - p) or 0, drawn as ops.dropout draws element ((b·H + h)·Tq + i)·(P+Tk) + j (4 per Philox block).
void dropout_scales(const AttnParams& p, int64_t b, int64_t h, int64_t i0, int64_t nq, const KeyBlock& kb, float* M) {
  const int64_t S = p.P + p.Tk, j0 = kb.prefix ? kb.j0 : p.P + kb.j0;
  const float keep = 1.f / (1.f - p.dropout);
  uint32_t r[4];
  for (int64_t row = 0; row < nq; row++) {
    const uint64_t base = (uint64_t)(((b * p.H + h) * p.Tq + i0 + row) * S + j0);
    uint64_t blk = ~(uint64_t)0;
    float* m = M + row * BK;
    for (int64_t c = 0; c < kb.n; c++) {
      const uint64_t e = base + (uint64_t)c;
      if ((e >> 2) != blk) ad_rand::block4(p.seed, p.offset, blk = e >> 2, r);
      m[c] = ad_rand::u01(r[e & 3]) >= p.dropout ? keep : 0.f;
    }
  }
}
// T (a tile, ld BK) times the keep-scales M
void scale_tile(int64_t nq, int64_t n, const float* M, float* T) {
  for (int64_t row = 0; row < nq; row++)
    for (int64_t c = 0; c < n; c++) T[row * BK + c] *= M[row * BK + c];
}

void transpose(const float* src, int64_t rows, int64_t cols, int64_t src_ld, float* dst, int64_t dst_ld) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) dst[c * dst_ld + r] = src[r * src_ld + c];
}

// Applies the additive mask, clamping, causal and key_keep masks to a score tile S (nq x kb.n, ld BK) whose
// rows are queries [i0, i0+nq) of (b, h).
void apply_masks(const AttnParams& p, int64_t b, int64_t h, int64_t i0, int64_t nq, const KeyBlock& kb, float* S) {
  const int64_t jg0 = kb.prefix ? kb.j0 : p.P + kb.j0;  // index among the P+Tk keys
  const int64_t n = kb.n;
  if (!p.mask) kernels().clamp(nq, n, S);
  for (int64_t r = 0; r < nq; r++) {
    float* s = S + r * BK;
    if (p.mask) {
      const float* mr = p.mask + b * p.mask_sb + h * p.mask_sh + (i0 + r) * p.mask_si + jg0 * p.mask_sj;
      const int64_t sj = p.mask_sj;
      if (sj == 1) {
        for (int64_t j = 0; j < n; j++) {
          const float x = s[j] + mr[j];
          s[j] = x < -FLT_MAX ? -FLT_MAX : (x > FLT_MAX ? FLT_MAX : x);
        }
      } else {
        for (int64_t j = 0; j < n; j++) {
          const float x = s[j] + mr[j * sj];
          s[j] = x < -FLT_MAX ? -FLT_MAX : (x > FLT_MAX ? FLT_MAX : x);
        }
      }
    }
    if (p.key_keep) {
      const uint8_t* kk = p.key_keep + b * (p.P + p.Tk) + jg0;
      for (int64_t j = 0; j < n; j++)
        if (!kk[j]) s[j] = -FLT_MAX;
    }
    if (p.causal && !kb.prefix) {
      // visible iff j0 + j <= i + (Tk - Tq)  <=>  j <= lim
      const int64_t lim = (i0 + r) + (p.Tk - p.Tq) - kb.j0;
      for (int64_t j = std::max<int64_t>(lim + 1, 0); j < n; j++) s[j] = -FLT_MAX;
    }
  }
}

// One tile product C (M x N, ldc) = [C +] A·B with A element (i, k) at A[i·rsa + k·csa] and B row-major (ld ldb): on the
// bf16 kernels with bf16-rounded operands under mixed precision where the bf16 GEMMs run on AMX or AVX512-BF16, else the f32
// kernel.
void tile_gemm(const AttnParams& p, const Kernels& K, int64_t M, int64_t N, int64_t Kd, const float* A, int64_t rsa, int64_t csa,
               const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (p.mixed && (csa == 1 || rsa == 1) && bf16_small_gemm(M, N, Kd, A, csa != 1, csa != 1 ? csa : rsa, B, ldb, C, ldc, accumulate))
    return;
  K.gemm(M, N, Kd, A, rsa, csa, B, ldb, C, ldc, accumulate);
}

// Under mixed precision on the bf16 kernels the tiles that multiply by Kᵀ or Vᵀ take K's and V's rows as they are (packed
// transposed) and the products that need scale·Q fold `scale` into the product, so no scaled copy of Q and no
// transposed copy of K or V is made (they cost as much as the tile products at BERT sizes).
bool bf16_tiles(const AttnParams& p) { return p.mixed && bf16_small_available(); }

// S (nq x kb.n, ld BK) = scale·Q·Kᵀ for queries [i0, i0+nq) of (b, h) and key block kb, on the bf16 kernels (bf16_tiles).
void scores_bf16(const AttnParams& p, const float* q, const float* k, const float* pk, int64_t b, int64_t h, int64_t g, int64_t i0,
                int64_t nq, const KeyBlock& kb, float* S) {
  bf16_small_gemm(nq, kb.n, p.D, q + qrow(p, b, h, i0, p.D), false, qld(p, p.D), key_rows(p, k, pk, b, g, kb), kb_ld(p, kb, p.D), S, BK,
                 false, true, p.scale);
}

// Runs fn(task, scratch) for task in [0, ntasks) on the pool with dynamic scheduling. make_scratch is
// called once per participating thread.
template <class Scratch, class Make, class Fn>
void run_tasks(int64_t ntasks, Make make_scratch, Fn fn) {
  if (ntasks <= 0) return;
  std::atomic<int64_t> next{0};
  const int nt = (int)std::min<int64_t>(ntasks, num_threads());
  parallel_run(nt, [&](int, int) {
    Scratch sc = make_scratch();
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= ntasks) break;
      fn(t, sc);
    }
  });
}

// Scaled copy of query rows [i0, i0+nq) of (b, h) into Qs (nq x D).
void load_q(const AttnParams& p, const float* q, int64_t b, int64_t h, int64_t i0, int64_t nq, float* Qs) {
  const float* src = q + qrow(p, b, h, i0, p.D);
  const int64_t ld = qld(p, p.D);
  for (int64_t r = 0; r < nq; r++)
    for (int64_t d = 0; d < p.D; d++) Qs[r * p.D + d] = src[r * ld + d] * p.scale;
}

struct FwdScratch {
  std::vector<float> Qs, Kt, S, acc, m, l, M;  // M: dropout keep-scales of the tile
};

struct BwdScratch {
  std::vector<float> Qs, Kt, Vt, S, dP, dKacc, dVacc, dQacc, m, l, M;  // M: dropout keep-scales of the tile
};

bool params_ok(const AttnParams& p) {
  return p.B > 0 && p.H > 0 && p.Hkv > 0 && p.H % p.Hkv == 0 && p.Tq > 0 && p.Tk >= 0 && p.P >= 0 &&
         p.P + p.Tk > 0 && p.D >= 0 && p.Dv >= 0;
}

}  // namespace

// -------------------------------------------------------------------------------------------------------------
// Forward
// -------------------------------------------------------------------------------------------------------------

void attention_fwd_cpu(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, float* out, float* lse) {
  if (p.B <= 0 || p.H <= 0 || p.Tq <= 0) return;
  if (!params_ok(p)) {
    // No keys at all (P + Tk == 0) or inconsistent heads: define the output as zeros.
    std::fill(out, out + p.B * p.H * p.Tq * std::max<int64_t>(p.Dv, 0), 0.f);
    std::fill(lse, lse + p.B * p.H * p.Tq, -FLT_MAX);
    return;
  }
  const Kernels& K = kernels();
  const int64_t nqb = (p.Tq + BQ - 1) / BQ;
  const int64_t nkb = num_key_blocks(p);
  const int64_t group = p.H / p.Hkv;
  const int64_t D = p.D, Dv = p.Dv;
  const bool bt = bf16_tiles(p);  // tile products on bf16 kernels (AMX or AVX512-BF16)

  run_tasks<FwdScratch>(
      p.B * p.H * nqb,
      [&] {
        FwdScratch s;
        s.Qs.resize(BQ * D + 1);
        s.Kt.resize(D * BK + 1);
        s.S.resize(BQ * BK);
        s.acc.resize(BQ * Dv + 1);
        s.m.resize(BQ);
        s.l.resize(BQ);
        if (p.dropout > 0) s.M.resize(BQ * BK);
        return s;
      },
      [&](int64_t task, FwdScratch& s) {
        const int64_t qb = task % nqb, bh = task / nqb;
        const int64_t h = bh % p.H, b = bh / p.H, g = h / group;
        const int64_t i0 = qb * BQ, nq = std::min(BQ, p.Tq - i0);
        if (!bt) load_q(p, q, b, h, i0, nq, s.Qs.data());
        std::fill(s.acc.begin(), s.acc.end(), 0.f);
        std::fill(s.m.begin(), s.m.end(), -FLT_MAX);
        std::fill(s.l.begin(), s.l.end(), 0.f);

        auto do_block = [&](const KeyBlock& kb) {
          const float* kr = key_rows(p, k, pk, b, g, kb);
          const float* vr = value_rows(p, v, pv, b, g, kb);
          if (bt) {
            scores_bf16(p, q, k, pk, b, h, g, i0, nq, kb, s.S.data());
          } else {
            transpose(kr, kb.n, D, kb_ld(p, kb, D), s.Kt.data(), BK);
            tile_gemm(p, K, nq, kb.n, D, s.Qs.data(), D, 1, s.Kt.data(), BK, s.S.data(), BK, false);
          }
          apply_masks(p, b, h, i0, nq, kb, s.S.data());
          K.online_softmax(nq, kb.n, s.S.data(), s.m.data(), s.l.data(), s.acc.data(), Dv);
          // (the normaliser l summed the undropped probabilities; only the products with V see the dropout)
          if (p.dropout > 0) {
            dropout_scales(p, b, h, i0, nq, kb, s.M.data());
            scale_tile(nq, kb.n, s.M.data(), s.S.data());
          }
          tile_gemm(p, K, nq, Dv, kb.n, s.S.data(), BK, 1, vr, kb_ld(p, kb, Dv), s.acc.data(), Dv, true);
        };

        bool skipped = false;
        for (int64_t kbi = 0; kbi < nkb; kbi++) {
          const KeyBlock kb = key_block(p, kbi);
          if (causally_hidden(p, kb, i0, nq)) {
            skipped = true;
            continue;
          }
          do_block(kb);
        }
        if (skipped) {
          // A row whose every visible score is -FLT_MAX attends uniformly over *all* keys, including the
          // skipped (causally hidden, hence also -FLT_MAX) ones. For other rows those keys contribute
          // exp(-FLT_MAX - m) == 0 exactly, so re-running them is harmless.
          bool any_uniform = false;
          for (int64_t r = 0; r < nq; r++) any_uniform |= (s.m[r] == -FLT_MAX);
          if (any_uniform)
            for (int64_t kbi = 0; kbi < nkb; kbi++) {
              const KeyBlock kb = key_block(p, kbi);
              if (causally_hidden(p, kb, i0, nq)) do_block(kb);
            }
        }

        float* o = out + qrow(p, b, h, i0, Dv);
        const int64_t old = qld(p, Dv);
        float* ls = lse + (b * p.H + h) * p.Tq + i0;
        for (int64_t r = 0; r < nq; r++) {
          const float inv = 1.f / s.l[r];  // l >= 1 (the max element contributes exp(0))
          for (int64_t c = 0; c < Dv; c++) o[r * old + c] = s.acc[r * Dv + c] * inv;
          ls[r] = s.m[r] + std::log(s.l[r]);
        }
      });
}

// -------------------------------------------------------------------------------------------------------------
// Backward
// -------------------------------------------------------------------------------------------------------------

void attention_bwd_cpu(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, const float* out, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv, float* dpk, float* dpv) {
  if (p.B <= 0 || p.H <= 0 || p.Hkv <= 0) return;
  const int64_t D = p.D, Dv = p.Dv;
  if (!params_ok(p)) {
    std::fill(dq, dq + p.B * p.H * std::max<int64_t>(p.Tq, 0) * D, 0.f);
    std::fill(dk, dk + p.B * p.Hkv * std::max<int64_t>(p.Tk, 0) * D, 0.f);
    std::fill(dv, dv + p.B * p.Hkv * std::max<int64_t>(p.Tk, 0) * Dv, 0.f);
    if (p.P > 0 && dpk) std::fill(dpk, dpk + p.B * p.Hkv * p.P * D, 0.f);
    if (p.P > 0 && dpv) std::fill(dpv, dpv + p.B * p.Hkv * p.P * Dv, 0.f);
    return;
  }
  // dK / dV (and the prefix's) are written block by block below, zeros included; dq is zeroed where it is accumulated

  const Kernels& K = kernels();
  const int64_t nqb = (p.Tq + BQ - 1) / BQ;
  const int64_t nkb = num_key_blocks(p);
  const int64_t group = p.H / p.Hkv;
  const int64_t rows = p.B * p.H * p.Tq;
  const bool bt = bf16_tiles(p);  // tile products on bf16 kernels (AMX or AVX512-BF16)

  // Per-row statistics: P = exp(S - mrow) * invl, Dd = dO·O; noskip[b,h,qb] when a row of that query
  // block is all-masked (uniform), which then needs every key block, causally hidden ones included.
  std::vector<float> mrow(rows), invl(rows), Dd(rows);
  std::vector<uint8_t> noskip(p.B * p.H * nqb, 0);

  auto make_bwd_scratch = [&] {
    BwdScratch s;
    s.Qs.resize(BQ * D + 1);
    s.Kt.resize(D * BK + 1);
    s.Vt.resize(Dv * BK + 1);
    s.S.resize(BQ * BK);
    s.dP.resize(BQ * BK);
    s.dKacc.resize(BK * D + 1);
    s.dVacc.resize(BK * Dv + 1);
    s.dQacc.resize(BQ * D + 1);
    s.m.resize(BQ);
    s.l.resize(BQ);
    if (p.dropout > 0) s.M.resize(BQ * BK);
    return s;
  };

  // Threshold on |lse| above which the float lse is too coarse to recover P (ulp(64) ≈ 7.6e-6).
  constexpr float kLseExact = 64.f;

  run_tasks<BwdScratch>(p.B * p.H * nqb, make_bwd_scratch, [&](int64_t task, BwdScratch& s) {
    const int64_t qb = task % nqb, bh = task / nqb;
    const int64_t h = bh % p.H, b = bh / p.H, g = h / group;
    const int64_t i0 = qb * BQ, nq = std::min(BQ, p.Tq - i0);
    const int64_t row0 = bh * p.Tq + i0;
    bool any_flag = false;
    for (int64_t r = 0; r < nq; r++) {
      const float L = lse[row0 + r];
      mrow[row0 + r] = L;
      invl[row0 + r] = 1.f;
      const int64_t orow = qrow(p, b, h, i0 + r, Dv);
      Dd[row0 + r] = row_dot(dout + orow, out + orow, Dv);
      if (!(std::fabs(L) <= kLseExact)) any_flag = true;
    }
    if (!any_flag) return;
    // Recompute max and sum exactly for this block over every key (no causal skipping).
    if (!bt) load_q(p, q, b, h, i0, nq, s.Qs.data());
    std::fill(s.m.begin(), s.m.end(), -FLT_MAX);
    std::fill(s.l.begin(), s.l.end(), 0.f);
    for (int64_t kbi = 0; kbi < nkb; kbi++) {
      const KeyBlock kb = key_block(p, kbi);
      if (bt) {
        scores_bf16(p, q, k, pk, b, h, g, i0, nq, kb, s.S.data());
      } else {
        transpose(key_rows(p, k, pk, b, g, kb), kb.n, D, kb_ld(p, kb, D), s.Kt.data(), BK);
        tile_gemm(p, K, nq, kb.n, D, s.Qs.data(), D, 1, s.Kt.data(), BK, s.S.data(), BK, false);
      }
      apply_masks(p, b, h, i0, nq, kb, s.S.data());
      K.stats(nq, kb.n, s.S.data(), s.m.data(), s.l.data());
    }
    for (int64_t r = 0; r < nq; r++) {
      if (std::fabs(lse[row0 + r]) <= kLseExact) continue;
      mrow[row0 + r] = s.m[r];
      invl[row0 + r] = 1.f / s.l[r];
      if (s.m[r] == -FLT_MAX) noskip[task] = 1;
    }
  });

  // One (query block, key block) tile: S -> P (in s.S), dP -> dS (in s.dP). Returns false if skipped.
  auto tile = [&](BwdScratch& s, int64_t b, int64_t h, int64_t g, int64_t qb, const KeyBlock& kb, bool need_vt,
                  bool q_loaded) -> bool {
    const int64_t i0 = qb * BQ, nq = std::min(BQ, p.Tq - i0);
    if (causally_hidden(p, kb, i0, nq) && !noskip[(b * p.H + h) * nqb + qb]) return false;
    const int64_t row0 = (b * p.H + h) * p.Tq + i0;
    if (bt) {
      scores_bf16(p, q, k, pk, b, h, g, i0, nq, kb, s.S.data());
    } else {
      if (!q_loaded) load_q(p, q, b, h, i0, nq, s.Qs.data());
      if (need_vt) {
        transpose(key_rows(p, k, pk, b, g, kb), kb.n, D, kb_ld(p, kb, D), s.Kt.data(), BK);
        transpose(value_rows(p, v, pv, b, g, kb), kb.n, Dv, kb_ld(p, kb, Dv), s.Vt.data(), BK);
      }
      tile_gemm(p, K, nq, kb.n, D, s.Qs.data(), D, 1, s.Kt.data(), BK, s.S.data(), BK, false);
    }
    apply_masks(p, b, h, i0, nq, kb, s.S.data());
    K.probs(nq, kb.n, s.S.data(), mrow.data() + row0, invl.data() + row0);
    if (bt)  // dP = dO·Vᵀ with V's rows packed as they are
      bf16_small_gemm(nq, kb.n, Dv, dout + qrow(p, b, h, i0, Dv), false, qld(p, Dv), value_rows(p, v, pv, b, g, kb), kb_ld(p, kb, Dv),
                     s.dP.data(), BK, false, true);
    else
      tile_gemm(p, K, nq, kb.n, Dv, dout + qrow(p, b, h, i0, Dv), qld(p, Dv), 1, s.Vt.data(), BK, s.dP.data(), BK, false);
    // dropout: O = (P∘M)·V, so dP = (dO·Vᵀ)∘M and dV = (P∘M)ᵀ·dO; dS = P ⊙ (dP − rowsum(dO∘O)) as without it
    if (p.dropout > 0) {
      dropout_scales(p, b, h, i0, nq, kb, s.M.data());
      scale_tile(nq, kb.n, s.M.data(), s.dP.data());
    }
    K.dsoft(nq, kb.n, s.S.data(), s.dP.data(), Dd.data() + row0);
    if (p.dropout > 0) scale_tile(nq, kb.n, s.M.data(), s.S.data());
    return true;
  };

  // dK/dV (and optionally dQ) for key blocks [kb_begin, kb_end) of (b, g).
  auto kv_pass = [&](BwdScratch& s, int64_t b, int64_t g, int64_t kb_begin, int64_t kb_end, bool do_dq) {
    for (int64_t kbi = kb_begin; kbi < kb_end; kbi++) {
      const KeyBlock kb = key_block(p, kbi);
      const float* kr = key_rows(p, k, pk, b, g, kb);
      if (!bt) {
        transpose(kr, kb.n, D, kb_ld(p, kb, D), s.Kt.data(), BK);
        transpose(value_rows(p, v, pv, b, g, kb), kb.n, Dv, kb_ld(p, kb, Dv), s.Vt.data(), BK);
      }
      std::fill(s.dKacc.begin(), s.dKacc.end(), 0.f);
      std::fill(s.dVacc.begin(), s.dVacc.end(), 0.f);
      for (int64_t h = g * group; h < (g + 1) * group; h++)
        for (int64_t qb = 0; qb < nqb; qb++) {
          if (!tile(s, b, h, g, qb, kb, false, false)) continue;
          const int64_t i0 = qb * BQ, nq = std::min(BQ, p.Tq - i0);
          // dV += Pᵀ dO ; dK += dSᵀ (scale·Q)
          tile_gemm(p, K, kb.n, Dv, nq, s.S.data(), 1, BK, dout + qrow(p, b, h, i0, Dv), qld(p, Dv), s.dVacc.data(), Dv, true);
          if (bt)  // scale folded into the product: Q's rows as they are
            bf16_small_gemm(kb.n, D, nq, s.dP.data(), true, BK, q + qrow(p, b, h, i0, D), qld(p, D), s.dKacc.data(), D, true, false, p.scale);
          else
            tile_gemm(p, K, kb.n, D, nq, s.dP.data(), 1, BK, s.Qs.data(), D, s.dKacc.data(), D, true);
          // dQ += dS K   (scaled by `scale` at the end)
          if (do_dq) tile_gemm(p, K, nq, D, kb.n, s.dP.data(), BK, 1, kr, kb_ld(p, kb, D), dq + qrow(p, b, h, i0, D), qld(p, D), true);
        }
      // every key block of (b, g) passes here once: its dK / dV rows are written (zeros when no query saw it)
      float* dkr = kb.prefix ? (dpk ? dpk + ((b * p.Hkv + g) * p.P + kb.j0) * D : nullptr) : dk + krow(p, b, g, kb.j0, D);
      float* dvr = kb.prefix ? (dpv ? dpv + ((b * p.Hkv + g) * p.P + kb.j0) * Dv : nullptr) : dv + krow(p, b, g, kb.j0, Dv);
      const int64_t dkl = kb_ld(p, kb, D), dvl = kb_ld(p, kb, Dv);
      for (int64_t j = 0; j < kb.n; j++) {
        if (dkr) std::copy(s.dKacc.begin() + j * D, s.dKacc.begin() + (j + 1) * D, dkr + j * dkl);
        if (dvr) std::copy(s.dVacc.begin() + j * Dv, s.dVacc.begin() + (j + 1) * Dv, dvr + j * dvl);
      }
    }
  };

  const int64_t nth = num_threads();
  const bool fused = nth <= 1 || p.B * p.Hkv >= 2 * nth;
  if (fused) {
    // this schedule accumulates dS·K into dq across key blocks
    parallel_for(p.B * p.H * p.Tq * D, 1 << 16, [&](int64_t a, int64_t e) { std::fill(dq + a, dq + e, 0.f); });
    run_tasks<BwdScratch>(p.B * p.Hkv, make_bwd_scratch, [&](int64_t task, BwdScratch& s) {
      kv_pass(s, task / p.Hkv, task % p.Hkv, 0, nkb, true);
    });
  } else {
    run_tasks<BwdScratch>(p.B * p.Hkv * nkb, make_bwd_scratch, [&](int64_t task, BwdScratch& s) {
      const int64_t kbi = task % nkb, bg = task / nkb;
      kv_pass(s, bg / p.Hkv, bg % p.Hkv, kbi, kbi + 1, false);
    });
    run_tasks<BwdScratch>(p.B * p.H * nqb, make_bwd_scratch, [&](int64_t task, BwdScratch& s) {
      const int64_t qb = task % nqb, bh = task / nqb;
      const int64_t h = bh % p.H, b = bh / p.H, g = h / group;
      const int64_t i0 = qb * BQ, nq = std::min(BQ, p.Tq - i0);
      if (!bt) load_q(p, q, b, h, i0, nq, s.Qs.data());
      std::fill(s.dQacc.begin(), s.dQacc.end(), 0.f);
      for (int64_t kbi = 0; kbi < nkb; kbi++) {
        const KeyBlock kb = key_block(p, kbi);
        if (!tile(s, b, h, g, qb, kb, true, true)) continue;
        tile_gemm(p, K, nq, D, kb.n, s.dP.data(), BK, 1, key_rows(p, k, pk, b, g, kb), kb_ld(p, kb, D), s.dQacc.data(), D, true);
      }
      float* dqr = dq + qrow(p, b, h, i0, D);
      for (int64_t r = 0; r < nq; r++) std::copy(s.dQacc.begin() + r * D, s.dQacc.begin() + (r + 1) * D, dqr + r * qld(p, D));
    });
  }
  // dq holds dS·K; the true gradient is scale·dS·K.
  const int64_t nd = p.B * p.H * p.Tq * D;
  parallel_for(nd, 1 << 16, [&](int64_t a, int64_t e) {
    for (int64_t x = a; x < e; x++) dq[x] *= p.scale;
  });
}

// -------------------------------------------------------------------------------------------------------------
// Naive reference (double precision, one materialised score row at a time). Not declared in attention.h;
// tests declare it themselves. round_scores = true reproduces the float kernel's masking arithmetic
// (scores rounded to float before the mask is added, so a finfo.min mask saturates exactly as in f32);
// false keeps everything in double (smooth in the inputs: for finite-difference checks).
// -------------------------------------------------------------------------------------------------------------

namespace {

void ref_scores(const AttnParams& p, const float* q, const float* k, const float* pk, int64_t b, int64_t h,
                int64_t i, bool round_scores, std::vector<double>& s) {
  const int64_t N = p.P + p.Tk, g = h / (p.H / p.Hkv);
  s.assign(N, 0.0);
  const float* qi = q + ((b * p.H + h) * p.Tq + i) * p.D;
  for (int64_t j = 0; j < N; j++) {
    const float* kj = j < p.P ? pk + ((b * p.Hkv + g) * p.P + j) * p.D : k + ((b * p.Hkv + g) * p.Tk + j - p.P) * p.D;
    double dot = 0;
    for (int64_t d = 0; d < p.D; d++) dot += (double)qi[d] * (double)kj[d];
    const double x = (double)p.scale * dot;
    const double mval =
        p.mask ? (double)p.mask[b * p.mask_sb + h * p.mask_sh + i * p.mask_si + j * p.mask_sj] : 0.0;
    double sc;
    if (round_scores) {
      float xf = (float)x;
      if (p.mask) xf = xf + (float)mval;
      xf = xf < -FLT_MAX ? -FLT_MAX : (xf > FLT_MAX ? FLT_MAX : xf);
      sc = xf;
    } else {
      sc = x + mval;
      sc = sc < -FLT_MAX ? -FLT_MAX : (sc > FLT_MAX ? FLT_MAX : sc);
    }
    bool hidden = false;
    if (p.key_keep && !p.key_keep[b * N + j]) hidden = true;
    if (p.causal && j >= p.P && (j - p.P) > i + (p.Tk - p.Tq)) hidden = true;
    s[j] = hidden ? -(double)FLT_MAX : sc;
  }
}

void ref_softmax(std::vector<double>& s, double* lse_out) {
  double m = -INFINITY;
  for (double x : s) m = std::max(m, x);
  double sum = 0;
  for (double& x : s) {
    x = std::exp(x - m);
    sum += x;
  }
  for (double& x : s) x /= sum;
  if (lse_out) *lse_out = m + std::log(sum);
}

}  // namespace

void attention_ref_fwd(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, double* out, double* lse, bool round_scores) {
  const int64_t N = p.P + p.Tk;
  std::vector<double> s;
  for (int64_t b = 0; b < p.B; b++)
    for (int64_t h = 0; h < p.H; h++) {
      const int64_t g = h / (p.H / p.Hkv);
      for (int64_t i = 0; i < p.Tq; i++) {
        ref_scores(p, q, k, pk, b, h, i, round_scores, s);
        const int64_t row = (b * p.H + h) * p.Tq + i;
        ref_softmax(s, lse ? lse + row : nullptr);
        double* o = out + row * p.Dv;
        for (int64_t c = 0; c < p.Dv; c++) o[c] = 0;
        for (int64_t j = 0; j < N; j++) {
          const float* vj =
              j < p.P ? pv + ((b * p.Hkv + g) * p.P + j) * p.Dv : v + ((b * p.Hkv + g) * p.Tk + j - p.P) * p.Dv;
          for (int64_t c = 0; c < p.Dv; c++) o[c] += s[j] * vj[c];
        }
      }
    }
}

void attention_ref_bwd(const AttnParams& p, const float* q, const float* k, const float* v, const float* pk,
                       const float* pv, const float* dout, double* dq, double* dk, double* dv, double* dpk,
                       double* dpv, bool round_scores) {
  const int64_t N = p.P + p.Tk, D = p.D, Dv = p.Dv;
  std::fill(dq, dq + p.B * p.H * p.Tq * D, 0.0);
  std::fill(dk, dk + p.B * p.Hkv * p.Tk * D, 0.0);
  std::fill(dv, dv + p.B * p.Hkv * p.Tk * Dv, 0.0);
  if (p.P > 0) {
    std::fill(dpk, dpk + p.B * p.Hkv * p.P * D, 0.0);
    std::fill(dpv, dpv + p.B * p.Hkv * p.P * Dv, 0.0);
  }
  std::vector<double> s, dP(N);
  for (int64_t b = 0; b < p.B; b++)
    for (int64_t h = 0; h < p.H; h++) {
      const int64_t g = h / (p.H / p.Hkv);
      for (int64_t i = 0; i < p.Tq; i++) {
        ref_scores(p, q, k, pk, b, h, i, round_scores, s);
        ref_softmax(s, nullptr);
        const int64_t row = (b * p.H + h) * p.Tq + i;
        const float* doi = dout + row * Dv;
        const float* qi = q + row * D;
        double Di = 0;
        for (int64_t j = 0; j < N; j++) {
          const float* vj = j < p.P ? pv + ((b * p.Hkv + g) * p.P + j) * Dv : v + ((b * p.Hkv + g) * p.Tk + j - p.P) * Dv;
          double acc = 0;
          for (int64_t c = 0; c < Dv; c++) acc += (double)doi[c] * vj[c];
          dP[j] = acc;
          Di += s[j] * acc;
        }
        for (int64_t j = 0; j < N; j++) {
          const bool pre = j < p.P;
          const int64_t off = pre ? ((b * p.Hkv + g) * p.P + j) : ((b * p.Hkv + g) * p.Tk + j - p.P);
          const float* kj = (pre ? pk : k) + off * D;
          double* dkj = (pre ? dpk : dk) + off * D;
          double* dvj = (pre ? dpv : dv) + off * Dv;
          const double ds = s[j] * (dP[j] - Di) * p.scale;
          for (int64_t d = 0; d < D; d++) {
            dq[row * D + d] += ds * kj[d];
            dkj[d] += ds * qi[d];
          }
          for (int64_t c = 0; c < Dv; c++) dvj[c] += s[j] * doi[c];
        }
      }
    }
}

}  // namespace ad
