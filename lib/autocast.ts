/**
 * bf16 mixed precision (like torch.autocast('cpu', dtype=torch.bfloat16), with f32 activations): inside
 * autocast(fn), Linear projections run their GEMMs with bf16 inputs on the CPU's bf16 units (AMX /
 * AVX512-BF16; f32 accumulation) and return f32, forward and backward. Parameters stay f32 (the master
 * weights the optimiser updates); their bf16 copies are made once per region and freed with it (a copy the
 * backward still needs lives until that backward has run). Everything else (norms, softmax, attention,
 * losses, adapters' small GEMMs) computes in f32.
 */
import type { Tensor } from './tensor.ts';

interface Region {
  cache: Map<Tensor, Tensor>;
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
  region = { cache: new Map() };
  const r = region;
  try {
    return fn();
  } finally {
    region = null;
    for (const t of r.cache.values()) t.dispose();
  }
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
