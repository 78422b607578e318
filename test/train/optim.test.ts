// Optimisers and schedules against PyTorch trajectories (test/reference/gen_optim.py → test/fixtures/optim).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdamW, SGD, LrScheduler, lrLambda, hfParamGroups, AutoAdapterModel, tensor, randn, ValueError, type Tensor } from '../../lib/index.ts';
import { callOp } from '../../lib/tensor.ts';

const ref = JSON.parse(fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/optim/optim.json'), 'utf8'));

function trajectory(make: (ps: Tensor[]) => { step(): void; zeroGrad(): void; dispose(): void; setLr(lr: number): void }, lrAt?: (k: number) => number): number[][] {
  const p = tensor(Float32Array.from(ref.params0 as number[]), [7]).requiresGrad_(true);
  const opt = make([p]);
  const out: number[][] = [];
  (ref.grads as number[][]).forEach((g, k) => {
    if (lrAt) opt.setLr(lrAt(k));
    opt.zeroGrad();
    p.grad = tensor(Float32Array.from(g), [7]);
    opt.step();
    out.push(Array.from(p.toArray() as Float32Array));
  });
  opt.dispose();
  p.dispose();
  return out;
}
function close(t: import('ava').ExecutionContext, got: number[][], want: number[][], label: string) {
  const d = Math.max(...got.flatMap((r, i) => r.map((v, j) => Math.abs(v - want[i]![j]!))));
  t.true(d < 2e-5, `${label}: max abs diff ${d}`);
}

test('AdamW matches torch.optim.AdamW (weight decay, betas, eps, bias correction)', (t) => {
  close(t, trajectory((ps) => new AdamW(ps, { lr: 0.05, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1 })), ref.adamw, 'adamw');
  close(t, trajectory((ps) => new AdamW(ps, { lr: 0.05, weightDecay: 0 })), ref.adamw_nowd, 'adamw no wd');
});

test('SGD matches torch.optim.SGD (momentum, dampening, weight decay, Nesterov)', (t) => {
  close(t, trajectory((ps) => new SGD(ps, { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 })), ref.sgd_momentum, 'sgd momentum');
  close(t, trajectory((ps) => new SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true })), ref.sgd_nesterov, 'sgd nesterov');
  close(t, trajectory((ps) => new SGD(ps, { lr: 0.1 })), ref.sgd_plain, 'sgd');
  t.throws(() => new SGD([], { lr: 0.1, nesterov: true }), { instanceOf: ValueError, message: /Nesterov/ });
});

test('schedules match the transformers formulas; LrScheduler drives AdamW like LambdaLR', (t) => {
  for (const kind of ['linear', 'cosine', 'polynomial'] as const) {
    const got = Array.from({ length: 9 }, (_, s) => lrLambda(kind, s, 2, 6, kind === 'polynomial' ? { lrInit: 0.1, lrEnd: 1e-3, power: 2 } : {}));
    const want = ref.schedules[kind] as number[];
    t.true(got.every((v, i) => Math.abs(v - want[i]!) < 1e-12), `${kind}: ${got} vs ${want}`);
  }
  t.is(lrLambda('constant', 0, 2, 6), 1);
  t.is(lrLambda('constant_with_warmup', 1, 2, 6), 0.5);
  // LambdaLR: the lr used at step k is base · lambda(k); the scheduler steps after the optimiser
  const p = tensor(Float32Array.from(ref.params0 as number[]), [7]).requiresGrad_(true);
  const opt = new AdamW([p], { lr: 0.05 });
  const sched = new LrScheduler(opt, 'linear', { warmup: 2, total: 6 });
  const out: number[][] = [];
  for (const g of ref.grads as number[][]) {
    p.grad = tensor(Float32Array.from(g), [7]);
    opt.step();
    sched.step();
    out.push(Array.from(p.toArray() as Float32Array));
  }
  close(t, out, ref.adamw_linear, 'adamw + linear schedule');
  opt.dispose();
  // per-group base rates are each scaled, as LambdaLR does
  const q = tensor([1, 2], [2]), r = tensor([3], [1]);
  const two = new SGD([{ params: [q], lr: 0.1 }, { params: [r], lr: 0.4 }]);
  const s2 = new LrScheduler(two, 'linear', { warmup: 2, total: 6 });
  t.deepEqual(s2.lrs, [0, 0]);
  s2.step();
  t.deepEqual(s2.lrs, [0.05, 0.2]);
  two.dispose();
});

