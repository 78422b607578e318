/**
 * The model-level adapter API of the Python Adapters library (`ModelAdaptersMixin`), for any model that
 * declares hook sites (lib/adapters/context.ts): addAdapter, deleteAdapter, hasAdapter, setActiveAdapters,
 * trainAdapter, freezeModel, adapterSummary, mergeAdapter / resetAdapter, loadAdapter (adapters'
 * `adapter_config.json` + `adapter.safetensors` / `pytorch_adapter.bin`).
 * Methods implemented so far: bottleneck adapters (seq_bn, double_seq_bn, par_bn, scaled_par_bn and their
 * options, without PHM/invertible), LoRA and (IA)³, and unions of these. Others raise a clear error.
 */
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Module } from '../nn/module.ts';
import { Tensor, tensor } from '../tensor.ts';
import { noGrad } from '../autograd/tape.ts';
import { FormatError, IOError, ValueError } from '../errors.ts';
import { AdapterConfig, BnConfig, ConfigUnion, LoRAConfig, PeftPrefixTuningConfig, PeftPromptTuningConfig, PrefixTuningConfig, PromptTuningConfig, ReftConfig, type ConfigDict } from './config.ts';
import { PeftPromptPool } from './methods/peft_prompt.ts';
import { checkPrefixConfig } from './methods/prefix_tuning.ts';
import { BatchSplit, CompositionBlock, Fuse, Parallel, Stack, compositionFromDict, filterSetup, parseComposition, validateComposition, type Setup } from './composition.ts';
import { fusionConfig, type FusionConfigDict } from './methods/fusion.ts';
import { SharedParameters } from './methods/phm.ts';
import { AdapterContext, type AdaptableModel, type LayerSites } from './context.ts';
import { LoRAHost, mergeInto, unmerge } from './methods/lora.ts';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.ts';
import * as ops from '../ops/index.ts';
import type { DType } from '../tensor.ts';
import { PrefixTuning } from './methods/prefix_tuning.ts';
import { loadTorchBin } from '../io/torch_bin.ts';
import { saveTorchBin } from '../io/torch_save.ts';
import { AutoTokenizer } from '../tokenizers/auto.ts';

/** Substrings that mark a parameter as belonging to adapter `name` (the Python library's filter). */
export function adapterKeyPatterns(name: string): string[] {
  return [`_adapters.${name}.`, `.adapters.${name}.`, `.prefix_tunings.${name}.`, `.prefix_gates.${name}.`, `.loras.${name}.`,
    `.refts.${name}.`, `.prompt_tunings.${name}.`, `invertible_adapters.${name}.`, `.shared_parameters.${name}.`];
}
export function isAdapterKey(key: string, name: string): boolean {
  const k = `.${key}`;
  return adapterKeyPatterns(name).some((p) => k.includes(p));
}

export interface AdapterHostModel extends Module {
  readonly base: Module & Partial<AdaptableModel>;
  readonly config: Record<string, unknown>;
  readonly spec: { prefix: string };
}

export interface SummaryRow {
  name: string;
  architecture?: string;
  '#param': number;
  '%param': number;
  active?: boolean;
  train: boolean;
}

/** Per-model adapter manager; AdapterModel delegates its adapter methods here. */
export class AdapterManager {
  readonly ctx = new AdapterContext();
  private readonly hosts = new Map<import('../nn/layers.ts').Linear, LoRAHost>();
  constructor(readonly model: AdapterHostModel) {
    for (const l of this.layers()) {
      for (const s of [l.attnBottleneck, l.ffnBottleneck, l.crossBottleneck]) if (s) s.ctx = this.ctx;
      if (l.prefix) l.prefix.ctx = this.ctx;
      if (l.crossPrefix) l.crossPrefix.ctx = this.ctx;
      if (l.reft) l.reft.ctx = this.ctx;
    }
    const pp = model.base.promptPool?.();
    if (pp) pp.ctx = this.ctx;
    const inv = model.base.invertibleAdapters?.();
    if (inv) inv.ctx = this.ctx;
  }
  /** `shared_parameters` on the base model (Compacter's shared PHM rules), created on first use. */
  private shared(): SharedParameters {
    let s = this.model.base.child('shared_parameters') as SharedParameters | null;
    if (!s) s = this.model.base.registerModule('shared_parameters', new SharedParameters());
    return s;
  }

  /** The model-level pool of PEFT prompt-tuning adapters (created on first use). */
  peftPrompts(): PeftPromptPool {
    return (this.model.child('peft_prompt_tuning') as PeftPromptPool | null) ?? this.model.registerModule('peft_prompt_tuning', new PeftPromptPool());
  }
  /** The active PEFT prompt-tuning adapter's prompt rows (P, H), or null; more than one active is an error. */
  activePeftPrompt(): Tensor | null {
    const names = this.ctx.active.filter((n) => this.ctx.configs.get(n) instanceof PeftPromptTuningConfig);
    if (!names.length) return null;
    if (names.length > 1 || this.ctx.active.length > 1) throw new ValueError(`PEFT prompt tuning ('${names.join("', '")}') works alone, not in a composition`);
    return this.peftPrompts().get(names[0]!);
  }
  /** The prefix length of an active PEFT prefix-tuning adapter (its real tokens' positions start there), or 0. */
  activePeftPrefixShift(): number {
    let shift = 0;
    const peft: string[] = [];
    for (const n of this.ctx.active) {
      const c = this.ctx.configs.get(n);
      if (c instanceof PeftPrefixTuningConfig) {
        shift += c.get('prefix_length') as number;
        peft.push(n);
      }
    }
    // the shift moves the positions of every row: inside a BatchSplit or Parallel block, rows of the other branches
    // would move too
    const splits = (s: Setup | null): boolean => s instanceof BatchSplit || s instanceof Parallel || (s instanceof CompositionBlock && s.children.some(splits));
    if (peft.length && splits(this.ctx.setup))
      throw new ValueError(`PEFT prefix tuning ('${peft.join("', '")}') shifts the positions of the whole batch; it cannot share a BatchSplit or Parallel block with other adapters`);
    return shift;
  }
  /** The model's hook sites per layer (projections, bottleneck/prefix sites). */
  layerSites(): LayerSites[] {
    return this.layers();
  }
  private layers(): LayerSites[] {
    const b = this.model.base;
    return b.adapterLayers ? b.adapterLayers() : [];
  }
  private requireSites(what: string): void {
    if (!this.model.base.adapterLayers)
      throw new ValueError(`${String(this.model.config.model_type)}: ${what} is not supported for this architecture yet`);
  }

  has(name: string): boolean {
    return this.ctx.configs.has(name);
  }

  add(name: string, config: AdapterConfig | string | ConfigDict | null | undefined, opts: { overwriteOk?: boolean; setActive?: boolean; tokenizer?: { encode(text: string, o?: { addSpecialTokens?: boolean }): number[] } } = {}): void {
    if (typeof name !== 'string' || !name || /[.,|\s[\]]/.test(name))
      throw new ValueError(`addAdapter: invalid adapter name ${JSON.stringify(name)} (no dots, commas, '|', spaces or brackets)`);
    // no config (or an empty one): the Python library's DEFAULT_ADAPTER_CONFIG, seq_bn
    const none = config === undefined || config === null || config === '' ||
      (typeof config === 'object' && !(config instanceof AdapterConfig) && !Array.isArray(config) && !Object.keys(config).length);
    const cfg = none ? AdapterConfig.load('seq_bn') : AdapterConfig.load(config);
    // `dtype` (LoRA, ReFT) would create the adapter's weights in another dtype; not implemented: refuse rather than ignore
    for (const c of cfg instanceof ConfigUnion ? cfg.configs : [cfg])
      if (c.has('dtype') && c.get('dtype') !== null && c.get('dtype') !== 'float32')
        throw new ValueError(`${c.className}: dtype ${JSON.stringify(c.get('dtype'))} is not supported (adapter weights are created in float32)`);
    if (this.has(name)) {
      if (!opts.overwriteOk) throw new ValueError(`An adapter with the name '${name}' has already been added.`);
      this.delete(name);
    }
    this.requireSites('addAdapter');
    const parts = cfg instanceof ConfigUnion ? cfg.configs : [cfg];
    const hidden = this.model.base.hiddenSize!();
    try {
      for (const c of parts) this.addPart(name, c, hidden, opts.tokenizer);
    } catch (e) {
      this.removeModules(name);
      throw e;
    }
    this.ctx.configs.set(name, cfg);
    if (opts.setActive) this.setActive([name]);
  }

