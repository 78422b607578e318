/**
 * Elementwise ops with broadcasting (add, sub, mul, div, maximum, minimum), comparisons, unary maths and
 * activations, each with its derivative beside it. Scalar operands: numbers are folded into the native
 * `affine` op (a·x + b) for float tensors.
 * https://pytorch.org/docs/stable/torch.html#pointwise-ops
 */
import { Tensor, callOp, withGrad } from '../tensor.ts';
import { ValueError } from '../errors.ts';
import { assertTensor, checkFillValue, checkFloat, isFloat, one, scalarLike, sumToShape } from './util.ts';
import { isGradEnabled } from '../autograd/tape.ts';
import { zerosLike } from './creation.ts';
import { autocastActive } from '../autocast.ts';

type Operand = Tensor | number;

function binary(name: string, a: Operand, b: Operand): Tensor {
  if (typeof a !== 'number') assertTensor(a, name, 'first operand');
  if (typeof b !== 'number') assertTensor(b, name, 'second operand');
  const aT = typeof a === 'number' ? null : a;
  const bT = typeof b === 'number' ? null : b;
  if (!aT && !bT) throw new ValueError(`${name}: at least one operand must be a Tensor`);
  const A = aT ?? scalarLike(a as number, bT!);
  const B = bT ?? scalarLike(b as number, aT!);
  try {
    return one(callOp(name, [A, B]));
  } finally {
    if (!aT) A.dispose();
    if (!bT) B.dispose();
  }
}

function affine(x: Tensor, scale: number, shift: number): Tensor {
  const out = one(callOp('affine', [x], { scale, shift }));
  withGrad([out], 'affine', [x], ([g]) => [scale === 1 ? g!.clone() : one(callOp('affine', [g!], { scale, shift: 0 }))], [], []);
  return out;
}

/** a + b (broadcasting; numbers allowed). */
export function add(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor && isFloat(a.dtype)) return affine(a, 1, b);
  if (typeof a === 'number' && b instanceof Tensor && isFloat(b.dtype)) return affine(b, 1, a);
  const out = binary('add', a, b);
  const aT = a instanceof Tensor ? a : null, bT = b instanceof Tensor ? b : null;
  const aS = aT?.shape, bS = bT?.shape;
  withGrad([out], 'add', [aT, bT], ([g]) => [aS ? sumToShape(g!, aS) : null, bS ? sumToShape(g!, bS) : null], [], []);
  return out;
}

/** a − b. */
export function sub(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor && isFloat(a.dtype)) return affine(a, 1, -b);
  if (typeof a === 'number' && b instanceof Tensor && isFloat(b.dtype)) return affine(b, -1, a);
  const out = binary('sub', a, b);
  const aT = a instanceof Tensor ? a : null, bT = b instanceof Tensor ? b : null;
  const aS = aT?.shape, bS = bT?.shape;
  withGrad([out], 'sub', [aT, bT], ([g]) => [
    aS ? sumToShape(g!, aS) : null,
    bS ? negate(sumToShape(g!, bS), g!) : null,
  ], [], []);
  return out;
}

function negate(t: Tensor, orig: Tensor): Tensor {
  const r = one(callOp('neg', [t]));
  if (t !== orig) t.dispose();
  return r;
}

/** a · b (elementwise). */
export function mul(a: Operand, b: Operand): Tensor {
  // (shift −0: x·s + (−0) is x·s for every x, the sign of a zero product included, where + 0 would turn −0 into +0)
  if (typeof b === 'number' && a instanceof Tensor && isFloat(a.dtype)) return affine(a, b, -0);
  if (typeof a === 'number' && b instanceof Tensor && isFloat(b.dtype)) return affine(b, a, -0);
  const out = binary('mul', a, b);
  const aT = a instanceof Tensor ? a : null, bT = b instanceof Tensor ? b : null;
  const aS = aT?.shape, bS = bT?.shape;  // (an operand the backward does not read is not saved: its shape is kept)
  withGrad([out], 'mul', [aT, bT], ([g]) => [
    aT && aT.requiresGrad ? reduceOwned(one(callOp('mul', [g!, bT!])), aS!) : null,
    bT && bT.requiresGrad ? reduceOwned(one(callOp('mul', [g!, aT!])), bS!) : null,
  ], [], [bT?.requiresGrad ? aT : null, aT?.requiresGrad ? bT : null]);  // (each operand only for the other's gradient)
  return out;
}

