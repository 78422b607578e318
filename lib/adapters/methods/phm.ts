/**
 * Parameterized hypercomplex multiplication layers (PHM, Zhang et al. 2021) as used by Compacter
 * (Karimi Mahabadi et al. 2021, https://arxiv.org/abs/2106.04647), following the Python Adapters library:
 *   W = Σ_i kron(rule_i, W_i)  with rule (n, n, n) and W_i = W_left_i @ W_right_i (n, in/n, rank)·(n, rank, out/n)
 *   y = x @ W + b            (W is (in, out): x·W, not W·x)
 * The rule is shared by all PHM layers of an adapter (`shared_parameters.<name>.phm_rule`, not saved by the
 * Python library) unless shared_phm_rule is false; factorized rules use phm_rule_left (n,n,1) · phm_rule_right
 * (n,1,n). Parameter names: W_left, W_right (or W), b, phm_rule / phm_rule_left / phm_rule_right.
 */
import { Module } from '../../nn/module.ts';
import { Tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { ValueError } from '../../errors.ts';
import type { BnConfig } from '../config.ts';

/** kron over the last two dims, batched over dim 0: (n,a,b) ⊗ (n,c,d) → (n, a·c, b·d). */
function kron(a: Tensor, b: Tensor): Tensor {
  const [n, ar, ac] = a.shape as [number, number, number];
  const [, br, bc] = b.shape as [number, number, number];
  const A = ops.reshape(a, [n, ar, 1, ac, 1]);
  const B = ops.reshape(b, [n, 1, br, 1, bc]);
  return ops.reshape(ops.mul(A, B), [n, ar * br, ac * bc]);
}

export class PHMLinear extends Module {
  readonly n: number;
  constructor(readonly inF: number, readonly outF: number, cfg: BnConfig, readonly sharedRule: () => Tensor | null,
    readonly position: 'down' | 'up' = 'down', readonly sharedW: (key: string) => Tensor | null = () => null) {
    super();
    const n = (this.n = cfg.get('phm_dim') as number);
    if (inF % n) throw new ValueError(`Argument \`in_features\`=${inF} is not divisble be \`phm_dim\`${n}`);
    if (outF % n) throw new ValueError(`Argument \`out_features\`=${outF} is not divisble be \`phm_dim\`${n}`);
    this.shared = cfg.get('shared_W_phm') as boolean;
    this.factorized = cfg.get('factorized_phm_W') as boolean;
    const rank = cfg.get('phm_rank') as number;
    const xavier = (shape: number[], fanIn: number, fanOut: number) => initW(cfg, shape, fanIn, fanOut);
    if (this.shared) {
      // W lives in shared_parameters.<name>.W_{down,up}[_left|_right]
    } else if (cfg.get('factorized_phm_W')) {
      this.registerParameter('W_left', xavier([n, inF / n, rank], inF / n, rank));
      this.registerParameter('W_right', xavier([n, rank, outF / n], rank, outF / n));
    } else this.registerParameter('W', xavier([n, inF / n, outF / n], inF / n, outF / n));
    if (cfg.get('phm_bias')) this.registerParameter('b', ops.zeros([outF]));
    if (!cfg.get('shared_phm_rule')) {
      // the Python PHMLayer's own rule: factorized U(-0.01, 0.01); else N(0, 0.01) ('normal') or U(-1, 1) ('uniform')
      const uni = (shape: number[], a: number) => ops.sub(ops.mul(ops.rand(shape), 2 * a), a);
      if (cfg.get('factorized_phm_rule')) {
        this.registerParameter('phm_rule_left', uni([n, n, 1], 0.01));
        this.registerParameter('phm_rule_right', uni([n, 1, n], 0.01));
      } else this.registerParameter('phm_rule', cfg.get('phm_c_init') === 'uniform' ? uni([n, n, n], 1) : ops.randn([n, n, n], { std: 0.01 }));
    }
  }
  private rule(): Tensor {
    const own = this.param('phm_rule');
    if (own) return own;
    const l = this.param('phm_rule_left'), r = this.param('phm_rule_right');
    if (l && r) return ops.matmul(l, r);
    const s = this.sharedRule();
    if (!s) throw new ValueError('PHM layer has no rule');
    return s;
  }
  readonly shared: boolean;
  readonly factorized: boolean;
  private W(): Tensor {
    if (!this.shared) return this.param('W') ?? ops.matmul(this.param('W_left')!, this.param('W_right')!);
    const p = `W_${this.position}`;
    const W = this.factorized ? null : this.sharedW(p);
    if (W) return W;
    const l = this.sharedW(`${p}_left`), r = this.sharedW(`${p}_right`);
    if (!l || !r) throw new ValueError(`shared PHM weights ${p} are missing`);
    return ops.matmul(l, r);
  }
  weight(): Tensor {
    const W = this.W();
    return ops.sum(kron(this.rule(), W), 0);  // (in, out)
  }
  forward(x: Tensor): Tensor {
    const y = ops.matmul(x, this.weight());
    const b = this.param('b');
    return b ? ops.add(y, b) : y;
  }
}

/** Model-level `shared_parameters.<name>.phm_rule` (and its factorized form) for shared PHM rules. */
/**
 * A PHM weight (phm_dim slices) as the Python library's init_W: per slice xavier normal ('glorot-normal') or uniform
 * ('glorot-uniform'), or N(0, phm_init_range) ('normal'), by hypercomplex_nonlinearity.
 */
function initW(cfg: BnConfig, shape: number[], fanIn: number, fanOut: number): Tensor {
  const kind = cfg.get('hypercomplex_nonlinearity');
  if (kind === 'glorot-normal') return ops.randn(shape, { std: Math.sqrt(2 / (fanIn + fanOut)) });
  if (kind === 'glorot-uniform') {
    const a = Math.sqrt(6 / (fanIn + fanOut));
    return ops.sub(ops.mul(ops.rand(shape), 2 * a), a);
  }
  return ops.randn(shape, { std: cfg.get('phm_init_range') as number });
}

export class SharedParameters extends Module {
  /** @param hidden model hidden size (shared W needs in/out sizes: hidden and hidden // reduction_factor) */
  add(name: string, cfg: BnConfig, hidden = 0): void {
    if (!cfg.get('phm_layer') || (!cfg.get('shared_phm_rule') && !cfg.get('shared_W_phm'))) return;
    const n = cfg.get('phm_dim') as number, r = cfg.get('phm_init_range') as number;
    const m = new Module();
    if (cfg.get('shared_W_phm')) {
      const rf = cfg.get('reduction_factor');
      if (typeof rf !== 'number') throw new ValueError('shared_W_phm needs a single numeric reduction_factor');
      const inF = hidden, outF = Math.floor(hidden / rf), rank = cfg.get('phm_rank') as number;
      const xavier = (shape: number[], a: number, b: number) => initW(cfg, shape, a, b);
      if (cfg.get('factorized_phm_W')) {
        m.registerParameter('W_down_left', xavier([n, inF / n, rank], inF / n, rank));
        m.registerParameter('W_down_right', xavier([n, rank, outF / n], rank, outF / n));
        m.registerParameter('W_up_left', xavier([n, outF / n, rank], outF / n, rank));
        m.registerParameter('W_up_right', xavier([n, rank, inF / n], rank, inF / n));
      } else {
        m.registerParameter('W_down', xavier([n, inF / n, outF / n], inF / n, outF / n));
        m.registerParameter('W_up', xavier([n, outF / n, inF / n], outF / n, inF / n));
      }
    }
    if (!cfg.get('shared_phm_rule')) {
      this.registerModule(name, m);
      return;
    }
    // the shared rule: N(0, phm_init_range) ('normal') or U(-1, 1) ('uniform')
    const init = (shape: number[]) => (cfg.get('phm_c_init') === 'uniform' ? ops.sub(ops.mul(ops.rand(shape), 2), 1) : ops.randn(shape, { std: r }));
    if (cfg.get('factorized_phm_rule')) {
      m.registerParameter('phm_rule_left', init([n, n, 1]));
      m.registerParameter('phm_rule_right', init([n, 1, n]));
    } else m.registerParameter('phm_rule', init([n, n, n]));
    this.registerModule(name, m);
  }
  remove(name: string): void {
    this.child(name)?.dispose();
    this.registerModule(name, null);
  }
  param2(name: string, key: string): Tensor | null {
    return this.child(name)?.param(key) ?? null;
  }
  rule(name: string): Tensor | null {
    const m = this.child(name);
    if (!m) return null;
    const p = m.param('phm_rule');
    if (p) return p;
    return ops.matmul(m.param('phm_rule_left')!, m.param('phm_rule_right')!);
  }
}
