/**
 * Autoregressive generation for decoder models with an LM head (GPT-2, the LLaMA family): greedy search or
 * seeded sampling (temperature, top-k, top-p), with the key/value cache of the base model. Follows HF
 * transformers' `GenerationMixin.generate` (src/transformers/generation/utils.py): the result holds the
 * prompt followed by the new tokens; rows that produced an end-of-sequence token are padded afterwards;
 * batched prompts must be left-padded, and positions then come from the attention mask (cumsum − 1) as in
 * HF's `prepare_inputs_for_generation`. Warpers run in HF's order: temperature, top-k, top-p.
 */
import type { AdapterModel } from './auto.ts';
import type { KVCache, TensorLike } from './common.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { noGrad } from '../autograd/tape.ts';
import { ShapeError, ValueError } from '../errors.ts';

export interface GenerateOptions {
  /** Number of tokens to append (at most; fewer when every row has ended). */
  maxNewTokens: number;
  /** 0 or undefined: greedy (argmax). Otherwise sample from softmax(logits / temperature). */
  temperature?: number;
  /** Sample only among the k most likely tokens (0 / undefined: no limit). */
  topK?: number;
  /** Nucleus sampling: the smallest set of tokens whose probability reaches topP (1 / undefined: all). */
  topP?: number;
  /** Seed of the sampler (row b draws from its own stream); default: from the global generator (manualSeed). */
  seed?: number;
  /** Reuse keys/values of earlier positions (default true); false recomputes the whole sequence per step. */
  useCache?: boolean;
  /** End-of-sequence id(s); default config.eos_token_id; null: never stop early. */
  eosTokenId?: number | number[] | null;
  /** Id written after a row has ended; default config.pad_token_id, else the first eos id, else 0. */
  padTokenId?: number;
  /** (B, T) 0/1 mask of the prompt, 0 at left padding. */
  attentionMask?: TensorLike;
}

/** Integer rows of a (B, T) tensor or nested array. */
function rowsOf(x: TensorLike, what: string): number[][] {
  const rows = (x instanceof Tensor ? x.tolist() : x) as unknown;
  if (!Array.isArray(rows) || rows.length === 0 || !rows.every((r) => Array.isArray(r)))
    throw new ShapeError(`generate: ${what} must be 2-D (B, T)`);
  const out = (rows as unknown[][]).map((r) => r.map((v) => Number(v)));
  const T = out[0]!.length;
  if (T === 0 || out.some((r) => r.length !== T || r.some((v) => !Number.isInteger(v))))
    throw new ShapeError(`generate: ${what} must be a non-empty (B, T) array of integers with equal row lengths`);
  return out;
}

/** splitmix32: a small, fast, seedable PRNG; uniform floats in [0, 1). */
function makeRng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0, bv = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i]! > bv) { bv = x[off + i]!; best = i; }
  return best;
}

/** One draw from softmax(logits / temperature) restricted by top-k, then top-p (HF's warper order). */
function sample(x: Float32Array, off: number, n: number, temperature: number, topK: number, topP: number, u: number): number {
  let idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[off + b]! - x[off + a]! || a - b);
  if (topK > 0 && topK < n) idx = idx.slice(0, topK);
  const m = x[off + idx[0]!]! / temperature;
  const w = idx.map((i) => Math.exp(x[off + i]! / temperature - m));
  let total = w.reduce((a, b) => a + b, 0);
  if (topP < 1) {
    // keep tokens while the mass before them is below topP (the one that crosses it stays, at least one)
    let acc = 0, keep = 0;
    while (keep < w.length && (keep === 0 || acc < topP * total)) acc += w[keep++]!;
    idx = idx.slice(0, keep);
    w.length = keep;
    total = acc;
  }
  let r = u * total;
  for (let i = 0; i < idx.length; i++) {
    r -= w[i]!;
    if (r < 0) return idx[i]!;
  }
  return idx[idx.length - 1]!;
}

function disposeCache(c: KVCache | null): void {
  for (const l of c?.layers ?? []) {
    l.k.dispose();
    l.v.dispose();
  }
}

/**
 * Generates up to maxNewTokens tokens after each prompt row and returns prompt + new tokens per row.
 * Runs the model as it is (call model.eval() first for deterministic dropout-free output) without
 * recording gradients; per step only the last position goes through the LM head.
 */
