/**
 * AdapterTrainer: the Hugging Face Trainer loop for adapter training (the Python library's AdapterTrainer):
 * seeded per-epoch shuffling, dynamic padding, gradient accumulation (loss / accumulation steps, as HF),
 * gradient-norm clipping, AdamW with HF's no-decay groups and a transformers LR schedule, evaluation every N steps
 * with metrics, early stopping and best-model tracking, and checkpoints that hold only what training changes
 * (trainable parameters, optimiser moments, scheduler step, RNG state, data position) and resume exactly.
 * Each checkpoint also contains the trained adapters and heads in the Python library's folder format.
 * The loop yields to the event loop between steps; progress goes to a tty-aware line and optional JSONL log.
 */
import fs from 'node:fs';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { noGrad } from '../autograd/tape.ts';
import { scope } from '../scope.ts';
import { IOError, ValueError } from '../errors.ts';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.ts';
import { getRngState, setRngState, manualSeed } from '../ops/creation.ts';
import { AdamW, Adafactor, SGD, LrScheduler, hfParamGroups, type ScheduleKind } from './optim.ts';
import { autocast } from '../autocast.ts';
import type { AdapterModel } from '../models/auto.ts';
import { replaceFolderAtomic } from '../adapters/model.ts';
import type { ForwardInput } from '../models/common.ts';
import { CompositionBlock, Fuse } from '../adapters/composition.ts';

/** One tokenised example: input ids plus either a class label / regression target or token labels. */
export interface Example {
  inputIds: number[];
  tokenTypeIds?: number[];
  labels?: number | number[];
}

export interface TrainingArguments {
  /**
   * Train the base model's own weights too (full fine-tuning, as transformers' Trainer). Otherwise, as the Python
   * library's AdapterTrainer, training refuses a model whose base weights are not frozen (call trainAdapter first).
   */
  fullFineTuning?: boolean;
  learningRate?: number;          // 5e-5 (HF default)
  /** Warm-up as a fraction of the total steps (ceil), used when warmupSteps is 0, as transformers' warmup_ratio. */
  warmupRatio?: number;
  maxSteps?: number;              // optimiser steps; overrides epochs
  epochs?: number;                // 1
  batchSize?: number;             // 8 examples per micro-batch
  gradientAccumulationSteps?: number;
  maxGradNorm?: number;           // 1.0; 0 = no clipping
  weightDecay?: number;           // 0
  warmupSteps?: number;
  lrSchedulerType?: ScheduleKind; // 'linear'
  evalSteps?: number;             // evaluate every N steps (and at the end when an eval set exists)
  saveSteps?: number;             // checkpoint every N steps into outputDir/checkpoint-<step>
  outputDir?: string;
  loggingSteps?: number;          // 10
  seed?: number;                  // 42
  shuffle?: boolean;              // true: seeded per-epoch shuffling; false: the dataset's order
  /** Length bucketing (HF group_by_length): shuffled megabatches of 50 batches, each sorted by length (less padding). */
  groupByLength?: boolean;
  earlyStoppingPatience?: number; // evaluations without improvement before stopping
  metricForBestModel?: string;    // 'eval_loss'
  greaterIsBetter?: boolean;      // false for losses
  logFile?: string;               // JSONL of every log record
  progress?: boolean;             // progress line on stderr (default: when it is a tty)
  /** Recompute each layer in the backward pass (model.setGradientCheckpointing). */
  gradientCheckpointing?: boolean;
  /**
   * AdapterDrop (Rücklé et al. 2021, https://arxiv.org/abs/2010.11918), robust variant: each micro-batch skips the
   * adapters of the lowest n layers, n drawn uniformly from 0 … layers−1 (seeded by step, so resumes are exact).
   */
  adapterDrop?: boolean;
  /** bf16 mixed precision: Linear GEMMs in bf16 (f32 accumulation), f32 master weights and activations (lib/autocast.ts). */
  bf16?: boolean;
  /**
   * The optimiser, by transformers' `optim` names: 'adamw_torch' (default; also 'adamw', 'adamw_hf'), 'adafactor'
   * (transformers' Adafactor as the HF Trainer builds it: the learning rate, no relative step, no parameter scaling)
   * or 'sgd' (torch.optim.SGD, no momentum).
   */
  optim?: 'adamw_torch' | 'adamw' | 'adamw_hf' | 'adafactor' | 'sgd';
  /** Train on this device ('cpu' default, 'cuda', 'cuda:N'): the model is moved there (module.to) before training. */
  device?: string;
  adamBeta1?: number;             // 0.9
  adamBeta2?: number;             // 0.999
  adamEpsilon?: number;           // 1e-8
}

