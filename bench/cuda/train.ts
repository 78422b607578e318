/**
 * bench/cuda/train — the adapter training step of issue 8 on a GPU: BERT-base size (12 layers, hidden 768), seq 128,
 * batch 32, classification head + cross-entropy, AdamW over the trainable parameters, for seq_bn, lora, prefix_tuning
 * and ia3, in f32 and in bf16 mixed precision (our autocast vs torch.autocast('cuda', bfloat16)); tokens/s next to the
 * same loop in PyTorch eager on the same GPU (bench/torch_train.py with "device": "cuda", run by the bench when a
 * python3 with torch and CUDA is found). Prints one JSON line per method and dtype (with a per-op profile of one of
 * our steps) and a table. Skips with a message where no GPU is usable. BENCH_DTYPES=f32 limits the dtypes.
 * Run: node --import tsx bench/cuda/train.ts   (BENCH_QUICK=1: 2 layers, batch 8)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, AdamW, autocast, cuda, hfParamGroups, opProfile, scope, tensor } from '../../lib/index.ts';
import { runPythonJson, table } from '../common.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = !!process.env.BENCH_QUICK;
const [L, T, B] = quick ? [2, 128, 8] : [12, 128, 32];
const STEPS = Number(process.env.BENCH_STEPS ?? 10);  // best of STEPS timed steps on both sides (torch's bf16 step varied 2x with 3)

if (!cuda.isAvailable()) {
  console.log(`bench/cuda/train skipped: no usable CUDA device (${cuda.loadError() || 'hasCuda() is false'})`);
  process.exit(0);
}

function ours(method: string, dtype: string): number {
  const model = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 30522, hidden_size: 768, num_hidden_layers: L, num_attention_heads: 12,
    intermediate_size: 3072, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 0 });
  model.addClassificationHead('x', { num_labels: 2 });
  model.addAdapter('x', method);
  model.trainAdapter('x');
  model.to('cuda');
  const opt = new AdamW(hfParamGroups(model, 0.01), { lr: 1e-4, weightDecay: 0.01 });
  const inputIds = tensor(Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 7) % 30000 + 100)), undefined, { dtype: 'i64' }).cuda();
  const labels = tensor(Array.from({ length: B }, (_, b) => b % 2), [B], { dtype: 'i64' }).cuda();
  const fwdBwd = () => autocast(() => scope(() => { model.forward({ inputIds, labels }).loss!.backward(); }), { enabled: dtype === 'bf16' });
  const step = () => {
    fwdBwd();
    opt.step();
    opt.zeroGrad();
    cuda.synchronize();
  };
  step();
  step();
  let best = Infinity, hostMs = Infinity;
  for (let r = 0; r < STEPS; r++) {
    const t0 = performance.now();
    fwdBwd();
    opt.step();
    opt.zeroGrad();
    const th = performance.now();  // the host is done issuing; the device may still be working
    cuda.synchronize();
    best = Math.min(best, (performance.now() - t0) / 1000);
    hostMs = Math.min(hostMs, th - t0);
  }
  // what one profiled op costs beyond its kernel: two synchronisations and the host work of a tiny op
  const tiny = tensor([1], [1]).cuda();
  opProfile(true);
  for (let i = 0; i < 200; i++) scope(() => tiny.add(tiny));
  const perOp = opProfile(false)[0]!.ms / 200;
  tiny.dispose();
  // one more step with per-op timing (a device sync around every op), to show where the time goes
  opProfile(true);
  const t0 = performance.now();
  fwdBwd();
  cuda.synchronize();
  const t1 = performance.now();
  opt.step();
  opt.zeroGrad();
  cuda.synchronize();
  const t2 = performance.now();
  const prof = opProfile(false);
  const opsMs = prof.reduce((a, r) => a + r.ms, 0);
  // top ops by time with the profiling overhead (perOp per call) taken out
  const net = prof.map((r) => ({ ...r, ms: Math.max(0, r.ms - r.calls * perOp) })).sort((a, b) => b.ms - a.ms);
  console.log(JSON.stringify({ method, dtype, step_ms: best * 1000, host_issue_ms: hostMs, ops: prof.reduce((a, r) => a + r.calls, 0),
    profile_step_ms: t2 - t0, fwd_bwd_ms: t1 - t0, optimizer_ms: t2 - t1, ops_ms: opsMs, profile_overhead_per_op_ms: perOp,
    top_ops_net: net.slice(0, 16).map((r) => [r.op, r.calls, +r.ms.toFixed(3)]) }));
  model.dispose();
  return best;
}

const py = process.env.TORCH_PYTHON ?? 'python3';
const rows: (string | number)[][] = [['method', 'dtype', 'ours tok/s', 'torch tok/s', 'ours / torch']];
const dtypes = (process.env.BENCH_DTYPES ?? 'f32,bf16').split(',');
for (const dtype of dtypes)
  for (const method of ['seq_bn', 'lora', 'prefix_tuning', 'ia3']) {
    const s = ours(method, dtype);
    const tr = runPythonJson<{ version: string; s: number }>(py, path.join(here, '..', 'torch_train.py'),
      { threads: 1, layers: L, seq: T, batch: B, method, dtype, steps: STEPS, warmup: 2, device: 'cuda' });
    const tok = (x: number) => (B * T) / x;
    console.log(JSON.stringify({ method, dtype, device: cuda.deviceName(0), ours_tokens_per_s: tok(s), torch_tokens_per_s: tr ? tok(tr.s) : null, torch: tr?.version ?? null }));
    rows.push([method, dtype, tok(s), tr ? tok(tr.s) : '-', tr ? tr.s / s : '-']);
  }
console.log(`bench/cuda/train: BERT ${L} layers, hidden 768, seq ${T} × batch ${B}, on ${cuda.deviceName(0)} (bf16 = mixed precision, f32 master weights)`);
console.log(table(rows));
