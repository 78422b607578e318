// The autograd tape: accumulation, zeroGrad, noGrad, detach, retainGraph, shared subgraphs, disposal of
// intermediates, and the seeded random generator (reproducible across calls and thread counts).
import test, { type ExecutionContext } from 'ava';
import {
  tensor, ops, rand, randn, manualSeed, getRngState, setRngState, noGrad, isGradEnabled, withGradEnabled,
  scope, numThreads, setNumThreads, AutogradError, ValueError, AdamW, SGD, type Tensor,
} from '../../lib/index.ts';

const arr = (t: Tensor) => Array.from(t.toArray() as Float32Array);
const leaf = (v: number[], shape = [v.length]) => tensor(Float32Array.from(v), shape, { requiresGrad: true });

function close(t: ExecutionContext, got: number[], want: number[], tol = 1e-5, msg = ''): void {
  t.is(got.length, want.length, `${msg} length`);
  const bad = got.findIndex((g, i) => !(Math.abs(g - want[i]!) <= tol * Math.max(1, Math.abs(want[i]!))));
  t.is(bad, -1, `${msg} got [${got}] want [${want}]`);
}

// ---- accumulation and zeroGrad ----

test('gradients accumulate over two backward calls', (t) => {
  const x = leaf([1, 2, 3]);
  const y1 = ops.sum(ops.mul(x, 3));
  y1.backward();
  close(t, arr(x.grad!), [3, 3, 3]);
  const y2 = ops.sum(ops.mul(x, x));
  y2.backward();
  close(t, arr(x.grad!), [5, 7, 9]); // 3 + 2x
  x.dispose();
});

test('backward with an explicit upstream gradient, and on a leaf itself', (t) => {
  const x = leaf([1, 2]);
  const y = ops.mul(x, x);
  y.backward(tensor(Float32Array.from([10, -1]), [2]));
  close(t, arr(x.grad!), [20, -4]);
  x.backward(tensor(Float32Array.from([1, 1]), [2]));
  close(t, arr(x.grad!), [21, -3]);
  x.dispose();
});

test('zeroGrad drops the gradient; the next backward starts fresh', (t) => {
  const x = leaf([1, 2, 3]);
  ops.sum(ops.mul(x, 2)).backward();
  const g = x.grad!;
  x.zeroGrad();
  t.is(x.grad, null);
  t.true(g.disposed);
  ops.sum(ops.mul(x, 5)).backward();
  close(t, arr(x.grad!), [5, 5, 5]);
  x.dispose();
});

test('non-leaf tensors get no .grad; leaves that do not require grad get none either', (t) => {
  const x = leaf([1, 2]);
  const c = tensor(Float32Array.from([3, 4]), [2]);
  const h = ops.mul(x, c);
  t.true(h.requiresGrad);
  t.false(h.isLeaf);
  ops.sum(h).backward();
  t.is(h.grad, null);
  t.is(c.grad, null);
  close(t, arr(x.grad!), [3, 4]);
  x.dispose();
  c.dispose();
});

// ---- noGrad / withGradEnabled ----

test('noGrad records no gradFn and restores recording afterwards (even on throw)', (t) => {
  const x = leaf([1, 2]);
  t.true(isGradEnabled());
  const y = noGrad(() => {
    t.false(isGradEnabled());
    return ops.exp(ops.mul(x, x));
  });
  t.is(y.gradFn, null);
  t.false(y.requiresGrad);
  t.true(isGradEnabled());
  t.throws(() => ops.sum(y).backward(), { instanceOf: AutogradError });
  t.throws(() => noGrad(() => { throw new Error('x'); }), { message: 'x' });
  t.true(isGradEnabled(), 'noGrad did not restore recording after a throw');
  const z = withGradEnabled(false, () => withGradEnabled(true, () => ops.mul(x, 2)));
  t.truthy(z.gradFn, 'withGradEnabled(true) inside a disabled region should record');
  t.true(isGradEnabled());
  x.dispose();
});

// ---- detach ----

