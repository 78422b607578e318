/** Shared helpers for op definitions: argument checks, dims, scalar operands, broadcast reduction. */
import { native } from '../binding.ts';
import { DTypeError, DisposedError, IndexError, ShapeError, ValueError, fromNative } from '../errors.ts';
import { Tensor, callOp, tensor } from '../tensor.ts';
import type { DType } from '../tensor.ts';
import { noGrad } from '../autograd/tape.ts';

export function assertTensor(t: unknown, op: string, what: string): asserts t is Tensor {
  if (!(t instanceof Tensor)) throw new ValueError(`${op}: ${what} must be a Tensor, got ${t === null ? 'null' : typeof t}`);
  if (t.disposed) throw new DisposedError(`${op}: ${what} was disposed`);
}

/** A JS value as an error message shows it (strings quoted, so a dim of '1' does not read as 1). */
export function showArg(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

export function normDim(dim: number, ndim: number, op: string): number {
  const n = Math.max(ndim, 1);
  if (typeof dim !== 'number' || !Number.isInteger(dim)) throw new ValueError(`${op}: dimension must be an integer, got ${showArg(dim)}`);
  if (dim < -n || dim >= n)
    throw new IndexError(`${op}: dimension ${dim} out of range for a ${ndim}-d tensor`);
  return dim < 0 ? dim + n : dim;
}

export function isFloat(dt: DType): boolean {
  return dt === 'f32' || dt === 'bf16' || dt === 'f16';
}

/** A 0-d tensor holding `v`, with the dtype that combines with `like` as PyTorch's scalar rules do. */
export function scalarLike(v: number, like: Tensor): Tensor {
  // an integer keeps an integer tensor's dtype; beside a bool tensor a number is i64 when it is a safe integer, else f32
  // (an integer-valued number past 2^53, e.g. finfo.min, is a float there, as Python writes it)
  const dt: DType = isFloat(like.dtype) ? like.dtype
    : like.dtype === 'bool' ? (Number.isSafeInteger(v) ? 'i64' : 'f32')
    : Number.isInteger(v) ? like.dtype : 'f32';
  const t = tensor([v], [], { dtype: dt });
  if (like.device === 'cpu') return t;
  const moved = t.to(like.device);  // the scalar operand goes where the tensor is (ops never mix devices)
  t.dispose();
  return moved;
}

/** A view of t with the given geometry (shares memory; bounds-checked natively). */
export function asStrided(t: Tensor, shape: number[], strides: number[], offset: number): Tensor {
  try {
    return new Tensor(native.asStrided(t.handle, shape, strides, offset));
  } catch (e) {
    fromNative(e);
  }
}

/** Sums g down to `shape` (the reverse of broadcasting). Returns g itself when shapes already match. */
export function sumToShape(g: Tensor, shape: number[]): Tensor {
  const gs = g.shape;
  if (gs.length === shape.length && gs.every((d, i) => d === shape[i])) return g;
  return noGrad(() => {
    const lead = gs.length - shape.length;
    const dims: number[] = [];
    for (let i = 0; i < gs.length; i++) {
      if (i < lead) dims.push(i);
      else if (shape[i - lead] === 1 && gs[i] !== 1) dims.push(i);
    }
    const [s] = callOp('sum', [g], { dims, keepdim: true });
    if (s!.shape.length === shape.length) return s!;
    const r = asStrided(s!, shape, contiguousStrides(shape), 0);
    s!.dispose();
    return r;
  });
}

export function contiguousStrides(shape: number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= Math.max(shape[i]!, 1);
  }
  return st;
}

export function broadcastShapes(a: number[], b: number[], op: string): number[] {
  const n = Math.max(a.length, b.length);
  const r: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[i - (n - a.length)] ?? 1;
    const db = b[i - (n - b.length)] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new ShapeError(`${op}: shapes [${a}] and [${b}] cannot be broadcast`);
    r.push(da === 1 ? db : da);
  }
  return r;
}

export function checkFloat(t: Tensor, op: string, what = 'input'): void {
  if (!isFloat(t.dtype)) throw new DTypeError(`${op}: ${what} must be floating point (f32/bf16/f16), got ${t.dtype}`);
}

export function one(ts: Tensor[]): Tensor {
  return ts[0]!;
}

/**
 * A fill value for dtype `dt`, checked as torch checks it: integer dtypes take integers in their range (a NaN or an
 * out-of-range value would be an undefined conversion), bf16 / f16 finite values in theirs.
 */
export function checkFillValue(v: number, dt: DType, op: string): void {
  if (typeof v !== 'number' && typeof v !== 'boolean') throw new ValueError(`${op}: the value must be a number, got ${showArg(v)}`);
  const x = Number(v);
  const range: Partial<Record<DType, [number, number]>> = { i32: [-2147483648, 2147483647], i64: [-9223372036854775808, 9223372036854775807] };
  const r = range[dt];
  // (a fraction is truncated toward zero, as torch converts it)
  if (r && !(Number.isFinite(x) && Math.trunc(x) >= r[0] && Math.trunc(x) <= r[1])) throw new ValueError(`${op}: value ${x} cannot be converted to ${dt} without overflow`);
  if ((dt === 'bf16' && Number.isFinite(x) && Math.abs(x) > 3.3895313892515355e38) || (dt === 'f16' && Number.isFinite(x) && Math.abs(x) > 65504))
    throw new ValueError(`${op}: value ${x} cannot be converted to ${dt} without overflow`);
}
