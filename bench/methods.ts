/**
 * bench/methods — forward + backward time and peak native memory of one training step per adapter method on a
 * BERT-base-size random model (12 layers, hidden 768, seq 128 × batch 8; base frozen, loss = Σh²), as ratios to
 * the same step without adapters; and the same ratios for PyTorch running a plain-torch re-implementation of
 * BERT with the same adapter math (bench/torch_methods.py) in the same invocation when python3-torch is present.
 * Run: npx tsx bench/methods.ts   (BENCH_QUICK=1: 2 layers, seq 64)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, ops, scope, memoryStats, numThreads, emptyCache, resetPeakMemory } from '../lib/index.ts';
import { runPythonJson, table, torchPython } from './common.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = !!process.env.BENCH_QUICK;
const [L, T, B] = quick ? [2, 64, 8] : [12, 128, 8];
const cfg = { model_type: 'bert', vocab_size: 30522, hidden_size: 768, num_hidden_layers: L, num_attention_heads: 12,
  intermediate_size: 3072, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
// 'none' = the same step without adapters, training the whole model (full fine-tuning)
const methods: [string, string | null][] = [['none', null], ['seq_bn', 'seq_bn'], ['lora', 'lora'], ['prefix_tuning', 'prefix_tuning'], ['ia3', 'ia3']];
const ids = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 7) % 30000 + 100));

const ours = new Map<string, { s: number; peak: number }>();
const model = AutoAdapterModel.fromConfig(cfg, { seed: 0 });
for (const [name, config] of methods) {
  if (config) model.addAdapter('x', config);
  if (config) model.trainAdapter('x');
  else { model.freezeModel(false); model.train(); }
  const step = () => scope(() => {
    const h = model.forward({ inputIds: ids }).lastHiddenState;
    const loss = ops.sum(ops.mul(h, h));
    if (!Number.isFinite(loss.item())) throw new Error(`${name}: non-finite loss`);
    loss.backward();
  });
  step();  // warm-up (and check)
  for (const [, p] of model.namedParameters()) p.zeroGrad();
  emptyCache();
  resetPeakMemory();
  const base = memoryStats().liveBytes;
  let best = Infinity, peak = 0;
  for (let r = 0; r < (quick ? 2 : 3); r++) {
    const t0 = performance.now();
    step();
    best = Math.min(best, (performance.now() - t0) / 1000);
    peak = Math.max(peak, memoryStats().peakBytes - base);
    for (const [, p] of model.namedParameters()) p.zeroGrad();
  }
  ours.set(name, { s: best, peak });
  console.log(`${name}: ${best.toFixed(2)} s per forward+backward`);
  if (config) model.deleteAdapter('x');
}
model.dispose();

const py = torchPython();
const res = py ? runPythonJson<{ version: string; results: Record<string, { s: number; peak: number }> }>(py, path.join(here, 'torch_methods.py'),
  { threads: numThreads(), layers: L, seq: T, batch: B, methods: methods.map(([n]) => n) }) : null;
const base = ours.get('none')!, tbase = res?.results.none;
const rows: (string | number)[][] = [['method', 'ours s', 'ours × none', 'ours peak MiB', `torch ${res?.version ?? '-'} s`, 'torch × none', 'ours / torch time']];
for (const [name] of methods) {
  const o = ours.get(name)!, tr = res?.results[name];
  rows.push([name, o.s, o.s / base.s, o.peak / 2 ** 20, tr ? tr.s : '-', tr && tbase ? tr.s / tbase.s : '-', tr ? o.s / tr.s : '-']);
}
console.log(`BERT ${L} layers, hidden 768, seq ${T} × batch ${B}, f32, ${numThreads()} threads; adapters: base frozen; none: full fine-tuning; loss = Σh²`);
console.log(table(rows));
console.log('peak MiB: native bytes allocated beyond the model during the step (activations kept for backward, gradients).');
