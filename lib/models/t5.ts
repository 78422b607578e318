/**
 * T5 (https://arxiv.org/abs/1910.10683) as HF transformers' T5Model (models/t5/modeling_t5.py): a pre-LN
 * encoder–decoder with RMS layer norms (T5LayerNorm: no mean, no bias), no biases anywhere, unscaled
 * attention scores, bucketed relative position biases (held by block 0 of each stack and shared by its other
 * blocks; bidirectional in the encoder, causal buckets in the decoder; none in cross-attention), and a ReLU
 * (v1.0) or gated-GELU (v1.1 / flan / mT5) feed-forward block. One embedding matrix `shared` serves encoder
 * and decoder. HF weight names; hook sites attn.q/k/v/o (self- and cross-attention alike, as the Python
 * library wraps both for LoRA; the module path `EncDecAttention` tells them apart), ffn.up (wi, or wi_1 in
 * the gated block), ffn.gate (wi_0), ffn.down (wo). The Python library's T5AdapterModel keeps the base model
 * under the `transformer.` prefix.
 */
import { Module } from '../nn/module.ts';
import { BottleneckSite } from '../adapters/methods/bottleneck.ts';
import { ReftSite } from '../adapters/methods/reft.ts';
import { InvertibleAdapters } from '../adapters/methods/invertible.ts';
import { PrefixSite, PrefixTuningPool, seq2seqPrefixLocations } from '../adapters/methods/prefix_tuning.ts';
import type { PrefixTuningConfig } from '../adapters/config.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Dropout, Embedding, Linear, RMSNorm, activation } from '../nn/layers.ts';
import { Tensor, tensor, type DType } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { ValueError } from '../errors.ts';
import { type ForwardInput, type HFConfig, type ModelOutput, alignBatch, asIds, bool, keepMask, mergeHeads, num, onDevice, rowsTo, splitHeads, str } from './common.ts';
import { type Seq2SeqCache, cachedCrossKV, cachedSelfKV, disposeSeq2SeqCache, newSeq2SeqCache, runDecoder, seq2seqCacheOf } from './seq2seq_generate.ts';

export interface T5Config {
  vocabSize: number;
  dModel: number;
  dKv: number;
  dFf: number;
  numLayers: number;
  numDecoderLayers: number;
  numHeads: number;
  numBuckets: number;
  maxDistance: number;
  dropout: number;
  eps: number;
  /** Activation of the feed-forward block (HF `dense_act_fn`). */
  act: string;
  /** Gated feed-forward: act(wi_0·x) * (wi_1·x). */
  gated: boolean;
  tieWordEmbeddings: boolean;
}

/** HF T5Config, including its reading of `feed_forward_proj` ('relu', 'gated-gelu', 'gated-silu', ...). */
export function parseT5Config(c: HFConfig): T5Config {
  const ffp = str(c, 'feed_forward_proj', c.model_type === 'mt5' ? 'gated-gelu' : 'relu');  // (MT5Config's default is gated)
  const parts = ffp.split('-');
  if ((parts.length > 1 && parts[0] !== 'gated') || parts.length > 2)
    throw new ValueError(`config.json: feed_forward_proj '${ffp}' is not a valid activation (expected 'ACT' or 'gated-ACT')`);
  const numLayers = num(c, 'num_layers');
  return {
    vocabSize: num(c, 'vocab_size'),
    dModel: num(c, 'd_model'),
    dKv: num(c, 'd_kv'),
    dFf: num(c, 'd_ff'),
    numLayers,
    numDecoderLayers: num(c, 'num_decoder_layers', numLayers),
    numHeads: num(c, 'num_heads'),
    numBuckets: num(c, 'relative_attention_num_buckets', 32),
    maxDistance: num(c, 'relative_attention_max_distance', 128),
    dropout: num(c, 'dropout_rate', 0.1),
    eps: num(c, 'layer_norm_epsilon', 1e-6),
    // HF special-cases 'gated-gelu' to the tanh approximation for backwards compatibility
    act: ffp === 'gated-gelu' ? 'gelu_new' : parts[parts.length - 1]!,
    gated: parts[0] === 'gated',
    tieWordEmbeddings: t5TiesWordEmbeddings(c),
  };
}

