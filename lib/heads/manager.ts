/**
 * Heads of a flex-head AdapterModel (the Python library's ModelWithFlexibleHeadsAdaptersMixin): adding,
 * activating (a head named like the active adapter becomes active with it; Parallel → one head per branch),
 * running the active head(s) on the base model's output, and head_config.json + model_head.safetensors I/O.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Module } from '../nn/module.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { noGrad } from '../autograd/tape.ts';
import { IOError, ShapeError, ValueError } from '../errors.ts';
import { saveSafetensors, writeAtomic } from '../io/safetensors.ts';
import { saveTorchBin } from '../io/torch_save.ts';
import { ADAPTER_MODEL_CLASS, pythonJson, readWeightFile } from '../adapters/model.ts';
import { BatchSplit, Parallel, Stack, type Setup } from '../adapters/composition.ts';
import { PredictionHead, type HeadConfig, type HeadOutput } from './heads.ts';
import { onDevice, type HFConfig } from '../models/common.ts';

/** What the head manager needs from its model. */
export interface HeadHost extends Module {
  readonly config: HFConfig;
  readonly lmHeadKind: 'tied' | 'untied' | null;
  readonly spec: { encoderDecoder?: boolean };
  readonly base: { hiddenSize?(): number; inputEmbeddings?(): Tensor };
}

/**
 * The active head(s): one name, one per Parallel branch, one per BatchSplit row group, or a plain list (`all`: each head
 * on the whole batch, as the Python library runs a list of active heads without Parallel adapters).
 */
export type HeadSetup = string | { parallel: string[] } | { batchSplit: string[]; batchSizes: number[] } | { all: string[] };

export interface HeadsResult extends HeadOutput {
  /** Several heads (Parallel / BatchSplit): one output per head, in order; `loss` is their sum. */
  headOutputs?: (HeadOutput & { head: string })[];
}

export class HeadManager {
  readonly heads: Module = new Module();
  active: HeadSetup | null = null;
  constructor(private readonly model: HeadHost) {}

  has(name: string): boolean {
    return !!this.heads.child(name);
  }
  get(name: string): PredictionHead {
    const h = this.heads.child(name) as PredictionHead | null;
    if (!h) throw new ValueError(`No prediction head '${name}' (heads: ${this.names().join(', ') || 'none'})`);
    return h;
  }
  names(): string[] {
    return [...this.heads.namedModules()].map(([k]) => k).filter((k) => k && !k.includes('.'));
  }

  add(name: string, config: HeadConfig, opts: { overwriteOk?: boolean; setActive?: boolean } = {}): void {
    if (this.has(name) && !opts.overwriteOk) throw new ValueError(`Model already contains a head with name '${name}'.`);
    this.checkType(config.head_type);
    this.register(name, this.build(name, config), opts.setActive ?? true);
  }

  /** The head types each Python AdapterModel class offers (its head_types); others are refused as there. */
  private checkType(type: string): void {
    const t = String(this.model.config.model_type);
    if (type === 'dependency_parsing') throw new ValueError(`${t}: the biaffine dependency-parsing head is not implemented`);
    const encoder = ['classification', 'multilabel_classification', 'tagging', 'multiple_choice', 'question_answering', 'masked_lm', 'causal_lm'];
    const decoder = ['classification', 'multilabel_classification', 'tagging', 'question_answering', 'causal_lm'];
    const seq2seq = ['classification', 'multilabel_classification', 'question_answering', 'seq2seq_lm'];
    const types = t === 'vit' ? ['image_classification'] : this.model.spec.encoderDecoder ? seq2seq : this.model.lmHeadKind !== null ? decoder : encoder;
    if (!types.includes(type))
      throw new ValueError(`${t}: the ${type} head is not available for this model (its head types: ${types.join(', ')})`);
  }

  /** Puts a built head in place (replacing one of the same name) and optionally activates it. */
  private register(name: string, head: PredictionHead, setActive: boolean): void {
    if (this.has(name)) this.delete(name);
    this.heads.registerModule(name, head);
    if (setActive) this.active = name;
  }

