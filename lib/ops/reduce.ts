/** Reductions: sum, mean (over any axes, keepdim), max/argmax over one axis or all. */
import { Tensor, callOp, withGrad } from '../tensor.ts';
import { assertTensor, isFloat, normDim, one } from './util.ts';
import { DTypeError, ValueError } from '../errors.ts';
import { expand, reshape } from './shape.ts';
import { zeros } from './creation.ts';

const zerosLikeF32 = (t: Tensor): Tensor => zeros([], { dtype: 'f32', device: t.device });

export interface ReduceOptions {
  keepdim?: boolean;
}

function dimsOf(x: Tensor, dim: number | number[] | undefined, op: string): number[] {
  // no dim, or an empty list (torch 1.13 reduces over everything then): all dims
  if (dim === undefined || dim === null || (Array.isArray(dim) && !dim.length)) return [...Array(x.ndim).keys()];
  const ds = (Array.isArray(dim) ? dim : [dim]).map((d) => normDim(d, x.ndim, op));
  if (x.ndim === 0) return [];  // (a 0-d tensor takes dim 0 / −1 and has nothing to reduce)
  const twice = ds.find((d, i) => ds.indexOf(d) !== i);
  if (twice !== undefined) throw new ValueError(`${op}: dim ${twice} appears more than once in [${dim}]`);  // (as torch)
  return ds;
}

/** Shape of the reduced result with keepdim (size 1 on reduced axes). */
function keptShape(x: Tensor, dims: number[]): number[] {
  return x.shape.map((s, i) => (dims.includes(i) ? 1 : s));
}

/** Sum over `dim` (all dims when omitted). */
export function sum(x: Tensor, dim?: number | number[], opts: ReduceOptions = {}): Tensor {
  assertTensor(x, 'sum', 'input');
  const dims = dimsOf(x, dim, 'sum');
  const keepdim = !!opts.keepdim;
  const y = one(callOp('sum', [x], { dims, keepdim }));
  const inShape = x.shape;
  const ks = keptShape(x, dims);
  withGrad([y], 'sum', [x], ([g]) => {
    const gk = keepdim ? g! : reshape(g!, ks);
    const ex = expand(gk, inShape);
    const e = ex.contiguous();
    ex.dispose();
    if (gk !== g) gk.dispose();
    return [e];
  }, [], []);
  return y;
}

/** Mean over `dim` (all dims when omitted). */
export function mean(x: Tensor, dim?: number | number[], opts: ReduceOptions = {}): Tensor {
  assertTensor(x, 'mean', 'input');
  // (torch: "mean(): could not infer output dtype" for integer and bool inputs)
  if (!isFloat(x.dtype)) throw new DTypeError(`mean: input must be floating point, got ${x.dtype} (cast it first)`);
  const dims = dimsOf(x, dim, 'mean');
  const n = dims.reduce((a, d) => a * x.shape[d]!, 1);
  const s = sum(x, dim, opts);
  const y = s.div(n);
  s.dispose();
  return y;
}

/** Max over `dim` (values); over all elements when dim is omitted. Gradient goes to the arg-max. */
export function max(x: Tensor, dim?: number, opts: ReduceOptions = {}): Tensor {
  assertTensor(x, 'max', 'input');
  const attrs = dim === undefined ? { keepdim: false } : { dim: normDim(dim, x.ndim, 'max'), keepdim: !!opts.keepdim };
  const [v, idx] = callOp('max', [x], attrs);
  const kept = dim === undefined ? [] : keptShape(x, [(attrs as { dim: number }).dim]);
  const inShape = x.shape, inNumel = x.numel;
  withGrad([v!], 'max', [x], ([g]) => {
    // over all elements, PyTorch shares the gradient evenly between tied maxima (amax semantics)
    if (dim === undefined) {
      const tmp: Tensor[] = [];
      const t = (y: Tensor) => (tmp.push(y), y);
      const tie = t(one(callOp('eq', [x, v!])));
      const n = t(one(callOp('sum', [t(one(callOp('cast', [tie], { dtype: 'f32' })))], { dims: [...Array(x.ndim).keys()], keepdim: false })));
      const share = t(one(callOp('div', [g!.dtype === 'f32' ? g! : t(one(callOp('cast', [g!], { dtype: 'f32' }))), n])));
      const r = one(callOp('where', [tie, share, t(zerosLikeF32(share))]));
      for (const y of tmp) y.dispose();
      if (x.dtype === 'f32') return [r];
      const rc = one(callOp('cast', [r], { dtype: x.dtype }));
      r.dispose();
      return [rc];
    }
    // scatter g into a zero tensor at the arg-max positions
    const flatIdx = dim === undefined;
    const d = flatIdx ? 0 : (attrs as { dim: number }).dim;
    const base = zeros(flatIdx ? [inNumel] : inShape, { dtype: 'f32', device: g!.device });
    const idxK = flatIdx ? reshape(idx!, [1]) : opts.keepdim ? idx! : reshape(idx!, kept);
    const gK = flatIdx ? reshape(g!, [1]) : opts.keepdim ? g! : reshape(g!, kept);
    const r = one(callOp('scatter_add', [base, idxK, gK], { dim: d }));
    for (const t of [base]) t.dispose();
    if (idxK !== idx) idxK.dispose();
    if (gK !== g) gK.dispose();
    if (flatIdx) {
      const rr = reshape(r, inShape);
      r.dispose();
      return [rr];
    }
    return [r];
  }, [idx!], dim === undefined ? [x, v!] : []);
  if (dim === undefined && opts.keepdim && x.ndim > 0) {
    // over all elements with keepdim: every dim kept as 1 (as torch.amax over all dims, and as sum / mean here)
    const r = reshape(v!, x.shape.map(() => 1));
    v!.dispose();
    return r;
  }
  return v!;
}

/** Index of the max over `dim` (flattened when omitted), i64. */
export function argmax(x: Tensor, dim?: number, opts: ReduceOptions = {}): Tensor {
  assertTensor(x, 'argmax', 'input');
  const attrs = dim === undefined ? { keepdim: false } : { dim: normDim(dim, x.ndim, 'argmax'), keepdim: !!opts.keepdim };
  const r = one(callOp('argmax', [x], attrs));
  if (dim !== undefined || !opts.keepdim || x.ndim === 0) return r;
  // over all elements with keepdim: every dim kept as size 1, as torch
  const k = reshape(r, x.shape.map(() => 1));
  r.dispose();
  return k;
}
