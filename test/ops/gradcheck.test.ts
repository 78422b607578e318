// Finite-difference gradient checks for every differentiable op in lib/ops.
//
// Each row of CASES builds some f32 leaves (requiresGrad) plus any constants (indices, masks, tables) and
// a function of the leaves; `gradcheck` compares the tape's gradient of Σ f(x)·u with central differences.
// Every row also gets a non-contiguous variant (unless `nc: false`): each leaf with ≥ 2 dims is stored
// with its last two dims swapped and passed to the op as `transpose(base, -2, -1)`; each 1-D leaf is stored
// at the even positions of a buffer twice as long and passed as `slice(base, 0, 0, 2n, 2)`. The gradient
// is then checked on the base (elements outside the view must get exactly zero).
//
// To add an op: append a row. Keep inputs ≤ ~60 elements and data away from kinks (relu/abs at 0,
// clamp bounds, ties of max/maximum) by much more than eps.
//
// Every row also runs against a float64 reference (test/helpers/ref64.ts): the same function of the same leaf values,
// evaluated with float64 implementations of the ops, gives a float64 forward and float64 central differences (step
// 1e-6), which the f32 forward and the tape's gradients must match to 1e-5 / 1e-4 (relative to the largest value).
// The f32 check above needs a coarse step and tolerance because the op itself rounds to f32; this one does not.
import test from 'ava';
import { tensor, ops as realOps, scope, gradcheck, type Tensor, type GradcheckOptions } from '../../lib/index.ts';
import * as ref64 from '../helpers/ref64.ts';
import { R64 } from '../helpers/ref64.ts';

// The cases call `ops.*` through this proxy: normally our ops, inside withRef() the float64 reference's. (A case may hold
// `ops.add` itself as its function; the proxy's functions look the implementation up at each call.)
let impl: object = realOps;
const ops = new Proxy(realOps, {
  get(target, key) {
    const f = Reflect.get(target, key);
    return typeof f === 'function' ? (...a: unknown[]) => (Reflect.get(impl, key) as (...b: unknown[]) => unknown)(...a) : f;
  },
});
function withRef<T>(f: () => T): T {
  impl = ref64;
  try {
    return f();
  } finally {
    impl = realOps;
  }
}

// ---- seeded data -----------------------------------------------------------------------------------

function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function hash(str: string): number {
  let h = 2166136261;
  for (let i = 0; i < str.length; i++) h = Math.imul(h ^ str.charCodeAt(i), 16777619);
  return h >>> 0;
}

