/**
 * The LLaMA family of decoders (Touvron et al. 2023, https://arxiv.org/abs/2302.13971) as in HF transformers'
 * LlamaModel, MistralModel and Qwen2Model (src/transformers/models/{llama,mistral,qwen2}/modeling_*.py):
 * pre-RMSNorm blocks, rotary position embeddings (half-split `rotate_half`, with HF's 'linear' and 'llama3'
 * frequency scaling), grouped-query attention, SwiGLU feed-forward, optional sliding-window attention
 * (Mistral; Qwen2 on layers ≥ max_window_layers). The three differ only in config: biases, windows, tying.
 * HF weight names (`embed_tokens`, `layers.{i}.self_attn.q_proj`, ...); hook sites attn.q/k/v/o and
 * ffn.gate/up/down. Supports a key/value cache for generation (ForwardInput.pastKeyValues / useCache).
 */
import { Module } from '../nn/module.ts';
import { checkpoint } from '../autograd/checkpoint.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { PrefixSite, PrefixTuningPool } from '../adapters/methods/prefix_tuning.ts';
import { InvertibleAdapters } from '../adapters/methods/invertible.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Embedding, Linear, RMSNorm, activation } from '../nn/layers.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { ShapeError, ValueError } from '../errors.ts';
import {
  type ForwardInput, type HFConfig, type KVCache, type ModelOutput, alignBatch, asIds, bool, keepMask, mergeHeads, num, onDevice, followPrefix, rowsTo, splitHeads, str,
} from './common.ts';

/** torch.finfo(torch.float32).min: HF's additive mask value. */
const FINFO_MIN = -3.4028234663852886e38;

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

export interface LlamaConfig {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  eps: number;
  /** attention_dropout: on the attention probabilities in training. */
  attnDropout: number;
  act: string;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Biases of q/k/v and of o (llama: both `attention_bias`; qwen2: q/k/v only; mistral: none). */
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  /** Sliding attention window per layer (keys j with i − W < j ≤ i), or null for full causal attention. */
  windows: (number | null)[];
}

/**
 * transformers v5 writes the rotary settings as one `rope_parameters` dict ({rope_theta, rope_type, factor, …}); older
 * configs have `rope_theta` and `rope_scaling` at the top level. Returns the dict to read, or null.
 */
function ropeParameters(c: HFConfig): Record<string, unknown> | null {
  const rp = c.rope_parameters as Record<string, unknown> | null | undefined;
  if (!rp || typeof rp !== 'object') return null;
  if (!('rope_theta' in rp) && !('rope_type' in rp))
    throw new ValueError(`config.json: rope_parameters per layer type (${Object.keys(rp).join(', ')}) are not supported`);
  return rp;
}

function parseRopeScaling(c: HFConfig): RopeScaling | null {
  const rs = (ropeParameters(c) ?? c.rope_scaling) as Record<string, unknown> | null | undefined;
  if (!rs) return null;
  const type = (rs.rope_type ?? rs.type) as string | undefined;
  const f = (k: string, def?: number): number => num(rs, k, def);
  switch (type) {
    case undefined:
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: f('factor') };
    case 'llama3':
      return {
        type: 'llama3', factor: f('factor'), lowFreqFactor: f('low_freq_factor'), highFreqFactor: f('high_freq_factor'),
        originalMaxPositions: f('original_max_position_embeddings'),
      };
    default:
      throw new ValueError(`config.json: rope_scaling type '${type}' is not supported (supported: default, linear, llama3)`);
  }
}

export function parseLlamaConfig(c: HFConfig): LlamaConfig {
  const modelType = str(c, 'model_type', 'llama');
  const C = num(c, 'hidden_size');
  const H = num(c, 'num_attention_heads');
  const L = num(c, 'num_hidden_layers');
  let windows: (number | null)[] = Array(L).fill(null);
  // (MistralConfig's default window is 4096; an explicit null turns it off)
  const sw = modelType === 'mistral' && !('sliding_window' in c) ? 4096 : c.sliding_window;
  const prf = c.partial_rotary_factor;
  if (prf !== undefined && prf !== null && prf !== 1) throw new ValueError(`config.json: partial_rotary_factor ${String(prf)} is not supported (rotary embedding over the whole head only)`);
  if (typeof sw === 'number') {
    if (modelType === 'mistral') windows = Array(L).fill(sw);
    else if (modelType === 'qwen2' && bool(c, 'use_sliding_window', false)) {
      const first = num(c, 'max_window_layers', 28);
      windows = windows.map((_, i) => (i >= first ? sw : null));
    }
  }
  const attnBias = bool(c, 'attention_bias', false);
  return {
    modelType,
    vocabSize: num(c, 'vocab_size'),
    hiddenSize: C,
    numLayers: L,
    numHeads: H,
    numKvHeads: num(c, 'num_key_value_heads', H),
    headDim: num(c, 'head_dim', Math.floor(C / H)),
    intermediateSize: num(c, 'intermediate_size'),
    eps: num(c, 'rms_norm_eps', 1e-6),
    attnDropout: num(c, 'attention_dropout', 0),
    act: str(c, 'hidden_act', 'silu'),
    ropeTheta: num(ropeParameters(c) ?? {}, 'rope_theta', num(c, 'rope_theta', 10000)),
    ropeScaling: parseRopeScaling(c),
    qkvBias: modelType === 'qwen2' ? true : modelType === 'mistral' ? false : attnBias,
    oBias: modelType === 'llama' ? attnBias : false,
    mlpBias: modelType === 'llama' ? bool(c, 'mlp_bias', false) : false,
    windows,
  };
}

