/**
 * Tensor factories and the seeded random generator. Random draws use a counter-based generator
 * (Philox): a global (seed, offset) pair advanced by each draw, so `manualSeed(s)` makes every following
 * draw, and every dropout mask, reproducible on any thread count.
 */
import { native } from '../binding.ts';
import { Tensor, callOp, type DType, DTYPES } from '../tensor.ts';
import { DTypeError, ValueError } from '../errors.ts';
import { checkFillValue, one } from './util.ts';

export interface FactoryOptions {
  dtype?: DType;
  requiresGrad?: boolean;
  /** 'cpu' (default), 'cuda', 'cuda:N' (zeros / ones / full: filled on the host, then copied there). */
  device?: string;
}

function checkShape(shape: number[], op: string): number[] {
  if (!Array.isArray(shape)) throw new ValueError(`${op}: shape must be an array of integers`);
  for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new ValueError(`${op}: invalid dimension ${d} in [${shape}]`);
  return shape;
}
function finish(t: Tensor, opts: FactoryOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad_(true);
  return t;
}
function dtypeOf(opts: FactoryOptions, def: DType = 'f32', op = 'full'): DType {
  const dt = opts.dtype ?? def;
  if (!DTYPES.includes(dt)) throw new DTypeError(`${op}: unknown dtype '${dt}' (expected one of ${DTYPES.join(', ')})`);
  return dt;
}

export function full(shape: number[], value: number, opts: FactoryOptions = {}): Tensor {
  const attrs = { shape: checkShape(shape, 'full'), value, dtype: dtypeOf(opts, 'f32', 'zeros/ones/full') };
  checkFillValue(value, attrs.dtype as DType, 'full');
  if (!opts.device || opts.device === 'cpu') return finish(one(callOp('fill', [], attrs)), opts);
  if (/^cuda(:\d+)?$/.test(opts.device) && native.hasCuda()) return finish(one(callOp('fill', [], { ...attrs, device: opts.device })), opts);
  const t = one(callOp('fill', [], attrs));  // (to() reports an unknown or unusable device)
  const moved = t.to(opts.device);
  t.dispose();
  return finish(moved, opts);
}
export function zeros(shape: number[], opts: FactoryOptions = {}): Tensor {
  return full(shape, 0, opts);
}
export function ones(shape: number[], opts: FactoryOptions = {}): Tensor {
  return full(shape, 1, opts);
}
export function zerosLike(t: Tensor, opts: FactoryOptions = {}): Tensor {
  return fullLike(t, 0, opts);
}
export function onesLike(t: Tensor, opts: FactoryOptions = {}): Tensor {
  return fullLike(t, 1, opts);
}
/** A tensor shaped like t, filled with value, on t's device (like torch's *_like). */
export function fullLike(t: Tensor, value: number, opts: FactoryOptions = {}): Tensor {
  return full(t.shape, value, { dtype: opts.dtype ?? t.dtype, requiresGrad: opts.requiresGrad, device: opts.device ?? t.device });
}

/** arange(end) or arange(start, end, step); integer dtype (i64) unless a float dtype is asked for. */
export function arange(startOrEnd: number, end?: number, step = 1, opts: FactoryOptions = {}): Tensor {
  const [s, e] = end === undefined ? [0, startOrEnd] : [startOrEnd, end];
  // (torch: "upper bound and larger bound inconsistent with step sign")
  if (typeof step === 'number' && step !== 0 && Number.isFinite(s) && Number.isFinite(e) && (e - s) * step < 0)
    throw new ValueError(`arange: the range ${s} → ${e} is inconsistent with the sign of step ${step}`);
  const int = Number.isInteger(s) && Number.isInteger(e) && Number.isInteger(step);
  return finish(one(callOp('arange', [], { start: s, end: e, step, dtype: dtypeOf(opts, int ? 'i64' : 'f32') })), opts);
}

// ---- random ------------------------------------------------------------------------------------------

const gen = { seed: 0x5eed, offset: 0 };

/** Seeds the global generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0) throw new ValueError(`manualSeed: seed must be a non-negative integer, got ${seed}`);
  gen.seed = seed;
  gen.offset = 0;
}

/** Reserves a range of the stream for a draw of n values; returns {seed, offset}. */
export function nextRandom(n: number): { seed: number; offset: number } {
  const r = { seed: gen.seed, offset: gen.offset };
  gen.offset += Math.ceil(n / 4);  // the generator yields 4 values per counter
  return r;
}
/** The generator state, for checkpoints. */
export function getRngState(): { seed: number; offset: number } {
  return { ...gen };
}
export function setRngState(s: { seed: number; offset: number }): void {
  gen.seed = s.seed;
  gen.offset = s.offset;
}

export interface RandomOptions extends FactoryOptions {
  /** Draw from this seed instead of the global generator. */
  seed?: number;
}

function draw(op: 'rand' | 'randn', shape: number[], opts: RandomOptions, extra: Record<string, number> = {}): Tensor {
  checkShape(shape, op);
  const n = shape.reduce((a, b) => a * b, 1);
  const st = opts.seed !== undefined ? { seed: opts.seed, offset: 0 } : nextRandom(n);
  let t = one(callOp(op, [], { shape, seed: st.seed, offset: st.offset, ...extra }));
  const dt = dtypeOf(opts);
  if (dt !== 'f32' && dt !== 'bf16' && dt !== 'f16') throw new DTypeError(`${op}: dtype must be floating point, got ${dt}`);
  if (dt !== 'f32') {
    const c = one(callOp('cast', [t], { dtype: dt }));
    t.dispose();
    t = c;
  }
  return finish(t, opts);
}

/** Uniform [0, 1). */
export function rand(shape: number[], opts: RandomOptions = {}): Tensor {
  return draw('rand', shape, opts);
}
/** Normal(mean, std), default N(0, 1). */
export function randn(shape: number[], opts: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  return draw('randn', shape, opts, { mean: opts.mean ?? 0, std: opts.std ?? 1 });
}