class Rng {
  next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  uniform(a: number, b: number): number {
    return a + (b - a) * this.next();
  }
  normal(): number {
    const u = Math.max(this.next(), 1e-12), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** How leaf values are drawn. */
type Kind =
  | 'normal' // N(0, 1)
  | 'pos' // U(0.5, 2): log, sqrt, rsqrt, pow with fractional/negative exponents, divisors
  | 'away' // ±U(0.2, 1.5): away from 0 (relu, abs, sign-sensitive ops, divisors)
  | 'distinct' // a shuffled grid with spacing 0.15 (max reductions: no near-ties)
  | 'small'; // 0.3·N(0, 1)

function values(rng: Rng, n: number, kind: Kind): Float32Array {
  const a = new Float32Array(n);
  if (kind === 'distinct') {
    const grid = rng.shuffle([...Array(n).keys()]);
    for (let i = 0; i < n; i++) a[i] = (grid[i]! - n / 2) * 0.15 + rng.uniform(-0.02, 0.02);
    return a;
  }
  for (let i = 0; i < n; i++) {
    switch (kind) {
      case 'normal': a[i] = rng.normal(); break;
      case 'small': a[i] = 0.3 * rng.normal(); break;
      case 'pos': a[i] = rng.uniform(0.5, 2); break;
      case 'away': a[i] = (rng.next() < 0.5 ? -1 : 1) * rng.uniform(0.2, 1.5); break;
    }
  }
  return a;
}

/** A case-building context: leaves to check and constants to dispose afterwards. */
class Ctx {
  leaves: Tensor[] = [];
  consts: Tensor[] = [];
  constructor(readonly rng: Rng) {}
  leaf(shape: number[], kind: Kind = 'normal'): Tensor {
    return this.leafFrom(values(this.rng, numel(shape), kind), shape);
  }
  leafFrom(data: Float32Array, shape: number[]): Tensor {
    const t = tensor(data, shape, { requiresGrad: true });
    this.leaves.push(t);
    return t;
  }
  /** A non-differentiated tensor (captured by the case's function). */
  c(t: Tensor): Tensor {
    this.consts.push(t);
    return t;
  }
  f32(shape: number[], kind: Kind = 'normal'): Tensor {
    return this.c(tensor(values(this.rng, numel(shape), kind), shape));
  }
  i64(data: number[], shape = [data.length]): Tensor {
    return this.c(tensor(BigInt64Array.from(data.map(BigInt)), shape, { dtype: 'i64' }));
  }
  bool(data: number[], shape = [data.length]): Tensor {
    return this.c(tensor(Uint8Array.from(data), shape, { dtype: 'bool' }));
  }
  randBool(shape: number[], pTrue = 0.5): Tensor {
    return this.bool(Array.from({ length: numel(shape) }, () => (this.rng.next() < pTrue ? 1 : 0)), shape);
  }
}

type Fn = (...xs: Tensor[]) => Tensor;

interface Case {
  name: string;
  /** Creates the leaves (via ctx.leaf) and returns the function of those leaves, in creation order. */
  build: (ctx: Ctx) => Fn;
  opts?: GradcheckOptions;
  /** Also run a non-contiguous-input variant (default true). */
  nc?: boolean;
  /** Relative tolerance of the float64-reference gradient check (default 1e-4). */
  rtol64?: number;
}

// Central differences on an f32 forward: eps = 1e-2 keeps rounding noise ≪ atol while the truncation
// error (∝ eps²) stays ≪ rtol for the smooth functions below.
const DEFAULT_OPTS: GradcheckOptions = { eps: 1e-2 };

// ---- rope tables -----------------------------------------------------------------------------------

function ropeTables(ctx: Ctx, T: number, D: number, interleaved: boolean): [Tensor, Tensor] {
  const cos = new Float32Array(T * D), sin = new Float32Array(T * D);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < D / 2; j++) {
      const f = t / Math.pow(10000, (2 * j) / D);
      const cols = interleaved ? [2 * j, 2 * j + 1] : [j, j + D / 2];
      for (const c of cols) {
        cos[t * D + c] = Math.cos(f);
        sin[t * D + c] = Math.sin(f);
      }
    }
  return [ctx.c(tensor(cos, [T, D])), ctx.c(tensor(sin, [T, D]))];
}

// ---- the table -------------------------------------------------------------------------------------

const un = (name: string, shape: number[], kind: Kind, f: (x: Tensor) => Tensor, opts?: GradcheckOptions): Case => ({
  name,
  build: (c) => {
    c.leaf(shape, kind);
    return f;
  },
  opts,
});

const bin = (name: string, sa: number[], sb: number[], f: (a: Tensor, b: Tensor) => Tensor, ka: Kind = 'normal', kb: Kind = 'normal'): Case => ({
  name,
  build: (c) => {
    c.leaf(sa, ka);
    c.leaf(sb, kb);
    return f;
  },
});

const CASES: Case[] = [
  // --- binary elementwise, broadcasting ---
  bin('add same shape', [2, 3, 4], [2, 3, 4], ops.add),
  bin('add (3,1,4)+(2,1)', [3, 1, 4], [2, 1], ops.add),
  bin('add (4,)+(2,3,4)', [4], [2, 3, 4], ops.add),
  bin('add (2,3,1)+(1,4)', [2, 3, 1], [1, 4], ops.add),
  bin('add 0-d + (2,3)', [], [2, 3], ops.add),
  bin('add 0-d + 0-d', [], [], ops.add),
  bin('sub (3,1,4)-(2,1)', [3, 1, 4], [2, 1], ops.sub),
  bin('sub (4,)-(2,3,4)', [4], [2, 3, 4], ops.sub),
  bin('sub (2,3)-0-d', [2, 3], [], ops.sub),
  bin('mul same shape', [2, 3, 4], [2, 3, 4], ops.mul),
  bin('mul (3,1,4)*(2,1)', [3, 1, 4], [2, 1], ops.mul),
  bin('mul (4,)*(2,3,4)', [4], [2, 3, 4], ops.mul),
  bin('mul 0-d * (2,3)', [], [2, 3], ops.mul),
  bin('div same shape', [2, 3, 4], [2, 3, 4], ops.div, 'normal', 'away'),
  bin('div (3,1,4)/(2,1)', [3, 1, 4], [2, 1], ops.div, 'normal', 'away'),
  bin('div (4,)/(2,3,4)', [4], [2, 3, 4], ops.div, 'normal', 'away'),
  bin('div (2,3)/0-d', [2, 3], [], ops.div, 'normal', 'away'),
  bin('div 0-d/(2,3)', [], [2, 3], ops.div, 'normal', 'away'),
  {
    name: 'x*x + x (same leaf twice in add/mul)',
    build: (c) => {
      c.leaf([3, 4]);
      return (x) => ops.add(ops.mul(x, x), x);
    },
  },
  // --- scalar (number) operands ---
  un('add tensor+2.5', [3, 4], 'normal', (x) => ops.add(x, 2.5)),
  un('add 2.5+tensor', [3, 4], 'normal', (x) => ops.add(2.5, x)),
  un('sub tensor-0.75', [3, 4], 'normal', (x) => ops.sub(x, 0.75)),
  un('sub 1.5-tensor', [3, 4], 'normal', (x) => ops.sub(1.5, x)),
  un('mul tensor*-1.5', [3, 4], 'normal', (x) => ops.mul(x, -1.5)),
  un('mul 3*tensor', [3, 4], 'normal', (x) => ops.mul(3, x)),
  un('div tensor/4', [3, 4], 'normal', (x) => ops.div(x, 4)),
  un('div 3/tensor', [3, 4], 'away', (x) => ops.div(3, x)),
  un('add 0-d tensor+number', [], 'normal', (x) => ops.add(x, 2)),
  un('mul 0-d number*tensor', [], 'normal', (x) => ops.mul(-2, x)),
  un('Tensor methods chain', [3, 4], 'pos', (x) => x.add(1).mul(2).sub(0.5).div(3).neg()),
  // --- unary ---
  un('neg', [3, 4], 'normal', ops.neg),
  un('exp', [3, 4], 'normal', ops.exp),
  un('log', [3, 4], 'pos', ops.log),
  un('sqrt', [3, 4], 'pos', ops.sqrt),
  un('rsqrt', [3, 4], 'pos', ops.rsqrt),
  un('abs', [3, 4], 'away', ops.abs),
  un('sin', [3, 4], 'normal', ops.sin),
  un('cos', [3, 4], 'normal', ops.cos),
  un('pow 2', [3, 4], 'normal', (x) => ops.pow(x, 2)),
  un('pow 3', [3, 4], 'normal', (x) => ops.pow(x, 3)),
  un('pow 0.5', [3, 4], 'pos', (x) => ops.pow(x, 0.5)),
  un('pow -1.5', [3, 4], 'pos', (x) => ops.pow(x, -1.5)),
  un('pow 1', [3, 4], 'normal', (x) => ops.pow(x, 1)),
  un('pow 0', [3, 4], 'normal', (x) => ops.pow(x, 0)),
  {
    name: 'clamp [-0.5, 0.5] (no values near the bounds)',
    build: (c) => {
      // values in ±[0.05, 0.45] ∪ ±[0.55, 1.5]: both the pass-through and the clamped branch, away from kinks
      const r = c.rng;
      const d = Float32Array.from({ length: 12 }, (_, i) => (r.next() < 0.5 ? -1 : 1) * (i % 2 ? r.uniform(0.05, 0.45) : r.uniform(0.55, 1.5)));
      c.leafFrom(d, [3, 4]);
      return (x) => ops.clamp(x, -0.5, 0.5);
    },
  },
  {
    name: 'clamp min > max (torch: max everywhere, no gradient)',
    build: (c) => {
      c.leaf([3, 4], 'away');
      return (x) => ops.add(ops.clamp(x, 0.5, -0.5), x);  // (+ x: a gradient of 1 where the clamp passes none)
    },
  },
  {
    name: 'clamp min only',
    build: (c) => {
      c.leaf([3, 4], 'away');
      return (x) => ops.clamp(x, 0);
    },
  },
  {
    name: 'clamp max only',
    build: (c) => {
      c.leaf([3, 4], 'away');
      return (x) => ops.clamp(x, null, 0);
    },
  },
  un('relu', [3, 4], 'away', ops.relu),
  un('gelu (erf)', [3, 4], 'normal', (x) => ops.gelu(x)),
  un('gelu (tanh)', [3, 4], 'normal', (x) => ops.gelu(x, { approximate: 'tanh' })),
  un('quickGelu', [3, 4], 'normal', ops.quickGelu),
  un('silu', [3, 4], 'normal', ops.silu),
  un('tanh', [3, 4], 'normal', ops.tanh),
  un('sigmoid', [3, 4], 'normal', ops.sigmoid),
  // --- maximum / minimum (|a - b| ≥ 0.1 everywhere: no ties) ---
  ...(['maximum', 'minimum'] as const).flatMap((op): Case[] => [
    {
      name: `${op} same shape`,
      build: (c) => {
        const a = c.leaf([3, 4]);
        const av = a.toArray() as Float32Array;
        c.leafFrom(av.map((v) => v + (c.rng.next() < 0.5 ? -1 : 1) * c.rng.uniform(0.1, 1)), [3, 4]);
        return ops[op];
      },
    },
    {
      name: `${op} broadcast (3,4) vs (4,)`,
      build: (c) => {
        // a in ±[0.6, 1.5], b in ±[0, 0.4]
        const r = c.rng;
        c.leafFrom(Float32Array.from({ length: 12 }, () => (r.next() < 0.5 ? -1 : 1) * r.uniform(0.6, 1.5)), [3, 4]);
        c.leafFrom(Float32Array.from({ length: 4 }, () => r.uniform(-0.4, 0.4)), [4]);
        return ops[op];
      },
    },
  ]),
  // --- where / maskedFill ---
  {
    name: 'where same shape',
    build: (c) => {
      const cond = c.randBool([3, 4]);
      c.leaf([3, 4]);
      c.leaf([3, 4]);
      return (a, b) => ops.where(cond, a, b);
    },
  },
  {
    name: 'where broadcast cond (3,1), a (3,4), b (4,)',
    build: (c) => {
      const cond = c.bool([1, 0, 1], [3, 1]);
      c.leaf([3, 4]);
      c.leaf([4]);
      return (a, b) => ops.where(cond, a, b);
    },
  },
  {
    name: 'where tensor / number',
    build: (c) => {
      const cond = c.randBool([3, 4]);
      c.leaf([3, 4]);
      return (a) => ops.where(cond, a, 0.5);
    },
  },
  {
    name: 'where number / tensor',
    build: (c) => {
      const cond = c.randBool([3, 4]);
      c.leaf([3, 4]);
      return (b) => ops.where(cond, -1, b);
    },
  },
  {
    name: 'maskedFill same shape',
    build: (c) => {
      const mask = c.randBool([3, 4]);
      c.leaf([3, 4]);
      return (x) => ops.maskedFill(x, mask, -3);
    },
  },
  {
    name: 'maskedFill broadcast mask (4,)',
    build: (c) => {
      const mask = c.bool([1, 0, 0, 1]);
      c.leaf([3, 4]);
      return (x) => x.maskedFill(mask, 2);
    },
  },
  // --- reductions ---
  un('sum all', [2, 3, 4], 'normal', (x) => ops.sum(x)),
  un('sum dim 0', [2, 3, 4], 'normal', (x) => ops.sum(x, 0)),
  un('sum dim -1', [2, 3, 4], 'normal', (x) => ops.sum(x, -1)),
  un('sum dims [0,2]', [2, 3, 4], 'normal', (x) => ops.sum(x, [0, 2])),
  un('sum dim 1 keepdim', [2, 3, 4], 'normal', (x) => ops.sum(x, 1, { keepdim: true })),
  un('sum all keepdim', [2, 3, 4], 'normal', (x) => ops.sum(x, undefined, { keepdim: true })),
  un('sum 0-d', [], 'normal', (x) => ops.sum(x)),
  un('mean all', [2, 3, 4], 'normal', (x) => ops.mean(x)),
  un('mean dim 1', [2, 3, 4], 'normal', (x) => ops.mean(x, 1)),
  un('mean dims [-1,0] keepdim', [2, 3, 4], 'normal', (x) => ops.mean(x, [-1, 0], { keepdim: true })),
  un('mean dim -1 keepdim', [2, 3, 4], 'normal', (x) => x.mean(-1, { keepdim: true })),
  un('max all', [3, 4], 'distinct', (x) => ops.max(x)),
  un('max all keepdim', [2, 3, 4], 'distinct', (x) => ops.max(x, undefined, { keepdim: true })),
  un('max dim 0', [3, 4], 'distinct', (x) => ops.max(x, 0)),
  un('max dim 1', [3, 4], 'distinct', (x) => ops.max(x, 1)),
  un('max dim -1 keepdim', [2, 3, 4], 'distinct', (x) => ops.max(x, -1, { keepdim: true })),
  un('max dim 1 (3-d)', [2, 3, 4], 'distinct', (x) => x.max(1)),
  // --- matmul ---
  bin('matmul 2-D (3,4)@(4,5)', [3, 4], [4, 5], ops.matmul),
  bin('matmul batched (2,3,4)@(2,4,2)', [2, 3, 4], [2, 4, 2], ops.matmul),
  bin('matmul broadcast batch (2,1,3,4)@(3,4,2)', [2, 1, 3, 4], [3, 4, 2], ops.matmul),
  bin('matmul broadcast batch (2,3,4)@(4,5)', [2, 3, 4], [4, 5], ops.matmul),
  bin('matmul broadcast batch (4,3)@(2,3,2)', [4, 3], [2, 3, 2], ops.matmul),
  bin('matmul 1-D@2-D (4,)@(4,3)', [4], [4, 3], ops.matmul),
  bin('matmul 2-D@1-D (3,4)@(4,)', [3, 4], [4], ops.matmul),
  bin('matmul 1-D@1-D (5,)@(5,)', [5], [5], ops.matmul),
  bin('matmul batched@1-D (2,3,4)@(4,)', [2, 3, 4], [4], ops.matmul),
  bin('matmul 1-D@batched (4,)@(2,4,3)', [4], [2, 4, 3], ops.matmul),
  {
    name: 'matmul x@x.T (same leaf twice)',
    build: (c) => {
      c.leaf([3, 4]);
      return (x) => ops.matmul(x, x.T);
    },
  },
  // --- linear ---
  {
    name: 'linear with bias',
    build: (c) => {
      c.leaf([2, 3, 4]);
      c.leaf([5, 4]);
      c.leaf([5]);
      return (x, w, b) => ops.linear(x, w, b);
    },
  },
  {
    name: 'linear without bias',
    build: (c) => {
      c.leaf([3, 4]);
      c.leaf([5, 4]);
      return (x, w) => ops.linear(x, w);
    },
  },
  {
    name: 'linear conv1d layout with bias',
    build: (c) => {
      c.leaf([2, 3, 4]);
      c.leaf([4, 5]);
      c.leaf([5]);
      return (x, w, b) => ops.linear(x, w, b, { layout: 'conv1d' });
    },
  },
  {
    name: 'linear conv1d layout without bias',
    build: (c) => {
      c.leaf([3, 4]);
      c.leaf([4, 5]);
      return (x, w) => ops.linear(x, w, null, { layout: 'conv1d' });
    },
  },
  {
    name: 'linear constant weight (grad to x and bias only)',
    build: (c) => {
      const w = c.f32([5, 4]);
      c.leaf([3, 4]);
      c.leaf([5]);
      return (x, b) => ops.linear(x, w, b);
    },
  },
  {
    name: 'linear constant input (grad to weight only)',
    build: (c) => {
      const x = c.f32([2, 3, 4]);
      c.leaf([5, 4]);
      return (w) => ops.linear(x, w);
    },
  },
  // --- softmax family ---
  ...[0, 1, -1].flatMap((d): Case[] => [
    un(`softmax dim ${d}`, [3, 4, 5], 'normal', (x) => ops.softmax(x, d)),
    un(`logSoftmax dim ${d}`, [3, 4, 5], 'normal', (x) => ops.logSoftmax(x, d)),
  ]),
  // --- norms ---
  {
    name: 'layerNorm with weight and bias',
    build: (c) => {
      c.leaf([3, 8]);
      c.leafFrom(values(c.rng, 8, 'small').map((v) => 1 + v), [8]);
      c.leaf([8], 'small');
      return (x, w, b) => ops.layerNorm(x, w, b);
    },
  },
  {
    name: 'layerNorm without weight/bias (3-d)',
    build: (c) => {
      c.leaf([2, 3, 6]);
      return (x) => ops.layerNorm(x);
    },
  },
  {
    name: 'layerNorm weight only',
    build: (c) => {
      c.leaf([3, 8]);
      c.leaf([8], 'pos');
      return (x, w) => ops.layerNorm(x, w, null);
    },
  },
  {
    name: 'layerNorm bias only, eps 1e-3',
    build: (c) => {
      c.leaf([3, 8]);
      c.leaf([8], 'small');
      return (x, b) => ops.layerNorm(x, null, b, 1e-3);
    },
  },
  {
    name: 'rmsNorm with weight',
    build: (c) => {
      c.leaf([3, 8]);
      c.leaf([8], 'pos');
      return (x, w) => ops.rmsNorm(x, w);
    },
  },
  {
    name: 'rmsNorm without weight (3-d)',
    build: (c) => {
      c.leaf([2, 3, 6]);
      return (x) => ops.rmsNorm(x);
    },
  },
  // --- embedding ---
  {
    name: 'embedding weight grad, repeated ids',
    build: (c) => {
      const ids = c.i64([1, 3, 1, 0, 3, 3], [2, 3]);
      c.leaf([5, 4]);
      return (w) => ops.embedding(ids, w);
    },
  },
  {
    name: 'embedding i32 ids',
    build: (c) => {
      const ids = c.c(tensor(new Int32Array([4, 0, 4, 2]), [4]));
      c.leaf([5, 3]);
      return (w) => ops.embedding(ids, w);
    },
  },
  // --- dropout (fixed seed: deterministic, linear in x) ---
  un('dropout p=0.3 seed 1234', [4, 5], 'normal', (x) => ops.dropout(x, 0.3, { seed: 1234 })),
  un('dropout p=0.3 training=false', [4, 5], 'normal', (x) => ops.dropout(x, 0.3, { training: false })),
  // --- losses ---
  ...(['mean', 'sum', 'none'] as const).flatMap((reduction): Case[] => [
    {
      name: `crossEntropy reduction=${reduction}`,
      build: (c) => {
        const t = c.i64([2, 0, 4, 1]);
        c.leaf([4, 5]);
        return (x) => ops.crossEntropy(x, t, { reduction });
      },
    },
    {
      name: `crossEntropy ignoreIndex + labelSmoothing 0.1, reduction=${reduction}`,
      build: (c) => {
        const t = c.i64([2, -100, 4, 1, -100]);
        c.leaf([5, 4 + 1]);
        return (x) => ops.crossEntropy(x, t, { reduction, labelSmoothing: 0.1 });
      },
    },
    {
      name: `mseLoss reduction=${reduction}`,
      build: (c) => {
        c.leaf([3, 4]);
        c.leaf([3, 4]);
        return (a, b) => ops.mseLoss(a, b, { reduction });
      },
    },
  ]),
  {
    name: 'crossEntropy custom ignoreIndex 3',
    build: (c) => {
      const t = c.i64([3, 0, 3, 2]);
      c.leaf([4, 4]);
      return (x) => ops.crossEntropy(x, t, { ignoreIndex: 3 });
    },
  },
  {
    name: 'crossEntropy 3-d logits (B,T,C)',
    build: (c) => {
      const t = c.i64([0, 2, 1, 3, 3, 0], [2, 3]);
      c.leaf([2, 3, 4]);
      return (x) => ops.crossEntropy(x, t);
    },
  },
  {
    name: 'crossEntropy 3-d logits reduction=none, labelSmoothing 0.2',
    build: (c) => {
      const t = c.i64([0, 2, -100, 3, 3, 0], [2, 3]);
      c.leaf([2, 3, 4]);
      return (x) => ops.crossEntropy(x, t, { reduction: 'none', labelSmoothing: 0.2 });
    },
  },
  {
    name: 'mseLoss constant target',
    build: (c) => {
      const tgt = c.f32([3, 4]);
      c.leaf([3, 4]);
      return (x) => ops.mseLoss(x, tgt);
    },
  },
  // --- joins / splits / indexing ---
  {
    name: 'concat dim 0 (three inputs)',
    build: (c) => {
      c.leaf([2, 3]);
      c.leaf([1, 3]);
      c.leaf([3, 3]);
      return (a, b, d) => ops.concat([a, b, d], 0);
    },
  },
  {
    name: 'concat dim -1',
    build: (c) => {
      c.leaf([2, 3]);
      c.leaf([2, 2]);
      return (a, b) => ops.concat([a, b], -1);
    },
  },
  {
    name: 'concat with a constant input',
    build: (c) => {
      const k = c.f32([2, 2]);
      c.leaf([2, 3]);
      return (a) => ops.concat([k, a, k], 1);
    },
  },
  {
    name: 'stack dim 1',
    build: (c) => {
      c.leaf([2, 3]);
      c.leaf([2, 3]);
      return (a, b) => ops.stack([a, b], 1);
    },
  },
  {
    name: 'split equal chunks, both used',
    build: (c) => {
      c.leaf([4, 3]);
      return (x) => {
        const [a, b] = ops.split(x, 2, 0);
        return ops.mul(a!, ops.exp(b!));
      };
    },
  },
  {
    name: 'split sizes [1,3] along dim 1, uneven use',
    build: (c) => {
      c.leaf([3, 4]);
      return (x) => {
        const [a, b] = ops.split(x, [1, 3], 1);
        return ops.concat([ops.mul(a!, 3), ops.sin(b!)], 1);
      };
    },
  },
  {
    name: 'split, only one part used',
    build: (c) => {
      c.leaf([5, 2]);
      return (x) => ops.split(x, 2, 0)[1]!.mul(2);
    },
  },
  {
    name: 'chunk 3 along dim 1',
    build: (c) => {
      c.leaf([2, 6]);
      return (x) => {
        const [a, b, d] = ops.chunk(x, 3, 1);
        return ops.add(ops.mul(a!, b!), d!);
      };
    },
  },
  un('slice dim 1 [1:6:2]', [3, 7], 'normal', (x) => ops.slice(x, 1, 1, 6, 2)),
  un('slice dim 0 [1:3]', [4, 3], 'normal', (x) => ops.slice(x, 0, 1, 3)),
  un('slice negative start [-3:]', [2, 5], 'normal', (x) => x.slice(-1, -3)),
  un('slice step 3 (3-d, dim 1)', [2, 7, 3], 'normal', (x) => ops.slice(x, 1, 0, undefined, 3)),
  un('slice of slice', [4, 8], 'normal', (x) => ops.slice(ops.slice(x, 1, 1, 8, 2), 0, 1, 4, 2)),
  un('narrow', [3, 6], 'normal', (x) => ops.narrow(x, 1, 2, 3)),
  {
    name: 'indexSelect dim 0, repeated indices',
    build: (c) => {
      const idx = c.i64([2, 0, 2, 3]);
      c.leaf([4, 3]);
      return (x) => ops.indexSelect(x, 0, idx);
    },
  },
  {
    name: 'indexSelect dim 1',
    build: (c) => {
      const idx = c.i64([3, 1]);
      c.leaf([2, 4, 3]);
      return (x) => ops.indexSelect(x, 1, idx);
    },
  },
  {
    name: 'gather dim 1, repeated indices',
    build: (c) => {
      const idx = c.i64([0, 2, 2, 1, 1, 1, 3, 0, 2], [3, 3]);
      c.leaf([3, 4]);
      return (x) => ops.gather(x, 1, idx);
    },
  },
  {
    name: 'gather dim 0',
    build: (c) => {
      const idx = c.i64([2, 0, 1, 1, 2, 0, 0, 0], [2, 4]);
      c.leaf([3, 4]);
      return (x) => ops.gather(x, 0, idx);
    },
  },
  // --- views ---
  un('reshape (2,3,4)->(4,6)', [2, 3, 4], 'normal', (x) => ops.reshape(x, [4, 6])),
  un('reshape with -1', [2, 3, 4], 'normal', (x) => x.reshape(-1, 2)),
  un('reshape to 0-d', [1, 1], 'normal', (x) => ops.reshape(x, [])),
  un('view', [2, 6], 'normal', (x) => ops.reshape(x, [3, 4]).view(12)),
  un('flatten(1)', [2, 3, 4], 'normal', (x) => ops.flatten(x, 1)),
  un('transpose 0,1', [2, 3, 4], 'normal', (x) => ops.transpose(x, 0, 1)),
  un('transpose -1,-3 then exp', [2, 3, 4], 'normal', (x) => ops.exp(ops.transpose(x, -1, -3))),
  un('permute [2,0,1]', [2, 3, 4], 'normal', (x) => ops.permute(x, [2, 0, 1])),
  un('permute then mul by itself', [2, 3, 4], 'normal', (x) => ops.mul(ops.permute(x, [1, 2, 0]), ops.permute(x, [1, 2, 0]))),
  un('unsqueeze 0', [3, 4], 'normal', (x) => ops.unsqueeze(x, 0)),
  un('unsqueeze -1', [3, 4], 'normal', (x) => ops.unsqueeze(x, -1)),
  un('unsqueeze 1 then mul with broadcast', [3, 4], 'normal', (x) => ops.mul(ops.unsqueeze(x, 1), x)),
  un('squeeze dim', [3, 1, 4], 'normal', (x) => ops.squeeze(x, 1)),
  un('squeeze all', [1, 3, 1, 4], 'normal', (x) => ops.squeeze(x)),
  un('expand (3,1)->(3,4)', [3, 1], 'normal', (x) => ops.expand(x, [3, 4])),
  un('expand new leading dims + -1', [3, 1], 'normal', (x) => ops.expand(x, [2, -1, 4])),
  un('expand then sin', [1, 4], 'normal', (x) => ops.sin(ops.expand(x, [3, 4]))),
  un('contiguous of a transposed view', [3, 4], 'normal', (x) => ops.contiguous(ops.transpose(x, 0, 1))),
  un('Tensor.contiguous (already contiguous)', [3, 4], 'normal', (x) => x.contiguous()),
  un('clone', [3, 4], 'normal', (x) => x.clone()),
  {
    name: 'cast f32 -> bf16 -> f32 (bf16-exact values)',
    build: (c) => {
      // k/16 for k in 8..15 is exact in bf16, and so is k/16 ± 1/64: the numeric derivative is exactly 1
      c.leafFrom(Float32Array.from({ length: 12 }, (_, i) => (i % 2 ? -1 : 1) * ((8 + (i % 8)) / 16)), [3, 4]);
      return (x) => ops.cast(ops.cast(x, 'bf16'), 'f32');
    },
    opts: { eps: 1 / 64 },
    // the gradient flows back through the bf16 cast, so it is rounded to bf16 (as in PyTorch)
    rtol64: 2 ** -8,
  },
  un('cast f32 -> f32', [3, 4], 'normal', (x) => ops.cast(x, 'f32')),
  // --- rope ---
  ...[false, true].map((interleaved): Case => ({
    name: `rope ${interleaved ? 'interleaved' : 'half-split'} (B,H,T,D)`,
    build: (c) => {
      const [cos, sin] = ropeTables(c, 3, 4, interleaved);
      c.leaf([2, 2, 3, 4]);
      return (x) => ops.rope(x, cos, sin, { interleaved });
    },
  })),
  ...[false, true].map((interleaved): Case => ({
    name: `rope ${interleaved ? 'interleaved' : 'half-split'} (T,D)`,
    build: (c) => {
      const [cos, sin] = ropeTables(c, 5, 6, interleaved);
      c.leaf([5, 6]);
      return (x) => ops.rope(x, cos, sin, { interleaved });
    },
  })),
  // --- attention ---
  {
    name: 'sdpa plain',
    build: (c) => {
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 2, 4, 4]);
      c.leaf([1, 2, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v);
    },
  },
  {
    name: 'sdpa plain, custom scale, B=2',
    build: (c) => {
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 5, 4]);
      c.leaf([2, 1, 5, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { scale: 0.3 });
    },
  },
  {
    name: 'sdpa causal (Tq = Tk)',
    build: (c) => {
      c.leaf([1, 2, 4, 4]);
      c.leaf([1, 2, 4, 4]);
      c.leaf([1, 2, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { isCausal: true });
    },
  },
  {
    name: 'sdpa causal (Tq < Tk)',
    build: (c) => {
      c.leaf([1, 2, 2, 4]);
      c.leaf([1, 2, 5, 4]);
      c.leaf([1, 2, 5, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { isCausal: true });
    },
  },
  {
    name: 'sdpa GQA (H=4, Hkv=2)',
    build: (c) => {
      c.leaf([1, 4, 3, 4]);
      c.leaf([1, 2, 4, 4]);
      c.leaf([1, 2, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v);
    },
  },
  {
    name: 'sdpa GQA causal (H=3, Hkv=1)',
    build: (c) => {
      c.leaf([1, 3, 3, 4]);
      c.leaf([1, 1, 3, 4]);
      c.leaf([1, 1, 3, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { isCausal: true });
    },
  },
  {
    name: 'sdpa prefixK/prefixV',
    build: (c) => {
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 2, 2, 4]);
      c.leaf([1, 2, 2, 4]);
      return (q, k, v, pk, pv) => ops.scaledDotProductAttention(q, k, v, { prefixK: pk, prefixV: pv });
    },
  },
  {
    name: 'sdpa prefixK/prefixV causal GQA',
    build: (c) => {
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 1, 3, 4]);
      c.leaf([1, 1, 3, 4]);
      c.leaf([1, 1, 2, 4]);
      c.leaf([1, 1, 2, 4]);
      return (q, k, v, pk, pv) => ops.scaledDotProductAttention(q, k, v, { prefixK: pk, prefixV: pv, isCausal: true });
    },
  },
  {
    name: 'sdpa additive mask (B,1,1,Tk)',
    build: (c) => {
      const mask = c.c(tensor(Float32Array.from([0, -1, -0.5, -3.4e38, -3.4e38, 0, -2, 0]), [2, 1, 1, 4]));
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 4, 4]);
      c.leaf([2, 1, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { mask });
    },
  },
  {
    name: 'sdpa additive mask (Tq,Tk) broadcast',
    build: (c) => {
      const mask = c.f32([3, 4], 'small');
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 2, 4, 4]);
      c.leaf([1, 2, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { mask });
    },
  },
  {
    name: 'sdpa keyPaddingMask',
    build: (c) => {
      const kpm = c.bool([1, 1, 1, 0, 1, 0, 1, 1], [2, 4]);
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 4, 4]);
      c.leaf([2, 1, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: kpm });
    },
  },
  {
    name: 'sdpa keyPaddingMask + causal + GQA',
    build: (c) => {
      const kpm = c.bool([0, 1, 1, 1, 1, 1, 1, 0], [2, 4]);
      c.leaf([2, 2, 3, 4]);
      c.leaf([2, 1, 4, 4]);
      c.leaf([2, 1, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: kpm, isCausal: true });
    },
  },
  {
    // Batch 1 has no visible key: its scores are all (s + FLT_MIN) == FLT_MIN in f32, so the computed output
    // is exactly the mean of v and its finite-difference derivative w.r.t. q and k is 0, while the tape (like
    // PyTorch's autograd of the same formula, see the golden sdpa_fully_masked_row case) returns the
    // softmax gradient of the unmasked scores. Only v is compared here.
    name: 'sdpa fully masked batch row (uniform attention; grad of v)',
    build: (c) => {
      const kpm = c.bool([1, 1, 0, 1, 0, 0, 0, 0], [2, 4]);
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 4, 4]);
      c.leaf([2, 1, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: kpm });
    },
    opts: { check: [2] },
  },
  {
    name: 'sdpa additive mask (B,1,1,P+Tk) with prefixK/prefixV',
    build: (c) => {
      const mask = c.f32([2, 1, 1, 5], 'small');  // covers the 2 prefix columns too
      c.leaf([2, 2, 3, 4]);
      c.leaf([2, 2, 3, 4]);
      c.leaf([2, 2, 3, 4]);
      c.leaf([2, 2, 2, 4]);
      c.leaf([2, 2, 2, 4]);
      return (q, k, v, pk, pv) => ops.scaledDotProductAttention(q, k, v, { mask, prefixK: pk, prefixV: pv });
    },
  },
  {
    name: 'sdpa keyPaddingMask (B,P+Tk) with prefixK/prefixV, causal',
    build: (c) => {
      const kpm = c.bool([1, 0, 1, 1, 0, 0, 1, 1, 0, 1], [2, 5]);
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 3, 4]);
      c.leaf([2, 1, 2, 4]);
      c.leaf([2, 1, 2, 4]);
      return (q, k, v, pk, pv) => ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: kpm, prefixK: pk, prefixV: pv, isCausal: true });
    },
  },
  {
    name: 'sdpa bool mask (Tq,Tk): true = may attend (torch SDPA)',
    build: (c) => {
      const mask = c.bool([1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0], [3, 4]);
      c.leaf([1, 2, 3, 4]);
      c.leaf([1, 2, 4, 4]);
      c.leaf([1, 2, 4, 4]);
      return (q, k, v) => ops.scaledDotProductAttention(q, k, v, { mask });
    },
  },
  // --- constants (indices, conditions, ids) passed as non-contiguous views ---
  {
    name: 'gather dim 1, index as a transposed view',
    build: (c) => {
      const idx = c.i64([0, 2, 3, 1, 1, 0, 3, 3, 2], [3, 3]);
      c.leaf([3, 4]);
      return (x) => ops.gather(x, 1, ops.transpose(idx, 0, 1));
    },
  },
  {
    name: 'where, cond as a transposed view',
    build: (c) => {
      const cond = c.randBool([4, 3]);
      c.leaf([3, 4]);
      c.leaf([3, 4]);
      return (a, b) => ops.where(ops.transpose(cond, 0, 1), a, b);
    },
  },
  {
    name: 'embedding, ids as a strided slice',
    build: (c) => {
      const ids = c.i64([4, 9, 0, 9, 4, 9, 2, 9], [8]);
      c.leaf([5, 3]);
      return (w) => ops.embedding(ops.slice(ids, 0, 0, 8, 2), w);
    },
  },
  {
    name: 'mseLoss, target broadcast (4,) against (3,4)',
    build: (c) => {
      c.leaf([3, 4]);
      c.leaf([4]);
      return (a, b) => ops.mseLoss(a, b);
    },
  },
  // --- compositions (a small MLP / attention block) ---
  {
    name: 'composite: linear -> gelu -> layerNorm -> linear -> crossEntropy',
    build: (c) => {
      const t = c.i64([1, 0, 2]);
      c.leaf([3, 4]);
      c.leaf([6, 4], 'small');
      c.leaf([6], 'small');
      c.leaf([3, 6], 'small');
      return (x, w1, b1, w2) => ops.crossEntropy(ops.linear(ops.layerNorm(ops.gelu(ops.linear(x, w1, b1))), w2), t);
    },
  },
];