/**
 * RoPE inverse frequencies (D/2 values) as HF computes them in float32 (modeling_rope_utils.py:
 * `_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
 * `_compute_llama3_parameters`); Math.fround mirrors each float32 rounding step.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling | null): Float32Array {
  const f = Math.fround;
  const inv = new Float32Array(headDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(Math.pow(theta, f((2 * i) / headDim))));
  if (!scaling) return inv;
  if (scaling.type === 'linear') return inv.map((x) => x / scaling.factor);
  // llama3: long wavelengths are slowed by `factor`, short ones kept, the band in between interpolated
  const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: oldCtx } = scaling;
  const lowFreqWavelen = oldCtx / lo, highFreqWavelen = oldCtx / hi;
  return inv.map((x) => {
    const wavelen = f((2 * Math.PI) / x);
    const scaled = wavelen > lowFreqWavelen ? f(x / factor) : x;
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    if (!isMedium) return scaled;
    const smooth = f((oldCtx / wavelen - lo) / (hi - lo));
    return f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled);
  });
}

/**
 * Full-width cos/sin tables (HF's `emb = cat(freqs, freqs)`) for positions (N rows of T), float32 like HF's
 * rotary embedding: (T, D) when one row of positions is shared, else (B, T, D).
 */
function ropeTables(invFreq: Float32Array, positions: ArrayLike<number | bigint>, rows: number, T: number): { cos: Tensor; sin: Tensor } {
  const half = invFreq.length, D = 2 * half;
  const cos = new Float32Array(rows * T * D), sin = new Float32Array(rows * T * D);
  for (let r = 0; r < rows * T; r++) {
    const p = Number(positions[r]!);
    for (let i = 0; i < half; i++) {
      const a = Math.fround(p * invFreq[i]!);
      const c = Math.cos(a), s = Math.sin(a);
      cos[r * D + i] = c; cos[r * D + half + i] = c;
      sin[r * D + i] = s; sin[r * D + half + i] = s;
    }
  }
  const shape = rows === 1 ? [T, D] : [rows, T, D];
  return { cos: tensor(cos, shape), sin: tensor(sin, shape) };
}

/** Additive (1, 1, Tq, P+Tq) mask hiding keys at or beyond `window` positions back, or null if none is. */
function windowMask(window: number, P: number, Tq: number): Tensor | null {
  const Tk = P + Tq;
  if (P + Tq - 1 - window < 0) return null;
  const m = new Float32Array(Tq * Tk);
  for (let i = 0; i < Tq; i++)
    for (let j = 0; j < Tk; j++) if (j <= P + i - window) m[i * Tk + j] = FINFO_MIN;
  return tensor(m, [1, 1, Tq, Tk]);
}

