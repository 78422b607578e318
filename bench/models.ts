/**
 * bench/models — forward throughput (tokens/s, no grad, f32) of a BERT-base-size and a LLaMA-style ~100M
 * random model, next to PyTorch running the same shapes with plain torch ops in the same invocation (when
 * python3-torch is present). Run: npx tsx bench/models.ts   (BENCH_QUICK=1 for smaller shapes)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel } from '../lib/models/auto.ts';
import { noGrad, numThreads, randn, ops, scope } from '../lib/index.ts';
import { runPythonJson, table, torchPython } from './common.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = !!process.env.BENCH_QUICK;
const bert = { model_type: 'bert', vocab_size: 30522, hidden_size: 768, num_hidden_layers: quick ? 2 : 12, num_attention_heads: 12,
  intermediate_size: 3072, max_position_embeddings: 512, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
// ~100M parameters: 12 layers × (4·768² attention with 4 kv heads + 3·768·2048 MLP) + 32k×768 embeddings ×2
const llama = { model_type: 'llama', vocab_size: 32000, hidden_size: 768, num_hidden_layers: quick ? 2 : 12, num_attention_heads: 12,
  num_key_value_heads: 4, intermediate_size: 2048, max_position_embeddings: 2048, rms_norm_eps: 1e-6, tie_word_embeddings: false };
const cases = [
  { key: 'bert-base  B=8 T=128', arch: 'bert', cfg: bert, batch: 8, seq: quick ? 32 : 128 },
  { key: 'llama-100M B=4 T=256', arch: 'llama', cfg: llama, batch: 4, seq: quick ? 32 : 256 },
];

const ours = new Map<string, number>();
for (const c of cases) {
  const model = AutoAdapterModel.fromConfig(c.cfg, { seed: 0 });
  const ids = ops.cast(ops.mul(randn([c.batch, c.seq], { seed: 1 }).abs(), 1000), 'i64');
  // check first: the output is finite and has the expected shape
  noGrad(() => scope(() => {
    const h = model.base.forward({ inputIds: ids }).lastHiddenState;
    const a = h.toArray() as Float32Array;
    if (h.shape.join() !== [c.batch, c.seq, c.cfg.hidden_size].join() || !a.every(Number.isFinite)) throw new Error(`${c.key}: bad output`);
  }));
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    noGrad(() => scope(() => { model.base.forward({ inputIds: ids }); }));
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  ours.set(c.key, (c.batch * c.seq) / best);
  console.log(`${c.key}: ${model.numParameters().toLocaleString()} parameters`);
  ids.dispose();
  model.dispose();
}
const py = torchPython();
const res = py ? runPythonJson<{ version: string; results: { key: string; tokens_per_s: number }[] }>(py, path.join(here, 'torch_models.py'), { threads: numThreads(), cases }) : null;
const tmap = new Map(res?.results.map((r) => [r.key, r.tokens_per_s]) ?? []);
const rows: (string | number)[][] = [['model', 'ours tokens/s', `torch ${res?.version ?? '-'} tokens/s`, 'ours / torch']];
for (const c of cases) {
  const o = ours.get(c.key)!, t = tmap.get(c.key);
  rows.push([c.key, o, t ?? '-', t ? o / t : '-']);
}
console.log(`threads: ${numThreads()}, f32, no grad`);
console.log(table(rows));