test('hfParamGroups: no weight decay on biases and normalisation weights, frozen parameters left out', (t) => {
  const m = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 30, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32 }, { seed: 1 });
  m.addAdapter('a', 'seq_bn');
  m.trainAdapter('a');
  const [decay, plain] = hfParamGroups(m, 0.01);
  const name = new Map(m.namedParameters().map(([k, p]) => [p, k]));
  t.true(decay!.params.length > 0 && decay!.params.every((p) => name.get(p)!.endsWith('weight') && p.requiresGrad));
  t.true(plain!.params.every((p) => name.get(p)!.endsWith('bias') || /LayerNorm/.test(name.get(p)!)));
  t.is(decay!.params.length + plain!.params.length, m.namedParameters().filter(([, p]) => p.requiresGrad).length);
  t.is(decay!.weightDecay, 0.01);
  t.is(plain!.weightDecay, 0);
  m.freezeModel(false);
  const all = hfParamGroups(m, 0.01);
  t.true(all[1]!.params.some((p) => /LayerNorm\.weight$/.test(name.get(p)!)), 'LayerNorm weights are in the no-decay group');
  m.dispose();
});

test('AdamW: the one-call native step equals the per-tensor op path (two groups, weight decay, 5 steps)', (t) => {
  const mk = () => [randn([7, 5], { seed: 1, requiresGrad: true }), randn([5], { seed: 2, requiresGrad: true }), randn([3, 3, 2], { seed: 3, requiresGrad: true })];
  const run = (native: boolean) => {
    const ps = mk();
    const opt = new AdamW([{ params: [ps[0]!, ps[2]!], weightDecay: 0.1 }, { params: [ps[1]!], weightDecay: 0, lr: 3e-3 }], { lr: 1e-2 });
    opt.native = native;
    for (let s = 0; s < 5; s++) {
      ps.forEach((p, i) => { p.grad?.dispose(); p.grad = randn(p.shape, { seed: 100 * s + i }); });
      opt.step();
    }
    return ps.map((p) => Array.from(p.toArray() as Float32Array));
  };
  const a = run(true), b = run(false);
  a.forEach((v, i) => t.true(v.every((x, j) => Math.abs(x - b[i]![j]!) < 1e-6), `tensor ${i}`));
  t.throws(() => callOp('adamw_step', [tensor([0.1, 0, 1], [1, 3]), randn([2]), randn([3]), randn([2]), randn([2])], { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
    { message: /gradient #0 \[3\] vs parameter \[2\]/ });
});

test('SGD: the one-call native step equals the per-tensor op path (momentum, dampening, Nesterov, weight decay)', (t) => {
  for (const o of [{ momentum: 0.9, dampening: 0.1, weightDecay: 0.01 }, { momentum: 0.9, nesterov: true }, {}]) {
    const run = (native: boolean) => {
      const ps = [randn([6, 5], { seed: 1, requiresGrad: true }), randn([5], { seed: 2, requiresGrad: true })];
      const opt = new SGD(ps, { lr: 0.05, ...o });
      opt.native = native;
      for (let s = 0; s < 4; s++) {
        ps.forEach((p, i) => { p.grad?.dispose(); p.grad = randn(p.shape, { seed: 10 * s + i }); });
        opt.step();
      }
      return ps.map((p) => Array.from(p.toArray() as Float32Array));
    };
    const a = run(true), b = run(false);
    a.forEach((v, i) => t.true(v.every((x, j) => Math.abs(x - b[i]![j]!) < 1e-6), `${JSON.stringify(o)} tensor ${i}`));
  }
});

test('AdamW counts steps per parameter, like torch: a parameter first updated at step 3 moves like a fresh one', (t) => {
  for (const native of [true, false]) {
    const a = randn([4], { seed: 1, requiresGrad: true }), b = randn([4], { seed: 2, requiresGrad: true });
    const opt = new AdamW([a, b], { lr: 0.1, weightDecay: 0 });
    opt.native = native;
    const g = randn([4], { seed: 3 });
    for (let s = 0; s < 3; s++) {
      a.grad = randn([4], { seed: 10 + s });
      b.grad = s === 2 ? g.clone() : null;
      opt.step();
    }
    const fresh = randn([4], { seed: 2, requiresGrad: true });
    const o2 = new AdamW([fresh], { lr: 0.1, weightDecay: 0 });
    o2.native = native;
    fresh.grad = g.clone();
    o2.step();
    const x = b.toArray() as Float32Array, y = fresh.toArray() as Float32Array;
    t.true(x.every((v, i) => Math.abs(v - y[i]!) < 1e-6), `native ${native}`);
    t.deepEqual(opt.paramSteps(), [[3, 1]]);
  }
});