class LlamaAttention extends Module {
  q: Linear; k: Linear; v: Linear; o: Linear; prefixSite: PrefixSite;
  constructor(readonly cfg: LlamaConfig, index = 0) {
    super();
    const { hiddenSize: C, numHeads: H, numKvHeads: Hkv, headDim: D } = cfg;
    this.prefixSite = new PrefixSite(this, index);
    this.q = this.registerModule('q_proj', new Linear(C, H * D, { bias: cfg.qkvBias }));
    this.k = this.registerModule('k_proj', new Linear(C, Hkv * D, { bias: cfg.qkvBias }));
    this.v = this.registerModule('v_proj', new Linear(C, Hkv * D, { bias: cfg.qkvBias }));
    this.o = this.registerModule('o_proj', new Linear(H * D, C, { bias: cfg.oBias }));
    this.q.site = 'attn.q'; this.k.site = 'attn.k'; this.v.site = 'attn.v'; this.o.site = 'attn.o';
  }
  /**
   * h (B, T, C) → output and the full keys/values (B, Hkv, P+T, D), keys after RoPE (what HF caches).
   * Attention dropout (`attention_dropout`, 0 in every released LLaMA/Mistral/Qwen2 config) applies in training.
   */
  forward(h: Tensor, rot: { cos: Tensor; sin: Tensor }, keepKeys: Tensor | null, mask: Tensor | null,
    past: { k: Tensor; v: Tensor } | null): { out: Tensor; k: Tensor; v: Tensor } {
    const { numHeads: H, numKvHeads: Hkv } = this.cfg;
    // a Parallel adapter block may have replicated the batch in one projection: align q/k/v, the input and the mask
    const [qh, kh, vh] = alignBatch(this.q.forward(h), this.k.forward(h), this.v.forward(h)) as [Tensor, Tensor, Tensor];
    const Bq = qh.shape[0]!;
    h = rowsTo(h, Bq)!;
    keepKeys = rowsTo(keepKeys, Bq);
    // per-row rotary tables (explicit positionIds) follow the replicated batch too
    const cos = rot.cos.ndim === 3 ? rowsTo(rot.cos, Bq)! : rot.cos, sin = rot.sin.ndim === 3 ? rowsTo(rot.sin, Bq)! : rot.sin;
    if (past && past.k.shape[0] !== Bq)
      throw new ShapeError(`${this.cfg.modelType}: cached keys have batch ${past.k.shape[0]} but this step has ${Bq} rows (a Parallel block replicated the batch: generate decodes Parallel branches one at a time)`);
    let q = ops.rope(splitHeads(qh, H), cos, sin);
    let k = ops.rope(splitHeads(kh, Hkv), cos, sin);
    let v = ops.contiguous(splitHeads(vh, Hkv));
    if (past) {
      k = ops.concat([past.k, k], 2);
      v = ops.concat([past.v, v], 2);
    }
    const pre = this.prefixSite.kv(h.shape[0]!, this.training, h);
    if (!pre) {
      // GQA: the kernel maps query head h to key/value head h / (H / Hkv), like HF's repeat_kv
      const ctx = ops.scaledDotProductAttention(q, k, v, { isCausal: true, keyPaddingMask: onDevice(keepKeys, q.device), mask,
        dropoutP: this.training ? this.cfg.attnDropout : 0 });
      return { out: this.o.forward(mergeHeads(ctx)), k, v };
    }
    if (past && pre.k.shape[0] !== q.shape[0])
      throw new ShapeError(`${this.cfg.modelType}: cached keys have batch ${past.k.shape[0]} but a Parallel block of prefixes replicates this step to ${pre.k.shape[0]} rows (generate decodes Parallel branches one at a time)`);
    [q, k, v, keepKeys] = followPrefix(pre, q, k, v, keepKeys);
    if (mask && mask.shape[0]! > 1) mask = rowsTo(mask, q.shape[0]!);
    // Prefix tuning: the Python library prepends prefixes after repeat_kv, so they have all H heads; the
    // keys/values are repeated to H heads here and the prefix positions are always attended.
    const B = q.shape[0]!, P = pre.k.shape[2]!;
    const rep = (x: Tensor) => {
      if (H === Hkv) return x;
      const [b, hk, t, d] = x.shape as [number, number, number, number];
      return ops.reshape(ops.expand(ops.unsqueeze(x, 2), [b, hk, H / hk, t, d]), [b, H, t, d]);
    };
    const keep = keepKeys ? ops.concat([ops.full([B, P], 1, { dtype: 'bool', device: keepKeys.device }), keepKeys], 1) : null;
    const m = mask ? ops.concat([ops.zeros([...mask.shape.slice(0, -1), P], { device: mask.device }), mask], -1) : null;
    const ctx = ops.scaledDotProductAttention(q, rep(k), rep(v), { isCausal: true, keyPaddingMask: onDevice(keep, q.device), mask: m, prefixK: pre.k, prefixV: pre.v,
      dropoutP: this.training ? this.cfg.attnDropout : 0 });
    return { out: this.o.forward(mergeHeads(ctx)), k, v };
  }
}

