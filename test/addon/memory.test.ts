// Native memory management: dispose(), `using`, scope()/keep(), the FinalizationRegistry backstop, and a
// training loop whose live native memory stays flat. The counters are process-wide, so every test here is
// serial and compares against a baseline taken at its start.
import test from 'ava';
import v8 from 'node:v8';
import vm from 'node:vm';
import {
  tensor, ops, randn, zeros, scope, keep, noGrad, memoryStats, emptyCache, type Tensor,
} from '../../lib/index.ts';

const stats = () => memoryStats();

/** A GC function if one can be had: --expose-gc, or the V8 flag set at run time. */
function getGc(): (() => void) | null {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  try {
    v8.setFlagsFromString('--expose-gc');
    const fn = vm.runInNewContext('gc') as (() => void) | undefined;
    return typeof fn === 'function' ? fn : null;
  } catch {
    return null;
  }
}

const tick = () => new Promise<void>((r) => setTimeout(r, 10));

test.serial('dispose() frees the native storage and its bytes', (t) => {
  const before = stats();
  const x = randn([128, 256]);
  const mid = stats();
  t.is(mid.liveStorages, before.liveStorages + 1);
  t.true(mid.liveBytes - before.liveBytes >= 128 * 256 * 4, `liveBytes grew by ${mid.liveBytes - before.liveBytes}`);
  t.is(mid.liveTensors, before.liveTensors + 1);
  t.true(mid.peakBytes >= mid.liveBytes);
  x.dispose();
  const after = stats();
  t.is(after.liveStorages, before.liveStorages);
  t.is(after.liveBytes, before.liveBytes);
  t.is(after.liveTensors, before.liveTensors);
  t.true(x.disposed);
});

test.serial('double dispose is safe and changes nothing', (t) => {
  const before = stats();
  const x = tensor(Float32Array.from([1, 2, 3]), [3]);
  x.dispose();
  t.notThrows(() => x.dispose());
  t.notThrows(() => x[Symbol.dispose]());
  t.deepEqual(stats(), { ...stats(), liveStorages: before.liveStorages, liveBytes: before.liveBytes, liveTensors: before.liveTensors });
  t.is(String(x), 'Tensor(<disposed>)');
});

test.serial('views share storage; the storage lives until the last view is disposed', (t) => {
  const before = stats();
  const x = tensor(Float32Array.from([0, 1, 2, 3, 4, 5]), [2, 3]);
  const v = ops.transpose(x, 0, 1);
  const s = ops.slice(x, 1, 1, 3);
  t.is(stats().liveStorages, before.liveStorages + 1, 'views must not allocate');
  t.is(stats().liveTensors, before.liveTensors + 3);
  x.dispose();
  t.is(stats().liveStorages, before.liveStorages + 1, 'storage freed while views still use it');
  t.deepEqual(Array.from(v.toArray() as Float32Array), [0, 3, 1, 4, 2, 5]);
  v.dispose();
  t.deepEqual(Array.from(s.toArray() as Float32Array), [1, 2, 4, 5]);
  s.dispose();
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveBytes, before.liveBytes);
});

test.serial('dispose() also frees the accumulated gradient', (t) => {
  const before = stats();
  const x = tensor(Float32Array.from([1, 2, 3]), [3], { requiresGrad: true });
  const y = ops.mul(x, x);
  const up = tensor(Float32Array.from([1, 1, 1]), [3]);
  y.backward(up);
  t.truthy(x.grad);
  const g = x.grad!;
  t.deepEqual(Array.from(g.toArray() as Float32Array), [2, 4, 6]);
  y.dispose();
  up.dispose();
  x.dispose();
  t.true(g.disposed);
  t.is(x.grad, null);
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors);
});

test.serial('`using` disposes at the end of the block', (t) => {
  const before = stats();
  let escaped: Tensor;
  {
    using x = randn([64, 64]);
    escaped = x;
    t.is(stats().liveStorages, before.liveStorages + 1);
    t.false(x.disposed);
  }
  t.true(escaped.disposed);
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveBytes, before.liveBytes);
});

test.serial('`using` disposes when the block throws', (t) => {
  const before = stats();
  let escaped: Tensor | undefined;
  t.throws(() => {
    using x = randn([8]);
    escaped = x;
    throw new Error('boom');
  }, { message: 'boom' });
  t.true(escaped!.disposed);
  t.is(stats().liveStorages, before.liveStorages);
});

