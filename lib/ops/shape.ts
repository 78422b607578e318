/**
 * Shape and indexing ops. Views (reshape of contiguous data, transpose, permute, slice, expand, squeeze,
 * unsqueeze) share memory with their input and are built natively with bounds-checked strides; their
 * gradients map back through the inverse view. concat/split/indexSelect/gather copy.
 */
import { Tensor, callOp, withGrad, type DType, DTYPES } from '../tensor.ts';
import { native } from '../binding.ts';
import { fromNative } from '../errors.ts';
import { DTypeError, IndexError, ShapeError, ValueError } from '../errors.ts';
import { asStrided, assertTensor, contiguousStrides, isFloat, normDim, one, showArg, sumToShape } from './util.ts';
import { zeros } from './creation.ts';

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Resolves one −1 and checks the element count. */
function inferReshape(shape: number[], numel: number, op: string, from: number[]): number[] {
  const out = [...shape];
  let neg = -1;
  let known = 1;
  out.forEach((d, i) => {
    if (d === -1) {
      if (neg >= 0) throw new ShapeError(`${op}: only one dimension can be -1, got [${shape}]`);
      neg = i;
    } else if (!Number.isInteger(d) || d < 0) throw new ShapeError(`${op}: invalid dimension ${d} in [${shape}]`);
    else known *= d;
  });
  if (neg >= 0) {
    if (known === 0 || numel % known !== 0) throw new ShapeError(`${op}: shape [${shape}] is invalid for input of shape [${from}]`);
    out[neg] = numel / known;
  } else if (known !== numel) throw new ShapeError(`${op}: shape [${shape}] is invalid for input of shape [${from}] (${numel} elements)`);
  return out;
}

/** An identity op that returns a new Tensor object for the same view, keeping the tape. */
export function alias(x: Tensor): Tensor {
  const y = asStrided(x, x.shape, x.strides, x.handle.offset);
  withGrad([y], 'alias', [x], ([g]) => [g!.clone()], [], []);
  return y;
}

/** Reshape: a view when x is contiguous, otherwise a copy. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  assertTensor(x, 'reshape', 'input');
  if (!Array.isArray(shape)) throw new ValueError('reshape: shape must be an array of integers');
  const shp = inferReshape(shape, x.numel, 'reshape', x.shape);
  let src = x;
  let copied = false;
  if (!x.isContiguous) {
    src = one(callOp('contiguous', [x]));
    copied = true;
  }
  const y = asStrided(src, shp, contiguousStrides(shp), src.handle.offset);
  if (copied) src.dispose();
  const inShape = x.shape;
  withGrad([y], 'reshape', [x], ([g]) => [reshape(g!, inShape)], [], []);
  return y;
}

/** Like reshape but errors instead of copying a non-contiguous tensor (PyTorch's view). */
export function view(x: Tensor, shape: number[]): Tensor {
  if (!x.isContiguous) throw new ShapeError(`view: tensor of shape [${x.shape}] is not contiguous; use reshape()`);
  return reshape(x, shape);
}

export function flatten(x: Tensor, start = 0, end = -1): Tensor {
  assertTensor(x, 'flatten', 'input');
  const s = x.shape;
  if (s.length === 0) return reshape(x, [1]);
  const a = normDim(start, s.length, 'flatten'), b = normDim(end, s.length, 'flatten');
  const mid = s.slice(a, b + 1).reduce((p, q) => p * q, 1);
  return reshape(x, [...s.slice(0, a), mid, ...s.slice(b + 1)]);
}

export function permute(x: Tensor, dims: number[]): Tensor {
  assertTensor(x, 'permute', 'input');
  if (!Array.isArray(dims)) throw new ValueError('permute: dims must be an array of integers');
  const n = x.ndim;
  if (dims.length !== n) throw new ShapeError(`permute: ${dims.length} dims given for a ${n}-d tensor`);
  const d = dims.map((k) => normDim(k, n, 'permute'));
  if (new Set(d).size !== n) throw new ValueError(`permute: repeated dimension in [${dims}]`);
  const s = x.shape, st = x.strides;
  const y = asStrided(x, d.map((k) => s[k]!), d.map((k) => st[k]!), x.handle.offset);
  const inv = new Array<number>(n);
  d.forEach((k, i) => (inv[k] = i));
  withGrad([y], 'permute', [x], ([g]) => [permute(g!, inv)], [], []);
  return y;
}

