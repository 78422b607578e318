/**
 * The `adapters-node` command line: train / eval / generate / summary on a local Hugging Face model folder.
 * Exit codes: 0 success, 1 runtime failure (bad file, NaN loss, ...), 2 usage error (unknown command or flag).
 *   adapters-node train --model DIR --task causal-lm|classification --train FILE [--validation FILE]
 *       --adapter CONFIG_STRING [--max-steps N] [--batch-size B] [--seq-len T] [--lr LR] [--output DIR] [--json]
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { AutoAdapterModel, type AdapterModel } from './models/auto.ts';
import { AutoTokenizer } from './tokenizers/auto.ts';
import { AdapterTrainer, type Example } from './train/trainer.ts';
import { accuracy, matthewsCorrcoef, pearson, spearman } from './train/metrics.ts';
import { GLUE_TASKS, readTable, tableExamples, textBlocks, type TableTask } from './data/datasets.ts';
import { ValueError } from './errors.ts';
import { manualSeed } from './ops/creation.ts';

const HELP = `adapters-node — train and use adapters (AdapterHub Adapters for Node.js)

Usage:
  adapters-node train    --model DIR --task causal-lm|classification --train FILE --adapter CONFIG [options]
  adapters-node eval     --model DIR --task causal-lm|classification --validation FILE [--adapter-dir DIR] [options]
  adapters-node generate --model DIR --prompt TEXT [--adapter-dir DIR] [--max-new-tokens N]
  adapters-node summary  --model DIR [--adapter CONFIG]

Options:
  --model DIR|HUB_ID     Hugging Face model folder (config.json + safetensors + tokenizer.json) or Hub repo id
                         (downloaded into the huggingface_hub cache; HF_TOKEN, HF_HUB_OFFLINE=1, HF_ENDPOINT honoured)
  --task NAME            causal-lm (uses the model's own LM head) or classification (adds a head)
  --glue NAME            column preset for classification: cola, sst-2, mrpc, rte, sts-b
  --train FILE           text (causal-lm) or TSV/CSV/JSONL (classification)
  --validation FILE      held-out data; causal-lm without it holds out the last 10% of --train
  --adapter CONFIG       adapter config string, e.g. "lora[r=8]", "seq_bn", "prefix_tuning", "ia3"; "full" = full fine-tuning
  --adapter-dir DIR|ID   load a saved adapter (Adapters-library or PEFT format; folder or Hub id) for eval / generate
  --max-steps N          optimiser steps (default 200)
  --batch-size B         examples per step (default 8)
  --seq-len T            tokens per block / max tokens per example (default 128)
  --lr LR                learning rate (default 1e-3)
  --max-eval N           evaluate on at most N examples (default all)
  --seed N               seed (default 42)
  --output DIR           save the trained adapter (and head) here; checkpoints go to DIR.checkpoints/checkpoint-<step>
  --eval-steps N         evaluate every N steps (default: at the end)
  --save-steps N         checkpoint every N steps (needs --output)
  --resume DIR           continue exactly from a checkpoint folder of an earlier run with the same flags
  --grad-accum N         gradient accumulation steps (default 1)
  --warmup N             linear warm-up steps (default 0)
  --optim NAME           adamw_torch (default), adafactor or sgd
  --device DEV           cpu (default) or cuda / cuda:N (a GPU through the CUDA library)
  --bf16                 bf16 mixed precision (Linear GEMMs in bf16, f32 master weights)
  --gradient-checkpointing  recompute each layer in the backward pass
  --adapter-drop         AdapterDrop: skip the adapters of a random number of lower layers per batch
  --log FILE             append every log record as a JSON line
  --json                 print one JSON object with the results as the last line
  -h, --help             this text
`;

class UsageError extends Error {}

function optimFlag(v: string | undefined): 'adamw_torch' | 'adafactor' | 'sgd' | undefined {
  if (v === undefined) return undefined;
  if (v === 'adamw_torch' || v === 'adamw' || v === 'adafactor' || v === 'sgd') return v === 'adamw' ? 'adamw_torch' : v;
  throw new UsageError(`--optim must be adamw_torch, adafactor or sgd, got '${v}'`);
}

const OPTIONS = {
  model: { type: 'string' }, task: { type: 'string' }, glue: { type: 'string' }, train: { type: 'string' }, validation: { type: 'string' },
  adapter: { type: 'string' }, 'adapter-dir': { type: 'string' }, 'max-steps': { type: 'string' }, 'batch-size': { type: 'string' },
  'seq-len': { type: 'string' }, lr: { type: 'string' }, optim: { type: 'string' }, device: { type: 'string' }, 'max-eval': { type: 'string' }, seed: { type: 'string' }, output: { type: 'string' },
  prompt: { type: 'string' }, 'max-new-tokens': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  'eval-steps': { type: 'string' }, 'save-steps': { type: 'string' }, resume: { type: 'string' }, 'grad-accum': { type: 'string' },
  warmup: { type: 'string' }, bf16: { type: 'boolean' }, 'gradient-checkpointing': { type: 'boolean' }, 'adapter-drop': { type: 'boolean' },
  log: { type: 'string' },
} as const;

type Flags = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

function need(f: Flags, k: keyof Flags): string {
  const v = f[k];
  if (typeof v !== 'string' || !v) throw new UsageError(`missing --${k}`);
  return v;
}
// flags each command reads: any other is a usage error rather than silently ignored
const COMMAND_FLAGS: Record<string, string[]> = {
  train: ['model', 'task', 'glue', 'train', 'validation', 'adapter', 'max-steps', 'batch-size', 'seq-len', 'lr', 'optim', 'device', 'max-eval', 'seed',
    'output', 'json', 'help', 'eval-steps', 'save-steps', 'resume', 'grad-accum', 'warmup', 'bf16', 'gradient-checkpointing', 'adapter-drop', 'log'],
  eval: ['model', 'task', 'glue', 'train', 'validation', 'adapter-dir', 'batch-size', 'seq-len', 'max-eval', 'json', 'help'],
  generate: ['model', 'adapter-dir', 'prompt', 'max-new-tokens', 'json', 'help'],
  summary: ['model', 'adapter', 'json', 'help'],
};

function int(f: Flags, k: keyof Flags, def: number): number {
  const v = f[k];
  if (v === undefined) return def;
  // decimal digits only (Number() would take 0x5, 1e1 or ' 5')
  if (typeof v !== 'string' || !/^\d+$/.test(v)) throw new UsageError(`--${k} must be a positive integer, got '${String(v)}'`);
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${k} must be a positive integer, got '${String(v)}'`);
  return n;
}
function nonNegative(f: Flags, k: keyof Flags): number {
  const v = f[k];
  if (v === undefined) return 0;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || !Number.isInteger(n) || n < 0) throw new UsageError(`--${k} must be a non-negative integer, got '${String(v)}'`);
  return n;
}
function num(f: Flags, k: keyof Flags, def: number): number {
  const v = f[k];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${k} must be a positive number, got '${String(v)}'`);
  return n;
}

interface TaskData { train?: Example[]; eval: Example[]; task: TableTask | null }

/** The class names of the active head in id order (its label2id), when they are real names (not LABEL_i). */
function headLabels(model: AdapterModel): string[] | null {
  const a = model.activeHead;
  if (typeof a !== 'string') return null;
  const l2i = model.headManager.get(a).config.label2id as Record<string, number> | null | undefined;
  if (!l2i) return null;
  const names = Object.entries(l2i).sort((x, y) => x[1] - y[1]).map(([k]) => k);
  return names.every((n, i) => n === `LABEL_${i}`) ? null : names;
}

