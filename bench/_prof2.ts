import { AutoAdapterModel, AdamW, autocast, hfParamGroups, scope, tensor } from '../lib/index.ts';
import { opProfile } from '../lib/tensor.ts';
const method = process.env.M ?? 'lora', bf = (process.env.D ?? 'bf16') === 'bf16';
const [L, T, B] = [12, 128, 8];
const model = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 30522, hidden_size: 768, num_hidden_layers: L, num_attention_heads: 12,
    intermediate_size: 3072, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 0 });
model.addClassificationHead('x', { num_labels: 2 });
if (method !== 'full') { model.addAdapter('x', method); model.trainAdapter('x'); } else { model.freezeModel(false); model.train(); }
const opt = new AdamW(hfParamGroups(model, 0.01), { lr: 1e-4, weightDecay: 0.01 });
const inputIds = tensor(Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 7) % 30000 + 100)), undefined, { dtype: 'i64' });
const labels = tensor(Array.from({ length: B }, (_, b) => b % 2), [B], { dtype: 'i64' });
const step = () => { autocast(() => scope(() => { model.forward({ inputIds, labels }).loss!.backward(); }), { enabled: bf }); opt.step(); opt.zeroGrad(); };
step(); step();
opProfile(true, { byShape: !!process.env.SHAPES });
const n = 5; const t0 = performance.now();
for (let i = 0; i < n; i++) step();
const tot = (performance.now() - t0) / n;
const rows = opProfile(false);
let sum = 0; for (const r of rows) sum += r.ms;
console.log(`step ${tot.toFixed(1)} ms; ops ${ (sum / n).toFixed(1)} ms`);
for (const r of rows.slice(0, 25)) console.log(`${(r.ms / n).toFixed(2).padStart(8)} ms  ${String(r.calls / n).padStart(6)}  ${r.op}`);
