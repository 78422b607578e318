// Largest |a - b| between two tensors (Infinity on a size mismatch): the reference tests' comparison.
import type { Tensor } from '../../lib/index.ts';

export function maxDiff(a: Tensor, b: Tensor): number {
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  if (x.length !== y.length) return Infinity;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

/** Largest |a| (the scale a tolerance is relative to). */
export const maxAbs = (a: Tensor) => Math.max(...Array.from(a.toArray() as Float32Array, Math.abs));
