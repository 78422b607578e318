// Op and tape semantics as PyTorch's, from an audit against torch 1.13: cross-entropy with −inf logits, the class
// dimension second for (N, C, d1, …) inputs and class-probability targets; the tensors a node saves (only what its
// backward reads, so an in-place write elsewhere does not block a backward) and a second backward through a graph
// that saved nothing.
import test from 'ava';
import { ops, tensor, randn, noGrad, AutogradError, type Tensor } from '../../lib/index.ts';

const arr = (t: Tensor) => Array.from(t.toArray() as Float32Array);
const near = (a: number[], b: number[], tol = 1e-5) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]!) <= tol * Math.max(1, Math.abs(b[i]!)));

test('crossEntropy: −inf logits give the finite loss (no 0·inf NaN); class dim second for (N, C, d); probability targets', (t) => {
  const logits = tensor([[-Infinity, 0, 1, 2], [0, 0, 0, 0]]), tg = tensor([1, 2], [2], { dtype: 'i64' });
  const want = [Math.log(1 + Math.E + Math.E ** 2), Math.log(4)];
  t.true(near(arr(ops.crossEntropy(logits, tg, { reduction: 'none' })), want));
  t.true(near([ops.crossEntropy(logits, tg).item()], [(want[0]! + want[1]!) / 2]));
  // (N, C, d): classes at dim 1, as F.cross_entropy; equal to the classes-last form after moving them
  const x = randn([2, 4, 3], { seed: 1 }), y = tensor([[0, 3, 1], [2, 2, 0]], [2, 3], { dtype: 'i64' });
  const moved = ops.crossEntropy(ops.permute(x, [0, 2, 1]).contiguous(), y, { reduction: 'none' });
  const direct = ops.crossEntropy(x, y, { reduction: 'none' });
  t.deepEqual(direct.shape, [2, 3]);
  t.true(near(arr(direct), arr(moved)));
  // the square case (C = d) follows torch's layout too
  const sq = randn([2, 3, 3], { seed: 2 }), ys = tensor([[0, 1, 2], [2, 1, 0]], [2, 3], { dtype: 'i64' });
  const flat = ops.reshape(ops.permute(sq, [0, 2, 1]).contiguous(), [6, 3]);
  t.true(near([ops.crossEntropy(sq, ys).item()], [ops.crossEntropy(flat, ops.reshape(ys, [6])).item()]));
  // class probabilities: −Σ t·log_softmax, mean over samples; label smoothing mixes in the uniform distribution
  const p = ops.softmax(randn([3, 5], { seed: 3 }), 1), l = randn([3, 5], { seed: 4 });
  const ls = ops.logSoftmax(l, 1);
  const per = arr(ops.neg(ops.sum(ops.mul(p, ls), 1)));
  t.true(near([ops.crossEntropy(l, p).item()], [per.reduce((a, b) => a + b) / 3]));
  const sm = ops.add(ops.mul(p, 0.9), 0.1 / 5);
  t.true(near([ops.crossEntropy(l, p, { labelSmoothing: 0.1, reduction: 'sum' }).item()], [arr(ops.neg(ops.sum(ops.mul(sm, ls)))).reduce((a, b) => a + b)]));
});

test('saved tensors as PyTorch: writing an input the backward does not read is allowed; a graph that saved nothing runs twice', (t) => {
  const w = randn([3, 3], { seed: 1 });                       // frozen
  const x = randn([2, 3], { seed: 2 }).requiresGrad_();
  // exp reads its output, log its input, matmul / linear / mul the other operand only
  const cases: [string, (a: Tensor) => Tensor, Tensor][] = [
    ['exp (input written)', (a) => ops.exp(a), x],
    ['matmul (frozen right operand read, left written)', (a) => ops.matmul(a, w), x],
    ['linear (weight read, input written)', (a) => ops.linear(a, w), x],
    ['mul by a frozen tensor (it is read, the input written)', (a) => ops.mul(a, ops.ones([2, 3])), x],
  ];
  for (const [name, f] of cases) {
    const a = ops.mul(x, 1);   // a non-leaf copy to write into
    const y = ops.sum(f(a));
    noGrad(() => a.copy_(ops.zeros(a.shape)));
    t.notThrows(() => y.backward(), name);
    x.zeroGrad();
  }
  // … but writing what the backward reads still raises
  const a = ops.mul(x, 1);
  const y = ops.sum(ops.matmul(a, w));
  noGrad(() => w.copy_(ops.zeros(w.shape)));
  t.throws(() => y.backward(), { instanceOf: AutogradError, message: /'matmul' saved/ });
  // a second backward through a graph with nothing saved (sum, add of a constant) works, as in PyTorch
  const z = tensor([1, 2, 3], [3], { requiresGrad: true });
  const s = ops.sum(ops.add(z, 1));
  s.backward();
  t.notThrows(() => s.backward());
  t.deepEqual(arr(z.grad!), [2, 2, 2]);
  const s2 = ops.sum(ops.mul(z, z));
  s2.backward();
  t.throws(() => s2.backward(), { instanceOf: AutogradError, message: /already freed/ });
});