export interface TrainerData {
  train: Example[];
  eval?: Example[];
  /** Metrics from the eval predictions: logits (N, …) flattened per example and the labels. */
  computeMetrics?: (p: { logits: Float32Array[]; labels: (number | number[])[] }) => Record<string, number>;
  /** Pads a batch; default: right-pad inputIds with the model's pad id, labels with −100. */
  collate?: (rows: Example[]) => ForwardInput;
}

export interface LogRecord { step: number; epoch: number; [k: string]: number }

/** transformers' TrainingArguments names → ours (both spellings are accepted). */
const HF_ARGS: Record<string, keyof TrainingArguments> = {
  learning_rate: 'learningRate', max_steps: 'maxSteps', num_train_epochs: 'epochs', per_device_train_batch_size: 'batchSize',
  gradient_accumulation_steps: 'gradientAccumulationSteps', max_grad_norm: 'maxGradNorm', weight_decay: 'weightDecay', warmup_steps: 'warmupSteps',
  lr_scheduler_type: 'lrSchedulerType', eval_steps: 'evalSteps', save_steps: 'saveSteps', output_dir: 'outputDir', logging_steps: 'loggingSteps',
  metric_for_best_model: 'metricForBestModel', greater_is_better: 'greaterIsBetter', bf16: 'bf16', gradient_checkpointing: 'gradientCheckpointing',
  group_by_length: 'groupByLength', adam_beta1: 'adamBeta1', adam_beta2: 'adamBeta2', adam_epsilon: 'adamEpsilon',
  warmup_ratio: 'warmupRatio', optim: 'optim', seed: 'seed',
};
const OUR_ARGS = new Set(['fullFineTuning', 'learningRate', 'warmupRatio', 'maxSteps', 'epochs', 'batchSize', 'gradientAccumulationSteps', 'maxGradNorm',
  'weightDecay', 'warmupSteps', 'lrSchedulerType', 'evalSteps', 'saveSteps', 'outputDir', 'loggingSteps', 'seed', 'shuffle', 'groupByLength',
  'earlyStoppingPatience', 'metricForBestModel', 'greaterIsBetter', 'logFile', 'progress', 'gradientCheckpointing', 'adapterDrop', 'bf16', 'optim',
  'device', 'adamBeta1', 'adamBeta2', 'adamEpsilon']);
// transformers' arguments that do not change what is trained or how (reporting, I/O, evaluation batch size): accepted
const HF_IGNORED = new Set(['report_to', 'logging_dir', 'overwrite_output_dir', 'do_train', 'do_eval', 'do_predict', 'run_name', 'disable_tqdm',
  'save_total_limit', 'push_to_hub', 'remove_unused_columns', 'dataloader_num_workers', 'per_device_eval_batch_size', 'evaluation_strategy',
  'eval_strategy', 'save_strategy', 'logging_strategy', 'logging_first_step', 'label_names']);