// ---- non-contiguous variants -----------------------------------------------------------------------

/**
 * Replaces each leaf by a base tensor whose view (transpose of the last two dims, or a stride-2 slice for
 * 1-D) holds the same values; returns the bases and a function of the bases.
 */
function nonContiguous(ctx: Ctx, fn: Fn): Fn {
  const views: ((b: Tensor) => Tensor)[] = [];
  ctx.leaves = ctx.leaves.map((x) => {
    const shape = x.shape;
    const v = x.toArray() as Float32Array;
    x.dispose();
    if (shape.length >= 2) {
      const [r, cdim] = [shape[shape.length - 2]!, shape[shape.length - 1]!];
      const batch = numel(shape) / (r * cdim);
      const d = new Float32Array(v.length);
      for (let b = 0; b < batch; b++)
        for (let i = 0; i < r; i++) for (let j = 0; j < cdim; j++) d[b * r * cdim + j * r + i] = v[b * r * cdim + i * cdim + j]!;
      views.push((base) => ops.transpose(base, -2, -1));
      return tensor(d, [...shape.slice(0, -2), cdim, r], { requiresGrad: true });
    }
    if (shape.length === 1) {
      const n = shape[0]!;
      const d = new Float32Array(2 * n).fill(0.123);
      for (let i = 0; i < n; i++) d[2 * i] = v[i]!;
      views.push((base) => ops.slice(base, 0, 0, 2 * n, 2));
      return tensor(d, [2 * n], { requiresGrad: true });
    }
    views.push((base) => base);
    return tensor(v, shape, { requiresGrad: true });
  });
  return (...bases) => {
    const vs = bases.map((b, i) => views[i]!(b));
    return fn(...vs);
  };
}

