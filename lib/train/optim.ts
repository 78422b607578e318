/**
 * Optimisers with PyTorch's update rules (torch.optim.AdamW / SGD), parameter groups with Hugging Face's
 * `no_decay` split, and the `transformers` learning-rate schedules (get_*_schedule_with_warmup).
 * Updates run under noGrad with per-step temporaries released at once; moment buffers are owned by the
 * optimiser (dispose() frees them) and can be checkpointed (stateTensors / loadStateTensors). AdamW updates all
 * f32 parameters in one native call.
 */
import { callOp, tensor, type Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { noGrad } from '../autograd/tape.ts';
import { scope, keep } from '../scope.ts';
import { ValueError } from '../errors.ts';
import { LayerNorm, RMSNorm } from '../nn/layers.ts';
import type { Module } from '../nn/module.ts';

export interface ParamGroup {
  params: Tensor[];
  lr?: number;
  weightDecay?: number;
}

/**
 * Hugging Face Trainer's grouping: weight decay on every trainable parameter except biases and the weights of
 * normalisation layers (LayerNorm / RMSNorm).
 */
export function hfParamGroups(model: Module, weightDecay: number): ParamGroup[] {
  const noDecay = new Set<Tensor>();
  for (const [, m] of model.namedModules())
    if (m instanceof LayerNorm || m instanceof RMSNorm) for (const p of m.parameters()) noDecay.add(p);
  const decay: Tensor[] = [], plain: Tensor[] = [];
  for (const [name, p] of model.namedParameters()) {
    if (!p.requiresGrad) continue;
    (noDecay.has(p) || name.endsWith('bias') ? plain : decay).push(p);
  }
  return [{ params: decay, weightDecay }, { params: plain, weightDecay: 0 }];
}

abstract class Optimizer {
  readonly groups: Required<ParamGroup>[];
  protected readonly state = new Map<Tensor, Record<string, Tensor>>();
  /** Number of step() calls so far. */
  stepCount = 0;
  /** Updates each parameter has had (torch keeps the step per parameter: one without a gradient is not counted). */
  protected readonly pSteps = new Map<Tensor, number>();
  /** Per-parameter update counts by group and index, for checkpoints. */
  paramSteps(): number[][] {
    return this.groups.map((g) => g.params.map((p) => this.pSteps.get(p) ?? 0));
  }
  constructor(params: Tensor[] | ParamGroup[], readonly defaults: { lr: number; weightDecay: number }) {
    const groups = params.length && !('params' in (params[0] as object)) ? [{ params: params as Tensor[] }] : (params as ParamGroup[]);
    this.groups = groups.map((g) => ({ params: g.params, lr: g.lr ?? defaults.lr, weightDecay: g.weightDecay ?? defaults.weightDecay }));
    if (!(defaults.lr >= 0)) throw new ValueError(`learning rate must be >= 0, got ${defaults.lr}`);
  }
  /** Sets every group's learning rate. */
  setLr(lr: number): void {
    for (const g of this.groups) g.lr = lr;
  }
  zeroGrad(): void {
    for (const g of this.groups) for (const p of g.params) p.zeroGrad();
  }
  step(): void {
    this.stepCount++;
    noGrad(() => {
      for (const g of this.groups)
        for (const p of g.params) if (p.grad) scope(() => this.update(p, p.grad!, g));
    });
  }
  protected buffer(p: Tensor, name: string, init: () => Tensor): Tensor {
    let s = this.state.get(p);
    if (!s) this.state.set(p, (s = {}));
    return (s[name] ??= keep(init()));
  }
  protected abstract update(p: Tensor, g: Tensor, group: Required<ParamGroup>): void;
  /** The shape of state buffer `name` of parameter p (checked when a checkpoint is restored). */
  protected stateShape(p: Tensor, _name: string): number[] {
    return p.shape;
  }
  /**
   * (parameter, gradient, lr, weight decay) of every parameter with a gradient, when all of them are contiguous f32
   * (the native one-call steps); null when any is not (the per-tensor op path then runs).
   */
  protected f32Params(): [Tensor, Tensor, number, number][] | null {
    const out: [Tensor, Tensor, number, number][] = [];
    for (const g of this.groups)
      for (const p of g.params) {
        if (!p.grad) continue;
        if (!(p.dtype === 'f32' && p.isContiguous && p.grad.dtype === 'f32' && p.grad.isContiguous)) return null;
        out.push([p, p.grad, g.lr, g.weightDecay]);
      }
    return out;
  }
  /** Buffers by `<group>.<index>.<buffer>` (e.g. `0.3.exp_avg`), for checkpoints; the tensors themselves. */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    this.groups.forEach((g, gi) => g.params.forEach((p, pi) => {
      for (const [k, t] of Object.entries(this.state.get(p) ?? {})) out.set(`${gi}.${pi}.${k}`, t);
    }));
    return out;
  }
  /** Restores buffers written by stateTensors() (copied) and the step count. */
  loadStateTensors(tensors: Map<string, Tensor>, stepCount: number, paramSteps?: number[][]): void {
    this.dispose();
    this.groups.forEach((g, gi) => g.params.forEach((p, pi) => {
      // older checkpoints: every parameter with state took every step
      const n = paramSteps?.[gi]?.[pi] ?? ([...tensors.keys()].some((k) => k.startsWith(`${gi}.${pi}.`)) ? stepCount : 0);
      if (n) this.pSteps.set(p, n);
    }));
    for (const [key, t] of tensors) {
      const [gi, pi, name] = key.split('.');
      const p = this.groups[Number(gi)]?.params[Number(pi)];
      if (!p || !name) throw new ValueError(`optimizer state '${key}' does not match the parameter groups`);
      const want = this.stateShape(p, name);
      if (want.join() !== t.shape.join()) throw new ValueError(`optimizer state '${key}' has shape [${t.shape}], expected [${want}] for a parameter of shape [${p.shape}]`);
      let s = this.state.get(p);
      if (!s) this.state.set(p, (s = {}));
      s[name] = keep(noGrad(() => t.clone()));
    }
    this.stepCount = stepCount;
  }
  dispose(): void {
    for (const s of this.state.values()) for (const t of Object.values(s)) t.dispose();
    this.state.clear();
    this.pSteps.clear();
  }
}