  private addPart(name: string, c: AdapterConfig, hidden: number, tokenizer?: { encode(text: string, o?: { addSpecialTokens?: boolean }): number[] }): void {
    const leave = new Set(c.leaveOut);
    if (c instanceof BnConfig) {
      if (c.get('cross_adapter') && !this.layers().some((l) => l.crossBottleneck))
        throw new ValueError(`cross_adapter needs an encoder–decoder model; ${String(this.model.config.model_type)} has no cross-attention`);
      if (c.get('phm_layer')) this.shared().add(name, c, hidden);
      const rule = () => this.shared().rule(name);
      const sharedW = (key: string) => this.shared().param2(name, key);
      for (const l of this.layers()) {
        if (leave.has(l.index)) continue;
        if (c.get('mh_adapter') && l.attnBottleneck) l.attnBottleneck.add(name, c, hidden, rule, sharedW);
        if (c.get('output_adapter') && l.ffnBottleneck) l.ffnBottleneck.add(name, c, hidden, rule, sharedW);
        if (c.get('cross_adapter') && l.crossBottleneck) l.crossBottleneck.add(name, c, hidden, rule, sharedW);
      }
      if (c.get('inv_adapter')) {
        const inv = this.model.base.invertibleAdapters?.();
        if (!inv) throw new ValueError(`invertible adapters are not supported for ${String(this.model.config.model_type)}`);
        inv.add(name, c, hidden);
      }
      return;
    }
    if (c instanceof LoRAConfig) {
      const mats = c.get<string[]>('attn_matrices');
      for (const l of this.layers()) {
        if (leave.has(l.index)) continue;
        const targets: [import('../nn/layers.ts').Linear | undefined, boolean][] = [];
        if (c.get('selfattn_lora')) {
          if (l.qkv) targets.push([l.qkv, mats.length > 0]);
          else for (const m of mats) targets.push([l[m as 'q' | 'k' | 'v'], true]);
          if (l.cross) for (const m of mats) targets.push([l.cross[m as 'q' | 'k' | 'v'], true]);
        }
        if (c.get('intermediate_lora')) targets.push([l.intermediate, true]);
        if (c.get('output_lora')) targets.push([l.output, true]);
        for (const [lin, on] of targets) {
          if (!lin || !on) continue;
          let host = this.hosts.get(lin);
          if (!host) {
            const fused = lin === l.qkv;
            host = new LoRAHost(lin, this.ctx, l.index, fused ? (n) => this.fusedParts(n) : () => null);
            this.hosts.set(lin, host);
          }
          if (lin === l.qkv) this.pendingFused.set(name, mats);
          host.add(name, c);
        }
      }
      return;
    }
    if (c instanceof PrefixTuningConfig) {
      checkPrefixConfig(c);
      const pool = this.model.base.prefixPool?.();
      const layers = this.layers();
      if (!pool || !layers.some((l) => l.prefix)) throw new ValueError(`prefix tuning is not supported for ${String(this.model.config.model_type)} yet`);
      for (const l of layers) { l.prefix?.attach(pool); l.crossPrefix?.attach(pool); }  // layer aliases name the parameters
      // the prefix of each location holds the included layers only, numbered in order (the Python library's pool sizes
      // and indicate_prefix): leave_out shrinks it
      const count = new Map<string, number>();
      const sites = layers.flatMap((l) => [l.prefix, l.crossPrefix].filter((x): x is NonNullable<typeof x> => !!x).map((site) => ({ site, layer: l.index })))
        .sort((a, b) => a.site.kvIndex - b.site.kvIndex);
      for (const { site, layer } of sites) {
        if (leave.has(layer)) continue;
        const loc = site.location ?? pool.location, k = count.get(loc) ?? 0;
        if (k !== site.kvIndex) site.kvIndexOf.set(name, k);
        count.set(loc, k + 1);
        site.enabled.add(name);
        if (c.get('use_gating')) site.addGate(name, hidden, c.get('shared_gating') as boolean);
      }
      const locations = this.model.base.prefixLocations?.(c)?.map((l) => ({ ...l, nLayers: count.get(l.key) ?? 0 })).filter((l) => l.nLayers > 0);
      pool.add(name, c, count.get(pool.location) ?? 0, this.model.base.numHeads!(), hidden, locations);
      return;
    }
    if (c instanceof ReftConfig) {
      const layers = this.layers();
      if (!layers.some((l) => l.reft)) throw new ValueError(`ReFT is not supported for ${String(this.model.config.model_type)} yet`);
      for (const l of layers) if (!leave.has(l.index)) l.reft?.add(name, c, hidden, c.subtractProjection);
      return;
    }
    if (c instanceof PeftPromptTuningConfig) {
      if (!this.model.base.wordEmbedding) throw new ValueError(`PEFT prompt tuning is not implemented for ${String(this.model.config.model_type)} (BERT family, GPT-2, LLaMA family)`);
      this.peftPrompts().add(name, c.get('num_virtual_tokens') as number, hidden);
      return;
    }
    if (c instanceof PromptTuningConfig) {
      const pool = this.model.base.promptPool?.();
      if (!pool)
        throw new ValueError(`prompt tuning is not supported for ${String(this.model.config.model_type)} (the Python library silently adds nothing there)`);
      let init: { embeddings: Tensor; ids: number[] } | undefined;
      if (c.get('prompt_init') === 'from_string') {
        const tok = tokenizer ?? this.defaultTokenizer();
        const E = (this.model.base as { inputEmbeddings?: () => Tensor }).inputEmbeddings?.();
        if (!tok || !E) throw new ValueError("prompt_init 'from_string' needs a tokenizer: pass {tokenizer} to addAdapter (none found next to the model)");
        init = { embeddings: E, ids: tok.encode(String(c.get('prompt_init_text')), { addSpecialTokens: false }) };
      }
      pool.add(name, c, hidden, init);
      return;
    }
    throw new ValueError(`${c.className} (architecture '${c.architecture}') is not implemented yet`);
  }
  private readonly pendingFused = new Map<string, string[]>();
  /** For GPT-2's fused c_attn: the thirds (0 = q, 1 = k, 2 = v) adapter `name`'s LoRA blocks cover, in block order. */
  fusedParts(name: string): number[] {
    const mats = this.pendingFused.get(name) ?? ['q', 'v'];
    return ['q', 'k', 'v'].map((m, i) => (mats.includes(m) ? i : -1)).filter((i) => i >= 0);
  }

  /** The tokenizer saved next to the model (fromPretrained folders), if any. */
  private defaultTokenizer(): { encode(text: string, o?: { addSpecialTokens?: boolean }): number[] } | null {
    const dir = (this.model as { sourceDir?: string }).sourceDir;
    if (!dir || !fs.existsSync(path.join(dir, 'tokenizer.json'))) return null;
    return AutoTokenizer.fromPretrained(dir);
  }

