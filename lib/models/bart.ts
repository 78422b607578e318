/**
 * BART (https://arxiv.org/abs/1910.13461) as HF transformers' BartModel (models/bart/modeling_bart.py): a
 * post-LN encoder–decoder with learned absolute positions (offset 2: row p + 2 holds position p), a
 * LayerNorm on the embeddings (`layernorm_embedding`), biased q/k/v/out projections with head_dim^-0.5
 * scaling, and one word-embedding matrix `shared` (optionally scaled by √d_model) for encoder and decoder.
 * HF weight names; hook sites attn.q/k/v/o (self- and cross-attention alike, as the Python library wraps
 * both for LoRA; the module path `encoder_attn` tells them apart), ffn.up (fc1), ffn.down (fc2). The Python
 * library's BartAdapterModel keeps the base model under the `model.` prefix.
 */
import { Module } from '../nn/module.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import { InvertibleAdapters } from '../adapters/methods/invertible.ts';
import { PrefixSite, PrefixTuningPool, seq2seqPrefixLocations } from '../adapters/methods/prefix_tuning.ts';
import type { PrefixTuningConfig } from '../adapters/config.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Dropout, Embedding, LayerNorm, Linear, activation } from '../nn/layers.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { ValueError } from '../errors.ts';
import { type ForwardInput, type HFConfig, type ModelOutput, alignBatch, asIds, bool, keepMask, mergeHeads, num, onDevice, followPrefix, rowsTo, splitHeads, str } from './common.ts';
import { type Seq2SeqCache, cachedCrossKV, cachedSelfKV, disposeSeq2SeqCache, newSeq2SeqCache, runDecoder, seq2seqCacheOf } from './seq2seq_generate.ts';

export interface BartConfig {
  vocabSize: number;
  dModel: number;
  encoderLayers: number;
  decoderLayers: number;
  encoderHeads: number;
  decoderHeads: number;
  encoderFfn: number;
  decoderFfn: number;
  maxPositions: number;
  act: string;
  dropout: number;
  /** attention_dropout (attention probabilities) and encoder/decoder_layerdrop (whole layers), in training. */
  attnDropout: number;
  encoderLayerdrop: number;
  decoderLayerdrop: number;
  activationDropout: number;
  scaleEmbedding: boolean;
  padTokenId: number;
  decoderStartTokenId: number | null;
  tieWordEmbeddings: boolean;
}

export function parseBartConfig(c: HFConfig): BartConfig {
  const start = c.decoder_start_token_id;
  return {
    vocabSize: num(c, 'vocab_size'),
    dModel: num(c, 'd_model'),
    encoderLayers: num(c, 'encoder_layers', 12),
    decoderLayers: num(c, 'decoder_layers', 12),
    encoderHeads: num(c, 'encoder_attention_heads', 16),
    decoderHeads: num(c, 'decoder_attention_heads', 16),
    encoderFfn: num(c, 'encoder_ffn_dim', 4096),
    decoderFfn: num(c, 'decoder_ffn_dim', 4096),
    maxPositions: num(c, 'max_position_embeddings', 1024),
    act: str(c, 'activation_function', 'gelu'),
    dropout: num(c, 'dropout', 0.1),
    attnDropout: num(c, 'attention_dropout', 0),
    encoderLayerdrop: num(c, 'encoder_layerdrop', 0),
    decoderLayerdrop: num(c, 'decoder_layerdrop', 0),
    activationDropout: num(c, 'activation_dropout', 0),
    scaleEmbedding: bool(c, 'scale_embedding', false),
    padTokenId: num(c, 'pad_token_id', 1),
    decoderStartTokenId: typeof start === 'number' ? start : null,
    tieWordEmbeddings: bool(c, 'tie_word_embeddings', true),
  };
}

/** HF BartLearnedPositionalEmbedding reserves two rows: position p is row p + 2. */
const POSITION_OFFSET = 2;