/** tie_word_embeddings, whose default is true for T5Config and false for MT5Config. */
export function t5TiesWordEmbeddings(c: HFConfig): boolean {
  return bool(c, 'tie_word_embeddings', c.model_type !== 'mt5');
}

/**
 * HF T5Attention._relative_position_bucket for one relative position (key − query). Exact buckets for
 * small distances, logarithmic ones up to maxDistance; bidirectional splits the buckets between
 * directions, otherwise only keys before the query count. The logarithm is evaluated in float32 as torch
 * does, so the truncation lands on the same side near bucket boundaries.
 */
export function relativePositionBucket(rel: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  let n = numBuckets;
  let bucket = 0;
  let dist: number;
  if (bidirectional) {
    n = Math.floor(n / 2);
    if (rel > 0) bucket += n;
    dist = Math.abs(rel);
  } else dist = -Math.min(rel, 0);
  const maxExact = Math.floor(n / 2);
  if (dist < maxExact) return bucket + dist;
  const f = Math.fround;
  const scaled = f(f(f(Math.log(f(dist / maxExact))) / f(Math.log(maxDistance / maxExact))) * (n - maxExact));
  return bucket + Math.min(maxExact + Math.trunc(scaled), n - 1);
}

/** The lowest finite value of a float dtype (torch.finfo(dtype).min), HF's additive mask value. */
function finfoMin(dtype: DType): number {
  return dtype === 'f16' ? -65504 : dtype === 'bf16' ? -3.3895313892515355e38 : -3.4028234663852886e38;
}

/**
 * Unscaled attention softmax(q·kᵀ + bias)·v with key padding and optional causal masking. The fused op
 * does not differentiate its `mask` input, so while the relative position bias needs a gradient (its
 * embedding is trained) the scores are formed explicitly; masked scores get finfo.min as in HF.
 */
function t5Attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | null, keep0: Tensor | null, causal: boolean,
  pre: { k: Tensor; v: Tensor } | null = null, dropoutP = 0): Tensor {
  // a Parallel adapter block may have replicated the batch in one projection (or, for cross-attention, in the
  // encoder): align q/k/v, the mask and the prefixes
  // (a prefix site's own Parallel block replicates its keys: then q/k/v follow them)
  if (pre) {
    const [qa, ka, va, pk, pv] = alignBatch(q, k, v, pre.k, pre.v) as [Tensor, Tensor, Tensor, Tensor, Tensor];
    [q, k, v, pre] = [qa, ka, va, { k: pk, v: pv }];
  } else [q, k, v] = alignBatch(q, k, v) as [Tensor, Tensor, Tensor];
  const B0 = q.shape[0]!;
  keep0 = rowsTo(keep0, B0);
  // prefix tuning: prefix keys/values come first and are always attended (the bias already spans them)
  const keep = pre && keep0 ? ops.concat([ops.full([B0, pre.k.shape[2]!], 1, { dtype: 'bool', device: keep0.device }), keep0], 1) : keep0;
  if (!bias?.requiresGrad)
    return ops.scaledDotProductAttention(q, k, v, { mask: bias, keyPaddingMask: onDevice(keep, q.device), isCausal: causal, scale: 1, prefixK: pre?.k, prefixV: pre?.v, dropoutP });
  if (pre) {
    k = ops.concat([pre.k, k], 2);
    v = ops.concat([pre.v, v], 2);
  }
  const [B, , Tq] = q.shape as [number, number, number, number];
  const Tk = k.shape[2]!;
  let s = ops.add(ops.matmul(q, ops.transpose(k, -2, -1)), bias);
  let masked: Tensor | null = keep ? ops.reshape(ops.logicalNot(keep), [B, 1, 1, Tk]) : null;
  if (causal) {
    const future = new Uint8Array(Tq * Tk);
    for (let i = 0; i < Tq; i++) for (let j = i + (Tk - Tq) + 1; j < Tk; j++) future[i * Tk + j] = 1;
    const c = tensor(future, [1, 1, Tq, Tk], { dtype: 'bool' });
    masked = masked ? ops.logicalOr(masked, c) : c;
  }
  if (masked) s = ops.maskedFill(s, masked, finfoMin(s.dtype));
  // (T5Attention drops attention weights with dropout_rate in training)
  return ops.matmul(dropoutP > 0 ? ops.dropout(ops.softmax(s, -1), dropoutP) : ops.softmax(s, -1), v);
}

