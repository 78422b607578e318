/**
 * bench/train — one adapter-training step (forward, classification-head cross-entropy, backward, AdamW over the
 * trainable parameters) on a BERT-base-size random model (12 layers, hidden 768, seq 128, batch 8): tokens/s and
 * peak RSS for full fine-tuning, seq_bn, lora, prefix_tuning and ia3, next to the same loop in PyTorch
 * (bench/torch_train.py: f32, and under torch.autocast('cpu', bfloat16)) in the same invocation when python3-torch
 * is present. Every (method, dtype) runs in its own pair of processes (ours and PyTorch), so each peak RSS is that
 * run's own; the two take turns, one step each, so that both sides of each pair see the same machine.
 * bf16 = our mixed precision (autocast: bf16 Linear GEMMs, f32 master weights and activations) vs torch.autocast.
 * Run: npx tsx bench/train.ts   (BENCH_QUICK=1: 2 layers, seq 64; BENCH_PAIRS=n timed step pairs, default 6, after two
 * warm-up steps per side; BENCH_METHODS=lora,seq_bn / BENCH_DTYPES=bf16 pick a subset). Speed ratio = median over
 * pairs of PyTorch's step time / ours; tokens/s come from each side's median step time.
 */
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, AdamW, autocast, hfParamGroups, numThreads, scope, tensor } from '../lib/index.ts';
import { Peer, machineLine, median, table, torchEnv, torchPython } from './common.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = !!process.env.BENCH_QUICK;
const [L, T, B] = quick ? [2, 64, 8] : [12, 128, 8];
const WARMUP = quick ? 1 : 2;  // steps per side before the timed pairs
const methods: [string, string | null][] = [['full', null], ['seq_bn', 'seq_bn'], ['lora', 'lora'], ['prefix_tuning', 'prefix_tuning'], ['ia3', 'ia3']];

/** Child: one method and dtype, serving steps (see the end of this function). */
async function child(method: string, dtype: string): Promise<void> {
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
  // Serves steps to the parent: one step per "step" line, its time as a JSON line; any other line ends with the peak RSS.
  console.log(JSON.stringify({ ready: true }));
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() !== 'step') break;
    const t0 = performance.now();
    step();
    console.log(JSON.stringify({ s: (performance.now() - t0) / 1000 }));
  }
  console.log(JSON.stringify({ peak_rss: process.resourceUsage().maxRSS * 1024 }));
  rl.close();
}


async function main(): Promise<void> {
  const py = torchPython();
  const rows: (string | number)[][] = [['method', 'dtype', 'ours tok/s', 'ours peak RSS MiB', 'torch tok/s', 'torch peak RSS MiB', 'ours / torch speed', 'pair ratios min–max', 'ours / torch RSS']];
  // BENCH_METHODS=lora,seq_bn / BENCH_DTYPES=bf16 run a subset
  const pick = (env: string | undefined, all: string[]) => (env ? all.filter((x) => env.split(',').includes(x)) : all);
  // This machine's throughput (AMX above all) swings up to 2x within minutes, so ours and PyTorch run side by side
  // as two processes and take turns, one step each (the first alternating): each pair of steps sees the same
  // machine, and the speed ratio is the median of the pairs' ratios.
  const pairs = Math.max(1, Number(process.env.BENCH_PAIRS ?? (quick ? 2 : 6)));
  const env = torchEnv();
  for (const name of pick(process.env.BENCH_METHODS, methods.map(([n]) => n)))
    for (const dtype of pick(process.env.BENCH_DTYPES, ['f32', 'bf16'])) {
      const ours = new Peer(`ours ${name} ${dtype}`, process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', name, dtype], process.env);
      const theirs = py ? new Peer(`torch ${name} ${dtype}`, py, [path.join(here, 'torch_train.py')], env, JSON.stringify({ threads: numThreads(), layers: L, seq: T,
        batch: B, method: name === 'full' ? 'none' : name, dtype, steps: 0, serve: true })) : null;
      await ours.next();  // ready
      if (theirs) await theirs.next();  // ready (torch's version)
      for (let w = 0; w < WARMUP; w++) { await ours.step(); if (theirs) await theirs.step(); }
      const os: number[] = [], ts: number[] = [];
      for (let i = 0; i < pairs; i++) {
        if (theirs && i % 2) ts.push(await theirs.step());
        os.push(await ours.step());
        if (theirs && !(i % 2)) ts.push(await theirs.step());
      }
      const orss = (await ours.quit()).peak_rss!, trss = theirs ? (await theirs.quit()).peak_rss! : 0;
      const tok = (s: number) => (B * T) / s, mib = (b: number) => b / 2 ** 20;
      const ratios = ts.map((t, i) => t / os[i]!);
      rows.push([name, dtype, tok(median(os)), mib(orss), theirs ? tok(median(ts)) : '-', theirs ? mib(trss) : '-', theirs ? median(ratios) : '-',
        theirs ? `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}` : '-', theirs ? orss / trss : '-']);
      console.error(`${name} ${dtype} done`);
    }
  console.log(`bench/train: BERT ${L} layers, hidden 768, seq ${T} × batch ${B}, classification head + CE, AdamW; ${numThreads()} threads; ${pairs} paired steps per row`);
  console.log(`cpu: ${machineLine()}`);
  console.log(table(rows));
}

const arg = process.argv.indexOf('--child');
if (arg >= 0) await child(process.argv[arg + 1]!, process.argv[arg + 2]!);
else await main();