/** HF BartAttention (k_proj, v_proj, q_proj, out_proj, all biased). */
class BartAttention extends Module {
  q: Linear; k: Linear; v: Linear; o: Linear;
  constructor(dim: number, readonly heads: number, readonly attnDropout = 0) {
    super();
    if (dim % heads !== 0) throw new ValueError(`BART: d_model ${dim} is not a multiple of the ${heads} attention heads`);
    this.k = this.registerModule('k_proj', new Linear(dim, dim));
    this.v = this.registerModule('v_proj', new Linear(dim, dim));
    this.q = this.registerModule('q_proj', new Linear(dim, dim));
    this.o = this.registerModule('out_proj', new Linear(dim, dim));
    this.q.site = 'attn.q'; this.k.site = 'attn.k'; this.v.site = 'attn.v'; this.o.site = 'attn.o';
  }
  /** Prefix-tuning site (set by the layer). */
  prefixSite: PrefixSite | null = null;
  /** softmax(q·kᵀ/√D)·v → out_proj; k/v already split into heads; prefix keys/values prepended when active. */
  attend(x: Tensor, k: Tensor, v: Tensor, keep: Tensor | null, causal: boolean): Tensor {
    // a Parallel adapter block may have replicated the batch in one projection (or, for cross-attention, in the
    // encoder): align q/k/v, the input and the mask
    let [q, kk, vv] = alignBatch(splitHeads(this.q.forward(x), this.heads), k, v) as [Tensor, Tensor, Tensor];
    k = kk; v = vv;
    let B = q.shape[0]!;
    x = rowsTo(x, B)!;
    keep = rowsTo(keep, B);
    const pre = this.prefixSite?.kv(B, this.training, x) ?? null;
    [q, k, v, keep] = followPrefix(pre, q, k, v, keep);
    B = q.shape[0]!;
    const keepAll = pre && keep ? ops.concat([ops.full([B, pre.k.shape[2]!], 1, { dtype: 'bool', device: keep.device }), keep], 1) : keep;
    return this.o.forward(mergeHeads(ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: onDevice(keepAll, q.device), isCausal: causal, prefixK: pre?.k, prefixV: pre?.v,
      dropoutP: this.training ? this.attnDropout : 0 })));
  }
  kv(src: Tensor): { k: Tensor; v: Tensor } {
    return { k: splitHeads(this.k.forward(src), this.heads), v: splitHeads(this.v.forward(src), this.heads) };
  }
}