// ---- registration ----------------------------------------------------------------------------------

function register(c: Case, variant: 'contiguous' | 'non-contiguous'): void {
  test(`${c.name} [${variant}]`, (t) => {
    const ctx = new Ctx(new Rng(hash(c.name)));
    let fn = c.build(ctx);
    if (variant === 'non-contiguous') fn = nonContiguous(ctx, fn);
    try {
      t.true(ctx.leaves.length > 0, 'case defines no leaves');
      for (const x of ctx.leaves) t.true(x.numel <= 128, `leaf [${x.shape}] is too large for a gradcheck`);
      // every tensor the function makes (forward, perturbed evaluations) is freed by the scope
      const r = scope(() => gradcheck(fn, ctx.leaves, { ...DEFAULT_OPTS, ...c.opts }));
      t.true(r.ok, `gradcheck failed (maxAbsErr ${r.maxAbsErr.toExponential(3)}):\n${r.failures.slice(0, 10).join('\n')}`);
      // and the tape gave each leaf a gradient of its own shape
      for (const x of ctx.leaves) t.deepEqual(x.grad?.shape, x.shape);
    } finally {
      for (const x of [...ctx.leaves, ...ctx.consts]) x.dispose();
    }
  });
}

for (const c of CASES) {
  register(c, 'contiguous');
  if (c.nc !== false) register(c, 'non-contiguous');
}

