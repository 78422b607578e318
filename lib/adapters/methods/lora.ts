/**
 * LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) and (IA)³ (Liu et al. 2022,
 * https://arxiv.org/abs/2205.05638) on a Linear, as in the Python Adapters library's `methods/lora.py`:
 *   add   (LoRA): y = Wx + b + (dropout(x) Aᵀ Bᵀ)·alpha/r          A: (r, in), B: (out, r)
 *   scale (IA³):  y = (Wx + b) ∘ (B·alpha)ᵀ                          B: (out, 1), no A
 * With use_gating the scaling is replaced by mean-over-positions sigmoid(gate(x)). Stack composes the maps:
 * the second LoRA is applied to the first one's delta; (IA)³ vectors multiply.
 * Parameters live at `<linear>.loras.<name>.{lora_A, lora_B, gate.*}` like the Python library. GPT-2's fused
 * c_attn holds one block per enabled matrix (A: (r·n, in), B: (out·n, r)) scattered into the q/k/v thirds.
 */
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/layers.ts';
import { Tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { noGrad } from '../../autograd/tape.ts';
import { ValueError } from '../../errors.ts';
import type { LoRAConfig } from '../config.ts';
import type { AdapterContext } from '../context.ts';
import { fusedAdapterKernels, ia3Linear, loraLinear, loraSgmv } from '../fused.ts';
import { autocastProjection } from '../../autocast.ts';
import { Average, BatchSplit, Parallel, Stack, type Setup } from '../composition.ts';
import { matchBatch, repeatBatch, segmentStarts } from '../context.ts';

export class LoRAModule extends Module {
  readonly mode: 'add' | 'scale';
  readonly scaling: number;
  readonly dropoutP: number;
  readonly useGating: boolean;
  /** For fused qkv: which thirds (0=q, 1=k, 2=v) carry a block, in A/B block order. */
  constructor(readonly cfg: LoRAConfig, readonly inF: number, readonly outF: number, readonly fusedParts: number[] | null = null) {
    super();
    this.mode = cfg.get('composition_mode') as 'add' | 'scale';
    const r = cfg.r, alpha = cfg.alpha;
    this.scaling = this.mode === 'scale' ? alpha : alpha / r;
    this.dropoutP = cfg.get('dropout') as number;
    this.useGating = cfg.get('use_gating') as boolean;
    const n = fusedParts ? fusedParts.length : 1;
    const part = fusedParts ? outF / 3 : outF;
    const init = cfg.get('init_weights');
    if (!['lora', 'bert', 'ia3'].includes(init as string)) throw new ValueError(`Unknown init_weights type: ${String(init)}`);
    if (this.mode === 'add') {
      // init 'lora': A kaiming-uniform(a=√5) → U(−1/√in, 1/√in), B = 0; 'bert': N(0, 0.02) both; 'ia3': ones both
      const A = init === 'bert' ? ops.randn([r * n, inF], { std: 0.02 }) : init === 'ia3' ? ops.ones([r * n, inF]) : uniform([r * n, inF], 1 / Math.sqrt(inF));
      const B = init === 'bert' ? ops.randn([part * n, r], { std: 0.02 }) : init === 'ia3' ? ops.ones([part * n, r]) : ops.zeros([part * n, r]);
      this.registerParameter('lora_A', A);
      this.registerParameter('lora_B', B);
    } else {
      if (this.dropoutP > 0) throw new ValueError('IA3 module does not support dropout.');
      // 'ia3': ones (the default); 'lora': zeros; 'bert': N(0, 0.02) — as the Python library's IA3 module
      const shape = [part * n, 1];
      this.registerParameter('lora_B', init === 'lora' ? ops.zeros(shape) : init === 'bert' ? ops.randn(shape, { std: 0.02 }) : ops.ones(shape));
    }
    if (this.useGating) {
      // one gate per fused block (GPT-2's c_attn), as LoRAMergedLinear's gating_heads
      const g = this.registerModule('gate', new Linear(inF, fusedParts ? fusedParts.length : 1));
      noGrad(() => g.weight.copy_(ops.randn(g.weight.shape, { std: 0.02 })));
    }
  }

  /** The per-row gate (B, 1, heads) when gating, else null. */
  private gate(x: Tensor): Tensor | null {
    if (!this.useGating) return null;
    const g = ops.sigmoid((this.child('gate') as Linear).forward(x));  // (B, T, heads)
    return ops.unsqueeze(ops.mean(g, 1), 1);                           // (B, 1, heads)
  }

  /**
   * Low-rank delta (..., out) for input x (..., in) ('add' mode). The gate reads the layer's input (gateInput), which
   * differs from x inside a Stack, where x is the previous adapter's delta (the Python library's LoRA.forward).
   */
  delta(x: Tensor, training: boolean, gateInput: Tensor = x): Tensor {
    const A = this.param('lora_A')!, B = this.param('lora_B')!;
    const xin = training && this.dropoutP > 0 ? ops.dropout(x, this.dropoutP) : x;
    const g = this.gate(gateInput);
    if (!this.fusedParts) {
      const d = ops.linear(ops.linear(xin, A), B);
      return g ? ops.mul(d, g) : ops.mul(d, this.scaling);
    }
    const r = this.cfg.r, part = this.outF / 3;
    const pieces: Tensor[] = [];
    let blk = 0;
    for (let third = 0; third < 3; third++) {
      if (this.fusedParts.includes(third)) {
        const a = ops.slice(A, 0, blk * r, (blk + 1) * r), b = ops.slice(B, 0, blk * part, (blk + 1) * part);
        const d = ops.linear(ops.linear(xin, a), b);
        pieces.push(g ? ops.mul(d, ops.slice(g, -1, blk, blk + 1)) : ops.mul(d, this.scaling));
        blk++;
      } else pieces.push(ops.zeros([...x.shape.slice(0, -1), part], { dtype: x.dtype, device: x.device }));
    }
    return ops.concat(pieces, -1);
  }

  /** (IA)³ per-channel scale vector (out) ('scale' mode). */
  scaleVector(x: Tensor): Tensor {
    let v = ops.reshape(this.param('lora_B')!, [-1]);
    if (this.fusedParts) {
      const part = this.outF / 3;
      const pieces: Tensor[] = [];
      let blk = 0;
      for (let third = 0; third < 3; third++)
        if (this.fusedParts.includes(third)) pieces.push(ops.slice(v, 0, blk * part, (blk++ + 1) * part));
        else pieces.push(ops.ones([part], { dtype: v.dtype, device: v.device }));
      v = ops.concat(pieces, 0);
    }
    // gated: v·g in place of the scaling (the Python library's IA3.forward)
    const g = this.gate(x);
    return g ? ops.mul(v, g) : ops.mul(v, this.scaling);
  }

  /** ΔW in the Linear's own layout ('add' mode), for merging. */
  deltaWeight(layout: 'linear' | 'conv1d'): Tensor {
    const A = this.param('lora_A')!, B = this.param('lora_B')!;
    let dw: Tensor;
    if (!this.fusedParts) dw = ops.matmul(B, A);
    else {
      const r = this.cfg.r, part = this.outF / 3;
      const rows: Tensor[] = [];
      let blk = 0;
      for (let third = 0; third < 3; third++)
        if (this.fusedParts.includes(third)) {
          rows.push(ops.matmul(ops.slice(B, 0, blk * part, (blk + 1) * part), ops.slice(A, 0, blk * r, (blk + 1) * r)));
          blk++;
        } else rows.push(ops.zeros([part, this.inF]));
      dw = ops.concat(rows, 0);
    }
    dw = ops.mul(dw, this.scaling);
    return layout === 'conv1d' ? ops.transpose(dw, 0, 1).contiguous() : dw;
  }
}

function uniform(shape: number[], bound: number): Tensor {
  return ops.sub(ops.mul(ops.rand(shape), 2 * bound), bound);
}

/**
 * Attaches to one Linear: holds its `loras` container, applies the active LoRAs after the base projection,
 * and merges/unmerges them into the weight.
 */
export class LoRAHost {
  readonly container = new Module();
  /** Adapters merged into the weight (their deltas are then not applied again). */
  readonly merged = new Map<string, Tensor>();
  constructor(readonly linear: Linear, readonly ctx: AdapterContext, readonly layer: number, readonly fusedParts: (name: string) => number[] | null = () => null) {
    linear.registerModule('loras', this.container);
    linear.loraHost = this;
  }
  add(name: string, cfg: LoRAConfig): void {
    const parts = this.fusedParts(name);
    this.container.registerModule(name, new LoRAModule(cfg, this.linear.inFeatures, this.linear.outFeatures, parts));
  }
  remove(name: string): void {
    const m = this.container.child(name);
    if (m) m.dispose();
    this.container.registerModule(name, null);
  }
  get(name: string): LoRAModule | null {
    return (this.container.child(name) as LoRAModule | null) ?? null;
  }
  /**
   * The fused path (one native kernel for projection + adapter) when it applies: one active, unmerged,
   * ungated LoRA or (IA)³ on an f32 nn.Linear-layout projection (no dropout in training). Else null.
   */
  fused(x: Tensor): Tensor | null {
    if (!fusedAdapterKernels() || this.linear.layout !== 'linear' || x.dtype !== 'f32' || this.linear.weight.dtype !== 'f32') return null;
    // under autocast the base projection is a bf16 GEMM where ops.linear's would be (see linear in lib/ops/nn.ts):
    // the fused ops do that on the CPU ({mixed}); elsewhere the composed path goes through ops.linear
    const W = this.linear.weight;
    const mixed = autocastProjection(W);
    if (mixed && x.device !== 'cpu') return null;
    const setup = this.ctx.setupAt(this.layer, (n) => !!this.get(n) && !this.merged.has(n));
    if (typeof setup !== 'string') return null;
    const m = this.get(setup)!;
    if (m.fusedParts || m.useGating || (this.linear.training && m.dropoutP > 0)) return null;
    if (m.param('lora_B')!.dtype !== 'f32') return null;
    return m.mode === 'add'
      ? loraLinear(x, W, this.linear.bias, m.param('lora_A')!, m.param('lora_B')!, m.scaling, mixed)
      : ia3Linear(x, W, this.linear.bias, m.param('lora_B')!, m.scaling, mixed);
  }
  /** y = base output; applies the active adapters of this layer (Stack semantics for several). */
  apply(x: Tensor, y: Tensor): Tensor {
    const setup = this.ctx.setupAt(this.layer, (n) => !!this.get(n) && !this.merged.has(n));
    if (setup === null) return y;
    // (A composition mixing LoRA and (IA)³ modules in one layer: each branch / step applies its own operation here. The
    // Python library applies the last adapter's operation to the combined result, so there a BatchSplit(lora, ia3)
    // row of the LoRA branch comes out as y·δ, which no one means; this keeps the per-adapter definitions.)
    const { x: xr, d, s } = this.composeAll(setup, x);
    let out = matchBatch(xr, y);
    if (d) out = ops.add(out, d);
    if (s) out = ops.mul(out, s);
    return out;
  }

  /**
   * Evaluates a setup into an additive delta d (LoRA) and a multiplicative scale s ((IA)³): Stack feeds each
   * LoRA the previous delta (so the maps compose) and multiplies (IA)³ vectors; BatchSplit evaluates children
   * on row slices; Average combines the children's deltas/scales as Σ w_i·x_i / N (the Python library's mean).
   */
  /** Handles a Parallel block (replicating the input once per forward), then evaluates the setup. */
  private composeAll(setup: Setup, x: Tensor): { x: Tensor; d: Tensor | null; s: Tensor | null } {
    const par = findParallel(setup);
    // LoRA layers parallelise independently (q and v are separate projections of the same input), so an input
    // that still has the original batch is replicated again (the Python library's allow_multi_parallelize)
    if (par && (!this.ctx.parallelized || x.shape[0] === this.ctx.originalBatch)) {
      if (!this.ctx.parallelized) this.ctx.originalBatch = x.shape[0]!;
      x = repeatBatch(x, par.children.length);
      this.ctx.parallelized = true;
    }
    return { x, ...this.compose(setup, x, null, null) };
  }

  /**
   * BatchSplit whose children are all plain LoRA ('add') adapters of this layer: one segmented native op for
   * every slice (loraSgmv) instead of slice + two matmuls + concat per child. Null when it does not apply
   * (gating, fused c_attn blocks, active dropout, non-f32), and the slice-by-slice path runs instead.
   */
  private segmented(setup: BatchSplit, x: Tensor): Tensor | null {
    if (!fusedAdapterKernels() || x.dtype !== 'f32') return null;
    const mods: LoRAModule[] = [];
    for (const c of setup.children) {
      const m = typeof c === 'string' ? this.get(c) : null;
      if (!m || m.mode !== 'add' || m.fusedParts || m.useGating || (this.linear.training && m.dropoutP > 0)) return null;
      if (m.param('lora_A')!.dtype !== 'f32' || m.param('lora_B')!.dtype !== 'f32') return null;
      mods.push(m);
    }
    return loraSgmv(x, mods.map((m) => m.param('lora_A')!), mods.map((m) => m.param('lora_B')!), segmentStarts(x, setup.batchSizes), mods.map((m) => m.scaling));
  }

  private compose(setup: Setup, x: Tensor, d: Tensor | null, s: Tensor | null): { d: Tensor | null; s: Tensor | null } {
    const training = this.linear.training;
    if (typeof setup === 'string') {
      const m = this.get(setup)!;
      if (m.mode === 'add') return { d: m.delta(d ?? x, training, x), s };
      const v = m.scaleVector(x);
      return { d, s: s ? ops.mul(s, v) : v };
    }
    if (setup instanceof Stack) {
      let st = { d, s };
      for (const c of setup.children) st = this.compose(c, x, st.d, st.s);
      return st;
    }
    if (setup instanceof BatchSplit) {
      const B = x.shape[0]!;
      if (setup.batchSizes.reduce((a, b) => a + b, 0) !== B) throw new ValueError(`${String(setup)}: batch_sizes must add up to the batch size ${B}`);
      if (d === null && s === null) {
        const seg = this.segmented(setup, x);
        if (seg) return { d: seg, s: null };
      }
      let at = 0;
      const ds: Tensor[] = [], ss: Tensor[] = [];
      for (let i = 0; i < setup.children.length; i++) {
        const n = setup.batchSizes[i]!;
        const rows = (t: Tensor) => ops.slice(t, 0, at, at + n);
        const r = this.compose(setup.children[i]!, rows(x), d ? rows(d) : null, s && s.ndim === x.ndim ? rows(s) : s);
        const shape = [n, ...x.shape.slice(1, -1), this.linear.outFeatures];
        ds.push(r.d ?? ops.zeros(shape, { dtype: x.dtype, device: x.device }));
        ss.push(r.s ? (r.s.ndim === x.ndim ? r.s : ops.expand(r.s, shape).contiguous()) : ops.ones(shape, { dtype: x.dtype, device: x.device }));
        at += n;
      }
      return { d: ops.concat(ds, 0), s: ops.concat(ss, 0) };
    }
    if (setup instanceof Parallel) {
      const B = x.shape[0]!, N = setup.children.length;
      if (B % N) throw new ValueError(`${String(setup)}: the batch (${B}) is not divisible by the ${N} parallel channels`);
      return this.compose(new BatchSplit(setup.children, setup.children.map(() => B / N)), x, d, s);
    }
    if (setup instanceof Average) {
      const rs = setup.children.map((c) => this.compose(c, x, d, s));
      const N = rs.length;
      const avg = (k: 'd' | 's') =>
        rs.some((r) => r[k]) ? rs.map((r, i) => ops.mul(r[k] ?? ops.zeros([1], { device: x.device }), setup.weights[i]! / N)).reduce((a, b) => ops.add(a, b)) : null;
      return { d: avg('d'), s: avg('s') };
    }
    throw new ValueError(`Invalid adapter setup. Cannot use ${String(setup)} with LoRA.`);
  }
}

function findParallel(setup: Setup): Parallel | null {
  if (typeof setup === 'string') return null;
  if (setup instanceof Parallel) return setup;
  for (const c of setup.children) {
    const p = findParallel(c);
    if (p) return p;
  }
  return null;
}

/** Merges LoRA / (IA)³ `name` into the Linear weight (W += ΔW, or W ∘= v for IA³ without the bias). */
export function mergeInto(host: LoRAHost, name: string): void {
  const m = host.get(name);
  if (!m) return;
  if (host.merged.has(name)) return;
  // one merged module per layer, and none with a gate (whose scaling depends on the input): as the Python library
  const other = [...host.merged.keys()][0];
  if (other !== undefined)
    throw new ValueError(`mergeAdapter('${name}'): the layer already has the merged LoRA module '${other}'; resetAdapter() first`);
  if (m.useGating) throw new ValueError(`mergeAdapter('${name}'): cannot merge a LoRA layer with gating`);
  const W = host.linear.weight;
  noGrad(() => {
    const before = W.clone();
    if (m.mode === 'add') {
      const dw = m.deltaWeight(host.linear.layout);
      W.copy_(ops.add(W, dw));
      dw.dispose();
    } else {
      const v = m.scaleVector(W);  // no gate: the input isn't used
      const s = host.linear.layout === 'conv1d' ? v : ops.unsqueeze(v, 1);
      W.copy_(ops.mul(W, s));
    }
    host.merged.set(name, before);
  });
}
/** Restores the weight saved before merging. */
export function unmerge(host: LoRAHost, name: string): void {
  const before = host.merged.get(name);
  if (!before) return;
  noGrad(() => host.linear.weight.copy_(before));
  before.dispose();
  host.merged.delete(name);
}