test('detach cuts the tape: no gradient flows through the detached branch', (t) => {
  const x = leaf([1, 2, 3]);
  const d = x.detach();
  t.false(d.requiresGrad);
  t.is(d.gradFn, null);
  t.true(d.handle.sameStorage(x.handle), 'detach should share memory');
  t.throws(() => ops.sum(ops.mul(d, 2)).backward(), { instanceOf: AutogradError });
  // x * detach(x): gradient is x (not 2x)
  ops.sum(ops.mul(x, x.detach())).backward();
  close(t, arr(x.grad!), [1, 2, 3]);
  // a detached intermediate
  x.zeroGrad();
  const h = ops.exp(x);
  ops.sum(ops.add(h.detach(), ops.mul(x, 2))).backward();
  close(t, arr(x.grad!), [2, 2, 2]);
  x.dispose();
});

// ---- retainGraph ----

test('retainGraph allows a second backward; without it the graph is freed', (t) => {
  const x = leaf([0.5, -1]);
  const y = ops.sum(ops.sin(ops.mul(x, x)));
  y.backward(undefined, { retainGraph: true });
  const g1 = arr(x.grad!);
  y.backward(undefined, { retainGraph: true });
  close(t, arr(x.grad!), g1.map((v) => 2 * v));
  y.backward();
  close(t, arr(x.grad!), g1.map((v) => 3 * v));
  const err = t.throws(() => y.backward(), { instanceOf: AutogradError });
  t.regex(err!.message, /freed/);
  t.regex(err!.message, /retainGraph/);
  x.dispose();
});

test('a freed graph only blocks the backward that goes through it', (t) => {
  const x = leaf([1, 2]);
  const h = ops.mul(x, x);
  ops.sum(h).backward();
  // a new graph built on the same leaf works
  ops.sum(ops.mul(x, 3)).backward();
  close(t, arr(x.grad!), [5, 7]);
  // but one built on the freed intermediate does not
  t.throws(() => ops.sum(ops.mul(h, 2)).backward(), { instanceOf: AutogradError });
  x.dispose();
});

// ---- shared subgraphs ----

test('diamond: y = x*x + x', (t) => {
  const x = leaf([-1, 0.5, 2]);
  ops.sum(ops.add(ops.mul(x, x), x)).backward();
  close(t, arr(x.grad!), [-1, 2, 5]); // 2x + 1
  x.dispose();
});

test('diamond through a shared intermediate: a = exp(x); y = a*a + sin(a)', (t) => {
  const xv = [0.1, -0.4, 0.7];
  const x = leaf(xv);
  const a = ops.exp(x);
  ops.sum(ops.add(ops.mul(a, a), ops.sin(a))).backward();
  close(t, arr(x.grad!), xv.map((v) => { const e = Math.exp(v); return (2 * e + Math.cos(e)) * e; }), 1e-5);
  x.dispose();
});

test('the same leaf in many places (matmul with its own transpose, broadcast)', (t) => {
  const x = leaf([1, 2, 3, 4], [2, 2]);
  // y = sum(x @ x^T) + sum(x * x[0])
  const y = ops.add(ops.sum(ops.matmul(x, x.T)), ops.sum(ops.mul(x, ops.slice(x, 0, 0, 1))));
  y.backward();
  // d/dx sum(x x^T) = 2 * (colsum) broadcast over rows: rows r: 2 * (x[0] + x[1])
  // d/dx sum(x * x[0]) : rows 0 -> 2 x[0] + x[1]; row 1 -> x[0]
  const want = [2 * (1 + 3) + 2 * 1 + 3, 2 * (2 + 4) + 2 * 2 + 4, 2 * (1 + 3) + 1, 2 * (2 + 4) + 2];
  close(t, arr(x.grad!), want);
  x.dispose();
});

// ---- disposing intermediates ----

test('an intermediate disposed by the user mid-graph does not break backward (sum / div)', (t) => {
  const x = leaf([1, 2, 3]);
  const s = ops.sum(x);
  const m = s.div(3);
  s.dispose();
  m.backward();
  close(t, arr(x.grad!), [1 / 3, 1 / 3, 1 / 3]);
  x.dispose();
});

