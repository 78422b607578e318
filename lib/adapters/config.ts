/**
 * Adapter method configurations, with exactly the serialized snake_case keys and defaults of the Python
 * Adapters library (adapters 1.1.0 `configuration/adapter_config.py`), the string ids and their old aliases,
 * and the config-string grammar (`lora[r=4, alpha=16, attn_matrices=['q','k','v']]`, `a|b` unions).
 * A config serialises to the `config` object of `adapter_config.json` (`toDict()`, every field, sorted keys
 * when written) and reads back from it (`AdapterConfig.fromDict`). Validation raises ValueError with the
 * Python library's conditions.
 * Reference: https://docs.adapterhub.ml/classes/adapter_config.html
 */
import { ValueError } from '../errors.ts';

export type ConfigValue = string | number | boolean | null | ConfigValue[] | { [k: string]: ConfigValue };
export type ConfigDict = { [k: string]: ConfigValue };

// Set while fromDict builds a config: keys the class does not define are kept aside (`extras`) instead of refused, as
// the Python library's from_dict sets them as plain attributes (configs written by other versions still load).
let lenient = 0;

/** Common base: a frozen record of the method's fields. */
export abstract class AdapterConfig {
  /** 'bottleneck' | 'lora' | 'prefix_tuning' | 'prompt_tuning' | 'reft' | 'union' (serialized `architecture`; bottleneck has none). */
  abstract readonly architecture: string;
  protected readonly fields: ConfigDict;
  /** Keys of a loaded dict that this class does not define (not serialized, as in Python; `leave_out` on ReFT counts). */
  readonly extras: ConfigDict = {};

  protected constructor(defaults: ConfigDict, overrides: ConfigDict, readonly className: string) {
    const known: ConfigDict = {};
    for (const [k, v] of Object.entries(overrides)) {
      if (k in defaults) known[k] = v;
      else if (lenient) this.extras[k] = structuredClone(v);
      else throw new ValueError(`${className}: unknown config key '${k}'`);
    }
    this.fields = { ...structuredClone(defaults), ...structuredClone(known) };
    // the v1 `invertible_adapter` dict (BnConfig.__setattr__ maps it)
    const inv = this.extras.invertible_adapter;
    if (inv && typeof inv === 'object' && !Array.isArray(inv) && 'inv_adapter' in this.fields) {
      this.fields.inv_adapter = (inv as ConfigDict).block_type ?? null;
      this.fields.inv_adapter_reduction_factor = (inv as ConfigDict).reduction_factor ?? null;
      delete this.extras.invertible_adapter;
    }
  }

  /** A field value (the serialized key). */
  get<T extends ConfigValue = ConfigValue>(key: string): T {
    if (!(key in this.fields)) throw new ValueError(`${this.className}: no config key '${key}'`);
    return this.fields[key] as T;
  }
  has(key: string): boolean {
    return key in this.fields;
  }
  /** The `config` object of adapter_config.json (all fields). */
  toDict(): ConfigDict {
    return structuredClone(this.fields);
  }
  /** A copy with some fields replaced (like Python's `config.replace(**kwargs)`: an unknown field is an error). */
  replace(changes: ConfigDict): AdapterConfig {
    for (const k of Object.keys(changes))
      if (!(k in this.fields) && k !== 'architecture') throw new ValueError(`${this.className}: unknown config key '${k}'`);
    const c = AdapterConfig.fromDict({ ...this.toDict(), ...changes });
    // a subclass the dict cannot tell apart (DiReFT, PEFT's prefix tuning) stays that subclass, with its unserialized
    // settings (DiReFT's subtract_projection = False) and extra attributes
    if (c.constructor !== this.constructor && this instanceof (c.constructor as abstract new (...a: never[]) => unknown)) {
      Object.setPrototypeOf(c, Object.getPrototypeOf(this));
      for (const [k, v] of Object.entries(this)) if (k !== 'fields' && k !== 'extras') (c as unknown as Record<string, unknown>)[k] = v;
    }
    Object.assign(c.extras, structuredClone(this.extras));
    return c;
  }
  /** Layer indices this adapter skips (a `leave_out` field, or the attribute a loaded ReFT / prompt config carries). */
  get leaveOut(): number[] {
    return (this.fields.leave_out as number[] | undefined) ?? (this.extras.leave_out as number[] | undefined) ?? [];
  }

