/**
 * BERT (https://arxiv.org/abs/1810.04805) as in HF transformers' BertModel: post-LN encoder, learned
 * absolute positions, token types, optional tanh pooler. HF weight names; hook sites attn.q/k/v/o,
 * ffn.up/down. RoBERTa / XLM-R reuse this file with their position-id rule (see roberta.ts).
 */
import { Module } from '../nn/module.ts';
import { checkpoint } from '../autograd/checkpoint.ts';
import { Dropout, Embedding, LayerNorm, Linear, activation } from '../nn/layers.ts';
import { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { type ForwardInput, type HFConfig, type ModelOutput, alignBatch, asIds, feedForward, bool, keepMask, mergeHeads, num, onDevice, followPrefix, rowsTo, splitHeads, str } from './common.ts';
import { scope } from '../scope.ts';
import { ValueError } from '../errors.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { PrefixSite, PrefixTuningPool } from '../adapters/methods/prefix_tuning.ts';
import { PromptTuningPool } from '../adapters/methods/prompt_tuning.ts';
import { InvertibleAdapters } from '../adapters/methods/invertible.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import type { LayerSites } from '../adapters/context.ts';
import { tensor } from '../tensor.ts';

export interface BertConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
  eps: number;
  act: string;
  dropout: number;
  attnDropout: number;
  padTokenId: number;
  /** 'absolute' (BERT) or 'roberta' (positions counted over non-pad tokens, starting at pad + 1). */
  positionRule: 'absolute' | 'roberta';
  addPooler: boolean;
  isDecoder: boolean;
}

export function parseBertConfig(c: HFConfig, rule: 'absolute' | 'roberta' = 'absolute'): BertConfig {
  const pet = str(c, 'position_embedding_type', 'absolute');
  if (pet !== 'absolute') throw new ValueError(`config.json: position_embedding_type '${pet}' is not supported (only 'absolute')`);
  if (bool(c, 'add_cross_attention', false)) throw new ValueError('config.json: add_cross_attention (a BERT decoder with cross-attention) is not supported');
  return {
    vocabSize: num(c, 'vocab_size'),
    hiddenSize: num(c, 'hidden_size'),
    numLayers: num(c, 'num_hidden_layers'),
    numHeads: num(c, 'num_attention_heads'),
    intermediateSize: num(c, 'intermediate_size'),
    maxPositions: num(c, 'max_position_embeddings', 512),
    typeVocabSize: num(c, 'type_vocab_size', 2),
    eps: num(c, 'layer_norm_eps', 1e-12),
    act: str(c, 'hidden_act', 'gelu'),
    dropout: num(c, 'hidden_dropout_prob', 0.1),
    attnDropout: num(c, 'attention_probs_dropout_prob', 0.1),
    // (RobertaConfig's default pad_token_id is 1, BertConfig's 0)
    padTokenId: num(c, 'pad_token_id', rule === 'roberta' ? 1 : 0),
    positionRule: rule,
    // is_decoder: causal self-attention (transformers' get_extended_attention_mask)
    isDecoder: bool(c, 'is_decoder', false),
    addPooler: bool(c, 'add_pooling_layer', true),
  };
}

class BertEmbeddings extends Module {
  word: Embedding; pos: Embedding; type: Embedding; ln: LayerNorm; drop: Dropout;
  constructor(readonly cfg: BertConfig) {
    super();
    this.word = this.registerModule('word_embeddings', new Embedding(cfg.vocabSize, cfg.hiddenSize));
    this.pos = this.registerModule('position_embeddings', new Embedding(cfg.maxPositions, cfg.hiddenSize));
    this.type = this.registerModule('token_type_embeddings', new Embedding(cfg.typeVocabSize, cfg.hiddenSize));
    this.ln = this.registerModule('LayerNorm', new LayerNorm(cfg.hiddenSize, cfg.eps));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
  }
  forward(ids: Tensor, tokenTypes: Tensor | null, positions: Tensor | null): Tensor {
    const [B, T] = ids.shape as [number, number];
    let pos = positions;
    if (!pos) {
      if (this.cfg.positionRule === 'roberta') {
        // cumsum over non-pad tokens, offset by pad id: padded positions get pad_token_id
        const notPad = ops.cast(ops.ne(ids, this.cfg.padTokenId), 'i64');
        const arr = notPad.toArray() as BigInt64Array;
        const out = new BigInt64Array(arr.length);
        for (let b = 0; b < B; b++) {
          let c = 0n;
          for (let t = 0; t < T; t++) {
            const m = arr[b * T + t]!;
            c += m;
            out[b * T + t] = c * m + BigInt(this.cfg.padTokenId);
          }
        }
        pos = tensorI64(out, [B, T]);
      } else pos = ops.unsqueeze(ops.arange(0, T), 0);
    }
    const tt = tokenTypes ?? ops.zeros([B, T], { dtype: 'i64' });
    const dev = this.word.weight.device;
    let h = ops.add(ops.add(this.word.forward(onDevice(ids, dev)), this.pos.forward(onDevice(pos, dev))), this.type.forward(onDevice(tt, dev)));
    h = this.ln.forward(h);
    return this.drop.forward(h);
  }
}