class LlamaMLP extends Module {
  gate: Linear; up: Linear; down: Linear; act: (x: Tensor) => Tensor;
  constructor(cfg: LlamaConfig) {
    super();
    const { hiddenSize: C, intermediateSize: I, mlpBias: bias } = cfg;
    this.gate = this.registerModule('gate_proj', new Linear(C, I, { bias }));
    this.up = this.registerModule('up_proj', new Linear(C, I, { bias }));
    this.down = this.registerModule('down_proj', new Linear(I, C, { bias }));
    this.gate.site = 'ffn.gate'; this.up.site = 'ffn.up'; this.down.site = 'ffn.down';
    this.act = activation(cfg.act);
  }
  /** SwiGLU (Shazeer 2020, https://arxiv.org/abs/2002.05202): down(act(gate(x)) · up(x)). */
  forward(x: Tensor): Tensor {
    // a Parallel LoRA on up_proj replicates the batch there only: the gate follows
    const [g, u] = alignBatch(this.gate.forward(x), this.up.forward(x)) as [Tensor, Tensor];
    // the wide intermediates go once used; the tape keeps what its backward needs (see feedForward in common.ts)
    const a = this.act(g);
    if (a !== g) g.dispose();
    const m = ops.mul(a, u);
    a.dispose();
    u.dispose();
    const y = this.down.forward(m);
    if (y !== m) m.dispose();
    return y;
  }
}

export class LlamaDecoderLayer extends Module {
  attn: LlamaAttention; mlp: LlamaMLP; ln1: RMSNorm; ln2: RMSNorm;
  attnSite: BottleneckSite; ffnSite: BottleneckSite;
  constructor(cfg: LlamaConfig, index = 0) {
    super();
    this.attn = this.registerModule('self_attn', new LlamaAttention(cfg, index));
    this.mlp = this.registerModule('mlp', new LlamaMLP(cfg));
    this.ln1 = this.registerModule('input_layernorm', new RMSNorm(cfg.hiddenSize, cfg.eps));
    this.ln2 = this.registerModule('post_attention_layernorm', new RMSNorm(cfg.hiddenSize, cfg.eps));
    this.attnSite = new BottleneckSite(this.registerModule('attention_adapters', new Module()), index, 'mh');
    this.ffnSite = new BottleneckSite(this.registerModule('output_adapters', new Module()), index, 'output');
    this.reftSite = new ReftSite(this, index);
  }
  reftSite: ReftSite;
  forward(h: Tensor, rot: { cos: Tensor; sin: Tensor }, keepKeys: Tensor | null, mask: Tensor | null,
    past: { k: Tensor; v: Tensor } | null): { h: Tensor; k: Tensor; v: Tensor } {
    const a = this.attn.forward(this.ln1.forward(h), rot, keepKeys, mask, past);
    // (the bottleneck sites align a residual that lags behind a batch a Parallel block replicated)
    const h1 = this.attnSite.forward(a.out, h, null);
    return { h: this.reftSite.apply(this.ffnSite.forward(this.mlp.forward(this.ln2.forward(h1)), h1, null), this.training), k: a.k, v: a.v };
  }
}