  /** A head for this model, not yet registered. */
  private build(name: string, config: HeadConfig): PredictionHead {
    const cfg = this.model.config;
    const hidden = this.model.base.hiddenSize!();
    const tiedLm = (config.head_type === 'causal_lm' || config.head_type === 'masked_lm' || config.head_type === 'seq2seq_lm') &&
      (cfg.tie_word_embeddings ?? true) !== false && this.model.base.inputEmbeddings;
    const head = new PredictionHead(name, config, hidden, {
      dropout: headDropout(cfg),
      initStd: num(cfg.initializer_range ?? cfg.init_std) ?? 0.02,
      // the Python LM heads read config.layer_norm_eps and fall back to 1e-12 (GPT-2/LLaMA configs have no such key)
      lnEps: num(cfg.layer_norm_eps) ?? 1e-12,
      tiedEmbedding: tiedLm ? this.model.base.inputEmbeddings!() : null,
    });
    head.train(this.model.training);  // recursive: the head's Dropout layers follow the model's mode
    return head;
  }

  delete(name: string): void {
    const h = this.heads.child(name) as PredictionHead | null;
    if (!h) return;
    // a tied output weight belongs to the embeddings: detach it before disposing the head
    if (h.tied) h.out.registerParameter('weight', null);
    h.dispose();
    this.heads.registerModule(name, null);
    if (this.active !== null && this.headNames(this.active).includes(name)) this.active = null;
  }

  headNames(s: HeadSetup): string[] {
    return typeof s === 'string' ? [s] : 'parallel' in s ? s.parallel : 'all' in s ? s.all : s.batchSplit;
  }

  /** A name, a list (each head on the whole batch, or one per branch of active Parallel adapters), or a Parallel / BatchSplit block. */
  setActive(s: HeadSetup | string[] | Setup | null): void {
    if (s === null) { this.active = null; return; }
    let setup: HeadSetup | null;
    if (Array.isArray(s)) setup = s.length === 1 ? s[0]! : { all: s };
    else if (s instanceof Parallel || s instanceof BatchSplit || s instanceof Stack) {
      setup = headsFromComposition(s);
      if (!setup) throw new ValueError(`activeHead: ${String(s)} does not name one head per branch`);
    } else setup = s as HeadSetup;
    for (const n of this.headNames(setup)) this.get(n);
    this.active = setup;
  }

  /** After setActiveAdapters: heads named like the setup's adapters become active, as in the Python library. */
  followAdapters(setup: Setup | null): void {
    if (setup === null) return;
    const hs = headsFromComposition(setup);
    if (hs && this.headNames(hs).every((n) => this.has(n))) this.active = hs;
  }

