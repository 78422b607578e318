// ref64 — a float64 reference implementation of the ops the gradient checks use, written for clarity, not speed:
// every tensor is a dense Float64Array in row-major order, every op builds its output element by element from
// PyTorch's definition (attention: the library's documented rules, i.e. HF's — lowest finite float for masked scores,
// causal masks aligned to the last query when Tq < Tk, as with a KV cache). `test/ops/gradcheck.test.ts` runs each case's function through these (with the same leaf
// values) to get float64 finite differences and a float64 forward to hold our f32 ops against.
//
// Constants a case captures (index tensors, masks, rope tables, targets) are our Tensors: every op lifts them.
// Dropout's mask comes from our own op (the counter-based generator, same seed and shape); the reference then
// multiplies in float64. A cast to f32 is the identity here (the reference has no f32); a cast to bf16 rounds as
// bf16 does (nearest even).
import { Tensor, ops as realOps, ones } from '../../lib/index.ts';

type Num = number;
const numelOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
function stridesOf(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}
const normDim = (d: number, n: number) => (d < 0 ? d + n : d);

export class R64 {
  readonly strides: number[];
  constructor(readonly data: Float64Array, readonly shape: number[]) {
    if (data.length !== numelOf(shape)) throw new Error(`R64: ${data.length} values for shape [${shape}]`);
    this.strides = stridesOf(shape);
  }
  get numel(): number { return this.data.length; }
  get ndim(): number { return this.shape.length; }
  /** Element at a multi-index (already within the shape). */
  at(idx: number[]): number {
    let o = 0;
    for (let i = 0; i < idx.length; i++) o += idx[i]! * this.strides[i]!;
    return this.data[o]!;
  }
  static from(t: Tensor): R64 {
    const a = t.toArray() as ArrayLike<number | bigint>;
    return new R64(Float64Array.from(Array.from(a, Number)), [...t.shape]);
  }
  // the Tensor methods the cases call
  add(o: Operand): R64 { return add(this, o); }
  sub(o: Operand): R64 { return sub(this, o); }
  mul(o: Operand): R64 { return mul(this, o); }
  div(o: Operand): R64 { return div(this, o); }
  neg(): R64 { return neg(this); }
  mean(dim?: number | number[], opts?: { keepdim?: boolean }): R64 { return mean(this, dim, opts); }
  max(dim?: number, opts?: { keepdim?: boolean }): R64 { return max(this, dim, opts); }
  maskedFill(mask: Tensor | R64, v: number): R64 { return maskedFill(this, mask, v); }
  slice(dim: number, start?: number, end?: number, step?: number): R64 { return slice(this, dim, start, end, step); }
  reshape(...s: number[]): R64 { return reshape(this, s); }
  view(...s: number[]): R64 { return reshape(this, s); }
  contiguous(): R64 { return this; }
  detach(): R64 { return this; }  // no tape here: the value is all there is
  clone(): R64 { return new R64(this.data.slice(), [...this.shape]); }
  get T(): R64 { return transpose(this, -2, -1); }
}

type Operand = R64 | Tensor | number;
function lift(x: Operand): R64 {
  if (x instanceof R64) return x;
  if (typeof x === 'number') return new R64(Float64Array.of(x), []);
  return R64.from(x);
}

/** Calls f with every multi-index of shape in row-major order. */
function forEachIndex(shape: number[], f: (idx: number[], flat: number) => void): void {
  const n = numelOf(shape), idx = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < n; flat++) {
    f(idx, flat);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
}
function build(shape: number[], f: (idx: number[]) => number): R64 {
  const out = new Float64Array(numelOf(shape));
  forEachIndex(shape, (idx, flat) => { out[flat] = f(idx); });
  return new R64(out, shape);
}

// ---- elementwise, broadcasting ----------------------------------------------------------------------

