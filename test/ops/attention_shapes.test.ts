// The fused attention kernel at key counts and head sizes that are not multiples of the vector width (prefix blocks
// of 30 keys, 37-token sequences, head size 20): forward and every gradient against the same attention composed
// from separate ops (matmul, softmax) through autograd.
import test from 'ava';
import { ops, randn, scope, tensor, getRngState, setRngState, type Tensor } from '../../lib/index.ts';
import { attentionExplicit } from '../../lib/ops/attention_explicit.ts';

function composed(q: Tensor, k: Tensor, v: Tensor, pk: Tensor | null, pv: Tensor | null, causal: boolean, dropoutP = 0): Tensor {
  const D = q.shape[3]!, T = q.shape[2]!, Tk = k.shape[2]!;
  const K = pk ? ops.concat([pk, k], 2) : k, V = pv ? ops.concat([pv, v], 2) : v;
  let s = ops.mul(ops.matmul(q, ops.transpose(K, -2, -1)), 1 / Math.sqrt(D));
  if (causal) {
    const P = K.shape[2]! - Tk;
    const mask = Array.from({ length: T }, (_, i) => Array.from({ length: P + Tk }, (_, j) => (j - P > i + (Tk - T) ? -1e30 : 0)));
    s = ops.add(s, ops.reshape(tensor(mask), [1, 1, T, P + Tk]));
  }
  return ops.matmul(dropoutP > 0 ? ops.dropout(ops.softmax(s, -1), dropoutP) : ops.softmax(s, -1), V);
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

// Attention-probability dropout (dropoutP, training mode of the models): the explicit path (what a GPU runs) and the fused
// CPU kernel drop the same entries from the same generator state and apply the same masking rules: output and every
// gradient agree over causal, padding, additive and bool masks, prefixes, grouped-query heads and Tq < Tk.
test('attention dropout: the explicit path equals the fused kernel (every mask kind, prefixes, GQA); p = 0.5 drops', (t) => {
  const B = 2, H = 4, Tq = 5, Tk = 7, D = 8;
  const cases: { hkv: number; causal: boolean; pad: boolean; mask: 'none' | 'add' | 'bool'; P: number }[] = [
    { hkv: 4, causal: false, pad: false, mask: 'none', P: 0 },
    { hkv: 4, causal: true, pad: true, mask: 'none', P: 3 },
    { hkv: 2, causal: true, pad: false, mask: 'add', P: 0 },
    { hkv: 2, causal: false, pad: true, mask: 'bool', P: 2 },
  ];
  for (const c of cases) {
    const leaves = [[B, H, Tq, D], [B, c.hkv, Tk, D], [B, c.hkv, Tk, D], [B, c.hkv, c.P || 1, D], [B, c.hkv, c.P || 1, D]].map((s, i) => {
      const x = randn(s, { seed: 100 + i });
      x.requiresGrad = true;
      return x;
    });
    const keep = c.pad ? tensor(Array.from({ length: B }, (_, b) => Array.from({ length: c.P + Tk }, (_, j) => !(b === 1 && j >= c.P + Tk - 2)))) : null;
    const allowed = tensor(Array.from({ length: Tq }, (_, i) => Array.from({ length: c.P + Tk }, (_, j) => (i + j) % 3 !== 0))).reshape([1, 1, Tq, c.P + Tk]);
    const mask = c.mask === 'add' ? randn([1, 1, Tq, c.P + Tk], { seed: 7 }) : c.mask === 'bool' ? allowed : null;
    const additive = c.mask === 'bool' ? ops.where(allowed, ops.zeros([]), ops.full([], -3.4028234663852886e38)) : mask;
    const g = randn([B, H, Tq, D], { seed: 99 });
    const state = getRngState();
    const run = (explicit: boolean) => scope(() => {
      setRngState(state);
      const [q, k, v, pk, pv] = leaves as [Tensor, Tensor, Tensor, Tensor, Tensor];
      const y = explicit
        ? attentionExplicit(q, k, v, additive, keep, c.P ? pk : null, c.P ? pv : null, c.causal, undefined, 0.3)
        : ops.scaledDotProductAttention(q, k, v, { isCausal: c.causal, keyPaddingMask: keep, mask, prefixK: c.P ? pk : null, prefixV: c.P ? pv : null, dropoutP: 0.3 });
      ops.sum(ops.mul(y, g)).backward();
      const out = [Array.from(y.toArray() as Float32Array), ...leaves.slice(0, c.P ? 5 : 3).map((l) => Array.from(l.grad!.toArray() as Float32Array))];
      for (const l of leaves) l.zeroGrad();
      return out;
    });
    const a = run(true), b = run(false);
    a.forEach((xs, j) => {
      const worst = xs.reduce((w, x, i) => Math.max(w, Math.abs(x - b[j]![i]!) / Math.max(1, Math.abs(b[j]![i]!))), 0);
      t.true(worst < 2e-5, `${JSON.stringify(c)} ${['out', 'dq', 'dk', 'dv', 'dpk', 'dpv'][j]}: ${worst}`);
    });
    for (const l of leaves) l.dispose();
  }
  // p = 0.5: with v = identity rows the output rows are the (dropped, rescaled) probabilities themselves
  const q = randn([1, 1, 64, 16], { seed: 1 }), k = randn([1, 1, 64, 16], { seed: 2 });
  const eye = tensor(Array.from({ length: 64 }, (_, i) => Array.from({ length: 64 }, (_, j) => (i === j ? 1 : 0)))).reshape([1, 1, 64, 64]);
  const probs = Array.from(ops.scaledDotProductAttention(q, k, eye).toArray() as Float32Array);
  const dropped = Array.from(ops.scaledDotProductAttention(q, k, eye, { dropoutP: 0.5 }).toArray() as Float32Array);
  const zeros = dropped.filter((x) => x === 0).length / dropped.length;
  t.true(zeros > 0.45 && zeros < 0.55, `dropped fraction ${zeros}`);
  t.true(dropped.every((x, i) => x === 0 || Math.abs(x - 2 * probs[i]!) < 1e-6), 'kept probabilities are scaled by 1 / (1 − p)');
  t.throws(() => ops.scaledDotProductAttention(q, k, eye, { dropoutP: 1 }), { message: /dropoutP must be in \[0, 1\)/ });
});

// The fused CPU kernel's dropout drops probability (b, h, i, j) exactly as ops.dropout drops that element of the
// materialised (B, H, Tq, P+Tk) probabilities from the same generator state: output and every gradient equal the composed
// ops with dropout (prefixes, causal), and the backward replays the forward's mask.
for (const [T, P, D, causal] of [[37, 30, 20, false], [70, 5, 24, true]] as [number, number, number, boolean][])
  test(`attention dropout p=0.3 T=${T} prefix=${P}${causal ? ' causal' : ''}: the fused kernel equals the composed ops (same generator state)`, (t) => {
    const leaves = [[2, 3, T, D], [2, 3, T, D], [2, 3, T, D], [2, 3, P, D], [2, 3, P, D]].map((s, i) => {
      const x = randn(s, { seed: 20 * T + i });
      x.requiresGrad = true;
      return x;
    });
    const g = randn([2, 3, T, D], { seed: 98 });
    const state = getRngState();
    const run = (fused: boolean) => scope(() => {
      setRngState(state);
      const [q, k, v, pk, pv] = leaves as [Tensor, Tensor, Tensor, Tensor, Tensor];
      const y = fused ? ops.scaledDotProductAttention(q, k, v, { prefixK: pk, prefixV: pv, isCausal: causal, dropoutP: 0.3 }) : composed(q, k, v, pk, pv, causal, 0.3);
      ops.sum(ops.mul(y, g)).backward();
      const out = [Array.from(y.toArray() as Float32Array), ...leaves.map((l) => Array.from(l.grad!.toArray() as Float32Array))];
      for (const l of leaves) l.zeroGrad();
      return out;
    });
    const a = run(true), b = run(false), c = run(true);
    t.deepEqual(a, c, 'the same generator state gives the same mask');
    a.forEach((xs, j) => {
      const worst = xs.reduce((w, x, i) => Math.max(w, Math.abs(x - b[j]![i]!) / Math.max(1, Math.abs(b[j]![i]!))), 0);
      t.true(worst < 2e-5, `${['out', 'dq', 'dk', 'dv', 'dpk', 'dpv'][j]}: ${worst}`);
    });
    // and the draw moved the generator: the next call drops other entries
    const y1 = scope(() => Array.from(ops.scaledDotProductAttention(leaves[0]!, leaves[1]!, leaves[2]!, { dropoutP: 0.3 }).toArray() as Float32Array));
    const y2 = scope(() => Array.from(ops.scaledDotProductAttention(leaves[0]!, leaves[1]!, leaves[2]!, { dropoutP: 0.3 }).toArray() as Float32Array));
    t.notDeepEqual(y1, y2);
  });