  /** Loads a config from an instance, a string id / config string, or a dict (adapter_config.json's `config`). */
  static load(cfg: AdapterConfig | string | ConfigDict, overrides: ConfigDict = {}): AdapterConfig {
    let c: AdapterConfig;
    if (cfg instanceof AdapterConfig) c = cfg;
    else if (typeof cfg === 'string') c = parseConfigString(cfg);
    else if (cfg && typeof cfg === 'object' && !Array.isArray(cfg)) c = AdapterConfig.fromDict(cfg);
    else throw new ValueError(`invalid adapter config ${JSON.stringify(cfg)}`);
    return Object.keys(overrides).length ? c.replace(overrides) : c;
  }

  /** Rebuilds the typed config from its serialized dict (keys the class does not define are kept as `extras`). */
  static fromDict(d: ConfigDict): AdapterConfig {
    lenient++;
    try {
      return AdapterConfig.fromDictInner(d);
    } finally {
      lenient--;
    }
  }
  /** fromDict, building an instance of `like`'s class (a subclass the dict cannot name, e.g. DiReFT). */
  static fromDictAs(like: AdapterConfig, d: ConfigDict): AdapterConfig {
    lenient++;
    try {
      return new (like.constructor as new (o: ConfigDict) => AdapterConfig)(d);
    } finally {
      lenient--;
    }
  }
  private static fromDictInner(d: ConfigDict): AdapterConfig {
    const arch = d.architecture ?? null;
    const rest = { ...d };
    delete rest.architecture;
    switch (arch) {
      case null:
      case 'bottleneck':
        return new BnConfig(rest);
      case 'lora':
        return rest.composition_mode === 'scale' ? new IA3Config(rest) : new LoRAConfig(rest);
      case 'prefix_tuning':
        return new PrefixTuningConfig(rest);
      case 'prompt_tuning':
        return new PromptTuningConfig(rest);
      case 'reft':
        return new ReftConfig(rest);
      case 'peft_prompt_tuning':
        return new PeftPromptTuningConfig(rest);
      case 'union': {
        const cs = rest.configs;
        if (!Array.isArray(cs)) throw new ValueError('union config needs a "configs" list');
        return new ConfigUnion(...cs.map((c) => AdapterConfig.fromDictInner(c as ConfigDict)));
      }
      default:
        throw new ValueError(`unknown adapter architecture ${JSON.stringify(arch)}`);
    }
  }
}

// ---- bottleneck adapters ---------------------------------------------------------------------------

const BN_DEFAULTS: ConfigDict = {
  mh_adapter: false, output_adapter: true, reduction_factor: 16, non_linearity: 'relu',
  original_ln_before: false, original_ln_after: true, ln_before: false, ln_after: false, init_weights: 'bert',
  is_parallel: false, scaling: 1.0, use_gating: false, residual_before_ln: true, adapter_residual_before_ln: false,
  inv_adapter: null, inv_adapter_reduction_factor: null, cross_adapter: false, leave_out: [], dropout: 0.0,
  phm_layer: false, phm_dim: 4, factorized_phm_W: true, shared_W_phm: false, shared_phm_rule: true,
  factorized_phm_rule: false, phm_c_init: 'normal', phm_init_range: 0.0001, learn_phm: true,
  hypercomplex_nonlinearity: 'glorot-uniform', phm_rank: 1, phm_bias: true, stochastic_depth: 0.0,
};

/** Bottleneck adapter (Houlsby et al. 2019; Pfeiffer et al. 2020; He et al. 2021 parallel form). */
export class BnConfig extends AdapterConfig {
  readonly architecture = 'bottleneck';
  constructor(overrides: ConfigDict = {}, presetDefaults: ConfigDict = {}, name = 'BnConfig') {
    super({ ...BN_DEFAULTS, ...presetDefaults }, overrides, name);
    validateBn(this);
  }
  /** Bottleneck width for a layer: int(hidden // reduction_factor), at least 1. */
  bottleneckSize(hidden: number, layer: number): number {
    const rf = this.fields.reduction_factor;
    let f: number;
    if (typeof rf === 'number') f = rf;
    else if (rf && typeof rf === 'object' && !Array.isArray(rf)) {
      const m = rf as Record<string, ConfigValue>;
      const v = m[String(layer)] ?? m.default;
      if (typeof v !== 'number') throw new ValueError(`reduction_factor has no entry for layer ${layer} and no 'default'`);
      f = v;
    } else throw new ValueError(`invalid reduction_factor ${JSON.stringify(rf)}`);
    return Math.max(1, Math.floor(hidden / f));
  }
}

