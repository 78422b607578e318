// Fused adapter kernels against the same computation written with separate ops: forward, gradients of every
// input, finite differences, and whole models with the fused path on and off.
import test from 'ava';
import { ops, randn, tensor, gradcheck, scope, noGrad, AutoAdapterModel, type Tensor } from '../../lib/index.ts';
import { loraLinear, ia3Linear, bottleneckFused, setFusedAdapterKernels } from '../../lib/adapters/fused.ts';

function leaf(shape: number[], seed: number, std = 0.5): Tensor {
  return randn(shape, { seed, std, requiresGrad: true });
}
function close(t: import('ava').ExecutionContext, a: Tensor, b: Tensor, tol: number, what: string): void {
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  t.is(x.length, y.length, what);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!) / Math.max(1, Math.abs(y[i]!)));
  t.true(m <= tol, `${what}: max rel diff ${m}`);
}
/** Runs fn on fresh leaves twice (fused, composed) and compares outputs and gradients. */
function compare(t: import('ava').ExecutionContext, shapes: number[][], fused: (...xs: Tensor[]) => Tensor, composed: (...xs: Tensor[]) => Tensor) {
  const mk = () => shapes.map((s, i) => leaf(s, 100 + i));
  const a = mk(), b = mk();
  const ya = fused(...a), yb = composed(...b);
  close(t, ya, yb, 1e-5, 'output');
  const u = randn(ya.shape, { seed: 7 });
  ops.sum(ops.mul(ya, u)).backward();
  ops.sum(ops.mul(yb, u)).backward();
  a.forEach((x, i) => close(t, x.grad!, b[i]!.grad!, 1e-4, `grad of input ${i}`));
}

test('lora_linear = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ (forward and all gradients)', (t) => {
  compare(t, [[2, 5, 12], [9, 12], [9], [4, 12], [9, 4]],
    (x, W, b, A, B) => loraLinear(x!, W!, b!, A!, B!, 2),
    (x, W, b, A, B) => ops.add(ops.linear(x!, W!, b!), ops.mul(ops.linear(ops.linear(x!, A!), B!), 2)));
});

test('ia3_linear = (x·Wᵀ + b) ∘ (s·v) (forward and all gradients)', (t) => {
  compare(t, [[3, 4, 10], [7, 10], [7], [7, 1]],
    (x, W, b, v) => ia3Linear(x!, W!, b!, v!, 0.5),
    (x, W, b, v) => ops.mul(ops.linear(x!, W!, b!), ops.mul(ops.reshape(v!, [7]), 0.5)));
});

for (const act of ['relu', 'swish', 'gelu', 'tanh', 'gelu_new', 'linear'])
  test(`bottleneck (${act}) = s·(act(h·Wdᵀ + bd)·Wuᵀ + bu) + residual`, (t) => {
    const f = (x: Tensor): Tensor =>
      act === 'relu' ? ops.relu(x) : act === 'swish' ? ops.silu(x) : act === 'gelu' ? ops.gelu(x) : act === 'tanh' ? ops.tanh(x)
        : act === 'gelu_new' ? ops.gelu(x, { approximate: 'tanh' }) : x;
    compare(t, [[2, 3, 8], [3, 8], [3], [8, 3], [8], [2, 3, 8]],
      (h, Wd, bd, Wu, bu, r) => bottleneckFused(h!, Wd!, bd!, Wu!, bu!, r!, act, 1.5),
      (h, Wd, bd, Wu, bu, r) => ops.add(ops.mul(ops.linear(f(ops.linear(h!, Wd!, bd!)), Wu!, bu!), 1.5), r!));
  });

test('fused kernels pass finite-difference gradient checks', (t) => {
  const x = leaf([2, 6], 1), W = leaf([5, 6], 2), b = leaf([5], 3), A = leaf([2, 6], 4), B = leaf([5, 2], 5);
  t.true(gradcheck((...xs) => loraLinear(xs[0]!, xs[1]!, xs[2]!, xs[3]!, xs[4]!, 1.5), [x, W, b, A, B]).ok);
  const v = leaf([5, 1], 6);
  t.true(gradcheck((...xs) => ia3Linear(xs[0]!, xs[1]!, xs[2]!, xs[3]!, 2), [x, W, b, v]).ok);
  const Wd = leaf([3, 6], 7), bd = leaf([3], 8), Wu = leaf([6, 3], 9), bu = leaf([6], 10), r = leaf([2, 6], 11);
  t.true(gradcheck((...xs) => bottleneckFused(xs[0]!, xs[1]!, xs[2]!, xs[3]!, xs[4]!, xs[5]!, 'gelu', 1), [x, Wd, bd, Wu, bu, r]).ok);
});

test('fused kernels reject bad shapes with a clear error', (t) => {
  t.throws(() => loraLinear(randn([2, 6]), randn([5, 6]), null, randn([2, 7]), randn([5, 2]), 1), { message: /lora_A/ });
  t.throws(() => ia3Linear(randn([2, 6]), randn([5, 6]), null, randn([4]), 1), { message: /scale vector/ });
  t.throws(() => bottleneckFused(randn([2, 6]), randn([3, 6]), randn([3]), randn([6, 3]), randn([6]), randn([2, 5]), 'relu', 1), { message: /residual/ });
});

test.serial('models give the same outputs and gradients with the fused kernels on and off', (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const ids = [[1, 5, 7, 9], [4, 8, 2, 6]];
  const run = (method: string, fused: boolean) => {
    setFusedAdapterKernels(fused);
    try {
      const m = AutoAdapterModel.fromConfig(cfg, { seed: 3 });
      m.addAdapter('a', method);
      noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('.a.')) p.copy_(ops.add(p, randn(p.shape, { std: 0.1, seed: k.length }))); });
      m.trainAdapter('a');
      const out = scope(() => {
        const h = m.forward({ inputIds: ids }).lastHiddenState;
        ops.sum(ops.mul(h, h)).backward();
        return Array.from(h.toArray() as Float32Array);
      });
      const grads = m.namedParameters().filter(([, p]) => p.grad).map(([, p]) => Array.from(p.grad!.toArray() as Float32Array));
      m.dispose();
      return { out, grads };
    } finally {
      setFusedAdapterKernels(true);
    }
  };
  for (const method of ['seq_bn', 'lora', 'ia3', 'lora[intermediate_lora=True, output_lora=True]']) {
    const f = run(method, true), c = run(method, false);
    t.true(f.out.every((v, i) => Math.abs(v - c.out[i]!) < 1e-5), `${method}: outputs`);
    t.is(f.grads.length, c.grads.length);
    f.grads.forEach((g, j) => t.true(g.every((v, i) => Math.abs(v - c.grads[j]![i]!) <= 1e-4 * Math.max(1, Math.abs(v))), `${method}: grad ${j}`));
  }
  void tensor;
});