  private removeModules(name: string): void {
    for (const l of this.layers()) {
      l.attnBottleneck?.remove(name);
      l.ffnBottleneck?.remove(name);
      l.crossBottleneck?.remove(name);
      for (const site of [l.prefix, l.crossPrefix]) {
        site?.enabled.delete(name);
        site?.kvIndexOf.delete(name);
        site?.removeGate(name);
      }
      l.reft?.remove(name);
    }
    this.model.base.prefixPool?.().remove(name);
    this.model.base.invertibleAdapters?.().remove(name);
    (this.model.base.child('shared_parameters') as SharedParameters | null)?.remove(name);
    this.model.base.promptPool?.().remove(name);
    (this.model.child('peft_prompt_tuning') as PeftPromptPool | null)?.remove(name);
    for (const h of this.hosts.values()) {
      unmerge(h, name);
      h.remove(name);
    }
  }

  delete(name: string): void {
    if (!this.has(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
    this.removeModules(name);
    this.ctx.configs.delete(name);
    if (this.ctx.active.includes(name)) {
      try {
        this.ctx.setup = filterSetup(this.ctx.setup, (n) => n !== name);
      } catch {
        this.ctx.setup = null;  // a positional block (Split, BatchSplit) lost a child: deactivate
      }
    }
  }

  /**
   * Activates a setup: a name, a list (Stack), a composition block, or null for none; `skipLayers` drops the
   * adapters in those layers (AdapterDrop). Validated like the Python library (nesting, depth, names).
   */
  setActive(setup: Setup | Setup[] | null, opts: { skipLayers?: number[] } = {}): void {
    const parsed = parseComposition(setup);
    if (parsed !== null) {
      validateComposition(parsed);
      const names = typeof parsed === 'string' ? [parsed] : parsed.flatten();
      for (const n of names) if (!this.has(n)) throw new ValueError(`No adapter with name '${n}' found. Add it first with addAdapter.`);
      if (typeof parsed !== 'string') this.checkSupport(parsed);
    }
    this.ctx.setup = parsed;
    this.ctx.skipLayers = new Set(opts.skipLayers ?? []);
  }

  /** Per-method composition support (the Python library's supported_compositions), checked up front. */
  private checkSupport(block: CompositionBlock): void {
    const blocks: CompositionBlock[] = [];
    const walk = (b: CompositionBlock) => { blocks.push(b); for (const c of b.children) if (typeof c !== 'string') walk(c); };
    walk(block);
    const multi = blocks.filter((b) => b.children.length > 1 || !(b instanceof Stack));
    if (!multi.length) return;
    const names = block.flatten();
    for (const n of names) {
      const cfg = this.ctx.configs.get(n)!;
      const parts = cfg instanceof ConfigUnion ? cfg.configs : [cfg];
      for (const c of parts)
        for (const b of multi) {
          const par = this.model.base.supportsParallel?.() ? ['Parallel'] : [];
          const kinds: Record<string, string[]> = {
            bottleneck: ['Stack', 'Fuse', 'Split', 'BatchSplit', 'Average', ...par],
            lora: ['Stack', 'BatchSplit', 'Average', ...par],
            prefix_tuning: ['Stack', 'BatchSplit', ...par],
            prompt_tuning: ['Stack'], reft: ['Stack'],
          };
          const ok = kinds[c.architecture] ?? ['Stack'];
          if (!ok.includes(b.type)) {
            const label = c.architecture === 'lora' ? 'LoRA' : c.architecture;
            const soon = b.type === 'Parallel' && !par.length ? ` (Parallel is not supported for ${String(this.model.config.model_type)} yet)` : '';
            throw new ValueError(`Invalid adapter setup. Cannot use ${String(b)} with ${label}.${soon}`);
          }
          // GPT-2's fused c_attn LoRA (LoRAMergedLinear) supports no composition at all
          if (c.architecture === 'lora' && [...this.hosts.values()].some((h) => h.get(n)?.fusedParts))
            throw new ValueError(`Invalid adapter setup. Cannot use ${String(b)} with LoRA.`);
        }
    }
  }

  /** Parameters of adapter `name` (names as in namedParameters()). */
  params(name: string): [string, Tensor][] {
    return this.model.namedParameters().filter(([k]) => isAdapterKey(k, name));
  }
  /** Whether the base model's own weights are frozen (trainAdapter / trainAdapterFusion / freezeModel). */
  baseFrozen(): boolean {
    return this.baseParams().every(([, p]) => !p.requiresGrad);
  }
  private baseParams(): [string, Tensor][] {
    const names = [...this.ctx.configs.keys()];
    return this.model.namedParameters().filter(([k]) => !names.some((n) => isAdapterKey(k, n)) && !k.includes('.adapter_fusion_layer.') &&
      !k.startsWith('heads.') && !k.startsWith('lm_head.'));
  }

  freeze(freeze = true): void {
    for (const [, p] of this.baseParams()) p.requiresGrad = !freeze;
  }

  /** Freezes everything but the named adapters, activates them and switches to train mode. */
  train(setup: Setup | Setup[], opts: { trainEmbeddings?: boolean } = {}): void {
    this.setActive(setup);
    const names = this.ctx.active;
    // the base model and other adapters freeze; flex heads stay trainable (the Python library freezes base_model only)
    for (const [k, p] of this.model.namedParameters()) if (!k.startsWith('heads.')) p.requiresGrad = false;
    for (const n of names) for (const [, p] of this.params(n)) p.requiresGrad = true;
    if (opts.trainEmbeddings) {
      const E = (this.model.base as { inputEmbeddings?: () => Tensor }).inputEmbeddings?.();
      if (E) E.requiresGrad = true;
    }
    this.model.train();
  }

  summary(): SummaryRow[] {
    // as the Python library: the base model's parameters less the adapters' (its fusion layers stay in the count)
    const fusion = this.model.namedParameters().filter(([k]) => k.includes('.adapter_fusion_layer.')).reduce((a, [, p]) => a + p.numel, 0);
    const base = this.baseParams().reduce((a, [, p]) => a + p.numel, fusion);
    const rows: SummaryRow[] = [];
    for (const [name, cfg] of this.ctx.configs) {
      const ps = this.params(name);
      const n = ps.reduce((a, [, p]) => a + p.numel, 0);
      rows.push({ name, architecture: cfg.architecture, '#param': n, '%param': (100 * n) / base, active: this.ctx.active.includes(name),
        train: ps.every(([, p]) => p.requiresGrad) });  // (the Python library: all of them)
    }
    rows.push({ name: 'Full model', '#param': base, '%param': 100, train: this.baseParams().some(([, p]) => p.requiresGrad) });
    return rows;
  }

  /**
   * averageAdapter: a new adapter whose parameters combine existing ones (task arithmetic; negative weights
   * allowed). Weights are normalised to sum 1 unless normalizeWeights is false. LoRA strategies: 'linear'
   * (A and B averaged), 'lora_linear_only_negate_b' (A with |w|, B with w), 'lora_delta_w_svd' (Σ w·BA split
   * back into rank-svdRank factors by SVD). Everything else is averaged linearly.
   */
  average(name: string, adapters: string[], opts: { weights?: number[]; normalizeWeights?: boolean; overwriteOk?: boolean;
    setActive?: boolean; combineStrategy?: 'linear' | 'lora_linear_only_negate_b' | 'lora_delta_w_svd'; svdRank?: number } = {}): void {
    if (!adapters.length) throw new ValueError('averageAdapter: no adapters to average');
    for (const a of adapters) if (!this.has(a)) throw new ValueError(`No adapter with name '${a}' was found.`);
    const first = this.ctx.configs.get(adapters[0]!)!;
    for (const a of adapters.slice(1))
      if (JSON.stringify(this.ctx.configs.get(a)!.toDict()) !== JSON.stringify(first.toDict()))
        throw new ValueError(`averageAdapter: adapters must share one config; '${a}' differs from '${adapters[0]}'`);
    let w = opts.weights ?? adapters.map(() => 1 / adapters.length);
    if (w.length !== adapters.length) throw new ValueError(`averageAdapter: ${w.length} weights for ${adapters.length} adapters`);
    if (opts.normalizeWeights ?? true) {
      const sum = w.reduce((a, b) => a + b, 0);
      if (sum === 0) throw new ValueError('averageAdapter: weights sum to 0 and cannot be normalised');
      w = w.map((x) => x / sum);
    }
    const strategy = opts.combineStrategy ?? 'linear';
    if (!['linear', 'lora_linear_only_negate_b', 'lora_delta_w_svd'].includes(strategy))
      throw new ValueError(`The combine_strategy '${strategy}' is not supported.`);
    const isLora = first instanceof LoRAConfig || (first instanceof ConfigUnion && first.configs.some((c) => c instanceof LoRAConfig));
    if (strategy !== 'linear' && !isLora) throw new ValueError(`combine_strategy '${strategy}' applies to LoRA adapters only`);
    let cfg = first;
    if (strategy === 'lora_delta_w_svd') {
      if (!opts.svdRank) throw new ValueError("svd_rank must be set when using 'lora_delta_w_svd'.");
      if ([...this.hosts.values()].some((h) => h.get(adapters[0]!)?.fusedParts))
        throw new ValueError("This model specifically does not support 'lora_delta_w_svd' as a merging method (fused qkv LoRA).");
      cfg = first.replace({ r: opts.svdRank });
    }
    this.add(name, cfg, { overwriteOk: opts.overwriteOk });
    const all = new Map(this.model.namedParameters());
    noGrad(() => {
      for (const [k, p] of this.params(name)) {
        const isA = /\.lora_A$/.test(k), isB = /\.lora_B$/.test(k);
        if (strategy === 'lora_delta_w_svd' && (isA || isB)) continue;  // done per module below
        let acc: Tensor | null = null;
        adapters.forEach((src, i) => {
          const srcKey = renameAdapterKey(k, name, src);
          const t = all.get(srcKey);
          if (!t) throw new ValueError(`averageAdapter: '${src}' has no parameter ${srcKey}`);
          const wi = strategy === 'lora_linear_only_negate_b' && isA ? Math.abs(w[i]!) : w[i]!;
          const term = t.mul(wi);
          acc = acc ? acc.add(term) : term;
        });
        p.copy_(acc!);
      }
      if (strategy === 'lora_delta_w_svd')
        for (const h of this.hosts.values()) {
          const target = h.get(name);
          if (!target) continue;
          const mods = adapters.map((a) => h.get(a)!);
          const { A, B } = svdAverage(mods.map((m) => [m.param('lora_A')!, m.param('lora_B')!]), w, opts.svdRank!);
          target.param('lora_A')!.copy_(A);
          target.param('lora_B')!.copy_(B);
        }
    });
    if (opts.setActive) this.setActive([name]);
  }

  /**
   * Writes adapter `name` in the Python library's format: adapter_config.json (sorted keys, indent 2, float fields as
   * floats) and the weights with the flex-head model's parameter names (`bert.…`): pytorch_adapter.bin (what the
   * Python library's save_adapter / load_adapter use by default) and adapter.safetensors (its use_safetensors=True),
   * or one of them with `format`. Each file is written atomically; other files in the folder stay.
   */
  save(dir: string, name: string, opts: { format?: 'safetensors' | 'bin' | 'both'; /** extra top-level keys (meta_dict) */ meta?: Record<string, unknown> } = {}): void {
    if (!this.has(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
    const kindOf = this.ctx.configs.get(name);
    if (kindOf instanceof PeftPromptTuningConfig || kindOf instanceof PeftPrefixTuningConfig)
      throw new ValueError(`'${name}' is PEFT ${kindOf instanceof PeftPromptTuningConfig ? 'prompt' : 'prefix'} tuning, which the Adapters library's format cannot express: save it with {format: 'peft'}`);
    const format = opts.format ?? 'both';
    if (format !== 'safetensors' && format !== 'bin' && format !== 'both') throw new ValueError(`saveAdapter: format must be 'safetensors', 'bin' or 'both', got '${String(format)}'`);
    const cfg = this.ctx.configs.get(name)!;
    const mt = String(this.model.config.model_type);
    const meta = {
      config: cfg.toDict(),
      hidden_size: this.model.base.hiddenSize!(),
      model_class: ADAPTER_MODEL_CLASS[mt] ?? 'AdapterModel',
      model_name: String(this.model.config._name_or_path ?? ''),
      model_type: mt,
      name,
      version: 'adapters.1.1.0',
      ...(opts.meta ?? {}),
    };
    // .bin: every alias of a shared parameter, as torch.save(state_dict) writes it (prefix-tuning pools sit
    // under the model and under every attention layer); safetensors cannot hold shared tensors: once
    const weights = (aliases: boolean) => {
      const w = new Map<string, Tensor>();
      const params = aliases ? this.model.namedParameters('', { aliases: true }).filter(([k]) => isAdapterKey(k, name)) : this.params(name);
      for (const [k, p] of params) if (!k.includes('.shared_parameters.')) w.set(k, p);
      for (const [k, b] of this.model.namedBuffers()) if (isAdapterKey(k, name)) w.set(k, b);
      return w;
    };
    writeFolderAtomic(dir, (tmp) => {
      if (format !== 'safetensors') saveTorchBin(path.join(tmp, 'pytorch_adapter.bin'), weights(true));
      if (format !== 'bin') saveSafetensors(path.join(tmp, 'adapter.safetensors'), weights(false));
      fs.writeFileSync(path.join(tmp, 'adapter_config.json'), pythonJson(meta));
    }, format === 'both' ? [] : [format === 'bin' ? 'adapter.safetensors' : 'pytorch_adapter.bin']);
  }

  /** Converts a prefix-tuning adapter to its flat form (the reparametrisation MLP is evaluated once). */
  ejectPrefixTuning(name: string): void {
    const pool = this.model.base.prefixPool?.();
    const group = pool?.groups.child(name);
    if (!pool || !group || !group.namedChildren().some(([, m]) => m instanceof PrefixTuning))
      throw new ValueError(`ejectPrefixTuning: '${name}' is not a prefix-tuning adapter`);
    noGrad(() => {
      // every location of the adapter (encoder–decoder models: encoder_prefix, self_prefix, cross_prefix)
      for (const [loc, mod] of group.namedChildren()) {
        const pt = mod as PrefixTuning;
        const states = pt.states(false);          // (P, L·2·H)
        const flatCfg = pt.cfg.replace({ flat: true }) as PrefixTuningConfig;
        const flat = new PrefixTuning(flatCfg, pt.nLayers, pt.nHeads, pt.hidden);
        flat.param('control_trans')!.copy_(ops.reshape(states, [-1]));
        group.registerModule(loc, flat);
        pt.dispose();
      }
      const cfg = this.ctx.configs.get(name)!;
      this.ctx.configs.set(name, cfg instanceof ConfigUnion
        ? new ConfigUnion(...cfg.configs.map((c) => (c instanceof PrefixTuningConfig ? c.replace({ flat: true }) : c)))
        : cfg.replace({ flat: true }));
    });
  }

  /** Casts adapter `name`'s parameters to dtype (e.g. bf16 for serving). */
  to(name: string, opts: { dtype?: DType; device?: string } = {}): void {
    if (!this.has(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
    if (opts.device && opts.device !== 'cpu') throw new ValueError(`adapterTo: device '${opts.device}' is not available (CPU build)`);
    if (!opts.dtype) return;
    noGrad(() => {
      for (const [, m] of this.model.namedModules())
        for (const pname of ['weight', 'bias', 'lora_A', 'lora_B', 'scaling', 'control_trans', 'W_left', 'W_right', 'W', 'b', 'original', 'phm_rule']) {
          const p = m.param(pname);
          if (!p) continue;
          const full = this.params(name).find(([, t]) => t === p);
          if (!full || p.dtype === opts.dtype) continue;
          const c = p.to(opts.dtype!);
          c.requiresGrad = p.requiresGrad;
          m.registerParameter(pname, c);
          c.requiresGrad = p.requiresGrad;
          p.dispose();
        }
    });
  }

  // ---- AdapterFusion ----
  readonly fusions = new Map<string, { cfg: FusionConfigDict; names: string[] }>();

  /** Adds an AdapterFusion layer over `setup`'s adapters at every bottleneck site that holds all of them. */
  addFusion(setup: Fuse | string[], config: 'dynamic' | 'static' | Partial<FusionConfigDict> = 'dynamic',
    opts: { overwriteOk?: boolean; setActive?: boolean; name?: string } = {}): string {
    const fuse = setup instanceof Fuse ? setup : new Fuse(...setup, { name: opts.name });
    const names = fuse.flatten();
    for (const n of names) if (!this.has(n)) throw new ValueError(`No adapter with name '${n}' was found.`);
    const name = fuse.name;
    if (this.fusions.has(name)) {
      if (!opts.overwriteOk) throw new ValueError(`An AdapterFusion layer with the name '${name}' has already been added.`);
      this.deleteFusion(name);
    }
    const cfg = fusionConfig(config);
    const hidden = this.model.base.hiddenSize!();
    let added = 0;
    for (const l of this.layers())
      for (const site of [l.attnBottleneck, l.ffnBottleneck, l.crossBottleneck])
        if (site && names.every((n) => site.get(n))) { site.addFusion(name, cfg, hidden, this.attentionDropout()); added++; }
    if (!added) throw new ValueError(`AdapterFusion '${name}': no layer holds all of ${names.join(', ')} (Fuse works on bottleneck adapters)`);
    this.fusions.set(name, { cfg, names });
    if (opts.setActive) this.setActive(fuse);
    return name;
  }
  deleteFusion(name: string): void {
    if (!this.fusions.has(name)) throw new ValueError(`No AdapterFusion with name '${name}' was found.`);
    for (const l of this.layers()) for (const site of [l.attnBottleneck, l.ffnBottleneck, l.crossBottleneck]) site?.removeFusion(name);
    this.fusions.delete(name);
  }
  fusionParams(name: string): [string, Tensor][] {
    return this.model.namedParameters().filter(([k]) => k.includes(`.adapter_fusion_layer.${name}.`));
  }
  /** Trains the fusion layer of `setup` (and the fused adapters with unfreezeAdapters). */
  trainFusion(setup: Fuse | string[], opts: { unfreezeAdapters?: boolean } = {}): void {
    const fuse = setup instanceof Fuse ? setup : new Fuse(...setup);
    if (!this.fusions.has(fuse.name)) throw new ValueError(`No AdapterFusion with name '${fuse.name}' was found.`);
    this.setActive(fuse);
    // the base model and the adapters freeze; flex heads stay trainable (the Python library freezes base_model only)
    for (const [k, p] of this.model.namedParameters()) if (!k.startsWith('heads.')) p.requiresGrad = false;
    for (const [, p] of this.fusionParams(fuse.name)) p.requiresGrad = true;
    if (opts.unfreezeAdapters) for (const n of fuse.flatten()) for (const [, p] of this.params(n)) p.requiresGrad = true;
    this.model.train();
  }
  /** Loads `adapter_fusion_config.json` + `model_adapter_fusion.safetensors` / `pytorch_model_adapter_fusion.bin`. */
  loadFusion(dir: string, opts: { setActive?: boolean } = {}): string {
    const cfgFile = path.join(dir, 'adapter_fusion_config.json');
    let meta: { adapter_names?: string[]; config?: Partial<FusionConfigDict>; name?: string };
    try {
      meta = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ENOENT' ? new IOError(`${cfgFile} not found`) : new FormatError(`${cfgFile}: ${(e as Error).message}`);
    }
    if (!Array.isArray(meta.adapter_names) || !meta.config) throw new FormatError(`${cfgFile}: missing adapter_names or config`);
    // the weights are read first: a folder without them adds nothing (as the Python loader checks the file first)
    const { weights, file } = readWeightFile(dir, 'model_adapter_fusion.safetensors', 'pytorch_model_adapter_fusion.bin');
    let name: string;
    try {
      name = this.addFusion(new Fuse(...meta.adapter_names, { name: meta.name }), meta.config, { overwriteOk: true });
    } catch (e) {
      for (const t of weights.values()) t.dispose();
      throw e;
    }
    let done = false;
    try {
      const own = new Map(this.fusionParams(name));
      const prefix = `${this.model.spec.prefix}.`;
      const loaded = new Set<string>();
      noGrad(() => {
        for (const [k0, t] of weights) {
          const key = prefix + (k0.startsWith(prefix) ? k0.slice(prefix.length) : k0);
          const dst = own.get(key);
          if (!dst) continue;
          if (dst.shape.join() !== t.shape.join()) throw new FormatError(`${file}: '${k0}' has shape [${t.shape}] but the model expects [${dst.shape}]`);
          dst.copy_(t);
          loaded.add(key);
        }
      });
      const missing = [...own.keys()].filter((k) => !loaded.has(k));
      if (missing.length) throw new FormatError(`${file}: missing fusion weights: ${missing.slice(0, 6).join(', ')}`);
      done = true;
    } finally {
      for (const t of weights.values()) t.dispose();
      if (!done) this.deleteFusion(name);
    }
    if (opts.setActive) this.setActive(new Fuse(...this.fusions.get(name)!.names, { name }));
    return name;
  }
  /** 0.01·Σ‖I − V‖² over every fusion layer's value matrix (dynamic fusion's regulariser), or null. */
  fusionRegularizationLoss(): Tensor | null {
    let loss: Tensor | null = null;
    for (const [k, p] of this.model.namedParameters()) {
      if (!/\.adapter_fusion_layer\.[^.]+\.value\.weight$/.test(k)) continue;
      const n = p.shape[0]!;
      const eye = tensor(Float32Array.from({ length: n * n }, (_, i) => (Math.floor(i / n) === i % n ? 1 : 0)), [n, n]);
      const d = ops.sub(eye, p);
      const term = ops.mul(ops.sum(ops.mul(d, d)), 0.01);
      loss = loss ? ops.add(loss, term) : term;
    }
    return loss;
  }

  /**
   * saveAdapterSetup: `adapter_setup.json` ({adapter_setup, head_setup, version}) plus one folder per adapter,
   * as the Python library writes it.
   */
  saveSetup(dir: string, setup: Setup, opts: { headSetup?: string | string[] | null; format?: 'safetensors' | 'bin' | 'both';
    /** Writes more files into the folder being built (the model's heads). */ extra?: (tmp: string) => void } = {}): void {
    const parsed = parseComposition(setup)!;
    const block = typeof parsed === 'string' ? new Stack(parsed) : parsed;
    writeFolderAtomic(dir, (tmp) => {
      fs.writeFileSync(path.join(tmp, 'adapter_setup.json'),
        JSON.stringify({ adapter_setup: block.toDict(), head_setup: opts.headSetup ?? null, version: 'adapters.1.1.0' }, null, 2));
      for (const n of block.flatten()) this.save(path.join(tmp, n), n, { format: opts.format });
      // the setup's AdapterFusion layers, one folder each (named like the fusion)
      for (const f of fuseBlocks(block)) if (this.fusions.has(f.name)) this.saveFusion(path.join(tmp, f.name), f.name, { format: opts.format });
      opts.extra?.(tmp);
    });
  }
  /** loadAdapterSetup: loads every adapter folder named in adapter_setup.json and (optionally) activates the setup. */
  loadSetup(dir: string, opts: { setActive?: boolean } = {}): Setup {
    const file = path.join(dir, 'adapter_setup.json');
    let meta: { adapter_setup?: Record<string, unknown> };
    try {
      meta = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ENOENT' ? new IOError(`${file} not found`) : new FormatError(`${file}: ${(e as Error).message}`);
    }
    if (!meta.adapter_setup) throw new FormatError(`${file}: missing adapter_setup`);
    const setup = compositionFromDict(meta.adapter_setup);
    const names = typeof setup === 'string' ? [setup] : setup.flatten();
    const safe = (n: string) => {
      if (n.includes('/') || n.includes('\\') || n.startsWith('.')) throw new FormatError(`${file}: invalid adapter name ${JSON.stringify(n)}`);
      return n;
    };
    for (const n of names) this.load(path.join(dir, safe(n)), { loadAs: n });
    if (typeof setup !== 'string')
      for (const f of fuseBlocks(setup)) if (fs.existsSync(path.join(dir, safe(f.name), 'adapter_fusion_config.json'))) this.loadFusion(path.join(dir, f.name));
    if (opts.setActive) this.setActive(setup);
    return setup;
  }

  /** Writes adapter_fusion_config.json + model_adapter_fusion.safetensors (atomically). */
  /** The model config's attention dropout (transformers' attention_probs_dropout_prob under each model's key name). */
  private attentionDropout(): number {
    const c = this.model.config;
    for (const k of ['attention_probs_dropout_prob', 'attn_pdrop', 'attention_dropout', 'dropout_rate'])
      if (typeof c[k] === 'number') return c[k] as number;
    return 0;
  }
  /** The config of AdapterFusion `name`. */
  fusionConfigOf(name: string): FusionConfigDict {
    const f = this.fusions.get(name);
    if (!f) throw new ValueError(`No AdapterFusion with name '${name}' was found.`);
    return f.cfg;
  }
  /** Names of the AdapterFusion layers. */
  fusionNames(): string[] {
    return [...this.fusions.keys()];
  }
  saveFusion(dir: string, name: string, opts: { format?: 'safetensors' | 'bin' | 'both'; meta?: Record<string, unknown> } = {}): void {
    const f = this.fusions.get(name);
    if (!f) throw new ValueError(`No AdapterFusion with name '${name}' was found.`);
    const mt = String(this.model.config.model_type);
    const meta = { adapter_names: f.names, config: f.cfg, hidden_size: this.model.base.hiddenSize!(), model_class: ADAPTER_MODEL_CLASS[mt] ?? 'AdapterModel',
      model_name: String(this.model.config._name_or_path ?? ''), model_type: mt, name, version: 'adapters.1.1.0', ...(opts.meta ?? {}) };
    const format = opts.format ?? 'both';
    if (format !== 'safetensors' && format !== 'bin' && format !== 'both') throw new ValueError(`saveAdapterFusion: format must be 'safetensors', 'bin' or 'both', got '${String(format)}'`);
    writeFolderAtomic(dir, (tmp) => {
      if (format !== 'safetensors') saveTorchBin(path.join(tmp, 'pytorch_model_adapter_fusion.bin'), new Map(this.fusionParams(name)));
      if (format !== 'bin') saveSafetensors(path.join(tmp, 'model_adapter_fusion.safetensors'), new Map(this.fusionParams(name)));
      fs.writeFileSync(path.join(tmp, 'adapter_fusion_config.json'), pythonJson(meta));
    }, format === 'both' ? [] : [format === 'bin' ? 'model_adapter_fusion.safetensors' : 'pytorch_model_adapter_fusion.bin']);
  }

  merge(name: string): void {
    if (!this.has(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
    const hosts = [...this.hosts.values()].filter((h) => h.get(name));
    if (!hosts.length) throw new ValueError(`mergeAdapter: '${name}' has no LoRA or (IA)³ modules to merge`);
    // every layer checked before any is changed (mergeInto refuses a second merged module or a gate), so a refusal
    // leaves the model as it was
    for (const h of hosts) {
      const other = [...h.merged.keys()].find((n) => n !== name);
      if (other !== undefined) throw new ValueError(`mergeAdapter('${name}'): '${other}' is merged already; resetAdapter() first`);
      if (h.get(name)!.useGating) throw new ValueError(`mergeAdapter('${name}'): cannot merge a LoRA layer with gating`);
    }
    for (const h of hosts) mergeInto(h, name);
  }
  reset(): void {
    for (const h of this.hosts.values()) for (const n of [...h.merged.keys()]) unmerge(h, n);
  }
  /** Names of the adapters merged into weights (mergeAdapter), in no particular order. */
  mergedNames(): string[] {
    const names = new Set<string>();
    for (const h of this.hosts.values()) for (const n of h.merged.keys()) names.add(n);
    return [...names];
  }

  /**
   * Loads an adapter saved by the Python library or by saveAdapter: `adapter_config.json` + `adapter.safetensors`
   * (preferred) or `pytorch_adapter.bin`. Weight names may carry the flex-head prefix or not.
   */
  load(dir: string, opts: { loadAs?: string; setActive?: boolean; config?: AdapterConfig | string; leaveOut?: number[] } = {}): string {
    const cfgFile = path.join(dir, 'adapter_config.json');
    let meta: { config?: ConfigDict; name?: string; version?: string };
    try {
      meta = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ENOENT' ? new IOError(`${cfgFile} not found`) : new FormatError(`${cfgFile}: ${(e as Error).message}`);
    }
    if (!meta.config || typeof meta.config !== 'object') throw new FormatError(`${cfgFile}: missing "config"`);
    const savedName = typeof meta.name === 'string' ? meta.name : 'adapter';
    const name = opts.loadAs ?? savedName;
    const saved = applyVersionCompat(meta.config, typeof meta.version === 'string' ? meta.version : undefined);
    // leave_out on load (the Python library's load_adapter(leave_out=...) sets config["leave_out"]): those layers get no
    // adapter and their saved weights are skipped. A ReFT / prompt-tuning config takes it as an attribute (ReFT honours
    // it); a union's top-level key is ignored by ConfigUnion.from_dict, so a union loads whole, as there.
    if (opts.leaveOut?.length && saved.architecture !== 'union') {
      const prev = Array.isArray(saved.leave_out) ? (saved.leave_out as number[]) : [];
      saved.leave_out = [...new Set([...prev, ...opts.leaveOut])].sort((a, b) => a - b);
    }
    let cfg = AdapterConfig.fromDict(saved);
    // An explicit config (class) wins over the saved dict: needed e.g. for DiReFT, whose defining class
    // attribute (subtract_projection = False) is not serialized by the Python library (FORMATS §3.3).
    if (opts.config) {
      const want = AdapterConfig.load(opts.config);
      cfg = want instanceof ConfigUnion ? want : AdapterConfig.fromDictAs(want, stripArch(saved));
    }
    const { weights, file } = readWeightFile(dir, 'adapter.safetensors', 'pytorch_adapter.bin');
    let done = false;
    try {
      // an adapter of that name is replaced (the Python library loads over it, "Overwriting existing adapter")
      this.add(name, cfg, { overwriteOk: true });
      const own = new Map(this.params(name));
      const ownBuffers = new Map(this.model.namedBuffers().filter(([k]) => isAdapterKey(k, name)));
      const prefix = `${this.model.spec.prefix}.`;
      const loaded = new Set<string>();
      noGrad(() => {
        for (const [k0, t] of weights) {
          let k = k0.startsWith(prefix) ? k0.slice(prefix.length) : k0;
          if (name !== savedName) for (const p of adapterKeyPatterns(savedName)) k = k.split(p).join(p.replace(`${savedName}.`, `${name}.`));
          const key = prefix + k;
          const dst = own.get(key) ?? ownBuffers.get(key);
          if (!dst) continue;
          if (dst.shape.join() !== t.shape.join())
            throw new FormatError(`${file}: '${k0}' has shape [${t.shape}] but the model expects [${dst.shape}]`);
          dst.copy_(t);
          loaded.add(key);
        }
      });
      // Compacter's shared PHM rule is never saved by the Python library: like it, keep the fresh random rule
      const missing = [...own.keys()].filter((k) => !loaded.has(k) && !k.includes('.shared_parameters.'));
      if (missing.length)
        throw new FormatError(`${file}: missing weights for adapter '${name}': ${missing.slice(0, 6).join(', ')}${missing.length > 6 ? ', ...' : ''}`);
      done = true;
    } finally {
      for (const t of weights.values()) t.dispose();
      // a failed load leaves no half-loaded adapter behind (a retry starts clean)
      if (!done && this.has(name)) this.delete(name);
    }
    if (opts.setActive) this.setActive([name]);
    return name;
  }
}

/** The Fuse blocks of a composition (nested ones included). */
function fuseBlocks(b: CompositionBlock): Fuse[] {
  const out: Fuse[] = [];
  const walk = (x: Setup) => {
    if (typeof x === 'string') return;
    if (x instanceof Fuse) out.push(x);
    for (const c of x.children) walk(c);
  };
  walk(b);
  return out;
}

/** The key of the same parameter in adapter `to` (only the adapter-name segment changes). */
function renameAdapterKey(key: string, from: string, to: string): string {
  let k = `.${key}`;
  for (const p of adapterKeyPatterns(from)) k = k.split(p).join(p.replace(`${from}.`, `${to}.`));
  return k.slice(1);
}

/**
 * Σ_i w_i·B_i·A_i split into rank-r factors A (r, k), B (d, r) by SVD, computed exactly and cheaply from the
 * low-rank structure: ΔW = Bs·As with Bs = [w_i B_i] (d×R), As = [A_i] (R×k); QR of both, SVD of the R×R core.
 */
function svdAverage(pairs: [Tensor, Tensor][], w: number[], rank: number): { A: Tensor; B: Tensor } {
  const d = pairs[0]![1].shape[0]!, k = pairs[0]![0].shape[1]!;
  const cols: Float64Array[] = [];  // columns of Bs (length d)
  const rows: Float64Array[] = [];  // rows of As (length k)
  pairs.forEach(([A, B], i) => {
    const a = A.toArray() as Float32Array, b = B.toArray() as Float32Array, r = A.shape[0]!;
    for (let j = 0; j < r; j++) {
      cols.push(Float64Array.from({ length: d }, (_, x) => w[i]! * b[x * r + j]!));
      rows.push(Float64Array.from(a.subarray(j * k, (j + 1) * k)));
    }
  });
  const qb = qr(cols), qa = qr(rows);
  const R = cols.length;
  // core C = Rb · Raᵀ (R×R)
  const C = Array.from({ length: R }, (_, i) => Float64Array.from({ length: R }, (_, j) => {
    let s = 0;
    for (let t = 0; t < R; t++) s += qb.R[i]![t]! * qa.R[j]![t]!;
    return s;
  }));
  const { U, S, V } = jacobiSvd(C);
  const order = S.map((v, i) => [v, i] as [number, number]).sort((x, y) => y[0] - x[0]).map(([, i]) => i);
  const r = Math.min(rank, R);
  const Aout = new Float32Array(rank * k), Bout = new Float32Array(d * rank);
  for (let c = 0; c < r; c++) {
    const j = order[c]!;
    for (let x = 0; x < k; x++) {  // A row c = (Qa · V[:, j])ᵀ
      let s = 0;
      for (let t = 0; t < R; t++) s += qa.Q[t]![x]! * V[t]![j]!;
      Aout[c * k + x] = s;
    }
    for (let x = 0; x < d; x++) {  // B column c = Qb · U[:, j] · S_j
      let s = 0;
      for (let t = 0; t < R; t++) s += qb.Q[t]![x]! * U[t]![j]!;
      Bout[x * rank + c] = s * S[j]!;
    }
  }
  return { A: tensor(Aout, [rank, k]), B: tensor(Bout, [d, rank]) };
}

/** Modified Gram–Schmidt on vectors v_0..v_{R-1}: Q (R orthonormal vectors, zero where dependent), R (R×R, upper). */
function qr(vs: Float64Array[]): { Q: Float64Array[]; R: Float64Array[] } {
  const n = vs.length;
  const Q: Float64Array[] = [], Rm = Array.from({ length: n }, () => new Float64Array(n));
  for (let j = 0; j < n; j++) {
    const v = Float64Array.from(vs[j]!);
    for (let i = 0; i < j; i++) {
      let dot = 0;
      for (let x = 0; x < v.length; x++) dot += Q[i]![x]! * v[x]!;
      Rm[i]![j] = dot;
      for (let x = 0; x < v.length; x++) v[x]! -= dot * Q[i]![x]!;
    }
    let nrm = 0;
    for (let x = 0; x < v.length; x++) nrm += v[x]! * v[x]!;
    nrm = Math.sqrt(nrm);
    Rm[j]![j] = nrm;
    if (nrm > 1e-300) for (let x = 0; x < v.length; x++) v[x]! /= nrm;
    else v.fill(0);
    Q.push(v);
  }
  return { Q, R: Rm };
}

/** One-sided Jacobi SVD of a small square matrix (rows as arrays): M = U·diag(S)·Vᵀ. */
function jacobiSvd(M: Float64Array[]): { U: Float64Array[]; S: number[]; V: Float64Array[] } {
  const n = M.length;
  const A = M.map((r) => Float64Array.from(r));  // work on columns of A
  const V = Array.from({ length: n }, (_, i) => Float64Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++)
      for (let q = p + 1; q < n; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < n; i++) {
          alpha += A[i]![p]! * A[i]![p]!;
          beta += A[i]![q]! * A[i]![q]!;
          gamma += A[i]![p]! * A[i]![q]!;
        }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta) || gamma === 0) continue;
        off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        for (let i = 0; i < n; i++) {
          const ap = A[i]![p]!, aq = A[i]![q]!;
          A[i]![p] = c * ap - s * aq;
          A[i]![q] = s * ap + c * aq;
          const vp = V[i]![p]!, vq = V[i]![q]!;
          V[i]![p] = c * vp - s * vq;
          V[i]![q] = s * vp + c * vq;
        }
      }
    if (off < 1e-15) break;
  }
  const S = Array.from({ length: n }, (_, j) => Math.sqrt(A.reduce((acc, r) => acc + r[j]! * r[j]!, 0)));
  const U = A.map((r) => Float64Array.from(r, (v, j) => (S[j]! > 1e-300 ? v / S[j]! : 0)));
  return { U, S, V };
}

/** model_type → the Python library's flex-head class name (written as model_class). */
export const ADAPTER_MODEL_CLASS: Record<string, string> = {
  bert: 'BertAdapterModel', roberta: 'RobertaAdapterModel', 'xlm-roberta': 'XLMRobertaAdapterModel', distilbert: 'DistilBertAdapterModel',
  electra: 'ElectraAdapterModel', gpt2: 'GPT2AdapterModel', llama: 'LlamaAdapterModel', mistral: 'MistralAdapterModel',
  qwen2: 'Qwen2AdapterModel', t5: 'T5AdapterModel', mt5: 'MT5AdapterModel', bart: 'BartAdapterModel', vit: 'ViTAdapterModel',
};

export function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/**
 * Writes a folder's files as the Python library does (the folder is created if needed; other files in it stay, e.g. a
 * head saved beside an adapter): `fill` writes them into a temporary folder beside the target, then each is renamed
 * into place (atomic per file) and the files named in `stale` are removed (another format's weights of the same thing,
 * which a loader could otherwise prefer).
 */
export function writeFolderAtomic(dir: string, fill: (tmp: string) => void, stale: string[] = []): void {
  const target = path.resolve(dir);
  if (!fs.existsSync(path.dirname(target))) throw new IOError(`parent folder ${path.dirname(target)} does not exist`);
  if (fs.existsSync(target) && !fs.statSync(target).isDirectory()) throw new IOError(`${target} exists and is not a folder`);
  const tmp = `${target}.tmp-${process.pid}-${Date.now().toString(36)}`;
  fs.mkdirSync(tmp);
  try {
    fill(tmp);
    fs.mkdirSync(target, { recursive: true });
    const moveIn = (from: string, to: string): void => {
      for (const e of fs.readdirSync(from, { withFileTypes: true })) {
        if (e.isDirectory()) {
          fs.mkdirSync(path.join(to, e.name), { recursive: true });
          moveIn(path.join(from, e.name), path.join(to, e.name));
        } else fs.renameSync(path.join(from, e.name), path.join(to, e.name));
      }
    };
    moveIn(tmp, target);
    for (const f of stale) fs.rmSync(path.join(target, f), { force: true });
  } catch (e) {
    throw e instanceof IOError || e instanceof ValueError || e instanceof FormatError ? e : new IOError(`${(e as Error).message}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Replaces a folder we own entirely (training checkpoints): built beside the target and renamed into place, so a crash
 * leaves the old folder or the new one.
 */
export function replaceFolderAtomic(dir: string, fill: (tmp: string) => void): void {
  const target = path.resolve(dir);
  if (!fs.existsSync(path.dirname(target))) throw new IOError(`parent folder ${path.dirname(target)} does not exist`);
  const tmp = `${target}.tmp-${process.pid}-${Date.now().toString(36)}`;
  fs.mkdirSync(tmp);
  try {
    fill(tmp);
    let old: string | null = null;
    if (fs.existsSync(target)) {
      old = `${target}.old-${process.pid}-${Date.now().toString(36)}`;
      fs.renameSync(target, old);
    }
    fs.renameSync(tmp, target);
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e instanceof IOError ? e : new IOError(`${(e as Error).message}`);
  }
}

/** Python's repr of a float (shortest round-trip digits; exponent form below 1e-4 and from 1e16). */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : x < 0 ? '-Infinity' : 'NaN';
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return Object.is(x, -0) ? '-0.0' : x.toFixed(1);
  const [mant, e] = x.toExponential().split('e') as [string, string];
  const exp = Number(e);
  if (exp < -4 || exp >= 16) return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return String(x);
}
/** Python's json.dumps(v, sort_keys=True) (default separators, ASCII escapes; float fields as floats). */
function pyDumps(v: unknown, key = ''): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return FLOAT_KEYS.has(key) || !Number.isInteger(v) ? pyFloat(v) : String(v);
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (Array.isArray(v)) return `[${v.map((x) => pyDumps(x, key)).join(', ')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}: ${pyDumps(o[k], k)}`).join(', ')}}`;
}
/** Python truthiness of a config value (_minimize_dict drops falsy ones). */
const pyTruthy = (v: unknown): boolean =>
  !(v === null || v === undefined || v === false || v === 0 || v === '' || (Array.isArray(v) && !v.length) ||
    (typeof v === 'object' && !Array.isArray(v) && !Object.keys(v as object).length));
/** Defaults of keys newer than v2 that the hash leaves out (ADAPTER_CONFIG_HASH_IGNORE_DEFAULT). */
const HASH_IGNORE_DEFAULT: Record<string, unknown> = {
  phm_layer: true, phm_dim: 4, factorized_phm_W: true, shared_W_phm: false, shared_phm_rule: true, factorized_phm_rule: false, phm_c_init: 'normal',
  phm_init_range: 0.0001, learn_phm: true, hypercomplex_nonlinearity: 'glorot-uniform', phm_rank: 1, phm_bias: true, init_weights: 'bert', scaling: 1.0,
};
/**
 * The Python library's get_adapter_config_hash: sha1 of json.dumps(sort_keys=True) of the config without falsy values
 * (recursively in dicts) and without the v3 keys at their defaults, first 16 hex digits (saveAllAdapters' `config_id`).
 */
export function adapterConfigHash(config: Record<string, unknown>, length = 16): string {
  const minimize = (d: unknown): unknown => (d && typeof d === 'object' && !Array.isArray(d)
    ? Object.fromEntries(Object.entries(d as Record<string, unknown>).filter(([, v]) => pyTruthy(v)).map(([k, v]) => [k, minimize(v)])) : d);
  const m = minimize(config) as Record<string, unknown>;
  for (const [k, d] of Object.entries(HASH_IGNORE_DEFAULT)) if (k in m && m[k] === d) delete m[k];
  return createHash('sha1').update(pyDumps(m), 'utf8').digest('hex').slice(0, length);
}

/** Config fields the Python library types as float: written with a fractional part (`1.0`, not `1`), as Python's json does. */
const FLOAT_KEYS = new Set(['scaling', 'dropout', 'stochastic_depth', 'phm_init_range', 'dropout_prob']);
/**
 * JSON as the Python library writes its configs (sorted keys, indent 2, float fields as floats): Python's
 * `Adapter` accepts `scaling` only as a float or a string, so `"scaling": 1` would not load there.
 */
export function pythonJson(v: unknown): string {
  const mark = '\u0000f';
  const s = JSON.stringify(sortKeys(v), (k, x) => (FLOAT_KEYS.has(k) && typeof x === 'number' && Number.isInteger(x) ? `${mark}${x}` : x), 2);
  return s.replace(/"\\u0000f(-?\d+)"/g, '$1.0');
}

function stripArch(d: ConfigDict): ConfigDict {
  const r = { ...d };
  delete r.architecture;
  return r;
}

/** Compatibility rules of the Python library for adapters saved by older versions. */
function applyVersionCompat(config: ConfigDict, version: string | undefined): ConfigDict {
  const c = { ...config };
  // files without a version name activations the old way (load_weights_config's ACTIVATION_RENAME)
  if (version === undefined) {
    const rename: Record<string, string> = { gelu: 'gelu_new', gelu_orig: 'gelu' };
    if (typeof c.non_linearity === 'string' && c.non_linearity in rename) c.non_linearity = rename[c.non_linearity]!;
    return c;
  }
  // adapters < 1.1.0 ignored alpha in LoRA's (and (IA)³'s) scaling: alpha := r (_fix_backward_compat)
  const m = /^adapters\.(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!m) return c;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  if ((maj < 1 || (maj === 1 && min < 1)) && c.architecture === 'lora' && c.r !== undefined && c.r !== c.alpha) c.alpha = c.r;
  return c;
}

/** Formats summary rows as the Python library's adapter_summary() table. */
export function formatSummary(rows: SummaryRow[]): string {
  const header = ['Name', 'Architecture', '#Param', '%Param', 'Active', 'Train'];
  const body = rows.map((r) => [r.name, r.architecture ?? '', r['#param'].toLocaleString('en-US'), r['%param'].toFixed(3),
    r.active === undefined ? '' : String(r.active), String(r.train)]);
  const w = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = '-'.repeat(w.reduce((a, b) => a + b + 2, 0));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 || i === 1 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line, fmt(header), line, ...body.slice(0, -1).map(fmt), line, fmt(body[body.length - 1]!), line].join('\n');
}

/** The weights of a saved folder: the safetensors file when present, else the PyTorch .bin (as the Python library). */
export function readWeightFile(dir: string, stName: string, binName: string): { weights: Map<string, Tensor>; file: string } {
  const st = path.join(dir, stName), bin = path.join(dir, binName);
  if (fs.existsSync(st)) return { weights: loadSafetensors(st), file: st };
  if (fs.existsSync(bin)) return { weights: loadTorchBin(bin), file: bin };
  throw new IOError(`${dir}: no ${stName} or ${binName}`);
}