function reduceOwned(t: Tensor, shape: number[]): Tensor {
  const r = sumToShape(t, shape);
  if (r !== t) t.dispose();
  return r;
}

/** a / b (true division). */
export function div(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number' && a instanceof Tensor && isFloat(a.dtype)) {
    const out = binary('div', a, b);  // exact division (not multiplication by 1/b)
    withGrad([out], 'div', [a], ([g]) => [one(callOp('affine', [g!], { scale: 1 / b, shift: 0 }))], [], []);
    return out;
  }
  const out = binary('div', a, b);
  const aT = a instanceof Tensor ? a : null, bT = b instanceof Tensor ? b : null;
  const aS = aT?.shape, bS = bT?.shape;
  withGrad([out], 'div', [aT, bT], ([g]) => {
    const ga = aT && aT.requiresGrad ? reduceOwned(one(callOp('div', [g!, bT!])), aS!) : null;
    let gb: Tensor | null = null;
    if (bT && bT.requiresGrad) {
      // −g·out / b
      const t1 = one(callOp('mul', [g!, out]));
      const t2 = one(callOp('div', [t1, bT]));
      t1.dispose();
      const t3 = one(callOp('neg', [t2]));
      t2.dispose();
      gb = reduceOwned(t3, bS!);
    }
    return [ga, gb];
  }, [], [bT, bT?.requiresGrad ? out : null]);
  return out;
}

/** Elementwise maximum (gradient to the larger input; ties split evenly as in PyTorch). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  return minmax('maximum', a, b);
}
/** Elementwise minimum. */
export function minimum(a: Tensor, b: Tensor): Tensor {
  return minmax('minimum', a, b);
}
function minmax(name: 'maximum' | 'minimum', a: Tensor, b: Tensor): Tensor {
  const out = binary(name, a, b);
  withGrad([out], name, [a, b], ([g]) => {
    const pick = (x: Tensor, y: Tensor): Tensor => {
      // weight 1 where x wins, ½ on ties, 0 where it loses
      const win = one(callOp('eq', [x, out]));
      const tie = one(callOp('eq', [x, y]));
      const wf = one(callOp('cast', [win], { dtype: g!.dtype }));
      const w = one(callOp('masked_fill', [wf, tie], { value: 0.5 }));
      const r = one(callOp('mul', [g!, w]));
      for (const t of [win, tie, wf, w]) t.dispose();
      return reduceOwned(r, x.shape);
    };
    return [a.requiresGrad ? pick(a, b) : null, b.requiresGrad ? pick(b, a) : null];
  });
  return out;
}

function cmp(name: string) {
  return (a: Operand, b: Operand): Tensor => binary(name, a, b);
}
/** Comparisons → bool tensors (no gradient). */
export const eq = cmp('eq');
export const ne = cmp('ne');
export const lt = cmp('lt');
export const le = cmp('le');
export const gt = cmp('gt');
export const ge = cmp('ge');
export const logicalAnd = cmp('logical_and');
export const logicalOr = cmp('logical_or');
export function logicalNot(x: Tensor): Tensor {
  return one(callOp('logical_not', [x]));
}

// ---- unary --------------------------------------------------------------------------------------------

/** An op of one tensor; `save` names what its backward reads (the input, the output, both or neither), as PyTorch saves. */
function unary(name: string, x: Tensor, grad: (g: Tensor, x: Tensor, y: Tensor) => Tensor, save: ('x' | 'y')[]): Tensor {
  assertTensor(x, name, 'input');
  const y = one(callOp(name, [x]));
  withGrad([y], name, [x], ([g]) => [grad(g!, x, y)], [], save.map((s) => (s === 'x' ? x : y)));
  return y;
}

function chain(...steps: Tensor[]): Tensor {
  // disposes all but the last (temporaries of a backward formula)
  for (let i = 0; i < steps.length - 1; i++) steps[i]!.dispose();
  return steps[steps.length - 1]!;
}

