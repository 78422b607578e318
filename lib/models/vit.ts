/**
 * Vision Transformer (https://arxiv.org/abs/2010.11929) as HF transformers' ViTModel
 * (models/vit/modeling_vit.py): non-overlapping patch projection, a learned [CLS] token and learned
 * absolute positions, pre-LN blocks (layernorm_before / layernorm_after), a final `layernorm` and a
 * tanh pooler on [CLS]. HF weight names; hook sites attn.q/k/v/o, ffn.up/down. The Python library's
 * ViTAdapterModel keeps the base model under the `vit.` prefix. Input: ForwardInput.pixelValues (B, C, H, W).
 */
import { Module } from '../nn/module.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { PrefixSite, PrefixTuningPool } from '../adapters/methods/prefix_tuning.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import { PromptTuningPool } from '../adapters/methods/prompt_tuning.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Dropout, LayerNorm, Linear, activation } from '../nn/layers.ts';
import { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { ShapeError, ValueError } from '../errors.ts';
import { type ForwardInput, type HFConfig, type ModelOutput, alignBatch, asFloat, bool, mergeHeads, num, onDevice, followPrefix, rowsTo, splitHeads, str } from './common.ts';

export interface ViTConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  imageSize: [number, number];
  patchSize: [number, number];
  numChannels: number;
  qkvBias: boolean;
  eps: number;
  act: string;
  dropout: number;
  /** attention_probs_dropout_prob: on the attention probabilities in training. */
  attnDropout: number;
  initStd: number;
  addPooler: boolean;
  poolerSize: number;
  poolerAct: string;
}

/** HF accepts an int or an (h, w) pair for image_size and patch_size. */
function pair(c: HFConfig, key: string, def: number): [number, number] {
  const v = c[key];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0] as number, v[1] as number];
  const n = num(c, key, def);
  return [n, n];
}

export function parseViTConfig(c: HFConfig): ViTConfig {
  const hiddenSize = num(c, 'hidden_size', 768);
  return {
    hiddenSize,
    numLayers: num(c, 'num_hidden_layers', 12),
    numHeads: num(c, 'num_attention_heads', 12),
    intermediateSize: num(c, 'intermediate_size', 3072),
    imageSize: pair(c, 'image_size', 224),
    patchSize: pair(c, 'patch_size', 16),
    numChannels: num(c, 'num_channels', 3),
    qkvBias: bool(c, 'qkv_bias', true),
    eps: num(c, 'layer_norm_eps', 1e-12),
    act: str(c, 'hidden_act', 'gelu'),
    dropout: num(c, 'hidden_dropout_prob', 0),
    attnDropout: num(c, 'attention_probs_dropout_prob', 0),
    initStd: num(c, 'initializer_range', 0.02),
    addPooler: bool(c, 'add_pooling_layer', true),
    poolerSize: num(c, 'pooler_output_size', hiddenSize),
    poolerAct: str(c, 'pooler_act', 'tanh'),
  };
}

/**
 * The Conv2d patch projection (kernel = stride = patch size), computed as a matmul over flattened
 * patches. Keeps Conv2d's parameter layout — weight (C, C_in, p_h, p_w), bias (C) — so the state-dict
 * names and shapes equal HF's `embeddings.patch_embeddings.projection.*`. Deliberately not an nn Linear:
 * its weight is 4-D and it is no adapter hook site.
 */
export class PatchProjection extends Module {
  constructor(readonly inChannels: number, readonly outChannels: number, readonly patch: [number, number], initStd = 0.02) {
    super();
    this.registerParameter('weight', ops.randn([outChannels, inChannels, patch[0], patch[1]], { std: initStd }));
    this.registerParameter('bias', ops.zeros([outChannels]));
  }
  /** pixels (B, C_in, H, W) → (B, N, C), patches in row-major grid order (Conv2d output flatten(2).transpose(1, 2)). */
  forward(pixels: Tensor): Tensor {
    const [B, Cin, H, W] = pixels.shape as [number, number, number, number];
    const [ph, pw] = this.patch;
    const gh = H / ph, gw = W / pw;
    // (B, Cin, gh, ph, gw, pw) → (B, gh, gw, Cin, ph, pw): each patch flattened channel-major like the kernel
    const x = ops.permute(ops.reshape(onDevice(pixels, this.param('weight')!.device), [B, Cin, gh, ph, gw, pw]), [0, 2, 4, 1, 3, 5]);
    const patches = ops.reshape(x, [B, gh * gw, Cin * ph * pw]);
    const w = ops.reshape(this.param('weight')!, [this.outChannels, Cin * ph * pw]);
    return ops.linear(patches, w, this.param('bias'));
  }
}

