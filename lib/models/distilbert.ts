/**
 * DistilBERT (https://arxiv.org/abs/1910.01108) as HF transformers' DistilBertModel
 * (models/distilbert/modeling_distilbert.py): word + learned (or fixed sinusoidal) position embeddings,
 * no token types, post-LN blocks (sa_layer_norm, output_layer_norm, eps 1e-12), no pooler. HF weight names;
 * hook sites attn.q/k/v/o (q_lin, k_lin, v_lin, out_lin), ffn.up/down (ffn.lin1, ffn.lin2). The Python
 * library's DistilBertAdapterModel keeps the base model under the `distilbert.` prefix.
 */
import { Module } from '../nn/module.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { PrefixSite, PrefixTuningPool } from '../adapters/methods/prefix_tuning.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Dropout, Embedding, LayerNorm, Linear, activation } from '../nn/layers.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { type ForwardInput, type HFConfig, type ModelOutput, alignBatch, asIds, bool, keepMask, mergeHeads, num, onDevice, followPrefix, rowsTo, splitHeads, str } from './common.ts';

export interface DistilBertConfig {
  vocabSize: number;
  dim: number;
  numLayers: number;
  numHeads: number;
  hiddenDim: number;
  maxPositions: number;
  act: string;
  dropout: number;
  /** attention_dropout: on the attention probabilities in training. */
  attnDropout: number;
  padTokenId: number;
  sinusoidal: boolean;
}

export function parseDistilBertConfig(c: HFConfig): DistilBertConfig {
  return {
    vocabSize: num(c, 'vocab_size'),
    dim: num(c, 'dim'),
    numLayers: num(c, 'n_layers'),
    numHeads: num(c, 'n_heads'),
    hiddenDim: num(c, 'hidden_dim'),
    maxPositions: num(c, 'max_position_embeddings', 512),
    act: str(c, 'activation', 'gelu'),
    dropout: num(c, 'dropout', 0.1),
    attnDropout: num(c, 'attention_dropout', 0.1),
    padTokenId: num(c, 'pad_token_id', 0),
    sinusoidal: bool(c, 'sinusoidal_pos_embds', false),
  };
}

// DistilBERT's LayerNorms use a fixed eps (the config has no layer_norm_eps).
const EPS = 1e-12;

/**
 * Fixed sinusoidal position table (HF `create_sinusoidal_embeddings`), stored as `weight` like the
 * nn.Embedding it replaces so checkpoints load unchanged. Not an `Embedding` on purpose: random init
 * (AutoAdapterModel.fromConfig) must leave the table alone, and it is not trained (requires_grad False in HF).
 */
class SinusoidalPositions extends Module {
  constructor(n: number, dim: number) {
    super();
    const data = new Float32Array(n * dim);
    for (let pos = 0; pos < n; pos++)
      for (let j = 0; j < dim; j++) {
        const angle = pos / Math.pow(10000, (2 * Math.floor(j / 2)) / dim);
        data[pos * dim + j] = j % 2 === 0 ? Math.sin(angle) : Math.cos(angle);
      }
    this.registerParameter('weight', tensor(data, [n, dim]))!.requiresGrad = false;
  }
  forward(ids: Tensor): Tensor {
    return ops.embedding(ids, this.param('weight')!);
  }
}

class DistilBertEmbeddings extends Module {
  word: Embedding; pos: Embedding | SinusoidalPositions; ln: LayerNorm; drop: Dropout;
  constructor(cfg: DistilBertConfig) {
    super();
    this.word = this.registerModule('word_embeddings', new Embedding(cfg.vocabSize, cfg.dim));
    this.pos = this.registerModule('position_embeddings',
      cfg.sinusoidal ? new SinusoidalPositions(cfg.maxPositions, cfg.dim) : new Embedding(cfg.maxPositions, cfg.dim));
    this.ln = this.registerModule('LayerNorm', new LayerNorm(cfg.dim, EPS));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
  }
  forward(ids: Tensor, positions: Tensor | null): Tensor {
    const T = ids.shape[1]!;
    const pos = positions ?? ops.unsqueeze(ops.arange(0, T), 0);
    const dev = this.word.weight.device;
    return this.drop.forward(this.ln.forward(ops.add(this.word.forward(onDevice(ids, dev)), this.pos.forward(onDevice(pos, dev)))));
  }
}