export function neg(x: Tensor): Tensor {
  return unary('neg', x, (g) => one(callOp('neg', [g])), []);
}
export function exp(x: Tensor): Tensor {
  return unary('exp', x, (g, _x, y) => one(callOp('mul', [g, y])), ['y']);
}
export function log(x: Tensor): Tensor {
  return unary('log', x, (g, x) => one(callOp('div', [g, x])), ['x']);
}
export function sqrt(x: Tensor): Tensor {
  // d/dx √x = 1 / (2√x)
  return unary('sqrt', x, (g, _x, y) => {
    const t = one(callOp('div', [g, y]));
    return chain(t, one(callOp('affine', [t], { scale: 0.5, shift: 0 })));
  }, ['y']);
}
export function rsqrt(x: Tensor): Tensor {
  // d/dx x^-1/2 = −½ · y³
  return unary('rsqrt', x, (g, _x, y) => {
    const y3 = one(callOp('pow_scalar', [y], { exponent: 3 }));
    const t = one(callOp('mul', [g, y3]));
    y3.dispose();
    return chain(t, one(callOp('affine', [t], { scale: -0.5, shift: 0 })));
  }, ['y']);
}
export function abs(x: Tensor): Tensor {
  return unary('abs', x, (g, x) => {
    const s = one(callOp('sign', [x]));
    return chain(s, one(callOp('mul', [g, s])));
  }, ['x']);
}
export function sin(x: Tensor): Tensor {
  return unary('sin', x, (g, x) => {
    const c = one(callOp('cos', [x]));
    return chain(c, one(callOp('mul', [g, c])));
  }, ['x']);
}
export function cos(x: Tensor): Tensor {
  return unary('cos', x, (g, x) => {
    const s = one(callOp('sin', [x]));
    const n = one(callOp('neg', [s]));
    s.dispose();
    return chain(n, one(callOp('mul', [g, n])));
  }, ['x']);
}
export function sign(x: Tensor): Tensor {
  return one(callOp('sign', [x]));
}

function activation(name: string, kind: string, x: Tensor, bf16Out = false): Tensor {
  assertTensor(x, name, 'input');
  checkFloat(x, name);
  // bf16Out: only for an activation that a bf16 GEMM consumes under CPU autocast (activationForGemm)
  const out16 = bf16Out && autocastActive() && x.device === 'cpu' && x.dtype === 'f32' ? 1 : 0;
  if (autocastActive() && x.device === 'cpu' && x.dtype === 'f32' && x.requiresGrad && isGradEnabled()) {
    // CPU autocast: the backward keeps a bf16 copy of the input, written by the forward's pass (half the bytes of the
    // f32 input; torch.autocast's activations are bf16 tensors)
    const [y, xb] = callOp(name, [x], { save_bf16: 1, out_bf16: out16 });
    withGrad([y!], name, [x], ([g]) => [one(callOp('activation_bwd', [xb!, g!], { kind }))], [xb!], [xb!]);
    return y!;
  }
  const y = one(callOp(name, [x], out16 ? { out_bf16: 1 } : {}));
  withGrad([y], name, [x], ([g]) => [one(callOp('activation_bwd', [x, g!], { kind }))], [], [x]);
  return y;
}
const GEMM_ACTS = new Set(['gelu', 'gelu_tanh', 'relu', 'silu', 'quick_gelu']);  // op name = backward kind
/**
 * An activation whose result only feeds a projection that runs as a bf16 GEMM under CPU autocast (a transformer
 * MLP's up → act → down): the result comes back as bf16 there (the GEMM would round it to bf16 while packing
 * anyway, so the product is the same bit for bit), half the bytes to write and read. Elsewhere (no autocast, other
 * devices) the plain activation. kind: gelu, gelu_tanh, relu, silu or quick_gelu.
 */
