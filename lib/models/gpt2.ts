/**
 * GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") as in HF transformers'
 * GPT2Model (src/transformers/models/gpt2/modeling_gpt2.py): pre-LN decoder, learned absolute positions,
 * fused q/k/v projection `c_attn` stored in the Conv1D layout (weight (in, out)), final `ln_f`.
 * HF weight names (`wte`, `h.{i}.attn.c_attn`, ...); hook sites attn.qkv, attn.o, ffn.up, ffn.down.
 * Supports a key/value cache for generation (ForwardInput.pastKeyValues / useCache).
 */
import { Module } from '../nn/module.ts';
import { checkpoint } from '../autograd/checkpoint.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { PrefixSite, PrefixTuningPool } from '../adapters/methods/prefix_tuning.ts';
import { InvertibleAdapters } from '../adapters/methods/invertible.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Dropout, Embedding, LayerNorm, Linear, activation } from '../nn/layers.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { ShapeError, ValueError } from '../errors.ts';
import {
  type ForwardInput, type HFConfig, type KVCache, type ModelOutput, asIds, bool, feedForward, keepMask, mergeHeads, num, onDevice, splitHeads, str, followPrefix, rowsTo } from './common.ts';

export interface GPT2Config {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** MLP width (`n_inner`, default 4·n_embd). */
  innerSize: number;
  maxPositions: number;
  eps: number;
  act: string;
  residDropout: number;
  embdDropout: number;
  attnDropout: number;
  /** Scale scores by 1/√D (`scale_attn_weights`, default true). */
  scaleAttnWeights: boolean;
  /** Also divide scores by (layer index + 1) (`scale_attn_by_inverse_layer_idx`). */
  scaleByInverseLayerIdx: boolean;
}

/** GPT-2 config keys; the generic aliases (hidden_size, ...) of HF's attribute_map are accepted too. */
export function parseGPT2Config(c: HFConfig): GPT2Config {
  const pick = (a: string, b: string, def?: number) => num(c, c[a] !== undefined && c[a] !== null ? a : b, def);
  const C = pick('n_embd', 'hidden_size', 768);
  const inner = c.n_inner;
  return {
    vocabSize: num(c, 'vocab_size', 50257),
    hiddenSize: C,
    numLayers: pick('n_layer', 'num_hidden_layers', 12),
    numHeads: pick('n_head', 'num_attention_heads', 12),
    innerSize: typeof inner === 'number' ? inner : 4 * C,
    maxPositions: pick('n_positions', 'max_position_embeddings', 1024),
    eps: num(c, 'layer_norm_epsilon', 1e-5),
    act: str(c, 'activation_function', 'gelu_new'),
    residDropout: num(c, 'resid_pdrop', 0.1),
    embdDropout: num(c, 'embd_pdrop', 0.1),
    attnDropout: num(c, 'attn_pdrop', 0.1),
    scaleAttnWeights: bool(c, 'scale_attn_weights', true),
    scaleByInverseLayerIdx: bool(c, 'scale_attn_by_inverse_layer_idx', false),
  };
}