function loadData(f: Flags, model: AdapterModel, withTrain: boolean, classes: string[] | null = null): TaskData {
  const tok = AutoTokenizer.fromPretrained(model.sourceDir ?? need(f, 'model'));
  const T = int(f, 'seq-len', 128);
  const task = need(f, 'task');
  let out: TaskData;
  if (task === 'causal-lm') {
    if (!model.lmHeadKind) throw new UsageError(`--task causal-lm needs a model with an LM head; ${model.modelType} has none`);
    const trainFile = withTrain ? need(f, 'train') : f.train;
    const val = f.validation;
    out = {
      train: withTrain ? textBlocks(trainFile!, tok, T, val ? undefined : { part: 'head', fraction: 0.9 }) : undefined,
      eval: val ? textBlocks(val, tok, T) : textBlocks(need(f, 'train'), tok, T, { part: 'tail', fraction: 0.1 }),
      task: null,
    };
  } else if (task === 'classification') {
    let preset = f.glue ? GLUE_TASKS[f.glue.toLowerCase()] : plainTask(need(f, withTrain ? 'train' : 'validation'));
    if (!preset) throw new UsageError(`unknown --glue '${f.glue}' (one of ${Object.keys(GLUE_TASKS).join(', ')})`);
    // evaluating a trained head: its own class order (id2label), not the one the validation file alone would give
    if (classes && !f.glue && preset.labels) preset = { ...preset, labels: classes };
    out = { train: withTrain ? tableExamples(need(f, 'train'), preset, tok, T) : undefined, eval: tableExamples(need(f, 'validation'), preset, tok, T), task: preset };
  } else throw new UsageError(`unknown --task '${task}' (causal-lm or classification)`);
  const maxEval = f['max-eval'] ? int(f, 'max-eval', 0) : 0;
  if (maxEval) out.eval = out.eval.slice(0, maxEval);
  return out;
}