function validateBn(c: BnConfig): void {
  const f = (c as unknown as { fields: ConfigDict }).fields;
  const sc = f.scaling;
  if (!(typeof sc === 'number' || sc === 'learned' || sc === 'channel'))
    throw new ValueError(`scaling must be a number, 'learned' or 'channel', got ${JSON.stringify(sc)}`);
  if (!(f.residual_before_ln === true || f.residual_before_ln === false || f.residual_before_ln === 'post_add'))
    throw new ValueError(`residual_before_ln must be true, false or "post_add", got ${JSON.stringify(f.residual_before_ln)}`);
  if (!['bert', 'mam_adapter', 'houlsby'].includes(f.init_weights as string))
    throw new ValueError(`Unknown init_weights type: ${f.init_weights}`);
  if (!['glorot-normal', 'glorot-uniform', 'normal'].includes(f.hypercomplex_nonlinearity as string))
    throw new ValueError(`hypercomplex_nonlinearity must be 'glorot-normal', 'glorot-uniform' or 'normal', got ${JSON.stringify(f.hypercomplex_nonlinearity)}`);
  if (f.phm_c_init !== 'normal' && f.phm_c_init !== 'uniform') throw new ValueError(`phm_c_init must be 'normal' or 'uniform', got ${JSON.stringify(f.phm_c_init)}`);
  if (f.inv_adapter !== null && f.inv_adapter !== 'nice' && f.inv_adapter !== 'glow')
    throw new ValueError(`Invalid invertible adapter type '${f.inv_adapter}'.`);
  const rf = f.reduction_factor;
  if (typeof rf === 'number' ? !(rf > 0) : !(rf && typeof rf === 'object' && !Array.isArray(rf)))
    throw new ValueError(`reduction_factor must be a positive number or a map of layer → factor, got ${JSON.stringify(rf)}`);
  // (a map without 'default' is checked per layer when the adapter is added, as in the Python library)
}

export class SeqBnConfig extends BnConfig {
  constructor(o: ConfigDict = {}, preset: ConfigDict = {}, name = 'SeqBnConfig') {
    super(o, { original_ln_before: true, original_ln_after: true, residual_before_ln: true, adapter_residual_before_ln: false,
      ln_before: false, ln_after: false, mh_adapter: false, output_adapter: true, non_linearity: 'relu', reduction_factor: 16, ...preset }, name);
  }
}
export class CompacterPlusPlusConfig extends SeqBnConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { phm_layer: true, reduction_factor: 32, non_linearity: 'gelu' }, 'CompacterPlusPlusConfig');
  }
}
export class SeqBnInvConfig extends SeqBnConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { inv_adapter: 'nice', inv_adapter_reduction_factor: 2 }, 'SeqBnInvConfig');
  }
}
export class DoubleSeqBnConfig extends BnConfig {
  constructor(o: ConfigDict = {}, preset: ConfigDict = {}, name = 'DoubleSeqBnConfig') {
    super(o, { original_ln_before: false, original_ln_after: true, residual_before_ln: true, adapter_residual_before_ln: false,
      ln_before: false, ln_after: false, mh_adapter: true, output_adapter: true, non_linearity: 'swish', reduction_factor: 16, ...preset }, name);
  }
}
export class CompacterConfig extends DoubleSeqBnConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { phm_layer: true, reduction_factor: 32, non_linearity: 'gelu' }, 'CompacterConfig');
  }
}
export class DoubleSeqBnInvConfig extends DoubleSeqBnConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { inv_adapter: 'nice', inv_adapter_reduction_factor: 2 }, 'DoubleSeqBnInvConfig');
  }
}
export class ParBnConfig extends BnConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { original_ln_before: false, original_ln_after: true, ln_before: false, ln_after: false, mh_adapter: false,
      output_adapter: true, reduction_factor: 2, non_linearity: 'relu', init_weights: 'mam_adapter', is_parallel: true, scaling: 4.0 }, 'ParBnConfig');
  }
}
/** Adapter+ (Steitz & Roth 2024): channel scaling, Houlsby init, stochastic depth. */
export class AdapterPlusConfig extends BnConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { original_ln_after: false, original_ln_before: true, residual_before_ln: false, stochastic_depth: 0.1, init_weights: 'houlsby',
      scaling: 'channel', mh_adapter: false, output_adapter: true, reduction_factor: 96, non_linearity: 'gelu' }, 'AdapterPlusConfig');
  }
}