function broadcastShape(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length), out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`ref64: cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}
/** x's element for an index of a broadcast output shape. */
function bget(x: R64, idx: number[]): number {
  let o = 0;
  const off = idx.length - x.ndim;
  for (let i = 0; i < x.ndim; i++) if (x.shape[i] !== 1) o += idx[off + i]! * x.strides[i]!;
  return x.data[o]!;
}
function map2(a: Operand, b: Operand, f: (x: Num, y: Num) => Num): R64 {
  const A = lift(a), B = lift(b);
  return build(broadcastShape(A.shape, B.shape), (idx) => f(bget(A, idx), bget(B, idx)));
}
function map1(x: Operand, f: (v: Num) => Num): R64 {
  const X = lift(x);
  return new R64(X.data.map(f), [...X.shape]);
}

export const add = (a: Operand, b: Operand) => map2(a, b, (x, y) => x + y);
export const sub = (a: Operand, b: Operand) => map2(a, b, (x, y) => x - y);
export const mul = (a: Operand, b: Operand) => map2(a, b, (x, y) => x * y);
export const div = (a: Operand, b: Operand) => map2(a, b, (x, y) => x / y);
export const maximum = (a: Operand, b: Operand) => map2(a, b, Math.max);
export const minimum = (a: Operand, b: Operand) => map2(a, b, Math.min);
export const neg = (x: Operand) => map1(x, (v) => -v);
export const exp = (x: Operand) => map1(x, Math.exp);
export const log = (x: Operand) => map1(x, Math.log);
export const sqrt = (x: Operand) => map1(x, Math.sqrt);
export const rsqrt = (x: Operand) => map1(x, (v) => 1 / Math.sqrt(v));
export const abs = (x: Operand) => map1(x, Math.abs);
export const sin = (x: Operand) => map1(x, Math.sin);
export const cos = (x: Operand) => map1(x, Math.cos);
export const atan = (x: Operand) => map1(x, Math.atan);
export const tanh = (x: Operand) => map1(x, Math.tanh);
export const sigmoid = (x: Operand) => map1(x, (v) => 1 / (1 + Math.exp(-v)));
export const relu = (x: Operand) => map1(x, (v) => (v > 0 ? v : 0));
export const silu = (x: Operand) => map1(x, (v) => v / (1 + Math.exp(-v)));
export const quickGelu = (x: Operand) => map1(x, (v) => v / (1 + Math.exp(-1.702 * v)));
export const pow = (x: Operand, p: number) => map1(x, (v) => (p === 0 ? 1 : Math.pow(v, p)));
export function clamp(x: Operand, lo?: number | null, hi?: number | null): R64 {
  return map1(x, (v) => Math.min(hi ?? Infinity, Math.max(lo ?? -Infinity, v)));
}

/** erf to double precision: (2/√π)·e^(−x²)·Σ 2ⁿx^(2n+1)/(2n+1)!! has only positive terms (no cancellation). */
export function erf(x: number): number {
  if (Math.abs(x) > 6) return Math.sign(x);
  let term = x, sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
    if (Math.abs(term) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}
export function gelu(x: Operand, opts: { approximate?: 'none' | 'tanh' } = {}): R64 {
  if (opts.approximate === 'tanh') {
    const k = Math.sqrt(2 / Math.PI);
    return map1(x, (v) => 0.5 * v * (1 + Math.tanh(k * (v + 0.044715 * v * v * v))));
  }
  return map1(x, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
}

export function where(cond: Operand, a: Operand, b: Operand): R64 {
  const C = lift(cond), A = lift(a), B = lift(b);
  return build(broadcastShape(broadcastShape(C.shape, A.shape), B.shape), (idx) => (bget(C, idx) ? bget(A, idx) : bget(B, idx)));
}
export function maskedFill(x: Operand, mask: Operand, value: number): R64 {
  const X = lift(x), M = lift(mask);
  return build(broadcastShape(X.shape, M.shape), (idx) => (bget(M, idx) ? value : bget(X, idx)));
}

// ---- reductions --------------------------------------------------------------------------------------

function reduce(x: Operand, dim: number | number[] | undefined, keepdim: boolean, f: (vals: number[]) => number): R64 {
  const X = lift(x);
  const dims = dim === undefined ? X.shape.map((_, i) => i) : (Array.isArray(dim) ? dim : [dim]).map((d) => normDim(d, X.ndim));
  const outShapeKeep = X.shape.map((s, i) => (dims.includes(i) ? 1 : s));
  const groups = new Map<number, number[]>();
  const ks = stridesOf(outShapeKeep);
  forEachIndex(X.shape, (idx, flat) => {
    let o = 0;
    for (let i = 0; i < idx.length; i++) if (!dims.includes(i)) o += idx[i]! * ks[i]!;
    let g = groups.get(o);
    if (!g) groups.set(o, (g = []));
    g.push(X.data[flat]!);
  });
  const out = new Float64Array(numelOf(outShapeKeep));
  for (const [o, vals] of groups) out[o] = f(vals);
  return new R64(out, keepdim ? outShapeKeep : X.shape.filter((_, i) => !dims.includes(i)));
}
const sumOf = (v: number[]) => v.reduce((a, b) => a + b, 0);
export const sum = (x: Operand, dim?: number | number[], o: { keepdim?: boolean } = {}) => reduce(x, dim, !!o.keepdim, sumOf);
export const mean = (x: Operand, dim?: number | number[], o: { keepdim?: boolean } = {}) => reduce(x, dim, !!o.keepdim, (v) => sumOf(v) / v.length);
export const max = (x: Operand, dim?: number, o: { keepdim?: boolean } = {}) => reduce(x, dim, !!o.keepdim, (v) => Math.max(...v));

// ---- shapes and views (all as copies) ------------------------------------------------------------------

export function reshape(x: Operand, shape: number[]): R64 {
  const X = lift(x);
  const known = shape.filter((s) => s !== -1).reduce((a, b) => a * b, 1);
  return new R64(X.data.slice(), shape.map((s) => (s === -1 ? X.numel / known : s)));
}
export function permute(x: Operand, perm: number[]): R64 {
  const X = lift(x), p = perm.map((d) => normDim(d, X.ndim));
  return build(p.map((d) => X.shape[d]!), (idx) => {
    const src = new Array<number>(X.ndim);
    for (let i = 0; i < p.length; i++) src[p[i]!] = idx[i]!;
    return X.at(src);
  });
}
export function transpose(x: Operand, d0: number, d1: number): R64 {
  const X = lift(x), p = X.shape.map((_, i) => i);
  const a = normDim(d0, X.ndim), b = normDim(d1, X.ndim);
  [p[a], p[b]] = [p[b]!, p[a]!];
  return permute(X, p);
}
export function flatten(x: Operand, start = 0, end = -1): R64 {
  const X = lift(x), s = normDim(start, X.ndim), e = normDim(end, X.ndim);
  return reshape(X, [...X.shape.slice(0, s), numelOf(X.shape.slice(s, e + 1)), ...X.shape.slice(e + 1)]);
}
export function unsqueeze(x: Operand, dim: number): R64 {
  const X = lift(x), d = normDim(dim, X.ndim + 1);
  return reshape(X, [...X.shape.slice(0, d), 1, ...X.shape.slice(d)]);
}
export function squeeze(x: Operand, dim?: number): R64 {
  const X = lift(x);
  if (dim === undefined) return reshape(X, X.shape.filter((s) => s !== 1));
  const d = normDim(dim, X.ndim);
  return X.shape[d] === 1 ? reshape(X, X.shape.filter((_, i) => i !== d)) : X;
}
export function expand(x: Operand, shape: number[]): R64 {
  const X = lift(x), off = shape.length - X.ndim;
  const full = shape.map((s, i) => (s === -1 ? X.shape[i - off]! : s));
  return build(full, (idx) => bget(X, idx));
}
export function slice(x: Operand, dim: number, start = 0, end?: number, step = 1): R64 {
  const X = lift(x), d = normDim(dim, X.ndim), n = X.shape[d]!;
  const s = Math.min(Math.max(start < 0 ? start + n : start, 0), n);
  const e = Math.min(Math.max(end === undefined ? n : end < 0 ? end + n : end, 0), n);
  const len = Math.max(0, Math.ceil((e - s) / step));
  const shape = X.shape.map((v, i) => (i === d ? len : v));
  return build(shape, (idx) => X.at(idx.map((v, i) => (i === d ? s + v * step : v))));
}
export function narrow(x: Operand, dim: number, start: number, length: number): R64 {
  const X = lift(x), n = X.shape[normDim(dim, X.ndim)]!, a = start < 0 ? start + n : start;
  if (a < 0 || a + length > n) throw new Error(`ref64 narrow: [${start}, +${length}) outside a dimension of ${n}`);
  return slice(X, dim, a, a + length);
}
export function concat(xs: Operand[], dim = 0): R64 {
  const Xs = xs.map(lift), d = normDim(dim, Xs[0]!.ndim);
  const shape = Xs[0]!.shape.map((v, i) => (i === d ? Xs.reduce((a, X) => a + X.shape[d]!, 0) : v));
  return build(shape, (idx) => {
    let j = idx[d]!;
    for (const X of Xs) {
      if (j < X.shape[d]!) return X.at(idx.map((v, i) => (i === d ? j : v)));
      j -= X.shape[d]!;
    }
    throw new Error('ref64 concat: index out of range');
  });
}
export function stack(xs: Operand[], dim = 0): R64 {
  return concat(xs.map((x) => unsqueeze(x, dim)), dim);
}
export function split(x: Operand, sizeOrSizes: number | number[], dim = 0): R64[] {
  const X = lift(x), d = normDim(dim, X.ndim), n = X.shape[d]!;
  const sizes: number[] = [];
  if (Array.isArray(sizeOrSizes)) sizes.push(...sizeOrSizes);
  else for (let s = 0; s < n; s += sizeOrSizes) sizes.push(Math.min(sizeOrSizes, n - s));
  const out: R64[] = [];
  let s = 0;
  for (const len of sizes) {
    out.push(slice(X, d, s, s + len));
    s += len;
  }
  return out;
}
export function chunk(x: Operand, chunks: number, dim = 0): R64[] {
  const X = lift(x);
  return split(X, Math.ceil(X.shape[normDim(dim, X.ndim)]! / chunks), dim);
}
export function indexSelect(x: Operand, dim: number, index: Operand): R64 {
  const X = lift(x), I = lift(index), d = normDim(dim, X.ndim);
  const shape = X.shape.map((v, i) => (i === d ? I.numel : v));
  return build(shape, (idx) => X.at(idx.map((v, i) => (i === d ? I.data[v]! : v))));
}
export function gather(x: Operand, dim: number, index: Operand): R64 {
  const X = lift(x), I = lift(index), d = normDim(dim, X.ndim);
  return build([...I.shape], (idx) => X.at(idx.map((v, i) => (i === d ? I.at(idx) : v))));
}
export function embedding(ids: Operand, weight: Operand): R64 {
  const I = lift(ids), W = lift(weight), D = W.shape[1]!;
  return build([...I.shape, D], (idx) => W.at([I.at(idx.slice(0, -1)), idx[idx.length - 1]!]));
}
export const contiguous = (x: Operand) => lift(x);

/** bf16 rounding (nearest even) of a value already in f32 range. */
function roundBf16(v: number): number {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer);
  u[0] = (u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) & 0xffff0000;
  return f[0]!;
}
export function cast(x: Operand, dtype: string): R64 {
  if (dtype === 'bf16') return map1(x, roundBf16);
  if (dtype === 'f32') return lift(x);
  throw new Error(`ref64 cast: no reference for ${dtype}`);  // (so that a future case cannot pass by a no-op)
}

// ---- linear algebra and nn ops -------------------------------------------------------------------------

export function matmul(a: Operand, b: Operand): R64 {
  let A = lift(a), B = lift(b);
  const aVec = A.ndim === 1, bVec = B.ndim === 1;
  if (aVec) A = reshape(A, [1, A.shape[0]!]);
  if (bVec) B = reshape(B, [B.shape[0]!, 1]);
  const M = A.shape[A.ndim - 2]!, K = A.shape[A.ndim - 1]!, N = B.shape[B.ndim - 1]!;
  const batch = broadcastShape(A.shape.slice(0, -2), B.shape.slice(0, -2));
  const Ab = expand(A, [...batch, M, K]), Bb = expand(B, [...batch, K, N]);
  const nb = numelOf(batch), out = new Float64Array(nb * M * N);
  for (let z = 0; z < nb; z++)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) s += Ab.data[(z * M + i) * K + p]! * Bb.data[(z * K + p) * N + j]!;
        out[(z * M + i) * N + j] = s;
      }
  const shape = [...batch, ...(aVec ? [] : [M]), ...(bVec ? [] : [N])];
  return new R64(out, shape);
}
export function linear(x: Operand, w: Operand, b?: Operand | null, opts: { layout?: 'linear' | 'conv1d' } = {}): R64 {
  const y = matmul(x, opts.layout === 'conv1d' ? lift(w) : transpose(w, 0, 1));
  return b === undefined || b === null ? y : add(y, b);
}
export function softmax(x: Operand, dim: number): R64 {
  const X = lift(x);
  const m = max(X, dim, { keepdim: true });
  const e = exp(sub(X, m));
  return div(e, sum(e, dim, { keepdim: true }));
}
export function logSoftmax(x: Operand, dim: number): R64 {
  const X = lift(x);
  const m = max(X, dim, { keepdim: true });
  const lse = add(m, log(sum(exp(sub(X, m)), dim, { keepdim: true })));
  return sub(X, lse);
}
export function layerNorm(x: Operand, w?: Operand | null, b?: Operand | null, eps = 1e-5): R64 {
  const X = lift(x);
  const mu = mean(X, -1, { keepdim: true });
  const d = sub(X, mu);
  let y = div(d, sqrt(add(mean(mul(d, d), -1, { keepdim: true }), eps)));
  if (w) y = mul(y, w);
  if (b) y = add(y, b);
  return y;
}
export function rmsNorm(x: Operand, w?: Operand | null, eps = 1e-6): R64 {
  const X = lift(x);
  const y = div(X, sqrt(add(mean(mul(X, X), -1, { keepdim: true }), eps)));
  return w ? mul(y, w) : y;
}
export function dropout(x: Operand, p = 0.5, opts: { training?: boolean; seed?: number } = {}): R64 {
  const X = lift(x);
  if (opts.training === false || p === 0) return X;
  if (opts.seed === undefined) throw new Error('ref64 dropout: needs a fixed seed to share our mask');
  const one = ones(X.shape), m = realOps.dropout(one, p, { seed: opts.seed });
  const mask = R64.from(m);
  one.dispose();
  m.dispose();
  return mul(X, mask);
}
export function crossEntropy(logits: Operand, targets: Operand, opts: { ignoreIndex?: number; labelSmoothing?: number; reduction?: 'mean' | 'sum' | 'none' } = {}): R64 {
  const L = lift(logits), T = lift(targets), C = L.shape[L.ndim - 1]!, N = L.numel / C;
  const ignore = opts.ignoreIndex ?? -100, eps = opts.labelSmoothing ?? 0, red = opts.reduction ?? 'mean';
  const per = new Float64Array(N);
  let valid = 0;
  for (let i = 0; i < N; i++) {
    const t = T.data[i]!;
    if (t === ignore) continue;
    valid++;
    const row = L.data.subarray(i * C, (i + 1) * C);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    const nll = lse - row[t]!, smooth = lse - row.reduce((a, v) => a + v, 0) / C;
    per[i] = (1 - eps) * nll + eps * smooth;
  }
  if (red === 'none') return new R64(per, L.shape.slice(0, -1));
  const s = per.reduce((a, v) => a + v, 0);
  return new R64(Float64Array.of(red === 'sum' ? s : s / valid), []);
}
export function mseLoss(a: Operand, b: Operand, opts: { reduction?: 'mean' | 'sum' | 'none' } = {}): R64 {
  const d = sub(a, b), sq = mul(d, d);
  return opts.reduction === 'none' ? sq : opts.reduction === 'sum' ? sum(sq) : mean(sq);
}
export function rope(x: Operand, cosT: Operand, sinT: Operand, opts: { interleaved?: boolean } = {}): R64 {
  const X = lift(x), Cs = lift(cosT), Sn = lift(sinT), D = X.shape[X.ndim - 1]!, h = D / 2;
  if (Cs.ndim !== 2) throw new Error('ref64 rope: (T, D) tables only');
  return build([...X.shape], (idx) => {
    const t = idx[idx.length - 2]!, i = idx[idx.length - 1]!;
    const xi = (j: number) => X.at([...idx.slice(0, -1), j]);
    const c = Cs.at([t, i]), s = Sn.at([t, i]);
    if (opts.interleaved) return i % 2 === 0 ? xi(i) * c - xi(i + 1) * s : xi(i) * c + xi(i - 1) * s;
    return i < h ? xi(i) * c - xi(i + h) * s : xi(i) * c + xi(i - h) * s;
  });
}
const FLT_MAX = 3.4028234663852886e38;
export function scaledDotProductAttention(q: Operand, k: Operand, v: Operand, opts: {
  mask?: Operand | null; isCausal?: boolean; keyPaddingMask?: Operand | null; scale?: number; prefixK?: Operand | null; prefixV?: Operand | null;
} = {}): R64 {
  const Q = lift(q), K = lift(k), V = lift(v);
  const [B, H, Tq, D] = Q.shape as [number, number, number, number];
  const Hkv = K.shape[1]!, Tk = K.shape[2]!, Dv = V.shape[3]!;
  const PK = opts.prefixK ? lift(opts.prefixK) : null, PV = opts.prefixV ? lift(opts.prefixV) : null;
  const P = PK ? PK.shape[2]! : 0, S = P + Tk;
  // a bool mask means "may attend": 0 where true, the lowest finite float where false
  const boolMask = opts.mask instanceof Tensor && opts.mask.dtype === 'bool';
  const mask = opts.mask ? (boolMask ? map1(opts.mask, (b) => (b ? 0 : -FLT_MAX)) : lift(opts.mask)) : null, kpm = opts.keyPaddingMask ? lift(opts.keyPaddingMask) : null;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * H * Tq * Dv);
  for (let b = 0; b < B; b++)
    for (let hh = 0; hh < H; hh++) {
      const g = Math.floor(hh / (H / Hkv));
      const key = (j: number, d: number) => (j < P ? PK!.at([b, g, j, d]) : K.at([b, g, j - P, d]));
      const val = (j: number, d: number) => (j < P ? PV!.at([b, g, j, d]) : V.at([b, g, j - P, d]));
      for (let i = 0; i < Tq; i++) {
        // HF's additive-mask rule: clamp to the finite range, hidden keys get the lowest finite float
        const s = new Float64Array(S);
        for (let j = 0; j < S; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += Q.at([b, hh, i, d]) * key(j, d);
          let x = scale * dot + (mask ? bget(mask, [b, hh, i, j]) : 0);
          x = Math.min(FLT_MAX, Math.max(-FLT_MAX, x));
          const hidden = (kpm && !bget(kpm, [b, j])) || (opts.isCausal && j >= P && j - P > i + (Tk - Tq));
          s[j] = hidden ? -FLT_MAX : x;
        }
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m)), z = e.reduce((a, x) => a + x, 0);
        for (let d = 0; d < Dv; d++) {
          let acc = 0;
          for (let j = 0; j < S; j++) acc += (e[j]! / z) * val(j, d);
          out[((b * H + hh) * Tq + i) * Dv + d] = acc;
        }
      }
    }
  return new R64(out, [B, H, Tq, Dv]);
}
