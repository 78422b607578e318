/**
 * Tensor: an owned handle to native memory (a strided view of a refcounted storage) plus autograd state.
 * Memory is released deterministically with `dispose()` / `using` / `scope()`; a FinalizationRegistry
 * frees what is forgotten (a backstop only: the native side reports its bytes to V8 so GC sees them).
 */
import { native, type AttrValue, type TensorHandle } from './binding.ts';
import { AutogradError, DisposedError, DTypeError, ShapeError, ValueError, fromNative } from './errors.ts';
import { Node, inBackward, isGradEnabled, noGrad, runBackward } from './autograd/tape.ts';
import { keep as keepFromScope, trackInScope } from './scope.ts';
import { autocastForget } from './autocast.ts';

export type DType = 'f32' | 'bf16' | 'f16' | 'i32' | 'i64' | 'bool';
export const DTYPES: readonly DType[] = ['f32', 'bf16', 'f16', 'i32', 'i64', 'bool'];
export type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array | Int8Array | Int16Array | Uint32Array;
export type NestedArray = number | boolean | NestedArray[];

export interface TensorOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

// Backstop for tensors that were never disposed: frees the handle when the Tensor object is collected.
const registry = new FinalizationRegistry<TensorHandle>((h) => {
  liveTensors--;
  if (!h.disposed) h.dispose();
});

let liveTensors = 0;
/** Number of Tensor objects not yet disposed (GC'd tensors included until collected). */
export function liveTensorCount(): number {
  return liveTensors;
}

/** Calls a native op and wraps its results; native errors become typed AdaptersErrors. */
export function callOp(name: string, inputs: (Tensor | null | undefined)[], attrs: Record<string, AttrValue> = {}): Tensor[] {
  const hs = inputs.map((t, i) => {
    if (t === null || t === undefined) return null;
    if (!(t instanceof Tensor)) throw new ValueError(`${name}: input #${i} must be a Tensor, got ${typeof t}`);
    if (t.disposed && !inBackward()) throw new DisposedError(`${name}: input #${i} was disposed`);
    return t.handle;
  });
  let out: TensorHandle[];
  const t0 = profile ? profileStart() : 0;
  try {
    out = native.runOp(name, hs, attrs);
  } catch (e) {
    fromNative(e);
  }
  if (profile) profileEnd(profileShapes ? `${name} ${inputs.map((t) => (t ? `${t.dtype}[${t.shape.join(',')}]` : '-')).join(' ')}` : name, t0);
  const written = WRITTEN[name];
  if (written) for (const i of written(hs.length)) hs[i]?.bumpVersion();
  return out.map((h) => new Tensor(h));
}

/**
 * The ops that write into some of their inputs, and which ones: their storages' versions go up, so a graph that saved
 * one of them for its backward raises instead of computing a wrong gradient (PyTorch's version counter).
 */
const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);
const WRITTEN: Record<string, (nInputs: number) => number[]> = {
  copy_: () => [0],
  accumulate_: () => [0],
  // [hyper, ...params, ...grads, ...exp_avg, ...exp_avg_sq]
  adamw_step: (k) => { const n = (k - 1) / 4; return [...range(1, n + 1), ...range(2 * n + 1, k)]; },
  // [hyper, ...params, ...grads, ...momentum buffers]
  sgd_step: (k) => { const n = (k - 1) / 3; return [...range(1, n + 1), ...range(2 * n + 1, k)]; },
};

// Per-op timing (opProfile): each op runs between two device synchronisations so that the time of an
// asynchronous CUDA launch lands on its own op. Off by default; it costs a sync per op when on.
let profile: Map<string, { calls: number; ms: number }> | null = null;
let profileShapes = false;
let cudaOn = false;
function profileStart(): number {
  if (cudaOn) native.cudaMemory('sync');
  return performance.now();
}
function profileEnd(name: string, t0: number): void {
  if (cudaOn) native.cudaMemory('sync');
  const e = profile!.get(name) ?? { calls: 0, ms: 0 };
  e.calls++;
  e.ms += performance.now() - t0;
  profile!.set(name, e);
}
/**
 * Starts (on = true, clearing earlier counts) or stops per-op timing; returns the counts so far, slowest first.
 * byShape: count each op separately per input dtypes and shapes ("linear f32[8,128,768] f32[768,768] -").
 */
