/**
 * AutoAdapterModel: the flex-head model of the Python Adapters library (`BertAdapterModel`, ...). Loads a
 * Hugging Face model directory (config.json + model.safetensors, sharded safetensors, or a plain
 * pytorch_model.bin through the restricted reader), or builds a randomly initialised model from a config
 * the way HF initialises it. Base parameters are named with the flex-head prefix (`bert.`...).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Module } from '../nn/module.ts';
import { Embedding, LayerNorm, Linear, RMSNorm } from '../nn/layers.ts';
import { Tensor, tensor, type DType } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { isGradEnabled, noGrad } from '../autograd/tape.ts';
import { scope, trackInScope } from '../scope.ts';
import { FormatError, IOError, ShapeError, ValueError } from '../errors.ts';
import { readSafetensorsHeader, readTensor, type SafetensorsHeader } from '../io/safetensors.ts';
import { loadTorchBin } from '../io/torch_bin.ts';
import { archFor, type ArchSpec, type BaseModel } from './registry.ts';
import type { ForwardInput, HFConfig, ModelOutput } from './common.ts';
import { generate as generateDecoder, type GenerateOptions } from './generate.ts';
import { generateSeq2seq } from './seq2seq_generate.ts';
import { shiftTokensRight } from './bart.ts';
import { AdapterManager, adapterConfigHash, formatSummary, type AdapterHostModel, type SummaryRow } from '../adapters/model.ts';
import type { AdapterConfig, ConfigDict } from '../adapters/config.ts';
import { BatchSplit, CompositionBlock, Parallel, type Fuse, type Setup } from '../adapters/composition.ts';
import type { FusionConfigDict } from '../adapters/methods/fusion.ts';
import { HeadManager, type HeadHost } from '../heads/manager.ts';
import { staticHeadFor } from '../heads/static_heads.ts';
import { loadPeftAdapter, readPeftConfig, savePeftAdapter } from '../io/peft.ts';
import { withVirtualTokens } from '../adapters/methods/peft_prompt.ts';
import { ADAPTER_FILES, MODEL_FILES, cachedSnapshot, isHubId, resolveModelSource, type HubOptions } from '../io/hub.ts';
import { snapshotDownloadSync } from '../io/hub_sync.ts';

/** A cached snapshot with a config and weights (an earlier download may have fetched only some files). */
function hasModelFiles(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'config.json')) && fs.readdirSync(dir).some((f) => /\.(safetensors|bin)$/.test(f));
}
import { lmLoss, type HeadConfig } from '../heads/heads.ts';

/**
 * Head options: the Python keyword names (num_labels, activation_function, …, which are also head_config.json's
 * keys) or their camelCase spellings (numLabels, activationFunction, …, overwrite_ok for overwriteOk) — both accepted.
 */
/** camelCase spellings of the head options (see headOpts). */
export interface HeadAliases {
  numLabels?: number; activationFunction?: string; usePooler?: boolean; dropoutProb?: number | null; numChoices?: number; layerNorm?: boolean;
}
function headOpts<T extends object>(o: T): T {
  const out = { ...o } as Record<string, unknown>;
  const alias: Record<string, string> = { numLabels: 'num_labels', activationFunction: 'activation_function', usePooler: 'use_pooler', dropoutProb: 'dropout_prob',
    numChoices: 'num_choices', layerNorm: 'layer_norm', overwrite_ok: 'overwriteOk', set_active: 'setActive' };
  for (const [from, to] of Object.entries(alias)) if (from in out) { if (!(to in out)) out[to] = out[from]; delete out[from]; }
  return out as T;
}

function hasParallel(s: Setup | null): boolean {
  return s instanceof Parallel || (s instanceof CompositionBlock && s.children.some((c) => hasParallel(c)));
}
/** (B, C, T) per-token inputs reshaped to (B·C, T), as the encoder AdapterModels' forward; null when none is 3-D. */
function flattenChoices(input: ForwardInput): ForwardInput | null {
  const keys = ['inputIds', 'attentionMask', 'tokenTypeIds', 'positionIds'] as const;
  const depth = (v: unknown): number => (v instanceof Tensor ? v.ndim : Array.isArray(v) ? 1 + depth(v[0]) : 0);
  if (!keys.some((k) => input[k] != null && depth(input[k]) === 3)) return null;
  const out: ForwardInput = { ...input };
  for (const k of keys) {
    const v = input[k];
    if (v == null || depth(v) !== 3) continue;
    const t = v instanceof Tensor ? v : tensor(v as number[][][], undefined, { dtype: 'i64' });
    (out as Record<string, unknown>)[k] = ops.reshape(t, [-1, t.shape[2]!]);
  }
  return out;
}

/** The Python library's parallel_channels of the active setup: a Parallel block's width (1 without one). */
function parallelChannels(s: Setup | null): number {
  if (s instanceof Parallel) return s.children.length;
  return s instanceof CompositionBlock ? Math.max(1, ...s.children.map((c) => parallelChannels(c))) : 1;
}
function hasBatchSplit(s: Setup | null): boolean {
  return s instanceof BatchSplit || (s instanceof CompositionBlock && s.children.some((c) => hasBatchSplit(c)));
}

function label2id(id2label: Record<number, string> | undefined, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) out[id2label?.[i] ?? `LABEL_${i}`] = i;
  return out;
}

export interface FromPretrainedOptions {
  dtype?: DType;
  device?: string;
}

export class AdapterModel extends Module {
  readonly base: BaseModel;
  /** 'tied' | 'untied' when the architecture has an LM output projection (see ArchSpec.lmHead). */
  readonly lmHeadKind: 'tied' | 'untied' | null;
  constructor(readonly config: HFConfig, readonly spec: ArchSpec) {
    super();
    this.base = this.registerModule(spec.prefix, spec.build(config));
    this.lmHeadKind = spec.lmHead ? spec.lmHead(config) : null;
    if (this.lmHeadKind === 'untied') {
      const E = this.base.inputEmbeddings!();
      this.registerModule('lm_head', new Linear(E.shape[1]!, E.shape[0]!, { bias: false }));
    }
    this.adapters = new AdapterManager(this as unknown as AdapterHostModel);
    this.headManager = new HeadManager(this as unknown as HeadHost);
    this.registerModule('heads', this.headManager.heads);
  }