class T5Attention extends Module {
  q: Linear; k: Linear; v: Linear; o: Linear;
  /** Bucket → per-head bias (num_buckets, H); only in block 0 of each stack's self-attention. */
  relBias: Embedding | null = null;
  constructor(readonly cfg: T5Config, hasRelBias: boolean) {
    super();
    const inner = cfg.numHeads * cfg.dKv;
    this.q = this.registerModule('q', new Linear(cfg.dModel, inner, { bias: false }));
    this.k = this.registerModule('k', new Linear(cfg.dModel, inner, { bias: false }));
    this.v = this.registerModule('v', new Linear(cfg.dModel, inner, { bias: false }));
    this.o = this.registerModule('o', new Linear(inner, cfg.dModel, { bias: false }));
    this.q.site = 'attn.q'; this.k.site = 'attn.k'; this.v.site = 'attn.v'; this.o.site = 'attn.o';
    if (hasRelBias) this.relBias = this.registerModule('relative_attention_bias', new Embedding(cfg.numBuckets, cfg.numHeads));
  }
  /** HF compute_bias: (1, H, Tq, Tk) for queries at positions offset..offset+Tq−1 and keys 0..Tk−1. */
  positionBias(Tq: number, Tk: number, offset: number, bidirectional: boolean): Tensor {
    const ids = new BigInt64Array(Tq * Tk);
    for (let i = 0; i < Tq; i++)
      for (let j = 0; j < Tk; j++)
        ids[i * Tk + j] = BigInt(relativePositionBucket(j - (offset + i), bidirectional, this.cfg.numBuckets, this.cfg.maxDistance));
    const values = this.relBias!.forward(onDevice(tensor(ids, [Tq, Tk], { dtype: 'i64' }), this.relBias!.weight.device));  // (Tq, Tk, H)
    return ops.unsqueeze(ops.permute(values, [2, 0, 1]), 0).contiguous();
  }
}

class T5FF extends Module {
  wi: Linear | null = null; wi0: Linear | null = null; wi1: Linear | null = null; wo: Linear;
  ln: RMSNorm; innerDrop: Dropout; drop: Dropout; act: (x: Tensor) => Tensor;
  site: BottleneckSite;
  constructor(readonly cfg: T5Config, index = 0) {
    super();
    const ff = this.registerModule('DenseReluDense', new Module());
    if (cfg.gated) {
      this.wi0 = ff.registerModule('wi_0', new Linear(cfg.dModel, cfg.dFf, { bias: false }));
      this.wi1 = ff.registerModule('wi_1', new Linear(cfg.dModel, cfg.dFf, { bias: false }));
      this.wi0.site = 'ffn.gate';
      this.wi1.site = 'ffn.up';
    } else {
      this.wi = ff.registerModule('wi', new Linear(cfg.dModel, cfg.dFf, { bias: false }));
      this.wi.site = 'ffn.up';
    }
    this.wo = ff.registerModule('wo', new Linear(cfg.dFf, cfg.dModel, { bias: false }));
    this.wo.site = 'ffn.down';
    // dropouts are registered (HF names) so that train()/eval() reach them
    this.innerDrop = ff.registerModule('dropout', new Dropout(cfg.dropout));
    this.ln = this.registerModule('layer_norm', new RMSNorm(cfg.dModel, cfg.eps));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
    this.act = activation(cfg.act);
    // FF bottleneck site `layer.{1|2}.adapters.*` (pre-LN: residual + sub-layer + adapter, no layer norm)
    this.site = new BottleneckSite(this, index, 'output');
  }
  forward(h: Tensor): Tensor {
    const x = this.ln.forward(h);
    // gated: a Parallel LoRA on wi_1 replicates the batch there only, the gate follows
    const inner = this.wi ? this.act(this.wi.forward(x)) : ops.mul(...(alignBatch(this.act(this.wi0!.forward(x)), this.wi1!.forward(x)) as [Tensor, Tensor]));
    return this.site.forward(this.drop.forward(this.wo.forward(this.innerDrop.forward(inner))), h, null);
  }
}

