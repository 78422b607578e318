/**
 * What every model file shares: config reading, input coercion (tensors or nested number arrays),
 * multi-head reshapes, and HF-style masks.
 */
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { Linear, type Activation } from '../nn/layers.ts';
import { autocastProjection } from '../autocast.ts';
import { ValueError } from '../errors.ts';

export type HFConfig = Record<string, unknown>;

export type TensorLike = Tensor | number[] | number[][] | number[][][] | number[][][][];

/** Integer inputs (ids, masks) as an i64 tensor; nested arrays are converted (the caller disposes). */
export function asIds(x: TensorLike | undefined | null, what: string): { t: Tensor | null; owned: boolean } {
  if (x === undefined || x === null) return { t: null, owned: false };
  if (x instanceof Tensor) return { t: x, owned: false };
  if (!Array.isArray(x)) throw new ValueError(`${what} must be a Tensor or a nested array of integers`);
  return { t: tensor(x as number[][], undefined, { dtype: 'i64' }), owned: true };
}
export function asFloat(x: TensorLike | undefined | null, what: string): { t: Tensor | null; owned: boolean } {
  if (x === undefined || x === null) return { t: null, owned: false };
  if (x instanceof Tensor) return { t: x, owned: false };
  if (!Array.isArray(x)) throw new ValueError(`${what} must be a Tensor or a nested array of numbers`);
  return { t: tensor(x as number[][]), owned: true };
}

