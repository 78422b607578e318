/**
 * Neural-network ops (torch.nn.functional semantics): matmul, linear (incl. GPT-2's Conv1D layout),
 * softmax / logSoftmax, layerNorm, rmsNorm, embedding, dropout, crossEntropy, mseLoss, rotary embeddings
 * and fused scaled-dot-product attention. Each forward sits next to its derivative; the heavy backward
 * passes run native `_bwd` kernels.
 */
import { Tensor, callOp, withGrad } from '../tensor.ts';
import { DTypeError, ShapeError, ValueError } from '../errors.ts';
import { assertTensor, broadcastShapes, checkFloat, isFloat, normDim, one, sumToShape } from './util.ts';
import { alias, permute, reshape, squeeze, transpose, unsqueeze } from './shape.ts';
import { attentionExplicit } from './attention_explicit.ts';
import { full, nextRandom, zeros } from './creation.ts';
import { add, div, neg, sub, mul, where } from './elementwise.ts';
import { mean as meanOp, sum as sumOp } from './reduce.ts';
import { autocastActive, autocastProjection, bf16Activation, bf16Weight } from '../autocast.ts';
import { isGradEnabled } from '../autograd/tape.ts';
import { keep } from '../scope.ts';

function reduceOwned(t: Tensor, shape: number[]): Tensor {
  const r = sumToShape(t, shape);
  if (r !== t) t.dispose();
  return r;
}

/** Matrix product with torch.matmul semantics (1-D promotion, broadcast batch dims). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  assertTensor(a, 'matmul', 'first operand');
  assertTensor(b, 'matmul', 'second operand');
  if (a.ndim === 0 || b.ndim === 0) throw new ShapeError(`matmul: both operands must be at least 1-D, got [${a.shape}] and [${b.shape}]`);
  if (a.ndim === 1 || b.ndim === 1) {
    const a2 = a.ndim === 1 ? unsqueeze(a, 0) : a;
    const b2 = b.ndim === 1 ? unsqueeze(b, -1) : b;
    const y = matmul(a2, b2);
    let r = y;
    if (b.ndim === 1) r = squeeze(r, -1);
    if (a.ndim === 1) r = squeeze(r, -2 + (b.ndim === 1 ? 1 : 0));
    return r;
  }
  const y = one(callOp('matmul', [a, b]));
  const aS = a.shape, bS = b.shape;  // (an operand the backward does not read is not saved: its shape is kept)
  withGrad([y], 'matmul', [a, b], ([g]) => {
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (a.requiresGrad) {
      const bt = transpose(b, -2, -1);
      ga = reduceOwned(one(callOp('matmul', [g!, bt])), aS);
      bt.dispose();
    }
    if (b.requiresGrad) {
      const at = transpose(a, -2, -1);
      gb = reduceOwned(one(callOp('matmul', [at, g!])), bS);
      at.dispose();
    }
    return [ga, gb];
  }, [], [b.requiresGrad ? a : null, a.requiresGrad ? b : null]);  // (each operand only for the other's gradient)
  return y;
}

export interface LinearOptions {
  /** 'linear': weight (out, in), y = x·Wᵀ + b (nn.Linear). 'conv1d': weight (in, out), y = x·W + b (GPT-2 Conv1D). */
  layout?: 'linear' | 'conv1d';
}

/** y = x·Wᵀ + b (or x·W + b for the Conv1D layout), bias optional. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: LinearOptions = {}): Tensor {
  assertTensor(x, 'linear', 'input');
  assertTensor(weight, 'linear', 'weight');
  const layout = opts.layout ?? 'linear';
  if (bias !== undefined && bias !== null) assertTensor(bias, 'linear', 'bias');
  // autocast: bf16 GEMMs for real projections; a low-rank or tiny one (LoRA's A/B, a 2-class head) stays f32, where
  // casting its input would cost more than its GEMM and bf16 tiles would be mostly padding
  // (a bf16 input on the CPU: an MLP activation handed over as bf16, ops.activationForGemm)
  if ((x.dtype === 'f32' || (x.dtype === 'bf16' && x.device === 'cpu')) && weight.dtype === 'f32' && autocastProjection(weight))
    return linearBf16(x, weight, bias ?? null, layout);
  const y = one(callOp('linear', [x, weight, bias ?? null], { layout }));
  const wShape = weight.shape;
  withGrad([y], 'linear', [x, weight, bias ?? null], ([g]) => linearGrads(g!, g!, weight, x, { x, weight, bias: bias ?? null, layout, wShape }, {}),
    [], [weight.requiresGrad ? x : null, x.requiresGrad ? weight : null]);
  return y;
}

/**
 * The gradients of y = x·Wᵀ + b (Conv1D: x·W + b) from g: dx = g·W (g·Wᵀ), dW = gᵀ·x (xᵀ·g), db = Σ g over the
 * leading dims (in the bias's dtype). The GEMMs read G, W and X (bf16 copies or {mixed} operands under autocast)
 * with `attrs`; dW needs X (null: the weight is frozen).
 */