// ---- the float64 reference --------------------------------------------------------------------------

/**
 * Compares the f32 forward of fn with its float64 reference, and the tape's gradient of Σ fn(x)·u with float64
 * central differences of the reference (step 1e-6·max(1, |x|), or the case's eps). Returns the failures.
 */
function check64(fn: Fn, leaves: Tensor[], opts: GradcheckOptions = {}): string[] {
  const rtol = opts.rtol ?? 1e-4;
  const failures: string[] = [];
  const which = opts.check ?? leaves.map((_, i) => i);
  for (const x of leaves) x.zeroGrad();
  const out = fn(...leaves);
  const rnd = mulberry32(12345);
  const u = Float64Array.from({ length: out.numel }, () => Math.fround(2 * rnd() - 1));
  const uT = tensor(Float32Array.from(u), out.shape);
  out.backward(uT);
  const base = leaves.map((x) => R64.from(x));
  const run = (xs: R64[]) => withRef(() => fn(...(xs as unknown as Tensor[]))) as unknown as R64;
  const ref = run(base);
  if (ref.shape.join() !== out.shape.join()) failures.push(`reference shape [${ref.shape}] vs ours [${out.shape}]`);
  const got = out.toArray() as Float32Array;
  const fscale = Math.max(1e-30, ...Array.from(ref.data, Math.abs).filter(Number.isFinite));
  for (let k = 0; k < got.length; k++) {
    const want = ref.data[k]!;
    if (!(Math.abs(got[k]! - want) <= 1e-5 * Math.abs(want) + 1e-6 * fscale))
      failures.push(`forward [${k}]: ours ${got[k]} vs float64 ${want}`);
  }
  const loss = (xs: R64[]) => {
    const y = run(xs);
    let s = 0;
    for (let k = 0; k < y.numel; k++) s += u[k]! * y.data[k]!;
    return s;
  };
  for (const i of which) {
    const g = leaves[i]!.grad;
    if (!g) {
      failures.push(`input ${i}: no gradient`);
      continue;
    }
    const ana = g.toArray() as Float32Array, x = base[i]!;
    const num = new Float64Array(x.numel);
    for (let k = 0; k < x.numel; k++) {
      const h = opts.eps ?? 1e-6 * Math.max(1, Math.abs(x.data[k]!));
      const at = (d: number) => {
        const data = x.data.slice();
        data[k] = x.data[k]! + d;
        return base.map((b, j) => (j === i ? new R64(data, x.shape) : b));
      };
      num[k] = (loss(at(h)) - loss(at(-h))) / (2 * h);
    }
    const gscale = Math.max(1e-30, ...Array.from(num, Math.abs));
    for (let k = 0; k < num.length; k++)
      if (!(Math.abs(ana[k]! - num[k]!) <= rtol * Math.abs(num[k]!) + 1e-5 * gscale))
        failures.push(`input ${i} [${k}]: tape ${ana[k]!.toExponential(6)} vs float64 ${num[k]!.toExponential(6)}`);
  }
  out.dispose();
  uT.dispose();
  return failures;
}