  // ---- prediction heads (the Python library's flex heads) ----
  /** @internal */
  readonly headManager: HeadManager;
  /** Adds a head from a head_config-style dict (snake_case keys); it becomes the active head unless setActive is false. */
  addPredictionHead(name: string, config: HeadConfig, opts: { overwriteOk?: boolean; setActive?: boolean } = {}): void {
    this.headManager.add(name, config, opts);
  }
  addClassificationHead(name: string, o0: { num_labels?: number; layers?: number; activation_function?: string; overwriteOk?: boolean; multilabel?: boolean;
    id2label?: Record<number, string>; use_pooler?: boolean; bias?: boolean; dropout_prob?: number | null; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    const n = o.num_labels ?? 2;
    this.addPredictionHead(name, { head_type: o.multilabel ? 'multilabel_classification' : 'classification', num_labels: n, layers: o.layers ?? 2,
      activation_function: o.activation_function ?? 'tanh', label2id: label2id(o.id2label, n), use_pooler: o.use_pooler ?? false, bias: o.bias ?? true,
      dropout_prob: o.dropout_prob ?? null }, o);
  }
  addTaggingHead(name: string, o0: { num_labels?: number; layers?: number; activation_function?: string; overwriteOk?: boolean; id2label?: Record<number, string>;
    dropout_prob?: number | null; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    const n = o.num_labels ?? 2;
    this.addPredictionHead(name, { head_type: 'tagging', num_labels: n, layers: o.layers ?? 1, activation_function: o.activation_function ?? 'tanh',
      label2id: label2id(o.id2label, n), dropout_prob: o.dropout_prob ?? null }, o);
  }
  addMultipleChoiceHead(name: string, o0: { num_choices?: number; layers?: number; activation_function?: string; overwriteOk?: boolean; id2label?: Record<number, string>;
    use_pooler?: boolean; dropout_prob?: number | null; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    const n = o.num_choices ?? 2;
    this.addPredictionHead(name, { head_type: 'multiple_choice', num_choices: n, layers: o.layers ?? 2, activation_function: o.activation_function ?? 'tanh',
      label2id: label2id(o.id2label, n), use_pooler: o.use_pooler ?? false, dropout_prob: o.dropout_prob ?? null }, o);
  }
  addQAHead(name: string, o0: { num_labels?: number; layers?: number; activation_function?: string; overwriteOk?: boolean; id2label?: Record<number, string>;
    dropout_prob?: number | null; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    const n = o.num_labels ?? 2;
    this.addPredictionHead(name, { head_type: 'question_answering', num_labels: n, layers: o.layers ?? 1, activation_function: o.activation_function ?? 'tanh',
      label2id: label2id(o.id2label, n), dropout_prob: o.dropout_prob ?? null }, o);
  }
  private lmHeadConfig(type: 'causal_lm' | 'masked_lm', o: { layers?: number; activation_function?: string; layer_norm?: boolean; bias?: boolean }): HeadConfig {
    const H = this.base.hiddenSize!();
    // (dropout_prob only for causal LM heads: the Python library's masked LM head takes no such argument and would
    // fail to load a head_config.json that has it)
    // (embedding_size: the model config's when it has one, e.g. ELECTRA's 128-wide embeddings, as the Python LM heads)
    const E = typeof this.config.embedding_size === 'number' ? this.config.embedding_size : H;
    return { head_type: type, vocab_size: this.base.inputEmbeddings!().shape[0]!, embedding_size: E, layers: o.layers ?? 2,
      activation_function: o.activation_function ?? 'gelu', layer_norm: o.layer_norm ?? true, bias: o.bias ?? true, shift_labels: type === 'causal_lm',
      label2id: null, ...(type === 'causal_lm' ? { dropout_prob: null } : {}) };
  }
  addCausalLmHead(name: string, o0: { layers?: number; activation_function?: string; layer_norm?: boolean; bias?: boolean; overwriteOk?: boolean; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    this.addPredictionHead(name, this.lmHeadConfig('causal_lm', o), o);
  }
  addMaskedLmHead(name: string, o0: { layers?: number; activation_function?: string; layer_norm?: boolean; bias?: boolean; overwriteOk?: boolean; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    this.addPredictionHead(name, this.lmHeadConfig('masked_lm', o), o);
  }
  addSeq2seqLmHead(name: string, o0: { overwriteOk?: boolean; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    if (!this.spec.encoderDecoder) throw new ValueError(`${this.modelType}: a seq2seq LM head needs an encoder–decoder model`);
    this.addPredictionHead(name, { head_type: 'seq2seq_lm', vocab_size: this.base.inputEmbeddings!().shape[0]!, layers: 1, activation_function: null,
      layer_norm: false, bias: false, shift_labels: false, label2id: null }, o);
  }
  addImageClassificationHead(name: string, o0: { num_labels?: number; layers?: number; activation_function?: string; overwriteOk?: boolean; multilabel?: boolean;
    id2label?: Record<number, string>; use_pooler?: boolean; bias?: boolean; dropout_prob?: number | null; setActive?: boolean } & HeadAliases = {}): void {
    const o = headOpts(o0);
    const n = o.num_labels ?? 2;
    this.addPredictionHead(name, { head_type: 'image_classification', num_labels: n, layers: o.layers ?? 1, activation_function: o.activation_function ?? 'tanh',
      label2id: label2id(o.id2label, n), use_pooler: o.use_pooler ?? false, bias: o.bias ?? true, dropout_prob: o.dropout_prob ?? null, multilabel: o.multilabel ?? false }, o);
  }
  deleteHead(name: string): void {
    this.headManager.delete(name);
  }
  /** Names of the heads. */
  get heads(): string[] {
    return this.headManager.names();
  }
  /** The active head: a name, or one per branch for Parallel (string[]); null = base model output. */
  get activeHead(): string | string[] | null {
    const a = this.headManager.active;
    return a === null || typeof a === 'string' ? a : this.headManager.headNames(a);
  }
  set activeHead(h: string | string[] | null) {
    this.headManager.setActive(h);
  }
  /** Writes head_config.json + model_head.safetensors for head `name` into dir. */
  saveHead(dir: string, name: string, opts: { format?: 'safetensors' | 'bin' | 'both' } = {}): void {
    this.headManager.save(dir, name, opts);
  }
  /** Loads a head folder; returns its name. */
  loadHead(dir: string, opts: { loadAs?: string; setActive?: boolean } = {}): string {
    return this.headManager.load(dir, opts);
  }

  // ---- adapters (the Python library's ModelAdaptersMixin, camelCase) ----
  /** @internal */
  readonly adapters: AdapterManager;
  /** Adds adapter `name` with a config (instance, string id / config string, or dict). */
  /** Folder the model was loaded from (fromPretrained), used e.g. to find its tokenizer. */
  sourceDir: string | null = null;
  addAdapter(name: string, config?: AdapterConfig | string | ConfigDict | null,
    opts: { overwriteOk?: boolean; setActive?: boolean; tokenizer?: { encode(text: string, o?: { addSpecialTokens?: boolean }): number[] } } = {}): void {
    this.adapters.add(name, config, opts);
  }
  deleteAdapter(name: string): void {
    this.adapters.delete(name);
  }
  hasAdapter(name: string): boolean {
    return this.adapters.has(name);
  }
  /** Activates a setup: a name, several names (Stack), or null for the base model. */
  setActiveAdapters(setup: Setup | Setup[] | null, opts: { skipLayers?: number[] } = {}): void {
    this.adapters.setActive(setup, opts);
    this.headManager.followAdapters(this.adapters.ctx.setup);
  }
  get activeAdapters(): string[] {
    return [...this.adapters.ctx.active];
  }
  /** Freezes the base model and all other adapters, activates `setup` and switches to train mode. */
  trainAdapter(setup: Setup | Setup[], opts: { trainEmbeddings?: boolean } = {}): void {
    // (the active head stays: the Python library's train_adapter activates the setup on the base model only)
    this.adapters.train(setup, opts);
    this.freezeOutputEmbeddings();
  }
  /**
   * The output embedding layer (the last module) of every active LM head stays frozen while adapters or a fusion train,
   * as the Python library's freeze_embeddings after train_adapter / train_adapter_fusion.
   */
  private freezeOutputEmbeddings(): void {
    const a = this.headManager.active;
    if (a === null) return;
    for (const n of this.headManager.headNames(a)) {
      const head = this.headManager.get(n);
      if (!['causal_lm', 'masked_lm', 'seq2seq_lm'].includes(String(head.config.head_type))) continue;
      let last: Module | null = null;
      for (let i = 0; head.child(String(i)); i++) last = head.child(String(i));
      for (const [, p] of last?.namedParameters() ?? []) p.requiresGrad = false;
    }
  }
  freezeModel(freeze = true): void {
    this.adapters.freeze(freeze);
  }
  /** Rows like the Python library's adapter_summary(as_dict=True); `adapterSummaryTable()` prints them. */
  adapterSummary(): SummaryRow[] {
    return this.adapters.summary();
  }
  adapterSummaryTable(): string {
    return formatSummary(this.adapters.summary());
  }
  /** Merges LoRA / (IA)³ adapter `name` into the base weights (no extra compute at inference). */
  mergeAdapter(name: string): void {
    this.adapters.merge(name);
  }
  /**
   * Adds adapter `name` combining `adapters` (weights normalised to sum 1 by default; negative weights for
   * task arithmetic). combineStrategy for LoRA: 'linear' | 'lora_linear_only_negate_b' | 'lora_delta_w_svd'.
   */
  averageAdapter(name: string, adapters: string[], opts: { weights?: number[]; normalizeWeights?: boolean; overwriteOk?: boolean;
    setActive?: boolean; combineStrategy?: 'linear' | 'lora_linear_only_negate_b' | 'lora_delta_w_svd'; svdRank?: number } = {}): void {
    this.adapters.average(name, adapters, opts);
  }
  /** Saves adapter `name` (adapter_config.json + adapter.safetensors), atomically. */
  saveAdapter(dir: string, name: string, opts: { format?: 'safetensors' | 'bin' | 'both' | 'peft'; withHead?: boolean; stripPrefix?: boolean } = {}): void {
    if (opts.format === 'peft') return savePeftAdapter(this, dir, name, opts);
    this.adapters.save(dir, name, opts as { format?: 'safetensors' | 'bin' | 'both' });
    if ((opts.withHead ?? true) && this.headManager.has(name)) this.headManager.save(dir, name, opts as { format?: 'safetensors' | 'bin' | 'both' });
  }
  /**
   * Converts a saved adapter between the Adapters library's format and PEFT's (LoRA, (IA)³), through this model:
   * the folder is loaded, then saved in the other format; methods without an equivalent raise a ValueError.
   */
  convertAdapter(srcDir: string, dstDir: string, opts: { to: 'peft' | 'adapters'; format?: 'safetensors' | 'bin' | 'both'; name?: string }): void {
    const name = opts.name ?? path.basename(path.resolve(dstDir));
    if (this.hasAdapter(name)) throw new ValueError(`convertAdapter: this model already has an adapter named '${name}' (pass another name)`);
    this.loadAdapter(srcDir, { loadAs: name, withHead: false });
    try {
      if (opts.to === 'peft') savePeftAdapter(this, dstDir, name);
      else this.adapters.save(dstDir, name, { format: opts.format });
    } finally {
      this.deleteAdapter(name);
    }
  }
  /** loadAdapter for a local folder or a Hub repo id (downloaded into the huggingface_hub cache as needed). */
  async loadAdapterAsync(dirOrId: string, opts: Parameters<AdapterModel['loadAdapter']>[1] & HubOptions = {}): Promise<string> {
    return this.loadAdapter(await resolveModelSource(dirOrId, ADAPTER_FILES, opts), opts);
  }
  /** saveAdapter for every adapter, each into dir/<name>. */
  saveAllAdapters(dir: string, opts: { format?: 'safetensors' | 'bin' | 'both'; withHead?: boolean } = {}): void {
    fs.mkdirSync(dir, { recursive: true });
    // (each with meta config_id = the config's hash, as the Python library's save_all_adapters)
    for (const [name, cfg] of this.adapters.ctx.configs) {
      this.adapters.save(path.join(dir, name), name, { format: opts.format, meta: { config_id: adapterConfigHash(cfg.toDict()) } });
      if ((opts.withHead ?? true) && this.headManager.has(name)) this.headManager.save(path.join(dir, name), name, { format: opts.format });
    }
  }
  /** saveAdapterFusion for every fusion, each into dir/<a,b>. */
  saveAllAdapterFusions(dir: string, opts: { format?: 'safetensors' | 'bin' | 'both' } = {}): void {
    fs.mkdirSync(dir, { recursive: true });
    for (const name of this.adapters.fusionNames())
      this.adapters.saveFusion(path.join(dir, name), name, { ...opts, meta: { config_id: adapterConfigHash(this.adapters.fusionConfigOf(name) as unknown as Record<string, unknown>) } });
  }
  /** saveHead for every head, each into dir/<name>. */
  saveAllHeads(dir: string, opts: { format?: 'safetensors' | 'bin' | 'both' } = {}): void {
    fs.mkdirSync(dir, { recursive: true });
    for (const name of this.heads) this.saveHead(path.join(dir, name), name, opts);
  }
  /** Turns prefix-tuning adapter `name` into its flat form (the MLP reparametrisation is evaluated once). */
  ejectPrefixTuning(name: string): void {
    this.adapters.ejectPrefixTuning(name);
  }
  /** Moves/casts adapter `name`'s parameters (dtype; CPU only in this build). */
  adapterTo(name: string, opts: { dtype?: DType; device?: string } = {}): void {
    this.adapters.to(name, opts);
  }
  /** Adds AdapterFusion over adapters ('dynamic' | 'static' | a config dict); returns the fusion name ('a,b'). */
  addAdapterFusion(setup: Fuse | string[], config: 'dynamic' | 'static' | Partial<FusionConfigDict> = 'dynamic',
    opts: { overwriteOk?: boolean; setActive?: boolean; name?: string } = {}): string {
    return this.adapters.addFusion(setup, config, opts);
  }
  deleteAdapterFusion(name: string): void {
    this.adapters.deleteFusion(name);
  }
  /** Freezes all but the fusion layer (and the fused adapters with unfreezeAdapters), activates it, train mode. */
  trainAdapterFusion(setup: Fuse | string[], opts: { unfreezeAdapters?: boolean } = {}): void {
    this.adapters.trainFusion(setup, opts);
    this.freezeOutputEmbeddings();
  }
  loadAdapterFusion(dir: string, opts: { setActive?: boolean } = {}): string {
    return this.adapters.loadFusion(dir, opts);
  }
  saveAdapterFusion(dir: string, name: string, opts: { format?: 'safetensors' | 'bin' | 'both' } = {}): void {
    this.adapters.saveFusion(dir, name, opts);
  }
  /** AdapterFusion's regulariser (0.01·Σ‖I − V‖² over the fusion value matrices) to add to the loss; null without one. */
  getFusionRegularizationLoss(): Tensor | null {
    return this.adapters.fusionRegularizationLoss();
  }
  /**
   * Writes adapter_setup.json ({adapter_setup, head_setup, version}), one folder per adapter of `setup` (with the head
   * named like it, as save_adapter does), one per AdapterFusion of the setup, and one per head of `headSetup`.
   */
  saveAdapterSetup(dir: string, setup: Setup, opts: { headSetup?: string | string[] | null; format?: 'safetensors' | 'bin' | 'both' } = {}): void {
    const heads = opts.headSetup == null ? [] : Array.isArray(opts.headSetup) ? opts.headSetup : [opts.headSetup];
    for (const h of heads) this.headManager.get(h);
    const names = typeof setup === 'string' ? [setup] : Array.isArray(setup) ? setup.flatMap((s) => (typeof s === 'string' ? [s] : s.flatten())) : setup.flatten();
    this.adapters.saveSetup(dir, setup, {
      headSetup: opts.headSetup ?? null, format: opts.format,
      extra: (tmp) => {
        for (const n of new Set([...names.filter((n) => this.headManager.has(n)), ...heads])) this.headManager.save(path.join(tmp, n), n, { format: opts.format });
      },
    });
  }
  /**
   * Loads a folder written by saveAdapterSetup (or the Python library): the adapters with their heads, the setup's
   * fusions and the heads of head_setup; with setActive, activates the setup and head_setup. Returns the setup.
   */
  loadAdapterSetup(dir: string, opts: { setActive?: boolean } = {}): Setup {
    const setup = this.adapters.loadSetup(dir, { setActive: false });
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_setup.json'), 'utf8')) as { head_setup?: unknown };
    const names = typeof setup === 'string' ? [setup] : setup.flatten();
    const hs = meta.head_setup;
    const heads = typeof hs === 'string' ? [hs] : Array.isArray(hs) ? hs.filter((h): h is string => typeof h === 'string') : [];
    for (const n of new Set([...names, ...heads])) {
      if (n.includes('/') || n.includes('\\') || n.startsWith('.')) throw new FormatError(`${dir}: invalid head name ${JSON.stringify(n)}`);
      if (fs.existsSync(path.join(dir, n, 'head_config.json'))) this.headManager.load(path.join(dir, n), { loadAs: n, setActive: false });
    }
    if (opts.setActive) {
      this.setActiveAdapters(setup);
      if (heads.length) this.activeHead = heads.length === 1 ? heads[0]! : heads;
    }
    return setup;
  }
  /** Undoes every merge. */
  resetAdapter(): void {
    this.adapters.reset();
  }
  /** Loads an adapter folder (adapter_config.json + adapter.safetensors or pytorch_adapter.bin); returns its name. */
  loadAdapter(dir: string, opts: { loadAs?: string; setActive?: boolean; config?: AdapterConfig | string; withHead?: boolean; leaveOut?: number[] } & HubOptions = {}): string {
    if (!fs.existsSync(dir) && isHubId(dir)) {
      const hub = opts as HubOptions;
      const cached = cachedSnapshot(dir, hub);
      dir = cached && fs.existsSync(path.join(cached, 'adapter_config.json')) ? cached : snapshotDownloadSync(dir, { allow: ADAPTER_FILES, ...hub });
    }
    // a PEFT folder (adapter_config.json with peft_type): LoRA / IA3 become Adapters-library adapters (lib/io/peft.ts)
    if (readPeftConfig(dir)) {
      // (PEFT's own layers_to_transform / target_modules decide where it goes: these options would be ignored)
      if (opts.leaveOut?.length) throw new ValueError(`loadAdapter: leaveOut does not apply to a PEFT folder (${dir}); its target_modules and layers_to_transform decide`);
      if (opts.config !== undefined) throw new ValueError(`loadAdapter: config does not apply to a PEFT folder (${dir}); its adapter_config.json is PEFT's`);
      return loadPeftAdapter(this, dir, opts);
    }
    const name = this.adapters.load(dir, opts);
    // (the head is activated only with setActive, as the Python library's load_adapter passes set_active to its head loader)
    if ((opts.withHead ?? true) && fs.existsSync(path.join(dir, 'head_config.json'))) this.headManager.load(dir, { loadAs: name, setActive: opts.setActive ?? false });
    return name;
  }
  /**
   * Gradient checkpointing (HF's gradient_checkpointing_enable): each layer is recomputed in the backward pass
   * instead of keeping its activations. BERT family, GPT-2 and LLaMA family; not with Parallel setups.
   */
  setGradientCheckpointing(on = true): void {
    const b = this.base as unknown as { gradientCheckpointing?: boolean };
    if (b.gradientCheckpointing === undefined) throw new ValueError(`${this.modelType}: gradient checkpointing is not implemented for this architecture`);
    b.gradientCheckpointing = on;
  }
  get modelType(): string {
    return String(this.config.model_type);
  }
  /** Runs the base model; adds `logits` when the architecture has an LM head. */
  forward(input: ForwardInput): ModelOutput {
    if (input.adapterIds) return this.forwardMixed(input);
    // multiple-choice batches (B, choices, T): encoder AdapterModels flatten every per-token input to (B·choices, T)
    if (!this.spec.encoderDecoder && this.lmHeadKind === null && this.modelType !== 'vit') {
      const flat = flattenChoices(input);
      if (flat) return scope(() => this.forward(flat));
    }
    // T5AdapterModel derives missing decoder inputs: the labels shifted right for a seq2seq head, else the input ids
    if ((this.modelType === 't5' || this.modelType === 'mt5') && input.decoderInputIds == null && !input.pastKeyValues && input.inputIds != null) {
      const headName = input.head ?? (typeof this.headManager.active === 'string' ? this.headManager.active : null);
      const seq2seqHead = headName !== null && this.headManager.has(headName) && this.headManager.get(headName).config.head_type === 'seq2seq_lm';
      const src = input.labels != null && (seq2seqHead || (this.headManager.active === null && !input.head)) ? input.labels : input.inputIds;
      const ids = src instanceof Tensor ? src : tensor(src as number[][], undefined, { dtype: 'i64' });
      if (ids.ndim === 2) {
        const pad = typeof this.config.pad_token_id === 'number' ? this.config.pad_token_id : 0;
        const start = typeof this.config.decoder_start_token_id === 'number' ? this.config.decoder_start_token_id : pad;
        return scope(() => this.forward({ ...input, decoderInputIds: shiftTokensRight(ids, pad, start) }));
      }
    }
    if (hasBatchSplit(this.adapters.ctx.setup)) {
      const merged = this.adapters.mergedNames();
      if (merged.length) throw new ValueError(`BatchSplit: '${merged.join("', '")}' is merged into the weights, which every row would see; resetAdapter() first`);
    }
    if ((this.base as unknown as { gradientCheckpointing?: boolean }).gradientCheckpointing && isGradEnabled() && hasParallel(this.adapters.ctx.setup))
      throw new ValueError('gradient checkpointing cannot recompute a Parallel block (the batch is replicated once per forward); turn it off for Parallel training');
    // PEFT prompt tuning: virtual token ids before the input, resolved by the word embedding
    const prompt = this.base.wordEmbedding?.().virtual ? null : this.adapters.activePeftPrompt();
    if (prompt) {
      const emb = this.base.wordEmbedding!();
      emb.virtual = prompt;  // set while the extended input runs (also marks the recursion)
      try {
        return this.forward(withVirtualTokens(input, emb.num, prompt.shape[0]!));
      } finally {
        emb.virtual = null;
      }
    }
    // PEFT prefix tuning: the prefixes are past keys/values there, so the real tokens' positions start after them
    const shift = this.adapters.activePeftPrefixShift();
    if (shift && !input.positionIds) {
      if (input.pastKeyValues || input.useCache) throw new ValueError('PEFT prefix tuning: pastKeyValues / useCache (generation) are not supported');
      if (!['bert', 'gpt2', 'llama', 'mistral', 'qwen2'].includes(this.modelType) || (this.modelType === 'bert' && this.config.position_embedding_type && this.config.position_embedding_type !== 'absolute'))
        throw new ValueError(`PEFT prefix tuning's position shift is implemented for BERT, GPT-2 and the LLaMA family, not ${this.modelType}`);
      const ids = input.inputIds instanceof Tensor ? input.inputIds : tensor(input.inputIds as number[][], undefined, { dtype: 'i64' });
      const T = ids.shape[1]!;
      return scope(() => this.forward({ ...input, inputIds: ids, positionIds: ops.unsqueeze(ops.arange(shift, shift + T), 0) }));
    }
    const ctx = this.adapters.ctx;
    ctx.beginForward(!!input.outputAdapterFusionAttentions);
    let out: ModelOutput;
    let fa: ModelOutput['adapterFusionAttentions'] | null = null;
    try {
      out = this.base.forward(input);
    } finally {
      // collected fusion attentions belong to the caller's scope, like the returned tensors (also on an error)
      fa = ctx.fusionAttentions;
      ctx.fusionAttentions = null;
      ctx.endForward();
      if (fa) for (const byLayer of Object.values(fa)) for (const byLoc of Object.values(byLayer)) for (const t of Object.values(byLoc)) trackInScope(t);
    }
    if (fa) out.adapterFusionAttentions = fa;
    const asT = (v: unknown) => (v === undefined || v === null ? null : v instanceof Tensor ? v : tensor(v as number[], undefined, { dtype: 'i64' }));
    const labels = asT(input.labels);
    if (this.headManager.active !== null || input.head) {
      // T5AdapterModel with tied embeddings rescales the decoder output by d_model^-0.5 before every head (FORMATS §5.3);
      // the sentence representation is taken before that
      const s = this.modelType === 't5' || this.modelType === 'mt5' ? ((this.base as { lmScale?: number }).lmScale ?? 1) : 1;
      const res = this.headManager.forward({ hidden: s === 1 ? out.lastHiddenState : ops.mul(out.lastHiddenState, s), clsHidden: out.lastHiddenState,
        pooled: out.pooledOutput, invertible: this.invertibleReverse(), head: input.head ?? null, parallelChannels: parallelChannels(this.adapters.ctx.setup),
        // the encoder input ids: decoder-only models pick each row's last non-pad token, encoder–decoders the last <eos>
        inputIds: asT(input.inputIds), attentionMask: asT(input.attentionMask), labels,
        startPositions: asT(input.startPositions), endPositions: asT(input.endPositions) })!;
      out.logits = res.logits;
      if (res.loss) out.loss = res.loss;
      if (res.startLogits) { out.startLogits = res.startLogits; out.endLogits = res.endLogits; }
      if (res.headOutputs) out.headOutputs = res.headOutputs;
    } else if (this.lmHeadKind) {
      out.logits = this.lmLogits(out.lastHiddenState);
      // decoder-only LMs predict the next token (labels shifted); seq2seq labels are the decoder targets
      if (labels) out.loss = lmLoss(out.logits, labels, !this.spec.encoderDecoder);
    } else if (labels) throw new ValueError(`${this.modelType}: labels need a prediction head (addClassificationHead, addTaggingHead, ...)`);
    return out;
  }

  /**
   * Mixed-adapter batch: rows are grouped by adapter (stable order), the named groups run as one BatchSplit pass
   * and the base-model rows as a second pass, and the outputs are put back in the caller's row order.
   */
  private forwardMixed(input: ForwardInput): ModelOutput {
    const ids = input.adapterIds!;
    // a merged adapter is in the weights every row goes through: rows meant for another adapter (or none) would get it too
    const merged = this.adapters.mergedNames();
    if (merged.length) throw new ValueError(`adapterIds: '${merged.join("', '")}' is merged into the weights, which every row would see; resetAdapter() first`);
    for (const n of ids) if (n !== null && !this.adapters.has(n)) throw new ValueError(`adapterIds: no adapter named '${n}'`);
    // mixed batches are for inference (as PEFT's adapter_names): a loss over groups run separately, a cache or per-layer
    // outputs would need recombining that this does not do, so they are refused rather than dropped
    for (const k of ['labels', 'startPositions', 'endPositions', 'pastKeyValues'] as const)
      if (input[k] !== undefined && input[k] !== null) throw new ValueError(`adapterIds: ${k} is not supported with a mixed-adapter batch (inference only: compute the loss from the returned logits)`);
    for (const k of ['useCache', 'outputHiddenStates', 'outputAdapterFusionAttentions'] as const)
      if (input[k]) throw new ValueError(`adapterIds: ${k} is not supported with a mixed-adapter batch`);
    const rowTensors = (['inputIds', 'attentionMask', 'tokenTypeIds', 'positionIds', 'pixelValues', 'decoderInputIds', 'decoderAttentionMask'] as const)
      .filter((k) => input[k] !== undefined && input[k] !== null);
    const saved = this.adapters.ctx.setup, savedSkip = this.adapters.ctx.skipLayers;
    return scope(() => {
      const asT = (v: unknown, k: string): Tensor => (v instanceof Tensor ? v : tensor(v as number[][], undefined, { dtype: k === 'pixelValues' ? 'f32' : 'i64' }));
      const full = Object.fromEntries(rowTensors.map((k) => [k, asT(input[k], k)])) as Record<string, Tensor>;
      const B = full[rowTensors[0]!]!.shape[0]!;
      if (ids.length !== B) throw new ValueError(`adapterIds has ${ids.length} entries for a batch of ${B}`);
      const names = [...new Set(ids.filter((n): n is string => n !== null))];
      const order: number[] = [];
      for (const n of names) ids.forEach((x, i) => { if (x === n) order.push(i); });
      const named = order.length;
      ids.forEach((x, i) => { if (x === null) order.push(i); });
      const pick = (rows: number[]) => {
        const idx = tensor(rows, [rows.length], { dtype: 'i64' });
        const sub: ForwardInput = { ...input, adapterIds: undefined };
        for (const k of rowTensors) (sub as Record<string, unknown>)[k] = ops.indexSelect(full[k]!, 0, idx);
        return sub;
      };
      const outs: ModelOutput[] = [];
      try {
        if (named) {
          const sizes = names.map((n) => ids.filter((x) => x === n).length);
          this.adapters.setActive(names.length === 1 ? names[0]! : new BatchSplit(names, sizes));
          outs.push(this.forward(pick(order.slice(0, named))));
        }
        if (named < B) {
          this.adapters.setActive(null);
          outs.push(this.forward(pick(order.slice(named))));
        }
      } finally {
        this.adapters.ctx.setup = saved;
        this.adapters.ctx.skipLayers = savedSkip;
      }
      const inverse = new Array<number>(B);
      order.forEach((row, pos) => (inverse[row] = pos));
      const back = (key: 'lastHiddenState' | 'logits' | 'pooledOutput' | 'startLogits' | 'endLogits' | 'encoderLastHiddenState'): Tensor | undefined => {
        if (!outs[0]![key]) return undefined;
        const cat = outs.length === 1 ? outs[0]![key]! : ops.concat(outs.map((o) => o[key]!), 0);
        return ops.indexSelect(cat, 0, tensor(inverse, [B], { dtype: 'i64' }));
      };
      const out: ModelOutput = { lastHiddenState: back('lastHiddenState')! };
      for (const k of ['logits', 'pooledOutput', 'startLogits', 'endLogits', 'encoderLastHiddenState'] as const) {
        const v = back(k);
        if (v) out[k] = v;
      }
      return out;
    });
  }
  /**
   * Autoregressive generation with a KV cache (decoders) — greedy, or seeded sampling with temperature /
   * topK / topP. Returns prompt + new tokens per row (left-pad batched prompts). Encoder–decoder models
   * use generateSeq2seq (lib/models/seq2seq_generate.ts).
   */
  generate(inputIds: Tensor | number[][], opts: GenerateOptions): number[][] {
    // Parallel: one continuation per branch, branch-major like the Parallel forward's rows. Branches are
    // independent (each equals its setup alone), so they decode one after another with the same options.
    const ctx = this.adapters.ctx;
    const setup = ctx.setup;
    if (setup instanceof Parallel) {
      try {
        return setup.children.flatMap((branch) => {
          ctx.setup = branch;
          return this.generate(inputIds, opts);
        });
      } finally {
        ctx.setup = setup;
      }
    }
    if (hasParallel(setup))
      throw new ValueError(`generate with a nested Parallel block (${String(setup)}) is not supported; make Parallel the outer block`);
    // encoder–decoder models (T5, BART) generate decoder sequences from the encoded inputs
    if (this.spec.encoderDecoder) return generateSeq2seq(this as never, inputIds, opts as never);
    return generateDecoder(this, inputIds, opts);
  }
  /**
   * The logits generation picks the next token from: the active head's when one is active — it must then be a causal
   * LM head, as the Python library's generate goes through forward and so through the active head — else the model's
   * own LM head (lmLogits).
   */
  nextTokenLogits(h: Tensor): Tensor {
    const a = this.headManager.active;
    if (a === null) return this.lmLogits(h);
    if (typeof a !== 'string')
      throw new ValueError(`generate: the active heads ${JSON.stringify(this.headManager.headNames(a))} form a composition; activate one causal LM head, or none for the model's own LM head`);
    const head = this.headManager.get(a);
    if (head.config.head_type !== 'causal_lm')
      throw new ValueError(`generate: the active head '${a}' is a ${String(head.config.head_type)} head; activate a causal LM head, or none (activeHead = null) for the model's own LM head`);
    return head.forward({ hidden: h, invertible: this.invertibleReverse() }).logits;
  }
  /** The active invertible adapter in reverse (the first active adapter's, as the Python library), or null. */
  private invertibleReverse(): ((h: Tensor) => Tensor) | null {
    const inv = this.base.invertibleAdapters?.();
    const first = this.adapters.ctx.active[0];
    return inv && first && inv.child(first) ? (h: Tensor) => inv.apply(h, true) : null;
  }
  /** Whether generate has logits to sample from: an active causal LM head, or the model's own LM head. */
  get canGenerate(): boolean {
    return this.headManager.active !== null || !!this.lmHeadKind;
  }
  /** LM logits (…, V) of hidden states (…, C): tied input embeddings or the separate lm_head. */
  lmLogits(h: Tensor): Tensor {
    // T5 with tied embeddings rescales the decoder output by d_model^-0.5 before the head (HF and adapters)
    const s = (this.base as { lmScale?: number }).lmScale ?? 1;
    let x = s === 1 ? h : ops.mul(h, s);
    // the active invertible adapter is undone before the output embeddings (the Python library's hook on them)
    const inv = this.invertibleReverse();
    if (inv) x = inv(x);
    if (this.lmHeadKind === 'untied') return (this.child('lm_head') as Linear).forward(x);
    if (this.lmHeadKind === 'tied') return ops.linear(x, this.base.inputEmbeddings!());
    throw new ValueError(`${this.modelType}: this model has no LM head`);
  }
  /** Casts every floating parameter to dtype (in place of the old tensors). */
  toDtype(dtype: DType): this {
    noGrad(() => {
      for (const [, m] of this.namedModules())
        for (const name of ['weight', 'bias']) {
          const p = m.param(name);
          if (p && p.dtype !== dtype) {
            const c = p.to(dtype);
            m.registerParameter(name, c);
            p.dispose();
          }
        }
    });
    return this;
  }
}

function readConfig(dir: string): HFConfig {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new IOError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const c = JSON.parse(text);
    if (!c || typeof c !== 'object' || Array.isArray(c)) throw new Error('not an object');
    return c as HFConfig;
  } catch (e) {
    throw new FormatError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

/** One weight file: tensor names, shapes, and reads (safetensors lazily, .bin through the restricted reader). */
interface WeightSource {
  path: string;
  names(): string[];
  shape(name: string): number[];
  read(name: string): Tensor;
  close(): void;
}
function safetensorsSource(h: SafetensorsHeader): WeightSource {
  return { path: h.path, names: () => [...h.entries.keys()], shape: (n) => h.entries.get(n)!.shape, read: (n) => readTensor(h, n), close: () => {} };
}
function binSource(file: string): WeightSource {
  const m = loadTorchBin(file);
  return {
    path: file, names: () => [...m.keys()], shape: (n) => m.get(n)!.shape, read: (n) => m.get(n)!.clone(),
    close: () => { for (const t of m.values()) t.dispose(); },
  };
}

/** Weight files of a model folder: model.safetensors, the shards of model.safetensors.index.json, or pytorch_model.bin. */
function weightSources(dir: string): WeightSource[] {
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [safetensorsSource(readSafetensorsHeader(single))];
  const bin = path.join(dir, 'pytorch_model.bin');
  if (!fs.existsSync(path.join(dir, 'model.safetensors.index.json')) && fs.existsSync(bin)) return [binSource(bin)];
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) {
    let idx: { weight_map?: Record<string, string> };
    try {
      idx = JSON.parse(fs.readFileSync(index, 'utf8'));
    } catch (e) {
      throw new FormatError(`${index}: invalid JSON (${(e as Error).message})`);
    }
    if (!idx.weight_map || typeof idx.weight_map !== 'object') throw new FormatError(`${index}: missing weight_map`);
    const files = [...new Set(Object.values(idx.weight_map))];
    for (const f of files)
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f.startsWith('.'))
        throw new FormatError(`${index}: invalid shard file name ${JSON.stringify(f)}`);
    return files.map((f) => safetensorsSource(readSafetensorsHeader(path.join(dir, f))));
  }
  throw new IOError(`${dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin found`);
}

/** Initialises parameters as HF does: normal(0, initializer_range) weights, zero biases, unit norms. */
function initWeights(model: Module, cfg: HFConfig, seed: number): void {
  // HF zeroes the padding row only of embeddings built with padding_idx: the word embeddings (and
  // RoBERTa's position embeddings).
  const padRows = (name: string) =>
    /(^|\.)(word_embeddings|embed_tokens|wte|shared)$/.test(name) ||
    ((cfg.model_type === 'roberta' || cfg.model_type === 'xlm-roberta') && /position_embeddings$/.test(name));
  const std = typeof cfg.initializer_range === 'number' ? cfg.initializer_range : typeof cfg.init_std === 'number' ? cfg.init_std : 0.02;
  // (RoBERTa's config default is 1; GPT-2's wte and T5's shared embedding have no padding_idx in transformers)
  const pad = typeof cfg.pad_token_id === 'number' ? cfg.pad_token_id
    : cfg.model_type === 'roberta' || cfg.model_type === 'xlm-roberta' ? 1 : null;
  const noPadRow = ['gpt2', 't5', 'mt5'].includes(String(cfg.model_type));
  ops.manualSeed(seed);
  scope(() => noGrad(() => {
    for (const [name, m] of model.namedModules()) {
      if (m instanceof Linear || m instanceof Embedding) {
        const w = m.param('weight')!;
        const r = ops.randn(w.shape, { std });
        if (m instanceof Embedding && padRows(name) && !noPadRow && pad !== null && pad >= 0 && pad < w.shape[0]!) {
          const row = ops.slice(r, 0, pad, pad + 1);
          row.copy_(ops.zeros(row.shape));
        }
        w.copy_(r);
        r.dispose();
        m.param('bias')?.copy_(ops.zeros([1]));
      } else if (m instanceof LayerNorm || m instanceof RMSNorm) {
        m.param('weight')?.copy_(ops.ones([1]));
        m.param('bias')?.copy_(ops.zeros([1]));
      }
    }
  }));
}

export class AutoAdapterModel {
  /** Loads a model folder (config.json + weights). Keys are accepted with or without the base prefix. */
  /**
   * Loads a local model folder, or a Hub repo id already in the huggingface_hub cache (fromPretrainedAsync
   * downloads it first when it is not).
   */
  static fromPretrained(dirOrId: string, opts: FromPretrainedOptions & HubOptions = {}): AdapterModel {
    let dir = dirOrId;
    if (!fs.existsSync(dirOrId) && isHubId(dirOrId)) {
      // cached snapshot, else a download (in a child process, so this call stays synchronous)
      const cached = cachedSnapshot(dirOrId, opts);
      const offline = opts.offline ?? (process.env.HF_HUB_OFFLINE === '1' || process.env.HF_HUB_OFFLINE === 'true');
      dir = cached && (offline || hasModelFiles(cached)) ? cached : snapshotDownloadSync(dirOrId, { allow: MODEL_FILES, ...opts });
    }
    if (opts.device && opts.device !== 'cpu') throw new ValueError(`fromPretrained: device '${opts.device}' is not available (CPU build)`);
    const cfg = readConfig(dir);
    const spec = archFor(cfg.model_type);
    const model = new AdapterModel(cfg, spec);
    model.sourceDir = dir;
    // as transformers' from_pretrained: the name or path it was given (written as model_name in saved adapter configs)
    (cfg as Record<string, unknown>)._name_or_path = dirOrId;
    try {
      loadWeights(model, dir, spec);
      if (opts.dtype && opts.dtype !== 'f32') model.toDtype(opts.dtype);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model.eval();
  }

  /** A randomly initialised model for a config object (HF's init rules, seeded). */
  /** fromPretrained for a local folder or a Hub repo id, downloading into the huggingface_hub cache as needed. */
  static async fromPretrainedAsync(dirOrId: string, opts: FromPretrainedOptions & HubOptions = {}): Promise<AdapterModel> {
    const dir = await resolveModelSource(dirOrId, MODEL_FILES, opts);
    const m = AutoAdapterModel.fromPretrained(dir, opts);
    (m.config as Record<string, unknown>)._name_or_path = dirOrId;
    return m;
  }
  static fromConfig(config: HFConfig, opts: { seed?: number; dtype?: DType } = {}): AdapterModel {
    const spec = archFor(config.model_type);
    ops.manualSeed(opts.seed ?? 0);  // parameters drawn at construction (e.g. ViT's CLS token) are seeded too
    const model = new AdapterModel(config, spec);
    initWeights(model, config, opts.seed ?? 0);
    if (opts.dtype && opts.dtype !== 'f32') model.toDtype(opts.dtype);
    return model;
  }
}

function loadWeights(model: AdapterModel, dir: string, spec: ArchSpec): void {
  const sources = weightSources(dir);
  // a checkpoint of a task class (config.architectures): its head becomes the active flex head 'default', as the
  // Python library converts static heads; only when every weight of it is in the checkpoint
  const stat = staticHeadFor(model.config as Record<string, unknown>);
  const names = new Set(sources.flatMap((h) => h.names()));
  let headRename: Map<string, string> | null = null;
  if (stat) {
    const need = [...stat.rename.keys()].filter((k) => names.has(k) || !k.endsWith('.bias'));
    if (need.every((k) => names.has(k))) {
      model.headManager.add('default', stat.config, { overwriteOk: true, setActive: true });
      const head = new Set(model.headManager.get('default').stateDict('heads.default').keys());
      headRename = new Map([...stat.rename].filter(([, v]) => head.has(v)));
    }
  }
  const own = model.stateDict();
  const prefix = `${spec.prefix}.`;
  const loaded = new Set<string>();
  // the model's own parameter names with layer numbers blanked: an unused checkpoint tensor of that form belongs to
  // layers the config does not have (a checkpoint / config mismatch), not to another class's head
  const shapes = new Set([...own.keys()].map((k) => k.replace(/\.\d+\./g, '.#.')));
  const foreignLayers: string[] = [];
  try {
  noGrad(() => {
    for (const h of sources)
      for (const name of h.names()) {
        const key = headRename?.get(name) ?? (name.startsWith(prefix) || own.has(name) ? name : prefix + name);
        const dst = own.get(key);
        if (!dst) {  // head weights of other classes (cls.*, lm_head.*) are not part of the base model
          if (shapes.has(key.replace(/\.\d+\./g, '.#.'))) foreignLayers.push(name);
          continue;
        }
        if (loaded.has(key)) throw new FormatError(`${h.path}: tensor '${name}' is stored more than once in the checkpoint (as '${key}')`);
        const shape = h.shape(name);
        if (shape.join() !== dst.shape.join())
          throw new ShapeError(`${h.path}: tensor '${name}' has shape [${shape}] but the config gives [${dst.shape}] for '${key}'`);
        const t = h.read(name);
        dst.copy_(t);
        t.dispose();
        loaded.add(key);
      }
    for (const [missing, source] of spec.tied?.(model.config) ?? []) {
      const m = prefix + missing, s = prefix + source;
      if (!loaded.has(m) && loaded.has(s)) {
        own.get(m)!.copy_(own.get(s)!);
        loaded.add(m);
      }
    }
  });
  if (foreignLayers.length)
    throw new FormatError(`${sources.map((s) => s.path).join(', ')}: ${foreignLayers.length} tensor(s) belong to layers the config does not have ` +
      `(e.g. ${foreignLayers.slice(0, 3).join(', ')}); check num_hidden_layers and the other sizes in config.json`);
  if (model.lmHeadKind === 'untied' && !loaded.has('lm_head.weight')) {
    // a base-model checkpoint without its separate LM head (e.g. a saved LlamaModel): the head falls back to the input
    // embeddings, as the tests' float64 references do (transformers would initialise it at random, with a warning)
    noGrad(() => own.get('lm_head.weight')!.copy_(model.base.inputEmbeddings!()));
    loaded.add('lm_head.weight');
  }
  const missing = [...own.keys()].filter((k) => !loaded.has(k));
  if (missing.length)
    throw new FormatError(
      `${sources.map((s) => s.path).join(', ')}: checkpoint is missing ${missing.length} tensor(s): ` +
        `${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`,
    );
  } finally {
    for (const s of sources) s.close();
  }
}
void Tensor;