test.serial('scope() disposes intermediates and keeps the returned tensor', (t) => {
  const before = stats();
  const a = randn([4, 4]);
  let inner: Tensor[] = [];
  const r = scope(() => {
    const b = ops.exp(a);
    const c = ops.mul(b, 2);
    inner = [b, c];
    return ops.sum(c, -1);
  });
  t.true(inner.every((x) => x.disposed), 'intermediates survived the scope');
  t.false(r.disposed);
  t.false(a.disposed, 'a tensor created outside the scope was disposed');
  t.is(r.shape.join(), '4');
  t.is(stats().liveStorages, before.liveStorages + 2);
  const want = Array.from({ length: 4 }, (_, i) => {
    const row = (a.toArray() as Float32Array).slice(4 * i, 4 * i + 4);
    return row.reduce((s, v) => s + 2 * Math.exp(v), 0);
  });
  (r.toArray() as Float32Array).forEach((v, i) => t.true(Math.abs(v - want[i]!) < 1e-4 * Math.abs(want[i]!)));
  r.dispose();
  a.dispose();
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors);
});

test.serial('scope() keeps tensors returned in arrays, objects, Maps and nested containers', (t) => {
  const before = stats();
  let dropped: Tensor[] = [];
  const r = scope(() => {
    const a = randn([2]), b = randn([3]), c = randn([4]), d = randn([5]), e = randn([6]);
    dropped = [e, ops.mul(a, 2)];
    return { list: [a, b], obj: { c }, map: new Map([['d', d]]), n: 3 };
  });
  t.true(dropped.every((x) => x.disposed));
  const kept = [...r.list, r.obj.c, r.map.get('d')!];
  t.true(kept.every((x) => !x.disposed));
  t.deepEqual(kept.map((x) => x.numel), [2, 3, 4, 5]);
  t.is(stats().liveStorages, before.liveStorages + 4);
  for (const x of kept) x.dispose();
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors);
});

test.serial('keep() lets a tensor outlive its scope', (t) => {
  const before = stats();
  let k!: Tensor;
  const r = scope(() => {
    k = keep(randn([3]));
    randn([3]);
    return 1;
  });
  t.is(r, 1);
  t.false(k.disposed);
  t.is(stats().liveStorages, before.liveStorages + 1);
  k.dispose();
  t.is(stats().liveStorages, before.liveStorages);
});

test.serial('nested scopes: inner results belong to the outer scope', (t) => {
  const before = stats();
  let innerResult!: Tensor, innerTmp!: Tensor, outerTmp!: Tensor;
  const out = scope(() => {
    outerTmp = randn([3]);
    innerResult = scope(() => {
      innerTmp = ops.exp(outerTmp);
      return ops.mul(innerTmp, 2);
    });
    t.true(innerTmp.disposed, 'inner temporary survived the inner scope');
    t.false(innerResult.disposed, 'inner result disposed too early');
    t.false(outerTmp.disposed);
    return ops.add(innerResult, 1);
  });
  t.true(innerResult.disposed, 'the inner result was not adopted (and disposed) by the outer scope');
  t.true(outerTmp.disposed);
  t.false(out.disposed);
  t.is(stats().liveStorages, before.liveStorages + 1);
  out.dispose();
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors);
});

test.serial('nested scopes: a tensor returned through both scopes survives', (t) => {
  const before = stats();
  const out = scope(() => scope(() => scope(() => randn([7]))));
  t.false(out.disposed);
  t.is(out.numel, 7);
  out.dispose();
  t.is(stats().liveStorages, before.liveStorages);
});

test.serial('scope() that throws disposes everything it created and rethrows', (t) => {
  const before = stats();
  let made: Tensor[] = [];
  t.throws(
    () =>
      scope(() => {
        made = [randn([4]), zeros([4])];
        made.push(ops.add(made[0]!, made[1]!));
        scope(() => {
          made.push(randn([5]));
          throw new RangeError('inner failure');
        });
      }),
    { instanceOf: RangeError, message: 'inner failure' },
  );
  t.true(made.every((x) => x.disposed));
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors);
  // and scopes still work afterwards (the scope stack was unwound)
  const r = scope(() => randn([2]));
  const tmp = randn([2]);
  t.false(r.disposed);
  t.false(tmp.disposed, 'a tensor created after a failed scope was captured by a stale scope');
  r.dispose();
  tmp.dispose();
  t.is(stats().liveStorages, before.liveStorages);
});

test.serial('scope() that throws from a library error disposes everything', (t) => {
  const before = stats();
  t.throws(() =>
    scope(() => {
      const a = randn([2, 3]);
      const b = randn([4, 5]);
      return ops.matmul(a, b);
    }),
  );
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors);
});