/**
 * A table with `text` (and optional `text_pair`) and `label` columns: the label values become the classes (sorted),
 * unless every value is a number and some are fractional (regression).
 */
function plainTask(file: string): TableTask {
  const rows = readTable(file);
  if (rows.length && !('text' in rows[0]!)) throw new ValueError(`${file}: missing column 'text' (columns: ${Object.keys(rows[0]!).join(', ')}); or pass --glue`);
  const values = [...new Set(rows.map((r) => (r.label ?? '').trim()))];
  const numeric = values.every((v) => v !== '' && Number.isFinite(Number(v)));
  const task: TableTask = { text: 'text', label: 'label', ...(rows[0] && 'text_pair' in rows[0] ? { textPair: 'text_pair' } : {}) };
  if (numeric && values.some((v) => !Number.isInteger(Number(v)))) return task;
  task.labels = numeric ? values.sort((a, b) => Number(a) - Number(b)) : values.sort();
  return task;
}

function metricsFor(task: TableTask | null) {
  if (!task) return undefined;
  if (!task.labels) return ({ logits, labels }: { logits: Float32Array[]; labels: (number | number[])[] }) => {
    const p = logits.map((l) => l[0]!), y = labels as number[];
    return { pearson: pearson(p, y), spearmanr: spearman(p, y) };
  };
  return ({ logits, labels }: { logits: Float32Array[]; labels: (number | number[])[] }) => {
    const p = logits.map((l) => l.indexOf(Math.max(...l))), y = labels as number[];
    return { accuracy: accuracy(p, y), matthews_correlation: matthewsCorrcoef(p, y) };
  };
}

async function train(f: Flags, print: (s: string) => void): Promise<void> {
  const optim = optimFlag(f.optim);
  const model = await AutoAdapterModel.fromPretrainedAsync(need(f, 'model'));
  const data = loadData(f, model, true);
  manualSeed(int(f, 'seed', 42));  // adapter and head initialisation are reproducible too
  const adapter = need(f, 'adapter');
  const full = adapter === 'full';
  // the class names go into the head (id2label), so that eval maps labels to the same ids
  if (data.task) model.addClassificationHead('task', { num_labels: data.task.labels?.length ?? 1,
    ...(data.task.labels ? { id2label: Object.fromEntries(data.task.labels.map((l, i) => [i, l])) } : {}) });
  if (!full) {
    model.addAdapter('task', adapter);
    model.trainAdapter('task');
  } else {
    model.train();
    for (const p of model.parameters()) p.requiresGrad = true;
  }
  const trainable = model.numParameters({ onlyTrainable: true }), total = model.numParameters();
  if (f['save-steps'] && !f.output) throw new UsageError('--save-steps needs --output');
  const trainer = new AdapterTrainer(model, { fullFineTuning: full, learningRate: num(f, 'lr', 1e-3), maxSteps: int(f, 'max-steps', 200), batchSize: int(f, 'batch-size', 8),
    seed: int(f, 'seed', 42), loggingSteps: 10, warmupSteps: nonNegative(f, 'warmup'), gradientAccumulationSteps: int(f, 'grad-accum', 1),
    evalSteps: f['eval-steps'] ? int(f, 'eval-steps', 1) : undefined, saveSteps: f['save-steps'] ? int(f, 'save-steps', 1) : undefined,
    outputDir: f['save-steps'] && f.output ? `${path.resolve(f.output)}.checkpoints` : undefined, bf16: !!f.bf16, gradientCheckpointing: !!f['gradient-checkpointing'],
    adapterDrop: !!f['adapter-drop'], logFile: f.log, optim, device: f.device }, { train: data.train!, eval: data.eval, computeMetrics: metricsFor(data.task) });
  trainer.on('log', (r) => { if (!f.json && 'loss' in r) print(`step ${r.step}: loss ${r.loss.toFixed(4)}, ${r.tokens_per_second.toFixed(0)} tokens/s`); });
  const before = trainer.evaluate();
  const t0 = performance.now();
  const res = await trainer.train({ resumeFrom: f.resume });
  const seconds = (performance.now() - t0) / 1000;
  const after = trainer.evaluate();
  const tokens = res.history.filter((h) => 'tokens_per_second' in h).at(-1)?.tokens_per_second ?? 0;
  if (f.output) {
    fs.mkdirSync(path.dirname(path.resolve(f.output)), { recursive: true });
    // full fine-tuning has no adapter to save: its weights are the model's own (not written here)
    if (!full) model.saveAdapter(f.output, 'task');
  }
  const out: Record<string, unknown> = {
    task: f.task, adapter, steps: res.globalStep, train_loss: res.trainLoss, eval_loss_before: before.eval_loss, eval_loss_after: after.eval_loss,
    trainable_params: trainable, trainable_percent: (100 * trainable) / total, tokens_per_second: tokens, train_seconds: seconds,
  };
  if (f.task === 'causal-lm') { out.perplexity_before = Math.exp(before.eval_loss!); out.perplexity_after = Math.exp(after.eval_loss!); }
  for (const [k, v] of Object.entries(after)) if (k !== 'eval_loss') out[`${k}_after`] = v;
  if (f.output && !full) out.output = path.resolve(f.output);
  if (!f.json) for (const [k, v] of Object.entries(out)) print(`${k}: ${typeof v === 'number' ? +v.toPrecision(6) : String(v)}`);
  else print(JSON.stringify(out));
}

