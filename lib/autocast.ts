/**
 * bf16 mixed precision (like torch.autocast('cpu', dtype=torch.bfloat16), with f32 activations): inside
 * autocast(fn), Linear projections run their GEMMs with bf16 inputs on the CPU's bf16 units (AMX /
 * AVX512-BF16; f32 accumulation) and return f32, forward and backward. Parameters stay f32 (the master
 * weights the optimiser updates). On the CPU the GEMMs round their f32 operands to bf16 while packing them
 * ({mixed: 1}), so nothing is cast in a separate pass (only a trained weight's input is kept as a bf16 copy for
 * its gradient); on CUDA the bf16 copies of weights are made once per region and freed with it (a copy the
 * backward still needs lives until that backward has run). Everything else (norms, softmax, attention,
 * losses, LoRA's rank-r GEMMs) computes in f32, and so do projections with a side under 32 (LoRA's A and B,
 * small heads): bf16 tiles would be mostly padding there (a bottleneck adapter 48 wide runs 2x faster in bf16, a
 * rank-8 LoRA projection slower). Consecutive projections of the same input (Q, K, V)
 * share one bf16 copy of it.
 */
import type { Tensor } from './tensor.ts';

interface Region {
  cache: Map<Tensor, Tensor>;
  /** The last activation cast to bf16 (Q, K and V, or a base projection and its LoRA, read the same input). */
  lastAct: { src: Tensor; dst: Tensor } | null;
}
let region: Region | null = null;

/** Runs fn with bf16 GEMMs for Linear projections (forward, and the backward of what fn records). */
export function autocast<T>(fn: () => T, opts: { enabled?: boolean } = {}): T {
  if (opts.enabled === false) {
    // like torch: an inner autocast(enabled=False) turns it off for its body
    const outer = region;
    region = null;
    try {
      return fn();
    } finally {
      region = outer;
    }
  }
  if (region) return fn();
  region = { cache: new Map(), lastAct: null };
  const r = region;
  try {
    return fn();
  } finally {
    region = null;
    for (const t of r.cache.values()) t.dispose();
    r.lastAct?.dst.dispose();
  }
}

/** The smallest side of a weight whose projection runs in bf16 under autocast (ops.linear and the fused adapter ops). */
export const AUTOCAST_MIN_SIDE = 32;

/** Whether a projection with this 2-D weight runs as a bf16 GEMM here (inside autocast, both sides >= AUTOCAST_MIN_SIDE). */
export function autocastProjection(weight: Tensor): boolean {
  return region !== null && weight.ndim === 2 && Math.min(weight.shape[0]!, weight.shape[1]!) >= AUTOCAST_MIN_SIDE;
}

/** True inside autocast(). */
export function autocastActive(): boolean {
  return region !== null;
}

/** The bf16 copy of parameter w for this region (cast once per region). */
export function bf16Weight(w: Tensor, cast: (t: Tensor) => Tensor): Tensor {
  if (!region) return cast(w);
  let c = region.cache.get(w);
  if (!c) region.cache.set(w, (c = cast(w)));
  return c;
}

/**
 * The bf16 copy of activation x, as a handle the caller owns (dispose it when done): consecutive projections of
 * the same input share one cast. `alias` makes a new handle on the same memory.
 */
export function bf16Activation(x: Tensor, cast: (t: Tensor) => Tensor, alias: (t: Tensor) => Tensor): Tensor {
  if (!region) return cast(x);
  const last = region.lastAct;
  if (last && last.src === x && !x.disposed && !last.dst.disposed) return alias(last.dst);
  last?.dst.dispose();
  region.lastAct = null;
  const dst = cast(x);
  region.lastAct = { src: x, dst };
  return alias(dst);
}

/** Forgets a cached cast of t (t is about to change in place). */
export function autocastForget(t: Tensor): void {
  if (region?.lastAct?.src === t) {
    region.lastAct.dst.dispose();
    region.lastAct = null;
  }
}
