// Capability queries: the op table, per-device support, CPU feature detection, thread count.
import test from 'ava';
import { opNames, supportsOp, cpuInfo, hasCuda, numThreads, setNumThreads, ops, randn, noGrad } from '../../lib/index.ts';

test('the op table lists every native op, each with a CPU kernel', (t) => {
  const names = opNames();
  t.true(names.length >= 70, `only ${names.length} ops`);
  for (const n of ['matmul', 'linear', 'attention', 'attention_bwd', 'layer_norm_bwd', 'cross_entropy_bwd', 'rope', 'dropout'])
    t.true(names.includes(n), n);
  for (const n of names) t.true(supportsOp(n, 'cpu'), n);
  t.false(supportsOp('no_such_op', 'cpu'));
});

test('no CUDA kernels are claimed without a usable GPU', (t) => {
  if (hasCuda()) return t.pass('a GPU is present; covered by test/cuda');
  for (const n of opNames()) t.false(supportsOp(n, 'cuda'), n);
});

test('CPU features and kernel choice are consistent', (t) => {
  const f = cpuInfo();
  if (f.avx512f) t.is(f.sgemm, 'avx512');
  else if (f.avx2 && f.fma) t.is(f.sgemm, 'avx2');
  else t.is(f.sgemm, 'scalar');
  if (!f.avx512bf16 && !f.amxBf16) t.is(f.bgemm, 'f32');
});

test.serial('results do not depend on the thread count', (t) => {
  const n0 = numThreads();
  const run = () =>
    noGrad(() => {
      const a = randn([67, 130], { seed: 5 }), b = randn([130, 91], { seed: 6 });
      const y = ops.softmax(ops.matmul(a, b), -1);
      const s = ops.sum(ops.gelu(y), 0);
      return Array.from(s.toArray() as Float32Array);
    });
  const base = run();
  try {
    setNumThreads(1);
    const one = run();
    setNumThreads(3);
    const three = run();
    for (let i = 0; i < base.length; i++) {
      t.true(Math.abs(one[i]! - base[i]!) <= 1e-6 * Math.max(1, Math.abs(base[i]!)), `1 thread, ${i}`);
      t.true(Math.abs(three[i]! - base[i]!) <= 1e-6 * Math.max(1, Math.abs(base[i]!)), `3 threads, ${i}`);
    }
  } finally {
    setNumThreads(n0);
  }
});
