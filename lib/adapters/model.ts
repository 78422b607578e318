/**
 * The model-level adapter API of the Python Adapters library (`ModelAdaptersMixin`), for any model that
 * declares hook sites (lib/adapters/context.ts): addAdapter, deleteAdapter, hasAdapter, setActiveAdapters,
 * trainAdapter, freezeModel, adapterSummary, mergeAdapter / resetAdapter, loadAdapter (adapters'
 * `adapter_config.json` + `adapter.safetensors` / `pytorch_adapter.bin`).
 * Methods implemented so far: bottleneck adapters (seq_bn, double_seq_bn, par_bn, scaled_par_bn and their
 * options, without PHM/invertible), LoRA and (IA)³, and unions of these. Others raise a clear error.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Module } from '../nn/module.ts';
import { Tensor } from '../tensor.ts';
import { noGrad } from '../autograd/tape.ts';
import { FormatError, IOError, ValueError } from '../errors.ts';
import { AdapterConfig, BnConfig, ConfigUnion, LoRAConfig, PrefixTuningConfig, PromptTuningConfig, ReftConfig, type ConfigDict } from './config.ts';
import { checkPrefixConfig } from './methods/prefix_tuning.ts';
import { SharedParameters } from './methods/phm.ts';
import { AdapterContext, type AdaptableModel, type LayerSites } from './context.ts';
import { LoRAHost, mergeInto, unmerge } from './methods/lora.ts';
import { readSafetensorsHeader, readTensor } from '../io/safetensors.ts';
import { loadTorchBin } from '../io/torch_bin.ts';

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
      for (const s of [l.attnBottleneck, l.ffnBottleneck]) if (s) s.ctx = this.ctx;
      if (l.prefix) l.prefix.ctx = this.ctx;
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

  add(name: string, config: AdapterConfig | string | ConfigDict, opts: { overwriteOk?: boolean; setActive?: boolean } = {}): void {
    if (typeof name !== 'string' || !name || /[.,|\s[\]]/.test(name))
      throw new ValueError(`addAdapter: invalid adapter name ${JSON.stringify(name)} (no dots, commas, '|', spaces or brackets)`);
    const cfg = AdapterConfig.load(config);
    if (this.has(name)) {
      if (!opts.overwriteOk) throw new ValueError(`An adapter with the name '${name}' has already been added.`);
      this.delete(name);
    }
    this.requireSites('addAdapter');
    const parts = cfg instanceof ConfigUnion ? cfg.configs : [cfg];
    const hidden = this.model.base.hiddenSize!();
    try {
      for (const c of parts) this.addPart(name, c, hidden);
    } catch (e) {
      this.removeModules(name);
      throw e;
    }
    this.ctx.configs.set(name, cfg);
    if (opts.setActive) this.setActive([name]);
  }

  private addPart(name: string, c: AdapterConfig, hidden: number): void {
    const leave = new Set(c.leaveOut);
    if (c instanceof BnConfig) {
      if (c.get('phm_layer')) this.shared().add(name, c);
      const rule = () => this.shared().rule(name);
      for (const l of this.layers()) {
        if (leave.has(l.index)) continue;
        if (c.get('mh_adapter') && l.attnBottleneck) l.attnBottleneck.add(name, c, hidden, rule);
        if (c.get('output_adapter') && l.ffnBottleneck) l.ffnBottleneck.add(name, c, hidden, rule);
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
      for (const l of layers) l.prefix?.attach(pool);  // layer aliases first: they name the parameters, as in PyTorch
      pool.add(name, c, layers.length, this.model.base.numHeads!(), hidden);
      for (const l of layers)
        if (!leave.has(l.index) && l.prefix) {
          l.prefix.enabled.add(name);
          if (c.get('use_gating')) l.prefix.addGate(name, hidden, c.get('shared_gating') as boolean);
        }
      return;
    }
    if (c instanceof ReftConfig) {
      const layers = this.layers();
      if (!layers.some((l) => l.reft)) throw new ValueError(`ReFT is not supported for ${String(this.model.config.model_type)} yet`);
      for (const l of layers) l.reft?.add(name, c, hidden, c.subtractProjection);
      return;
    }
    if (c instanceof PromptTuningConfig) {
      const pool = this.model.base.promptPool?.();
      if (!pool)
        throw new ValueError(`prompt tuning is not supported for ${String(this.model.config.model_type)} (the Python library silently adds nothing there)`);
      pool.add(name, c, hidden);
      return;
    }
    throw new ValueError(`${c.className} (architecture '${c.architecture}') is not implemented yet`);
  }
  private readonly pendingFused = new Map<string, string[]>();
  private fusedParts(name: string): number[] {
    const mats = this.pendingFused.get(name) ?? ['q', 'v'];
    return ['q', 'k', 'v'].map((m, i) => (mats.includes(m) ? i : -1)).filter((i) => i >= 0);
  }

  private removeModules(name: string): void {
    for (const l of this.layers()) {
      l.attnBottleneck?.remove(name);
      l.ffnBottleneck?.remove(name);
      l.prefix?.enabled.delete(name);
      l.prefix?.removeGate(name);
      l.reft?.remove(name);
    }
    this.model.base.prefixPool?.().remove(name);
    this.model.base.invertibleAdapters?.().remove(name);
    (this.model.base.child('shared_parameters') as SharedParameters | null)?.remove(name);
    this.model.base.promptPool?.().remove(name);
    for (const h of this.hosts.values()) {
      unmerge(h, name);
      h.remove(name);
    }
  }

  delete(name: string): void {
    if (!this.has(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
    this.removeModules(name);
    this.ctx.configs.delete(name);
    this.ctx.active = this.ctx.active.filter((n) => n !== name);
  }

  /** Activates adapters (a name, a list = Stack, or null for none); `skipLayers` drops them in those layers. */
  setActive(setup: string | string[] | null, opts: { skipLayers?: number[] } = {}): void {
    const names = setup === null ? [] : Array.isArray(setup) ? setup : setup.split(',').map((s) => s.trim()).filter(Boolean);
    for (const n of names) if (!this.has(n)) throw new ValueError(`No adapter with name '${n}' found. Add it first with addAdapter.`);
    this.ctx.active = [...names];
    this.ctx.skipLayers = new Set(opts.skipLayers ?? []);
  }

  /** Parameters of adapter `name` (names as in namedParameters()). */
  params(name: string): [string, Tensor][] {
    return this.model.namedParameters().filter(([k]) => isAdapterKey(k, name));
  }
  private baseParams(): [string, Tensor][] {
    const names = [...this.ctx.configs.keys()];
    return this.model.namedParameters().filter(([k]) => !names.some((n) => isAdapterKey(k, n)) && !k.startsWith('heads.') && !k.startsWith('lm_head.'));
  }

  freeze(freeze = true): void {
    for (const [, p] of this.baseParams()) p.requiresGrad = !freeze;
  }

  /** Freezes everything but the named adapters, activates them and switches to train mode. */
  train(setup: string | string[], opts: { trainEmbeddings?: boolean } = {}): void {
    const names = Array.isArray(setup) ? setup : [setup];
    this.setActive(names);
    for (const [, p] of this.model.namedParameters()) p.requiresGrad = false;
    for (const n of names) for (const [, p] of this.params(n)) p.requiresGrad = true;
    if (opts.trainEmbeddings) {
      const E = (this.model.base as { inputEmbeddings?: () => Tensor }).inputEmbeddings?.();
      if (E) E.requiresGrad = true;
    }
    this.model.train();
  }

  summary(): SummaryRow[] {
    const base = this.baseParams().reduce((a, [, p]) => a + p.numel, 0);
    const rows: SummaryRow[] = [];
    for (const [name, cfg] of this.ctx.configs) {
      const ps = this.params(name);
      const n = ps.reduce((a, [, p]) => a + p.numel, 0);
      rows.push({ name, architecture: cfg.architecture, '#param': n, '%param': (100 * n) / base, active: this.ctx.active.includes(name),
        train: ps.some(([, p]) => p.requiresGrad) });
    }
    rows.push({ name: 'Full model', '#param': base, '%param': 100, train: this.baseParams().some(([, p]) => p.requiresGrad) });
    return rows;
  }

  merge(name: string): void {
    if (!this.has(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
    const hosts = [...this.hosts.values()].filter((h) => h.get(name));
    if (!hosts.length) throw new ValueError(`mergeAdapter: '${name}' has no LoRA or (IA)³ modules to merge`);
    for (const h of hosts) mergeInto(h, name);
  }
  reset(): void {
    for (const h of this.hosts.values()) for (const n of [...h.merged.keys()]) unmerge(h, n);
  }

  /**
   * Loads an adapter saved by the Python library or by saveAdapter: `adapter_config.json` + `adapter.safetensors`
   * (preferred) or `pytorch_adapter.bin`. Weight names may carry the flex-head prefix or not.
   */
  load(dir: string, opts: { loadAs?: string; setActive?: boolean; config?: AdapterConfig | string } = {}): string {
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
    let cfg = AdapterConfig.fromDict(meta.config);
    // An explicit config (class) wins over the saved dict: needed e.g. for DiReFT, whose defining class
    // attribute (subtract_projection = False) is not serialized by the Python library (FORMATS §3.3).
    if (opts.config) {
      const want = AdapterConfig.load(opts.config);
      cfg = want instanceof ConfigUnion ? want : new (want.constructor as new (o: ConfigDict) => AdapterConfig)(stripArch(meta.config));
    }
    cfg = applyVersionCompat(cfg, meta.version);
    const st = path.join(dir, 'adapter.safetensors'), bin = path.join(dir, 'pytorch_adapter.bin');
    let weights: Map<string, Tensor>;
    let file: string;
    if (fs.existsSync(st)) {
      file = st;
      const h = readSafetensorsHeader(st);
      weights = new Map([...h.entries.keys()].map((k) => [k, readTensor(h, k)]));
    } else if (fs.existsSync(bin)) {
      file = bin;
      weights = loadTorchBin(bin);
    } else throw new IOError(`${dir}: no adapter.safetensors or pytorch_adapter.bin`);
    try {
      this.add(name, cfg, { overwriteOk: false });
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
      if (missing.length) {
        this.delete(name);
        throw new FormatError(`${file}: missing weights for adapter '${name}': ${missing.slice(0, 6).join(', ')}${missing.length > 6 ? ', ...' : ''}`);
      }
    } finally {
      for (const t of weights.values()) t.dispose();
    }
    if (opts.setActive) this.setActive([name]);
    return name;
  }
}

function stripArch(d: ConfigDict): ConfigDict {
  const r = { ...d };
  delete r.architecture;
  return r;
}

/** Compatibility rules of the Python library for adapters saved by older versions. */
function applyVersionCompat(cfg: AdapterConfig, version: string | undefined): AdapterConfig {
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return cfg;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  const old = maj < 1 || (maj === 1 && min < 1);
  // before 1.1.0 LoRA's scaling ignored alpha (alpha := r)
  if (old && cfg instanceof LoRAConfig && cfg.get('composition_mode') === 'add' && cfg.r !== cfg.alpha) return cfg.replace({ alpha: cfg.r });
  return cfg;
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
