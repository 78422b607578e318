/**
 * Invertible adapters (Pfeiffer et al. 2020, MAD-X, https://arxiv.org/abs/2005.00052): a NICE coupling
 * block (Dinh et al. 2014) on the embedding output, of the *first* adapter of the active setup, as in the
 * Python Adapters library (`invertible_adapters.<name>.{F,G}.{0,2}.*`):
 *   x1 = x[..., :⌊H/2⌋], x2 = x[..., ⌊H/2⌋:];  y1 = x1 + F(x2);  y2 = x2 + G(y1);  y = [y1, y2]
 * F, G = Linear → non_linearity → Linear with hidden size ⌊(H/2) / inv_adapter_reduction_factor⌋.
 * The inverse (for LM heads) is x2 = y2 − G(y1); x1 = y1 − F(x2).
 */
import { Module } from '../../nn/module.ts';
import { Linear, adapterActivation } from '../../nn/layers.ts';
import { Tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { ValueError } from '../../errors.ts';
import type { BnConfig } from '../config.ts';
import type { AdapterContext } from '../context.ts';

class Coupling extends Module {
  readonly act: (x: Tensor) => Tensor;
  constructor(cin: number, cout: number, hidden: number, nonLinearity: string) {
    super();
    this.registerModule('0', new Linear(cin, hidden));
    this.registerModule('2', new Linear(hidden, cout));
    const n = nonLinearity.toLowerCase();
    this.act = adapterActivation(n);
  }
  forward(x: Tensor): Tensor {
    return (this.child('2') as Linear).forward(this.act((this.child('0') as Linear).forward(x)));
  }
}

export class NICEBlock extends Module {
  readonly split1: number;
  constructor(readonly hidden: number, cfg: BnConfig) {
    super();
    this.split1 = Math.floor(hidden / 2);
    const split2 = hidden - this.split1;
    const f = (cfg.get('inv_adapter_reduction_factor') as number | null) ?? 2;
    const act = cfg.get('non_linearity') as string;
    this.registerModule('F', new Coupling(split2, this.split1, Math.floor(this.split1 / f), act));
    this.registerModule('G', new Coupling(this.split1, split2, Math.floor(this.split1 / f), act));
  }
  forward(x: Tensor, rev = false): Tensor {
    const F = this.child('F') as Coupling, G = this.child('G') as Coupling;
    const a = ops.slice(x, -1, 0, this.split1), b = ops.slice(x, -1, this.split1);
    if (!rev) {
      const y1 = ops.add(a, F.forward(b));
      return ops.concat([y1, ops.add(b, G.forward(y1))], -1);
    }
    const x2 = ops.sub(b, G.forward(a));
    return ops.concat([ops.sub(a, F.forward(x2)), x2], -1);
  }
}

/**
 * GLOW coupling block (Kingma & Dhariwal 2018) as the Python library's GLOWCouplingBlock: affine couplings with
 * soft-clamped log-scales e(s) = exp(c·0.636·atan(s/c)), c = 5:
 *   [s2 | t2] = s2net(x2);  y1 = e(s2) ∘ x1 + t2;  [s1 | t1] = s1net(y1);  y2 = e(s1) ∘ x2 + t1
 * s1net: split1 → 2·split2, s2net: split2 → 2·split1 (Linear → act → Linear, hidden = in / factor).
 */
export class GLOWBlock extends Module {
  readonly split1: number;
  readonly split2: number;
  readonly clamp = 5.0;
  constructor(readonly hidden: number, cfg: BnConfig) {
    super();
    this.split1 = Math.floor(hidden / 2);
    this.split2 = hidden - this.split1;
    const f = (cfg.get('inv_adapter_reduction_factor') as number | null) ?? 2;
    const act = cfg.get('non_linearity') as string;
    this.registerModule('s1', new Coupling(this.split1, 2 * this.split2, Math.floor(this.split1 / f), act));
    this.registerModule('s2', new Coupling(this.split2, 2 * this.split1, Math.floor(this.split2 / f), act));
  }
  private e(s: Tensor): Tensor {
    return ops.exp(ops.mul(ops.atan(ops.div(s, this.clamp)), this.clamp * 0.636));
  }
  forward(x: Tensor, rev = false): Tensor {
    const s1n = this.child('s1') as Coupling, s2n = this.child('s2') as Coupling;
    const x1 = ops.slice(x, -1, 0, this.split1), x2 = ops.slice(x, -1, this.split1);
    if (!rev) {
      const r2 = s2n.forward(x2);
      const y1 = ops.add(ops.mul(this.e(ops.slice(r2, -1, 0, this.split1)), x1), ops.slice(r2, -1, this.split1));
      const r1 = s1n.forward(y1);
      const y2 = ops.add(ops.mul(this.e(ops.slice(r1, -1, 0, this.split2)), x2), ops.slice(r1, -1, this.split2));
      return ops.concat([y1, y2], -1);
    }
    const r1 = s1n.forward(x1);
    const y2 = ops.div(ops.sub(x2, ops.slice(r1, -1, this.split2)), this.e(ops.slice(r1, -1, 0, this.split2)));
    const r2 = s2n.forward(y2);
    const y1 = ops.div(ops.sub(x1, ops.slice(r2, -1, this.split1)), this.e(ops.slice(r2, -1, 0, this.split1)));
    return ops.concat([y1, y2], -1);
  }
}

/** Model-level `invertible_adapters`: applies the first active adapter's block to the embedding output. */
export class InvertibleAdapters extends Module {
  ctx: AdapterContext | null = null;
  add(name: string, cfg: BnConfig, hidden: number): void {
    const kind = cfg.get('inv_adapter');
    if (kind !== 'nice' && kind !== 'glow') throw new ValueError(`Invalid invertible adapter type '${kind}'.`);
    this.registerModule(name, kind === 'nice' ? new NICEBlock(hidden, cfg) : new GLOWBlock(hidden, cfg));
  }
  remove(name: string): void {
    this.child(name)?.dispose();
    this.registerModule(name, null);
  }
  apply(h: Tensor, rev = false): Tensor {
    const first = this.ctx?.active[0];
    const block = first ? (this.child(first) as NICEBlock | GLOWBlock | null) : null;
    return block ? block.forward(h, rev) : h;
  }
}
