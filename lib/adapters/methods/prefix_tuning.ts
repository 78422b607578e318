/**
 * Prefix tuning (Li & Liang 2021, https://arxiv.org/abs/2101.00190) as in the Python Adapters library
 * (`methods/prefix_tuning.py`). Per adapter, a pool module computes
 *   kv = control_trans(wte(arange(P)))        (P, n_layers·2·H)   — MLP reparametrisation: Linear→tanh→Linear
 *   or the flat parameter `control_trans` (P·n_layers·2·H) with `flat: true`,
 * viewed as (P, n_layers·2, n_heads, head_dim); layer i takes chunk 2i as keys and 2i+1 as values, which the
 * attention kernel prepends to the projected keys/values (always visible, no positions) without copying them.
 * Names: the pool lives at the model level (`prefix_tuning.prefix_tunings.<name>.self_prefix.*`) and is
 * referenced from every attention layer (`...attention.self.prefix_tuning.pool.prefix_tunings.<name>...`); the
 * first alias (layer 0) is what namedParameters() lists, as PyTorch does.
 */
import { Module } from '../../nn/module.ts';
import { Embedding, Linear, adapterActivation } from '../../nn/layers.ts';
import { Tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { noGrad } from '../../autograd/tape.ts';
import { ValueError } from '../../errors.ts';
import type { PrefixTuningConfig } from '../config.ts';
import type { AdapterContext } from '../context.ts';
import { BatchSplit, Parallel, Stack, type Setup } from '../composition.ts';
import { repeatBatch } from '../context.ts';

/** t repeated along dim 0 to `batch` rows (a multiple of its own). */
const rowsTo = (t: Tensor, batch: number): Tensor => repeatBatch(t, batch / t.shape[0]!);

/** One prefix of one adapter (`self_prefix`): the reparametrised keys/values for every layer. */
export class PrefixTuning extends Module {
  readonly P: number;
  /** The per-layer pieces of a states tensor (layerKV), split once. */
  #pieces = new WeakMap<Tensor, Tensor[]>();
  constructor(readonly cfg: PrefixTuningConfig, readonly nLayers: number, readonly nHeads: number, readonly hidden: number) {
    super();
    this.P = cfg.get('prefix_length') as number;
    const out = nLayers * 2 * hidden;
    if (cfg.get('flat')) {
      this.registerParameter('control_trans', ops.randn([this.P * out]));
    } else {
      const bn = cfg.get('bottleneck_size') as number;
      const wte = this.registerModule('wte', new Embedding(this.P, hidden));
      const seq = this.registerModule('control_trans', new Module());
      const l1 = seq.registerModule('0', new Linear(hidden, bn));
      const l2 = seq.registerModule('2', new Linear(bn, out));
      noGrad(() => {
        wte.weight.copy_(ops.randn(wte.weight.shape));  // nn.Embedding default N(0, 1)
        for (const l of [l1, l2]) {
          const b = 1 / Math.sqrt(l.inFeatures);  // nn.Linear default (kaiming-uniform a=√5)
          l.weight.copy_(ops.sub(ops.mul(ops.rand(l.weight.shape), 2 * b), b));
          l.bias!.copy_(ops.sub(ops.mul(ops.rand([l.outFeatures]), 2 * b), b));
        }
      });
    }
  }
  /** (P, n_layers·2·H) */
  states(training: boolean): Tensor {
    let kv: Tensor;
    const flat = this.param('control_trans');
    if (flat) kv = ops.reshape(flat, [this.P, -1]);
    else {
      const seq = this.child('control_trans')!;
      const act = adapterActivation(this.cfg.get('non_linearity') as string);
      const emb = (this.child('wte') as Embedding).weight;
      kv = (seq.child('2') as Linear).forward(act((seq.child('0') as Linear).forward(emb)));
    }
    const p = this.cfg.get('dropout') as number;
    return training && p > 0 ? ops.dropout(kv, p) : kv;
  }
  /**
   * Keys and values for `layer`, each (B, n_heads, P, head_dim). `cache` (the forward pass's, see
   * AdapterContext.prefixStates) lets every layer share one computation of the states (and one dropout mask).
   */
  layerKV(layer: number, batch: number, training: boolean, cache?: Map<object, Tensor> | null): { k: Tensor; v: Tensor } {
    const kv = cache?.get(this) ?? this.states(training);
    cache?.set(this, kv);
    const H = this.hidden, nh = this.nHeads, hd = H / nh;
    // every layer's (P, H) pieces, split once per states tensor (one backward node concatenating their gradients)
    let pieces = this.#pieces.get(kv);
    if (!pieces) this.#pieces.set(kv, (pieces = ops.split(kv, H, 1)));
    const pick = (j: number) => {
      const cols = pieces![j]!;                                             // (P, H)
      const heads = ops.permute(ops.reshape(cols, [this.P, nh, hd]), [1, 0, 2]);  // (nh, P, hd)
      return ops.expand(ops.unsqueeze(heads, 0), [batch, nh, this.P, hd]);
    };
    return { k: pick(2 * layer), v: pick(2 * layer + 1) };
  }
}

/** The model-level pool (`prefix_tuning`): `prefix_tunings.<name>.self_prefix`. */
export class PrefixTuningPool extends Module {
  readonly groups = new Module();
  /** @param location the key of the self-attention prefix: 'self_prefix' (most models) or 'self' (DistilBERT) */
  constructor(readonly location = 'self_prefix') {
    super();
    this.registerModule('prefix_tunings', this.groups);
  }
  /**
   * Adds the prefixes of adapter `name`: one PrefixTuning per location (decoder-only and encoder models: the
   * pool's own location; encoder–decoder models: 'encoder_prefix', 'self_prefix', 'cross_prefix').
   */
  add(name: string, cfg: PrefixTuningConfig, nLayers: number, nHeads: number, hidden: number, locations?: { key: string; nLayers: number }[]): void {
    const g = new Module();
    for (const loc of locations ?? [{ key: this.location, nLayers }]) g.registerModule(loc.key, new PrefixTuning(cfg, loc.nLayers, nHeads, hidden));
    this.groups.registerModule(name, g);
  }
  remove(name: string): void {
    this.groups.child(name)?.dispose();
    this.groups.registerModule(name, null);
  }
  get(name: string, location = this.location): PrefixTuning | null {
    return (this.groups.child(name)?.child(location) as PrefixTuning | null) ?? null;
  }
}

/** Per attention layer: `prefix_tuning` (holding the pool alias); returns the active prefixes' keys/values. */
export class PrefixSite {
  readonly module = new Module();
  ctx: AdapterContext | null = null;
  /** Adapters with a prefix at this layer (leave_out excludes layers). */
  readonly enabled = new Set<string>();
  /**
   * Per adapter, this layer's index inside its prefix when it differs from kvIndex: with leave_out the prefix holds
   * only the included layers, numbered in order (the Python library's indicate_prefix).
   */
  readonly kvIndexOf = new Map<string, number>();
  private pool: PrefixTuningPool | null = null;
  /**
   * @param layer adapter layer index (leave_out, AdapterDrop); @param location pool location key (null: the
   * pool's own); @param kvIndex index of this layer's keys/values inside that location's prefix (default layer)
   */
  constructor(parent: Module, readonly layer: number, readonly location: string | null = null, readonly kvIndex = layer) {
    parent.registerModule('prefix_tuning', this.module);
  }
  attach(pool: PrefixTuningPool): void {
    if (this.pool) return;
    this.pool = pool;
    this.module.registerModule('pool', pool);
  }
  private gates: Module | null = null;
  /** UniPELT's prefix gate: Linear(H, 1) (shared by keys and values) or Linear(H, 2). */
  addGate(name: string, hidden: number, shared: boolean): void {
    if (!this.gates) this.gates = this.module.registerModule('prefix_gates', new Module());
    const g = this.gates.registerModule(name, new Linear(hidden, shared ? 1 : 2));
    noGrad(() => { g.weight.copy_(ops.randn(g.weight.shape, { std: 0.02 })); g.bias!.copy_(ops.zeros([1])); });
  }
  removeGate(name: string): void {
    if (!this.gates?.child(name)) return;
    this.gates.child(name)!.dispose();
    this.gates.registerModule(name, null);
  }
  /** The prefix length at this site for the active setup (0 when none): summed over a Stack, per row otherwise. */
  activeLength(): number {
    if (!this.pool || !this.ctx) return 0;
    const loc = this.location ?? this.pool.location;
    const setup = this.ctx.setupAt(this.layer, (n) => this.enabled.has(n) && !!this.pool!.get(n, loc));
    const len = (s: Setup): number => {
      if (typeof s === 'string') return this.pool!.get(s, loc)!.P;
      const ls = s.children.map(len);
      return s instanceof Stack ? ls.reduce((a, b) => a + b, 0) : Math.max(0, ...ls);
    };
    return setup === null ? 0 : len(setup);
  }
  /**
   * Prefix keys/values of the active prefix adapters (concatenated for a Stack, last first), or null.
   * `x` (B, T, H) is the attention input, used by gated prefixes: keys/values × mean_T sigmoid(gate(x)).
   */
  kv(batch: number, training: boolean, x?: Tensor): { k: Tensor; v: Tensor } | null {
    if (!this.pool || !this.ctx) return null;
    const loc = this.location ?? this.pool.location;
    const setup = this.ctx.setupAt(this.layer, (n) => this.enabled.has(n) && !!this.pool!.get(n, loc));
    if (setup === null) return null;
    const r = this.compose(setup, loc, batch, training, x);
    return { k: r.k.contiguous(), v: r.v.contiguous() };
  }

  /**
   * Stack(a, b) → [prefix_b, prefix_a] (later adapters first); BatchSplit → per-row prefixes; Parallel → the batch
   * replicated once per forward pass (the first Parallel site, as the Python library's compose_parallel), one
   * channel of rows per child. The result's batch is the keys' dim 0: `batch`, or a multiple of it after a Parallel.
   * `x` (batch rows) is the attention input that gated prefixes read.
   */
  private compose(setup: Setup, loc: string, batch: number, training: boolean, x?: Tensor): { k: Tensor; v: Tensor } {
    if (typeof setup === 'string') {
      const kv = this.pool!.get(setup, loc)!.layerKV(this.kvIndexOf.get(setup) ?? this.kvIndex, batch, training, this.ctx!.prefixStates);
      const gate = this.gates?.child(setup) as Linear | null | undefined;
      if (!gate || !x) return kv;
      const g = ops.mean(ops.sigmoid(gate.forward(x)), 1);                  // (B, 1 or 2)
      const gk = ops.reshape(ops.slice(g, 1, 0, 1), [batch, 1, 1, 1]);
      const gv = ops.reshape(ops.slice(g, 1, g.shape[1]! - 1), [batch, 1, 1, 1]);
      return { k: ops.mul(kv.k, gk), v: ops.mul(kv.v, gv) };
    }
    if (setup instanceof Stack) {
      if (!setup.children.length) throw new ValueError('a BatchSplit or Parallel block mixing rows with and without prefix tuning is not supported yet');
      // sequentially, as the Python library composes a Stack: a Parallel child replicates the batch for the children
      // after it, and the prefixes before it are repeated to match (adjust_tensors_for_parallel)
      const parts: { k: Tensor; v: Tensor }[] = [];
      for (const c of setup.children) {
        const r = this.compose(c, loc, batch, training, x);
        const b = r.k.shape[0]!;
        if (b !== batch) {
          x = x ? rowsTo(x, b) : x;
          batch = b;
        }
        parts.push(r);
      }
      parts.reverse();
      if (parts.length === 1) return parts[0]!;
      return { k: ops.concat(parts.map((p) => rowsTo(p.k, batch)), 2), v: ops.concat(parts.map((p) => rowsTo(p.v, batch)), 2) };
    }
    let sizes: number[];
    if (setup instanceof BatchSplit) {
      if (setup.batchSizes.reduce((a, b) => a + b, 0) !== batch) throw new ValueError(`${String(setup)}: batch_sizes must add up to the batch size ${batch}`);
      sizes = setup.batchSizes;
    } else if (setup instanceof Parallel) {
      const n = setup.children.length, ctx = this.ctx!;
      if (!ctx.parallelized) {
        ctx.parallelized = true;
        ctx.originalBatch = batch;
        x = x ? rowsTo(x, n * batch) : x;
        batch *= n;
      } else if (batch % n) {
        throw new ValueError(`${String(setup)}: the batch (${batch}) is not divisible by the ${n} parallel channels`);
      }
      sizes = setup.children.map(() => batch / n);
    } else {
      throw new ValueError(`Invalid adapter setup. Cannot use ${String(setup)} with prefix tuning.`);
    }
    let at = 0;
    const parts = setup.children.map((c, i) => {
      const n = sizes[i]!;
      const r = this.compose(c, loc, n, training, x ? ops.slice(x, 0, at, at + n) : undefined);
      at += n;
      return r;
    });
    const P = parts[0]!.k.shape[2]!;
    // the Python library pads shorter prefixes with pad-token keys that stay attended (pad_and_concat): refused here
    if (parts.some((p) => p.k.shape[2] !== P))
      throw new ValueError(`${String(setup)}: prefixes of different lengths at one layer (${parts.map((p) => p.k.shape[2]).join(', ')}) are not supported`);
    if (parts.some((p, i) => p.k.shape[0] !== sizes[i]))
      throw new ValueError(`${String(setup)}: a Parallel block inside a block that splits the batch is not supported`);
    return { k: ops.concat(parts.map((p) => p.k), 0), v: ops.concat(parts.map((p) => p.v), 0) };
  }
}

/** Refuses configs that prefix tuning can't honour on a model. */
export function checkPrefixConfig(cfg: PrefixTuningConfig): void {
  if (!(cfg.get('prefix_length') as number > 0)) throw new ValueError('prefix_length must be positive');
}

/**
 * The pools of an encoder-decoder model: `encoder_prefix` (encoder self-attention), `self_prefix` (decoder
 * self-attention) and `cross_prefix` (decoder cross-attention), the first and last as the config enables them.
 */
export function seq2seqPrefixLocations(c: PrefixTuningConfig, encLayers: number, decLayers: number): { key: string; nLayers: number }[] {
  return [
    ...(c.get('encoder_prefix') ? [{ key: 'encoder_prefix', nLayers: encLayers }] : []),
    { key: 'self_prefix', nLayers: decLayers },
    ...(c.get('cross_prefix') ? [{ key: 'cross_prefix', nLayers: decLayers }] : []),
  ];
}