/** The decoder (HF `LlamaModel` / `MistralModel` / `Qwen2Model`); parameter names without `model.`. */
export class LlamaModel extends Module {
  wordEmbedding(): Embedding {
    return this.embed;
  }
  /** Recompute each layer in the backward pass instead of keeping its activations (lib/autograd/checkpoint.ts). */
  gradientCheckpointing = false;
  embed: Embedding; layers: LlamaDecoderLayer[] = []; norm: RMSNorm;
  readonly invFreq: Float32Array;
  constructor(readonly cfg: LlamaConfig) {
    super();
    if (cfg.numHeads % cfg.numKvHeads)
      throw new ValueError(`config.json: num_attention_heads (${cfg.numHeads}) must be a multiple of num_key_value_heads (${cfg.numKvHeads})`);
    if (cfg.headDim % 2) throw new ValueError(`config.json: head_dim must be even for rotary embeddings, got ${cfg.headDim}`);
    this.embed = this.registerModule('embed_tokens', new Embedding(cfg.vocabSize, cfg.hiddenSize));
    const list = this.registerModule('layers', new Module());
    for (let i = 0; i < cfg.numLayers; i++) this.layers.push(list.registerModule(String(i), new LlamaDecoderLayer(cfg, i)));
    this.norm = this.registerModule('norm', new RMSNorm(cfg.hiddenSize, cfg.eps));
    this.invFreq = ropeInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
    this.invertible = this.registerModule('invertible_adapters', new InvertibleAdapters());
  }
  inputEmbeddings(): Tensor {
    return this.embed.weight;
  }
  hiddenSize(): number {
    return this.cfg.hiddenSize;
  }
  /** Hook sites. As in the Python library, `intermediate_lora` wraps mlp.down_proj and `output_lora` mlp.up_proj. */
  adapterLayers(): LayerSites[] {
    return this.layers.map((l, i) => ({ index: i, q: l.attn.q, k: l.attn.k, v: l.attn.v, intermediate: l.mlp.down, output: l.mlp.up,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, prefix: l.attn.prefixSite, reft: l.reftSite }));
  }
  prefixes!: PrefixTuningPool;
  invertible!: InvertibleAdapters;
  invertibleAdapters(): InvertibleAdapters {
    return this.invertible;
  }
  prefixPool(): PrefixTuningPool {
    return this.prefixes;
  }
  numHeads(): number {
    return this.cfg.numHeads;
  }
  supportsParallel(): boolean {
    return true;
  }
  /**
   * inputIds (B, T); attentionMask (B, P+T) over cached and new tokens; positionIds (B, T), default
   * P..P+T-1 (HF's cache_position; HF's generate passes cumsum(mask) − 1 instead, see generate.ts);
   * pastKeyValues from a previous call with useCache.
   */
  forward(input: ForwardInput): ModelOutput {
    return scope(() => {
      const ids = asIds(input.inputIds, 'inputIds').t;
      if (!ids) throw new ValueError(`${this.cfg.modelType} forward needs inputIds`);
      const [B, T] = ids.shape as [number, number];
      const past = input.pastKeyValues ?? null;
      const P = past?.length ?? 0;
      if (past && past.layers.length !== this.layers.length)
        throw new ValueError(`${this.cfg.modelType} forward: pastKeyValues has ${past.layers.length} layers, the model ${this.layers.length}`);
      const mask = onDevice(asIds(input.attentionMask, 'attentionMask').t, 'cpu');  // masks are combined on the host
      if (mask && (mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== P + T))
        throw new ShapeError(`${this.cfg.modelType} forward: attentionMask [${mask.shape}] must be [B, past + T] = [${B}, ${P + T}]`);
      const keepKeys = keepMask(mask);

      const dev = this.embed.weight.device;
      let h = this.invertible.apply(this.embed.forward(onDevice(ids, dev)));
      const pos = asIds(input.positionIds, 'positionIds').t;
      if (pos && pos.shape.join() !== `${B},${T}` && pos.shape.join() !== `1,${T}`)
        throw new ShapeError(`${this.cfg.modelType} forward: positionIds [${pos.shape}] must be [B, T] = [${B}, ${T}]`);
      const rot = pos
        ? ropeTables(this.invFreq, ops.cast(pos, 'i64').toArray() as BigInt64Array, pos.shape[0]!, T)
        : ropeTables(this.invFreq, Array.from({ length: T }, (_, i) => P + i), 1, T);
      rot.cos = onDevice(rot.cos, dev);  // host-built tables go where the model is
      rot.sin = onDevice(rot.sin, dev);
      if (h.dtype !== 'f32') {
        // HF casts cos/sin to the activations' dtype
        rot.cos = ops.cast(rot.cos, h.dtype);
        rot.sin = ops.cast(rot.sin, h.dtype);
      }
      // one additive window mask per distinct window size, shared by the layers that use it
      const masks = new Map<number, Tensor | null>();
      for (const w of this.cfg.windows)
        if (w !== null && !masks.has(w)) {
          const m = onDevice(windowMask(w, P, T), dev);
          masks.set(w, m && h.dtype !== 'f32' ? ops.cast(m, h.dtype) : m);
        }

      const hidden: Tensor[] = [];
      const cache: KVCache['layers'] = [];
      this.layers.forEach((layer, i) => {
        if (input.outputHiddenStates) hidden.push(h);
        const w = this.cfg.windows[i]!;
        if (this.gradientCheckpointing && !input.useCache && !past) {
          h = checkpoint((x) => layer.forward(x, rot, keepKeys, w === null ? null : masks.get(w)!, null).h, h, layer.parameters(),
            [keepKeys, rot.cos, rot.sin, w === null ? null : masks.get(w)]);
          return;
        }
        const r = layer.forward(h, rot, keepKeys, w === null ? null : masks.get(w)!, past ? past.layers[i]! : null);
        h = r.h;
        cache.push({ k: r.k, v: r.v });
      });
      h = this.norm.forward(h);
      const out: ModelOutput = { lastHiddenState: h };
      // HF's hidden_states: the embeddings, each layer's input, and the final output after the norm
      if (input.outputHiddenStates) out.hiddenStates = [...hidden, h];
      if (input.useCache) out.pastKeyValues = { layers: cache, length: P + T };
      return out;
    });
  }
}