// ---- LoRA and (IA)³ --------------------------------------------------------------------------------

const LORA_DEFAULTS: ConfigDict = {
  selfattn_lora: true, intermediate_lora: false, output_lora: false, leave_out: [], r: 8, alpha: 8, dropout: 0.0,
  attn_matrices: ['q', 'v'], composition_mode: 'add', init_weights: 'lora', use_gating: false, dtype: null,
};

/** LoRA (Hu et al. 2021): out = Wx + b + (x Aᵀ Bᵀ)·alpha/r. */
export class LoRAConfig extends AdapterConfig {
  readonly architecture = 'lora';
  constructor(o: ConfigDict = {}, preset: ConfigDict = {}, name = 'LoRAConfig') {
    super({ ...LORA_DEFAULTS, ...preset }, o, name);
    const f = this.fields;
    if (!['add', 'scale'].includes(f.composition_mode as string)) throw new ValueError(`Unknown composition_mode: ${f.composition_mode}`);
    if (!['lora', 'bert', 'ia3', 'vera'].includes(f.init_weights as string)) throw new ValueError(`Unknown init_weights type: ${f.init_weights}`);
    if (!Array.isArray(f.attn_matrices) || f.attn_matrices.some((m) => !['q', 'k', 'v'].includes(m as string)))
      throw new ValueError(`attn_matrices must be a subset of ['q', 'k', 'v'], got ${JSON.stringify(f.attn_matrices)}`);
    if (!(typeof f.r === 'number' && Number.isInteger(f.r) && f.r > 0)) throw new ValueError(`r must be a positive integer, got ${JSON.stringify(f.r)}`);
    if (f.composition_mode === 'scale' && f.r !== 1) throw new ValueError('Can only use composition_mode "scale" with r=1.');
  }
  get r(): number { return this.fields.r as number; }
  get alpha(): number { return this.fields.alpha as number; }
}
/** (IA)³ (Liu et al. 2022): LoRA's hook with composition 'scale': out = (Wx + b) ∘ (lora_B·alpha). */
export class IA3Config extends LoRAConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { selfattn_lora: true, intermediate_lora: true, output_lora: false, r: 1, alpha: 1, attn_matrices: ['k', 'v'],
      composition_mode: 'scale', init_weights: 'ia3' }, 'IA3Config');
  }
}

// ---- prefix and prompt tuning ----------------------------------------------------------------------

/** Prefix tuning (Li & Liang 2021). */
export class PrefixTuningConfig extends AdapterConfig {
  readonly architecture = 'prefix_tuning';
  constructor(o: ConfigDict = {}) {
    super({ encoder_prefix: true, cross_prefix: true, leave_out: [], flat: false, prefix_length: 30, bottleneck_size: 512,
      non_linearity: 'tanh', dropout: 0.0, use_gating: false, shared_gating: true }, o, 'PrefixTuningConfig');
  }
}
/**
 * PEFT's prefix tuning (peft_type PREFIX_TUNING), loaded from PEFT's format: the Adapters library's prefix pool
 * (flat, or the embedding → Linear → tanh → Linear reparametrisation), but PEFT passes the prefixes as
 * past_key_values, so the real tokens' positions start at prefix_length. Saved in PEFT's format only.
 */