export function transpose(x: Tensor, d0: number, d1: number): Tensor {
  assertTensor(x, 'transpose', 'input');
  const n = x.ndim;
  const a = normDim(d0, n, 'transpose'), b = normDim(d1, n, 'transpose');  // (a 0-d tensor takes dims 0 / −1 only)
  if (n === 0) return alias(x);
  const dims = [...Array(n).keys()];
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  assertTensor(x, 'unsqueeze', 'input');
  const n = x.ndim;
  const d = normDim(dim, n + 1, 'unsqueeze');
  const s = [...x.shape], st = [...x.strides];
  s.splice(d, 0, 1);
  st.splice(d, 0, d < n ? st[d]! * x.shape[d]! : 1);
  const y = asStrided(x, s, st, x.handle.offset);
  const inShape = x.shape;
  withGrad([y], 'unsqueeze', [x], ([g]) => [reshape(g!, inShape)], [], []);
  return y;
}

export function squeeze(x: Tensor, dim?: number): Tensor {
  assertTensor(x, 'squeeze', 'input');
  const s = x.shape, st = x.strides;
  let keepIdx: number[];
  if (dim === undefined) keepIdx = s.map((_, i) => i).filter((i) => s[i] !== 1);
  else {
    const d = normDim(dim, s.length, 'squeeze');
    keepIdx = s.map((_, i) => i).filter((i) => i !== d || s[i] !== 1);
  }
  const y = asStrided(x, keepIdx.map((i) => s[i]!), keepIdx.map((i) => st[i]!), x.handle.offset);
  withGrad([y], 'squeeze', [x], ([g]) => [reshape(g!, s)], [], []);
  return y;
}

/** Broadcast view to `shape` (−1 keeps a dim); gradient sums back. */
export function expand(x: Tensor, shape: number[]): Tensor {
  assertTensor(x, 'expand', 'input');
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < -1))
    throw new ValueError(`expand: shape must be an array of integers (-1 keeps a size), got [${Array.isArray(shape) ? shape.map(showArg) : showArg(shape)}]`);
  const s = x.shape, st = x.strides;
  const lead = shape.length - s.length;
  if (lead < 0) throw new ShapeError(`expand: target [${shape}] has fewer dims than [${s}]`);
  const outS: number[] = [], outSt: number[] = [];
  shape.forEach((d, i) => {
    const src = i - lead;
    const cur = src >= 0 ? s[src]! : 1;
    if (d === -1 && src < 0) throw new ValueError(`expand: -1 is not allowed for a new leading dimension in [${shape}]`);
    const tgt = d === -1 ? cur : d;
    if (src >= 0 && cur !== tgt && cur !== 1) throw new ShapeError(`expand: cannot expand [${s}] to [${shape}]`);
    outS.push(tgt);
    outSt.push(src >= 0 && cur === tgt ? st[src]! : 0);
  });
  const y = asStrided(x, outS, outSt, x.handle.offset);
  withGrad([y], 'expand', [x], ([g]) => {
    const r = sumToShape(g!, s);
    return [r === g ? g!.clone() : r];
  }, [], []);
  return y;
}

/** x[..., start:end:step, ...] along dim (a view). Negative start/end count from the end. */
export function slice(x: Tensor, dim: number, start: number | null = 0, end?: number | null, step = 1): Tensor {
  assertTensor(x, 'slice', 'input');
  const d = normDim(dim, x.ndim, 'slice');
  const n = x.shape[d]!;
  if (!Number.isInteger(step) || step <= 0) throw new ValueError(`slice: step must be a positive integer, got ${showArg(step)}`);
  start ??= 0;  // (null: from the beginning, as end's null runs to the end)
  if (!Number.isInteger(start)) throw new ValueError(`slice: start must be an integer, got ${showArg(start)}`);
  if (end !== undefined && end !== null && !Number.isInteger(end)) throw new ValueError(`slice: end must be an integer, got ${showArg(end)}`);
  const clampIdx = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
  const a = clampIdx(start), b = clampIdx(end ?? n);
  const len = b > a ? Math.ceil((b - a) / step) : 0;
  const s = [...x.shape], st = [...x.strides];
  const off = x.handle.offset + a * st[d]!;
  s[d] = len;
  st[d] = st[d]! * step;
  const y = asStrided(x, s, st, len === 0 ? x.handle.offset : off);
  const inShape = x.shape;
  withGrad([y], 'slice', [x], ([g]) => {
    const z = zeros(inShape, { dtype: g!.dtype, device: g!.device });
    const target = asStrided(z, s, contiguousStrides(inShape).map((v, i) => (i === d ? v * step : v)), a * contiguousStrides(inShape)[d]!);
    callOp('copy_', [target, g!]);
    target.dispose();
    return [z];
  }, [], []);
  return y;
}