function linearGrads(g: Tensor, G: Tensor, W: Tensor, X: Tensor | null,
  p: { x: Tensor; weight: Tensor; bias: Tensor | null; layout: 'linear' | 'conv1d'; wShape?: number[] }, attrs: Record<string, number>): (Tensor | null)[] {
  const conv = p.layout === 'conv1d';
  // (the weight's shape from the forward: a frozen weight is not saved, and may be gone by now)
  const ws = p.wShape ?? p.weight.shape;
  const inF = conv ? ws[0]! : ws[1]!, outF = conv ? ws[1]! : ws[0]!;
  let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
  if (p.x.requiresGrad) {
    const w = conv ? transpose(W, 0, 1) : W;
    gx = one(callOp('matmul', [G, w], attrs));
    if (w !== W) w.dispose();
  }
  if (p.weight.requiresGrad && X) {
    const g2 = reshape(G, [-1, outF]), x2 = reshape(X, [-1, inF]);
    const [l, r] = conv ? [transpose(x2, 0, 1), g2] : [transpose(g2, 0, 1), x2];
    gw = one(callOp('matmul', [l, r], attrs));
    for (const t of [g2, x2, l, r]) t.dispose();
  }
  if (p.bias && p.bias.requiresGrad) {
    gb = one(callOp('sum', [g], { dims: [...Array(g.ndim - 1).keys()], keepdim: false }));
    if (gb.dtype !== p.bias.dtype) gb = castOwned(gb, p.bias.dtype);
  }
  return [gx, gw, gb];
}

/**
 * Mixed precision (lib/autocast.ts): bf16 GEMM inputs, f32 accumulation and f32 output, forward and backward;
 * the bias and every gradient stay f32.
 */
function linearBf16(x: Tensor, weight: Tensor, bias: Tensor | null, layout: 'linear' | 'conv1d'): Tensor {
  if (x.device === 'cpu' && weight.device === 'cpu' && (!bias || bias.device === 'cpu')) return linearMixedCpu(x, weight, bias, layout);
  const toBf16 = (t: Tensor) => one(callOp('cast', [t], { dtype: 'bf16' }));
  const wb = bf16Weight(weight, (w) => keep(toBf16(w)));
  const xb = bf16Activation(x, (t) => keep(toBf16(t)), alias);
  const y = one(callOp('linear', [xb, wb, bias], { layout, f32_out: 1 }));
  // the bf16 input is needed again only for the weight's gradient: frozen weights (adapter training) drop it now
  const keepX = weight.requiresGrad && isGradEnabled();
  if (!keepX) xb.dispose();
  withGrad([y], 'linear', [x, weight, bias], ([g]) => {
    const gb16 = toBf16(g!);
    try {
      return linearGrads(g!, gb16, wb, keepX ? xb : null, { x, weight, bias, layout }, { f32_out: 1 });
    } finally {
      gb16.dispose();
    }
  }, keepX ? [xb] : [], keepX ? [xb, wb] : [wb]);
  return y;
}

/**
 * linearBf16 on the CPU: the GEMMs take the f32 weight, input and gradient as they are and round them to bf16
 * while packing ({mixed: 1}), so nothing is cast in a separate pass and no bf16 weight copy is kept. Only a
 * trained weight's gradient needs the input again: that input is kept as a bf16 copy (half an f32 one).
 */