/** torch.optim.AdamW: decoupled weight decay, bias-corrected moments. */
export class AdamW extends Optimizer {
  readonly betas: [number, number];
  readonly eps: number;
  constructor(params: Tensor[] | ParamGroup[], opts: { lr?: number; betas?: [number, number]; eps?: number; weightDecay?: number } = {}) {
    super(params, { lr: opts.lr ?? 1e-3, weightDecay: opts.weightDecay ?? 0.01 });
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
  }
  /**
   * One native call (adamw_step, native/kernels/optim.cpp) updates every f32 parameter with a gradient, in place;
   * other dtypes (bf16 parameters) take the per-tensor op path below. Same arithmetic as torch.optim.AdamW.
   */
  /** false: always the per-tensor op path (for comparisons). */
  native = true;
  override step(): void {
    const fast = this.native ? this.f32Params() : null;
    if (!fast?.length) return super.step();
    this.stepCount++;
    noGrad(() => {
      const m = fast.map(([p]) => this.buffer(p, 'exp_avg', () => ops.zerosLike(p)));
      const v = fast.map(([p]) => this.buffer(p, 'exp_avg_sq', () => ops.zerosLike(p)));
      const steps = fast.map(([p]) => { const n = (this.pSteps.get(p) ?? 0) + 1; this.pSteps.set(p, n); return n; });
      scope(() => {
        const hyper = tensor(fast.flatMap(([, , lr, wd], i) => [lr, wd, steps[i]!]), [fast.length, 3], { dtype: 'f32' });
        callOp('adamw_step', [hyper, ...fast.map(([p]) => p), ...fast.map(([, g]) => g), ...m, ...v],
          { beta1: this.betas[0], beta2: this.betas[1], eps: this.eps });
      });
    });
  }
  protected update(p: Tensor, g: Tensor, group: Required<ParamGroup>): void {
    const t = (this.pSteps.get(p) ?? 0) + 1;
    this.pSteps.set(p, t);
    const [b1, b2] = this.betas, lr = group.lr;
    const m = this.buffer(p, 'exp_avg', () => ops.zerosLike(p));
    const v = this.buffer(p, 'exp_avg_sq', () => ops.zerosLike(p));
    if (group.weightDecay) p.copy_(ops.mul(p, 1 - lr * group.weightDecay));
    m.copy_(ops.add(ops.mul(m, b1), ops.mul(g, 1 - b1)));
    v.copy_(ops.add(ops.mul(v, b2), ops.mul(ops.mul(g, g), 1 - b2)));
    const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
    const denom = ops.add(ops.div(ops.sqrt(v), Math.sqrt(bc2)), this.eps);
    p.copy_(ops.sub(p, ops.mul(ops.div(m, denom), lr / bc1)));
  }
}

