// Fused adapter kernels against the same computation written with separate ops: forward, gradients of every
// input, finite differences, and whole models with the fused path on and off.
import test from 'ava';
import { ops, randn, tensor, gradcheck, scope, noGrad, autocast, opProfile, AutoAdapterModel, type Tensor } from '../../lib/index.ts';
import { loraLinear, ia3Linear, bottleneckFused, loraSgmv, bottleneckSgmv, setFusedAdapterKernels } from '../../lib/adapters/fused.ts';
import { BatchSplit, Parallel } from '../../lib/adapters/composition.ts';
import { callOp } from '../../lib/tensor.ts';

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

// the rank-r backward kernel (lora_linear_bwd) goes over rows in blocks of 64: 300 rows = 5 blocks, the last partial,
// spread over the pool's chunks; and with each of x, A, B frozen in turn (its gradient skipped or not needed)
test('lora_linear over many row blocks: gradients equal the composed ops with any of x, A, B frozen', (t) => {
  for (const frozen of [-1, 0, 3, 4]) {
    const shapes = [[3, 100, 40], [24, 40], [24], [4, 40], [24, 4]];
    const mk = () => shapes.map((sh, i) => randn(sh, { seed: 200 + i, std: 0.5, requiresGrad: i !== frozen }));
    const a = mk(), b = mk();
    const ya = loraLinear(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, 0.75);
    const yb = ops.add(ops.linear(b[0]!, b[1]!, b[2]!), ops.mul(ops.linear(ops.linear(b[0]!, b[3]!), b[4]!), 0.75));
    close(t, ya, yb, 1e-5, `output (frozen ${frozen})`);
    const u = randn(ya.shape, { seed: 9 });
    ops.sum(ops.mul(ya, u)).backward();
    ops.sum(ops.mul(yb, u)).backward();
    a.forEach((x, i) => {
      if (i === frozen) t.is(x.grad, null);
      else close(t, x.grad!, b[i]!.grad!, 1e-4, `grad of input ${i} (frozen ${frozen})`);
    });
  }
});

// ia3_bwd over many row chunks: gbase = g ∘ s·v exactly, gv = s·Σ g ∘ base (double sums) with an f32 or bf16 base
test('ia3_bwd = (g ∘ s·v, s·Σ_rows g ∘ base) for f32 and bf16 bases; ia3_linear {save_bf16} keeps base as bf16', (t) => {
  const [N, O, s] = [700, 24, 0.5];
  const g = randn([N, O], { seed: 31 }), v = randn([O, 1], { seed: 32 }), base = randn([N, O], { seed: 33 });
  const G = g.toArray() as Float32Array, V = v.toArray() as Float32Array;
  for (const b of [base, base.to('bf16'), null]) {
    const [gb, gv] = callOp('ia3_bwd', [g, v, b], { scale: s });
    const GB = gb!.toArray() as Float32Array, GV = gv!.toArray() as Float32Array;
    t.true(GB.every((x, i) => x === Math.fround(G[i]! * Math.fround(V[i % O]! * s))), 'gbase');
    const B = b ? (b.to('f32').toArray() as Float32Array) : null;
    for (let o = 0; o < O; o++) {
      let acc = 0;
      if (B) for (let n = 0; n < N; n++) acc += Math.fround(G[n * O + o]! * B[n * O + o]!);
      t.true(Math.abs(GV[o]! - Math.fround(acc) * s) <= 1e-6 * (1 + Math.abs(acc)), `gv[${o}] (${b ? b.dtype : 'no base'})`);
    }
  }
  const x = randn([3, 40, 16], { seed: 34 }), W = randn([O, 16], { seed: 35 });
  const [y, b16] = callOp('ia3_linear', [x, W, null, v], { scale: s, save_bf16: 1 });
  const [y0, base0] = callOp('ia3_linear', [x, W, null, v], { scale: s });
  t.is(b16!.dtype, 'bf16');
  t.deepEqual(Array.from(b16!.toArray() as Float32Array), Array.from(base0!.to('bf16').toArray() as Float32Array));
  t.deepEqual(Array.from(y!.toArray() as Float32Array), Array.from(y0!.toArray() as Float32Array));
  t.throws(() => callOp('ia3_bwd', [g, v, randn([N, O + 1])], {}), { message: /base/ });
});