async function evaluate(f: Flags, print: (s: string) => void): Promise<void> {
  const model = await AutoAdapterModel.fromPretrainedAsync(need(f, 'model'));
  if (f['adapter-dir']) await model.loadAdapterAsync(f['adapter-dir'], { setActive: true });
  const data = loadData(f, model, false, headLabels(model));
  const tr = new AdapterTrainer(model, { batchSize: int(f, 'batch-size', 8) }, { train: data.eval, eval: data.eval, computeMetrics: metricsFor(data.task) });
  const r = tr.evaluate();
  if (f.task === 'causal-lm' && r.eval_loss !== undefined) r.perplexity = Math.exp(r.eval_loss);
  print(f.json ? JSON.stringify(r) : Object.entries(r).map(([k, v]) => `${k}: ${v}`).join('\n'));
}

async function generate(f: Flags, print: (s: string) => void): Promise<void> {
  const model = (await AutoAdapterModel.fromPretrainedAsync(need(f, 'model'))).eval();
  if (f['adapter-dir']) await model.loadAdapterAsync(f['adapter-dir'], { setActive: true });
  const tok = AutoTokenizer.fromPretrained(model.sourceDir!);
  const ids = tok.encode(need(f, 'prompt'));
  const out = model.generate([ids], { maxNewTokens: int(f, 'max-new-tokens', 40) })[0]!;
  const text = tok.decode(out, { skipSpecialTokens: true });
  print(f.json ? JSON.stringify({ text, tokens: out }) : text);
}

async function summary(f: Flags, print: (s: string) => void): Promise<void> {
  const model = await AutoAdapterModel.fromPretrainedAsync(need(f, 'model'));
  if (f.adapter) model.addAdapter('adapter', f.adapter);
  print(f.json ? JSON.stringify({ model_type: model.modelType, parameters: model.numParameters(), adapters: model.adapterSummary() }) : model.adapterSummaryTable());
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[], io: { out?: (s: string) => void; err?: (s: string) => void } = {}): Promise<number> {
  const print = io.out ?? ((s: string) => process.stdout.write(s + '\n'));
  const perr = io.err ?? ((s: string) => process.stderr.write(s + '\n'));
  const [cmd, ...rest] = argv;
  try {
    if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { print(HELP); return 0; }
    let f: Flags;
    try {
      f = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false }).values as Flags;
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (f.help) { print(HELP); return 0; }
    const allowed = COMMAND_FLAGS[cmd];
    if (allowed) {
      const unused = Object.keys(f).filter((k) => !allowed.includes(k));
      if (unused.length) throw new UsageError(`${cmd} does not take ${unused.map((k) => `--${k}`).join(', ')}`);
    }
    if (cmd === 'train') await train(f, print);
    else if (cmd === 'eval') await evaluate(f, print);
    else if (cmd === 'generate') await generate(f, print);
    else if (cmd === 'summary') await summary(f, print);
    else throw new UsageError(`unknown command '${cmd}' (train, eval, generate, summary)`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) { perr(`adapters-node: ${e.message}\nRun 'adapters-node --help' for usage.`); return 2; }
    perr(`adapters-node: ${(e as Error).message}`);
    return 1;
  }
}