export function num(cfg: HFConfig, key: string, def?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (def === undefined) throw new ValueError(`config.json: missing '${key}'`);
    return def;
  }
  if (typeof v !== 'number') throw new ValueError(`config.json: '${key}' must be a number, got ${JSON.stringify(v)}`);
  // sizes and counts (num_*, *_size, n_*, vocab, positions, ...) must be non-negative integers
  if (/^(num_|n_)|_size$|^vocab|positions$|_heads$|_layers$|^d_(model|kv|ff)$|_buckets$/.test(key) && !(Number.isInteger(v) && v >= 0))
    throw new ValueError(`config.json: '${key}' must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}
export function str(cfg: HFConfig, key: string, def: string): string {
  const v = cfg[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'string') throw new ValueError(`config.json: '${key}' must be a string`);
  return v;
}
export function bool(cfg: HFConfig, key: string, def: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return def;
  return !!v;
}

/** (B, T, H·D) → (B, H, T, D) */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const [B, T, C] = x.shape as [number, number, number];
  return ops.permute(ops.reshape(x, [B, T, heads, C / heads]), [0, 2, 1, 3]);
}
/** (B, H, T, D) → (B, T, H·D) */
export function mergeHeads(x: Tensor): Tensor {
  const [B, H, T, D] = x.shape as [number, number, number, number];
  return ops.reshape(ops.permute(x, [0, 2, 1, 3]), [B, T, H * D]);
}

/** attention_mask (B, T) of 0/1 → bool key-keep mask for the attention op. */
/**
 * t on `device`: itself when it is there, else a copy (owned by the caller's scope). Models use it for the integer
 * inputs and masks they build on the host, so that a model moved with `to('cuda')` takes host inputs.
 */
export function onDevice(t: Tensor, device: string): Tensor;
export function onDevice(t: Tensor | null, device: string): Tensor | null;
export function onDevice(t: Tensor | null, device: string): Tensor | null {
  return !t || t.device === device ? t : t.to(device);
}

export function keepMask(mask: Tensor | null): Tensor | null {
  if (!mask) return null;
  return mask.dtype === 'bool' ? mask : ops.ne(mask, 0);
}

export interface ModelOutput {
  lastHiddenState: Tensor;
  /** The active head's loss when labels were given. */
  loss?: Tensor;
  /** Question answering: per-token start / end logits (B, T). */
  startLogits?: Tensor;
  endLogits?: Tensor;
  /** Several active heads (Parallel / BatchSplit): one output per head. */
  headOutputs?: { head: string; logits: Tensor; loss?: Tensor; startLogits?: Tensor; endLogits?: Tensor }[];
  hiddenStates?: Tensor[];
  pooledOutput?: Tensor;
  logits?: Tensor;
  encoderLastHiddenState?: Tensor;
  pastKeyValues?: KVCache;
  /**
   * With `outputAdapterFusionAttentions`: the AdapterFusion attention probabilities (B, T, n_adapters), by fusion
   * name ('a,b'), layer index and location ('mh_adapter' / 'output_adapter'), as the Python library's
   * `adapter_fusion_attentions`. Detached; owned by the caller's scope like the other outputs.
   */
  adapterFusionAttentions?: Record<string, Record<number, Record<string, Tensor>>>;
}

/** Per-layer key/value cache for generation: (B, Hkv, T, D) each. */
export interface KVCache {
  layers: { k: Tensor; v: Tensor }[];
  length: number;
}

export interface ForwardInput {
  inputIds?: TensorLike;
  attentionMask?: TensorLike;
  tokenTypeIds?: TensorLike;
  positionIds?: TensorLike;
  pixelValues?: TensorLike;
  decoderInputIds?: TensorLike;
  decoderAttentionMask?: TensorLike;
  outputHiddenStates?: boolean;
  /** Return the AdapterFusion attention probabilities (ModelOutput.adapterFusionAttentions). */
  outputAdapterFusionAttentions?: boolean;
  pastKeyValues?: KVCache | null;
  useCache?: boolean;
  /**
   * Mixed-adapter batch (serving many adapters at once): one adapter name, or null for the base model, per row.
   * Overrides the active setup for this call; each row equals running it with its own adapter alone.
   */
  adapterIds?: (string | null)[];
  /**
   * Targets for the active head's loss (ModelOutput.loss), as transformers takes them: class ids (B) or floats
   * for regression / multilabel, token ids (B, T) for tagging and LM heads (−100 = ignored; causal LM shifts).
   * Without a flex head, an LM-head model computes the LM loss from its own logits.
   */
  labels?: TensorLike;
  /** Run this prediction head for this call instead of the active one (the Python library's forward(head=...)). */
  head?: string | null;
  /** Question-answering targets (B). */
  startPositions?: TensorLike;
  endPositions?: TensorLike;
}

/** Repeats tensors along the batch to the largest batch among them (Parallel adapter blocks, see matchBatch). */
/**
 * A feed-forward block down(act(up(x))) that disposes its two wide intermediates as soon as they are used: the tape
 * keeps what its backward needs (dispose frees a tensor once no graph node retains it), so the input of a frozen
 * projection is not held to the end of the training step.
 */
export function feedForward(x: Tensor, up: { forward(t: Tensor): Tensor }, act: (t: Tensor) => Tensor, down: { forward(t: Tensor): Tensor }): Tensor {
  const u = up.forward(x);
  // under CPU autocast, an activation that only a plain bf16 projection reads comes back as bf16 (that GEMM rounds
  // its input to bf16 anyway: the same product, half the bytes)
  const kind = (act as Activation).gemmKind;
  const toGemm = kind && down instanceof Linear && !down.loraHost && u.device === 'cpu' && autocastProjection(down.weight);
  const g = toGemm ? ops.activationForGemm(kind, u) : act(u);
  if (g !== u) u.dispose();
  const f = down.forward(g);
  if (f !== g) g.dispose();
  return f;
}

export function alignBatch(...ts: Tensor[]): Tensor[] {
  const B = Math.max(...ts.map((t) => t.shape[0]!));
  return ts.map((t) => {
    const b = t.shape[0]!;
    return b === B || b === 0 || B % b ? t : ops.concat(Array.from({ length: B / b }, () => t), 0);
  });
}
/** A mask or other per-row tensor repeated to `batch` rows when a Parallel block replicated the batch. */
/**
 * A prefix site whose Parallel block replicated the batch (the first Parallel site of the forward pass) returns keys
 * for more rows than the attention has: its queries, keys, values and masks follow (adjust_tensors_for_parallel).
 */
export function followPrefix<T extends (Tensor | null)[]>(pre: { k: Tensor } | null, ...ts: T): T {
  if (!pre) return ts;
  const b = pre.k.shape[0]!;
  return ts.map((t) => rowsTo(t, b)) as T;
}

export function rowsTo(t: Tensor | null, batch: number): Tensor | null {
  if (!t) return t;
  const b = t.shape[0]!;
  return b === batch || b === 0 || batch % b ? t : ops.concat(Array.from({ length: batch / b }, () => t), 0);
}
