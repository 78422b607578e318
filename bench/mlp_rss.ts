/**
 * bench/mlp_rss — a 10,000-step forward + backward + SGD loop on a small MLP, printing process RSS and
 * native live bytes every 1,000 steps: both must stay flat (tensors are freed by scope(), gradients by
 * zeroGrad()). Run: npm run bench:mlp-rss   (BENCH_STEPS=N to change the step count; the npm script passes
 * --expose-gc so that a full collection runs before each report)
 */
import { ops, randn, scope, noGrad, memoryStats, manualSeed, tensor, type Tensor } from '../lib/index.ts';

const steps = Number(process.env.BENCH_STEPS ?? 10_000);
manualSeed(0);
const [B, D, H, C] = [32, 64, 128, 10];
const params: Tensor[] = [
  randn([H, D], { std: 0.1, requiresGrad: true }),
  randn([H], { std: 0.01, requiresGrad: true }),
  randn([C, H], { std: 0.1, requiresGrad: true }),
  randn([C], { std: 0.01, requiresGrad: true }),
];
const x = randn([B, D]);
const tgt = tensor(Array.from({ length: B }, (_, i) => i % C), [B], { dtype: 'i64' });

const t0 = performance.now();
let first = 0;
// Native-API finalizers (the TensorHandle wrappers collected by GC) run on the event loop, so a training loop
// yields between steps, as the trainer does; a loop that never yields accumulates those small wrappers.
const tick = () => new Promise<void>((r) => setImmediate(r));
for (let step = 1; step <= steps; step++) {
  if (step % 10 === 0) await tick();
  const loss = scope(() => {
    const [w1, b1, w2, b2] = params as [Tensor, Tensor, Tensor, Tensor];
    const h = ops.gelu(ops.linear(x, w1, b1));
    const logits = ops.linear(ops.dropout(h, 0.1), w2, b2);
    const l = ops.crossEntropy(logits, tgt);
    l.backward();
    noGrad(() => {
      for (const p of params) {
        const upd = p.sub(p.grad!.mul(0.05));
        p.copy_(upd);
      }
    });
    for (const p of params) p.zeroGrad();
    return l.item();
  });
  if (step === 1) first = loss;
  if (step % 1000 === 0 || step === steps) {
    // a full GC first (when node runs with --expose-gc), so RSS shows what is retained, not what V8 hasn't collected yet
    (globalThis as { gc?: () => void }).gc?.();
    const m = memoryStats();
    console.log(
      `step ${String(step).padStart(6)}  loss ${loss.toFixed(4)}  rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MiB  ` +
        `JS heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1)} MiB  pooled ${(m.pooledBytes / 2 ** 20).toFixed(1)} MiB  ` +
        `native live ${(m.liveBytes / 1024).toFixed(0)} KiB in ${m.liveStorages} storages, ${m.liveTensors} tensors`,
    );
  }
}
console.log(`first loss ${first.toFixed(4)}; ${(steps / ((performance.now() - t0) / 1000)).toFixed(0)} steps/s`);