/** HF BartEncoderLayer / BartDecoderLayer (post-LN); the decoder adds encoder_attn between the two. */
class BartLayer extends Module {
  selfAttn: BartAttention; selfLn: LayerNorm;
  crossAttn: BartAttention | null = null; crossLn: LayerNorm | null = null;
  fc1: Linear; fc2: Linear; finalLn: LayerNorm;
  drop: Dropout; actDrop: Dropout; act: (x: Tensor) => Tensor;
  attnSite: BottleneckSite; ffnSite: BottleneckSite; crossSite: BottleneckSite | null = null; reftSite: ReftSite;
  prefixSite: PrefixSite; crossPrefixSite: PrefixSite | null = null;
  /** @param index adapter layer index: encoder layers first, decoder layers after them */
  constructor(readonly cfg: BartConfig, readonly isDecoder: boolean, readonly index = 0) {
    super();
    const C = cfg.dModel, heads = isDecoder ? cfg.decoderHeads : cfg.encoderHeads, ffn = isDecoder ? cfg.decoderFfn : cfg.encoderFfn;
    this.selfAttn = this.registerModule('self_attn', new BartAttention(C, heads, cfg.attnDropout));
    this.selfLn = this.registerModule('self_attn_layer_norm', new LayerNorm(C));
    if (isDecoder) {
      this.crossAttn = this.registerModule('encoder_attn', new BartAttention(C, heads, cfg.attnDropout));
      this.crossLn = this.registerModule('encoder_attn_layer_norm', new LayerNorm(C));
    }
    this.fc1 = this.registerModule('fc1', new Linear(C, ffn));
    this.fc2 = this.registerModule('fc2', new Linear(ffn, C));
    this.finalLn = this.registerModule('final_layer_norm', new LayerNorm(C));
    this.fc1.site = 'ffn.up'; this.fc2.site = 'ffn.down';
    // HF applies F.dropout with the module's training flag; registered modules follow train()/eval()
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
    this.actDrop = this.registerModule('activation_dropout', new Dropout(cfg.activationDropout));
    this.act = activation(cfg.act);
    // bottleneck sites `attention_adapters` / `output_adapters` on the layer (post-LN: called with the LNs)
    this.attnSite = new BottleneckSite(this.registerModule('attention_adapters', new Module()), index, 'mh');
    this.ffnSite = new BottleneckSite(this.registerModule('output_adapters', new Module()), index, 'output');
    if (isDecoder) this.crossSite = new BottleneckSite(this.registerModule('cross_attention_adapters', new Module()), index, 'mh');
    // prefix locations as in the Python library: encoder self-attention 'encoder_prefix', decoder self-attention
    // 'self_prefix', decoder cross-attention 'cross_prefix' (layer index within the stack)
    const local = isDecoder ? index - cfg.encoderLayers : index;
    this.selfAttn.prefixSite = this.prefixSite = new PrefixSite(this.selfAttn, index, isDecoder ? 'self_prefix' : 'encoder_prefix', local);
    if (this.crossAttn) this.crossAttn.prefixSite = this.crossPrefixSite = new PrefixSite(this.crossAttn, index, 'cross_prefix', local);
    this.reftSite = new ReftSite(this, index);
  }
  forward(h: Tensor, ctx: StackContext, i: number): Tensor {
    const own = this.selfAttn.kv(h);
    const kv = cachedSelfKV(ctx.cache, i, own.k, own.v, ctx.updateCache);
    h = this.attnSite.forward(this.drop.forward(this.selfAttn.attend(h, kv.k, kv.v, ctx.keep, this.isDecoder)), h, this.selfLn);
    if (this.crossAttn) {
      const c = this.crossAttn;
      const ckv = cachedCrossKV(ctx.cache, i, () => c.kv(ctx.enc!), ctx.updateCache);
      h = this.crossSite!.forward(this.drop.forward(c.attend(h, ckv.k, ckv.v, ctx.encKeep, false)), h, this.crossLn!);
    }
    const f = this.fc2.forward(this.actDrop.forward(this.act(this.fc1.forward(h))));
    return this.reftSite.apply(this.ffnSite.forward(this.drop.forward(f), h, this.finalLn), this.training);
  }
}

interface StackContext {
  /** Self-attention key-keep mask (B, Tk). */
  keep: Tensor | null;
  enc: Tensor | null;
  encKeep: Tensor | null;
  cache: Seq2SeqCache | null;
  updateCache: boolean;
}

