// Adafactor against transformers' update rule restated in torch (test/reference/gen_adafactor.py →
// test/fixtures/optim/adafactor.json): factored (2-d, 3-d) and unfactored (1-d) parameters, 8 steps.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Adafactor, tensor, ValueError, memoryStats, type Tensor } from '../../lib/index.ts';

const ref = JSON.parse(fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/optim/adafactor.json'), 'utf8')) as {
  shapes: number[][]; params0: number[][]; grads: number[][][]; [k: string]: unknown };

function run(opts: ConstructorParameters<typeof Adafactor>[1]): { traj: number[][][]; opt: Adafactor; ps: Tensor[] } {
  const ps = ref.shapes.map((s, i) => tensor(Float32Array.from(ref.params0[i]!), s).requiresGrad_(true));
  const opt = new Adafactor(ps, opts);
  const traj = ref.grads.map((gs) => {
    opt.zeroGrad();
    ps.forEach((p, i) => { p.grad = tensor(Float32Array.from(gs[i]!), ref.shapes[i]!); });
    opt.step();
    return ps.map((p) => Array.from(p.toArray() as Float32Array));
  });
  return { traj, opt, ps };
}

function check(t: import('ava').ExecutionContext, name: string, opts: ConstructorParameters<typeof Adafactor>[1]) {
  const { traj, opt, ps } = run(opts);
  const want = ref[name] as number[][][];
  let worst = 0;
  traj.forEach((step, k) => step.forEach((p, i) => p.forEach((v, j) => {
    const w = want[k]![i]![j]!;
    worst = Math.max(worst, Math.abs(v - w) / Math.max(1e-3, Math.abs(w)));
  })));
  t.true(worst < 1e-5, `${name}: worst relative difference ${worst}`);
  // the parameters did move (a no-op optimiser would fail the comparison, but say so plainly)
  t.notDeepEqual(traj.at(-1)![0], ref.params0[0]);
  opt.dispose();
  for (const p of ps) p.dispose();
}

test('Adafactor defaults (relative step, parameter scaling) match transformers', (t) => check(t, 'defaults', {}));
test("Adafactor as HF Trainer's optim='adafactor' (lr, no relative step / scaling) matches", (t) =>
  check(t, 'trainer', { lr: 1e-2, relativeStep: false, scaleParameter: false }));
test('Adafactor with beta1, weight decay, warmup init and clip threshold matches', (t) =>
  check(t, 'beta1_wd_warmup', { beta1: 0.9, weightDecay: 0.1, warmupInit: true, clipThreshold: 0.5 }));

test('Adafactor keeps factored state (row + column) for matrices and checkpoints it', (t) => {
  const { opt, ps } = run({});
  const st = opt.stateTensors();
  t.deepEqual(st.get('0.0.exp_avg_sq_row')!.shape, [5]);
  t.deepEqual(st.get('0.0.exp_avg_sq_col')!.shape, [7]);
  t.deepEqual(st.get('0.1.exp_avg_sq_row')!.shape, [2, 3]);
  t.deepEqual(st.get('0.1.exp_avg_sq_col')!.shape, [2, 4]);
  t.deepEqual(st.get('0.2.exp_avg_sq')!.shape, [6]);
  opt.dispose();
  for (const p of ps) p.dispose();
});

test('Adafactor rejects contradictory options and frees its state', (t) => {
  t.throws(() => new Adafactor([], { lr: 1e-3 }), { instanceOf: ValueError, message: /relativeStep/ });
  t.throws(() => new Adafactor([], { relativeStep: false, lr: 1e-3, warmupInit: true }), { instanceOf: ValueError, message: /warmupInit/ });
  const before = memoryStats().liveTensors;
  const { opt, ps } = run({ beta1: 0.5 });
  opt.dispose();
  for (const p of ps) p.dispose();
  t.is(memoryStats().liveTensors, before);
});
