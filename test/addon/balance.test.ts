// The pool's load balancing (ChunkQueue: each thread takes its own share of chunks, then claims the others'),
// and elementwise ops over rows long enough to be cut into pieces (a contiguous op coalesces to one row).
import test from 'ava';
import { native } from '../../lib/binding.ts';
import { numThreads, ops, randn, tensor, noGrad } from '../../lib/index.ts';

test('ChunkQueue runs every chunk exactly once, and the caller takes over a late thread\'s chunks', (t) => {
  for (const [n, late] of [[1, 0], [7, 0], [64, 0], [64, 20_000]] as const) {
    const r = native.poolCheck(n, late);
    t.deepEqual(r.runs, new Array(n).fill(1), `${n} chunks, threads ${late} us late`);
    if (late && numThreads() > 1)
      t.true(r.byCaller > Math.ceil(n / numThreads()), `caller ran ${r.byCaller} of ${n} chunks while the others were late`);
  }
  t.throws(() => native.poolCheck(0, 0), { message: /nchunks/ });
  t.throws(() => native.poolCheck(4, -1), { message: /lateUs/ });
});

const close = (t: any, got: Float32Array, want: (i: number) => number, what: string) => {
  let bad = -1;
  for (let i = 0; i < got.length; i++) if (Math.abs(got[i]! - want(i)) > 1e-6 * (1 + Math.abs(want(i)))) { bad = i; break; }
  t.is(bad, -1, `${what}: first mismatch at ${bad}`);
};

test('binary ops, where and masked_fill over long rows (cut into pieces) match elementwise loops', (t) => {
  noGrad(() => {
    // 3 x 40001 contiguous: one coalesced row of 120003 elements, not a multiple of the piece length
    const a = randn([3, 40001], { seed: 1 }), b = randn([3, 40001], { seed: 2 });
    const A = a.toArray() as Float32Array, B = b.toArray() as Float32Array;
    close(t, ops.add(a, b).toArray() as Float32Array, (i) => A[i]! + B[i]!, 'add');
    close(t, ops.mul(a, b).toArray() as Float32Array, (i) => Math.fround(A[i]! * B[i]!), 'mul');
    // broadcast over the leading dim: rows of 70001 (pieces), b's stride 0 along rows
    const c = randn([2, 70001], { seed: 3 }), d = randn([70001], { seed: 4 });
    const Cc = c.toArray() as Float32Array, D = d.toArray() as Float32Array;
    close(t, ops.sub(c, d).toArray() as Float32Array, (i) => Cc[i]! - D[i % 70001]!, 'sub, broadcast');
    // a scalar-like broadcast and a transposed (strided) operand
    const e = randn([50000, 2], { seed: 5 }), f = randn([2, 50000], { seed: 6 });
    const E = e.toArray() as Float32Array, F = f.toArray() as Float32Array;
    close(t, ops.add(e.T, f).toArray() as Float32Array, (i) => E[(i % 50000) * 2 + Math.floor(i / 50000)]! + F[i]!, 'add, transposed');
    const s = tensor([2.5]);
    close(t, ops.mul(f, s).toArray() as Float32Array, (i) => Math.fround(F[i]! * 2.5), 'mul by a broadcast scalar');
    const m = ops.gt(f, 0);
    const M = m.toArray() as Uint8Array;
    const g = randn([50000], { seed: 7 });
    const G = g.toArray() as Float32Array;
    close(t, ops.where(m, f, g).toArray() as Float32Array, (i) => (M[i] ? F[i]! : G[i % 50000]!), 'where, broadcast');
    close(t, ops.maskedFill(f, m, 7).toArray() as Float32Array, (i) => (M[i] ? 7 : F[i]!), 'maskedFill');
  });
});

test('weight gradients summed over row chunks are bit-identical from run to run (partials merged in chunk order)', (t) => {
  const x = randn([4096, 96], { seed: 11 }), gy = randn([4096, 96], { seed: 12 });
  const w = randn([96], { seed: 13 }), b = randn([96], { seed: 14 });
  w.requiresGrad = true;
  b.requiresGrad = true;
  const bitsOf = (v: Float32Array) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length)).join(',');
  let first: string | null = null;
  for (let r = 0; r < 12; r++) {
    w.grad = null;
    b.grad = null;
    const y = ops.layerNorm(x, w, b, 1e-5);
    ops.sum(ops.mul(y, gy)).backward();
    const now = bitsOf(w.grad!.toArray() as Float32Array) + '|' + bitsOf(b.grad!.toArray() as Float32Array);
    first ??= now;
    t.is(now, first, `run ${r}`);
  }
});
