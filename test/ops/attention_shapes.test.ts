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

// Models hand attention the head split of a (B, T, H·D) projection (a (0, 2, 1, 3) permute): the kernel reads that
// layout as it is and returns out / dq / dk / dv in it, so splitting and merging heads copy nothing. Same numbers as
// contiguous inputs, bit for bit, in f32 and under autocast, with a prefix, causal masking and grouped kv heads.
for (const mixed of [false, true])
  test(`attention on head-split views (${mixed ? 'autocast' : 'f32'}): bit-identical to contiguous inputs; out and grads in that layout`, async (t) => {
    const { autocast } = await import('../../lib/index.ts');
    const [B, T, H, Hkv, D, P] = [2, 37, 4, 2, 16, 5];
    const src = [[B, T, H * D], [B, T, Hkv * D], [B, T, Hkv * D]].map((s, i) => randn(s, { seed: 70 + i }));
    const pk = randn([B, Hkv, P, D], { seed: 80 }), pv = randn([B, Hkv, P, D], { seed: 81 });
    const g = randn([B, H, T, D], { seed: 82 });
    const run = (split: boolean) => scope(() => {
      const xs = src.map((x) => { const c = x.clone(); c.requiresGrad = true; return c; });
      const heads = (x: Tensor, h: number) => ops.permute(ops.reshape(x, [B, T, h, D]), [0, 2, 1, 3]);
      const [q, k, v] = [heads(xs[0]!, H), heads(xs[1]!, Hkv), heads(xs[2]!, Hkv)].map((x) => (split ? x : x.contiguous()));
      const y = autocast(() => ops.scaledDotProductAttention(q!, k!, v!, { prefixK: pk, prefixV: pv, isCausal: true }), { enabled: mixed });
      const merged = ops.permute(y, [0, 2, 1, 3]);
      const layout = merged.isContiguous;
      autocast(() => ops.sum(ops.mul(y, g)).backward(), { enabled: mixed });
      return { y: Array.from(y.toArray() as Float32Array), layout, grads: xs.map((x) => Array.from(x.grad!.toArray() as Float32Array)) };
    });
    const a = run(true), b = run(false);
    t.true(a.layout, 'out comes back (B, T, H, D)-contiguous for a head-split q');
    t.false(b.layout, 'and (B, H, T, D)-contiguous for a contiguous q');
    t.deepEqual(a.y, b.y);
    a.grads.forEach((gr, i) => t.deepEqual(gr, b.grads[i], `grad of input ${i}`));
  });