function tensorI64(data: BigInt64Array, shape: number[]): Tensor {
  return tensor(data, shape, { dtype: 'i64' });
}

export class BertLayer extends Module {
  q: Linear; k: Linear; v: Linear; o: Linear; ln1: LayerNorm; up: Linear; down: Linear; ln2: LayerNorm;
  drop: Dropout; dropAttnOut: Dropout; act: (x: Tensor) => Tensor;
  attnSite: BottleneckSite; ffnSite: BottleneckSite; prefixSite: PrefixSite; reftSite: ReftSite;
  constructor(readonly cfg: BertConfig, readonly index = 0) {
    super();
    const C = cfg.hiddenSize;
    const attn = this.registerModule('attention', new Module());
    const self = attn.registerModule('self', new Module());
    this.q = self.registerModule('query', new Linear(C, C));
    this.k = self.registerModule('key', new Linear(C, C));
    this.v = self.registerModule('value', new Linear(C, C));
    const ao = attn.registerModule('output', new Module());
    this.o = ao.registerModule('dense', new Linear(C, C));
    this.ln1 = ao.registerModule('LayerNorm', new LayerNorm(C, cfg.eps));
    this.up = this.registerModule('intermediate', new Module()).registerModule('dense', new Linear(C, cfg.intermediateSize));
    const out = this.registerModule('output', new Module());
    this.down = out.registerModule('dense', new Linear(cfg.intermediateSize, C));
    this.ln2 = out.registerModule('LayerNorm', new LayerNorm(C, cfg.eps));
    this.q.site = 'attn.q'; this.k.site = 'attn.k'; this.v.site = 'attn.v'; this.o.site = 'attn.o';
    this.up.site = 'ffn.up'; this.down.site = 'ffn.down';
    // bottleneck adapter sites: `attention.output.adapters.*` and `output.adapters.*` (Python names)
    this.attnSite = new BottleneckSite(ao, index, 'mh');
    this.prefixSite = new PrefixSite(self, index);
    this.reftSite = new ReftSite(this, index);
    this.ffnSite = new BottleneckSite(out, index, 'output');
    // dropout has no parameters; registered so that train()/eval() reach it
    this.drop = out.registerModule('dropout', new Dropout(cfg.dropout));
    this.dropAttnOut = ao.registerModule('dropout', new Dropout(cfg.dropout));
    this.act = activation(cfg.act);
  }
  forward(h: Tensor, keepKeys: Tensor | null): Tensor {
    const H = this.cfg.numHeads;
    // Parallel adapter blocks may have replicated the batch in one projection: align q/k/v and the mask
    const [qh, kh, vh] = alignBatch(this.q.forward(h), this.k.forward(h), this.v.forward(h)) as [Tensor, Tensor, Tensor];
    let q = splitHeads(qh, H), k = splitHeads(kh, H), v = splitHeads(vh, H);
    let B = qh.shape[0]!;
    const hx = rowsTo(h, B)!;
    keepKeys = rowsTo(keepKeys, B);
    const pre = this.prefixSite.kv(B, this.training, hx);
    [q, k, v, keepKeys] = followPrefix(pre, q, k, v, keepKeys);
    B = q.shape[0]!;
    const keep = pre && keepKeys ? ops.concat([ops.full([B, pre.k.shape[2]!], 1, { dtype: 'bool', device: keepKeys.device }), keepKeys], 1) : keepKeys;
    // the key-padding mask is built on the host (bool ops); it goes to the device for the attention call only
    const ctx = mergeHeads(ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: onDevice(keep, q.device), isCausal: this.cfg.isDecoder, prefixK: pre?.k, prefixV: pre?.v,
      dropoutP: this.training ? this.cfg.attnDropout : 0 }));
    const a = this.attnSite.forward(this.dropAttnOut.forward(this.o.forward(ctx)), hx, this.ln1);
    const f = feedForward(a, this.up, this.act, this.down);
    return this.reftSite.apply(this.ffnSite.forward(this.drop.forward(f), a, this.ln2), this.training);
  }
}