export class PeftPrefixTuningConfig extends PrefixTuningConfig {
  /** Positions of the real tokens start after the prefix (HF's past_key_values length). */
  readonly positionShift = true;
}
/** Prompt tuning (Lester et al. 2021). `random_uniform_scale` is init-only and never serialized, as in Python. */
export class PromptTuningConfig extends AdapterConfig {
  readonly architecture = 'prompt_tuning';
  randomUniformScale = 0.5;
  constructor(o: ConfigDict = {}) {
    super({ prompt_length: 10, prompt_init: 'random_uniform', prompt_init_text: null, combine: 'prefix' }, o, 'PromptTuningConfig');
    if (!['random_uniform', 'from_string'].includes(this.fields.prompt_init as string))
      throw new ValueError(`Unknown prompt_init: ${this.fields.prompt_init}`);
    if (!['prefix', 'prefix_after_bos'].includes(this.fields.combine as string)) throw new ValueError(`Unknown combine: ${this.fields.combine}`);
    if (this.fields.prompt_init === 'from_string' && !this.fields.prompt_init_text)
      throw new ValueError('prompt_init_text must be given when prompt_init is "from_string"');
  }
}

/**
 * PEFT's prompt tuning (peft_type PROMPT_TUNING; Lester et al. 2021 as PEFT implements it): `num_virtual_tokens`
 * learned embeddings are prepended to the word embeddings, *before* position and token-type embeddings, so the
 * real tokens' positions move by num_virtual_tokens and the output has num_virtual_tokens more positions. Not an
 * Adapters-library method (its prompt tuning joins after the embeddings): loaded from and saved to PEFT's format only.
 */
export class PeftPromptTuningConfig extends AdapterConfig {
  readonly architecture = 'peft_prompt_tuning';
  constructor(o: ConfigDict = {}) {
    super({ num_virtual_tokens: 20 }, o, 'PeftPromptTuningConfig');
    const n = this.fields.num_virtual_tokens;
    if (!Number.isInteger(n) || (n as number) < 1) throw new ValueError(`num_virtual_tokens must be a positive integer, got ${JSON.stringify(n)}`);
  }
}

// ---- ReFT -----------------------------------------------------------------------------------------

const REFT_DEFAULTS: ConfigDict = {
  layers: 'all', prefix_positions: 3, suffix_positions: 0, r: 1, orthogonality: false, tied_weights: false, dropout: 0.05,
  non_linearity: null, dtype: null, output_reft: true,
};
/** Representation fine-tuning (Wu et al. 2024). `subtract_projection` is a class attribute, never serialized. */
export class ReftConfig extends AdapterConfig {
  readonly architecture = 'reft';
  subtractProjection = true;
  constructor(o: ConfigDict = {}, preset: ConfigDict = {}, name = 'ReftConfig') {
    super({ ...REFT_DEFAULTS, ...preset }, o, name);
  }
}
export class LoReftConfig extends ReftConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { orthogonality: true }, 'LoReftConfig');
  }
}
export class NoReftConfig extends ReftConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { orthogonality: false }, 'NoReftConfig');
  }
}
export class DiReftConfig extends ReftConfig {
  constructor(o: ConfigDict = {}) {
    super(o, { orthogonality: false }, 'DiReftConfig');
    this.subtractProjection = false;
  }
}

// ---- unions ---------------------------------------------------------------------------------------