function linearMixedCpu(x: Tensor, weight: Tensor, bias: Tensor | null, layout: 'linear' | 'conv1d'): Tensor {
  const keepX = weight.requiresGrad && isGradEnabled();
  const xb = !keepX ? null : x.dtype === 'bf16' ? alias(x) : bf16Activation(x, (t) => keep(one(callOp('cast', [t], { dtype: 'bf16' }))), alias);
  const y = one(callOp('linear', [xb ?? x, weight, bias], { layout, mixed: 1 }));
  withGrad([y], 'linear', [x, weight, bias], ([g]) => linearGrads(g!, g!, weight, xb, { x, weight, bias, layout }, { mixed: 1 }),
    xb ? [xb] : [], xb ? [xb, weight] : [weight]);
  return y;
}

function castOwned(t: Tensor, dt: string): Tensor {
  const r = one(callOp('cast', [t], { dtype: dt }));
  t.dispose();
  return r;
}

/** Softmax along dim (numerically stable). */
export function softmax(x: Tensor, dim: number): Tensor {
  assertTensor(x, 'softmax', 'input');
  checkFloat(x, 'softmax');
  const d = normDim(dim, x.ndim, 'softmax');
  const y = one(callOp('softmax', [x], { dim: d }));
  withGrad([y], 'softmax', [x], ([g]) => [one(callOp('softmax_bwd', [y, g!], { dim: d }))], [], [y]);
  return y;
}

/** log(softmax(x)) along dim, computed stably. */
export function logSoftmax(x: Tensor, dim: number): Tensor {
  assertTensor(x, 'logSoftmax', 'input');
  checkFloat(x, 'logSoftmax');
  const d = normDim(dim, x.ndim, 'logSoftmax');
  const y = one(callOp('log_softmax', [x], { dim: d }));
  withGrad([y], 'logSoftmax', [x], ([g]) => [one(callOp('log_softmax_bwd', [y, g!], { dim: d }))], [], [y]);
  return y;
}

/** Layer normalisation over the last dim (weight and bias optional). */
export function layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  assertTensor(x, 'layerNorm', 'input');
  checkFloat(x, 'layerNorm');
  if (weight !== undefined && weight !== null) assertTensor(weight, 'layerNorm', 'weight');
  if (bias !== undefined && bias !== null) assertTensor(bias, 'layerNorm', 'bias');
  const [y, mu, rstd] = callOp('layer_norm', [x, weight ?? null, bias ?? null], { eps });
  const wd = weight?.dtype, bd = bias?.dtype, hasW = !!weight, hasB = !!bias;
  withGrad([y!], 'layerNorm', [x, weight ?? null, bias ?? null], ([g]) => {
    // a frozen weight / bias (adapter training): the kernel skips its column sums (returning zeros in its place)
    const needW = hasW && weight!.requiresGrad, needB = hasB && bias!.requiresGrad;
    const outs = callOp('layer_norm_bwd', [x, weight ?? null, mu!, rstd!, g!], { has_bias: hasB, need_dw: needW, need_db: needB });
    const dx = outs[0]!;
    let dw = hasW ? outs[1]! : null;
    let db = hasB ? outs[hasW ? 2 : 1]! : null;
    if (dw && !needW) dw = (dw.dispose(), null);
    if (db && !needB) db = (db.dispose(), null);
    const fix = (t: Tensor | null, dt: string | undefined) => (t && dt && t.dtype !== dt ? castOwned(t, dt) : t);
    return [dx, fix(dw, wd), fix(db, bd)];
  }, [mu!, rstd!], [x, weight]);
  return y!;
}

/** RMS normalisation over the last dim: x · rsqrt(mean(x²) + eps) · weight (LLaMA, T5). */
export function rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
  assertTensor(x, 'rmsNorm', 'input');
  checkFloat(x, 'rmsNorm');
  if (weight !== undefined && weight !== null) assertTensor(weight, 'rmsNorm', 'weight');
  const [y, mu, rstd] = callOp('rms_norm', [x, weight ?? null], { eps });
  const wd = weight?.dtype;
  withGrad([y!], 'rmsNorm', [x, weight ?? null], ([g]) => {
    const needW = !!weight && weight.requiresGrad;
    const outs = callOp('rms_norm_bwd', [x, weight ?? null, mu!, rstd!, g!], { has_bias: false, need_dw: needW });
    let dw = wd ? outs[1]! : null;
    if (dw && !needW) dw = (dw.dispose(), null);
    return [outs[0]!, dw && wd && dw.dtype !== wd ? castOwned(dw, wd) : dw];
  }, [mu!, rstd!], [x, weight]);
  return y!;
}