/** The BERT encoder (HF `BertModel`); parameter names without the model prefix. */
export class BertModel extends Module {
  wordEmbedding(): Embedding {
    return this.embeddings.word;
  }
  /** Recompute each layer in the backward pass instead of keeping its activations (lib/autograd/checkpoint.ts). */
  gradientCheckpointing = false;
  embeddings: BertEmbeddings;
  layers: BertLayer[] = [];
  pooler: Linear | null = null;
  constructor(readonly cfg: BertConfig) {
    super();
    this.embeddings = this.registerModule('embeddings', new BertEmbeddings(cfg));
    const enc = this.registerModule('encoder', new Module());
    const list = enc.registerModule('layer', new Module());
    for (let i = 0; i < cfg.numLayers; i++) this.layers.push(list.registerModule(String(i), new BertLayer(cfg, i)));
    if (cfg.addPooler) this.pooler = this.registerModule('pooler', new Module()).registerModule('dense', new Linear(cfg.hiddenSize, cfg.hiddenSize));
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
    this.prompts = this.registerModule('prompt_tuning', new PromptTuningPool());
    this.invertible = this.registerModule('invertible_adapters', new InvertibleAdapters());
  }
  invertible: InvertibleAdapters;
  invertibleAdapters(): InvertibleAdapters {
    return this.invertible;
  }
  prefixes: PrefixTuningPool;
  prompts: PromptTuningPool;
  prefixPool(): PrefixTuningPool {
    return this.prefixes;
  }
  promptPool(): PromptTuningPool {
    return this.prompts;
  }
  numHeads(): number {
    return this.cfg.numHeads;
  }
  supportsParallel(): boolean {
    return true;
  }
  hiddenSize(): number {
    return this.cfg.hiddenSize;
  }
  inputEmbeddings(): Tensor {
    return this.embeddings.word.weight;
  }
  /** Hook sites per layer (LoRA targets: q/k/v, intermediate.dense, output.dense; two bottleneck sites). */
  adapterLayers(): LayerSites[] {
    return this.layers.map((l, i) => ({ index: i, q: l.q, k: l.k, v: l.v, intermediate: l.up, output: l.down,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, prefix: l.prefixSite, reft: l.reftSite }));
  }
  forward(input: ForwardInput): ModelOutput {
    return scope(() => {
      const ids = asIds(input.inputIds, 'inputIds').t;
      if (!ids) throw new ValueError('BERT forward needs inputIds');
      const mask0 = asIds(input.attentionMask, 'attentionMask').t;
      const mask = onDevice(mask0, 'cpu');  // masks are combined on the host
      const tt = asIds(input.tokenTypeIds, 'tokenTypeIds').t;
      const pos = asIds(input.positionIds, 'positionIds').t;
      let keepKeys = keepMask(mask);
      let h = this.invertible.apply(this.embeddings.forward(ids, tt, pos));
      ({ h, keep: keepKeys } = this.prompts.apply(h, keepKeys));
      const hidden: Tensor[] = input.outputHiddenStates ? [h] : [];
      for (const layer of this.layers) {
        h = this.gradientCheckpointing ? checkpoint((x) => layer.forward(x, keepKeys), h, layer.parameters(), [keepKeys]) : layer.forward(h, keepKeys);
        if (input.outputHiddenStates) hidden.push(h);
      }
      const out: ModelOutput = { lastHiddenState: h };
      if (input.outputHiddenStates) out.hiddenStates = hidden;
      if (this.pooler) out.pooledOutput = ops.tanh(this.pooler.forward(ops.slice(h, 1, 0, 1).squeeze(1)));
      return out;
    });
  }
}