/** HF BartEncoder / BartDecoder. */
class BartStack extends Module {
  layers: BartLayer[] = [];
  positions: Embedding; lnEmbed: LayerNorm; drop: Dropout;
  readonly embedScale: number;
  constructor(readonly cfg: BartConfig, readonly isDecoder: boolean, readonly embed: Embedding) {
    super();
    this.registerModule('embed_tokens', embed);  // the same module as `shared`: its weight is listed once
    this.positions = this.registerModule('embed_positions', new Embedding(cfg.maxPositions + POSITION_OFFSET, cfg.dModel));
    const list = this.registerModule('layers', new Module());
    const n = isDecoder ? cfg.decoderLayers : cfg.encoderLayers;
    const offset = isDecoder ? cfg.encoderLayers : 0;
    for (let i = 0; i < n; i++) this.layers.push(list.registerModule(String(i), new BartLayer(cfg, isDecoder, offset + i)));
    this.lnEmbed = this.registerModule('layernorm_embedding', new LayerNorm(cfg.dModel));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
    this.embedScale = cfg.scaleEmbedding ? Math.sqrt(cfg.dModel) : 1;
    // invertible adapters live in the encoder (`encoder.invertible_adapters.*`), applied after its embeddings
    if (!isDecoder) this.invertible = this.registerModule('invertible_adapters', new InvertibleAdapters());
  }
  invertible: InvertibleAdapters | null = null;
  /** Hidden states as HF lists them: the normed embeddings, then every layer's output. */
  forward(ids: Tensor, ctx: StackContext, hidden: Tensor[] | null): Tensor {
    // the decoder follows an encoder output that a Parallel block replicated (adjust_tensors_for_parallel)
    if (ctx.enc && ctx.enc.shape[0]! > ids.shape[0]!) {
      ids = rowsTo(ids, ctx.enc.shape[0]!)!;
      ctx = { ...ctx, keep: rowsTo(ctx.keep, ids.shape[0]!) };
    }
    const T = ids.shape[1]!;
    const past = ctx.cache?.length ?? 0;
    if (past + T > this.cfg.maxPositions)
      throw new ValueError(`BART: ${past + T} positions exceed max_position_embeddings ${this.cfg.maxPositions}`);
    const dev = this.embed.weight.device;
    let tok = this.embed.forward(onDevice(ids, dev));
    if (this.embedScale !== 1) tok = ops.mul(tok, this.embedScale);
    const pos = this.positions.forward(onDevice(ops.arange(past + POSITION_OFFSET, past + T + POSITION_OFFSET), dev));  // (T, C), broadcast over B
    let h = this.drop.forward(this.lnEmbed.forward(ops.add(tok, pos)));
    if (this.invertible) h = this.invertible.apply(h);
    hidden?.push(h);
    // LayerDrop (HF): in training each layer is skipped with probability encoder/decoder_layerdrop
    const layerdrop = this.isDecoder ? this.cfg.decoderLayerdrop : this.cfg.encoderLayerdrop;
    this.layers.forEach((layer, i) => {
      const skip = this.training && layerdrop > 0 && ops.rand([]).item() < layerdrop;
      if (!skip) h = layer.forward(h, ctx, i);
      hidden?.push(h);
    });
    return h;
  }
}

/** HF shift_tokens_right: decoder inputs = [decoder_start, ids[:-1]] with −100 labels replaced by pad. */
export function shiftTokensRight(ids: Tensor, padTokenId: number, decoderStartTokenId: number): Tensor {
  const [B, T] = ids.shape as [number, number];
  const src = ids.dtype === 'i64' ? (ids.toArray() as BigInt64Array) : BigInt64Array.from(ids.toArray() as ArrayLike<number>, (x) => BigInt(x));
  const out = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++) {
    out[b * T] = BigInt(decoderStartTokenId);
    for (let t = 1; t < T; t++) {
      const x = src[b * T + t - 1]!;
      out[b * T + t] = x === -100n ? BigInt(padTokenId) : x;
    }
  }
  return tensor(out, [B, T], { dtype: 'i64' });
}

export interface BartModelOutput extends ModelOutput {
  /** With outputHiddenStates: the encoder's hidden states (`hiddenStates` holds the decoder's). */
  encoderHiddenStates?: Tensor[];
}

