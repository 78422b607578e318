/**
 * bench/composition — serving many LoRA adapters at once: a mixed batch (forward({adapterIds}): one base pass,
 * each adapter applied to its own rows) versus the per-adapter loop (activate adapter i, run its rows, repeat),
 * over N = 1, 4, 16, 64 LoRA adapters (rank 8, q/v) on a BERT-base-size random model, 4 rows per adapter, inference.
 * Prints rows/s of both and the ratio, measured in the same run. The mixed batch still applies the adapters slice
 * by slice (a BatchSplit pass); a fused segmented-GEMM (SGMV) kernel is not implemented yet, so this measures the
 * batching gain only, not the fused-kernel one that issue 5 targets.
 * Run: npx tsx bench/composition.ts   (BENCH_QUICK=1: 2 layers, seq 32, N up to 16)
 */
import { AutoAdapterModel, noGrad, scope, numThreads } from '../lib/index.ts';
import { table } from './common.ts';

const quick = !!process.env.BENCH_QUICK;
const [L, T] = quick ? [2, 32] : [12, 64];
const Ns = quick ? [1, 4, 16] : [1, 4, 16, 64];
const ROWS = 4;
const cfg = { model_type: 'bert', vocab_size: 30522, hidden_size: 768, num_hidden_layers: L, num_attention_heads: 12,
  intermediate_size: 3072, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
const model = AutoAdapterModel.fromConfig(cfg, { seed: 0 }).eval();
const row = (i: number) => Array.from({ length: T }, (_, t) => (i * 131 + t * 7) % 30000 + 100);

const time = (fn: () => void, reps: number) => {
  fn();  // warm-up
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return best;
};

const out: (string | number)[][] = [['N adapters', 'rows', 'loop rows/s', 'mixed rows/s', 'mixed / loop']];
let added = 0;
for (const N of Ns) {
  for (; added < N; added++) model.addAdapter(`l${added}`, 'lora[r=8, alpha=16]');
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
  const mixed = time(() => scope(() => { noGrad(() => model.forward({ inputIds: ids, adapterIds })); }), reps);
  const rows = N * ROWS;
  out.push([N, rows, rows / loop, rows / mixed, loop / mixed]);
  console.error(`N=${N} done`);
}
console.log(`bench/composition: BERT-base-size (${L} layers, hidden 768), seq ${T}, ${ROWS} rows per adapter, LoRA r=8, ${numThreads()} threads`);
console.log(table(out));