class ViTEmbeddings extends Module {
  proj: PatchProjection; drop: Dropout;
  constructor(readonly cfg: ViTConfig) {
    super();
    const C = cfg.hiddenSize;
    const n = (cfg.imageSize[0] / cfg.patchSize[0]) * (cfg.imageSize[1] / cfg.patchSize[1]);
    if (!Number.isInteger(n)) throw new ValueError(`ViT: image_size [${cfg.imageSize}] is not a multiple of patch_size [${cfg.patchSize}]`);
    // HF init: truncated normal(0, initializer_range) for cls_token, position_embeddings and the projection
    // weight (±2 absolute bounds, never hit at that std); fromConfig's generic init knows only Linear/Embedding/
    // LayerNorm, so they are drawn at construction from the global generator.
    this.registerParameter('cls_token', ops.randn([1, 1, C], { std: cfg.initStd }));
    this.proj = this.registerModule('patch_embeddings', new Module()).registerModule('projection', new PatchProjection(cfg.numChannels, C, cfg.patchSize, cfg.initStd));
    this.registerParameter('position_embeddings', ops.randn([1, n + 1, C], { std: cfg.initStd }));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
  }
  forward(pixels: Tensor): Tensor {
    const { imageSize, numChannels } = this.cfg;
    const [B, Cin, H, W] = pixels.shape as [number, number, number, number];
    if (pixels.ndim !== 4 || Cin !== numChannels)
      throw new ShapeError(`ViT: pixelValues must be (B, ${numChannels}, H, W), got [${pixels.shape}]`);
    // HF refuses other sizes unless interpolate_pos_encoding, which is not implemented here
    if (H !== imageSize[0] || W !== imageSize[1])
      throw new ShapeError(`ViT: input image size (${H}*${W}) doesn't match model (${imageSize[0]}*${imageSize[1]})`);
    const patches = this.proj.forward(pixels);
    const C = this.cfg.hiddenSize;
    const cls = ops.expand(this.param('cls_token')!, [B, 1, C]);
    const h = ops.add(ops.concat([cls, patches], 1), this.param('position_embeddings')!);
    return this.drop.forward(h);
  }
}

export class ViTLayer extends Module {
  q: Linear; k: Linear; v: Linear; o: Linear; ln1: LayerNorm; up: Linear; down: Linear; ln2: LayerNorm;
  dropAttn: Dropout; dropOut: Dropout; act: (x: Tensor) => Tensor;
  attnSite: BottleneckSite; ffnSite: BottleneckSite; prefixSite: PrefixSite;
  constructor(readonly cfg: ViTConfig, readonly index = 0) {
    super();
    const C = cfg.hiddenSize;
    this.ln1 = this.registerModule('layernorm_before', new LayerNorm(C, cfg.eps));
    const attn = this.registerModule('attention', new Module());
    const self = attn.registerModule('attention', new Module());
    this.q = self.registerModule('query', new Linear(C, C, { bias: cfg.qkvBias }));
    this.k = self.registerModule('key', new Linear(C, C, { bias: cfg.qkvBias }));
    this.v = self.registerModule('value', new Linear(C, C, { bias: cfg.qkvBias }));
    const attnOut = attn.registerModule('output', new Module());
    this.o = attnOut.registerModule('dense', new Linear(C, C));
    // dropouts are registered (no parameters) so that train()/eval() reach them
    this.dropAttn = attnOut.registerModule('dropout', new Dropout(cfg.dropout));
    this.ln2 = this.registerModule('layernorm_after', new LayerNorm(C, cfg.eps));
    this.up = this.registerModule('intermediate', new Module()).registerModule('dense', new Linear(C, cfg.intermediateSize));
    const out = this.registerModule('output', new Module());
    this.down = out.registerModule('dense', new Linear(cfg.intermediateSize, C));
    this.dropOut = out.registerModule('dropout', new Dropout(cfg.dropout));
    this.q.site = 'attn.q'; this.k.site = 'attn.k'; this.v.site = 'attn.v'; this.o.site = 'attn.o';
    this.up.site = 'ffn.up'; this.down.site = 'ffn.down';
    this.act = activation(cfg.act);
    // adapter sites (Python names): `attention_adapters` on the layer, `output.output_adapters` after the FFN
    // (pre-LN: called without a layer norm), prefix under attention.attention
    this.attnSite = new BottleneckSite(this.registerModule('attention_adapters', new Module()), index, 'mh');
    this.ffnSite = new BottleneckSite(out.registerModule('output_adapters', new Module()), index, 'output');
    this.prefixSite = new PrefixSite(self, index);
    this.reftSite = new ReftSite(this, index);
  }
  reftSite!: ReftSite;
  forward(h: Tensor): Tensor {
    const H = this.cfg.numHeads;
    const x = this.ln1.forward(h);
    // Parallel adapter blocks may have replicated the batch in one projection: align q/k/v (the bottleneck sites
    // align the residuals themselves)
    const [qh, kh, vh] = alignBatch(this.q.forward(x), this.k.forward(x), this.v.forward(x)) as [Tensor, Tensor, Tensor];
    let q = splitHeads(qh, H), k = splitHeads(kh, H), v = splitHeads(vh, H);
    const B = qh.shape[0]!;
    const pre = this.prefixSite.kv(B, this.training, rowsTo(x, B)!);
    [q, k, v] = followPrefix(pre, q, k, v);
    const ctx = mergeHeads(ops.scaledDotProductAttention(q, k, v, { prefixK: pre?.k, prefixV: pre?.v, dropoutP: this.training ? this.cfg.attnDropout : 0 }));
    const a = this.attnSite.forward(this.dropAttn.forward(this.o.forward(ctx)), h, null);
    const f = this.down.forward(this.act(this.up.forward(this.ln2.forward(a))));
    return this.reftSite.apply(this.ffnSite.forward(this.dropOut.forward(f), a, null), this.training);
  }
}

