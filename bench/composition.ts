/**
 * bench/composition — serving and training many LoRA adapters at once, all timings from this one run.
 *
 * 1. The adapter layer over N = 1, 4, 16, 64 adapters, 4 rows × seq tokens per adapter: LoRA (one 768→768
 *    projection's deltas, rank 8) with the segmented kernel lora_sgmv, and seq_bn bottlenecks (width 48) with
 *    bottleneck_sgmv — one op for all adapters — versus the per-adapter loop that the Python library and PEFT run
 *    (slice rows, the adapter's matmuls, concat), forward and forward+backward (given upstream gradient).
 * 2. The whole model (BERT-base size, inference): a mixed batch through the segmented kernel, the same mixed
 *    batch slice by slice, and the per-adapter model loop (activate adapter i, run its rows, repeat). The base
 *    model's GEMMs dominate here, so the layer-level gain shows up only as the adapters' share of the time.
 * Run: npx tsx bench/composition.ts   (BENCH_QUICK=1: 2 layers, seq 32, N up to 16)
 */
import { AutoAdapterModel, noGrad, scope, numThreads, randn, ops, type Tensor } from '../lib/index.ts';
import { bottleneckSgmv, loraSgmv, setFusedAdapterKernels } from '../lib/adapters/fused.ts';
import { table } from './common.ts';

const quick = !!process.env.BENCH_QUICK;
const [L, T] = quick ? [2, 32] : [12, 64];
const Ns = quick ? [1, 4, 16] : [1, 4, 16, 64];
const ROWS = 4, H = 768, R = 8;

const time = (fn: () => void, reps: number, inner = 1) => {
  fn();  // warm-up
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < inner; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9 / inner);
  }
  return best;
};

// 1. the layer
const layer: (string | number)[][] = [['N adapters', 'tokens', 'loop fwd ms', 'sgmv fwd ms', 'fwd ×', 'loop fwd+bwd ms', 'sgmv fwd+bwd ms', 'fwd+bwd ×']];
for (const N of Ns) {
  const M = N * ROWS * T;
  const x = randn([M, H], { seed: 1, requiresGrad: true });
  const As = Array.from({ length: N }, (_, i) => randn([R, H], { seed: 10 + i, std: 0.02, requiresGrad: true }));
  const Bs = Array.from({ length: N }, (_, i) => randn([H, R], { seed: 100 + i, std: 0.02, requiresGrad: true }));
  const starts = Array.from({ length: N + 1 }, (_, i) => i * ROWS * T), scales = As.map(() => 2);
  const loop = (): Tensor => ops.concat(As.map((A, i) => ops.mul(ops.linear(ops.linear(ops.slice(x, 0, starts[i]!, starts[i + 1]!), A), Bs[i]!), scales[i]!)), 0);
  const sgmv = (): Tensor => loraSgmv(x, As, Bs, starts, scales);
  const fwd = (f: () => Tensor) => () => scope(() => { noGrad(() => f()); });
  const u = randn([M, H], { seed: 2 });  // upstream gradient, so only the layer's own backward is timed
  const both = (f: () => Tensor) => () => scope(() => {
    f().backward(u);
    for (const p of [x, ...As, ...Bs]) { p.grad?.dispose(); p.grad = null; }
  });
  const inner = N <= 4 ? 10 : 3;
  const lf = time(fwd(loop), 5, inner), sf = time(fwd(sgmv), 5, inner);
  const lb = time(both(loop), 5, inner), sb = time(both(sgmv), 5, inner);
  layer.push([N, M, lf * 1e3, sf * 1e3, lf / sf, lb * 1e3, sb * 1e3, lb / sb]);
  for (const p of [x, u, ...As, ...Bs]) p.dispose();
}
// the same for sequential bottleneck adapters (seq_bn, reduction factor 16: width 48, relu)
const bnLayer: (string | number)[][] = [layer[0]!];
for (const N of Ns) {
  const M = N * ROWS * T, W = H / 16;
  const h = randn([M, H], { seed: 1, requiresGrad: true }), res = randn([M, H], { seed: 3, requiresGrad: true });
  const ws = Array.from({ length: N }, (_, i) => ({ Wd: randn([W, H], { seed: 10 + i, std: 0.02, requiresGrad: true }), bd: randn([W], { seed: 20 + i, std: 0.02, requiresGrad: true }),
    Wu: randn([H, W], { seed: 30 + i, std: 0.02, requiresGrad: true }), bu: randn([H], { seed: 40 + i, std: 0.02, requiresGrad: true }) }));
  const params = [h, res, ...ws.flatMap((w) => [w.Wd, w.bd, w.Wu, w.bu])];
  const starts = Array.from({ length: N + 1 }, (_, i) => i * ROWS * T);
  const loop = (): Tensor => ops.concat(ws.map((w, i) => {
    const rows = (t: Tensor) => ops.slice(t, 0, starts[i]!, starts[i + 1]!);
    return ops.add(ops.linear(ops.relu(ops.linear(rows(h), w.Wd, w.bd)), w.Wu, w.bu), rows(res));
  }), 0);
  const sgmv = (): Tensor => bottleneckSgmv(h, res, ws, starts, ws.map(() => 1), 'relu');
  const u = randn([M, H], { seed: 2 });
  const fwd = (f: () => Tensor) => () => scope(() => { noGrad(() => f()); });
  const both = (f: () => Tensor) => () => scope(() => {
    f().backward(u);
    for (const p of params) { p.grad?.dispose(); p.grad = null; }
  });
  const inner = N <= 4 ? 10 : 3;
  const lf = time(fwd(loop), 5, inner), sf = time(fwd(sgmv), 5, inner);
  const lb = time(both(loop), 5, inner), sb = time(both(sgmv), 5, inner);
  bnLayer.push([N, M, lf * 1e3, sf * 1e3, lf / sf, lb * 1e3, sb * 1e3, lb / sb]);
  for (const p of [...params, u]) p.dispose();
}
console.log(`bench/composition: ${numThreads()} threads`);
console.log(`\nLoRA layer: ${H}→${H}, rank ${R}, ${ROWS} rows × ${T} tokens per adapter — per-adapter loop (Python library / PEFT style) vs lora_sgmv`);
console.log(table(layer));
console.log(`\nBottleneck layer (seq_bn): hidden ${H}, width ${H / 16}, relu, same rows — per-adapter loop vs bottleneck_sgmv`);
console.log(table(bnLayer));