export function activationForGemm(kind: string, x: Tensor): Tensor {
  if (!GEMM_ACTS.has(kind)) throw new ValueError(`activationForGemm: unsupported activation '${kind}'`);
  return activation(kind, kind, x, true);
}
export function relu(x: Tensor): Tensor { return activation('relu', 'relu', x); }
export function silu(x: Tensor): Tensor { return activation('silu', 'silu', x); }
export const swish = silu;
export function tanh(x: Tensor): Tensor { return activation('tanh', 'tanh', x); }
export function sigmoid(x: Tensor): Tensor { return activation('sigmoid', 'sigmoid', x); }
/** Elementwise arctangent (d/dx = 1 / (1 + x²)). */
export function atan(x: Tensor): Tensor { return activation('atan', 'atan', x); }
/** x · sigmoid(1.702 x) (CLIP / some GPT-2 variants). */
export function quickGelu(x: Tensor): Tensor {
  assertTensor(x, 'quickGelu', 'input');  // (the API's name in the message; the native op is quick_gelu)
  return activation('quick_gelu', 'quick_gelu', x);
}
/** GELU, exact (erf) by default or the tanh approximation with `{approximate: 'tanh'}`. */
export function gelu(x: Tensor, opts: { approximate?: 'none' | 'tanh' } = {}): Tensor {
  const ap = opts.approximate ?? 'none';
  if (ap !== 'none' && ap !== 'tanh') throw new ValueError(`gelu: approximate must be 'none' or 'tanh', got '${ap}'`);
  return ap === 'tanh' ? activation('gelu_tanh', 'gelu_tanh', x) : activation('gelu', 'gelu', x);
}

/** x ** p for a number p. */
export function pow(x: Tensor, p: number): Tensor {
  assertTensor(x, 'pow', 'input');
  if (typeof p !== 'number') throw new ValueError('pow: exponent must be a number');
  const y = one(callOp('pow_scalar', [x], { exponent: p }));
  withGrad([y], 'pow', [x], ([g]) => {
    if (p === 0) return [one(callOp('affine', [g!], { scale: 0, shift: 0 }))];
    const d = one(callOp('pow_scalar', [x], { exponent: p - 1 }));
    const t = one(callOp('mul', [g!, d]));
    d.dispose();
    return [chain(t, one(callOp('affine', [t], { scale: p, shift: 0 })))];
  }, [], [x]);
  return y;
}

/** Clamps into [min, max] (either may be omitted); gradient passes where min ≤ x ≤ max. */
export function clamp(x: Tensor, min?: number | null, max?: number | null): Tensor {
  assertTensor(x, 'clamp', 'input');
  if ((min === undefined || min === null) && (max === undefined || max === null)) throw new ValueError('clamp: at least one of min and max must be given');
  const attrs = { min: min ?? undefined, max: max ?? undefined };
  const y = one(callOp('clamp', [x], attrs));
  withGrad([y], 'clamp', [x], ([g]) => [one(callOp('clamp_bwd', [x, g!], attrs))], [], [x]);
  return y;
}

/** where(cond, a, b): a where cond is true, else b (broadcasting). */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  assertTensor(cond, 'where', 'condition');
  const aT = a instanceof Tensor ? a : null, bT = b instanceof Tensor ? b : null;
  const like = aT ?? bT ?? cond;
  const A = aT ?? scalarLike(a as number, like), B = bT ?? scalarLike(b as number, like);
  let out: Tensor;
  try {
    out = one(callOp('where', [cond, A, B]));
  } finally {
    if (!aT) A.dispose();
    if (!bT) B.dispose();
  }
  const aS = aT?.shape, bS = bT?.shape;
  withGrad([out], 'where', [aT, bT], ([g]) => {
    // true zeros (0·g would turn an infinite upstream gradient into NaN where the other branch was chosen)
    const zero = (): Tensor => zerosLike(g!);
    const ga = aT && aT.requiresGrad ? (() => { const z = zero(); const r = one(callOp('where', [cond, g!, z])); z.dispose(); return reduceOwned(r, aS!); })() : null;
    const gb = bT && bT.requiresGrad ? (() => { const z = zero(); const r = one(callOp('where', [cond, z, g!])); z.dispose(); return reduceOwned(r, bS!); })() : null;
    return [ga, gb];
  }, [], [cond]);
  return out;
}

/** Fills positions where mask (bool, broadcastable) is true with value. */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  assertTensor(x, 'maskedFill', 'input');
  assertTensor(mask, 'maskedFill', 'mask');
  checkFillValue(value, x.dtype, 'maskedFill');
  const y = one(callOp('masked_fill', [x, mask], { value }));
  withGrad([y], 'maskedFill', [x], ([g]) => [one(callOp('masked_fill', [g!, mask], { value: 0 }))], [], [mask]);
  return y;
}