// The tape captures edges when an op runs "so disposing an intermediate Tensor object never cuts the
// graph" (lib/autograd/tape.ts). These ops save an intermediate for their backward formula.
const DISPOSE_CASES: [string, (x: Tensor, drop: (t: Tensor) => Tensor) => Tensor, (v: number) => number][] = [
  ['sin of an intermediate (input disposed)', (x, drop) => ops.sin(drop(ops.mul(x, 2))), (v) => 2 * Math.cos(2 * v)],
  ['mul of an intermediate (input disposed)', (x, drop) => { const h = ops.mul(x, 2); return ops.mul(drop(h), h); }, (v) => 8 * v],
  ['log of an intermediate (input disposed)', (x, drop) => ops.log(drop(ops.add(x, 3))), (v) => 1 / (v + 3)],
];

for (const [name, build, deriv] of DISPOSE_CASES) {
  test(`disposing an intermediate does not break backward: ${name}`, (t) => {
    const xv = [0.3, -0.2, 1.1];
    const x = leaf(xv);
    const pending: Tensor[] = [];
    const y = build(x, (h) => { pending.push(h); return h; });
    for (const h of pending) h.dispose(); // the user is done with the intermediate
    const s = ops.sum(y);
    t.notThrows(() => s.backward());
    if (x.grad) close(t, arr(x.grad), xv.map(deriv), 1e-5);
    x.dispose();
  });
}

test('disposing an op output that its backward reuses (exp) does not break backward', (t) => {
  const x = leaf([0.3, -0.2]);
  const y = ops.exp(x);
  const s = ops.sum(y);
  y.dispose();
  t.notThrows(() => s.backward());
  if (x.grad) close(t, arr(x.grad), [Math.exp(0.3), Math.exp(-0.2)]);
  x.dispose();
});

test('a loss returned from scope() can be backpropagated after the scope', (t) => {
  // scope() disposes the intermediates; the returned tensor's graph must still be usable
  const x = leaf([0.3, -0.2, 1.1]);
  const loss = scope(() => ops.sum(ops.sin(ops.mul(x, 2))));
  t.notThrows(() => loss.backward());
  if (x.grad) close(t, arr(x.grad), [0.3, -0.2, 1.1].map((v) => 2 * Math.cos(2 * v)));
  x.dispose();
});

test('crossEntropy with 2-D (B, T) targets backpropagates', (t) => {
  const logits = tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => Math.sin(i)), [2, 3, 4], { requiresGrad: true });
  const tg = tensor(BigInt64Array.from([0n, 1n, 2n, 3n, 0n, 1n]), [2, 3], { dtype: 'i64' });
  const loss = ops.crossEntropy(logits, tg);
  t.notThrows(() => loss.backward());
  // each row's gradient sums to 0 (softmax − onehot) / N
  if (logits.grad) {
    const g = arr(logits.grad);
    for (let r = 0; r < 6; r++) t.true(Math.abs(g.slice(4 * r, 4 * r + 4).reduce((a, b) => a + b, 0)) < 1e-6);
  }
  logits.dispose();
  tg.dispose();
});

// ---- random generator ----

test('manualSeed: the same seed gives the same randn draws; different seeds differ', (t) => {
  manualSeed(123);
  const a = randn([50]);
  const a2 = randn([50]);
  manualSeed(123);
  const b = randn([50]);
  const b2 = randn([50]);
  t.deepEqual(arr(a), arr(b));
  t.deepEqual(arr(a2), arr(b2));
  t.notDeepEqual(arr(a), arr(a2), 'consecutive draws must advance the generator');
  manualSeed(124);
  const c = randn([50]);
  t.notDeepEqual(arr(a), arr(c));
  // explicit seed option ignores (and does not advance) the global generator
  const st = getRngState();
  const d1 = randn([10], { seed: 7 });
  t.deepEqual(getRngState(), st);
  const d2 = randn([10], { seed: 7 });
  t.deepEqual(arr(d1), arr(d2));
  for (const z of [a, a2, b, b2, c, d1, d2]) z.dispose();
});

