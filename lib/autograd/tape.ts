/**
 * The autograd tape. Ops record a `Node` (inputs, a backward closure and the tensors it saved) on each
 * output that needs a gradient; `backward()` walks the graph in reverse topological order. The tape knows
 * no specific op: derivatives live next to their forward in lib/ops/.
 *
 * Invariants:
 * - Gradients in flight are reference-counted and disposed as soon as no slot needs them.
 * - After a backward pass, each visited node drops its saved tensors and disposes those it owns (native
 *   intermediates such as a norm's mean/rstd); a second backward through it raises AutogradError unless
 *   the first one was called with `retainGraph: true`.
 */
import { AutogradError } from '../errors.ts';
import type { Tensor } from '../tensor.ts';
import { keep } from '../scope.ts';

let gradEnabled = true;

/** Whether ops currently record the tape. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with recording off (like `torch.no_grad()`); returns fn's result. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn with recording set to `enabled`. */
export function withGradEnabled<T>(enabled: boolean, fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = enabled;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export type BackwardFn = (grads: (Tensor | null)[]) => (Tensor | null)[];

/** Where the gradient of one op input goes: the node that produced it, or the leaf tensor itself. */
export interface Edge {
  node: Node | null;
  index: number;
  leaf: Tensor | null;
}

let backwardDepth = 0;
/** True while a backward pass runs: saved tensors the user already disposed may still be read. */
export function inBackward(): boolean {
  return backwardDepth > 0;
}

/**
 * One recorded op. Nodes are reference-counted like PyTorch's graph: each live output tensor and each
 * consumer node holds a reference; when the count drops to zero (outputs disposed, consumers gone) the
 * node releases its saved tensors and its references to its producers. Saved tensors are retained, so
 * disposing (or scope()-disposing) an intermediate never breaks a later backward().
 */
export class Node {
  freed = false;
  refs = 0;
  /** Captured when the op runs, so disposing an intermediate Tensor object never cuts the graph. */
  readonly edges: (Edge | null)[];
  constructor(
    readonly name: string,
    /** The op's inputs (null where an input doesn't need a gradient or is absent). */
    inputs: (Tensor | null)[],
    /** Number of outputs of the op (gradients arrive per output). */
    readonly nOutputs: number,
    public backwardFn: BackwardFn | null,
    /** Tensors created by the op only for its backward: disposed when the node is released. */
    public owned: Tensor[],
    /** Tensors the backward reads (inputs/outputs): retained until the node is released. */
    public saved: Tensor[],
  ) {
    this.edges = inputs.map((t) =>
      t && t.requiresGrad ? (t.gradFn ? { node: t.gradFn, index: t.outputIndex, leaf: null } : { node: null, index: 0, leaf: t }) : null,
    );
    for (const e of this.edges) if (e?.node) e.node.refs++;
    for (const t of saved) t._retain();
    this.savedVersions = saved.map((t) => t.handle.version);
  }
  /** The storage version of each saved tensor when the op ran (see checkSaved). */
  private readonly savedVersions: number[];

  /**
   * Refuses to run the backward when a saved tensor was written in place since the op ran (copy_ under noGrad, an
   * optimiser step): its gradient would be computed from the new values, silently wrong. PyTorch's version check.
   */
  checkSaved(): void {
    for (let i = 0; i < this.saved.length; i++) {
      const t = this.saved[i]!, now = t.handle.version, then = this.savedVersions[i]!;
      if (now !== then)
        throw new AutogradError(
          `backward: a tensor that '${this.name}' saved for its gradient (${t.dtype} [${t.shape.join(', ')}]) was modified by an ` +
            `in-place operation (copy_, an optimiser step) after the forward pass: it is at version ${now}, expected ${then}. ` +
            'Run the in-place update after backward(), or recompute the forward pass.',
        );
    }
  }

  unref(): void {
    if (--this.refs <= 0) this.release(true);
  }

  /** Frees what the backward needed; with cascade, drops the references to producer nodes too. */
  release(cascade: boolean): void {
    if (this.freed) return;
    this.freed = true;
    this.backwardFn = null;
    for (const t of this.owned) t.dispose();
    this.owned = [];
    const saved = this.saved;
    this.saved = [];
    for (const t of saved) t._release();
    if (cascade) for (const e of this.edges) if (e?.node) e.node.unref();
  }
}

/** Records `node` on the outputs when any input requires a gradient and recording is on. */
export function needsGrad(inputs: (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

interface BackwardOptions {
  retainGraph?: boolean;
}

/**
 * Backpropagates from `root` with upstream gradient `grad` (a tensor of root's shape). Leaf tensors with
 * `requiresGrad` accumulate into `.grad`.
 */
/** The ops the backward pass sums gradients with (passed in: this module cannot import the op layer). */
export interface TapeOps {
  add(a: Tensor, b: Tensor): Tensor;
  /** dst += src in place (both contiguous f32 CPU tensors of one shape). */
  accumulate(dst: Tensor, src: Tensor): void;
}

export function runBackward(root: Tensor, grad: Tensor, opts: BackwardOptions, ops: TapeOps): void {
  if (!root.gradFn) {
    if (!root.requiresGrad) throw new AutogradError('backward: tensor does not require grad and has no grad_fn');
    accumulateLeaf(root, grad, ops);
    return;
  }
  // topological order (iterative DFS)
  const order: Node[] = [];
  const seen = new Set<Node>();
  const stack: [Node, number][] = [[root.gradFn, 0]];
  seen.add(root.gradFn);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [node, i] = top;
    if (node.freed)
      throw new AutogradError(
        `backward: the graph through '${node.name}' was already freed by an earlier backward(); ` +
          'pass {retainGraph: true} to the first call to backpropagate twice',
      );
    if (i < node.edges.length) {
      top[1]++;
      const g = node.edges[i]?.node;
      if (g && !seen.has(g)) {
        seen.add(g);
        stack.push([g, 0]);
      }
    } else {
      order.push(node);
      stack.pop();
    }
  }
  backwardDepth++;
  try {
    backwardPass(root, grad, order, opts, ops);
  } finally {
    backwardDepth--;
  }
}

function backwardPass(root: Tensor, grad: Tensor, order: Node[], opts: BackwardOptions, ops: TapeOps): void {
  const refs = new Map<Tensor, number>();
  const keep = new Set<Tensor>([grad]);  // never disposed here: the caller's gradient
  const hold = (t: Tensor) => refs.set(t, (refs.get(t) ?? 0) + 1);
  const drop = (t: Tensor) => {
    const n = (refs.get(t) ?? 1) - 1;
    if (n <= 0) {
      refs.delete(t);
      if (!keep.has(t)) t.dispose();
    } else refs.set(t, n);
  };
  const pending = new Map<Node, (Tensor | null)[]>();
  const put = (node: Node, idx: number, g: Tensor) => {
    let slots = pending.get(node);
    if (!slots) {
      slots = new Array(node.nOutputs).fill(null);
      pending.set(node, slots);
    }
    const old = slots[idx];
    if (!old) {
      hold(g);
      slots[idx] = g;
    } else if (ownedHere(old) && old.device === 'cpu' && g.device === 'cpu' && old.dtype === 'f32' && g.dtype === 'f32' && g.isContiguous &&
      old.shape.length === g.shape.length && old.shape.every((d, i) => d === g.shape[i])) {
      // a gradient only this slot holds takes the next one in place (no new buffer to fault in)
      ops.accumulate(old, g);
    } else {
      const sum = ops.add(old, g);
      hold(sum);
      slots[idx] = sum;
      drop(old);
    }
  };
  // A gradient that only this pass holds (one reference here, no other handle on its storage, not the caller's, not
  // saved by a node) can be changed in place or become a leaf's .grad as it is, instead of a copy.
  const ownedHere = (g: Tensor): boolean =>
    refs.get(g) === 1 && !keep.has(g) && !g._userDisposed && !g._retained && !g.gradFn && g.isContiguous && !g.handle.storageShared;
  const adopt = (g: Tensor): boolean => {
    if (!ownedHere(g)) return false;
    keep.add(g);  // it is then never disposed here
    return true;
  };
  hold(grad);
  put(root.gradFn!, root.outputIndex, grad);
  drop(grad);
  for (let k = order.length - 1; k >= 0; k--) {
    const node = order[k]!;
    const slots = pending.get(node) ?? new Array(node.nOutputs).fill(null);
    pending.delete(node);
    if (!node.backwardFn) throw new AutogradError(`backward: '${node.name}' has no backward`);
    const results = slots.some((s) => s) ? (node.checkSaved(), node.backwardFn(slots)) : [];
    for (const r of results) if (r) hold(r);
    for (const s of slots) if (s) drop(s);
    for (let i = 0; i < node.edges.length; i++) {
      const e = node.edges[i];
      const r = results[i];
      if (!e || !r) continue;
      if (e.node) put(e.node, e.index, r);
      else if (e.leaf && !e.leaf._userDisposed) accumulateLeaf(e.leaf, r, ops, adopt);
    }
    for (const r of results) if (r) drop(r);
    // (a node that saved nothing can run again, as in PyTorch: only saved tensors are freed by a backward)
    if (!opts.retainGraph && (node.saved.length || node.owned.length)) node.release(false);
  }
}

function accumulateLeaf(t: Tensor, g: Tensor, ops: { add(a: Tensor, b: Tensor): Tensor; accumulate?(dst: Tensor, src: Tensor): void },
  adopt?: (g: Tensor) => boolean): void {
  if (!t.grad) {
    // The leaf keeps its own tensor, so later in-flight disposal can't touch it: g itself when the pass can give
    // it up (full fine-tuning: no copy of every weight's gradient), else a copy.
    // (kept out of any enclosing scope(): a leaf's gradient outlives the step that made it)
    t.grad = keep(g.dtype !== t.dtype ? g.to(t.dtype) : adopt?.(g) ? g : g.clone());
  } else if (ops.accumulate && t.grad.device === 'cpu' && g.device === 'cpu' && t.grad.dtype === 'f32' && g.dtype === 'f32' && t.grad.isContiguous &&
    g.isContiguous && t.grad.shape.join() === g.shape.join()) {
    // in place, as PyTorch: a reference to x.grad taken earlier sees the sum (and is not disposed under the caller)
    ops.accumulate(t.grad, g);
  } else {
    const sum = keep(ops.add(t.grad, g.dtype === t.grad.dtype ? g : g.to(t.grad.dtype)));
    t.grad.dispose();
    t.grad = sum;
  }
}