function hfArgs(a: TrainingArguments & Record<string, unknown>): TrainingArguments {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(a)) {
    if (v === undefined || HF_IGNORED.has(k)) continue;
    // an argument that would be silently ignored (a typo, or a transformers option not implemented here) is an error
    if (!(k in HF_ARGS) && !OUR_ARGS.has(k)) throw new ValueError(`AdapterTrainer: unknown training argument '${k}'`);
    const to = HF_ARGS[k] ?? k;
    if (!(to in out)) out[to] = v;
    // max_steps = -1 means "use the epochs" in transformers
    if (to === 'maxSteps' && (v as number) < 0) delete out[to];
  }
  return out as TrainingArguments;
}

export class AdapterTrainer extends EventEmitter {
  readonly args: Required<Omit<TrainingArguments, 'maxSteps' | 'evalSteps' | 'saveSteps' | 'outputDir' | 'earlyStoppingPatience' | 'logFile' | 'progress' | 'shuffle' | 'gradientCheckpointing' | 'adapterDrop' | 'bf16' | 'groupByLength' | 'optim' | 'adamBeta1' | 'adamBeta2' | 'adamEpsilon' | 'device'>> & TrainingArguments;
  readonly optimizer: AdamW | Adafactor | SGD;
  readonly scheduler: LrScheduler;
  readonly history: LogRecord[] = [];
  globalStep = 0;
  bestMetric: number | null = null;
  bestCheckpoint: string | null = null;
  lastCheckpoint: string | null = null;
  /** Evaluations since the best metric last improved (early stopping; checkpointed). */
  evalsWithoutImprovement = 0;
  private readonly params: [string, Tensor][];
  private readonly stepsPerEpoch: number;
  readonly totalSteps: number;

  /** args: our camelCase names or transformers' TrainingArguments names (learning_rate, per_device_train_batch_size, …). */
  constructor(readonly model: AdapterModel, args: TrainingArguments & Record<string, unknown>, readonly data: TrainerData) {
    super();
    this.args = { fullFineTuning: false, warmupRatio: 0, learningRate: 5e-5, epochs: 1, batchSize: 8, gradientAccumulationSteps: 1, maxGradNorm: 1, weightDecay: 0, warmupSteps: 0,
      lrSchedulerType: 'linear', loggingSteps: 10, seed: 42, metricForBestModel: 'eval_loss', greaterIsBetter: false, ...hfArgs(args) };
    const a = this.args;
    if (!data.train.length) throw new ValueError('AdapterTrainer: the training set is empty');
    if (data.eval && !data.eval.length) throw new ValueError('AdapterTrainer: the evaluation set is empty');
    for (const [k, v] of Object.entries({ batchSize: a.batchSize, gradientAccumulationSteps: a.gradientAccumulationSteps }))
      if (!Number.isInteger(v) || v < 1) throw new ValueError(`AdapterTrainer: ${k} must be a positive integer, got ${v}`);
    if (a.device) model.to(a.device);
    this.params = model.namedParameters().filter(([, p]) => p.requiresGrad);
    if (!this.params.length) throw new ValueError('AdapterTrainer: the model has no trainable parameters (call trainAdapter first)');
    this.stepsPerEpoch = Math.max(1, Math.floor(Math.ceil(data.train.length / a.batchSize) / a.gradientAccumulationSteps));
    this.totalSteps = a.maxSteps ?? Math.ceil(a.epochs * this.stepsPerEpoch);
    const groups = hfParamGroups(model, a.weightDecay), optim = a.optim ?? 'adamw_torch';
    if (optim === 'adafactor') this.optimizer = new Adafactor(groups, { lr: a.learningRate, relativeStep: false, scaleParameter: false, weightDecay: a.weightDecay });
    else if (optim === 'sgd') this.optimizer = new SGD(groups, { lr: a.learningRate, weightDecay: a.weightDecay });
    else if (optim === 'adamw_torch' || optim === 'adamw' || optim === 'adamw_hf')
      this.optimizer = new AdamW(groups, { lr: a.learningRate, weightDecay: a.weightDecay, betas: [a.adamBeta1 ?? 0.9, a.adamBeta2 ?? 0.999], eps: a.adamEpsilon ?? 1e-8 });
    else throw new ValueError(`AdapterTrainer: unknown optim '${String(optim)}' (adamw_torch, adafactor or sgd)`);
    // transformers: warmup_steps when > 0, else ceil(warmup_ratio · total steps)
    if (!(a.warmupRatio >= 0 && a.warmupRatio <= 1)) throw new ValueError(`AdapterTrainer: warmupRatio must be in [0, 1], got ${a.warmupRatio}`);
    const warmup = a.warmupSteps > 0 ? a.warmupSteps : Math.ceil(a.warmupRatio * this.totalSteps);
    this.scheduler = new LrScheduler(this.optimizer, a.lrSchedulerType, { warmup, total: this.totalSteps });
    if (a.gradientCheckpointing) model.setGradientCheckpointing(true);
  }