test('getRngState / setRngState replay the stream', (t) => {
  manualSeed(9);
  randn([13]).dispose();
  const st = getRngState();
  const a = rand([17]);
  const b = randn([5]);
  setRngState(st);
  const a2 = rand([17]);
  const b2 = randn([5]);
  t.deepEqual(arr(a), arr(a2));
  t.deepEqual(arr(b), arr(b2));
  for (const z of [a, b, a2, b2]) z.dispose();
});

test('rand is uniform in [0, 1)', (t) => {
  manualSeed(1);
  const u = rand([100_000]);
  const v = u.toArray() as Float32Array;
  let min = Infinity, max = -Infinity, sum = 0;
  for (const x of v) {
    min = Math.min(min, x);
    max = Math.max(max, x);
    sum += x;
  }
  t.true(min >= 0, `min ${min}`);
  t.true(max < 1, `max ${max}`);
  t.true(min < 1e-3 && max > 1 - 1e-3, `range [${min}, ${max}] does not cover [0, 1)`);
  t.true(Math.abs(sum / v.length - 0.5) < 0.005, `mean ${sum / v.length}`);
  // 10 equal bins hold 10% each (± 0.5%)
  const bins = new Array(10).fill(0);
  for (const x of v) bins[Math.floor(x * 10)]++;
  for (const b of bins) t.true(Math.abs(b / v.length - 0.1) < 0.005, `bins ${bins}`);
  u.dispose();
});

test('randn: mean ≈ 0 and std ≈ 1 over 100k samples; mean/std options', (t) => {
  manualSeed(2);
  const n = 100_000;
  const moments = (x: Tensor) => {
    const v = x.toArray() as Float32Array;
    let s = 0, s2 = 0, s4 = 0;
    for (const a of v) s += a;
    const m = s / v.length;
    for (const a of v) {
      s2 += (a - m) ** 2;
      s4 += (a - m) ** 4;
    }
    const varr = s2 / v.length;
    return { mean: m, std: Math.sqrt(varr), kurt: s4 / v.length / varr ** 2 };
  };
  const z = randn([n]);
  const m = moments(z);
  t.true(Math.abs(m.mean) < 0.015, `mean ${m.mean}`); // σ/√n ≈ 0.003
  t.true(Math.abs(m.std - 1) < 0.015, `std ${m.std}`);
  t.true(Math.abs(m.kurt - 3) < 0.1, `kurtosis ${m.kurt}`);
  const w = randn([n], { mean: 3, std: 0.5 });
  const mw = moments(w);
  t.true(Math.abs(mw.mean - 3) < 0.01, `mean ${mw.mean}`);
  t.true(Math.abs(mw.std - 0.5) < 0.01, `std ${mw.std}`);
  z.dispose();
  w.dispose();
});

test('dropout: the same seed gives the same mask (global generator and seed option)', (t) => {
  const x = tensor(new Float32Array(1000).fill(1), [10, 100]);
  manualSeed(77);
  const a = ops.dropout(x, 0.3);
  const a2 = ops.dropout(x, 0.3);
  manualSeed(77);
  const b = ops.dropout(x, 0.3);
  t.deepEqual(arr(a), arr(b));
  t.notDeepEqual(arr(a), arr(a2), 'consecutive dropouts must use different masks');
  const c1 = ops.dropout(x, 0.3, { seed: 5 });
  const c2 = ops.dropout(x, 0.3, { seed: 5 });
  t.deepEqual(arr(c1), arr(c2));
  // values are 0 or 1/(1-p)
  t.true(arr(a).every((v) => v === 0 || Math.abs(v - 1 / 0.7) < 1e-6));
  // eval mode and p = 0 are the identity
  const e = ops.dropout(x, 0.3, { training: false });
  t.deepEqual(arr(e), arr(x));
  for (const z of [x, a, a2, b, c1, c2, e]) z.dispose();
});