/** torch.optim.SGD: L2 weight decay added to the gradient, momentum with dampening, optional Nesterov. */
export class SGD extends Optimizer {
  readonly momentum: number; readonly dampening: number; readonly nesterov: boolean;
  constructor(params: Tensor[] | ParamGroup[], opts: { lr?: number; momentum?: number; dampening?: number; nesterov?: boolean; weightDecay?: number } = {}) {
    super(params, { lr: opts.lr ?? 1e-3, weightDecay: opts.weightDecay ?? 0 });
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) throw new ValueError('Nesterov momentum requires a momentum and zero dampening');
  }
  /** false: always the per-tensor op path (for comparisons). */
  native = true;
  /** One native call (sgd_step) per step for f32 parameters (fresh momentum buffers and existing ones apart). */
  override step(): void {
    const fast = this.native ? this.f32Params() : null;
    if (!fast?.length) return super.step();
    this.stepCount++;
    noGrad(() => {
      const fresh = fast.filter(([p]) => !this.state.get(p)?.momentum_buffer), old = fast.filter(([p]) => !!this.state.get(p)?.momentum_buffer);
      for (const [list, first] of [[fresh, true], [old, false]] as const) {
        if (!list.length) continue;
        const bufs = list.map(([p]) => (this.momentum ? this.buffer(p, 'momentum_buffer', () => ops.zerosLike(p)) : ops.zerosLike(p)));
        scope(() => {
          const hyper = tensor(list.flatMap(([, , lr, wd]) => [lr, wd]), [list.length, 2], { dtype: 'f32' });
          callOp('sgd_step', [hyper, ...list.map(([p]) => p), ...list.map(([, g]) => g), ...bufs],
            { momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov ? 1 : 0, first: first ? 1 : 0 });
        });
        if (!this.momentum) for (const b of bufs) b.dispose();
      }
    });
  }
  protected update(p: Tensor, g0: Tensor, group: Required<ParamGroup>): void {
    let g = group.weightDecay ? ops.add(g0, ops.mul(p, group.weightDecay)) : g0;
    if (this.momentum) {
      const fresh = !this.state.get(p)?.momentum_buffer;
      const buf = this.buffer(p, 'momentum_buffer', () => ops.zerosLike(g).copy_(g));
      if (!fresh) buf.copy_(ops.add(ops.mul(buf, this.momentum), ops.mul(g, 1 - this.dampening)));
      g = this.nesterov ? ops.add(g, ops.mul(buf, this.momentum)) : buf;
    }
    p.copy_(ops.sub(p, ops.mul(g, group.lr)));
  }
}