/** A T5 block: layer.0 self-attention, (decoder) layer.1 cross-attention, last layer feed-forward. */
class T5Block extends Module {
  selfAttn: T5Attention; ln0: RMSNorm; drop0: Dropout;
  crossAttn: T5Attention | null = null; ln1: RMSNorm | null = null; drop1: Dropout | null = null;
  ff: T5FF;
  attnSite: BottleneckSite; crossSite: BottleneckSite | null = null; reftSite: ReftSite;
  prefixSite: PrefixSite; crossPrefixSite: PrefixSite | null = null;
  constructor(readonly cfg: T5Config, readonly isDecoder: boolean, hasRelBias: boolean, readonly index = 0) {
    super();
    const layers = this.registerModule('layer', new Module());
    const sa = layers.registerModule('0', new Module());
    this.selfAttn = sa.registerModule('SelfAttention', new T5Attention(cfg, hasRelBias));
    this.ln0 = sa.registerModule('layer_norm', new RMSNorm(cfg.dModel, cfg.eps));
    this.drop0 = sa.registerModule('dropout', new Dropout(cfg.dropout));
    this.attnSite = new BottleneckSite(sa, index, 'mh');
    const local = isDecoder ? index - cfg.numLayers : index;
    this.prefixSite = new PrefixSite(this.selfAttn, index, isDecoder ? 'self_prefix' : 'encoder_prefix', local);
    if (isDecoder) {
      const ca = layers.registerModule('1', new Module());
      this.crossAttn = ca.registerModule('EncDecAttention', new T5Attention(cfg, false));
      this.ln1 = ca.registerModule('layer_norm', new RMSNorm(cfg.dModel, cfg.eps));
      this.drop1 = ca.registerModule('dropout', new Dropout(cfg.dropout));
      this.crossSite = new BottleneckSite(ca, index, 'mh');
      this.crossPrefixSite = new PrefixSite(this.crossAttn, index, 'cross_prefix', index - cfg.numLayers);
    }
    this.ff = layers.registerModule(isDecoder ? '2' : '1', new T5FF(cfg, index));
    this.reftSite = new ReftSite(this, index);
  }
  forward(h: Tensor, ctx: StackContext, i: number): Tensor {
    const H = this.cfg.numHeads, a = this.selfAttn;
    const x = this.ln0.forward(h);
    const kv = cachedSelfKV(ctx.cache, i, splitHeads(a.k.forward(x), H), splitHeads(a.v.forward(x), H), ctx.updateCache);
    const q = splitHeads(a.q.forward(x), H);
    // the prefixes see the batch after a Parallel LoRA replicated it in any projection (match_attn_matrices_for_parallel)
    const B = Math.max(q.shape[0]!, kv.k.shape[0]!, kv.v.shape[0]!);
    const pre = this.prefixSite.kv(B, this.training, rowsTo(x, B)!);
    const p = this.training ? this.cfg.dropout : 0;
    const sa = t5Attention(q, kv.k, kv.v, ctx.bias, ctx.keep, this.isDecoder, pre, p);
    h = this.attnSite.forward(this.drop0.forward(a.o.forward(mergeHeads(sa))), h, null);
    if (this.crossAttn) {
      const c = this.crossAttn;
      const y = this.ln1!.forward(h);
      const ckv = cachedCrossKV(ctx.cache, i, () => ({ k: splitHeads(c.k.forward(ctx.enc!), H), v: splitHeads(c.v.forward(ctx.enc!), H) }), ctx.updateCache);
      const cq = splitHeads(c.q.forward(y), H);
      const cB = Math.max(cq.shape[0]!, ckv.k.shape[0]!, ckv.v.shape[0]!);
      const cpre = this.crossPrefixSite!.kv(cB, this.training, rowsTo(y, cB)!);
      const ca = t5Attention(cq, ckv.k, ckv.v, null, ctx.encKeep, false, cpre, p);
      h = this.crossSite!.forward(this.drop1!.forward(c.o.forward(mergeHeads(ca))), h, null);
    }
    return this.reftSite.apply(this.ff.forward(h), this.training);
  }
}