test('random draws and dropout masks are identical on 1 and 2 threads', (t) => {
  const prev = numThreads();
  const n = 1 << 18; // large enough for the kernels to split across threads
  const x = tensor(new Float32Array(n).fill(1), [n]);
  const draw = () => {
    manualSeed(31337);
    const r = [randn([n]), rand([n]), ops.dropout(x, 0.3), ops.dropout(x, 0.5, { seed: 3 })];
    const out = r.map(arr);
    for (const z of r) z.dispose();
    return out;
  };
  try {
    setNumThreads(1);
    t.is(numThreads(), 1);
    const one = draw();
    setNumThreads(2);
    t.is(numThreads(), 2);
    const two = draw();
    const names = ['randn', 'rand', 'dropout (global)', 'dropout (seed)'];
    for (let k = 0; k < one.length; k++) {
      const bad = one[k]!.findIndex((v, i) => v !== two[k]![i]);
      t.is(bad, -1, `${names[k]} differs at ${bad}: ${one[k]![bad]} vs ${two[k]![bad]}`);
    }
  } finally {
    setNumThreads(prev);
    x.dispose();
  }
  t.is(numThreads(), prev);
});

// Leaf gradients: a gradient only the backward pass holds becomes .grad as it is (no copy); one that is shared
// (the caller's gradient, a tensor handed to two inputs) is copied, so no two leaves' .grad alias each other.
test('leaf gradients never alias each other, the caller gradient, or a tensor the graph still holds', (t) => {
  const a = randn([3, 4], { seed: 1 }), b = randn([3, 4], { seed: 2 });
  a.requiresGrad = true;
  b.requiresGrad = true;
  const g = randn([3, 4], { seed: 3 });
  ops.add(a, b).backward(g);  // add's backward hands the same gradient to both inputs
  t.false(a.grad!.handle.sameStorage(b.grad!.handle));
  t.false(a.grad!.handle.sameStorage(g.handle));
  t.deepEqual(Array.from(a.grad!.toArray() as Float32Array), Array.from(g.toArray() as Float32Array));
  noGrad(() => a.grad!.copy_(ops.zeros([3, 4])));  // in-place changes to one .grad leave the others (and g) alone
  t.deepEqual(Array.from(b.grad!.toArray() as Float32Array), Array.from(g.toArray() as Float32Array));
  // an exclusively owned gradient (from mul's backward) is adopted: right values, not shared with anything
  const c = randn([3, 4], { seed: 4 });
  c.requiresGrad = true;
  ops.sum(ops.mul(c, 3)).backward();
  t.false(c.grad!.handle.storageShared);
  t.true((c.grad!.toArray() as Float32Array).every((v) => v === 3));
});

test('layerNorm / rmsNorm with frozen weights: the same input gradient, no weight gradient (their column sums are skipped)', (t) => {
  const x0 = randn([6, 10], { seed: 11 }), w0 = randn([10], { seed: 12 }), b0 = randn([10], { seed: 13 }), u = randn([6, 10], { seed: 14 });
  const run = (train: boolean, rms: boolean) => {
    const x = x0.clone().requiresGrad_(), w = w0.clone().requiresGrad_(train), b = b0.clone().requiresGrad_(train);
    ops.sum(ops.mul(rms ? ops.rmsNorm(x, w) : ops.layerNorm(x, w, b), u)).backward();
    return { dx: arr(x.grad!), dw: w.grad, db: b.grad };
  };
  for (const rms of [false, true]) {
    const trained = run(true, rms), frozen = run(false, rms);
    close(t, frozen.dx, trained.dx, 0, rms ? 'rmsNorm dx' : 'layerNorm dx');
    t.truthy(trained.dw);
    t.is(frozen.dw, null);
    t.is(frozen.db, null);
  }
});