  /**
   * Runs the active head(s). `hidden` is the base output (B, T, H); `inputIds` picks each row's sentence token:
   * the first for encoders, the last non-pad token for decoders (as GPT2AdapterModel / LlamaAdapterModel do).
   */
  forward(a: { hidden: Tensor; pooled?: Tensor; inputIds?: Tensor | null; attentionMask?: Tensor | null; labels?: Tensor | null;
    startPositions?: Tensor | null; endPositions?: Tensor | null; invertible?: ((h: Tensor) => Tensor) | null;
    /** The sentence representation's source when it differs from `hidden` (T5: before the tied-head rescale). */
    clsHidden?: Tensor; /** Parallel channels of the active adapter setup (a list of heads then splits the batch). */ parallelChannels?: number;
    /** A head for this call only (the Python library's forward(head=...)). */ head?: string | null }): HeadsResult | null {
    let setup = a.head ? a.head : this.active;
    if (setup === null) return null;
    if (a.head) this.get(a.head);
    // a list of heads splits the batch only under Parallel adapters (has_parallel_adapters), else each runs on all rows
    if (typeof setup !== 'string' && 'all' in setup && (a.parallelChannels ?? 1) > 1) {
      if (setup.all.length !== a.parallelChannels) throw new ValueError('The number of parallel adapters and the number of active heads must match.');
      setup = { parallel: setup.all };
    }
    const cls = this.sentenceRepresentation(a.clsHidden ?? a.hidden, a.inputIds ?? null);
    const run = (name: string, rows: [number, number] | null): HeadOutput & { head: string } => {
      const sl = (t: Tensor | null | undefined) => (t && rows ? ops.slice(t, 0, rows[0], rows[1]) : t ?? null);
      // labels (and the mask) have the caller's batch; Parallel replicated the base output, so each branch sees them whole
      const lab = (t: Tensor | null | undefined) => (t && rows && t.shape[0] === a.hidden.shape[0] ? sl(t) : t ?? null);
      const o = this.get(name).forward({ hidden: sl(a.hidden)!, pooled: sl(a.pooled) ?? undefined, cls: sl(cls) ?? undefined, invertible: a.invertible,
        clsFixed: this.model.lmHeadKind !== null || !!this.model.spec.encoderDecoder,
        attentionMask: lab(a.attentionMask), labels: lab(a.labels), startPositions: lab(a.startPositions), endPositions: lab(a.endPositions) });
      return { ...o, head: name };
    };
    if (typeof setup === 'string') {
      const { head: _h, ...o } = run(setup, null);
      return o;
    }
    if ('all' in setup) {
      // every head on the whole batch; no combined loss (MultiHeadOutput without loss), logits stacked
      const outs = setup.all.map((n) => run(n, null));
      return { logits: ops.concat(outs.map((o) => o.logits), 0), headOutputs: outs };
    }
    const B = a.hidden.shape[0]!;
    let bounds: [number, number][];
    if ('parallel' in setup) {
      const n = setup.parallel.length;
      if (B % n) throw new ShapeError(`Parallel heads: batch ${B} is not divisible by ${n} branches`);
      bounds = setup.parallel.map((_, i) => [(i * B) / n, ((i + 1) * B) / n]);
    } else {
      let at = 0;
      bounds = setup.batchSizes.map((s) => [at, (at += s)]);
      if (at !== B) throw new ShapeError(`BatchSplit heads: batch sizes add up to ${at}, the batch has ${B} rows`);
    }
    const outs = this.headNames(setup).map((n, i) => run(n, bounds[i]!));
    // (MultiHeadOutput.logits: every head's logits stacked along the batch)
    const same = outs.every((o) => o.logits.shape.slice(1).join() === outs[0]!.logits.shape.slice(1).join());
    const res: HeadsResult = { logits: same ? ops.concat(outs.map((o) => o.logits), 0) : outs[0]!.logits, headOutputs: outs };
    if (outs.every((o) => o.loss)) res.loss = outs.map((o) => o.loss!).reduce((x, y) => ops.add(x, y));
    return res;
  }

  /**
   * The (B, H) sentence representation the classification-type heads read, as each Python AdapterModel passes cls_output:
   * encoders: the first position; decoder-only models (GPT2/LlamaAdapterModel): the last position without a pad id, else
   * position (number of non-pad input ids) − 1; encoder–decoders (Bart/T5AdapterModel): the decoder output at the last
   * <eos> of the encoder input ids (every row must have as many), or the whole sequence when the lengths differ.
   */
  private sentenceRepresentation(hidden: Tensor, inputIds: Tensor | null): Tensor {
    const cfg = this.model.config;
    const B = hidden.shape[0]!, T = hidden.shape[1]!;
    const rows = (idx: number[]) => ops.indexSelect(ops.reshape(hidden, [B * T, -1]), 0, onDevice(tensor(idx, [B], { dtype: 'i64' }), hidden.device));
    if (this.model.spec.encoderDecoder) {
      const eos = cfg.eos_token_id;
      if (!inputIds || inputIds.shape[1] !== T || typeof eos !== 'number') return hidden;
      const v = inputIds.toArray() as BigInt64Array | Int32Array | Float32Array, Bs = inputIds.shape[0]!;
      const idx: number[] = [];
      let count = -1;
      for (let b = 0; b < B; b++) {
        let last = -1, n = 0;
        for (let t = 0; t < T; t++) if (Number(v[(b % Bs) * T + t]) === eos) { n++; last = t; }
        if (count >= 0 && n !== count) throw new ValueError('All examples must have the same number of <eos> tokens.');
        count = n;
        if (n === 0) throw new ValueError('All examples must have the same number of <eos> tokens (the rows have none).');
        idx.push(b * T + last);
      }
      return rows(idx);
    }
    const decoderOnly = this.model.lmHeadKind !== null;
    if (!decoderOnly) return ops.squeeze(ops.slice(hidden, 1, 0, 1), 1);
    const pad = cfg.pad_token_id;
    if (typeof pad !== 'number' || !inputIds) return ops.squeeze(ops.slice(hidden, 1, T - 1, T), 1);
    const v = inputIds.toArray() as BigInt64Array | Int32Array | Float32Array;
    const Ts = inputIds.shape[1]!, Bs = inputIds.shape[0]!;
    const idx: number[] = [];
    for (let b = 0; b < B; b++) {
      let n = 0;
      for (let t = 0; t < Ts; t++) if (Number(v[(b % Bs) * Ts + t]) !== pad) n++;
      idx.push(b * T + ((n - 1 + T) % T));  // (−1, a row of pads only, is the last position, as Python's index −1)
    }
    return rows(idx);
  }