  /** Layers whose adapters AdapterDrop skips for micro-batch k of step `step`: [0, n). */
  adapterDropLayers(step: number, k: number): number[] {
    const c = this.model.config;
    const L = Number(c.num_hidden_layers ?? c.n_layer ?? c.num_layers ?? 0);
    let h = (Math.imul(this.args.seed ^ 0x51ed27, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b) ^ Math.imul(k + 1, 0xc2b2ae35)) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
    const n = L > 0 ? Math.floor(((h ^ (h >>> 16)) >>> 0) / 4294967296 * L) : 0;
    return Array.from({ length: n }, (_, i) => i);
  }

  /** Default collator: right padding with the pad id, attention mask, token labels padded with −100. */
  collate(rows: Example[]): ForwardInput {
    if (this.data.collate) return this.data.collate(rows);
    const pad = typeof this.model.config.pad_token_id === 'number' ? (this.model.config.pad_token_id as number) : 0;
    const T = Math.max(...rows.map((r) => r.inputIds.length));
    const padTo = (v: number[], fill: number) => [...v, ...new Array(T - v.length).fill(fill)];
    const input: ForwardInput = {
      inputIds: tensor(rows.map((r) => padTo(r.inputIds, pad)), undefined, { dtype: 'i64' }),
      attentionMask: tensor(rows.map((r) => padTo(r.inputIds.map(() => 1), 0)), undefined, { dtype: 'i64' }),
    };
    if (rows[0]!.tokenTypeIds) input.tokenTypeIds = tensor(rows.map((r) => padTo(r.tokenTypeIds ?? [], 0)), undefined, { dtype: 'i64' });
    if (rows[0]!.labels !== undefined) {
      const l0 = rows[0]!.labels;
      const tokenLevel = Array.isArray(l0) && rows.every((r) => Array.isArray(r.labels) && (r.labels as number[]).length === r.inputIds.length);
      if (tokenLevel) input.labels = tensor(rows.map((r) => padTo(r.labels as number[], -100)), undefined, { dtype: 'i64' });
      // per-example vectors (multilabel targets): floats
      else if (Array.isArray(l0)) input.labels = tensor(rows.map((r) => r.labels as number[]), undefined, { dtype: 'f32' });
      // class ids when every label of the batch is an integer; regression targets (STS-B) otherwise
      else input.labels = tensor(rows.map((r) => r.labels as number), [rows.length], { dtype: rows.every((r) => Number.isInteger(r.labels)) ? 'i64' : 'f32' });
    }
    return input;
  }