/** weight[ids]: ids integer (...), weight (V, C) → (..., C). Backward scatter-adds into the rows. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  assertTensor(ids, 'embedding', 'ids');
  assertTensor(weight, 'embedding', 'weight');
  const y = one(callOp('embedding', [ids, weight]));
  const V = weight.shape[0]!, wd = weight.dtype;
  withGrad([y], 'embedding', [null, weight], ([g]) => {
    const dw = one(callOp('embedding_bwd', [ids, g!], { num_embeddings: V }));
    return [null, dw.dtype === wd ? dw : castOwned(dw, wd)];
  }, [], [ids]);
  return y;
}

export interface DropoutOptions {
  /** Apply dropout (default true); false returns the input unchanged (eval mode). */
  training?: boolean;
  /** Use this seed instead of the global generator. */
  seed?: number;
}

/** Zeroes elements with probability p and scales the rest by 1/(1−p). Same seed → same mask. */
export function dropout(x: Tensor, p = 0.5, opts: DropoutOptions = {}): Tensor {
  assertTensor(x, 'dropout', 'input');
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new ValueError(`dropout: p must be in [0, 1], got ${p}`);
  if (opts.training === false || p === 0) return x.detachKeepGraph();
  const st = opts.seed !== undefined ? { seed: opts.seed, offset: 0 } : nextRandom(x.numel);
  const attrs = { p, seed: st.seed, offset: st.offset };
  const y = one(callOp('dropout', [x], attrs));
  withGrad([y], 'dropout', [x], ([g]) => [one(callOp('dropout', [g!], attrs))], [], []);
  return y;
}

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  labelSmoothing?: number;
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * Cross-entropy of logits (N, C) — or (..., C) with classes last, as HF flattens LM logits — against
 * integer targets (N) / (...). Mean over non-ignored targets by default.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  assertTensor(logits, 'crossEntropy', 'logits');
  assertTensor(targets, 'crossEntropy', 'targets');
  const reduction = opts.reduction ?? 'mean';
  if (!['mean', 'sum', 'none'].includes(reduction)) throw new ValueError(`crossEntropy: reduction must be mean, sum or none, got '${reduction}'`);
  if (logits.ndim < 2) throw new ShapeError(`crossEntropy: logits must be (N, C), got [${logits.shape}]`);
  // class probabilities (float targets of the logits' shape), as F.cross_entropy: −Σ_c t_c·log_softmax(x)_c per sample
  if (isFloat(targets.dtype) && targets.shape.join() === logits.shape.join()) {
    const cdim = 1, C = logits.shape[cdim]!, eps = opts.labelSmoothing ?? 0;
    const t = eps > 0 ? add(mul(targets, 1 - eps), eps / C) : targets;
    const per = neg(sumOp(mul(t, logSoftmax(logits, cdim)), cdim));
    return reduction === 'none' ? per : reduction === 'sum' ? sumOp(per) : div(sumOp(per), per.numel);
  }
  // (N, C, d1, …) with targets (N, d1, …), the class dim second as in F.cross_entropy: moved last, then as below
  if (logits.ndim > 2 && targets.shape.join() === [logits.shape[0]!, ...logits.shape.slice(2)].join()) {
    const perm = [0, ...Array.from({ length: logits.ndim - 2 }, (_, i) => i + 2), 1];
    const moved = permute(logits, perm);
    try {
      return crossEntropyLast(moved, targets, opts, reduction);
    } finally {
      moved.dispose();
    }
  }
  return crossEntropyLast(logits, targets, opts, reduction);
}