export class DistilBertLayer extends Module {
  q: Linear; k: Linear; v: Linear; o: Linear; ln1: LayerNorm; up: Linear; down: Linear; ln2: LayerNorm;
  drop: Dropout; act: (x: Tensor) => Tensor;
  attnSite: BottleneckSite; ffnSite: BottleneckSite; prefixSite: PrefixSite;
  constructor(readonly cfg: DistilBertConfig, readonly index = 0) {
    super();
    const C = cfg.dim;
    const attn = this.registerModule('attention', new Module());
    this.q = attn.registerModule('q_lin', new Linear(C, C));
    this.k = attn.registerModule('k_lin', new Linear(C, C));
    this.v = attn.registerModule('v_lin', new Linear(C, C));
    this.o = attn.registerModule('out_lin', new Linear(C, C));
    this.ln1 = this.registerModule('sa_layer_norm', new LayerNorm(C, EPS));
    const ffn = this.registerModule('ffn', new Module());
    this.up = ffn.registerModule('lin1', new Linear(C, cfg.hiddenDim));
    this.down = ffn.registerModule('lin2', new Linear(cfg.hiddenDim, C));
    // registered (no parameters) so that train()/eval() reach it
    this.drop = ffn.registerModule('dropout', new Dropout(cfg.dropout));
    this.ln2 = this.registerModule('output_layer_norm', new LayerNorm(C, EPS));
    this.q.site = 'attn.q'; this.k.site = 'attn.k'; this.v.site = 'attn.v'; this.o.site = 'attn.o';
    this.up.site = 'ffn.up'; this.down.site = 'ffn.down';
    this.act = activation(cfg.act);
    // adapter sites (Python names): attention_adapters / output_adapters on the layer, prefix under attention
    this.attnSite = new BottleneckSite(this.registerModule('attention_adapters', new Module()), index, 'mh');
    this.ffnSite = new BottleneckSite(this.registerModule('output_adapters', new Module()), index, 'output');
    this.prefixSite = new PrefixSite(attn, index);
    this.reftSite = new ReftSite(this, index);
  }
  reftSite!: ReftSite;
  forward(h: Tensor, keepKeys: Tensor | null): Tensor {
    const H = this.cfg.numHeads;
    // Parallel adapter blocks may have replicated the batch in one projection: align q/k/v, the input and the mask
    // (unlike the Python library, the caller's attention mask is not modified)
    const [qh, kh, vh] = alignBatch(this.q.forward(h), this.k.forward(h), this.v.forward(h)) as [Tensor, Tensor, Tensor];
    let q = splitHeads(qh, H), k = splitHeads(kh, H), v = splitHeads(vh, H);
    let B = qh.shape[0]!;
    h = rowsTo(h, B)!;
    keepKeys = rowsTo(keepKeys, B);
    const pre = this.prefixSite.kv(B, this.training, h);
    [q, k, v, keepKeys, h] = followPrefix(pre, q, k, v, keepKeys, h);
    B = q.shape[0]!;
    const keep = pre && keepKeys ? ops.concat([ops.full([B, pre.k.shape[2]!], 1, { dtype: 'bool', device: keepKeys.device }), keepKeys], 1) : keepKeys;
    const ctx = mergeHeads(ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: onDevice(keep, q.device), prefixK: pre?.k, prefixV: pre?.v,
      dropoutP: this.training ? this.cfg.attnDropout : 0 }));
    // HF applies no dropout to out_lin's output, only inside the FFN (after lin2)
    const a = this.attnSite.forward(this.o.forward(ctx), h, this.ln1);
    const f = this.down.forward(this.act(this.up.forward(a)));
    return this.reftSite.apply(this.ffnSite.forward(this.drop.forward(f), a, this.ln2), this.training);
  }
}

/** The DistilBERT encoder (HF `DistilBertModel`); parameter names without the model prefix. */
export class DistilBertModel extends Module {
  embeddings: DistilBertEmbeddings;
  layers: DistilBertLayer[] = [];
  constructor(readonly cfg: DistilBertConfig) {
    super();
    this.embeddings = this.registerModule('embeddings', new DistilBertEmbeddings(cfg));
    const list = this.registerModule('transformer', new Module()).registerModule('layer', new Module());
    for (let i = 0; i < cfg.numLayers; i++) this.layers.push(list.registerModule(String(i), new DistilBertLayer(cfg, i)));
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool('self'));
  }
  prefixes: PrefixTuningPool;
  inputEmbeddings(): Tensor {
    return this.embeddings.word.weight;
  }
  hiddenSize(): number {
    return this.cfg.dim;
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
  /** Hook sites: LoRA on q/k/v_lin, ffn.lin1 (intermediate), ffn.lin2 (output); bottlenecks on the layer. */
  adapterLayers(): LayerSites[] {
    return this.layers.map((l, i) => ({ index: i, q: l.q, k: l.k, v: l.v, intermediate: l.up, output: l.down,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, prefix: l.prefixSite, reft: l.reftSite }));
  }
  forward(input: ForwardInput): ModelOutput {
    return scope(() => {
      const ids = asIds(input.inputIds, 'inputIds').t;
      if (!ids) throw new Error('DistilBERT forward needs inputIds');
      const keepKeys = keepMask(asIds(input.attentionMask, 'attentionMask').t);
      let h = this.embeddings.forward(ids, asIds(input.positionIds, 'positionIds').t);
      const hidden: Tensor[] = input.outputHiddenStates ? [h] : [];
      for (const layer of this.layers) {
        h = layer.forward(h, keepKeys);
        if (input.outputHiddenStates) hidden.push(h);
      }
      const out: ModelOutput = { lastHiddenState: h };
      if (input.outputHiddenStates) out.hiddenStates = hidden;
      return out;
    });
  }
}