export function generate(model: AdapterModel, inputIds: Tensor | number[][], opts: GenerateOptions): number[][] {
  const { maxNewTokens } = opts;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ValueError(`generate: maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
  const temperature = opts.temperature ?? 0;
  const topK = opts.topK ?? 0, topP = opts.topP ?? 1;
  if (!(temperature >= 0)) throw new ValueError(`generate: temperature must be >= 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new ValueError(`generate: topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new ValueError(`generate: topP must be in (0, 1], got ${topP}`);
  if (!model.canGenerate) throw new ValueError(`generate: ${model.modelType} has no LM head (load it with one, or add and activate a causal LM head)`);

  const seqs = rowsOf(inputIds, 'inputIds');
  const B = seqs.length, T0 = seqs[0]!.length;
  const masks = opts.attentionMask !== undefined ? rowsOf(opts.attentionMask, 'attentionMask') : seqs.map((r) => r.map(() => 1));
  if (masks.length !== B || masks[0]!.length !== T0)
    throw new ShapeError(`generate: attentionMask [${masks.length}, ${masks[0]!.length}] must match inputIds [${B}, ${T0}]`);
  masks.forEach((m, b) => {
    if (m[T0 - 1] !== 1) throw new ValueError(`generate: row ${b} is right-padded (attentionMask is 0 at the last position); left-pad batched prompts`);
  });
  const padded = masks.some((m) => m.some((v) => v === 0));

  const cfgEos = model.config.eos_token_id as number | number[] | null | undefined;
  const eosRaw = opts.eosTokenId === undefined ? cfgEos : opts.eosTokenId;
  const eos = new Set<number>(eosRaw === null || eosRaw === undefined ? [] : Array.isArray(eosRaw) ? eosRaw : [eosRaw]);
  const cfgPad = model.config.pad_token_id;
  const pad = opts.padTokenId ?? (typeof cfgPad === 'number' ? cfgPad : eos.size ? [...eos][0]! : 0);

  const sampling = temperature > 0;
  const seed = opts.seed ?? (sampling ? noGrad(() => scope(() => Math.floor(ops.rand([1]).item() * 2 ** 32))) : 0);
  // one stream per row: a row samples the same tokens whatever else is in the batch
  const rngs = seqs.map((_, b) => makeRng(seed + Math.imul(b, 0x9e3779b9)));
  const useCache = opts.useCache ?? true;
  const done = new Array<boolean>(B).fill(false);
  let cache: KVCache | null = null;

  // PEFT prompt tuning (as PEFT's generate): P virtual tokens before every row, ids vocab … vocab + P − 1 that the word
  // embedding resolves to the prompt (see withVirtualTokens); they sit in the sequence, the mask and the cache, and
  // take positions 0 … P − 1. PEFT prefix tuning: the prefixes are attention keys/values outside the sequence, and
  // the real tokens' positions start at prefix_length (HF's past_key_values length).
  const prompt = model.adapters.activePeftPrompt();
  const emb = prompt ? model.base.wordEmbedding?.() : undefined;
  if (prompt && !emb) throw new ValueError(`generate: PEFT prompt tuning needs a word embedding, which ${model.modelType} does not expose`);
  const lead = prompt ? prompt.shape[0]! : 0;
  const virtualIds = Array.from({ length: lead }, (_, j) => emb!.num + j);
  const shift = model.adapters.activePeftPrefixShift();

  try {
    for (let step = 0; step < maxNewTokens; step++) {
      const L = seqs[0]!.length;
      // with a cache only the new token goes in; the mask always covers every position so far (virtual tokens too)
      const from = cache ? cache.length : 0;
      const fullIds = seqs.map((r) => [...virtualIds, ...r]);
      const fullMasks = masks.map((m) => [...virtualIds.map(() => 1), ...m]);
      const stepIds = fullIds.map((r) => r.slice(from));
      let positions: number[][] | undefined;
      if (padded || shift) {
        positions = fullMasks.map((m) => {
          let c = 0;
          return m.map((v) => (c += v, v ? c - 1 + shift : 1)).slice(from);
        });
      }
      const res: { logits: Tensor; cache: KVCache | null } = noGrad(() => scope(() => {
        if (emb) emb.virtual = prompt;
        let out;
        try {
          out = model.base.forward({
            inputIds: tensor(stepIds, undefined, { dtype: 'i64' }),
            attentionMask: padded ? tensor(fullMasks, undefined, { dtype: 'i64' }) : undefined,
            positionIds: positions ? tensor(positions, undefined, { dtype: 'i64' }) : undefined,
            pastKeyValues: cache,
            useCache,
          });
        } finally {
          if (emb) emb.virtual = null;
        }
        const h = out.lastHiddenState;
        const last = ops.slice(h, 1, h.shape[1]! - 1);
        return { logits: ops.cast(model.nextTokenLogits(last), 'f32'), cache: useCache ? out.pastKeyValues ?? null : null };
      }));
      // the new cache holds fresh tensors (keys/values concatenated), so the old one can go
      if (res.cache !== cache) disposeCache(cache);
      cache = res.cache;
      if (cache && cache.length !== lead + L) throw new ValueError(`generate: the model's cache covers ${cache.length} positions, expected ${lead + L}`);
      const logits = res.logits.toArray() as Float32Array;
      const V = res.logits.shape[res.logits.ndim - 1]!;
      res.logits.dispose();

      for (let b = 0; b < B; b++) {
        let tok: number;
        if (done[b]) tok = pad;
        else tok = sampling ? sample(logits, b * V, V, temperature, topK, topP, rngs[b]!()) : argmax(logits, b * V, V);
        seqs[b]!.push(tok);
        masks[b]!.push(1);
        if (eos.has(tok)) done[b] = true;
      }
      if (done.every(Boolean)) break;
    }
  } finally {
    disposeCache(cache);
  }
  return seqs;
}