/** Several methods in one adapter (MAM, UniPELT, `a|b` strings). Checked like ConfigUnion.validate. */
export class ConfigUnion extends AdapterConfig {
  readonly architecture = 'union';
  readonly configs: AdapterConfig[];
  constructor(...configs: AdapterConfig[]) {
    super({ configs: [] }, {}, 'ConfigUnion');
    ConfigUnion.validate(configs);
    this.configs = configs;
    this.fields.configs = configs.map((c) => c.toDict());
  }
  static validate(configs: AdapterConfig[]): void {
    for (const c of configs) {
      if (!(c instanceof AdapterConfig)) throw new ValueError(`${String(c)} is not an instance of AdapterConfig`);
      if (c instanceof ConfigUnion) throw new ValueError(`${c.className} of type ConfigUnion is not supported in a config union.`);
    }
    for (let i = 0; i < configs.length; i++)
      for (let j = 0; j < i; j++) {
        const a = configs[i]!, b = configs[j]!;
        if (a.architecture !== b.architecture) continue;
        if (a.leaveOut.length || b.leaveOut.length) continue;
        if (a.architecture === 'bottleneck') {
          if (a.get('mh_adapter') !== b.get('mh_adapter') && a.get('output_adapter') !== b.get('output_adapter')) continue;
          throw new ValueError(`${a.className} and ${b.className} cannot be combined.`);
        }
        throw new ValueError(`${a.className} and ${b.className} have the same adapter architecture and cannot be combined.`);
      }
  }
  override toDict(): ConfigDict {
    return { architecture: 'union', configs: this.configs.map((c) => ({ ...(c.architecture === 'bottleneck' ? {} : { architecture: c.architecture }), ...c.toDict() })) };
  }
  /** Each member takes the changes it has a field for; a key no member has is an error. */
  override replace(changes: ConfigDict): AdapterConfig {
    for (const k of Object.keys(changes))
      if (!this.configs.some((c) => c.has(k))) throw new ValueError(`ConfigUnion: no member has the config key '${k}'`);
    return new ConfigUnion(...this.configs.map((c) => c.replace(Object.fromEntries(Object.entries(changes).filter(([k]) => c.has(k))))));
  }
}

/** Mix-and-Match adapter (He et al. 2022): prefix tuning (bottleneck 800) + a parallel bottleneck. */
export class MAMConfig extends ConfigUnion {
  constructor(prefix?: PrefixTuningConfig, adapter?: BnConfig) {
    super(prefix ?? new PrefixTuningConfig({ bottleneck_size: 800 }), adapter ?? new ParBnConfig());
  }
}
/** UniPELT (Mao et al. 2022): gated prefix tuning + seq_bn + LoRA. */
export class UniPELTConfig extends ConfigUnion {
  constructor(prefix?: PrefixTuningConfig, adapter?: BnConfig, lora?: LoRAConfig) {
    super(
      (prefix ?? new PrefixTuningConfig({ prefix_length: 10 })).replace({ use_gating: true }),
      (adapter ?? new SeqBnConfig({ reduction_factor: 16 })).replace({ use_gating: true }),
      (lora ?? new LoRAConfig({ r: 8, alpha: 2 })).replace({ use_gating: true }),
    );
  }
}

// The serialized dicts carry `architecture` for every non-bottleneck method.
for (const C of [LoRAConfig, PrefixTuningConfig, PromptTuningConfig, ReftConfig, PeftPromptTuningConfig]) {
  const orig = C.prototype.toDict;
  C.prototype.toDict = function (this: AdapterConfig) {
    return { architecture: this.architecture, ...orig.call(this) };
  };
}

// ---- string ids and the config-string grammar -------------------------------------------------------

/** ADAPTER_CONFIG_MAP: string ids (and old aliases) → configs. */
export const ADAPTER_CONFIG_MAP: Record<string, () => AdapterConfig> = {
  pfeiffer: () => new SeqBnConfig(),
  houlsby: () => new DoubleSeqBnConfig(),
  parallel: () => new ParBnConfig(),
  scaled_parallel: () => new ParBnConfig({ scaling: 'learned' }),
  'pfeiffer+inv': () => new SeqBnInvConfig(),
  'houlsby+inv': () => new DoubleSeqBnInvConfig(),
  seq_bn: () => new SeqBnConfig(),
  double_seq_bn: () => new DoubleSeqBnConfig(),
  par_bn: () => new ParBnConfig(),
  scaled_par_bn: () => new ParBnConfig({ scaling: 'learned' }),
  seq_bn_inv: () => new SeqBnInvConfig(),
  double_seq_bn_inv: () => new DoubleSeqBnInvConfig(),
  'compacter++': () => new CompacterPlusPlusConfig(),
  compacter: () => new CompacterConfig(),
  prefix_tuning: () => new PrefixTuningConfig(),
  prefix_tuning_flat: () => new PrefixTuningConfig({ flat: true }),
  prompt_tuning: () => new PromptTuningConfig(),
  lora: () => new LoRAConfig(),
  ia3: () => new IA3Config(),
  loreft: () => new LoReftConfig(),
  noreft: () => new NoReftConfig(),
  direft: () => new DiReftConfig(),
  mam: () => new MAMConfig(),
  unipelt: () => new UniPELTConfig(),
};

