// opProfile: per-op call counts and times, optionally per input shape.
import test from 'ava';
import { ops, randn, noGrad, opProfile } from '../../lib/index.ts';

test.serial('opProfile counts each op (and, byShape, each input signature)', (t) => {
  const a = randn([4, 8], { seed: 1 }), b = randn([8, 3], { seed: 2 });
  noGrad(() => {
    opProfile(true);
    for (let i = 0; i < 3; i++) ops.matmul(a, b).dispose();
    ops.relu(a).dispose();
    const rows = opProfile(false);
    t.deepEqual(rows.find((r) => r.op === 'matmul')?.calls, 3);
    t.deepEqual(rows.find((r) => r.op === 'relu')?.calls, 1);
    t.true(rows.every((r) => r.ms >= 0));
    opProfile(true, { byShape: true });
    ops.matmul(a, b).dispose();
    ops.matmul(b.T, a.T).dispose();
    const shaped = opProfile(false).map((r) => r.op).sort();
    t.deepEqual(shaped, ['matmul f32[3,8] f32[8,4]', 'matmul f32[4,8] f32[8,3]']);
    t.deepEqual(opProfile(false), []);  // off: nothing recorded
  });
});
