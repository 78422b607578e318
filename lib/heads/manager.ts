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

/** The active head(s): one name, one per Parallel branch, or one per BatchSplit row group. */
export type HeadSetup = string | { parallel: string[] } | { batchSplit: string[]; batchSizes: number[] };

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
    this.register(name, this.build(name, config), opts.setActive ?? true);
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
      // the Python library's order: the model's classifier_dropout when set, else its hidden dropout
      dropout: num(cfg.classifier_dropout ?? cfg.hidden_dropout_prob ?? cfg.resid_pdrop ?? cfg.dropout ?? cfg.hidden_dropout),
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
    return typeof s === 'string' ? [s] : 'parallel' in s ? s.parallel : s.batchSplit;
  }

  setActive(s: HeadSetup | string[] | null): void {
    if (s === null) { this.active = null; return; }
    const setup: HeadSetup = Array.isArray(s) ? (s.length === 1 ? s[0]! : { parallel: s }) : s;
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
    startPositions?: Tensor | null; endPositions?: Tensor | null; invertible?: ((h: Tensor) => Tensor) | null }): HeadsResult | null {
    if (this.active === null) return null;
    const setup = this.active;
    const cls = this.sentenceRepresentation(a.hidden, a.inputIds ?? null, a.attentionMask ?? null);
    const run = (name: string, rows: [number, number] | null): HeadOutput & { head: string } => {
      const sl = (t: Tensor | null | undefined) => (t && rows ? ops.slice(t, 0, rows[0], rows[1]) : t ?? null);
      // labels (and the mask) have the caller's batch; Parallel replicated the base output, so each branch sees them whole
      const lab = (t: Tensor | null | undefined) => (t && rows && t.shape[0] === a.hidden.shape[0] ? sl(t) : t ?? null);
      const o = this.get(name).forward({ hidden: sl(a.hidden)!, pooled: sl(a.pooled) ?? undefined, cls: sl(cls) ?? undefined, invertible: a.invertible,
        attentionMask: lab(a.attentionMask), labels: lab(a.labels), startPositions: lab(a.startPositions), endPositions: lab(a.endPositions) });
      return { ...o, head: name };
    };
    if (typeof setup === 'string') {
      const { head: _h, ...o } = run(setup, null);
      return o;
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
    const res: HeadsResult = { logits: outs[0]!.logits, headOutputs: outs };
    if (outs.every((o) => o.loss)) res.loss = outs.map((o) => o.loss!).reduce((x, y) => ops.add(x, y));
    return res;
  }

  private sentenceRepresentation(hidden: Tensor, inputIds: Tensor | null, attentionMask: Tensor | null): Tensor {
    const decoderOnly = this.model.lmHeadKind !== null && !this.model.spec.encoderDecoder;
    const B = hidden.shape[0]!, T = hidden.shape[1]!;
    if (!decoderOnly) return ops.squeeze(ops.slice(hidden, 1, 0, 1), 1);
    // decoders: the last real token of each row — (number of non-pad tokens) − 1 as GPT2AdapterModel computes it,
    // counted from the attention mask when there is one (right padding), else from the pad id, else the last position
    const pad = this.model.config.pad_token_id;
    const src = attentionMask ?? (typeof pad === 'number' ? inputIds : null);
    if (!src) return ops.squeeze(ops.slice(hidden, 1, T - 1, T), 1);
    const v = src.toArray() as BigInt64Array | Int32Array | Float32Array;
    const Ts = src.shape[1]!, Bs = src.shape[0]!;
    const idx: number[] = [];
    for (let b = 0; b < B; b++) {
      // the rightmost real token (right or left padding); with only a pad id, HF's count − 1 (right padding)
      let last = -1, n = 0;
      for (let t = 0; t < Ts; t++) {
        const x = Number(v[(b % Bs) * Ts + t]);
        if (attentionMask ? x !== 0 : x !== pad) { n++; last = t; }
      }
      const at = attentionMask ? last : n - 1;
      idx.push(b * T + ((at + T) % T));
    }
    return ops.indexSelect(ops.reshape(hidden, [B * T, -1]), 0, onDevice(tensor(idx, [B], { dtype: 'i64' }), hidden.device));
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
    if (!meta || typeof meta.config !== 'object' || typeof meta.config.head_type !== 'string') throw new ValueError(`${cfgFile}: missing config.head_type`);
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