/**
 * Parses `id`, `id[key=value, ...]` (values are Python literals: numbers, 'strings', True/False/None, lists,
 * dicts) and `a|b` unions, like the Python library's AdapterConfig.load for strings.
 */
export function parseConfigString(s: string): AdapterConfig {
  const parts = splitTop(s.trim(), '|');
  if (parts.length > 1) return new ConfigUnion(...parts.map((p) => parseConfigString(p)));
  const m = /^([^[\]]+?)\s*(?:\[(.*)\])?$/s.exec(s.trim());
  if (!m) throw new ValueError(`Invalid adapter config string: '${s}'`);
  const id = m[1]!.trim();
  const make = ADAPTER_CONFIG_MAP[id];
  if (!make) throw new ValueError(`Unknown adapter config '${id}'. Known: ${Object.keys(ADAPTER_CONFIG_MAP).join(', ')}`);
  const base = make();
  if (m[2] === undefined || m[2].trim() === '') return base;
  const kv: ConfigDict = {};
  for (const item of splitTop(m[2], ',')) {
    if (!item.trim()) continue;
    const eq = item.indexOf('=');
    if (eq < 0) throw new ValueError(`Invalid config string item '${item.trim()}' in '${s}' (expected key=value)`);
    const key = item.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new ValueError(`Invalid config key '${key}' in '${s}'`);
    kv[key] = parseLiteral(item.slice(eq + 1).trim(), s);
  }
  return base.replace(kv);
}

/** Splits at `sep` outside brackets and quotes. */
function splitTop(s: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0, quote = '', cur = '';
  for (const ch of s) {
    if (quote) {
      cur += ch;
      if (ch === quote) quote = '';
      continue;
    }
    if (ch === "'" || ch === '"') quote = ch;
    else if ('[({'.includes(ch)) depth++;
    else if ('])}'.includes(ch)) depth--;
    if (ch === sep && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/** A small Python-literal parser (ast.literal_eval subset). */
export function parseLiteral(text: string, ctx = text): ConfigValue {
  let i = 0;
  const err = (msg: string): never => {
    throw new ValueError(`Invalid value in adapter config string '${ctx}': ${msg}`);
  };
  const ws = () => { while (i < text.length && /\s/.test(text[i]!)) i++; };
  const value = (): ConfigValue => {
    ws();
    const ch = text[i];
    if (ch === undefined) return err('unexpected end');
    if (ch === "'" || ch === '"') {
      let j = i + 1, out = '';
      while (j < text.length && text[j] !== ch) {
        if (text[j] === '\\' && j + 1 < text.length) { out += text[j + 1]; j += 2; } else out += text[j++];
      }
      if (j >= text.length) err('unterminated string');
      i = j + 1;
      return out;
    }
    if (ch === '[' || ch === '(') {
      const close = ch === '[' ? ']' : ')';
      i++;
      const arr: ConfigValue[] = [];
      ws();
      while (text[i] !== close) {
        arr.push(value());
        ws();
        if (text[i] === ',') { i++; ws(); } else if (text[i] !== close) err(`expected ',' or '${close}'`);
      }
      i++;
      return arr;
    }
    if (ch === '{') {
      i++;
      const obj: { [k: string]: ConfigValue } = {};
      ws();
      while (text[i] !== '}') {
        const k = value();
        ws();
        if (text[i] !== ':') err("expected ':'");
        i++;
        obj[String(k)] = value();
        ws();
        if (text[i] === ',') { i++; ws(); } else if (text[i] !== '}') err("expected ',' or '}'");
      }
      i++;
      return obj;
    }
    const m = /^(True|False|None|true|false|null|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)/.exec(text.slice(i));
    if (!m) return err(`cannot parse '${text.slice(i)}'`);
    i += m[0].length;
    const t = m[0];
    if (t === 'True' || t === 'true') return true;
    if (t === 'False' || t === 'false') return false;
    if (t === 'None' || t === 'null') return null;
    return Number(t);
  };
  const v = value();
  ws();
  if (i !== text.length) err(`unexpected '${text.slice(i)}'`);
  return v;
}
