/**
 * Representation fine-tuning (ReFT, Wu et al. 2024, https://arxiv.org/abs/2404.03592) as in the Python
 * Adapters library (`methods/reft.py`): after every transformer layer, the first `prefix_positions` positions
 * go through unit 0 and the last `suffix_positions` through unit 1 (unit 0 too with tied_weights):
 *   h' = h + (act(h W_sᵀ + b_s) − h Pᵀ) P        (LoReFT/NoReFT; DiReFT omits − h Pᵀ)
 * W_s = learned_source.weight (r, H); P = projection weight (r, H). LoReFT's P is PyTorch's orthogonal
 * parametrization (Householder map of `original` (r, H) with a stored `base` (H, H) buffer), reproduced here
 * differentiably: Q = H_1⋯H_k·I[:, :k] with reflectors from tril(Xᵀ, −1), scaled by trunc(diag), P = (base·Q)ᵀ.
 * Names: `<layer>.reft_layer.refts.<name>.units.{0,1}.{learned_source.*, projection.weight |
 * projection.parametrizations.weight.original, projection.parametrizations.weight.0.base}`.
 */
import { Module } from '../../nn/module.ts';
import { Linear, adapterActivation } from '../../nn/layers.ts';
import { Tensor, tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { noGrad } from '../../autograd/tape.ts';
import type { ReftConfig } from '../config.ts';
import type { AdapterContext } from '../context.ts';

class OrthogonalProjection extends Module {
  readonly weightHolder = new Module();
  constructor(readonly r: number, readonly hidden: number) {
    super();
    const par = this.registerModule('parametrizations', new Module());
    par.registerModule('weight', this.weightHolder);
    // PyTorch's right_inverse with use_trivialization: base = an orthogonal completion of the initial weight,
    // original = −Id (so the Householder map gives the identity and P = the first r columns of base, transposed)
    this.weightHolder.registerParameter('original', tensor(Float32Array.from({ length: r * hidden }, (_, i) => (Math.floor(i / hidden) === i % hidden ? -1 : 0)), [r, hidden]));
    const b = this.weightHolder.registerModule('0', new Module());
    b.registerBuffer('base', randomOrthogonal(hidden));
  }
  /** P (r, H) */
  weight(): Tensor {
    const X0 = this.weightHolder.param('original')!;     // (r, H): wide → transposed to tall (H, r)
    const X = ops.transpose(X0, 0, 1);
    const [n, k] = [this.hidden, this.r];
    const lower = tensor(Float32Array.from({ length: n * k }, (_, i) => (Math.floor(i / k) > i % k ? 1 : 0)), [n, k]);
    const A = ops.mul(X, lower);                          // tril(X, -1)
    const tau = ops.div(2, ops.add(ops.sum(ops.mul(A, A), 0), 1));   // (k)
    // Q = H_0 H_1 … H_{k-1} E, applied right to left; v_i = A[:, i] + e_i
    let Q = tensor(Float32Array.from({ length: n * k }, (_, i) => (Math.floor(i / k) === i % k ? 1 : 0)), [n, k]);
    for (let i = k - 1; i >= 0; i--) {
      const e = tensor(Float32Array.from({ length: n }, (_, j) => (j === i ? 1 : 0)), [n, 1]);
      const v = ops.add(ops.slice(A, 1, i, i + 1), e);                          // (n, 1)
      const t = ops.slice(tau, 0, i, i + 1);                                     // (1)
      Q = ops.sub(Q, ops.mul(ops.matmul(v, ops.matmul(ops.transpose(v, 0, 1), Q)), t));
    }
    // PyTorch multiplies by the diagonal of X cast to int (truncation), without gradient
    const diag = noGrad(() => {
      const x = X0.toArray() as Float32Array;
      return tensor(Float32Array.from({ length: k }, (_, i) => Math.trunc(x[i * n + i]!)), [1, k]);
    });
    Q = ops.mul(Q, diag);
    const base = (this.weightHolder.child('0') as Module).buffer('base')!;
    return ops.transpose(ops.matmul(base, Q), 0, 1);
  }
}

/** A random orthogonal n×n matrix (Gram–Schmidt on Gaussian columns, seeded by the global generator). */
function randomOrthogonal(n: number): Tensor {
  const g = noGrad(() => ops.randn([n, n]));
  const a = Float64Array.from(g.toArray() as Float32Array);
  g.dispose();
  const q = new Float64Array(n * n);  // column-major work
  for (let j = 0; j < n; j++) {
    const v = Float64Array.from({ length: n }, (_, i) => a[i * n + j]!);
    for (let p = 0; p < j; p++) {
      let d = 0;
      for (let i = 0; i < n; i++) d += q[p * n + i]! * v[i]!;
      for (let i = 0; i < n; i++) v[i] = v[i]! - d * q[p * n + i]!;
    }
    const nrm = Math.sqrt(v.reduce((s2, x) => s2 + x * x, 0)) || 1;
    for (let i = 0; i < n; i++) q[j * n + i] = v[i]! / nrm;
  }
  return tensor(Float32Array.from({ length: n * n }, (_, k) => q[(k % n) * n + Math.floor(k / n)]!), [n, n]);
}

class ReftUnit extends Module {
  readonly source: Linear;
  readonly act: ((x: Tensor) => Tensor) | null;
  constructor(readonly cfg: ReftConfig, hidden: number, readonly subtract: boolean) {
    super();
    const r = cfg.get('r') as number;
    this.source = this.registerModule('learned_source', new Linear(hidden, r));
    if (cfg.get('orthogonality')) this.registerModule('projection', new OrthogonalProjection(r, hidden));
    else {
      const p = this.registerModule('projection', new Linear(hidden, r, { bias: false }));
      noGrad(() => p.weight.copy_(ops.randn(p.weight.shape, { std: 0.02 })));
    }
    noGrad(() => this.source.weight.copy_(ops.randn(this.source.weight.shape, { std: 0.02 })));
    const nl = cfg.get('non_linearity') as string | null;
    this.act = nl ? adapterActivation(nl) : null;
  }
  private P(): Tensor {
    const p = this.child('projection')!;
    return p instanceof OrthogonalProjection ? p.weight() : (p as Linear).weight;
  }
  forward(h: Tensor, training: boolean): Tensor {
    const P = this.P();
    let s = this.source.forward(h);
    if (this.act) s = this.act(s);
    if (this.subtract) s = ops.sub(s, ops.linear(h, P));
    const out = ops.add(h, ops.matmul(s, P));
    // dropout on the adapted states themselves (the Python library's ReftUnit: dropout(x + delta))
    const p = this.cfg.get('dropout') as number;
    return training && p > 0 ? ops.dropout(out, p) : out;
  }
}

/** Per layer: `reft_layer.refts.<name>`; applied to the layer output. */
export class ReftSite {
  readonly refts = new Module();
  ctx: AdapterContext | null = null;
  constructor(parent: Module, readonly layer: number) {
    parent.registerModule('reft_layer', new Module()).registerModule('refts', this.refts);
  }
  add(name: string, cfg: ReftConfig, hidden: number, subtract: boolean): void {
    const layers = cfg.get('layers');
    if (layers !== 'all' && Array.isArray(layers) && !layers.includes(this.layer)) return;
    const m = new Module();
    const units = m.registerModule('units', new Module());
    const n = cfg.get('tied_weights') ? 1 : 2;
    for (let i = 0; i < n; i++) units.registerModule(String(i), new ReftUnit(cfg, hidden, subtract));
    (m as Module & { cfg?: ReftConfig }).cfg = cfg;
    this.refts.registerModule(name, m);
  }
  remove(name: string): void {
    this.refts.child(name)?.dispose();
    this.refts.registerModule(name, null);
  }
  apply(h: Tensor, training: boolean): Tensor {
    // only the first adapter of the active setup, when it is a ReFT adapter here (the Python library's ReftLayer)
    const first = this.ctx && !this.ctx.skipLayers.has(this.layer) ? this.ctx.active[0] : undefined;
    const names = first !== undefined && this.refts.child(first) ? [first] : [];
    let out = h;
    for (const n of names) {
      const m = this.refts.child(n)! as Module & { cfg?: ReftConfig };
      const cfg = m.cfg!;
      const units = m.child('units')!;
      const T = out.shape[1]!;
      const pre = Math.min(cfg.get('prefix_positions') as number, T), suf = Math.min(cfg.get('suffix_positions') as number, T - pre);
      const parts: Tensor[] = [];
      if (pre > 0) parts.push((units.child('0') as ReftUnit).forward(ops.slice(out, 1, 0, pre), training));
      if (T - pre - suf > 0) parts.push(ops.slice(out, 1, pre, T - suf));
      if (suf > 0) parts.push((units.child(units.child('1') ? '1' : '0') as ReftUnit).forward(ops.slice(out, 1, T - suf, T), training));
      out = parts.length === 1 ? parts[0]! : ops.concat(parts, 1);
    }
    return out;
  }
}