class GPT2Attention extends Module {
  qkv: Linear; o: Linear; attnDrop: Dropout; residDrop: Dropout; prefixSite: PrefixSite;
  constructor(readonly cfg: GPT2Config, readonly layerIdx: number) {
    super();
    const C = cfg.hiddenSize;
    this.qkv = this.registerModule('c_attn', new Linear(C, 3 * C, { layout: 'conv1d' }));
    this.o = this.registerModule('c_proj', new Linear(C, C, { layout: 'conv1d' }));
    this.attnDrop = this.registerModule('attn_dropout', new Dropout(cfg.attnDropout));
    this.residDrop = this.registerModule('resid_dropout', new Dropout(cfg.residDropout));
    this.qkv.site = 'attn.qkv';
    this.o.site = 'attn.o';
    this.prefixSite = new PrefixSite(this, layerIdx);
  }
  /** h (B, T, C); past keys/values (B, H, P, D) or null. Returns the output and the full keys/values. */
  forward(h: Tensor, keepKeys: Tensor | null, past: { k: Tensor; v: Tensor } | null): { out: Tensor; k: Tensor; v: Tensor } {
    const { hiddenSize: C, numHeads: H } = this.cfg;
    const [qh, kh, vh] = ops.split(this.qkv.forward(h), C, -1) as [Tensor, Tensor, Tensor];
    // a Parallel adapter block may have replicated the batch inside c_attn: the mask follows
    keepKeys = rowsTo(keepKeys, qh.shape[0]!);
    let q = splitHeads(qh, H);
    // contiguous keys/values: the kernel needs them so anyway, and a cache must not pin the fused qkv output
    let k = splitHeads(kh, H), v = splitHeads(vh, H);
    if (past) {
      k = ops.concat([past.k, k], 2);
      v = ops.concat([past.v, v], 2);
    } else {
      k = ops.contiguous(k);
      v = ops.contiguous(v);
    }
    let scale = this.cfg.scaleAttnWeights ? 1 / Math.sqrt(C / H) : 1;
    if (this.cfg.scaleByInverseLayerIdx) scale /= this.layerIdx + 1;
    const pre = this.prefixSite.kv(qh.shape[0]!, this.training, rowsTo(h, qh.shape[0]!)!);
    if (pre && past && pre.k.shape[0] !== q.shape[0])
      throw new ShapeError(`gpt2: cached keys have batch ${past.k.shape[0]} but a Parallel block of prefixes replicates this step to ${pre.k.shape[0]} rows (generate decodes Parallel branches one at a time)`);
    [q, k, v, keepKeys] = followPrefix(pre, q, k, v, keepKeys);
    // prefix positions are always attended: the key-padding mask gets leading ones for them
    const keep = pre && keepKeys ? ops.concat([ops.full([q.shape[0]!, pre.k.shape[2]!], 1, { dtype: 'bool', device: keepKeys.device }), keepKeys], 1) : keepKeys;
    // (attn_dropout on the probabilities in training: scaledDotProductAttention's explicit path)
    const ctx = ops.scaledDotProductAttention(q, k, v, { isCausal: true, keyPaddingMask: onDevice(keep, q.device), scale, prefixK: pre?.k, prefixV: pre?.v,
      dropoutP: this.attnDrop.training ? this.cfg.attnDropout : 0 });
    return { out: this.residDrop.forward(this.o.forward(mergeHeads(ctx))), k, v };
  }
}

class GPT2MLP extends Module {
  up: Linear; down: Linear; drop: Dropout; act: (x: Tensor) => Tensor;
  constructor(cfg: GPT2Config) {
    super();
    this.up = this.registerModule('c_fc', new Linear(cfg.hiddenSize, cfg.innerSize, { layout: 'conv1d' }));
    this.down = this.registerModule('c_proj', new Linear(cfg.innerSize, cfg.hiddenSize, { layout: 'conv1d' }));
    this.drop = this.registerModule('dropout', new Dropout(cfg.residDropout));
    this.up.site = 'ffn.up';
    this.down.site = 'ffn.down';
    this.act = activation(cfg.act);
  }
  forward(x: Tensor): Tensor {
    return this.drop.forward(feedForward(x, this.up, this.act, this.down));
  }
}

export class GPT2Block extends Module {
  ln1: LayerNorm; attn: GPT2Attention; ln2: LayerNorm; mlp: GPT2MLP;
  attnSite: BottleneckSite; ffnSite: BottleneckSite;
  constructor(cfg: GPT2Config, layerIdx: number) {
    super();
    this.ln1 = this.registerModule('ln_1', new LayerNorm(cfg.hiddenSize, cfg.eps));
    this.attn = this.registerModule('attn', new GPT2Attention(cfg, layerIdx));
    this.ln2 = this.registerModule('ln_2', new LayerNorm(cfg.hiddenSize, cfg.eps));
    this.mlp = this.registerModule('mlp', new GPT2MLP(cfg));
    // bottleneck sites `attention_adapters.adapters.*` / `output_adapters.adapters.*` (pre-LN: no layer norm)
    this.attnSite = new BottleneckSite(this.registerModule('attention_adapters', new Module()), layerIdx, 'mh');
    this.ffnSite = new BottleneckSite(this.registerModule('output_adapters', new Module()), layerIdx, 'output');
    this.reftSite = new ReftSite(this, layerIdx);
  }
  reftSite: ReftSite;
  forward(h: Tensor, keepKeys: Tensor | null, past: { k: Tensor; v: Tensor } | null): { h: Tensor; k: Tensor; v: Tensor } {
    const a = this.attn.forward(this.ln1.forward(h), keepKeys, past);
    const h1 = this.attnSite.forward(a.out, h, null);
    return { h: this.reftSite.apply(this.ffnSite.forward(this.mlp.forward(this.ln2.forward(h1)), h1, null), this.training), k: a.k, v: a.v };
  }
}