/** Cross-entropy with the classes in the last dim of logits (…, C) and targets (…). */
function crossEntropyLast(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions, reduction: string): Tensor {
  const C = logits.shape[logits.ndim - 1]!;
  const lead = logits.shape.slice(0, -1);
  // classes last (…, C) with targets (…): HF's LM layout
  if (targets.shape.join() !== lead.join())
    throw new ShapeError(`crossEntropy: targets [${targets.shape}] must have shape [${lead}] (classes last) or [${[logits.shape[0], ...logits.shape.slice(2)]}] (classes at dim 1) for logits [${logits.shape}]`);
  const flat = logits.ndim === 2 ? logits : reshape(logits, [-1, C]);
  const tflat = targets.ndim === 1 ? targets : reshape(targets, [-1]);
  const attrs = { ignore_index: opts.ignoreIndex ?? -100, label_smoothing: opts.labelSmoothing ?? 0, reduction };
  const [loss, lse] = callOp('cross_entropy', [flat, tflat], attrs);
  withGrad([loss!], 'crossEntropy', [flat], ([g]) => [one(callOp('cross_entropy_bwd', [flat, tflat, lse!, g!], attrs))], [lse!], [flat, tflat]);
  // the graph retains what its backward needs, so the flattened views can go now
  if (tflat !== targets) tflat.dispose();
  if (flat !== logits) flat.dispose();
  if (reduction === 'none' && lead.length !== 1) {
    const r = reshape(loss!, lead);
    loss!.dispose();
    return r;
  }
  return loss!;
}

/** Mean squared error (or its sum / elementwise values). */
export function mseLoss(input: Tensor, target: Tensor, opts: { reduction?: 'mean' | 'sum' | 'none' } = {}): Tensor {
  const red = opts.reduction ?? 'mean';
  if (red !== 'mean' && red !== 'sum' && red !== 'none') throw new ValueError(`mseLoss: reduction must be mean, sum or none, got '${red}'`);
  assertTensor(input, 'mseLoss', 'input');
  assertTensor(target, 'mseLoss', 'target');
  broadcastShapes(input.shape, target.shape, 'mseLoss');  // (the error names this op, not the sub inside)
  const d = sub(input, target);
  const sq = mul(d, d);
  d.dispose();  // retained by the graph while needed
  if (red === 'none') return sq;
  const r = red === 'sum' ? sumOp(sq) : meanOp(sq);
  sq.dispose();
  return r;
}

/**
 * Rotary position embedding with precomputed tables: x (..., T, D), cos/sin (T, D) or (B, T, D) for x
 * (B, H, T, D). Half-split (`rotate_half`, LLaMA) by default; `interleaved: true` rotates adjacent pairs.
 */
export function rope(x: Tensor, cos: Tensor, sin: Tensor, opts: { interleaved?: boolean } = {}): Tensor {
  assertTensor(x, 'rope', 'input');
  assertTensor(cos, 'rope', 'cos');
  assertTensor(sin, 'rope', 'sin');
  const interleaved = !!opts.interleaved;
  const y = one(callOp('rope', [x, cos, sin], { interleaved }));
  withGrad([y], 'rope', [x], ([g]) => [one(callOp('rope', [g!, cos, sin], { interleaved, backward: true }))], [], [cos, sin]);
  return y;
}

export interface AttentionOptions {
  /** Broadcastable to (B, H, Tq, P+Tk): additive (float, e.g. HF's extended attention mask) or bool (true = may attend). */
  mask?: Tensor | null;
  /** Causal masking: key j visible to query i iff j ≤ i + (Tk − Tq); prefix keys are always visible. */
  isCausal?: boolean;
  /** Bool (B, P+Tk): true = attend, false = padding. */
  keyPaddingMask?: Tensor | null;
  /** Score scale, default 1/√D. */
  scale?: number;
  /** Extra keys/values (B, Hkv, P, D) placed before the keys (prefix tuning), without copying k/v. */
  prefixK?: Tensor | null;
  prefixV?: Tensor | null;
  /**
   * Dropout on the attention probabilities (transformers' attention_probs_dropout_prob / attention_dropout in training
   * mode; 0 = none). With p > 0 the scores are formed explicitly (memory quadratic in the sequence, as eager attention).
   */
  dropoutP?: number;
}

