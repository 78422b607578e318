// The fused attention kernel at key counts and head sizes that are not multiples of the vector width (prefix blocks
// of 30 keys, 37-token sequences, head size 20): forward and every gradient against the same attention composed
// from separate ops (matmul, softmax) through autograd.
import test from 'ava';
import { ops, randn, scope, tensor, type Tensor } from '../../lib/index.ts';

function composed(q: Tensor, k: Tensor, v: Tensor, pk: Tensor | null, pv: Tensor | null, causal: boolean): Tensor {
  const D = q.shape[3]!, T = q.shape[2]!, Tk = k.shape[2]!;
  const K = pk ? ops.concat([pk, k], 2) : k, V = pv ? ops.concat([pv, v], 2) : v;
  let s = ops.mul(ops.matmul(q, ops.transpose(K, -2, -1)), 1 / Math.sqrt(D));
  if (causal) {
    const P = K.shape[2]! - Tk;
    const mask = Array.from({ length: T }, (_, i) => Array.from({ length: P + Tk }, (_, j) => (j - P > i + (Tk - T) ? -1e30 : 0)));
    s = ops.add(s, ops.reshape(tensor(mask), [1, 1, T, P + Tk]));
  }
  return ops.matmul(ops.softmax(s, -1), V);
}

for (const [T, P, D, causal] of [[37, 30, 20, false], [37, 30, 64, true], [70, 5, 24, false], [128, 30, 64, false]] as [number, number, number, boolean][])
  test(`attention T=${T} prefix=${P} head=${D}${causal ? ' causal' : ''}: output and gradients equal the composed ops`, (t) => {
    const leaves = [[2, 3, T, D], [2, 3, T, D], [2, 3, T, D], [2, 3, P, D], [2, 3, P, D]].map((s, i) => {
      const x = randn(s, { seed: 10 * T + i });
      x.requiresGrad = true;
      return x;
    });
    const g = randn([2, 3, T, D], { seed: 99 });
    const run = (fused: boolean) => scope(() => {
      const [q, k, v, pk, pv] = leaves as [Tensor, Tensor, Tensor, Tensor, Tensor];
      const y = fused ? ops.scaledDotProductAttention(q, k, v, { prefixK: pk, prefixV: pv, isCausal: causal }) : composed(q, k, v, pk, pv, causal);
      ops.sum(ops.mul(y, g)).backward();
      const out = [Array.from(y.toArray() as Float32Array), ...leaves.map((l) => Array.from(l.grad!.toArray() as Float32Array))];
      for (const l of leaves) l.zeroGrad();
      return out;
    });
    const a = run(true), b = run(false);
    a.forEach((xs, j) => {
      const worst = xs.reduce((w, x, i) => Math.max(w, Math.abs(x - b[j]![i]!) / Math.max(1, Math.abs(b[j]![i]!))), 0);
      t.true(worst < 2e-5, `${['out', 'dq', 'dk', 'dv', 'dpk', 'dpv'][j]}: ${worst}`);
    });
  });