test('a gradient only the backward pass holds takes the next one in place (accumulate_), with the same sums', async (t) => {
  const { opProfile } = await import('../../lib/index.ts');
  const { callOp } = await import('../../lib/tensor.ts');
  const x = randn([4, 5], { seed: 21, requiresGrad: true }), w = randn([5, 5], { seed: 22 });
  opProfile(true);
  // h = 1.5·x feeds three products; their gradients (g·wᵀ, 2·g·wᵀ, 3·g·w) are summed into h's (a pending one, not a leaf's)
  const h = ops.mul(x, 1.5);
  ops.sum(ops.add(ops.add(ops.matmul(h, w), ops.mul(ops.matmul(h, w), 2)), ops.mul(ops.matmul(h, w.T), 3))).backward();
  const prof = opProfile(false);
  t.true((prof.find((r) => r.op === 'accumulate_')?.calls ?? 0) > 0, 'summed in place');
  const W = arr(w), want: number[] = [];
  for (let i = 0; i < 4; i++)
    for (let k = 0; k < 5; k++) {
      let s = 0;
      for (let j = 0; j < 5; j++) s += 3 * W[k * 5 + j]! + 3 * W[j * 5 + k]!;
      want.push(1.5 * s);
    }
  close(t, arr(x.grad!), want, 1e-5, 'dx');
  // bad input: a clear error naming both tensors
  t.throws(() => callOp('accumulate_', [randn([2, 3]), randn([3, 2])]), { message: /accumulate_.*\[2, ?3\].*\[3, ?2\]/ });
});

// PyTorch semantics found missing by an audit: .grad accumulates in place (an earlier reference sees the sum); the
// gradient of max over all elements is shared between ties; where's unselected positions get exact zeros (an infinite
// upstream gradient must not become NaN there); split's backward survives the caller disposing a piece; an integer
// gradient passed to backward is cast; copy_ from a source that carries gradients (not recorded on the tape) is refused.
test('autograd details: in-place .grad accumulation, max ties, where zeros, split after dispose, integer grads, copy_ guard', (t) => {
  const x = tensor([1, 3, 3, 2], [4], { requiresGrad: true });
  ops.max(x).backward();
  t.deepEqual(Array.from(x.grad!.toArray() as Float32Array), [0, 0.5, 0.5, 0]);
  const g = x.grad!;
  ops.sum(ops.mul(x, 2)).backward();
  t.is(x.grad, g, 'the same .grad object');
  t.deepEqual(Array.from(g.toArray() as Float32Array), [2, 2.5, 2.5, 2]);
  const y = tensor([1, 2], [2], { requiresGrad: true });
  ops.where(tensor([true, false]), y, 0).backward(tensor([Infinity, Infinity], [2]));
  t.deepEqual(Array.from(y.grad!.toArray() as Float32Array), [Infinity, 0]);
  const w = tensor([1, 2], [2], { requiresGrad: true });
  const [a, b] = ops.split(ops.mul(w, 1), 1);
  b!.dispose();
  ops.sum(a!).backward();
  t.deepEqual(Array.from(w.grad!.toArray() as Float32Array), [1, 0]);
  const z = tensor([1, 2], [2], { requiresGrad: true });
  ops.sum(ops.mul(z, 2)).backward(tensor(new Int32Array([3]), []));
  t.deepEqual(Array.from(z.grad!.toArray() as Float32Array), [6, 6]);
  const buf = ops.zeros([2]);
  t.throws(() => buf.copy_(ops.mul(z, 2)), { instanceOf: AutogradError, message: /source requires grad/ });
  t.notThrows(() => noGrad(() => buf.copy_(ops.mul(z, 2))));
  // copy_ from a view of the destination's own memory reads the source first; an expanded destination is refused
  const m = tensor([[1, 2], [3, 4]]);
  m.copy_(m.T);
  t.deepEqual(m.tolist(), [[1, 3], [2, 4]]);
  t.throws(() => ops.expand(tensor([[1, 2]]), [2, 2]).copy_(tensor([[5, 6], [7, 8]])), { message: /expanded view/ });
  for (const q of [x, y, w, z, buf, a!, m]) q.dispose();
});

