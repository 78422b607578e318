// Factories: zeros / ones / full / *Like / arange (values, dtypes, shapes, torch's length rule) and the seeded
// rand / randn (ranges, moments, reproducibility).
import test from 'ava';
import { zeros, ones, full, zerosLike, onesLike, fullLike, arange, rand, randn, manualSeed, tensor, AdaptersError, ValueError, ops } from '../../lib/index.ts';

const values = (t: { toArray(): ArrayLike<number | bigint> }) => Array.from(t.toArray(), Number);

test('zeros / ones / full: shape, dtype and every value, for each dtype', (t) => {
  for (const dtype of ['f32', 'bf16', 'f16', 'i32', 'i64', 'bool'] as const) {
    const z = zeros([2, 3], { dtype }), o = ones([4], { dtype }), f = full([3, 1, 2], dtype === 'bool' ? 1 : 7, { dtype });
    t.deepEqual([z.shape, z.dtype, o.shape, o.dtype, f.shape, f.dtype], [[2, 3], dtype, [4], dtype, [3, 1, 2], dtype]);
    t.deepEqual(values(z), [0, 0, 0, 0, 0, 0], dtype);
    t.deepEqual(values(o), [1, 1, 1, 1], dtype);
    t.deepEqual(values(f), new Array(6).fill(dtype === 'bool' ? 1 : 7), dtype);
    for (const x of [z, o, f]) x.dispose();
  }
  // a value each dtype rounds: -2.75 is exact in bf16 / f16, truncated toward zero in integer dtypes (as torch.full)
  const h = full([2], -2.75, { dtype: 'bf16' }), i = full([2], -2.75, { dtype: 'i32' });
  t.deepEqual([values(h), values(i)], [[-2.75, -2.75], [-2, -2]]);
  const s = full([], 3.5);
  t.deepEqual([s.shape, s.item()], [[], 3.5]);
  const e = zeros([0, 4]);
  t.deepEqual([e.shape, e.numel], [[0, 4], 0]);
  for (const x of [h, i, s, e]) x.dispose();
});

test('*Like factories copy shape and dtype; requiresGrad makes a leaf', (t) => {
  const base = tensor([1, 2, 3, 4, 5, 6], [2, 3], { dtype: 'i64' });
  const z = zerosLike(base), o = onesLike(base, { dtype: 'f32' }), f = fullLike(base, 9);
  t.deepEqual([z.shape, z.dtype, values(z)], [[2, 3], 'i64', [0, 0, 0, 0, 0, 0]]);
  t.deepEqual([o.dtype, values(o)], ['f32', [1, 1, 1, 1, 1, 1]]);
  t.deepEqual([f.dtype, values(f)], ['i64', [9, 9, 9, 9, 9, 9]]);
  const g = ones([3], { requiresGrad: true });
  t.true(g.requiresGrad);
  for (const x of [base, z, o, f, g]) x.dispose();
});

test('arange: torch semantics for the length (ceil((end - start) / step)), dtype and sign of the step', (t) => {
  const cases: [() => ReturnType<typeof arange>, number[], string][] = [
    [() => arange(5), [0, 1, 2, 3, 4], 'i64'],
    [() => arange(2, 7), [2, 3, 4, 5, 6], 'i64'],
    [() => arange(1, 10, 3), [1, 4, 7], 'i64'],
    [() => arange(5, 0, -2), [5, 3, 1], 'i64'],
    [() => arange(0, 1, 0.25), [0, 0.25, 0.5, 0.75], 'f32'],
    [() => arange(-1, 0.5, 0.5), [-1, -0.5, 0], 'f32'],
    [() => arange(3, 3), [], 'i64'],
    [() => arange(0, 4, 1, { dtype: 'f32' }), [0, 1, 2, 3], 'f32'],
    [() => arange(0, 6, 2, { dtype: 'i32' }), [0, 2, 4], 'i32'],
  ];
  for (const [make, want, dtype] of cases) {
    const a = make();
    t.deepEqual([values(a), a.dtype, a.shape], [want, dtype, [want.length]]);
    a.dispose();
  }
  // 0.1 steps: the values are start + i·step (no accumulated error), length ceil(1 / 0.1) = 10
  const f = arange(0, 1, 0.1);
  const got = values(f);
  t.is(got.length, 10);
  got.forEach((v, i) => t.true(Math.abs(v - i * 0.1) < 1e-6, `element ${i}: ${v}`));
  f.dispose();
});

test('bad factory arguments are typed errors', (t) => {
  t.throws(() => zeros([2, -1]), { instanceOf: AdaptersError, message: /-1/ });
  t.throws(() => ones([1.5]), { instanceOf: AdaptersError });
  t.throws(() => full([2], 1, { dtype: 'f64' as never }), { instanceOf: AdaptersError, message: /f64/ });
  t.throws(() => arange(0, 5, 0), { instanceOf: AdaptersError });
});

test('rand / randn: range, moments, and the same draws after the same manualSeed', (t) => {
  manualSeed(123);
  const u = rand([100_000]), n = randn([100_000]);
  const U = u.toArray() as Float32Array, N = n.toArray() as Float32Array;
  let mu = 0, mn = 0, vn = 0, lo = 1, hi = 0;
  for (let i = 0; i < U.length; i++) {
    mu += U[i]!;
    lo = Math.min(lo, U[i]!);
    hi = Math.max(hi, U[i]!);
    mn += N[i]!;
    vn += N[i]! * N[i]!;
  }
  mu /= U.length;
  mn /= N.length;
  vn = vn / N.length - mn * mn;
  t.true(lo >= 0 && hi < 1, `rand range [${lo}, ${hi}]`);
  t.true(Math.abs(mu - 0.5) < 0.005, `rand mean ${mu}`);  // σ of the mean ≈ 0.0009
  t.true(Math.abs(mn) < 0.015 && Math.abs(vn - 1) < 0.02, `randn mean ${mn}, variance ${vn}`);
  manualSeed(123);
  const u2 = rand([100_000]);
  t.deepEqual(Array.from(u2.toArray() as Float32Array).slice(0, 50), Array.from(U).slice(0, 50));
  t.is((u2.toArray() as Float32Array).every((v, i) => v === U[i]), true);
  const m = randn([4, 5], { mean: 3, std: 0.001 });
  t.true((m.toArray() as Float32Array).every((v) => Math.abs(v - 3) < 0.01));
  for (const x of [u, n, u2, m]) x.dispose();
});

test('integer tensors refuse values outside their range (an i64 past ±2^63 wrapped silently); where takes finfo.min as a float', (t) => {
  t.throws(() => tensor([1e19], [1], { dtype: 'i64' }), { instanceOf: ValueError, message: /out of the i64 range/ });
  t.throws(() => tensor([-3.4e38], [1], { dtype: 'i64' }), { instanceOf: ValueError, message: /out of the i64 range/ });
  t.deepEqual(Array.from(tensor([-(2 ** 62), 2 ** 53], [2], { dtype: 'i64' }).toArray() as BigInt64Array), [-(2n ** 62n), 2n ** 53n]);
  const w = ops.where(tensor([true, false]), ops.zeros([]), -3.4028234663852886e38);
  t.is(w.dtype, 'f32');
  t.deepEqual(Array.from(w.toArray() as Float32Array), [0, -3.4028234663852886e38]);
});
