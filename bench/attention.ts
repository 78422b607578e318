/**
 * bench/attention — the fused attention kernel at long sequence lengths: forward and forward+backward
 * time and peak native memory for B=1, H=12, D=64, T up to 4096, next to what one materialised T×T score
 * matrix per head would need. Checks a small case against an explicit softmax(q·kᵀ)·v first.
 * Run: npm run bench:attention
 */
import { ops, randn, memoryStats, noGrad, emptyCache, scope } from '../lib/index.ts';
import { bestTime, table } from './common.ts';

// ---- check ----
scope(() => {
  const [B, H, T, D] = [2, 3, 37, 16];
  const q = randn([B, H, T, D], { seed: 1 }), k = randn([B, H, T, D], { seed: 2 }), v = randn([B, H, T, D], { seed: 3 });
  const fused = noGrad(() => ops.scaledDotProductAttention(q, k, v, { isCausal: true })).toArray() as Float32Array;
  const Q = q.toArray() as Float32Array, K = k.toArray() as Float32Array, V = v.toArray() as Float32Array;
  let maxErr = 0;
  const s = 1 / Math.sqrt(D);
  for (let bh = 0; bh < B * H; bh++)
    for (let i = 0; i < T; i++) {
      const sc: number[] = [];
      for (let j = 0; j <= i; j++) {
        let d = 0;
        for (let e = 0; e < D; e++) d += Q[(bh * T + i) * D + e]! * K[(bh * T + j) * D + e]!;
        sc.push(d * s);
      }
      const m = Math.max(...sc);
      const p = sc.map((x) => Math.exp(x - m));
      const z = p.reduce((a, b) => a + b, 0);
      for (let e = 0; e < D; e++) {
        let o = 0;
        for (let j = 0; j <= i; j++) o += (p[j]! / z) * V[(bh * T + j) * D + e]!;
        maxErr = Math.max(maxErr, Math.abs(o - fused[(bh * T + i) * D + e]!));
      }
    }
  if (!(maxErr < 1e-5)) throw new Error(`attention check failed: max abs error ${maxErr}`);
  console.log(`check: causal attention vs explicit softmax, max abs error ${maxErr.toExponential(2)} (ok)`);
});

const rows: (string | number)[][] = [['T', 'causal', 'fwd ms', 'fwd+bwd ms', 'peak extra MiB', 'one T×T f32 score matrix per head, MiB']];
const Ts = process.env.BENCH_QUICK ? [512, 1024] : [1024, 2048, 4096];
for (const T of Ts) {
  for (const causal of [false, true]) {
    const [B, H, D] = [1, 12, 64];
    const q = randn([B, H, T, D], { seed: 1, requiresGrad: true });
    const k = randn([B, H, T, D], { seed: 2, requiresGrad: true });
    const v = randn([B, H, T, D], { seed: 3, requiresGrad: true });
    const fwd = bestTime(() => noGrad(() => ops.scaledDotProductAttention(q, k, v, { isCausal: causal }).dispose()), 2, 0.2);
    emptyCache();
    const base = memoryStats().liveBytes;
    let peak = 0;
    const both = bestTime(() => {
      scope(() => {
        const o = ops.scaledDotProductAttention(q, k, v, { isCausal: causal });
        const l = ops.sum(o);
        peak = Math.max(peak, memoryStats().liveBytes - base);
        l.backward();
        peak = Math.max(peak, memoryStats().liveBytes - base);
      });
      for (const t of [q, k, v]) t.zeroGrad();
    }, 2, 0.2);
    const scoreMiB = (B * H * T * T * 4) / 2 ** 20;
    rows.push([T, String(causal), fwd * 1000, both * 1000, peak / 2 ** 20, scoreMiB]);
    for (const t of [q, k, v]) t.dispose();
  }
}
console.log(table(rows));
console.log('peak extra = native bytes live during forward+backward beyond the inputs (outputs, lse, gradients included).');