  /** The example order of an epoch: a seeded Fisher–Yates shuffle (same seed and epoch → same order). */
  epochOrder(epoch: number): number[] {
    const n = this.data.train.length;
    const order = Array.from({ length: n }, (_, i) => i);
    if (this.args.shuffle === false) return order;
    let s = (this.args.seed * 0x9e3779b1 + epoch * 0x85ebca6b) >>> 0;
    const rnd = () => {  // mulberry32
      s = (s + 0x6d2b79f5) >>> 0;
      let t = s;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    if (this.args.groupByLength) {
      // transformers' LengthGroupedSampler: megabatches of 50 batches, longest first inside each
      const mega = 50 * this.args.batchSize, len = (i: number) => this.data.train[i]!.inputIds.length;
      const out: number[] = [];
      for (let i = 0; i < n; i += mega) out.push(...order.slice(i, i + mega).sort((a, b) => len(b) - len(a)));
      return out;
    }
    return order;
  }

  /** Micro-batches of optimiser step `step` (0-based): deterministic, so a resumed run sees the same data. */
  private microBatches(step: number): Example[][] {
    const { batchSize: B, gradientAccumulationSteps: A } = this.args;
    const epoch = Math.floor(step / this.stepsPerEpoch), within = step % this.stepsPerEpoch;
    const order = this.epochOrder(epoch);
    const out: Example[][] = [];
    for (let k = 0; k < A; k++) {
      const start = (within * A + k) * B;
      const idx = order.slice(start, start + B);
      if (idx.length) out.push(idx.map((i) => this.data.train[i]!));
    }
    return out;
  }

  /** One optimiser step over its micro-batches; returns the mean loss. */
  private trainStep(step: number): { loss: number; gradNorm: number } {
    const batches = this.microBatches(step);
    let total = 0;
    const skip = this.model.adapters.ctx.skipLayers;
    try {
      for (const [k, rows] of batches.entries()) {
        if (this.args.adapterDrop) this.model.adapters.ctx.skipLayers = new Set(this.adapterDropLayers(step, k));
        autocast(() => scope(() => {
          const out = this.model.forward(this.collate(rows));
          if (!out.loss) throw new ValueError('AdapterTrainer: the model returned no loss (add a head, or labels for the LM head)');
          const loss = out.loss;
          const v = loss.item();
          total += v;
          if (!Number.isFinite(v)) return;
          ops.div(loss, batches.length).backward();
        }), { enabled: !!this.args.bf16 });
        if (!Number.isFinite(total)) break;
      }
    } catch (e) {
      this.optimizer.zeroGrad();  // a failed micro-batch must not leave earlier ones' gradients behind
      throw e;
    } finally {
      this.model.adapters.ctx.skipLayers = skip;
    }
    const loss = total / batches.length;
    if (!Number.isFinite(loss)) {
      this.optimizer.zeroGrad();
      throw new ValueError(`AdapterTrainer: the loss is ${loss} at step ${step + 1}; training stopped` +
        (this.lastCheckpoint ? ` (last good checkpoint: ${this.lastCheckpoint})` : ' (no checkpoint was written yet)'));
    }
    const gradNorm = this.clipGradients();
    if (!Number.isFinite(gradNorm)) {
      this.optimizer.zeroGrad();
      throw new ValueError(`AdapterTrainer: the gradient norm is ${gradNorm} at step ${step + 1} (loss ${loss}); training stopped` +
        (this.lastCheckpoint ? ` (last good checkpoint: ${this.lastCheckpoint})` : ' (no checkpoint was written yet)'));
    }
    this.optimizer.step();
    this.scheduler.step();
    this.optimizer.zeroGrad();
    // AdapterFusion training (a Fuse block active, as the Python library decides): as the Python AdapterTrainer's
    // on_step_end, the fusion regularisation of the updated weights is backpropagated after the step, so its gradient
    // joins the next step's (whole, not divided over micro-batches, and not part of the logged loss).
    if (this.trainingFusion()) {
      scope(() => {
        const reg = this.model.getFusionRegularizationLoss();
        if (reg) reg.backward();
      });
    }
    return { loss, gradNorm };
  }

  /** Whether a Fuse block is active (alone or as a child of the active composition), as the Python AdapterTrainer checks. */
  private trainingFusion(): boolean {
    const s = this.model.adapters.ctx.setup;
    return s instanceof Fuse || (s instanceof CompositionBlock && s.children.some((c) => c instanceof Fuse));
  }

  /** Global L2 norm of the gradients; scales them to maxGradNorm when larger (torch clip_grad_norm_). */
  private clipGradients(): number {
    const grads = this.params.map(([, p]) => p.grad).filter((g): g is Tensor => !!g);
    const norm = Math.sqrt(grads.reduce((a, g) => a + scope(() => ops.sum(ops.mul(g, g)).item()), 0));
    const max = this.args.maxGradNorm;
    if (max > 0 && norm > max) {
      const c = max / (norm + 1e-6);
      noGrad(() => { for (const g of grads) scope(() => { g.copy_(ops.mul(g, c)); }); });
    }
    return norm;
  }

  /** Mean loss (and metrics) over the evaluation set, in eval mode without gradients. */
  evaluate(examples: Example[] | undefined = this.data.eval): Record<string, number> {
    if (!examples?.length) throw new ValueError('evaluate: no evaluation examples');
    const wasTraining = this.model.training;
    this.model.eval();
    let sum = 0, n = 0;
    const logits: Float32Array[] = [], labels: (number | number[])[] = [];
    try {
      noGrad(() => {
        for (let i = 0; i < examples.length; i += this.args.batchSize) {
          const rows = examples.slice(i, i + this.args.batchSize);
          scope(() => {
            const out = autocast(() => this.model.forward(this.collate(rows)), { enabled: !!this.args.bf16 });
            if (out.loss) { sum += out.loss.item() * rows.length; n += rows.length; }
            if (this.data.computeMetrics && out.logits) {
              const L = out.logits, per = L.numel / rows.length, all = L.toArray() as Float32Array;
              rows.forEach((r, k) => { logits.push(all.slice(k * per, (k + 1) * per)); labels.push(r.labels!); });
            }
          });
        }
      });
    } finally {
      if (wasTraining) this.model.train();
    }
    const res: Record<string, number> = {};
    if (n) res.eval_loss = sum / n;
    // language modelling (the model's own LM head, or an LM flex head): perplexity = exp(mean token loss)
    const head = this.model.activeHead;
    const lmHead = typeof head === 'string' && ['causal_lm', 'masked_lm', 'seq2seq_lm'].includes(this.model.headManager.get(head).config.head_type);
    if (n && ((head === null && this.model.lmHeadKind) || lmHead)) res.eval_perplexity = Math.exp(res.eval_loss!);
    if (this.data.computeMetrics) for (const [k, v] of Object.entries(this.data.computeMetrics({ logits, labels }))) res[`eval_${k}`] = v;
    return res;
  }

  private log(rec: LogRecord): void {
    this.history.push(rec);
    if (this.args.logFile) fs.appendFileSync(this.args.logFile, JSON.stringify(rec) + '\n');
    this.emit('log', rec);
  }

  /**
   * Runs training to totalSteps (or until early stopping). With resumeFrom (a checkpoint folder), continues
   * exactly where that run was: same parameters, optimiser, schedule, RNG and data position.
   */
  async train(opts: { resumeFrom?: string } = {}): Promise<{ globalStep: number; trainLoss: number; history: LogRecord[]; stoppedEarly: boolean }> {
    const a = this.args;
    // (as the Python library's AdapterTrainer, when training begins: evaluating an unfrozen model is fine)
    if (!a.fullFineTuning && !this.model.adapters.baseFrozen())
      throw new ValueError('AdapterTrainer: the pre-trained model weights are not frozen; call trainAdapter() (or trainAdapterFusion()) first, or pass fullFineTuning: true');
    if (opts.resumeFrom) this.loadCheckpoint(opts.resumeFrom);
    else manualSeed(a.seed);
    // as the transformers Trainer (model.zero_grad() before its loop): no gradient left from before counts, and a resumed
    // run starts without the fusion regularisation's carried gradient, as the Python library's does
    this.optimizer.zeroGrad();
    this.model.train();
    const showProgress = a.progress ?? !!process.stderr.isTTY;
    const t0 = performance.now();
    let tokens = 0, lossSum = 0, lossN = 0, stoppedEarly = false, doneHere = 0;
    while (this.globalStep < this.totalSteps) {
      const step = this.globalStep;
      for (const mb of this.microBatches(step)) for (const r of mb) tokens += r.inputIds.length;
      const lr = this.optimizer.groups[0]!.lr;
      const { loss, gradNorm } = this.trainStep(step);
      this.globalStep++;
      lossSum += loss; lossN++;
      const epoch = this.globalStep / this.stepsPerEpoch;
      this.emit('step', { step: this.globalStep, loss, lr, gradNorm });
      if (this.globalStep % a.loggingSteps === 0 || this.globalStep === this.totalSteps)
        this.log({ step: this.globalStep, epoch, loss, learning_rate: lr, grad_norm: gradNorm, tokens_per_second: tokens / ((performance.now() - t0) / 1000) });
      if (showProgress) {
        const el = (performance.now() - t0) / 1000, eta = (el / ++doneHere) * (this.totalSteps - this.globalStep);
        process.stderr.write(`\r[${this.globalStep}/${this.totalSteps}] loss ${loss.toFixed(4)}  ${(tokens / el).toFixed(0)} tok/s  ETA ${eta.toFixed(0)}s   `);
      }
      const evalNow = this.data.eval && ((a.evalSteps && this.globalStep % a.evalSteps === 0) || this.globalStep === this.totalSteps);
      if (evalNow) {
        const ev = this.evaluate();
        this.log({ step: this.globalStep, epoch, ...ev });
        this.emit('evaluate', ev);
        const m = ev[a.metricForBestModel];
        if (m !== undefined) {
          const better = this.bestMetric === null || (a.greaterIsBetter ? m > this.bestMetric : m < this.bestMetric);
          if (better) { this.bestMetric = m; this.evalsWithoutImprovement = 0; } else this.evalsWithoutImprovement++;
          if (better && a.outputDir) this.bestCheckpoint = this.saveCheckpoint(path.join(a.outputDir, 'best'));
          if (a.earlyStoppingPatience !== undefined && this.evalsWithoutImprovement >= a.earlyStoppingPatience) stoppedEarly = true;
        }
      }
      if (a.saveSteps && a.outputDir && this.globalStep % a.saveSteps === 0) this.lastCheckpoint = this.saveCheckpoint(path.join(a.outputDir, `checkpoint-${this.globalStep}`));
      if (stoppedEarly) break;
      await new Promise<void>((r) => setImmediate(r));  // let the event loop run (I/O, finalizers)
    }
    if (showProgress) process.stderr.write('\n');
    return { globalStep: this.globalStep, trainLoss: lossN ? lossSum / lossN : NaN, history: this.history, stoppedEarly };
  }

  /**
   * Writes a checkpoint folder atomically: trainable.safetensors (trainable parameters by name),
   * optimizer.safetensors, trainer_state.json, and one Python-format folder per active adapter (with its head).
   */
  saveCheckpoint(dir: string): string {
    const target = path.resolve(dir);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    replaceFolderAtomic(target, (tmp) => {
      saveSafetensors(path.join(tmp, 'trainable.safetensors'), new Map(this.params));
      const opt = this.optimizer.stateTensors();
      if (opt.size) saveSafetensors(path.join(tmp, 'optimizer.safetensors'), opt);
      const state = { global_step: this.globalStep, optimizer_steps: this.optimizer.stepCount, scheduler_steps: this.scheduler.steps, rng: getRngState(),
        best_metric: this.bestMetric, best_checkpoint: this.bestCheckpoint, evals_without_improvement: this.evalsWithoutImprovement,
        log_history: this.history, trainable: this.params.map(([k]) => k), seed: this.args.seed, total_steps: this.totalSteps,
        batch_size: this.args.batchSize, gradient_accumulation_steps: this.args.gradientAccumulationSteps, train_examples: this.data.train.length,
        optimizer_param_steps: this.optimizer.paramSteps(), optim: this.optimizer.constructor.name };
      fs.writeFileSync(path.join(tmp, 'trainer_state.json'), JSON.stringify(state, null, 2));
      for (const name of this.model.activeAdapters) this.model.saveAdapter(path.join(tmp, name), name);
      // as the Python AdapterTrainer's checkpoints: the fusion layers when a fusion trains, and every head (those without
      // an adapter folder of the same name in their own folder)
      const s = this.model.adapters.ctx.setup;
      if (this.trainingFusion())
        for (const f of s instanceof Fuse ? [s] : (s as CompositionBlock).children.filter((c): c is Fuse => c instanceof Fuse))
          this.model.saveAdapterFusion(path.join(tmp, f.name), f.name);
      for (const h of this.model.heads) {
        if (this.model.activeAdapters.includes(h)) continue;
        // (a head named like a fusion shares its folder, as in the Python library's checkpoints: files are moved in)
        const dst = path.join(tmp, h), staged = path.join(tmp, `.head-${this.model.heads.indexOf(h)}`);
        this.model.saveHead(staged, h);
        if (!fs.existsSync(dst)) fs.renameSync(staged, dst);
        else {
          for (const f of fs.readdirSync(staged)) fs.renameSync(path.join(staged, f), path.join(dst, f));
          fs.rmdirSync(staged);
        }
      }
    });
    this.emit('save', target);
    return target;
  }

  /** Restores a checkpoint written by saveCheckpoint into this trainer (same model setup). */
  loadCheckpoint(dir: string): void {
    const stFile = path.join(dir, 'trainer_state.json');
    if (!fs.existsSync(stFile)) throw new IOError(`${dir}: not a checkpoint (no trainer_state.json)`);
    const state = JSON.parse(fs.readFileSync(stFile, 'utf8'));
    // the data position is a function of these: a resume with other values would silently train on other batches
    const same: [string, unknown, unknown][] = [['seed', state.seed, this.args.seed], ['total_steps', state.total_steps, this.totalSteps],
      ['batch_size', state.batch_size, this.args.batchSize], ['gradient_accumulation_steps', state.gradient_accumulation_steps, this.args.gradientAccumulationSteps],
      ['train_examples', state.train_examples, this.data.train.length], ['optim', state.optim, this.optimizer.constructor.name]];
    for (const [k, was, now] of same)
      if (was !== undefined && was !== now) throw new ValueError(`checkpoint ${dir} was written with ${k} = ${String(was)}, this trainer has ${String(now)}`);
    const saved = loadSafetensors(path.join(dir, 'trainable.safetensors'));
    const mine = new Map(this.params);
    for (const k of mine.keys()) if (!saved.has(k)) throw new ValueError(`checkpoint ${dir} has no '${k}' (different adapters or heads?)`);
    noGrad(() => {
      for (const [k, v] of saved) {
        const p = mine.get(k);
        if (!p) throw new ValueError(`checkpoint ${dir}: '${k}' is not a trainable parameter of this model`);
        p.copy_(v);
      }
    });
    for (const v of saved.values()) v.dispose();
    const optFile = path.join(dir, 'optimizer.safetensors');
    const opt = fs.existsSync(optFile) ? loadSafetensors(optFile) : new Map<string, Tensor>();
    this.optimizer.loadStateTensors(opt, state.optimizer_steps, state.optimizer_param_steps);
    for (const v of opt.values()) v.dispose();
    this.scheduler.setStep(state.scheduler_steps);
    setRngState(state.rng);
    this.globalStep = state.global_step;
    this.bestMetric = state.best_metric;
    this.bestCheckpoint = state.best_checkpoint ?? null;
    this.evalsWithoutImprovement = state.evals_without_improvement ?? 0;
    this.history.splice(0, this.history.length, ...state.log_history);
    this.lastCheckpoint = path.resolve(dir);
  }
}
