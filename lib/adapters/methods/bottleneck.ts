/**
 * Bottleneck adapters (Houlsby et al. 2019 https://arxiv.org/abs/1902.00751; Pfeiffer et al. 2020
 * https://arxiv.org/abs/2005.00247; parallel form He et al. 2022 https://arxiv.org/abs/2110.04366), with the
 * Python Adapters library's placement rules (`methods/bottleneck.py`, `methods/modeling.py`):
 *   pre_forward:  residual/LN handling before the adapter (original_ln_before, residual_before_ln)
 *   forward:      up(act(down(LN_before?(h)))) · scaling (· gate), + residual (adapter_residual_before_ln,
 *                 ln_after)
 *   post_forward: original_ln_after: LN(h + input) (or h + input for pre-LN models, layer_norm = null)
 * A site is called by the model at a sub-layer output with (hidden, input_tensor, layer_norm); without an
 * active adapter it computes exactly what the model would: LN(hidden + input) or hidden + input.
 * Parameters: `<site>.adapters.<name>.{adapter_down.0.*, adapter_up.*, adapter_norm_before.*,
 * adapter_norm_after.*, scaling, gate.*}`.
 */
import { Module } from '../../nn/module.ts';
import { LayerNorm, Linear, adapterActivation } from '../../nn/layers.ts';
import { Tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { noGrad } from '../../autograd/tape.ts';
import { keep } from '../../scope.ts';
import { ValueError } from '../../errors.ts';
import type { BnConfig } from '../config.ts';
import { PHMLinear } from './phm.ts';
import { Average, BatchSplit, CompositionBlock, Fuse, Parallel, Split, Stack, type Setup } from '../composition.ts';
import { FusionLayer, type FusionConfigDict } from './fusion.ts';
import { matchBatch, repeatBatch, segmentStarts } from '../context.ts';
import { bottleneckActSupported, bottleneckFused, bottleneckSgmv, fusedAdapterKernels } from '../fused.ts';
import type { AdapterContext } from '../context.ts';
import { autocastProjection } from '../../autocast.ts';


interface Proj extends Module {
  forward(x: Tensor): Tensor;
}

/** Whether every child of a block is present at this site (filterSetup leaves an empty Stack for an absent one). */
function allPresent(setup: CompositionBlock): boolean {
  return setup.children.every((c) => !(c instanceof Stack && c.children.length === 0));
}

export class BottleneckAdapter extends Module {
  readonly down: Proj;
  readonly up: Proj;
  readonly lnBefore: LayerNorm | null = null;
  readonly lnAfter: LayerNorm | null = null;
  readonly act: (x: Tensor) => Tensor;
  readonly isParallel: boolean;
  constructor(readonly cfg: BnConfig, readonly hidden: number, readonly bottleneck: number, sharedRule: () => Tensor | null = () => null,
    sharedW: (key: string) => Tensor | null = () => null) {
    super();
    const phm = cfg.get('phm_layer') as boolean;
    this.isParallel = cfg.get('is_parallel') as boolean;
    this.act = adapterActivation(cfg.get('non_linearity') as string);
    const downSeq = this.registerModule('adapter_down', new Module());
    let i = 0;
    if (cfg.get('ln_before')) {
      this.lnBefore = downSeq.registerModule(String(i++), new LayerNorm(hidden, 1e-5));
      this.registerModule('adapter_norm_before', this.lnBefore);  // same module, second name (as in Python)
    }
    this.down = downSeq.registerModule(String(i), phm ? new PHMLinear(hidden, bottleneck, cfg, sharedRule, 'down', sharedW) : new Linear(hidden, bottleneck));
    this.up = this.registerModule('adapter_up', phm ? new PHMLinear(bottleneck, hidden, cfg, sharedRule, 'up', sharedW) : new Linear(bottleneck, hidden));
    if (cfg.get('ln_after')) this.lnAfter = this.registerModule('adapter_norm_after', new LayerNorm(hidden, 1e-5));
    const sc = cfg.get('scaling');
    if (sc === 'learned') this.registerParameter('scaling', ops.ones([1]));
    else if (sc === 'channel') this.registerParameter('scaling', ops.ones([hidden]));
    if (cfg.get('use_gating')) this.registerModule('gate', new Linear(hidden, 1));
    if (!phm) this.init(cfg.get('init_weights') as string);
  }

  private init(kind: string): void {
    noGrad(() => {
      const down = this.down as Linear, up = this.up as Linear;
      const lin = [down, up, ...(this.child('gate') ? [this.child('gate') as Linear] : [])];
      if (kind === 'bert') {
        for (const l of lin) { l.weight.copy_(ops.randn(l.weight.shape, { std: 0.02 })); l.bias?.copy_(ops.zeros([1])); }
      } else if (kind === 'mam_adapter') {
        // kaiming-uniform(a=√5) down, zero up (the adapter starts as the identity)
        const b = 1 / Math.sqrt(this.hidden);
        down.weight.copy_(ops.sub(ops.mul(ops.rand(down.weight.shape), 2 * b), b));
        down.bias?.copy_(ops.sub(ops.mul(ops.rand([this.bottleneck]), 2 * b), b));
        up.weight.copy_(ops.zeros([1]));
        up.bias?.copy_(ops.zeros([1]));
      } else if (kind === 'houlsby') {
        for (const l of lin) { l.weight.copy_(ops.clamp(ops.randn(l.weight.shape, { std: 1e-2 }), -2e-2, 2e-2)); l.bias?.copy_(ops.zeros([1])); }
      }
    });
  }

  private scale(up: Tensor): Tensor {
    const p = this.param('scaling');
    if (p) return ops.mul(up, p);
    const s = this.cfg.get('scaling') as number;
    return s === 1 ? up : ops.mul(up, s);
  }

  /** pre_forward → (hidden for the adapter, residual) */
  preForward(hidden: Tensor, input: Tensor, ln: LayerNorm | null): { h: Tensor; residual: Tensor } {
    if (this.isParallel) return { h: input, residual: input };
    const rbl = this.cfg.get('residual_before_ln');
    let residual: Tensor | null = rbl === true ? hidden : null;
    let h = hidden;
    if (this.cfg.get('original_ln_before')) {
      h = ops.add(hidden, input);
      if (ln) {
        if (rbl === 'post_add') residual = h;
        h = ln.forward(h);
      }
    }
    if (!rbl) residual = h;
    if (!residual) throw new ValueError('residual_before_ln="post_add" needs original_ln_before');
    return { h, residual };
  }

  forward(h: Tensor, residual: Tensor): Tensor {
    return this.forwardUp(h, residual, false).out;
  }

  /**
   * Whether the fused native kernels (bottleneckFused, bottleneckSgmv) compute this adapter: a plain sequential
   * f32 adapter — Linear down/up, fixed scaling, no adapter LayerNorms, gate, active dropout or stochastic depth
   * (under autocast its two projections run as bf16 GEMMs, as ops.linear's would).
   */
  fusable(h: Tensor): this is { down: Linear; up: Linear } {
    return fusedAdapterKernels() && !this.isParallel && !(this.training && (this.cfg.get('stochastic_depth') as number) > 0) && !this.lnBefore && !this.lnAfter &&
      !this.child('gate') && typeof this.cfg.get('scaling') === 'number' && this.down instanceof Linear && this.up instanceof Linear && h.dtype === 'f32' &&
      this.down.weight.dtype === 'f32' && bottleneckActSupported(this.cfg.get('non_linearity') as string) && !(this.training && (this.cfg.get('dropout') as number) > 0) &&
      // under autocast its projections are bf16 GEMMs: the kernel does that on the CPU ({mixed}), elsewhere ops.linear does
      (h.device === 'cpu' || !autocastProjection(this.down.weight));
  }

  /** The adapter output and (for AdapterFusion) its scaled `up` projection before the residual. */
  forwardUp(h: Tensor, residual: Tensor, needUp: boolean): { out: Tensor; up: Tensor | null } {
    // fused kernel: down → act → up → ·scale → + residual in one native call (plain sequential adapters)
    if (!needUp && this.fusable(h))
      return { out: bottleneckFused(h, this.down.weight, this.down.bias!, this.up.weight, this.up.bias!, residual, this.cfg.get('non_linearity') as string,
        this.cfg.get('scaling') as number, autocastProjection(this.down.weight)), up: null };  // fusable: on the CPU when that holds
    const x = this.lnBefore ? this.lnBefore.forward(h) : h;
    let out = this.scale(this.up.forward(this.act(this.down.forward(x))));
    const up = out;
    // the config's dropout on the scaled output, before the gate (the Python library's Adapter.forward)
    const p = this.cfg.get('dropout') as number;
    if (this.training && p > 0) out = ops.dropout(out, p);
    const gate = this.child('gate') as Linear | null;
    if (gate) out = ops.mul(out, ops.unsqueeze(ops.mean(ops.sigmoid(gate.forward(h)), 1), -1));
    // Adapter+'s stochastic depth (torchvision mode 'row'): in training, drop the whole adapter output of a row (sequential
    // adapters only: the Python library's ParallelAdapter has no DropPath)
    const sd = this.cfg.get('stochastic_depth') as number;
    if (this.training && sd > 0 && !this.isParallel) {
      const B = out.shape[0]!;
      const keep = ops.div(ops.cast(ops.ge(ops.rand([B]), sd), out.dtype), 1 - sd);
      out = ops.mul(out, ops.reshape(keep, [B, ...out.shape.slice(1).map(() => 1)]));
    }
    if (this.isParallel) return { out: this.lnAfter ? this.lnAfter.forward(out) : out, up };
    if (this.cfg.get('adapter_residual_before_ln')) {
      out = ops.add(out, residual);
      if (this.lnAfter) out = this.lnAfter.forward(out);
    } else {
      if (this.lnAfter) out = this.lnAfter.forward(out);
      out = ops.add(out, residual);
    }
    return { out, up };
  }

  postForward(h: Tensor, hiddenIn: Tensor, input: Tensor, ln: LayerNorm | null): Tensor {
    let out = this.isParallel ? ops.add(h, hiddenIn) : h;
    if (this.cfg.get('original_ln_after')) out = ln ? ln.forward(ops.add(out, input)) : ops.add(out, input);
    return out;
  }
}

/** One bottleneck hook site (after attention or after the FFN) of one layer. */
export class BottleneckSite {
  readonly container = new Module();
  /** `adapter_fusion_layer.<a,b>` (AdapterFusion), beside `adapters`. */
  readonly fusions = new Module();
  ctx: AdapterContext | null = null;
  /** @param parent the module that holds `adapters` (e.g. BERT's attention.output) */
  constructor(parent: Module, readonly layer: number, readonly kind: 'mh' | 'output') {
    parent.registerModule('adapters', this.container);
    parent.registerModule('adapter_fusion_layer', this.fusions);
  }
  addFusion(name: string, cfg: FusionConfigDict, hidden: number, defaultDropout = 0): void {
    this.fusions.registerModule(name, new FusionLayer(cfg, hidden, defaultDropout));
  }
  removeFusion(name: string): void {
    this.fusions.child(name)?.dispose();
    this.fusions.registerModule(name, null);
  }
  add(name: string, cfg: BnConfig, hidden: number, sharedRule: () => Tensor | null = () => null,
    sharedW: (key: string) => Tensor | null = () => null): void {
    this.container.registerModule(name, new BottleneckAdapter(cfg, hidden, cfg.bottleneckSize(hidden, this.layer), sharedRule, sharedW));
  }
  remove(name: string): void {
    this.container.child(name)?.dispose();
    this.container.registerModule(name, null);
  }
  get(name: string): BottleneckAdapter | null {
    return (this.container.child(name) as BottleneckAdapter | null) ?? null;
  }
  /** The sub-layer output with adapters: LN(hidden + input) / hidden + input when none is active. */
  forward(hidden0: Tensor, input0: Tensor, ln: LayerNorm | null): Tensor {
    // after a Parallel block replicated the batch, the residual (or the sub-layer output) may lag behind
    const hidden = matchBatch(input0, hidden0), input = matchBatch(hidden, input0);
    const setup = this.ctx?.setupAt(this.layer, (n) => !!this.get(n)) ?? null;
    if (setup === null) return ln ? ln.forward(ops.add(hidden, input)) : ops.add(hidden, input);
    const st = this.compose(setup, { h: hidden, input, last: '' }, ln);
    const last = this.get(st.last);
    const hid = matchBatch(st.h, hidden);
    return last ? last.postForward(st.h, hid, st.input, ln) : ln ? ln.forward(ops.add(st.h, st.input)) : ops.add(st.h, st.input);
  }

  /**
   * BatchSplit whose children are plain sequential adapters of this site that the fused kernel computes and that
   * agree on the pre-adapter residual/LN handling and the activation: one bottleneckSgmv call for all slices
   * (pre_forward runs once on the whole batch, which equals running it per slice). Else null.
   */
  private segmented(setup: BatchSplit, st: { h: Tensor; input: Tensor; last: string }, ln: LayerNorm | null): { h: Tensor; input: Tensor; last: string } | null {
    const mods: BottleneckAdapter[] = [];
    for (const c of setup.children) {
      const a = typeof c === 'string' ? this.get(c) : null;
      if (!a || !a.fusable(st.h)) return null;
      mods.push(a);
    }
    const key = (a: BottleneckAdapter) => ['original_ln_before', 'residual_before_ln', 'non_linearity'].map((k) => String(a.cfg.get(k))).join('|');
    if (mods.some((a) => key(a) !== key(mods[0]!))) return null;
    const pre = mods[0]!.preForward(st.h, st.input, ln);
    const ws = mods.map((a) => {
      const down = a.down as Linear, up = a.up as Linear;
      return { Wd: down.weight, bd: down.bias!, Wu: up.weight, bu: up.bias! };
    });
    const h = bottleneckSgmv(pre.h, pre.residual, ws, segmentStarts(st.h, setup.batchSizes), mods.map((a) => a.cfg.get('scaling') as number), mods[0]!.cfg.get('non_linearity') as string);
    return { h, input: st.input, last: setup.children[setup.children.length - 1] as string };
  }

  /** The pre-processing of a composition block by its first adapter (the Python library's pre_block). */
  private preBlock(setup: Setup, st: { h: Tensor; input: Tensor }, ln: LayerNorm | null): { h: Tensor; residual: Tensor } {
    const first = typeof setup === 'string' ? setup : setup.flatten()[0]!;
    return this.get(first)!.preForward(st.h, st.input, ln);
  }

  /**
   * Evaluates a setup on (h, input): a name runs that adapter (its pre_forward on the current state); Stack
   * chains; BatchSplit / Split run children on rows / positions and concatenate; Average combines children's
   * states as Σ w_i·h_i / N (the Python library's mean of weighted states). Parallel/Fuse: composition issue.
   */
  private compose(setup: Setup, st: { h: Tensor; input: Tensor; last: string; up?: Tensor | null }, ln: LayerNorm | null,
    needUp = false): { h: Tensor; input: Tensor; last: string; up?: Tensor | null } {
    if (typeof setup === 'string') {
      const a = this.get(setup)!;
      const pre = a.preForward(st.h, st.input, ln);
      const r = a.forwardUp(pre.h, pre.residual, needUp);
      return { h: r.out, input: st.input, last: setup, up: r.up };
    }
    if (setup instanceof Fuse) {
      // the last adapter's pre_forward gives the query and residual; the children's `up` outputs are fused
      const fusion = this.fusions.child(setup.name) as FusionLayer | null;
      if (!fusion) throw new ValueError(`No AdapterFusion '${setup.name}' at this layer: add it with addAdapterFusion`);
      const names = setup.flatten();
      const lastName = names[names.length - 1]!;
      const last = this.get(lastName)!;
      const pre = last.preForward(st.h, st.input, ln);
      const query = fusion.cfg.query_before_ln ? st.h : pre.h;
      const ups = setup.children.map((c) => {
        if (typeof c === 'string') return this.get(c)!.forwardUp(pre.h, pre.residual, true).up!;
        const r = this.compose(c, { h: pre.h, input: st.input, last: st.last }, ln, true);
        return r.up!;
      });
      const store = this.ctx?.fusionAttentions;
      const onProbs = store ? (probs: Tensor) => {
        // detached and kept out of the model's inner scopes; AdapterModel.forward hands it to the caller's scope
        const byLayer = (store[setup.name] ??= {});
        (byLayer[this.layer] ??= {})[`${this.kind}_adapter`] = keep(probs.detach());
      } : undefined;
      return { h: fusion.forward(query, ups, pre.residual, onProbs), input: st.input, last: lastName };
    }
    if (setup instanceof Stack) return setup.children.reduce((acc, c) => this.compose(c, acc, ln, needUp), st);
    if (setup instanceof BatchSplit || setup instanceof Split) {
      const dim = setup instanceof BatchSplit ? 0 : 1;
      const sizes = setup instanceof BatchSplit ? setup.batchSizes : setup.splits;
      const total = st.h.shape[dim]!;
      if (sizes.reduce((a, b) => a + b, 0) !== total)
        throw new ValueError(`${String(setup)}: sizes [${sizes}] must add up to ${dim === 0 ? 'the batch size' : 'the sequence length'} ${total}`);
      if (dim === 0 && !needUp) {
        const seg = this.segmented(setup as BatchSplit, st, ln);
        if (seg) return seg;
      }
      // A block whose children are all here runs as the Python library's does: its first adapter pre-processes the
      // whole state once (pre_block), named children then run on that without a pre-step of their own, and nested blocks
      // recurse (a Stack child pre-processes again). A block with children absent at this site (another method's
      // adapters, which the Python library cannot run there) keeps each child's own pre-step.
      const pre = allPresent(setup) ? this.preBlock(setup, st, ln) : null;
      let at = 0, last = st.last;
      const parts = setup.children.map((c, i) => {
        const cut = (t: Tensor) => ops.slice(t, dim, at, at + sizes[i]!);
        const sub = { h: cut(pre ? pre.h : st.h), input: cut(st.input), last: st.last };
        const r = pre && typeof c === 'string' ? { h: this.get(c)!.forwardUp(sub.h, cut(pre.residual), false).out, last: c } : this.compose(c, sub, ln);
        at += sizes[i]!;
        last = r.last;
        return r.h;
      });
      return { h: ops.concat(parts, dim), input: st.input, last };
    }
    if (setup instanceof Parallel) {
      // replicate the batch once per forward (the first Parallel site), then one slice per child
      const N = setup.children.length;
      let cur = st;
      if (!this.ctx!.parallelized) {
        this.ctx!.originalBatch = st.h.shape[0]!;
        cur = { h: repeatBatch(st.h, N), input: repeatBatch(st.input, N), last: st.last };
        this.ctx!.parallelized = true;
      }
      const B = cur.h.shape[0]!;
      if (B % N) throw new ValueError(`${String(setup)}: the batch (${B}) is not divisible by the ${N} parallel channels`);
      return this.compose(new BatchSplit(setup.children, setup.children.map(() => B / N)), cur, ln);
    }
    if (setup instanceof Average) {
      // pre-processed once by the first adapter when every child is here, as BatchSplit above
      const pre = allPresent(setup) ? this.preBlock(setup, st, ln) : null;
      const rs = setup.children.map((c) => pre && typeof c === 'string'
        ? { h: this.get(c)!.forwardUp(pre.h, pre.residual, false).out, last: c }
        : this.compose(c, pre ? { h: pre.h, input: st.input, last: st.last } : st, ln));
      const N = rs.length;
      const sum = rs.map((r, i) => ops.mul(r.h, setup.weights[i]! / N)).reduce((a, b) => ops.add(a, b));
      return { h: sum, input: st.input, last: rs[N - 1]!.last };
    }
    throw new ValueError(`${String(setup)} is not supported for bottleneck adapters`);
  }
}