/**
 * transformers' Adafactor (Shazeer & Stern 2018, the fairseq-derived implementation in transformers.optimization):
 * factored second moments for parameters with two or more dims (a row and a column running mean of grad² + eps1),
 * a per-step decay beta2_t = 1 − t^decayRate, the update clipped to RMS ≤ clipThreshold, and optionally
 * relative step sizes (min(1e-2, 1/√t), or 1e-6·t with warmupInit) scaled by the parameter's RMS
 * (scaleParameter). With relativeStep the group lr (and any scheduler) is ignored, as in transformers; the
 * Trainer's `optim: 'adafactor'` uses {relativeStep: false, scaleParameter: false} with its learning rate.
 * Buffers: exp_avg_sq_row / exp_avg_sq_col (factored) or exp_avg_sq, and exp_avg when beta1 is set.
 */
export class Adafactor extends Optimizer {
  readonly eps: [number, number];
  readonly clipThreshold: number; readonly decayRate: number; readonly beta1: number | null;
  readonly scaleParameter: boolean; readonly relativeStep: boolean; readonly warmupInit: boolean;
  constructor(params: Tensor[] | ParamGroup[], opts: { lr?: number | null; eps?: [number, number]; clipThreshold?: number; decayRate?: number;
    beta1?: number | null; weightDecay?: number; scaleParameter?: boolean; relativeStep?: boolean; warmupInit?: boolean } = {}) {
    const relativeStep = opts.relativeStep ?? true;
    if (opts.lr != null && relativeStep) throw new ValueError('Adafactor: a manual lr cannot be combined with relativeStep: true');
    if (opts.warmupInit && !relativeStep) throw new ValueError('Adafactor: warmupInit: true requires relativeStep: true');
    super(params, { lr: opts.lr ?? 0, weightDecay: opts.weightDecay ?? 0 });
    this.eps = opts.eps ?? [1e-30, 1e-3];
    this.clipThreshold = opts.clipThreshold ?? 1;
    this.decayRate = opts.decayRate ?? -0.8;
    this.beta1 = opts.beta1 ?? null;
    this.scaleParameter = opts.scaleParameter ?? true;
    this.relativeStep = relativeStep;
    this.warmupInit = opts.warmupInit ?? false;
  }
  protected override stateShape(p: Tensor, name: string): number[] {
    if (name === 'exp_avg_sq_row') return p.shape.slice(0, -1);
    if (name === 'exp_avg_sq_col') return [...p.shape.slice(0, -2), p.shape.at(-1)!];
    return p.shape;
  }
  private static rms(t: Tensor): number {
    return Math.sqrt(ops.sum(ops.mul(t, t)).item() / t.numel);
  }
  protected update(p0: Tensor, g0: Tensor, group: Required<ParamGroup>): void {
    const t = (this.pSteps.get(p0) ?? 0) + 1;
    this.pSteps.set(p0, t);
    const p = p0.dtype === 'f32' ? p0 : p0.to('f32');
    const g = g0.dtype === 'f32' ? g0 : g0.to('f32');
    const factored = g.ndim >= 2;
    let lr = group.lr;
    if (this.relativeStep) lr = Math.min(this.warmupInit ? 1e-6 * t : 1e-2, 1 / Math.sqrt(t));
    if (this.scaleParameter) lr *= Math.max(this.eps[1], Adafactor.rms(p));
    const beta2t = 1 - t ** this.decayRate;
    const sq = ops.add(ops.mul(g, g), this.eps[0]);
    let update: Tensor;
    if (factored) {
      const shape = g.shape;
      const row = this.buffer(p0, 'exp_avg_sq_row', () => ops.zeros(shape.slice(0, -1)));
      const col = this.buffer(p0, 'exp_avg_sq_col', () => ops.zeros([...shape.slice(0, -2), shape.at(-1)!]));
      row.copy_(ops.add(ops.mul(row, beta2t), ops.mul(ops.mean(sq, -1), 1 - beta2t)));
      col.copy_(ops.add(ops.mul(col, beta2t), ops.mul(ops.mean(sq, -2), 1 - beta2t)));
      // rsqrt(row / mean(row)) ⊗ rsqrt(col): the rank-1 estimate of the second moment
      const rFactor = ops.unsqueeze(ops.rsqrt(ops.div(row, ops.mean(row, -1, { keepdim: true }))), -1);
      const cFactor = ops.unsqueeze(ops.rsqrt(col), -2);
      update = ops.mul(ops.mul(rFactor, cFactor), g);
    } else {
      const v = this.buffer(p0, 'exp_avg_sq', () => ops.zerosLike(g));
      v.copy_(ops.add(ops.mul(v, beta2t), ops.mul(sq, 1 - beta2t)));
      update = ops.mul(ops.rsqrt(v), g);
    }
    update = ops.mul(update, lr / Math.max(1, Adafactor.rms(update) / this.clipThreshold));
    if (this.beta1 != null) {
      const m = this.buffer(p0, 'exp_avg', () => ops.zerosLike(g));
      m.copy_(ops.add(ops.mul(m, this.beta1), ops.mul(update, 1 - this.beta1)));
      update = m;
    }
    let next = group.weightDecay ? ops.mul(p, 1 - group.weightDecay * lr) : p;
    next = ops.sub(next, update);
    p0.copy_(p0.dtype === 'f32' ? next : next.to(p0.dtype));
  }
}