test('ia3_linear with the scale vector frozen (no base kept) or the input frozen: gradients equal the composed ops', (t) => {
  for (const frozen of [0, 3]) {
    const shapes = [[2, 90, 12], [20, 12], [20], [20, 1]];
    const mk = () => shapes.map((sh, i) => randn(sh, { seed: 300 + i, std: 0.5, requiresGrad: i !== frozen }));
    const a = mk(), b = mk();
    for (const mixed of [false, true]) {
      a.forEach((x) => { x.grad = null; });
      b.forEach((x) => { x.grad = null; });
      const ya = autocast(() => ia3Linear(a[0]!, a[1]!, a[2]!, a[3]!, 0.5, mixed), { enabled: mixed });
      const yb = autocast(() => ops.mul(ops.linear(b[0]!, b[1]!, b[2]!), ops.mul(ops.reshape(b[3]!, [20]), 0.5)), { enabled: mixed });
      const u = randn(ya.shape, { seed: 9 });
      ops.sum(ops.mul(ya, u)).backward();
      ops.sum(ops.mul(yb, u)).backward();
      a.forEach((x, i) => {
        // (mixed: v's gradient sums g ∘ base over a bf16 base here and an f32 one in the composed ops: not compared)
        if (i === frozen) t.is(x.grad, null);
        else if (!(mixed && i === 3)) close(t, x.grad!, b[i]!.grad!, mixed ? 2e-2 : 1e-4, `grad of input ${i} (frozen ${frozen}, mixed ${mixed})`);
      });
    }
  }
});

test('lora_linear_bwd rejects a gx it cannot update in place', (t) => {
  const g = randn([6, 5]), x = randn([6, 4]), tt = randn([6, 2]), A = randn([2, 4]), B = randn([5, 2]);
  t.throws(() => callOp('lora_linear_bwd', [g, x, tt, A, B, randn([4, 6]).T], {}), { message: /gx must be a contiguous f32/ });
  t.throws(() => callOp('lora_linear_bwd', [g, x, tt, A, B, randn([6, 3])], {}), { message: /gx must be a contiguous f32/ });
  t.throws(() => callOp('lora_linear_bwd', [g, x, randn([6, 3]), A, B, null], {}), { message: /saved t/ });
  t.throws(() => callOp('lora_linear_bwd', [g, x, tt, A, randn([5, 3]), null], {}), { message: /lora_B/ });
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

// One training forward/backward of a small BERT with adapter `method` (its weights nudged off their init), with the
// fused kernels on or off: the output, every gradient (by name) and how often a fused LoRA / (IA)³ op ran.
function runModel(cfg: Record<string, unknown>, ids: number[][], method: string, o: { fused: boolean; autocast?: boolean; full?: boolean }) {
  setFusedAdapterKernels(o.fused);
  try {
    const m = AutoAdapterModel.fromConfig(cfg, { seed: 3 });
    m.addAdapter('a', method);
    noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('.a.')) p.copy_(ops.add(p, randn(p.shape, { std: 0.1, seed: k.length }))); });
    m.trainAdapter('a');
    if (o.full) m.freezeModel(false);  // the base weights train too
    opProfile(true);
    const out = autocast(() => scope(() => {
      const h = m.forward({ inputIds: ids }).lastHiddenState;
      ops.sum(ops.mul(h, h)).backward();
      return Array.from(h.toArray() as Float32Array);
    }), { enabled: !!o.autocast });
    const fusedCalls = opProfile(false).filter((r) => r.op === 'lora_linear' || r.op === 'ia3_linear').reduce((a, r) => a + r.calls, 0);
    const grads = m.namedParameters().filter(([, p]) => p.grad).map(([k, p]) => [k, Array.from(p.grad!.toArray() as Float32Array)] as const);
    m.dispose();
    return { out, grads, fusedCalls };
  } finally {
    setFusedAdapterKernels(true);
  }
}
function assertSame(t: import('ava').ExecutionContext, label: string, f: ReturnType<typeof runModel>, c: ReturnType<typeof runModel>, tolOut: number, tolGrad: number) {
  const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));
  t.true(f.out.every((v, i) => close(v, c.out[i]!, tolOut)), `${label}: outputs`);
  t.deepEqual(f.grads.map(([k]) => k), c.grads.map(([k]) => k));
  f.grads.forEach(([k, g], j) => t.true(g.every((v, i) => close(v, c.grads[j]![1][i]!, tolGrad)), `${label}: grad ${k}`));
}