/** HF `BartModel`; parameter names without the flex-head prefix. */
export class BartModel extends Module {
  shared: Embedding;
  encoder: BartStack;
  decoder: BartStack;
  constructor(readonly cfg: BartConfig) {
    super();
    this.shared = this.registerModule('shared', new Embedding(cfg.vocabSize, cfg.dModel));
    this.encoder = this.registerModule('encoder', new BartStack(cfg, false, this.shared));
    this.decoder = this.registerModule('decoder', new BartStack(cfg, true, this.shared));
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
  }
  inputEmbeddings(): Tensor {
    return this.shared.weight;
  }
  hiddenSize(): number {
    return this.cfg.dModel;
  }
  /** Hook sites: encoder layers, then decoder layers (LoRA also on the decoder's encoder_attn q/k/v). */
  adapterLayers(): LayerSites[] {
    return [...this.encoder.layers, ...this.decoder.layers].map((l) => ({
      index: l.index, q: l.selfAttn.q, k: l.selfAttn.k, v: l.selfAttn.v, intermediate: l.fc1, output: l.fc2,
      cross: l.crossAttn ? { q: l.crossAttn.q, k: l.crossAttn.k, v: l.crossAttn.v } : undefined,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, crossBottleneck: l.crossSite ?? undefined, reft: l.reftSite,
      prefix: l.prefixSite, crossPrefix: l.crossPrefixSite ?? undefined,
    }));
  }
  prefixes!: PrefixTuningPool;
  prefixPool(): PrefixTuningPool {
    return this.prefixes;
  }
  invertibleAdapters(): InvertibleAdapters {
    return this.encoder.invertible!;
  }
  supportsParallel(): boolean {
    return true;
  }
  numHeads(): number {
    return this.cfg.encoderHeads;
  }
  prefixLocations(c: PrefixTuningConfig): { key: string; nLayers: number }[] {
    return seq2seqPrefixLocations(c, this.cfg.encoderLayers, this.cfg.decoderLayers);
  }
  /** BART's LM head uses the decoder output as is. */
  get lmScale(): number {
    return 1;
  }

  /**
   * Encoder + decoder. Without decoderInputIds they are inputIds shifted right (HF BartModel). With
   * pastKeyValues (a Seq2SeqCache) the encoder inputs are not needed and decoderInputIds are the new
   * positions only; useCache (default: true when a cache is given) returns the cache in pastKeyValues,
   * updated in place or newly created — its tensors are owned by the cache (disposeSeq2SeqCache).
   */
  forward(input: ForwardInput): BartModelOutput {
    return scope(() => {
      let cache = seq2seqCacheOf(input, 'BART');
      let created: Seq2SeqCache | null = null;
      const update = input.useCache ?? cache !== null;
      const want = !!input.outputHiddenStates;
      const encHidden: Tensor[] | null = want && !cache ? [] : null;
      let decIds = asIds(input.decoderInputIds, 'decoderInputIds').t;
      let enc: Tensor, encKeep: Tensor | null;
      if (cache) {
        enc = cache.encoderHiddenState;
        encKeep = cache.encoderKeep;
      } else {
        const ids = asIds(input.inputIds, 'inputIds').t;
        if (!ids) throw new ValueError('BART forward needs inputIds (or pastKeyValues from a previous call)');
        if (!decIds) {
          if (this.cfg.decoderStartTokenId === null) throw new ValueError('BART: no decoderInputIds given and config.json has no decoder_start_token_id to derive them');
          decIds = shiftTokensRight(ids, this.cfg.padTokenId, this.cfg.decoderStartTokenId);
        }
        encKeep = keepMask(asIds(input.attentionMask, 'attentionMask').t);
        enc = this.encoder.forward(ids, { keep: encKeep, enc: null, encKeep: null, cache: null, updateCache: false }, encHidden);
        if (update) cache = created = newSeq2SeqCache(enc, encKeep);
      }
      if (!decIds) throw new ValueError('BART forward with pastKeyValues needs decoderInputIds (the new positions)');
      return runDecoder(this.decoder, decIds, {
        keep: keepMask(asIds(input.decoderAttentionMask, 'decoderAttentionMask').t),
        enc, encKeep, cache, updateCache: update,
      }, { enc, encHidden, cache, update, created, wantHidden: want }) as BartModelOutput;
    });
  }
}