test.serial('async scope() disposes after the promise settles', async (t) => {
  const before = stats();
  let tmp!: Tensor;
  const r = await scope(async () => {
    tmp = randn([3]);
    const y = ops.mul(tmp, 3);
    await tick();
    return y;
  });
  t.true(tmp.disposed);
  t.false(r.disposed);
  r.dispose();
  t.is(stats().liveStorages, before.liveStorages);
});

test.serial('backward frees the tape\'s saved intermediates (norm statistics, softmax lse)', (t) => {
  const before = stats();
  const x = randn([4, 8], { requiresGrad: true });
  const w = randn([3, 8], { requiresGrad: true });
  const tgt = tensor(BigInt64Array.from([0n, 2n, 1n, 1n]), [4], { dtype: 'i64' });
  // every intermediate is disposed by hand, after backward (no scope, no sum/mean)
  const a = ops.rmsNorm(x);
  const b = ops.layerNorm(a);
  const c = ops.linear(b, w);
  const d = ops.logSoftmax(c, -1);
  const e = ops.softmax(d, -1);
  const loss = ops.crossEntropy(e, tgt);
  const mid = stats();
  loss.backward();
  t.true(stats().liveStorages <= mid.liveStorages + 2, 'backward kept more than the two leaf gradients');
  for (const z of [a, b, c, d, e, loss]) z.dispose();
  t.truthy(x.grad);
  t.truthy(w.grad);
  for (const z of [x, w, tgt]) z.dispose();
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveBytes, before.liveBytes);
  t.is(stats().liveTensors, before.liveTensors);
});

test.serial('sum/mean backward leave nothing behind once the user disposes their tensors', (t) => {
  const before = stats();
  const x = randn([3, 4], { requiresGrad: true });
  const s1 = ops.sum(x, 1);
  const s2 = ops.mean(s1);
  s2.backward();
  for (const z of [s1, s2, x]) z.dispose();
  t.is(stats().liveStorages, before.liveStorages, 'storages leaked by sum/mean backward');
  t.is(stats().liveTensors, before.liveTensors, 'tensors leaked by sum/mean backward');
});

test.serial('mseLoss leaves nothing behind once the user disposes its result', (t) => {
  const before = stats();
  const a = randn([3, 4]);
  const b = randn([3, 4]);
  for (const reduction of ['mean', 'sum', 'none'] as const) ops.mseLoss(a, b, { reduction }).dispose();
  a.dispose();
  b.dispose();
  t.is(stats().liveStorages, before.liveStorages, 'storages leaked by mseLoss');
  t.is(stats().liveTensors, before.liveTensors, 'tensors leaked by mseLoss');
});

test.serial('emptyCache() returns pooled memory', (t) => {
  const x = randn([256, 256]);
  x.dispose();
  t.true(stats().pooledBytes > 0, 'a freed storage should be pooled');
  emptyCache();
  t.is(stats().pooledBytes, 0);
});

test.serial('FinalizationRegistry backstop frees tensors that were never disposed', async (t) => {
  const gc = getGc();
  if (!gc) {
    t.log('global.gc is not available (run node with --expose-gc): skipped');
    t.pass();
    return;
  }
  gc();
  await tick();
  const before = stats();
  const make = () => {
    for (let i = 0; i < 200; i++) {
      const x = randn([64]);
      ops.mul(x, 2); // result dropped too
    }
  };
  make();
  const mid = stats();
  t.true(mid.liveStorages >= before.liveStorages + 400, `expected 400 live storages, got ${mid.liveStorages - before.liveStorages}`);
  for (let i = 0; i < 10 && stats().liveStorages > before.liveStorages; i++) {
    gc();
    await tick();
  }
  const after = stats();
  t.true(after.liveStorages <= before.liveStorages, `${after.liveStorages - before.liveStorages} storages still live after GC`);
  t.true(after.liveBytes <= before.liveBytes);
});

test.serial('memoryStats().liveTensors drops when forgotten tensors are collected', async (t) => {
  // "Number of Tensor objects not yet disposed (GC'd tensors included until collected)"
  const gc = getGc();
  if (!gc) {
    t.log('global.gc is not available: skipped');
    t.pass();
    return;
  }
  gc();
  await tick();
  const before = stats();
  (() => {
    for (let i = 0; i < 100; i++) randn([16]);
  })();
  for (let i = 0; i < 10 && stats().liveStorages > before.liveStorages; i++) {
    gc();
    await tick();
  }
  t.is(stats().liveStorages, before.liveStorages);
  t.is(stats().liveTensors, before.liveTensors, 'liveTensors still counts tensors the GC has collected');
});

