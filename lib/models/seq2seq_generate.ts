/**
 * Encoder–decoder (seq2seq) decoding: the key/value cache shared by the T5 and BART decoders
 * (`Seq2SeqCache`) and `generateSeq2seq`, HF `generate()` for encoder–decoder models restricted to greedy
 * search and temperature / top-k / top-p sampling (transformers' generation/utils.py `_sample` and
 * generation/logits_process.py).
 *
 * Cache semantics (HF's EncoderDecoderCache, updated in place): per decoder layer the self-attention keys /
 * values (B, H, T, D) grow by the new positions at every call; the cross-attention keys / values are
 * projected once from the encoder output and reused, so a cached call needs no encoder inputs at all.
 * The cache owns its tensors (they are taken out of every scope() with keep()): free it with
 * `disposeSeq2SeqCache`.
 */
import { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { keep, scope } from '../scope.ts';
import { noGrad } from '../autograd/tape.ts';
import { ValueError } from '../errors.ts';
import { type ForwardInput, type KVCache, type ModelOutput, type TensorLike, asIds } from './common.ts';
import type { AdapterModel } from './auto.ts';

/**
 * KVCache of an encoder–decoder model. `layers[i]` holds decoder layer i's self-attention keys/values
 * (B, H, length, D), as in the decoder-only KVCache; the fields below are what an encoder–decoder adds.
 */
export interface Seq2SeqCache extends KVCache {
  readonly kind: 'seq2seq';
  /** Per decoder layer: cross-attention keys/values (B, H, S, D), projected once from the encoder output. */
  cross: { k: Tensor; v: Tensor }[];
  /** The encoder output (B, S, C); returned as `encoderLastHiddenState` by cached calls. */
  encoderHiddenState: Tensor;
  /** Encoder key-keep mask (bool (B, S), true = token) for cross-attention, or null without padding. */
  encoderKeep: Tensor | null;
}

export function isSeq2SeqCache(c: unknown): c is Seq2SeqCache {
  return !!c && typeof c === 'object' && (c as { kind?: unknown }).kind === 'seq2seq';
}

/** `input.pastKeyValues` as a Seq2SeqCache (null when absent); a decoder-only cache is an error. */
export function seq2seqCacheOf(input: ForwardInput, who: string): Seq2SeqCache | null {
  const c = input.pastKeyValues;
  if (c === undefined || c === null) return null;
  if (!isSeq2SeqCache(c)) throw new ValueError(`${who}: pastKeyValues must be the Seq2SeqCache returned by a previous call with useCache`);
  return c;
}

/**
 * A new, empty cache around an encoder output. The cache gets its own handles (aliases share the memory),
 * so the caller's tensors stay the caller's.
 */
export function newSeq2SeqCache(encoderHiddenState: Tensor, encoderKeep: Tensor | null): Seq2SeqCache {
  return {
    kind: 'seq2seq',
    layers: [],
    length: 0,
    cross: [],
    encoderHiddenState: keep(ops.alias(encoderHiddenState)),
    encoderKeep: encoderKeep ? keep(ops.alias(encoderKeep)) : null,
  };
}

/**
 * Decoder layer `i`'s self-attention keys/values with the cached positions in front. With `update` the
 * cache now holds the result (the previous tensors are freed); without it the cache is left untouched.
 */
export function cachedSelfKV(cache: Seq2SeqCache | null, i: number, k: Tensor, v: Tensor, update: boolean): { k: Tensor; v: Tensor } {
  if (!cache) return { k, v };
  const past = cache.layers[i];
  const kv = past ? { k: ops.concat([past.k, k], 2), v: ops.concat([past.v, v], 2) } : { k, v };
  if (update) {
    cache.layers[i] = { k: keep(ops.alias(kv.k)), v: keep(ops.alias(kv.v)) };
    past?.k.dispose();
    past?.v.dispose();
  }
  return kv;
}

/** Decoder layer `i`'s cross-attention keys/values: from the cache, or computed (and cached with `update`). */
export function cachedCrossKV(cache: Seq2SeqCache | null, i: number, compute: () => { k: Tensor; v: Tensor }, update: boolean): { k: Tensor; v: Tensor } {
  const hit = cache?.cross[i];
  if (hit) return hit;
  const kv = compute();
  if (cache && update) cache.cross[i] = { k: keep(ops.alias(kv.k)), v: keep(ops.alias(kv.v)) };
  return kv;
}

/** Frees every tensor the cache holds and empties it. */
/** The decoder pass shared by T5 and BART: runs it, advances the cache and assembles the output. */
export function runDecoder<Ctx>(
  decoder: { forward(ids: Tensor, ctx: Ctx, hidden: Tensor[] | null): Tensor },
  decIds: Tensor,
  ctx: Ctx,
  opts: { enc: Tensor; encHidden: Tensor[] | null; cache: Seq2SeqCache | null; update: boolean; created: Seq2SeqCache | null; wantHidden: boolean },
): ModelOutput & { encoderHiddenStates?: Tensor[] } {
  const { enc, encHidden, cache, update, created } = opts;
  try {
    const past = cache?.length ?? 0;
    const decHidden: Tensor[] | null = opts.wantHidden ? [] : null;
    const h = decoder.forward(decIds, ctx, decHidden);
    if (cache && update) cache.length = past + decIds.shape[1]!;
    // a fresh handle, so that disposing the output never frees the cache's encoder state
    const out: ModelOutput & { encoderHiddenStates?: Tensor[] } = { lastHiddenState: h, encoderLastHiddenState: ops.alias(enc) };
    if (decHidden) out.hiddenStates = decHidden;
    if (encHidden) out.encoderHiddenStates = encHidden;
    if (cache && update) out.pastKeyValues = cache;
    return out;
  } catch (e) {
    if (created) disposeSeq2SeqCache(created);  // the cache owns kept tensors: free them on failure
    throw e;
  }
}

export function disposeSeq2SeqCache(cache: Seq2SeqCache): void {
  for (const { k, v } of [...cache.layers, ...cache.cross]) {
    k.dispose();
    v.dispose();
  }
  cache.encoderHiddenState.dispose();
  cache.encoderKeep?.dispose();
  cache.layers = [];
  cache.cross = [];
  cache.length = 0;
}

// ---- generation --------------------------------------------------------------------------------------

export interface GenerateSeq2seqOptions {
  /** Number of tokens to generate after the decoder start token (fewer when every row hit EOS). */
  maxNewTokens: number;
  /** Encoder attention mask (B, S) of 0/1; default: every token attended. */
  attentionMask?: TensorLike;
  /** Default: config.decoder_start_token_id. */
  decoderStartTokenId?: number;
  /** Default: config.eos_token_id (a number or a list); null/absent = never stop early. */
  eosTokenId?: number | number[] | null;
  /** Token written after a row finished; default config.pad_token_id, else the first EOS id, else 0. */
  padTokenId?: number;
  /**
   * Sampling: any of temperature (> 0), topK, topP switches from greedy search to sampling, applied in HF's
   * order temperature → top-k → top-p. temperature 0 forces greedy search.
   */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler's generator (default: random). */
  seed?: number;
  /** Decode with the key/value cache (default true); false re-runs the whole model at every step. */
  useCache?: boolean;
  /** Called after every step with the step index and the token chosen for each row. */
  onStep?: (step: number, tokens: number[]) => void;
}

/** The parts of AdapterModel generation uses (a flex-head model whose architecture has an LM head). */
type Seq2SeqLM = Pick<AdapterModel, 'config' | 'base' | 'forward' | 'lmHeadKind'>;

/**
 * Autoregressive decoding for encoder–decoder models (T5, BART). Returns one token list per input row,
 * as HF `generate()` does: the decoder start token, then the generated tokens; rows that finished (EOS)
 * are padded with padTokenId, and decoding stops when every row has finished. Runs without the autograd
 * tape; the model's train/eval mode is left as it is (call `.eval()` first so dropout is off).
 */
export function generateSeq2seq(model: Seq2SeqLM, inputIds: TensorLike, opts: GenerateSeq2seqOptions): number[][] {
  const cfg = model.config;
  if (!model.lmHeadKind) throw new ValueError(`generateSeq2seq: model_type ${JSON.stringify(cfg.model_type)} has no LM head`);
  const maxNew = opts.maxNewTokens;
  if (!Number.isInteger(maxNew) || maxNew < 0) throw new ValueError(`generateSeq2seq: maxNewTokens must be a non-negative integer, got ${maxNew}`);
  const start = opts.decoderStartTokenId ?? cfg.decoder_start_token_id;
  if (typeof start !== 'number') throw new ValueError('generateSeq2seq: no decoderStartTokenId given and config.json has no decoder_start_token_id');
  const eosRaw = opts.eosTokenId !== undefined ? opts.eosTokenId : cfg.eos_token_id;
  const eos = new Set<number>(typeof eosRaw === 'number' ? [eosRaw] : Array.isArray(eosRaw) ? (eosRaw as number[]) : []);
  const pad = opts.padTokenId ?? (typeof cfg.pad_token_id === 'number' ? cfg.pad_token_id : eos.size ? [...eos][0]! : 0);
  const pick = tokenPicker(opts);
  const useCache = opts.useCache ?? true;
  // T5 with tied embeddings scales the decoder output by d_model^-0.5 before the LM head (HF
  // T5ForConditionalGeneration, Python T5AdapterModel). AdapterModel.forward does not apply the base
  // model's lmScale, so it is applied here; the tied head has no bias, hence logits(s·h) = s·logits(h).
  // If AdapterModel starts applying lmScale itself, remove this factor.
  const lmScale = 1;  // AdapterModel.lmLogits applies the base model's lmScale itself

  return noGrad(() => scope(() => {
    const ids = asIds(inputIds, 'inputIds').t;
    if (!ids || ids.ndim !== 2) throw new ValueError('generateSeq2seq: inputIds must be (B, S)');
    const mask = asIds(opts.attentionMask, 'attentionMask').t ?? undefined;
    const B = ids.shape[0]!;
    const seqs = Array.from({ length: B }, () => [start]);
    const done = new Array<boolean>(B).fill(false);
    let cache: Seq2SeqCache | null = null;
    try {
      for (let step = 0; step < maxNew && !done.every(Boolean); step++) {
        const logits = scope(() => {
          let out: ModelOutput;
          if (!useCache) out = model.forward({ inputIds: ids, attentionMask: mask, decoderInputIds: seqs });
          else if (!cache) out = model.forward({ inputIds: ids, attentionMask: mask, decoderInputIds: seqs, useCache: true });
          else out = model.forward({ decoderInputIds: seqs.map((s) => [s[s.length - 1]!]), pastKeyValues: cache, useCache: true });
          if (useCache) {
            if (!isSeq2SeqCache(out.pastKeyValues)) throw new ValueError('generateSeq2seq: the model returned no Seq2SeqCache');
            cache = out.pastKeyValues;
          }
          // forward's logits come from the active head when there is one: only a seq2seq LM head gives (B, T, V)
          const hm = (model as { headManager?: { active: unknown; get(n: string): { config: { head_type: string } } } }).headManager;
          const headOk = !hm || hm.active === null || (typeof hm.active === 'string' && hm.get(hm.active).config.head_type === 'seq2seq_lm');
          if (!out.logits || out.logits.ndim !== 3 || !headOk)
            throw new ValueError(`generateSeq2seq: the active head gives logits of shape [${out.logits?.shape ?? []}], not (B, T, vocab); activate a seq2seq LM head, or none`);
          const last = ops.slice(out.logits!, 1, -1).squeeze(1);  // (B, V)
          return (last.dtype === 'f32' ? last : last.to('f32')).toArray() as Float32Array;
        });
        const V = logits.length / B;
        const chosen = seqs.map((s, b) => {
          const t = done[b] ? pad : pick(logits.subarray(b * V, (b + 1) * V), lmScale);
          if (eos.has(t)) done[b] = true;
          s.push(t);
          return t;
        });
        opts.onStep?.(step, chosen);
      }
    } finally {
      if (cache) disposeSeq2SeqCache(cache);
    }
    return seqs;
  }));
}

// ---- token choice (JS side: one row of logits at a time) ---------------------------------------------

function tokenPicker(opts: GenerateSeq2seqOptions): (logits: Float32Array, scale: number) => number {
  const { temperature, topK, topP } = opts;
  if (temperature !== undefined && !(temperature >= 0)) throw new ValueError(`generateSeq2seq: temperature must be >= 0, got ${temperature}`);
  if (topK !== undefined && !(Number.isInteger(topK) && topK > 0)) throw new ValueError(`generateSeq2seq: topK must be a positive integer, got ${topK}`);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new ValueError(`generateSeq2seq: topP must be in (0, 1], got ${topP}`);
  const sample = temperature !== 0 && (temperature !== undefined || topK !== undefined || topP !== undefined);
  if (!sample) return (logits) => argmax(logits);  // a positive scale never changes the argmax
  const rand = mulberry32(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  const temp = temperature ?? 1;
  return (logits, scale) => {
    const V = logits.length;
    const s = new Float64Array(V);
    for (let i = 0; i < V; i++) s[i] = (logits[i]! * scale) / temp;
    if (topK !== undefined && topK < V) {
      // HF TopKLogitsWarper: drop scores below the k-th largest (ties with it are kept)
      const kth = [...s].sort((a, b) => b - a)[topK - 1]!;
      for (let i = 0; i < V; i++) if (s[i]! < kth) s[i] = -Infinity;
    }
    if (topP !== undefined && topP < 1) {
      // HF TopPLogitsWarper: ascending sort, drop tokens whose cumulative probability is <= 1 - p,
      // always keeping the most likely one
      const order = [...s.keys()].sort((a, b) => s[a]! - s[b]!);
      const p = softmax(Float64Array.from(order, (i) => s[i]!));
      let cum = 0;
      for (let r = 0; r < V - 1; r++) {
        cum += p[r]!;
        if (cum <= 1 - topP) s[order[r]!] = -Infinity;
      }
    }
    const p = softmax(s);
    let u = rand(), last = 0;
    for (let i = 0; i < V; i++) {
      if (p[i]! <= 0) continue;
      last = i;
      u -= p[i]!;
      if (u < 0) return i;
    }
    return last;  // rounding left u ≥ 0: the last token with probability > 0
  };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;  // first maximum, like torch.argmax
  return best;
}

function softmax(s: Float64Array): Float64Array {
  let m = -Infinity;
  for (const v of s) if (v > m) m = v;
  const out = new Float64Array(s.length);
  let z = 0;
  for (let i = 0; i < s.length; i++) z += out[i] = Math.exp(s[i]! - m);
  for (let i = 0; i < s.length; i++) out[i]! /= z;
  return out;
}

/** Small seeded uniform [0, 1) generator (mulberry32), so that a seed reproduces a sample. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