interface StackContext {
  /** Position bias (1, H, Tq, Tk) of block 0, shared by every block of the stack. */
  bias: Tensor | null;
  /** Self-attention key-keep mask (B, Tk). */
  keep: Tensor | null;
  enc: Tensor | null;
  encKeep: Tensor | null;
  cache: Seq2SeqCache | null;
  updateCache: boolean;
}

/** HF T5Stack: the encoder (bidirectional) or the decoder (causal, with cross-attention). */
class T5Stack extends Module {
  blocks: T5Block[] = [];
  finalLn: RMSNorm; drop: Dropout;
  constructor(readonly cfg: T5Config, readonly isDecoder: boolean, readonly embed: Embedding) {
    super();
    this.registerModule('embed_tokens', embed);  // the same module as `shared`: its weight is listed once
    const list = this.registerModule('block', new Module());
    const n = isDecoder ? cfg.numDecoderLayers : cfg.numLayers;
    const offset = isDecoder ? cfg.numLayers : 0;
    for (let i = 0; i < n; i++) this.blocks.push(list.registerModule(String(i), new T5Block(cfg, isDecoder, i === 0, offset + i)));
    this.finalLn = this.registerModule('final_layer_norm', new RMSNorm(cfg.dModel, cfg.eps));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
    // invertible adapters live in the encoder stack (`encoder.invertible_adapters.*`), right after the embeddings
    if (!isDecoder) this.invertible = this.registerModule('invertible_adapters', new InvertibleAdapters());
  }
  invertible: InvertibleAdapters | null = null;
  /** Hidden states as HF lists them: the embeddings, blocks 0..n−2's outputs, the final normed output. */
  forward(ids: Tensor, ctx: Omit<StackContext, 'bias'>, hidden: Tensor[] | null): Tensor {
    // the decoder follows an encoder output that a Parallel block replicated (adjust_tensors_for_parallel)
    if (ctx.enc && ctx.enc.shape[0]! > ids.shape[0]!) {
      ids = rowsTo(ids, ctx.enc.shape[0]!)!;
      ctx = { ...ctx, keep: rowsTo(ctx.keep, ids.shape[0]!) };
    }
    const T = ids.shape[1]!;
    const past = ctx.cache?.length ?? 0;
    const rel = this.blocks[0]?.selfAttn;
    // with prefix tuning the bias spans P + keys: prefixes sit at key positions 0..P−1 and real key j at P+j
    // (HF compute_bias(query_len, P + key_len)); queries keep positions past..past+T−1
    const P = this.blocks[0]?.prefixSite.activeLength() ?? 0;
    const bias = rel?.relBias ? rel.positionBias(T, P + past + T, past, !this.isDecoder) : null;
    const full: StackContext = { ...ctx, bias };
    const emb = this.embed.forward(onDevice(ids, this.embed.weight.device));
    let h = this.drop.forward(this.invertible ? this.invertible.apply(emb) : emb);
    this.blocks.forEach((block, i) => {
      hidden?.push(h);
      h = block.forward(h, full, i);
    });
    h = this.drop.forward(this.finalLn.forward(h));
    hidden?.push(h);
    return h;
  }
}

export interface T5ModelOutput extends ModelOutput {
  /** With outputHiddenStates: the encoder's hidden states (`hiddenStates` holds the decoder's). */
  encoderHiddenStates?: Tensor[];
}