// ---- a short training loop: live memory must be flat after warm-up ----

function trainLoop(t: import('ava').ExecutionContext, steps: number, useScope: boolean): number[][] {
  const rng = randn([16, 4], { seed: 1 });
  const xData = rng.toArray() as Float32Array;
  rng.dispose();
  const x = tensor(xData, [16, 4]);
  const yData = Float32Array.from({ length: 16 }, (_, i) => Math.sin(xData[4 * i]!) + 0.5 * xData[4 * i + 1]!);
  const y = tensor(yData, [16, 1]);
  let params: Tensor[] = [
    randn([8, 4], { seed: 2, std: 0.5, requiresGrad: true }),
    zeros([8], { requiresGrad: true }),
    randn([1, 8], { seed: 3, std: 0.5, requiresGrad: true }),
    zeros([1], { requiresGrad: true }),
  ];
  const lr = 0.05;
  const snapshots: number[][] = [];
  const losses: number[] = [];
  const step = (): Tensor[] => {
    const [w1, b1, w2, b2] = params as [Tensor, Tensor, Tensor, Tensor];
    if (useScope) {
      return scope(() => {
        const loss = ops.mseLoss(ops.linear(ops.gelu(ops.linear(x, w1, b1)), w2, b2), y);
        loss.backward();
        losses.push(loss.item());
        return noGrad(() => params.map((p) => p.sub(p.grad!.mul(lr))));
      });
    }
    // manual disposal of every intermediate
    const h = ops.linear(x, w1, b1);
    const a = ops.gelu(h);
    const o = ops.linear(a, w2, b2);
    const loss = ops.mseLoss(o, y);
    loss.backward();
    losses.push(loss.item());
    for (const z of [h, a, o, loss]) z.dispose();
    return noGrad(() =>
      params.map((p) => {
        const d = p.grad!.mul(lr);
        const n = p.sub(d);
        d.dispose();
        return n;
      }),
    );
  };
  for (let s = 1; s <= steps; s++) {
    const next = step();
    for (const p of params) p.dispose();
    params = next.map((p) => p.requiresGrad_(true));
    if (s === 50 || s === steps) {
      const m = stats();
      snapshots.push([m.liveStorages, m.liveBytes, m.liveTensors]);
    }
  }
  t.true(losses[losses.length - 1]! < losses[0]! * 0.5, `loss did not decrease: ${losses[0]} -> ${losses[losses.length - 1]}`);
  for (const p of [...params, x, y]) p.dispose();
  return snapshots;
}

test.serial('training loop (scope): live storages/bytes/tensors flat from step 50 to step 300', (t) => {
  const before = stats();
  const [s50, s300] = trainLoop(t, 300, true);
  t.deepEqual(s300, s50, '[liveStorages, liveBytes, liveTensors] at step 300 vs step 50');
  const after = stats();
  t.is(after.liveStorages, before.liveStorages);
  t.is(after.liveTensors, before.liveTensors);
});

test.serial('training loop (manual dispose): live storages/bytes/tensors flat from step 50 to step 300', (t) => {
  const before = stats();
  const [s50, s300] = trainLoop(t, 300, false);
  t.deepEqual(s300, s50, '[liveStorages, liveBytes, liveTensors] at step 300 vs step 50');
  const after = stats();
  t.is(after.liveStorages, before.liveStorages);
  t.is(after.liveTensors, before.liveTensors);
});

// Tensor bytes are reported to V8 as external memory (GC pressure for forgotten tensors), but at most 256 MiB at
// once: past V8's external limit every further report starts a full GC, and a training step holds gigabytes.
test.serial('V8 is told of live tensor bytes up to 256 MiB at a time, and of their release on dispose', (t) => {
  const rep = () => stats().reportedToV8Bytes;
  const MiB = 2 ** 20, base = rep();
  t.true(base <= 256 * MiB, `reported ${base} before the test`);
  const small = zeros([16, 1 << 20]);  // 64 MiB
  const room = 256 * MiB - base;
  t.is(rep() - base, Math.min(64 * MiB, room), '64 MiB tensor');
  const big = Array.from({ length: 6 }, () => zeros([16, 1 << 20]));  // 384 MiB more
  t.is(rep(), 256 * MiB, '448 MiB live: the report stops at the cap');
  for (const b of big) b.dispose();
  small.dispose();
  t.is(rep(), base, 'after dispose');
});