test.serial('models give the same outputs and gradients with the fused kernels on and off', (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const ids = [[1, 5, 7, 9], [4, 8, 2, 6]];
  for (const method of ['seq_bn', 'lora', 'ia3', 'lora[intermediate_lora=True, output_lora=True]'])
    assertSame(t, method, runModel(cfg, ids, method, { fused: true }), runModel(cfg, ids, method, { fused: false }), 1e-5, 1e-4);
  void tensor;
});

test.serial('under CPU autocast the fused LoRA / (IA)³ ops equal the composed path (bf16 base GEMMs, forward and backward)', (t) => {
  // hidden 64: the projections are wide enough for autocast's bf16 GEMMs (lib/ops/nn.ts)
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 128,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const ids = [[1, 5, 7, 9, 3], [4, 8, 2, 6, 1]];
  for (const method of ['lora[selfattn_lora=True, intermediate_lora=True, output_lora=True]', 'ia3'])
    for (const full of [false, true]) {
      const f = runModel(cfg, ids, method, { fused: true, autocast: true, full }), c = runModel(cfg, ids, method, { fused: false, autocast: true, full });
      assertSame(t, `${method} full=${full}`, f, c, 1e-5, 1e-4);
      t.true(f.fusedCalls > 0 && c.fusedCalls === 0, `${method}: the fused op ran (only) when enabled`);
    }
});

test.serial('under CPU autocast the fused bottleneck equals the composed path, its projections bf16 from 32 wide', (t) => {
  // hidden 64, reduction factor 2: a 32-wide bottleneck (autocast's bf16 threshold, lib/autocast.ts)
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 128,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const ids = [[1, 5, 7, 9, 3], [4, 8, 2, 6, 1]];
  const method = 'seq_bn[reduction_factor=2]';
  for (const full of [false, true]) {
    const f = runModel(cfg, ids, method, { fused: true, autocast: true, full }), c = runModel(cfg, ids, method, { fused: false, autocast: true, full });
    assertSame(t, `${method} full=${full}`, f, c, 1e-5, 1e-4);
  }
  // the kernel itself: bf16-rounded projections (not the f32 result, but within bf16 rounding of it), gradients too
  const shapes = [[2, 5, 64], [32, 64], [32], [64, 32], [64], [2, 5, 64]];
  const run = (ac: boolean) => {
    const xs = shapes.map((sh, i) => leaf(sh, 40 + i));
    const y = autocast(() => bottleneckFused(xs[0]!, xs[1]!, xs[2]!, xs[3]!, xs[4]!, xs[5]!, 'relu', 0.7, ac), { enabled: ac });
    autocast(() => ops.sum(ops.mul(y, randn(y.shape, { seed: 9 }))).backward(), { enabled: ac });
    return [y, ...xs.map((x) => x.grad!)];
  };
  const bf = run(true), f32 = run(false);
  t.notDeepEqual(Array.from(bf[0]!.toArray() as Float32Array), Array.from(f32[0]!.toArray() as Float32Array), 'bf16 GEMMs ran');
  // relative to the norm: bf16 keeps 8 bits, so ~2^-8 per operand, accumulated over 64 or 32 products
  const relNorm = (a: Tensor, b: Tensor) => {
    const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
    let d = 0, n = 0;
    for (let i = 0; i < x.length; i++) { d += (x[i]! - y[i]!) ** 2; n += y[i]! ** 2; }
    return Math.sqrt(d / n);
  };
  bf.forEach((x, i) => { const r = relNorm(x, f32[i]!); t.true(r < 1e-2, `${i ? `grad ${i - 1}` : 'output'}: ${r}`); });
});

// Many adapters in one op: the segmented kernel against the per-adapter slices written with separate ops.
// Ranks differ (2, 4, 3), segments are uneven, rows 0–1 and 11 belong to no adapter (zero delta, zero input grad).
test('lora_sgmv = per-segment s_i·(x·A_iᵀ)·B_iᵀ (forward and all gradients, mixed ranks, uncovered rows)', (t) => {
  const ranks = [2, 4, 3], starts = [2, 5, 6, 11], scales = [0.5, 2, 1.25];
  const M = 12, K = 7, O = 5;
  const shapes = [[M, K], ...ranks.map((r) => [r, K]), ...ranks.map((r) => [O, r])];
  compare(t, shapes,
    (x, ...w) => loraSgmv(x!, w.slice(0, 3), w.slice(3), starts, scales),
    (x, ...w) => {
      const parts: Tensor[] = [ops.zeros([starts[0]!, O])];
      for (let i = 0; i < 3; i++) {
        const xs = ops.slice(x!, 0, starts[i]!, starts[i + 1]!);
        parts.push(ops.mul(ops.linear(ops.linear(xs, w[i]!), w[3 + i]!), scales[i]!));
      }
      parts.push(ops.zeros([M - starts[3]!, O]));
      return ops.concat(parts, 0);
    });
});