  // ---- I/O: head_config.json + model_head.safetensors (weights named heads.<name>.*) ----
  save(dir: string, name: string, opts: { format?: 'safetensors' | 'bin' | 'both' } = {}): void {
    const head = this.get(name);
    const mt = String(this.model.config.model_type);
    const meta = { config: head.config, hidden_size: this.model.base.hiddenSize!(), model_class: ADAPTER_MODEL_CLASS[mt] ?? 'AdapterModel',
      model_name: String(this.model.config._name_or_path ?? ''), model_type: mt, name, version: 'adapters.1.1.0' };
    fs.mkdirSync(dir, { recursive: true });
    const weights = new Map<string, Tensor>();
    // the tied output weight is saved too (the Python library writes it; loading it rewrites the same values)
    for (const [k, p] of head.stateDict(`heads.${name}`)) weights.set(k, p);
    // weights first, config last: head_config.json is what makes loadAdapter load a head, so a save cut short
    // never leaves a config pointing at missing or partial weights
    // (each writer is atomic: temporary file, then rename)
    // pytorch_model_head.bin is what the Python library's save_head / load_head use by default; model_head.safetensors
    // its use_safetensors=True
    const format = opts.format ?? 'both';
    if (format !== 'safetensors' && format !== 'bin' && format !== 'both') throw new ValueError(`saveHead: format must be 'safetensors', 'bin' or 'both', got '${String(format)}'`);
    if (format !== 'safetensors') saveTorchBin(path.join(dir, 'pytorch_model_head.bin'), weights);
    if (format !== 'bin') saveSafetensors(path.join(dir, 'model_head.safetensors'), weights);
    if (format !== 'both') fs.rmSync(path.join(dir, format === 'bin' ? 'model_head.safetensors' : 'pytorch_model_head.bin'), { force: true });
    writeAtomic(path.join(dir, 'head_config.json'), [Buffer.from(pythonJson(meta))]);
  }