export function opProfile(on: boolean, opts: { byShape?: boolean } = {}): { op: string; calls: number; ms: number }[] {
  const rows = profile ? [...profile].map(([op, v]) => ({ op, ...v })).sort((a, b) => b.ms - a.ms) : [];
  profile = on ? new Map() : null;
  profileShapes = on && !!opts.byShape;
  cudaOn = on && native.hasCuda();
  return rows;
}

/** The op table used by Tensor's methods; filled by lib/ops/index.ts (avoids an import cycle). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const opsRef: Record<string, (...args: any[]) => any> = {};

export class Tensor {
  #h: TensorHandle | null;
  /** dispose() was called; the memory may live on while a graph node still retains the tensor. */
  #userDisposed = false;
  #retains = 0;
  /** Whether gradients flow to this tensor (leaf) or through it. */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after `backward()`. */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor (null for leaves). */
  gradFn: Node | null = null;
  /** Which output of `gradFn` this tensor is. */
  outputIndex = 0;

  /** @internal wraps a native handle; use `tensor()`/`zeros()`/ops to create tensors. */
  constructor(h: TensorHandle) {
    this.#h = h;
    liveTensors++;
    registry.register(this, h, this);
    trackInScope(this);
  }

  /**
   * @internal Moves this tensor's memory to `device` in place, keeping the object (parameters keep their
   * identity, as torch's Module.to does); its gradient moves too. Leaves only.
   */
  _moveTo(device: string): void {
    if (this.gradFn) throw new AutogradError('only leaf tensors (parameters, buffers) can be moved in place');
    if (this.device === device.replace(/^cuda$/, 'cuda:0')) return;
    const moved = noGrad(() => opsRef.toDevice!(this, device) as Tensor);
    // swap handles: this takes the device copy, `moved` the old memory, which its dispose() frees
    const old = this.#h!;
    this.#h = moved.#h;
    moved.#h = old;
    registry.unregister(this);
    registry.register(this, this.#h!, this);
    registry.unregister(moved);
    registry.register(moved, old, moved);
    moved.dispose();
    if (this.grad) {
      const g = this.grad;
      this.grad = keepFromScope(noGrad(() => opsRef.toDevice!(g, device) as Tensor));
      g.dispose();
    }
  }
  /** @internal the native handle; throws DisposedError after dispose(). */
  get handle(): TensorHandle {
    if (!this.#h || (this.#userDisposed && !inBackward())) throw new DisposedError('tensor was disposed (use after dispose())');
    return this.#h;
  }
  /** True after dispose() (during a backward pass, tensors still retained by the graph read as alive). */
  get disposed(): boolean {
    return (this.#userDisposed && !inBackward()) || this.#h === null;
  }
  /** @internal dispose() was called, whatever the graph still retains. */
  get _userDisposed(): boolean {
    return this.#userDisposed || this.#h === null;
  }
  /** @internal a graph node still keeps this tensor. */
  get _retained(): boolean {
    return this.#retains > 0;
  }
  /** @internal a graph node keeps this tensor's memory until it is released. */
  _retain(): void {
    this.#retains++;
  }
  /** @internal */
  _release(): void {
    if (--this.#retains <= 0 && this.#userDisposed) this.#free();
  }
  #free(): void {
    if (this.#h) this.#h.dispose();
    this.#h = null;
  }
  // A handle's geometry never changes, so it is read from native once and cached (copies handed out).
  #shape: number[] | null = null;
  #dtype: DType | null = null;
  get shape(): number[] {
    const h = this.handle;
    if (!this.#shape) this.#shape = h.shape;
    return this.#shape.slice();
  }
  get strides(): number[] {
    return this.handle.strides;
  }
  get dtype(): DType {
    const h = this.handle;
    if (!this.#dtype) this.#dtype = h.dtype as DType;
    return this.#dtype;
  }
  get device(): string {
    return this.handle.device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get numel(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }
  /** Bytes of this view's elements. */
  get nbytes(): number {
    return this.handle.nbytes;
  }
  get isContiguous(): boolean {
    return this.handle.isContiguous;
  }
  get isLeaf(): boolean {
    return this.gradFn === null;
  }
  size(dim?: number): number | number[] {
    if (dim === undefined) return this.shape;
    const s = this.shape;
    const d = dim < 0 ? dim + s.length : dim;
    if (d < 0 || d >= s.length) throw new ValueError(`size: dimension ${dim} out of range for shape [${s}]`);
    return s[d]!;
  }

  /** Frees the native memory now (idempotent). Gradients and tape references are released too. */
  dispose(): void {
    if (this.#userDisposed || !this.#h) return;
    this.#userDisposed = true;
    registry.unregister(this);
    liveTensors--;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    const node = this.gradFn;
    this.gradFn = null;
    if (node) node.unref();
    if (this.#retains <= 0) this.#free();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Copies the elements out, in row-major order: Float32Array for f32/bf16/f16, Int32Array, BigInt64Array,
   * Uint8Array (bool).
   */
  toArray(): Float32Array | Int32Array | BigInt64Array | Uint8Array {
    const dt = this.dtype;
    if (this.device !== 'cpu') return this.cpu().#consume((t) => t.toArray());  // like torch's .tolist() on a GPU tensor
    if (dt === 'bf16' || dt === 'f16') return this.to('f32').#consume((t) => t.toArray()) as Float32Array;
    const buf = this.handle.toBuffer();
    switch (dt) {
      case 'f32': return new Float32Array(buf);
      case 'i32': return new Int32Array(buf);
      case 'i64': return new BigInt64Array(buf);
      default: return new Uint8Array(buf);
    }
  }
  /** Nested JS arrays (numbers; booleans for bool tensors). */
  tolist(): NestedArray {
    const flat = Array.from(this.toArray() as ArrayLike<number | bigint>, (v) =>
      this.dtype === 'bool' ? v !== 0 : Number(v),
    );
    const shape = this.shape;
    if (shape.length === 0) return flat[0]!;
    const build = (d: number, off: number): NestedArray[] => {
      const n = shape[d]!;
      const stride = shape.slice(d + 1).reduce((a, b) => a * b, 1);
      const r: NestedArray[] = [];
      for (let i = 0; i < n; i++) r.push(d === shape.length - 1 ? flat[off + i]! : build(d + 1, off + i * stride));
      return r;
    };
    return build(0, 0);
  }
  /** The value of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new ShapeError(`item: tensor of shape [${this.shape}] has ${this.numel} elements, expected 1`);
    const v = this.toArray()[0]!;
    return typeof v === 'bigint' ? Number(v) : v;
  }

  #consume<T>(fn: (t: Tensor) => T): T {
    try {
      return fn(this);
    } finally {
      this.dispose();
    }
  }

  /**
   * Backpropagates from this tensor (a scalar unless `grad` is given). The options may also come first:
   * `loss.backward({ retainGraph: true })`.
   */
  backward(grad?: Tensor | { retainGraph?: boolean }, opts: { retainGraph?: boolean } = {}): void {
    if (grad !== undefined && grad !== null && !(grad instanceof Tensor)) {
      if (typeof grad !== 'object' || Array.isArray(grad)) throw new ValueError(`backward: the gradient must be a Tensor, got ${Array.isArray(grad) ? 'an array' : typeof grad}`);
      opts = grad;
      grad = undefined;
    }
    let g = grad ?? undefined;
    let own = false;
    if (!g) {
      if (this.numel !== 1) throw new ShapeError(`backward: grad can be implicitly created only for scalar outputs, got shape [${this.shape}]`);
      g = opsRef.onesLike!(this) as Tensor;
      own = true;
    } else if (g.shape.join() !== this.shape.join()) {
      throw new ShapeError(`backward: gradient shape [${g.shape}] does not match tensor shape [${this.shape}]`);
    } else if (g.dtype !== this.dtype && !['f32', 'bf16', 'f16'].includes(g.dtype)) {
      g = noGrad(() => g!.to(this.dtype));  // an integer gradient is cast to the tensor's dtype, as PyTorch does
      own = true;
    }
    try {
      const root = g;
      noGrad(() => runBackward(this, root, opts, { add: (a, b) => opsRef.add!(a, b) as Tensor, accumulate: (d, g) => void callOp('accumulate_', [d, g]) }));
    } finally {
      if (own) g.dispose();
    }
  }

  /** A tensor sharing this one's memory, cut from the tape. */
  detach(): Tensor {
    const h = this.handle;
    return new Tensor(native.asStrided(h, h.shape, h.strides, h.offset));
  }
  /** Sets requiresGrad (leaves only) and returns this. */
  requiresGrad_(flag = true): this {
    if (this.gradFn && !flag) throw new ValueError('requiresGrad_(false) on a non-leaf tensor; use detach()');
    if (flag && !(this.dtype === 'f32' || this.dtype === 'bf16' || this.dtype === 'f16'))
      throw new DTypeError(`only floating tensors can require gradients, got ${this.dtype}`);
    this.requiresGrad = flag;
    return this;
  }
  /**
   * Copies src (broadcast, converted to this dtype) into this tensor's memory, in place. On a tensor that
   * requires grad this is allowed only under noGrad() (parameter updates), as in PyTorch.
   */
  copy_(src: Tensor): this {
    if (this.requiresGrad && isGradEnabled())
      throw new AutogradError('copy_: in-place update of a tensor that requires grad; wrap it in noGrad()');
    // the copy is not recorded on the tape: a source that carries gradients would silently lose them
    if (src instanceof Tensor && src.requiresGrad && isGradEnabled())
      throw new AutogradError('copy_: the source requires grad, and copy_ is not recorded on the tape (its gradient would be lost); use clone() / ops instead, or noGrad()');
    // an expanded destination (stride 0 over a dim of size > 1) would keep whichever row was written last
    if (this.strides.some((st, i) => st === 0 && this.shape[i]! > 1))
      throw new ValueError(`copy_: the destination [${this.shape}] is an expanded view (stride 0); copy into a contiguous tensor`);
    autocastForget(this);
    // a source sharing memory with the destination (e.g. a.copy_(a.T)) is read from a copy first
    if (src instanceof Tensor && !src.disposed && this.handle.sameStorage(src.handle)) {
      const tmp = src.clone();
      try {
        callOp('copy_', [this, tmp]);
      } finally {
        tmp.dispose();
      }
      return this;
    }
    callOp('copy_', [this, src]);
    return this;
  }
  /** Drops the accumulated gradient. */
  zeroGrad(): void {
    if (this.grad) this.grad.dispose();
    this.grad = null;
  }

  // ---- methods forwarding to ops (PyTorch names, camelCase) ----
  add(o: Tensor | number): Tensor { return opsRef.add!(this, o); }
  sub(o: Tensor | number): Tensor { return opsRef.sub!(this, o); }
  mul(o: Tensor | number): Tensor { return opsRef.mul!(this, o); }
  div(o: Tensor | number): Tensor { return opsRef.div!(this, o); }
  neg(): Tensor { return opsRef.neg!(this); }
  exp(): Tensor { return opsRef.exp!(this); }
  log(): Tensor { return opsRef.log!(this); }
  sqrt(): Tensor { return opsRef.sqrt!(this); }
  rsqrt(): Tensor { return opsRef.rsqrt!(this); }
  abs(): Tensor { return opsRef.abs!(this); }
  pow(p: number): Tensor { return opsRef.pow!(this, p); }
  tanh(): Tensor { return opsRef.tanh!(this); }
  sigmoid(): Tensor { return opsRef.sigmoid!(this); }
  relu(): Tensor { return opsRef.relu!(this); }
  matmul(o: Tensor): Tensor { return opsRef.matmul!(this, o); }
  sum(dim?: number | number[], opts?: { keepdim?: boolean }): Tensor { return opsRef.sum!(this, dim, opts); }
  mean(dim?: number | number[], opts?: { keepdim?: boolean }): Tensor { return opsRef.mean!(this, dim, opts); }
  max(dim?: number, opts?: { keepdim?: boolean }): Tensor { return opsRef.max!(this, dim, opts); }
  argmax(dim?: number, opts?: { keepdim?: boolean }): Tensor { return opsRef.argmax!(this, dim, opts); }
  softmax(dim: number): Tensor { return opsRef.softmax!(this, dim); }
  logSoftmax(dim: number): Tensor { return opsRef.logSoftmax!(this, dim); }
  reshape(...shape: (number | number[])[]): Tensor { return opsRef.reshape!(this, shape.flat()); }
  view(...shape: (number | number[])[]): Tensor { return opsRef.view!(this, shape.flat()); }
  flatten(start = 0, end = -1): Tensor { return opsRef.flatten!(this, start, end); }
  transpose(d0: number, d1: number): Tensor { return opsRef.transpose!(this, d0, d1); }
  /** Transpose of the last two dims. */
  get T(): Tensor { return opsRef.transpose!(this, -2, -1); }
  permute(...dims: (number | number[])[]): Tensor { return opsRef.permute!(this, dims.flat()); }
  unsqueeze(dim: number): Tensor { return opsRef.unsqueeze!(this, dim); }
  squeeze(dim?: number): Tensor { return opsRef.squeeze!(this, dim); }
  expand(...shape: (number | number[])[]): Tensor { return opsRef.expand!(this, shape.flat()); }
  slice(dim: number, start?: number, end?: number, step?: number): Tensor { return opsRef.slice!(this, dim, start, end, step); }
  contiguous(): Tensor { return this.isContiguous ? this.detachKeepGraph() : opsRef.contiguous!(this); }
  clone(): Tensor { return opsRef.contiguous!(this); }
  /**
   * Converts to `dtype` (a copy; differentiable between float dtypes), or moves to a device ('cpu', 'cuda',
   * 'cuda:N'; a contiguous copy there, differentiable), like torch's Tensor.to.
   */
  to(dtypeOrDevice: DType | string): Tensor {
    return /^(cpu|cuda(:\d+)?)$/.test(dtypeOrDevice) ? opsRef.toDevice!(this, dtypeOrDevice) : opsRef.cast!(this, dtypeOrDevice as DType);
  }
  /** A copy on the GPU (`to('cuda')`). */
  cuda(index = 0): Tensor { return this.to(`cuda:${index}`); }
  /** A copy on the host (`to('cpu')`); the tensor itself when it is already there. */
  cpu(): Tensor { return this.to('cpu'); }
  float(): Tensor { return this.to('f32'); }
  maskedFill(mask: Tensor, value: number): Tensor { return opsRef.maskedFill!(this, mask, value); }
  /** torch's x.where(condition, other): x where condition holds, else other. */
  where(condition: Tensor, other: Tensor | number): Tensor { return opsRef.where!(condition, this, other); }
  clamp(min?: number | null, max?: number | null): Tensor { return opsRef.clamp!(this, min, max); }
  gelu(opts?: { approximate?: 'none' | 'tanh' }): Tensor { return opsRef.gelu!(this, opts); }
  silu(): Tensor { return opsRef.silu!(this); }
  narrow(dim: number, start: number, length: number): Tensor { return opsRef.narrow!(this, dim, start, length); }
  split(sizeOrSizes: number | number[], dim = 0): Tensor[] { return opsRef.split!(this, sizeOrSizes, dim); }
  chunk(chunks: number, dim = 0): Tensor[] { return opsRef.chunk!(this, chunks, dim); }
  indexSelect(dim: number, index: Tensor): Tensor { return opsRef.indexSelect!(this, dim, index); }
  gather(dim: number, index: Tensor): Tensor { return opsRef.gather!(this, dim, index); }
  /** Transpose of the last two dims (torch's mT; T does the same here). */
  get mT(): Tensor { return opsRef.transpose!(this, -2, -1); }
  /** Number of dims (torch's dim()). */
  dim(): number { return this.ndim; }

  /** @internal a new Tensor object for the same view that keeps the tape (identity op). */
  detachKeepGraph(): Tensor {
    return opsRef.alias!(this);
  }

  toString(): string {
    if (this.disposed) return 'Tensor(<disposed>)';
    return `Tensor(shape=[${this.shape}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

// ---- creation --------------------------------------------------------------------------------------

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let cur: NestedArray = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0]!;
  }
  return shape;
}

function flattenNested(data: NestedArray, shape: number[], out: number[], d = 0, where = 'data'): void {
  if (d === shape.length) {
    if (typeof data === 'number') out.push(data);
    else if (typeof data === 'boolean') out.push(data ? 1 : 0);
    else throw new ValueError(`tensor: ${where} must be a number or boolean, got ${Array.isArray(data) ? 'an array (ragged nesting)' : typeof data}`);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[d])
    throw new ShapeError(`tensor: ragged nested array at ${where}: expected length ${shape[d]}, got ${Array.isArray(data) ? data.length : typeof data}`);
  for (let i = 0; i < data.length; i++) flattenNested(data[i]!, shape, out, d + 1, `${where}[${i}]`);
}

function validateShape(shape: number[], what: string): void {
  if (!Array.isArray(shape)) throw new ValueError(`${what}: shape must be an array of integers`);
  for (const s of shape)
    if (!Number.isInteger(s) || s < 0) throw new ShapeError(`${what}: invalid dimension ${s} in shape [${shape}]`);
}

/** Native typed array for dtype dt from plain numbers. */
function encode(values: ArrayLike<number> | ArrayLike<bigint>, dt: DType): { buf: ArrayBufferView; dtype: string } {
  const n = values.length;
  switch (dt) {
    case 'f32':
      return { buf: Float32Array.from(values as ArrayLike<number>, Number), dtype: 'f32' };
    case 'bf16':
    case 'f16':
      // built in f32 then converted natively (round to nearest even)
      return { buf: Float32Array.from(values as ArrayLike<number>, Number), dtype: 'f32' };
    case 'i32': {
      const a = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = Number(values[i]);
        if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) throw new ValueError(`tensor: ${v} is not a valid i32`);
        a[i] = v;
      }
      return { buf: a, dtype: 'i32' };
    }
    case 'i64': {
      const a = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        if (typeof v === 'bigint') {
          if (v < -(2n ** 63n) || v >= 2n ** 63n) throw new ValueError(`tensor: ${v} is out of the i64 range`);
          a[i] = v;
        } else {
          if (!Number.isInteger(v)) throw new ValueError(`tensor: ${v} is not an integer (dtype i64)`);
          // (BigInt64Array would wrap a value past ±2^63 silently)
          if (v < -9223372036854775808 || v >= 9223372036854775808) throw new ValueError(`tensor: ${v} is out of the i64 range`);
          a[i] = BigInt(v);
        }
      }
      return { buf: a, dtype: 'i64' };
    }
    case 'bool': {
      const a = new Uint8Array(n);
      // (NaN is true, as in torch and C++'s bool conversion; only 0 is false)
      for (let i = 0; i < n; i++) { const v = Number(values[i]); a[i] = v !== 0 ? 1 : 0; }
      return { buf: a, dtype: 'bool' };
    }
  }
}

/**
 * Creates a tensor from a typed array (with `shape`), nested arrays, or a number.
 * Typed arrays: Float32Array → f32, Int32Array → i32, BigInt64Array → i64, Uint8Array with dtype 'bool',
 * Uint16Array with dtype 'bf16'/'f16' is taken as raw bit patterns. Numbers default to f32.
 */
export function tensor(data: TypedData | NestedArray, shape?: number[], opts: TensorOptions = {}): Tensor {
  let dt = opts.dtype;
  if (dt !== undefined && !DTYPES.includes(dt)) throw new DTypeError(`tensor: unknown dtype '${dt}'`);
  let h: TensorHandle;
  try {
    if (ArrayBuffer.isView(data)) {
      const arr = data as TypedData;
      const shp = shape ?? [arr.length];
      validateShape(shp, 'tensor');
      const n = shp.reduce((a, b) => a * b, 1);
      if (n !== arr.length) throw new ShapeError(`tensor: ${arr.length} values cannot fill shape [${shp}] (${n} elements)`);
      if (!dt)
        dt = arr instanceof Int32Array ? 'i32' : arr instanceof BigInt64Array ? 'i64' : arr instanceof Uint8Array ? 'bool' : 'f32';
      if ((dt === 'bf16' || dt === 'f16') && arr instanceof Uint16Array) {
        h = native.fromBuffer(arr, dt, shp);
      } else if ((dt === 'f32' && arr instanceof Float32Array) || (dt === 'i32' && arr instanceof Int32Array) ||
                 (dt === 'i64' && arr instanceof BigInt64Array) || (dt === 'bool' && arr instanceof Uint8Array)) {
        h = native.fromBuffer(arr, dt, shp);
      } else {
        const enc = encode(arr as ArrayLike<number>, dt);
        h = native.fromBuffer(enc.buf, enc.dtype, shp);
        if (enc.dtype !== dt) h = convert(h, dt);
      }
    } else {
      const shp = inferShape(data);
      const flat: number[] = [];
      flattenNested(data, shp, flat);
      if (!dt) dt = typeof data === 'boolean' || (Array.isArray(data) && isBoolNested(data)) ? 'bool' : 'f32';
      const finalShape = shape ?? shp;
      validateShape(finalShape, 'tensor');
      const n = finalShape.reduce((a, b) => a * b, 1);
      if (n !== flat.length) throw new ShapeError(`tensor: ${flat.length} values cannot fill shape [${finalShape}]`);
      const enc = encode(flat, dt);
      h = native.fromBuffer(enc.buf, enc.dtype, finalShape);
      if (enc.dtype !== dt) h = convert(h, dt);
    }
  } catch (e) {
    fromNative(e);
  }
  const t = new Tensor(h);
  if (opts.requiresGrad) {
    try {
      t.requiresGrad_(true);
    } catch (e) {
      t.dispose();
      throw e;
    }
  }
  return t;
}

/** All leaves are booleans (a mix of booleans and numbers is numeric, as torch promotes it). */
function isBoolNested(d: NestedArray): boolean {
  if (!Array.isArray(d)) return typeof d === 'boolean';
  if (!d.length) return false;
  return d.every((x) => isBoolNested(x));
}

function convert(h: TensorHandle, dt: DType): TensorHandle {
  const [o] = native.runOp('cast', [h], { dtype: dt });
  h.dispose();
  return o!;
}

/** @internal creates a Tensor and records a tape node when needed. */
/**
 * @internal records a tape node for `outs` when an input requires grad. `saved` lists the tensors the
 * backward closure reads (retained until the node is released); by default every input and output.
 * Closures must not read other tensors (capture shapes and dtypes as plain values instead).
 */
export function withGrad(
  outs: Tensor[],
  name: string,
  inputs: (Tensor | null | undefined)[],
  backward: (grads: (Tensor | null)[]) => (Tensor | null)[],
  owned: Tensor[] = [],
  saved?: (Tensor | null | undefined)[],
): void {
  if (!isGradEnabled() || !inputs.some((t) => t && t.requiresGrad)) {
    for (const t of owned) t.dispose();
    return;
  }
  // tensors made only for the backward belong to the node, not to an enclosing scope()
  for (const t of owned) keepFromScope(t);
  const keep = (saved ?? [...inputs, ...outs]).filter((t): t is Tensor => !!t);
  const node = new Node(name, inputs.map((t) => t ?? null), outs.length, backward, owned, keep);
  outs.forEach((o, i) => {
    o.gradFn = node;
    o.outputIndex = i;
    o.requiresGrad = true;
    node.refs++;
  });
}
