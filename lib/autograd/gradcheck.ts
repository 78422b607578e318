/**
 * Finite-difference gradient checker (CPU). For a function f of some tensors, it compares the tape's
 * gradient of L = Σ f(x)·u (u a fixed random cotangent) with central differences
 * (L(x + εe_i) − L(x − εe_i)) / 2ε. The perturbed inputs are rebuilt from float64 values and L is summed
 * in float64; the op itself runs in f32, so ε is chosen for f32 (default 1e-3, or 1e-2·max|x|) and the
 * tolerance is loose enough for f32 rounding yet far below any real derivative bug.
 */
import { Tensor, tensor } from '../tensor.ts';
import { noGrad } from './tape.ts';
import { AdaptersError } from '../errors.ts';

export interface GradcheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  /** Check at most this many elements per input (evenly spread); default all. */
  maxElements?: number;
  /** Indices of inputs to check (default: those with requiresGrad). */
  check?: number[];
  seed?: number;
}

export interface GradcheckResult {
  ok: boolean;
  maxAbsErr: number;
  maxRelErr: number;
  failures: string[];
}

function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

function toF64(t: Tensor): Float64Array {
  return Float64Array.from(t.toArray() as Float32Array);
}

export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const rtol = opts.rtol ?? 1e-2, atol = opts.atol ?? 1e-3;
  const which = opts.check ?? inputs.map((t, i) => (t.requiresGrad ? i : -1)).filter((i) => i >= 0);
  for (const i of which) inputs[i]!.zeroGrad();
  // analytic
  const out = fn(...inputs);
  const rnd = lcg(opts.seed ?? 7);
  const u = new Float64Array(out.numel).map(() => rnd() * 2);
  const uT = tensor(Float32Array.from(u), out.shape, { dtype: out.dtype === 'f32' ? 'f32' : 'f32' });
  out.backward(out.dtype === 'f32' ? uT : uT.to(out.dtype));
  const lossAt = (xs: Tensor[]): number => {
    const o = noGrad(() => fn(...xs));
    const v = o.toArray() as Float32Array;
    o.dispose();
    let s = 0;
    for (let k = 0; k < v.length; k++) s += v[k]! * u[k]!;
    return s;
  };
  const failures: string[] = [];
  let maxAbs = 0, maxRel = 0;
  for (const i of which) {
    const x = inputs[i]!;
    if (!x.grad) {
      failures.push(`input ${i}: no gradient was produced`);
      continue;
    }
    const ana = toF64(x.grad);
    const base = toF64(x);
    const n = base.length;
    const maxAbsX = base.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const eps = opts.eps ?? Math.max(1e-3, 1e-2 * maxAbsX * 0.1);
    const step = opts.maxElements && n > opts.maxElements ? n / opts.maxElements : 1;
    for (let f = 0; f < n; f += step) {
      const k = Math.floor(f);
      const make = (delta: number): Tensor => {
        const arr = Float32Array.from(base);
        arr[k] = base[k]! + delta;
        return tensor(arr, x.shape, { dtype: 'f32' });
      };
      const xp = make(eps), xm = make(-eps);
      const asDtype = (t: Tensor) => (x.dtype === 'f32' ? t : t.to(x.dtype));
      const ip = inputs.map((t, j) => (j === i ? asDtype(xp) : t));
      const im = inputs.map((t, j) => (j === i ? asDtype(xm) : t));
      const num = (lossAt(ip) - lossAt(im)) / (2 * eps);
      for (const t of [xp, xm, ip[i]!, im[i]!]) t.dispose();
      const err = Math.abs(num - ana[k]!);
      maxAbs = Math.max(maxAbs, err);
      maxRel = Math.max(maxRel, err / Math.max(Math.abs(num), 1e-6));
      if (err > atol + rtol * Math.abs(num))
        failures.push(`input ${i} [${k}]: analytic ${ana[k]!.toExponential(4)} vs numeric ${num.toExponential(4)}`);
    }
  }
  out.dispose();
  uT.dispose();
  return { ok: failures.length === 0, maxAbsErr: maxAbs, maxRelErr: maxRel, failures };
}

/** Throws an AdaptersError listing the first mismatches when the check fails. */
export function assertGradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const r = gradcheck(fn, inputs, opts);
  if (!r.ok) throw new AdaptersError(`gradcheck failed:\n${r.failures.slice(0, 8).join('\n')}`);
  return r;
}