/** torch.narrow: `length` elements from `start` (negative counts from the end); the range must lie inside the dim. */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  assertTensor(x, 'narrow', 'input');
  const n = x.shape[normDim(dim, x.ndim, 'narrow')]!;
  if (!Number.isInteger(start)) throw new ValueError(`narrow: start must be an integer, got ${showArg(start)}`);
  if (!Number.isInteger(length) || length < 0) throw new ValueError(`narrow: length must be a non-negative integer, got ${showArg(length)}`);
  const a = start < 0 ? start + n : start;
  if (a < 0 || a > n) throw new IndexError(`narrow: start ${start} out of range for a dimension of size ${n}`);
  if (a + length > n) throw new IndexError(`narrow: start ${start} + length ${length} exceeds the dimension's size ${n}`);
  return slice(x, dim, a, a + length);
}

/** A contiguous copy (differentiable). */
export function contiguous(x: Tensor): Tensor {
  assertTensor(x, 'contiguous', 'input');
  const y = one(callOp('contiguous', [x]));
  withGrad([y], 'contiguous', [x], ([g]) => [g!.clone()], [], []);
  return y;
}

/** Converts dtype; float → float conversions are differentiable. */
export function cast(x: Tensor, dtype: DType): Tensor {
  assertTensor(x, 'cast', 'input');
  if (!DTYPES.includes(dtype)) throw new DTypeError(`to: unknown dtype '${dtype}'`);
  const y = one(callOp('cast', [x], { dtype }));
  if (isFloat(dtype) && isFloat(x.dtype)) {
    const src = x.dtype;
    withGrad([y], 'cast', [x], ([g]) => [one(callOp('cast', [g!], { dtype: src }))], [], []);
  }
  return y;
}

/**
 * A copy of x on `device` ('cpu', 'cuda', 'cuda:N'), contiguous; x itself (a new handle) when it already is a
 * contiguous tensor there. Differentiable: the gradient travels back to x's device.
 */
export function toDevice(x: Tensor, device: string): Tensor {
  assertTensor(x, 'to', 'input');
  const src = x.device;
  const move = (t: Tensor, d: string) => {
    try {
      return new Tensor(native.toDevice(t.handle, d));
    } catch (e) {
      return fromNative(e);
    }
  };
  const y = move(x, device);
  if (isFloat(x.dtype)) withGrad([y], 'to', [x], ([g]) => [move(g!, src)], [], []);
  return y;
}

/** Concatenates along dim. */
export function concat(tensors: Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new ValueError('concat: expects a non-empty array of tensors');
  tensors.forEach((t, i) => assertTensor(t, 'concat', `tensors[${i}]`));
  // mixed dtypes are promoted first, as torch.cat does (floats win; two kinds of float, or bf16 with f16: f32)
  const dts = [...new Set(tensors.map((t) => t.dtype))];
  if (dts.length > 1) {
    const floats = dts.filter((t) => isFloat(t));
    const to: DType = floats.length === 1 ? floats[0]! : floats.length > 1 ? 'f32' : dts.includes('i64') ? 'i64' : dts.includes('i32') ? 'i32' : dts[0]!;
    const cast_ = tensors.map((t) => (t.dtype === to ? t : cast(t, to)));
    try {
      return concat(cast_, dim);
    } finally {
      cast_.forEach((c, i) => { if (c !== tensors[i]) c.dispose(); });
    }
  }
  const d = normDim(dim, tensors[0]!.ndim, 'concat');
  const y = one(callOp('cat', tensors, { dim: d }));
  const sizes = tensors.map((t) => t.shape[d]!);
  withGrad([y], 'concat', tensors, ([g]) => {
    let at = 0;
    return tensors.map((t, i) => {
      const part = t.requiresGrad ? slice(g!, d, at, at + sizes[i]!).contiguous() : null;
      at += sizes[i]!;
      return part;
    });
  }, [], []);
  return y;
}
export const cat = concat;