function register64(c: Case, variant: 'contiguous' | 'non-contiguous'): void {
  test(`${c.name} [${variant}, float64 reference]`, (t) => {
    const ctx = new Ctx(new Rng(hash(c.name)));
    let fn = c.build(ctx);
    if (variant === 'non-contiguous') fn = nonContiguous(ctx, fn);
    try {
      // the f32 checker's own step is for f32 arithmetic; only a case's explicit step (bf16-exact data) carries over
      const failures = scope(() => check64(fn, ctx.leaves, { check: c.opts?.check, eps: c.opts?.eps, rtol: c.rtol64 }));
      t.deepEqual(failures.slice(0, 10), [], `${failures.length} mismatches`);
    } finally {
      for (const x of [...ctx.leaves, ...ctx.consts]) x.dispose();
    }
  });
}

for (const c of CASES) {
  register64(c, 'contiguous');
  if (c.nc !== false) register64(c, 'non-contiguous');
}

// ---- the checker itself must catch wrong derivatives -------------------------------------------------

test('sanity: gradcheck reports failure when the tape misses half the gradient (x.detach() * x)', (t) => {
  const x = tensor(Float32Array.from([0.5, -1.2, 2, 0.8, -0.3, 1.1]), [2, 3], { requiresGrad: true });
  const r = scope(() => gradcheck((a) => ops.mul(a.detach(), a), [x], DEFAULT_OPTS));
  t.false(r.ok);
  t.is(r.failures.length, 6);
  // the tape says x, the true derivative is 2x: relative error ½
  t.true(Math.abs(r.maxRelErr - 0.5) < 0.01, `maxRelErr ${r.maxRelErr}`);
  x.dispose();
});