/** The ViT encoder (HF `ViTModel`); parameter names without the model prefix. */
export class ViTModel extends Module {
  prefixes: PrefixTuningPool;
  hiddenSize(): number {
    return this.cfg.hiddenSize;
  }
  numHeads(): number {
    return this.cfg.numHeads;
  }
  supportsParallel(): boolean {
    return true;
  }
  prefixPool(): PrefixTuningPool {
    return this.prefixes;
  }
  prompts!: PromptTuningPool;
  promptPool(): PromptTuningPool {
    return this.prompts;
  }
  /** Hook sites: LoRA on query/key/value, intermediate.dense, output.dense; two bottleneck sites; prefix. */
  adapterLayers(): LayerSites[] {
    return this.layers.map((l, i) => ({ index: i, q: l.q, k: l.k, v: l.v, intermediate: l.up, output: l.down,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, prefix: l.prefixSite, reft: l.reftSite }));
  }
  embeddings: ViTEmbeddings;
  layers: ViTLayer[] = [];
  layernorm: LayerNorm;
  pooler: Linear | null = null;
  poolerAct: (x: Tensor) => Tensor;
  constructor(readonly cfg: ViTConfig) {
    super();
    this.embeddings = this.registerModule('embeddings', new ViTEmbeddings(cfg));
    const list = this.registerModule('encoder', new Module()).registerModule('layer', new Module());
    for (let i = 0; i < cfg.numLayers; i++) this.layers.push(list.registerModule(String(i), new ViTLayer(cfg, i)));
    this.layernorm = this.registerModule('layernorm', new LayerNorm(cfg.hiddenSize, cfg.eps));
    if (cfg.addPooler) this.pooler = this.registerModule('pooler', new Module()).registerModule('dense', new Linear(cfg.hiddenSize, cfg.poolerSize));
    this.poolerAct = activation(cfg.poolerAct);
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
    this.prompts = this.registerModule('prompt_tuning', new PromptTuningPool());
  }
  forward(input: ForwardInput): ModelOutput {
    return scope(() => {
      const pixels = asFloat(input.pixelValues, 'pixelValues').t;
      if (!pixels) throw new ValueError('ViT forward needs pixelValues (B, C, H, W)');
      let h = this.embeddings.forward(pixels);
      // prompt tuning prepends its vectors before CLS, as the Python library does (CLS moves back)
      ({ h } = this.prompts.apply(h, null));
      // hidden_states are the encoder's: embeddings and each layer's output, before the final layernorm
      const hidden: Tensor[] = input.outputHiddenStates ? [h] : [];
      for (const layer of this.layers) {
        h = layer.forward(h);
        if (input.outputHiddenStates) hidden.push(h);
      }
      const last = this.layernorm.forward(h);
      const out: ModelOutput = { lastHiddenState: last };
      if (input.outputHiddenStates) out.hiddenStates = hidden;
      if (this.pooler) out.pooledOutput = this.poolerAct(this.pooler.forward(ops.slice(last, 1, 0, 1).squeeze(1)));
      return out;
    });
  }
}