// PyTorch's version counter: an in-place write to a tensor a node saved for its backward makes that backward raise
// (it would read the new values: a silently wrong gradient); a tensor no backward reads may change freely.
test('in-place writes to saved tensors: backward raises (copy_ through a view, optimiser steps, saved outputs); unsaved inputs are free', (t) => {
  const versionError = { instanceOf: AutogradError, message: /'mul' saved for its gradient \(f32 \[3, 4\]\) was modified by an in-place operation.*version 1, expected 0/ };
  const w = randn([3, 4], { seed: 1 }).requiresGrad_();
  // add saves nothing, so changing its constant input is fine (as in PyTorch)
  const c = randn([3, 4], { seed: 2 });
  const y0 = ops.sum(ops.add(w, c));
  noGrad(() => c.copy_(ops.zeros([3, 4])));
  t.notThrows(() => y0.backward());
  t.deepEqual(Array.from(w.grad!.toArray() as Float32Array), new Array(12).fill(1));
  // mul saves its other input: writing it through a transposed view (same storage) is caught
  const x = randn([3, 4], { seed: 3 });
  const y1 = ops.sum(ops.mul(w, x));
  noGrad(() => x.T.copy_(ops.ones([4, 3])));
  t.throws(() => y1.backward(), versionError);
  // writing the same values back still counts (versions, not contents), as in PyTorch
  const x2 = randn([3, 4], { seed: 3 });
  const y2 = ops.sum(ops.mul(w, x2));
  noGrad(() => x2.copy_(x2.clone()));
  t.throws(() => y2.backward(), versionError);
  // a copy of the tensor, or another tensor, is independent
  const x3 = randn([3, 4], { seed: 3 }), other = x3.clone();
  const y3 = ops.sum(ops.mul(w, x3));
  noGrad(() => other.copy_(ops.zeros([3, 4])));
  t.notThrows(() => y3.backward());
  // an op that saves its output (exp): writing the output is caught
  const e = ops.exp(w);
  const y4 = ops.sum(ops.mul(e, 2));
  noGrad(() => e.copy_(ops.zeros([3, 4])));
  t.throws(() => y4.backward(), { instanceOf: AutogradError, message: /'exp' saved/ });
  // the optimisers' one-call native steps and their per-tensor paths all count as in-place writes of the parameters
  for (const make of [(p: Tensor[]) => new AdamW(p, { lr: 0.1 }), (p: Tensor[]) => new SGD(p, { lr: 0.1, momentum: 0.9 })])
    for (const nativeStep of [true, false]) {
      const p = randn([4, 4], { seed: 5 }).requiresGrad_(), inp = randn([2, 4], { seed: 6 });
      const opt = make([p]);
      opt.native = nativeStep;
      ops.sum(ops.matmul(inp, p)).backward();
      // p·p saves p (for each factor's gradient); matmul(inp, p) would save only inp, as PyTorch (inp needs no gradient)
      const loss = ops.sum(ops.mul(p, p));
      opt.step();
      t.throws(() => loss.backward(), { instanceOf: AutogradError, message: /modified by an in-place operation/ }, `${opt.constructor.name} native=${nativeStep}`);
      // the usual order (backward, then step) is fine; retainGraph + step + a second backward is not
      opt.zeroGrad();
      const l2 = ops.sum(ops.mul(p, p));
      l2.backward({ retainGraph: true });
      opt.step();
      t.throws(() => l2.backward(), { instanceOf: AutogradError, message: /version/ });
      for (const q of [p, inp, loss, l2]) q.dispose();
    }
  // backward's options may come first; anything else that is not a tensor is a typed error
  const y5 = ops.sum(ops.mul(w, 3));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  t.throws(() => y5.backward([1] as any), { instanceOf: ValueError, message: /must be a Tensor, got an array/ });
  y5.backward({ retainGraph: true });
  t.notThrows(() => y5.backward());
  for (const q of [w, c, x, x2, x3, other, e, y0, y1, y2, y3, y4, y5]) q.dispose();
});