test('sanity: gradcheck reports failure when a branch is cut (detach inside a composite)', (t) => {
  const x = tensor(Float32Array.from([0.5, -1.2, 2, 0.8]), [4], { requiresGrad: true });
  const r = scope(() => gradcheck((a) => ops.add(ops.exp(a.detach()), ops.sin(a)), [x], DEFAULT_OPTS));
  t.false(r.ok);
  x.dispose();
});

test('sanity: gradcheck reports a missing gradient (fully detached)', (t) => {
  const x = tensor(Float32Array.from([0.5, -1.2]), [2], { requiresGrad: true });
  const y = tensor(Float32Array.from([1, 2]), [2], { requiresGrad: true });
  const r = scope(() => gradcheck((a, b) => ops.mul(a.detach(), b), [x, y], DEFAULT_OPTS));
  t.false(r.ok);
  t.true(r.failures.some((f) => f.includes('input 0') && f.includes('no gradient')));
  x.dispose();
  y.dispose();
});

test('sanity: the same composite without detach passes', (t) => {
  const x = tensor(Float32Array.from([0.5, -1.2, 2, 0.8]), [4], { requiresGrad: true });
  const r = scope(() => gradcheck((a) => ops.add(ops.exp(a), ops.sin(a)), [x], DEFAULT_OPTS));
  t.true(r.ok, r.failures.join('\n'));
  x.dispose();
});