test('lora_sgmv passes a finite-difference gradient check (3-D input, empty segment)', (t) => {
  const x = leaf([3, 2, 4], 1), A0 = leaf([2, 4], 2), A1 = leaf([1, 4], 3), A2 = leaf([2, 4], 4);
  const B0 = leaf([3, 2], 5), B1 = leaf([3, 1], 6), B2 = leaf([3, 2], 7);
  const r = gradcheck((...xs) => loraSgmv(xs[0]!, xs.slice(1, 4), xs.slice(4), [0, 2, 2, 6], [1.5, 3, 0.5]), [x, A0, A1, A2, B0, B1, B2]);
  t.true(r.ok, JSON.stringify(r));
});

test('lora_sgmv rejects bad segments and shapes with a clear error', (t) => {
  const x = randn([6, 4]), A = randn([2, 4]), B = randn([3, 2]);
  t.throws(() => loraSgmv(x, [A], [B], [0, 7], [1]), { message: /starts\[1\] = 7 out of \[0, 6\]/ });
  t.throws(() => loraSgmv(x, [A, A], [B, B], [0, 4, 2], [1, 1]), { message: /must not decrease/ });
  t.throws(() => loraSgmv(x, [randn([2, 5])], [B], [0, 6], [1]), { message: /lora_A #0 \[2, ?5\]/ });
  t.throws(() => loraSgmv(x, [A, A], [B, randn([4, 2])], [0, 3, 6], [1, 1]), { message: /lora_B #1/ });
  t.throws(() => loraSgmv(x, [A], [B], [0, 3, 6], [1]), { message: /starts/ });
});

// BatchSplit / Parallel / mixed batches of plain LoRAs go through lora_sgmv; the slice-by-slice path is the oracle.
for (const kind of ['lora', 'bottleneck'] as const)
test.serial(`BatchSplit, Parallel and mixed batches of ${kind} adapters: segmented kernel = slice-by-slice path (outputs and gradients)`, (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const ids = [[1, 5, 7, 9], [4, 8, 2, 6], [3, 3, 9, 1], [2, 7, 7, 5]];
  const run = (fused: boolean, mode: 'batchsplit' | 'parallel' | 'mixed') => {
    setFusedAdapterKernels(fused);
    try {
      const m = AutoAdapterModel.fromConfig(cfg, { seed: 3 });
      if (kind === 'lora') {
        m.addAdapter('a', 'lora[r=4, alpha=8, intermediate_lora=True, output_lora=True]');
        m.addAdapter('b', 'lora[r=2, alpha=6, selfattn_lora=True]');
        m.addAdapter('c', "lora[r=8, alpha=8, attn_matrices=['q','k','v']]");
      } else {
        m.addAdapter('a', 'seq_bn[reduction_factor=4]');
        m.addAdapter('b', 'seq_bn[reduction_factor=2, scaling=0.5]');
        m.addAdapter('c', 'seq_bn[reduction_factor=8, dropout=0.0]');
      }
      noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('loras') || k.includes('adapters')) p.copy_(ops.add(p, randn(p.shape, { std: 0.1, seed: k.length }))); });
      m.trainAdapter(['a', 'b', 'c']);
      const out = scope(() => {
        let h: Tensor;
        if (mode === 'mixed') h = m.forward({ inputIds: ids, adapterIds: ['c', null, 'a', 'c'] }).lastHiddenState;
        else {
          m.setActiveAdapters(mode === 'parallel' ? new Parallel('a', 'b', 'c') : new BatchSplit(['a', 'b', 'c'], [1, 2, 1]));
          h = m.forward({ inputIds: mode === 'parallel' ? ids.slice(0, 2) : ids }).lastHiddenState;
        }
        ops.sum(ops.mul(h, h)).backward();
        return Array.from(h.toArray() as Float32Array);
      });
      const grads = m.namedParameters().filter(([, p]) => p.grad).map(([k, p]) => [k, Array.from(p.grad!.toArray() as Float32Array)] as const);
      m.dispose();
      return { out, grads };
    } finally {
      setFusedAdapterKernels(true);
    }
  };
  for (const mode of ['batchsplit', 'parallel', 'mixed'] as const) {
    const f = run(true, mode), c = run(false, mode);
    t.is(f.out.length, c.out.length);
    t.true(f.out.every((v, i) => Math.abs(v - c.out[i]!) < 1e-5), `${mode}: outputs`);
    t.deepEqual(f.grads.map(([k]) => k), c.grads.map(([k]) => k), `${mode}: same trainable set`);
    t.true(f.grads.length > 0);
    f.grads.forEach(([k, g], j) => t.true(g.every((v, i) => Math.abs(v - c.grads[j]![1][i]!) <= 1e-4 * Math.max(1, Math.abs(v))), `${mode}: grad ${k}`));
  }
});

test('bottleneck_sgmv = per-segment residual + s_i·(act(h·Wd_iᵀ + bd_i)·Wu_iᵀ + bu_i) (forward, all gradients, uncovered rows)', (t) => {
  const widths = [3, 5], starts = [1, 4, 7], scales = [0.5, 2];
  const M = 9, C = 6;
  for (const act of ['relu', 'swish', 'gelu_new', 'linear']) {
    const f = (x: Tensor): Tensor => act === 'relu' ? ops.relu(x) : act === 'swish' ? ops.silu(x) : act === 'gelu_new' ? ops.gelu(x, { approximate: 'tanh' }) : x;
    const shapes = [[M, C], [M, C], ...widths.map((d) => [d, C]), ...widths.map((d) => [d]), ...widths.map((d) => [C, d]), ...widths.map(() => [C])];
    compare(t, shapes,
      (h, r, ...w) => bottleneckSgmv(h!, r!, [0, 1].map((i) => ({ Wd: w[i]!, bd: w[2 + i]!, Wu: w[4 + i]!, bu: w[6 + i]! })), starts, scales, act),
      (h, r, ...w) => {
        const parts: Tensor[] = [ops.slice(r!, 0, 0, starts[0]!)];
        for (let i = 0; i < 2; i++) {
          const hs = ops.slice(h!, 0, starts[i]!, starts[i + 1]!), rs = ops.slice(r!, 0, starts[i]!, starts[i + 1]!);
          parts.push(ops.add(ops.mul(ops.linear(f(ops.linear(hs, w[i]!, w[2 + i]!)), w[4 + i]!, w[6 + i]!), scales[i]!), rs));
        }
        parts.push(ops.slice(r!, 0, starts[2]!, M));
        return ops.concat(parts, 0);
      });
  }
});

test('bottleneck_sgmv passes a finite-difference gradient check; bad shapes are refused', (t) => {
  const h = leaf([2, 3, 4], 1), r = leaf([2, 3, 4], 2);
  const ws = [[2, 3], [1, 4]].map(([d, s]) => ({ Wd: leaf([d!, 4], s!), bd: leaf([d!], s! + 10), Wu: leaf([4, d!], s! + 20), bu: leaf([4], s! + 30) }));
  const flat = ws.flatMap((w) => [w.Wd, w.bd, w.Wu, w.bu]);
  const res = gradcheck((...xs) => bottleneckSgmv(xs[0]!, xs[1]!, [0, 1].map((i) => ({ Wd: xs[2 + 4 * i]!, bd: xs[3 + 4 * i]!, Wu: xs[4 + 4 * i]!, bu: xs[5 + 4 * i]! })), [0, 2, 6], [1.5, 0.5], 'gelu'), [h, r, ...flat]);
  t.true(res.ok, JSON.stringify(res));
  t.throws(() => bottleneckSgmv(randn([4, 4]), randn([4, 4]), [{ Wd: randn([2, 4]), bd: randn([3]), Wu: randn([4, 2]), bu: randn([4]) }], [0, 4], [1], 'relu'), { message: /down bias #0/ });
  t.throws(() => bottleneckSgmv(randn([4, 4]), randn([4, 5]), [{ Wd: randn([2, 4]), bd: randn([2]), Wu: randn([4, 2]), bu: randn([4]) }], [0, 4], [1], 'relu'), { message: /residual/ });
  t.throws(() => bottleneckSgmv(randn([4, 4]), randn([4, 4]), [{ Wd: randn([2, 4]), bd: randn([2]), Wu: randn([4, 2]), bu: randn([4]) }], [0, 4], [1], 'leakyrelu'), { message: /unsupported activation/ });
});