  /** Loads a head folder; returns the head's name (loadAs, else the saved name). */
  load(dir: string, opts: { loadAs?: string; setActive?: boolean; overwriteOk?: boolean } = {}): string {
    const cfgFile = path.join(dir, 'head_config.json');
    if (!fs.existsSync(cfgFile)) throw new IOError(`${dir}: no head_config.json`);
    let meta: { config: HeadConfig; name?: string; hidden_size?: number };
    try {
      meta = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    } catch (e) {
      throw new IOError(`${cfgFile}: invalid JSON (${(e as Error).message})`);
    }
    if (meta && meta.config === null)
      throw new ValueError(`${cfgFile}: a static head of ${String((meta as { model_class?: string }).model_class)} (config null); converting static heads to flex heads is not supported`);
    if (!meta || typeof meta.config !== 'object' || typeof meta.config.head_type !== 'string') throw new ValueError(`${cfgFile}: missing config.head_type`);
    // the Python loader accepts heads of the same AdapterModel class (or its old *ModelWithHeads name) only
    const mine = ADAPTER_MODEL_CLASS[String(this.model.config.model_type)] ?? 'AdapterModel';
    const theirs = (meta as { model_class?: string }).model_class;
    if (typeof theirs === 'string' && theirs !== mine && theirs !== mine.replace(/AdapterModel$/, 'ModelWithHeads'))
      throw new ValueError(`${cfgFile}: a head of model class ${theirs} cannot be loaded into ${mine}`);
    this.checkType(meta.config.head_type);
    const hidden = this.model.base.hiddenSize!();
    if (meta.hidden_size !== undefined && meta.hidden_size !== hidden) throw new ShapeError(`${cfgFile}: head for hidden size ${meta.hidden_size}, model has ${hidden}`);
    const saved = meta.name ?? opts.loadAs ?? 'default';
    const name = opts.loadAs ?? saved;
    if (this.has(name) && opts.overwriteOk === false) throw new ValueError(`Model already contains a head with name '${name}'.`);
    const { weights, file } = readWeightFile(dir, 'model_head.safetensors', 'pytorch_model_head.bin');
    // built and filled aside; swapped in only when every weight fits, so a bad file changes nothing
    const head = this.build(name, meta.config);
    try {
      const own = head.stateDict(`heads.${name}`);
      const seen = new Set<string>();
      const tiedKey = head.tied ? `heads.${name}.${lastIndex(head)}.weight` : null;  // may be left out: it is the embedding
      for (const [k, v] of weights) {
        const m = /^(?:[a-z_]+\.)?heads\.([^.]+)\.(.+)$/.exec(k);
        if (!m || m[1] !== saved) continue;
        const key = `heads.${name}.${m[2]}`;
        const dst = own.get(key);
        if (!dst) throw new ValueError(`${file}: unexpected head weight '${k}'`);
        if (dst.shape.join() !== v.shape.join()) throw new ShapeError(`${file}: '${k}' has shape [${v.shape}], the head expects [${dst.shape}]`);
        seen.add(key);
      }
      const missing = [...own.keys()].filter((k) => !seen.has(k) && k !== tiedKey);
      if (missing.length) throw new ValueError(`${file}: missing head weights ${missing.join(', ')}`);
      noGrad(() => {
        for (const [k, v] of weights) {
          const m = /^(?:[a-z_]+\.)?heads\.([^.]+)\.(.+)$/.exec(k);
          if (m && m[1] === saved) own.get(`heads.${name}.${m[2]}`)!.copy_(v);
        }
      });
    } catch (e) {
      if (head.tied) head.out.registerParameter('weight', null);
      head.dispose();
      throw e;
    } finally {
      for (const t of weights.values()) t.dispose();
    }
    this.register(name, head, opts.setActive ?? true);
    return name;
  }
}

function lastIndex(h: PredictionHead): string {
  let i = 0;
  while (h.child(String(i + 1))) i++;
  return String(i);
}

/**
 * A head's default dropout, as the Python library's PredictionHead.build reads the model config: classifier_dropout when
 * set, else hidden_dropout_prob — under each model's key names (CONFIG_CLASS_KEYS_MAPPING) and with the config
 * classes' defaults for keys a config.json leaves out (BART and T5 have classifier_dropout 0.0, DistilBERT's
 * seq_classif_dropout is 0.2).
 */
function headDropout(cfg: HFConfig): number {
  const t = String(cfg.model_type);
  const pick = (key: string, dflt: number | null): number | null => (typeof cfg[key] === 'number' ? (cfg[key] as number) : cfg[key] === null ? null : dflt);
  const cls = t === 'distilbert' ? pick('seq_classif_dropout', 0.2)
    : ['bart', 't5', 'mt5'].includes(t) ? pick('classifier_dropout', 0)
    : pick('classifier_dropout', null);
  if (cls !== null) return cls;
  const hidden: Record<string, [string, number]> = { bart: ['dropout', 0.1], distilbert: ['dropout', 0.1], gpt2: ['resid_pdrop', 0.1],
    t5: ['dropout_rate', 0.1], mt5: ['dropout_rate', 0.1], vit: ['hidden_dropout_prob', 0] };
  const [k, d] = hidden[t] ?? ['hidden_dropout_prob', ['llama', 'mistral', 'qwen2'].includes(t) ? 0 : 0.1];
  return pick(k, d) ?? d;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/** parse_heads_from_composition: a name → that head; Stack → its last child's; Parallel → one per branch; BatchSplit → per row group. */
function headsFromComposition(s: Setup): HeadSetup | null {
  if (typeof s === 'string') return s;
  if (s instanceof Stack) return headsFromComposition(s.children[s.children.length - 1]!);
  if (s instanceof Parallel || s instanceof BatchSplit) {
    const names = s.children.map((c) => headsFromComposition(c));
    if (!names.every((n): n is string => typeof n === 'string')) return null;
    return s instanceof Parallel ? { parallel: names } : { batchSplit: names, batchSizes: s.batchSizes };
  }
  return null;
}