test('sanity: the float64-reference check reports a tape that misses half the gradient, and a wrong reference', (t) => {
  const x = tensor(Float32Array.from([0.5, -1.2, 2, 0.8, -0.3, 1.1]), [2, 3], { requiresGrad: true });
  t.is(scope(() => check64((a) => ops.mul(a.detach(), a), [x])).length, 6);
  t.deepEqual(scope(() => check64((a) => ops.mul(a, a), [x])), []);
  // forward and gradient both differ when the reference computes another function (tanh-approximated gelu vs erf)
  const f = scope(() => check64((a) => (impl === realOps ? ops.gelu(a) : ops.gelu(a, { approximate: 'tanh' })), [x]));
  t.true(f.some((m) => m.startsWith('forward')) && f.some((m) => m.startsWith('input 0')), f.join('\n'));
  x.dispose();
});

// ---- dropout: the gradient is exactly the mask scaling ---------------------------------------------

test('dropout p=0.3 fixed seed: gradient equals mask / (1 - p)', (t) => {
  const rng = new Rng(99);
  const n = 2000;
  const data = Float32Array.from({ length: n }, () => rng.uniform(0.5, 2));
  const x = tensor(data, [40, 50], { requiresGrad: true });
  const y = ops.dropout(x, 0.3, { seed: 4321 });
  const s = ops.sum(y);
  s.backward();
  const yv = y.toArray() as Float32Array;
  const g = x.grad!.toArray() as Float32Array;
  let dropped = 0;
  for (let i = 0; i < n; i++) {
    const kept = yv[i] !== 0;
    if (!kept) dropped++;
    const want = kept ? 1 / 0.7 : 0;
    if (Math.abs(g[i]! - want) > 1e-5) {
      t.fail(`element ${i}: grad ${g[i]} but mask scaling is ${want} (y=${yv[i]}, x=${data[i]})`);
      break;
    }
    if (kept && Math.abs(yv[i]! - data[i]! / 0.7) > 1e-5 * Math.abs(data[i]!)) {
      t.fail(`element ${i}: y=${yv[i]} but x/(1-p)=${data[i]! / 0.7}`);
      break;
    }
  }
  // p = 0.3 over 2000 draws: the dropped fraction is 0.3 ± 0.01 (1σ)
  t.true(Math.abs(dropped / n - 0.3) < 0.05, `dropped fraction ${dropped / n}`);
  for (const z of [x, y, s]) z.dispose();
});

test('atan: gradient matches finite differences', (t) => {
  const x = tensor(Float32Array.from([-2, -0.5, 0.1, 0.7, 3]), [5], { requiresGrad: true });
  t.true(gradcheck((a) => ops.atan(a!), [x]).ok);
  const y = ops.atan(tensor([1], [1])).item();
  t.true(Math.abs(y - Math.PI / 4) < 1e-6);
});