/** HF `T5Model` (also mT5's MT5Model); parameter names without the flex-head prefix. */
export class T5Model extends Module {
  shared: Embedding;
  encoder: T5Stack;
  decoder: T5Stack;
  constructor(readonly cfg: T5Config) {
    super();
    this.shared = this.registerModule('shared', new Embedding(cfg.vocabSize, cfg.dModel));
    this.encoder = this.registerModule('encoder', new T5Stack(cfg, false, this.shared));
    this.decoder = this.registerModule('decoder', new T5Stack(cfg, true, this.shared));
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
  }
  hiddenSize(): number {
    return this.cfg.dModel;
  }
  /** Hook sites: encoder blocks, then decoder blocks. LoRA: SelfAttention q/k/v, EncDecAttention q/k/v,
   *  intermediate = DenseReluDense.wi (v1.0) or wi_1 (gated: the linear branch), output = wo. */
  adapterLayers(): LayerSites[] {
    return [...this.encoder.blocks, ...this.decoder.blocks].map((b) => ({
      index: b.index, q: b.selfAttn.q, k: b.selfAttn.k, v: b.selfAttn.v,
      cross: b.crossAttn ? { q: b.crossAttn.q, k: b.crossAttn.k, v: b.crossAttn.v } : undefined,
      intermediate: b.ff.wi ?? b.ff.wi1!, output: b.ff.wo, attnBottleneck: b.attnSite, ffnBottleneck: b.ff.site,
      crossBottleneck: b.crossSite ?? undefined, reft: b.reftSite, prefix: b.prefixSite, crossPrefix: b.crossPrefixSite ?? undefined,
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
    return this.cfg.numHeads;
  }
  prefixLocations(c: PrefixTuningConfig): { key: string; nLayers: number }[] {
    return seq2seqPrefixLocations(c, this.cfg.numLayers, this.cfg.numDecoderLayers);
  }
  inputEmbeddings(): Tensor {
    return this.shared.weight;
  }
  /**
   * Factor applied to the decoder output before a tied LM head: d_model^-0.5 when the word embeddings are
   * tied (T5 v1.0; HF T5ForConditionalGeneration and the Python T5AdapterModel, which rescales
   * last_hidden_state before every head), 1 otherwise.
   */
  get lmScale(): number {
    return this.cfg.tieWordEmbeddings ? this.cfg.dModel ** -0.5 : 1;
  }

  /**
   * Encoder + decoder. Needs decoderInputIds (HF T5Model does not derive them). With pastKeyValues (a
   * Seq2SeqCache) the encoder inputs are not needed and decoderInputIds are the new positions only;
   * useCache (default: true when a cache is given) returns the cache in pastKeyValues, updated in place or
   * newly created — its tensors are owned by the cache (disposeSeq2SeqCache).
   */
  forward(input: ForwardInput): T5ModelOutput {
    return scope(() => {
      let cache = seq2seqCacheOf(input, 'T5');
      let created: Seq2SeqCache | null = null;
      const update = input.useCache ?? cache !== null;
      const decIds = asIds(input.decoderInputIds, 'decoderInputIds').t;
      if (!decIds) throw new ValueError('T5 forward needs decoderInputIds (start them with decoder_start_token_id)');
      const want = !!input.outputHiddenStates;
      const encHidden: Tensor[] | null = want && !cache ? [] : null;
      let enc: Tensor, encKeep: Tensor | null;
      if (cache) {
        enc = cache.encoderHiddenState;
        encKeep = cache.encoderKeep;
      } else {
        const ids = asIds(input.inputIds, 'inputIds').t;
        if (!ids) throw new ValueError('T5 forward needs inputIds (or pastKeyValues from a previous call)');
        encKeep = keepMask(asIds(input.attentionMask, 'attentionMask').t);
        enc = this.encoder.forward(ids, { keep: encKeep, enc: null, encKeep: null, cache: null, updateCache: false }, encHidden);
        if (update) cache = created = newSeq2SeqCache(enc, encKeep);
      }
      return runDecoder(this.decoder, decIds, {
        keep: keepMask(asIds(input.decoderAttentionMask, 'decoderAttentionMask').t),
        enc, encKeep, cache, updateCache: update,
      }, { enc, encHidden, cache, update, created, wantHidden: want }) as T5ModelOutput;
    });
  }
}