/** Splits into chunks of `size` (number) or of the given sizes along dim; results are views. */
export function split(x: Tensor, sizeOrSizes: number | number[], dim = 0): Tensor[] {
  assertTensor(x, 'split', 'input');
  const d = normDim(dim, x.ndim, 'split');
  const n = x.shape[d]!;
  let sizes: number[];
  if (typeof sizeOrSizes === 'number') {
    if (!Number.isInteger(sizeOrSizes) || sizeOrSizes <= 0) throw new ValueError(`split: size must be a positive integer, got ${showArg(sizeOrSizes)}`);
    sizes = [];
    for (let a = 0; a < n; a += sizeOrSizes) sizes.push(Math.min(sizeOrSizes, n - a));
  } else {
    sizes = sizeOrSizes;
    if (!Array.isArray(sizes) || sizes.some((v) => !Number.isInteger(v) || v < 0))
      throw new ValueError(`split: sizes must be non-negative integers, got [${Array.isArray(sizes) ? sizes.map(showArg) : showArg(sizes)}]`);
    const tot = sizes.reduce((a, b) => a + b, 0);
    if (tot !== n) throw new ShapeError(`split: sizes [${sizes}] sum to ${tot}, but dim ${d} has ${n}`);
  }
  // views of x, recorded as one node whose backward concatenates the pieces' gradients (zeros for a piece that
  // got none) in one op: a slice per piece would zero-fill a whole input-sized gradient per piece and sum them
  const st = x.strides;
  let at = 0;
  const views = sizes.map((len) => {
    const shape = [...x.shape];
    shape[d] = len;
    const v = asStrided(x, shape, [...st], x.handle.offset + (len === 0 ? 0 : at * st[d]!));
    at += len;
    return v;
  });
  // (shapes, dtype and device as plain values: the backward must not read tensors the caller may have disposed)
  const shapes = views.map((v) => v.shape), dtype = x.dtype, device = x.device;
  withGrad(views, 'split', [x], (grads) => [
    concat(grads.map((g, i) => g ?? zeros(shapes[i]!, { dtype, device })), d),
  ], [], []);
  return views;
}

export function chunk(x: Tensor, chunks: number, dim = 0): Tensor[] {
  assertTensor(x, 'chunk', 'input');
  if (!Number.isInteger(chunks) || chunks <= 0) throw new ValueError(`chunk: chunks must be a positive integer, got ${showArg(chunks)}`);
  const n = x.shape[normDim(dim, x.ndim, 'chunk')]!;
  return split(x, Math.max(1, Math.ceil(n / chunks)), dim);  // (an empty dim: one empty chunk, as torch)
}

export function stack(tensors: Tensor[], dim = 0): Tensor {
  if (!tensors.length) throw new ValueError('stack: expects a non-empty array of tensors');
  const d = normDim(dim, tensors[0]!.ndim + 1, 'stack');
  const us = tensors.map((t) => unsqueeze(t, d));
  const y = concat(us, d);
  return y;
}

/** Rows (or slices along dim) picked by a 1-D integer index. */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  assertTensor(x, 'indexSelect', 'input');
  assertTensor(index, 'indexSelect', 'index');
  const d = normDim(dim, x.ndim, 'indexSelect');
  const y = one(callOp('index_select', [x, index], { dim: d }));
  const xs = x.shape, xd = x.dtype;
  withGrad([y], 'indexSelect', [x], ([g]) => {
    const z = zeros(xs, { dtype: 'f32', device: g!.device });
    const r = one(callOp('index_add', [z, index, g!], { dim: d }));
    z.dispose();
    return [r.dtype === xd ? r : castOwned(r, xd)];
  }, [], [index]);
  return y;
}

/** torch.gather: out[i][j] = x[i][index[i][j]] along dim. */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  assertTensor(x, 'gather', 'input');
  assertTensor(index, 'gather', 'index');
  const d = normDim(dim, x.ndim, 'gather');
  const y = one(callOp('gather', [x, index], { dim: d }));
  const xs = x.shape, xd = x.dtype;
  withGrad([y], 'gather', [x], ([g]) => {
    const z = zeros(xs, { dtype: 'f32', device: g!.device });
    const r = one(callOp('scatter_add', [z, index, g!], { dim: d }));
    z.dispose();
    return [r.dtype === xd ? r : castOwned(r, xd)];
  }, [], [index]);
  return y;
}

function castOwned(t: Tensor, dt: DType): Tensor {
  const r = one(callOp('cast', [t], { dtype: dt }));
  t.dispose();
  return r;
}

export function checkIndex(i: number, n: number, op: string): void {
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new IndexError(`${op}: index ${i} out of range [0, ${n})`);
}
void sameShape;