/**
 * Fused attention softmax(q·kᵀ·scale + mask)·v with grouped-query heads (H a multiple of Hkv), causal and
 * padding masks and prefix keys/values. Memory is linear in sequence length (flash-style kernel). Masked
 * scores use the lowest finite float, so a query with no visible key attends uniformly (as HF does).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  assertTensor(q, 'scaledDotProductAttention', 'q');
  assertTensor(k, 'scaledDotProductAttention', 'k');
  assertTensor(v, 'scaledDotProductAttention', 'v');
  const attrs: Record<string, number | boolean | undefined> = { causal: !!opts.isCausal, scale: opts.scale };
  // autocast (torch.autocast runs attention's matmuls in bf16): on the CPU the tile products round q, k, v, P and dS
  // to bf16 (AMX / AVX512-BF16); on CUDA, where attention runs through batched products, they run on the tensor cores
  // with their operands rounded to TF32 (instead of f32 GEMMs). The backward runs with the same flag, so it
  // recomputes the forward's scores exactly.
  if (autocastActive()) attrs.mixed = 1;
  const pk = opts.prefixK ?? null, pv = opts.prefixV ?? null;
  for (const [k2, v2] of [['mask', opts.mask], ['keyPaddingMask', opts.keyPaddingMask], ['prefixK', pk], ['prefixV', pv]] as const)
    if (v2 !== undefined && v2 !== null) assertTensor(v2, 'scaledDotProductAttention', k2);
  // q, k, v (and the prefixes) share one floating dtype, as torch's SDPA requires; under autocast they may differ
  // (the products round them all)
  checkFloat(q, 'scaledDotProductAttention', 'q');
  if (!autocastActive())
    for (const [name, x] of [['k', k], ['v', v], ['prefixK', pk], ['prefixV', pv]] as const)
      if (x && x.dtype !== q.dtype)
        throw new DTypeError(`scaledDotProductAttention: q, k, v and prefixes must share a dtype, got q ${q.dtype} and ${name} ${x.dtype}`);
  // a bool mask means "may attend" (torch's SDPA): the additive form puts the lowest finite float where it is false
  let mask = opts.mask ?? null;
  if (mask && mask.dtype === 'bool') {
    const z = zeros([], { device: mask.device }), lo = full([], -3.4028234663852886e38, { device: mask.device });
    mask = where(mask, z, lo);
    z.dispose();
    lo.dispose();
  }
  else if (mask && !isFloat(mask.dtype))
    throw new DTypeError(`scaledDotProductAttention: mask must be bool or floating point (additive), got ${mask.dtype}`);
  const p = opts.dropoutP ?? 0;
  if (!(p >= 0 && p < 1)) throw new ValueError(`scaledDotProductAttention: dropoutP must be in [0, 1), got ${p}`);
  if (p > 0 && q.device !== 'cpu') {
    const out = attentionExplicit(q, k, v, mask, opts.keyPaddingMask ?? null, pk, pv, !!opts.isCausal, opts.scale, p);
    if (mask && mask !== opts.mask) mask.dispose();
    return out;
  }
  if (p > 0) {
    // the fused CPU kernel drops probability (b, h, i, j) as ops.dropout would drop that element of the (B, H, Tq, P+Tk)
    // probabilities with the same stream: one draw of that size, replayed by the backward
    const [B, H, Tq] = q.shape as [number, number, number];
    const st = nextRandom(B * H * Tq * ((pk?.shape[2] ?? 0) + k.shape[2]!));
    Object.assign(attrs, { dropout: p, seed: st.seed, offset: st.offset });
  }
  const ins = [q, k, v, mask, opts.keyPaddingMask ?? null, pk, pv];
  const [out, lse] = callOp('attention', ins, attrs);
  withGrad([out!], 'attention', [q, k, v, null, null, pk, pv], ([g]) => {
    const r = callOp('attention_bwd', [...ins, out!, lse!, g!], attrs);
    return [r[0]!, r[1]!, r[2]!, null, null, pk ? r[3]! : null, pv ? r[4]! : null];
  }, [lse!], [...ins, out!]);
  if (mask && mask !== opts.mask) mask.dispose();  // the additive form of a bool mask (the graph keeps what it needs)
  return out!;
}
