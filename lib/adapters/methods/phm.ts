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
  constructor(readonly inF: number, readonly outF: number, cfg: BnConfig, readonly sharedRule: () => Tensor | null) {
    super();
    const n = (this.n = cfg.get('phm_dim') as number);
    if (inF % n) throw new ValueError(`Argument \`in_features\`=${inF} is not divisble be \`phm_dim\`${n}`);
    if (outF % n) throw new ValueError(`Argument \`out_features\`=${outF} is not divisble be \`phm_dim\`${n}`);
    if (cfg.get('shared_W_phm')) throw new ValueError('shared_W_phm is not implemented yet');
    const rank = cfg.get('phm_rank') as number;
    const xavier = (shape: number[], fanIn: number, fanOut: number) => ops.randn(shape, { std: Math.sqrt(2 / (fanIn + fanOut)) });
    if (cfg.get('factorized_phm_W')) {
      this.registerParameter('W_left', xavier([n, inF / n, rank], inF / n, rank));
      this.registerParameter('W_right', xavier([n, rank, outF / n], rank, outF / n));
    } else this.registerParameter('W', xavier([n, inF / n, outF / n], inF / n, outF / n));
    if (cfg.get('phm_bias')) this.registerParameter('b', ops.zeros([outF]));
    if (!cfg.get('shared_phm_rule')) {
      const r = cfg.get('phm_init_range') as number;
      if (cfg.get('factorized_phm_rule')) {
        this.registerParameter('phm_rule_left', ops.randn([n, n, 1], { std: r }));
        this.registerParameter('phm_rule_right', ops.randn([n, 1, n], { std: r }));
      } else this.registerParameter('phm_rule', ops.randn([n, n, n], { std: r }));
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
  weight(): Tensor {
    const W = this.param('W') ?? ops.matmul(this.param('W_left')!, this.param('W_right')!);
    return ops.sum(kron(this.rule(), W), 0);  // (in, out)
  }
  forward(x: Tensor): Tensor {
    const y = ops.matmul(x, this.weight());
    const b = this.param('b');
    return b ? ops.add(y, b) : y;
  }
}

/** Model-level `shared_parameters.<name>.phm_rule` (and its factorized form) for shared PHM rules. */
export class SharedParameters extends Module {
  add(name: string, cfg: BnConfig): void {
    if (!cfg.get('phm_layer') || !cfg.get('shared_phm_rule')) return;
    const n = cfg.get('phm_dim') as number, r = cfg.get('phm_init_range') as number;
    const m = new Module();
    if (cfg.get('factorized_phm_rule')) {
      m.registerParameter('phm_rule_left', ops.randn([n, n, 1], { std: r }));
      m.registerParameter('phm_rule_right', ops.randn([n, 1, n], { std: r }));
    } else m.registerParameter('phm_rule', ops.randn([n, n, n], { std: r }));
    this.registerModule(name, m);
  }
  remove(name: string): void {
    this.child(name)?.dispose();
    this.registerModule(name, null);
  }
  rule(name: string): Tensor | null {
    const m = this.child(name);
    if (!m) return null;
    const p = m.param('phm_rule');
    if (p) return p;
    return ops.matmul(m.param('phm_rule_left')!, m.param('phm_rule_right')!);
  }
}