// 2. the model
const cfg = { model_type: 'bert', vocab_size: 30522, hidden_size: H, num_hidden_layers: L, num_attention_heads: 12,
  intermediate_size: 3072, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
const model = AutoAdapterModel.fromConfig(cfg, { seed: 0 }).eval();
const row = (i: number) => Array.from({ length: T }, (_, t) => (i * 131 + t * 7) % 30000 + 100);
const out: (string | number)[][] = [['N adapters', 'rows', 'model loop rows/s', 'mixed, sliced rows/s', 'mixed, sgmv rows/s', 'sgmv / model loop', 'sgmv / sliced']];
let added = 0;
for (const N of Ns) {
  for (; added < N; added++) model.addAdapter(`l${added}`, `lora[r=${R}, alpha=16]`);
  const names = Array.from({ length: N }, (_, i) => `l${i}`);
  const ids = names.flatMap((_, a) => Array.from({ length: ROWS }, (_, r) => row(a * ROWS + r)));
  const adapterIds = names.flatMap((n) => Array.from({ length: ROWS }, () => n));
  const reps = N >= 16 ? 1 : 3;
  const loop = time(() => {
    names.forEach((n, a) => {
      model.setActiveAdapters(n);
      scope(() => { noGrad(() => model.forward({ inputIds: ids.slice(a * ROWS, (a + 1) * ROWS) })); });
    });
  }, reps);
  const mixed = () => scope(() => { noGrad(() => model.forward({ inputIds: ids, adapterIds })); });
  setFusedAdapterKernels(false);
  const sliced = time(mixed, reps);
  setFusedAdapterKernels(true);
  const fused = time(mixed, reps);
  const rows = N * ROWS;
  out.push([N, rows, rows / loop, rows / sliced, rows / fused, loop / fused, sliced / fused]);
  console.error(`N=${N} done`);
}
console.log(`\nBERT-base-size model (${L} layers, hidden ${H}), seq ${T}, ${ROWS} rows per adapter, LoRA r=${R} on q/v, inference`);
console.log(table(out));