/** The GPT-2 decoder (HF `GPT2Model`); parameter names without the `transformer.` prefix. */
export class GPT2Model extends Module {
  wordEmbedding(): Embedding {
    return this.wte;
  }
  /** Recompute each layer in the backward pass instead of keeping its activations (lib/autograd/checkpoint.ts). */
  gradientCheckpointing = false;
  wte: Embedding; wpe: Embedding; drop: Dropout; layers: GPT2Block[] = []; lnF: LayerNorm;
  constructor(readonly cfg: GPT2Config) {
    super();
    this.wte = this.registerModule('wte', new Embedding(cfg.vocabSize, cfg.hiddenSize));
    this.wpe = this.registerModule('wpe', new Embedding(cfg.maxPositions, cfg.hiddenSize));
    this.drop = this.registerModule('drop', new Dropout(cfg.embdDropout));
    const list = this.registerModule('h', new Module());
    for (let i = 0; i < cfg.numLayers; i++) this.layers.push(list.registerModule(String(i), new GPT2Block(cfg, i)));
    this.lnF = this.registerModule('ln_f', new LayerNorm(cfg.hiddenSize, cfg.eps));
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
    this.invertible = this.registerModule('invertible_adapters', new InvertibleAdapters());
  }
  invertible: InvertibleAdapters;
  invertibleAdapters(): InvertibleAdapters {
    return this.invertible;
  }
  prefixes: PrefixTuningPool;
  prefixPool(): PrefixTuningPool {
    return this.prefixes;
  }
  numHeads(): number {
    return this.cfg.numHeads;
  }
  supportsParallel(): boolean {
    return true;
  }
  inputEmbeddings(): Tensor {
    return this.wte.weight;
  }
  hiddenSize(): number {
    return this.cfg.hiddenSize;
  }
  /** Hook sites: LoRA on the fused c_attn (q/k/v thirds), mlp.c_fc (intermediate), mlp.c_proj (output). */
  adapterLayers(): LayerSites[] {
    return this.layers.map((l, i) => ({ index: i, qkv: l.attn.qkv, intermediate: l.mlp.up, output: l.mlp.down,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, prefix: l.attn.prefixSite, reft: l.reftSite }));
  }
  /**
   * inputIds (B, T); attentionMask (B, P+T) over cached and new tokens; positionIds (B, T), default
   * P..P+T-1 (HF uses arange even for padded rows); pastKeyValues from a previous call with useCache.
   */
  forward(input: ForwardInput): ModelOutput {
    return scope(() => {
      const ids = asIds(input.inputIds, 'inputIds').t;
      if (!ids) throw new ValueError('GPT-2 forward needs inputIds');
      const [B, T] = ids.shape as [number, number];
      const past = input.pastKeyValues ?? null;
      const P = past?.length ?? 0;
      if (past && past.layers.length !== this.layers.length)
        throw new ValueError(`GPT-2 forward: pastKeyValues has ${past.layers.length} layers, the model ${this.layers.length}`);
      if (P + T > this.cfg.maxPositions)
        throw new ValueError(`GPT-2 forward: ${P + T} positions exceed n_positions = ${this.cfg.maxPositions}`);
      const mask = onDevice(asIds(input.attentionMask, 'attentionMask').t, 'cpu');  // masks are combined on the host
      if (mask && (mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== P + T))
        throw new ShapeError(`GPT-2 forward: attentionMask [${mask.shape}] must be [B, past + T] = [${B}, ${P + T}]`);
      const pos = asIds(input.positionIds, 'positionIds').t ?? ops.unsqueeze(ops.arange(P, P + T), 0);
      const keepKeys = keepMask(mask);
      const dev = this.wte.weight.device;
      let h = this.invertible.apply(this.drop.forward(ops.add(this.wte.forward(onDevice(ids, dev)), this.wpe.forward(onDevice(pos, dev)))));
      const hidden: Tensor[] = [];
      const cache: KVCache['layers'] = [];
      this.layers.forEach((layer, i) => {
        if (input.outputHiddenStates) hidden.push(h);
        if (this.gradientCheckpointing && !input.useCache && !past) {
          h = checkpoint((x) => layer.forward(x, keepKeys, null).h, h, layer.parameters(), [keepKeys]);
          return;
        }
        const r = layer.forward(h, keepKeys, past ? past.layers[i]! : null);
        h = r.h;
        cache.push({ k: r.k, v: r.v });
      });
      h = this.lnF.forward(h);
      const out: ModelOutput = { lastHiddenState: h };
      // HF's hidden_states: the embeddings, each block's input, and the final output after ln_f
      if (input.outputHiddenStates) out.hiddenStates = [...hidden, h];
      if (input.useCache) out.pastKeyValues = { layers: cache, length: P + T };
      return out;
    });
  }
}
