/**
 * bench/train — one adapter-training step (forward, classification-head cross-entropy, backward, AdamW over the
 * trainable parameters) on a BERT-base-size random model (12 layers, hidden 768, seq 128, batch 8): tokens/s and
 * peak RSS for full fine-tuning, seq_bn, lora, prefix_tuning and ia3, next to the same loop in PyTorch
 * (bench/torch_train.py: f32, and under torch.autocast('cpu', bfloat16)) in the same invocation when python3-torch
 * is present. Every (method, dtype) runs in its own process, so each peak RSS is that run's own.
 * bf16 = our mixed precision (autocast: bf16 Linear GEMMs, f32 master weights and activations) vs torch.autocast.
 * Run: npx tsx bench/train.ts   (BENCH_QUICK=1: 2 layers, seq 64; BENCH_ROUNDS=n alternating rounds, default 2;
 * BENCH_METHODS=lora,seq_bn / BENCH_DTYPES=bf16 pick a subset). Speed ratio = median over rounds of PyTorch's
 * step time / ours in the same round; tokens/s are medians; peak RSS is the largest of the rounds.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, AdamW, autocast, hfParamGroups, numThreads, scope, tensor } from '../lib/index.ts';
import { runPythonJson, table, torchPython } from './common.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = !!process.env.BENCH_QUICK;
const [L, T, B] = quick ? [2, 64, 8] : [12, 128, 8];
const STEPS = quick ? 2 : 3;
const methods: [string, string | null][] = [['full', null], ['seq_bn', 'seq_bn'], ['lora', 'lora'], ['prefix_tuning', 'prefix_tuning'], ['ia3', 'ia3']];

/** Child: one method and dtype, prints {s, peak_rss}. */
function child(method: string, dtype: string): void {
  const config = methods.find(([n]) => n === method)![1];
  const model = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 30522, hidden_size: 768, num_hidden_layers: L, num_attention_heads: 12,
    intermediate_size: 3072, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 0 });
  model.addClassificationHead('x', { num_labels: 2 });
  if (config) {
    model.addAdapter('x', config);
    model.trainAdapter('x');
  } else {
    model.freezeModel(false);
    model.train();
  }
  const opt = new AdamW(hfParamGroups(model, 0.01), { lr: 1e-4, weightDecay: 0.01 });
  const inputIds = tensor(Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 7) % 30000 + 100)), undefined, { dtype: 'i64' });
  const labels = tensor(Array.from({ length: B }, (_, b) => b % 2), [B], { dtype: 'i64' });
  const step = () => {
    autocast(() => scope(() => { model.forward({ inputIds, labels }).loss!.backward(); }), { enabled: dtype === 'bf16' });
    opt.step();
    opt.zeroGrad();
  };
  step();
  let best = Infinity;
  for (let r = 0; r < STEPS; r++) {
    const t0 = performance.now();
    step();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  console.log(JSON.stringify({ s: best, peak_rss: process.resourceUsage().maxRSS * 1024 }));
}

const arg = process.argv.indexOf('--child');
if (arg >= 0) child(process.argv[arg + 1]!, process.argv[arg + 2]!);
else {
  const py = torchPython();
  const rows: (string | number)[][] = [['method', 'dtype', 'ours tok/s', 'ours peak RSS MiB', 'torch tok/s', 'torch peak RSS MiB', 'ours / torch speed', 'ours / torch RSS']];
  // BENCH_METHODS=lora,seq_bn / BENCH_DTYPES=bf16 run a subset
  const pick = (env: string | undefined, all: string[]) => (env ? all.filter((x) => env.split(',').includes(x)) : all);
  // This machine's throughput (AMX above all) swings up to 2x within minutes, so BENCH_ROUNDS (default 2) rounds
  // alternate ours and PyTorch and the table gives medians, with the per-round speed ratios beside them.
  const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
  const median = (xs: number[]) => { const v = [...xs].sort((a, b) => a - b); return v.length % 2 ? v[v.length >> 1]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2; };
  rows[0]!.push('ratio per round');
  for (const name of pick(process.env.BENCH_METHODS, methods.map(([n]) => n)))
    for (const dtype of pick(process.env.BENCH_DTYPES, ['f32', 'bf16'])) {
      const ours: { s: number; peak_rss: number }[] = [], theirs: { s: number; peak_rss: number }[] = [];
      for (let round = 0; round < rounds; round++) {
        const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', name, dtype], { encoding: 'utf8', env: process.env, maxBuffer: 16 << 20 });
        if (r.status !== 0) throw new Error(`${name} ${dtype}: ${r.stderr.slice(-2000)}`);
        ours.push(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { s: number; peak_rss: number });
        if (py) theirs.push(runPythonJson<{ version: string; s: number; peak_rss: number }>(py, path.join(here, 'torch_train.py'),
          { threads: numThreads(), layers: L, seq: T, batch: B, method: name === 'full' ? 'none' : name, dtype, steps: STEPS }));
      }
      const tok = (s: number) => (B * T) / s, mib = (b: number) => b / 2 ** 20;
      const os = median(ours.map((o) => o.s)), orss = Math.max(...ours.map((o) => o.peak_rss));
      const ts = theirs.length ? median(theirs.map((o) => o.s)) : 0, trss = theirs.length ? Math.max(...theirs.map((o) => o.peak_rss)) : 0;
      const perRound = theirs.map((t, i) => (t.s / ours[i]!.s).toFixed(2)).join(' ');
      rows.push([name, dtype, tok(os), mib(orss), py ? tok(ts) : '-', py ? mib(trss) : '-', py ? median(theirs.map((t, i) => t.s / ours[i]!.s)) : '-', py ? orss / trss : '-', perRound || '-']);
      console.error(`${name} ${dtype} done`);
    }
  console.log(`bench/train: BERT ${L} layers, hidden 768, seq ${T} × batch ${B}, classification head + CE, AdamW; ${numThreads()} threads`);
  console.log(table(rows));
}
