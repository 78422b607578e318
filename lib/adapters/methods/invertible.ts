/**
 * Invertible adapters (Pfeiffer et al. 2020, MAD-X, https://arxiv.org/abs/2005.00052): a NICE coupling
 * block (Dinh et al. 2014) on the embedding output, of the *first* adapter of the active setup, as in the
 * Python Adapters library (`invertible_adapters.<name>.{F,G}.{0,2}.*`):
 *   x1 = x[..., :⌊H/2⌋], x2 = x[..., ⌊H/2⌋:];  y1 = x1 + F(x2);  y2 = x2 + G(y1);  y = [y1, y2]
 * F, G = Linear → non_linearity → Linear with hidden size ⌊(H/2) / inv_adapter_reduction_factor⌋.
 * The inverse (for LM heads) is x2 = y2 − G(y1); x1 = y1 − F(x2).
 */
import { Module } from '../../nn/module.ts';
import { Linear, activation } from '../../nn/layers.ts';
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
    this.act = n === 'swish' ? (x) => ops.silu(x) : activation(n);
  }
  forward(x: Tensor): Tensor {
    return (this.child('2') as Linear).forward(this.act((this.child('0') as Linear).forward(x)));
  }
}

export class NICEBlock extends Module {
  readonly split1: number;
  constructor(readonly hidden: number, cfg: BnConfig) {
    super();
    if (cfg.get('inv_adapter') !== 'nice') throw new ValueError(`invertible adapter '${cfg.get('inv_adapter')}' is not implemented yet (only 'nice')`);
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

/** Model-level `invertible_adapters`: applies the first active adapter's block to the embedding output. */
export class InvertibleAdapters extends Module {
  ctx: AdapterContext | null = null;
  add(name: string, cfg: BnConfig, hidden: number): void {
    this.registerModule(name, new NICEBlock(hidden, cfg));
  }
  remove(name: string): void {
    this.child(name)?.dispose();
    this.registerModule(name, null);
  }
  apply(h: Tensor, rev = false): Tensor {
    const first = this.ctx?.active[0];
    const block = first ? (this.child(first) as NICEBlock | null) : null;
    return block ? block.forward(h, rev) : h;
  }
}
