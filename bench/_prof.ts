import { AutoAdapterModel, AdamW, autocast, hfParamGroups, scope, tensor } from '/work/main/lib/index.ts';
const method = process.env.M ?? 'seq_bn', bf = (process.env.D ?? 'bf16') === 'bf16';
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
const n = Number(process.env.N ?? 10); const ts: number[] = [];
for (let i = 0; i < n; i++) { const t0 = performance.now(); step(); ts.push(performance.now() - t0); }
ts.sort((a, b) => a - b); console.log(method, bf ? 'bf16' : 'f32', 'median ms', ts[n >> 1].toFixed(1), 'tok/s', (T * B / ts[n >> 1] * 1000).toFixed(0));