export type ScheduleKind = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine' | 'polynomial';

/** The multiplier of the base learning rate at `step` for the transformers schedule of that name. */
export function lrLambda(kind: ScheduleKind, step: number, warmup: number, total: number,
  opts: { numCycles?: number; power?: number; lrEnd?: number; lrInit?: number } = {}): number {
  if (kind === 'constant') return 1;
  if (step < warmup) return step / Math.max(1, warmup);
  if (kind === 'constant_with_warmup') return 1;
  if (kind === 'linear') return Math.max(0, (total - step) / Math.max(1, total - warmup));
  const progress = (step - warmup) / Math.max(1, total - warmup);
  if (kind === 'cosine') return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * (opts.numCycles ?? 0.5) * 2 * progress)));
  if (kind === 'polynomial') {
    const lrInit = opts.lrInit ?? 1, lrEnd = opts.lrEnd ?? 1e-7, power = opts.power ?? 1;
    if (lrInit <= lrEnd) throw new ValueError(`polynomial schedule: lr_end (${lrEnd}) must be smaller than the initial lr (${lrInit})`);
    if (step > total) return lrEnd / lrInit;
    return ((lrInit - lrEnd) * (1 - progress) ** power + lrEnd) / lrInit;
  }
  throw new ValueError(`unknown learning-rate schedule '${String(kind)}'`);
}

/**
 * A LambdaLR-style scheduler: each parameter group's lr = its initial lr · lrLambda(step); step() advances
 * (call it after optimizer.step()).
 */
export class LrScheduler {
  /** Number of step() calls so far (restore with setStep for an exact resume). */
  steps = 0;
  private readonly baseLrs: number[];
  constructor(readonly optimizer: { groups: { lr: number }[] }, readonly kind: ScheduleKind,
    readonly opts: { warmup?: number; total?: number; numCycles?: number; power?: number; lrEnd?: number } = {}) {
    this.baseLrs = optimizer.groups.map((g) => g.lr);
    this.apply();
  }
  /** The current learning rate of each parameter group. */
  get lrs(): number[] {
    return this.optimizer.groups.map((g) => g.lr);
  }
  step(): void {
    this.steps++;
    this.apply();
  }
  setStep(n: number): void {
    this.steps = n;
    this.apply();
  }
  private apply(): void {
    const { warmup = 0, total = 0 } = this.opts;
    this.optimizer.groups.forEach((g, i) => {
      g.lr = this.baseLrs[i]! * lrLambda(this.kind, this.steps, warmup, total, { ...this.opts, lrInit: this.baseLrs[i]! });
    });
  }
}