test('reductions, creation and checks as torch: 0-d dims (the process crashed), NaN through relu, empty dim lists, mixed literals, fill ranges', (t) => {
  const s = tensor(5);
  t.deepEqual([ops.sum(s, 0).shape, ops.sum(s, 0).item()], [[], 5]);
  t.deepEqual([ops.sum(s, -1, { keepdim: true }).shape, ops.mean(s, 0).item()], [[], 5]);
  t.throws(() => ops.sum(s, 1), { message: /out of range/ });
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  t.is(ops.sum(x, []).item(), 21);                       // torch 1.13: an empty list reduces everything
  t.is(ops.mean(x, []).item(), 3.5);
  t.deepEqual(ops.argmax(x, undefined, { keepdim: true }).shape, [1, 1]);
  const r = Array.from(ops.relu(tensor([NaN, -1, 2])).toArray() as Float32Array);
  t.true(Number.isNaN(r[0]!) && r[1] === 0 && r[2] === 2);
  t.is(tensor([true, 2]).dtype, 'f32');                  // a mix of booleans and numbers is numeric
  t.deepEqual(Array.from(tensor([true, 2]).toArray() as Float32Array), [1, 2]);
  t.deepEqual(Array.from(tensor([NaN, 0], [2], { dtype: 'bool' }).toArray() as Uint8Array), [1, 0]);
  t.throws(() => ops.full([1], NaN, { dtype: 'i64' }), { message: /cannot be converted to i64/ });
  t.throws(() => ops.full([1], 2 ** 40, { dtype: 'i32' }), { message: /cannot be converted to i32/ });
  t.throws(() => ops.full([1], 1e39, { dtype: 'bf16' }), { message: /cannot be converted to bf16/ });
  t.deepEqual(Array.from(ops.full([1], -2.75, { dtype: 'i32' }).toArray() as Int32Array), [-2]);
  t.throws(() => ops.maskedFill(tensor([1, 2], [2], { dtype: 'i32' }), tensor([true, false]), 2 ** 40), { message: /cannot be converted to i32/ });
  t.throws(() => ops.mean(tensor([1, 2], [2], { dtype: 'i64' })), { message: /floating point/ });
  t.throws(() => ops.clamp(x), { message: /at least one of min and max/ });
  t.throws(() => ops.arange(5, 0), { message: /inconsistent with the sign of step/ });
  t.throws(() => ops.arange(0, 5, -1), { message: /inconsistent/ });
  t.deepEqual(Array.from(ops.arange(5, 0, -2).toArray() as BigInt64Array), [5n, 3n, 1n]);
  t.throws(() => ops.rand([2], { dtype: 'i64' }), { message: /floating point/ });
  t.throws(() => ops.transpose(s, 1, 0), { message: /out of range/ });
  t.is(ops.transpose(s, 0, -1).item(), 5);
});

test('concat promotes mixed dtypes as torch.cat; a scalar product keeps the sign of zero; integer scalars keep an integer dtype', (t) => {
  const c = ops.concat([tensor([1.5]), tensor([2], [1], { dtype: 'i64' })]);
  t.deepEqual([c.dtype, Array.from(c.toArray() as Float32Array)], ['f32', [1.5, 2]]);
  t.is(ops.concat([tensor([1.5]).to('bf16'), tensor([2.5])]).dtype, 'f32');
  t.is(ops.concat([tensor([1], [1], { dtype: 'i32' }), tensor([2], [1], { dtype: 'i64' })]).dtype, 'i64');
  t.is(ops.stack([tensor([1.5]).to('bf16'), tensor([2], [1], { dtype: 'i64' })]).dtype, 'bf16');
  // gradients reach the floating inputs through the promotion
  const a = tensor([1, 2], [2], { requiresGrad: true });
  ops.sum(ops.mul(ops.concat([a.to('bf16'), tensor([3], [1], { dtype: 'i64' })]), 2)).backward();
  t.deepEqual(Array.from(a.grad!.toArray() as Float32Array), [2, 2]);
  t.true(Object.is((ops.mul(tensor([0]), -1).toArray() as Float32Array)[0], -0));
  t.true(Object.is((ops.mul(-2, tensor([0])).toArray() as Float32Array)[0], -0));
  t.is(ops.add(tensor([1], [1], { dtype: 'i64' }), 2 ** 60).dtype, 'i64');
});
