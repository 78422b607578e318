// Tensor methods (PyTorch's names, camelCase) give exactly what the ops.* functions give, gradients included.
import test from 'ava';
import { ops, randn, tensor, scope, type Tensor } from '../../lib/index.ts';

const arr = (t: Tensor | Tensor[]) => (Array.isArray(t) ? t.map((x) => Array.from(x.toArray() as Float32Array)) : Array.from(t.toArray() as Float32Array));

test('every forwarding method equals its ops.* function (values and shapes)', (t) => {
  scope(() => {
    const x = randn([3, 4], { seed: 1 }), y = randn([3, 4], { seed: 2 }), p = ops.add(ops.abs(x), 0.5);
    const idx = tensor(BigInt64Array.from([2n, 0n]), [2], { dtype: 'i64' });
    const gi = tensor(BigInt64Array.from([0n, 3n, 1n, 1n, 2n, 0n]), [3, 2], { dtype: 'i64' });
    const cond = tensor(Uint8Array.from([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]), [3, 4], { dtype: 'bool' });
    const pairs: [string, Tensor | Tensor[], Tensor | Tensor[]][] = [
      ['add', x.add(y), ops.add(x, y)], ['sub', x.sub(2), ops.sub(x, 2)], ['mul', x.mul(y), ops.mul(x, y)], ['div', x.div(p), ops.div(x, p)],
      ['neg', x.neg(), ops.neg(x)], ['exp', x.exp(), ops.exp(x)], ['log', p.log(), ops.log(p)], ['sqrt', p.sqrt(), ops.sqrt(p)],
      ['rsqrt', p.rsqrt(), ops.rsqrt(p)], ['abs', x.abs(), ops.abs(x)], ['pow', p.pow(1.5), ops.pow(p, 1.5)],
      ['tanh', x.tanh(), ops.tanh(x)], ['sigmoid', x.sigmoid(), ops.sigmoid(x)], ['relu', x.relu(), ops.relu(x)],
      ['gelu', x.gelu(), ops.gelu(x)], ['gelu tanh', x.gelu({ approximate: 'tanh' }), ops.gelu(x, { approximate: 'tanh' })],
      ['silu', x.silu(), ops.silu(x)], ['clamp', x.clamp(-0.5, 0.5), ops.clamp(x, -0.5, 0.5)], ['clamp max', x.clamp(null, 0), ops.clamp(x, null, 0)],
      ['matmul', x.matmul(y.T), ops.matmul(x, ops.transpose(y, 0, 1))], ['sum', x.sum(1), ops.sum(x, 1)], ['mean', x.mean(), ops.mean(x)],
      ['max', x.max(0), ops.max(x, 0)], ['softmax', x.softmax(-1), ops.softmax(x, -1)], ['logSoftmax', x.logSoftmax(0), ops.logSoftmax(x, 0)],
      ['reshape', x.reshape(2, 6), ops.reshape(x, [2, 6])], ['view', x.view([4, 3]), ops.reshape(x, [4, 3])], ['flatten', x.flatten(), ops.flatten(x)],
      ['transpose', x.transpose(0, 1), ops.transpose(x, 0, 1)], ['T', x.T, ops.transpose(x, -2, -1)], ['mT', x.mT, ops.transpose(x, -2, -1)],
      ['permute', x.permute(1, 0), ops.permute(x, [1, 0])], ['unsqueeze', x.unsqueeze(1), ops.unsqueeze(x, 1)],
      ['squeeze', x.unsqueeze(0).squeeze(0), x], ['expand', x.unsqueeze(0).expand(2, 3, 4), ops.expand(ops.unsqueeze(x, 0), [2, 3, 4])],
      ['slice', x.slice(1, 1, 4, 2), ops.slice(x, 1, 1, 4, 2)], ['narrow', x.narrow(1, 1, 2), ops.narrow(x, 1, 1, 2)],
      ['split', x.split([1, 3], 1), ops.split(x, [1, 3], 1)], ['chunk', x.chunk(2, 1), ops.chunk(x, 2, 1)],
      ['indexSelect', x.indexSelect(0, idx), ops.indexSelect(x, 0, idx)], ['gather', x.gather(1, gi), ops.gather(x, 1, gi)],
      ['maskedFill', x.maskedFill(cond, 3), ops.maskedFill(x, cond, 3)], ['where', x.where(cond, -1), ops.where(cond, x, -1)],
      ['contiguous', x.T.contiguous(), ops.contiguous(ops.transpose(x, 0, 1))], ['clone', x.clone(), x],
    ];
    for (const [name, got, want] of pairs) {
      const shape = (v: Tensor | Tensor[]) => (Array.isArray(v) ? v.map((z) => z.shape) : v.shape);
      t.deepEqual(shape(got), shape(want), name);
      t.deepEqual(arr(got), arr(want), name);
    }
    // narrow as torch's: a negative start counts from the end; slice's null start / end mean the ends
    t.deepEqual(arr(x.narrow(1, -2, 2)), arr(ops.slice(x, 1, 2, 4)));
    t.deepEqual(arr(ops.slice(x, 0, null, null)), arr(x));
    t.is(x.dim(), 2);
    t.is(x.unsqueeze(0).dim(), 3);
  });
});

test('methods record the tape like the functions: x.where(c, y).gelu().clamp(...) backward', (t) => {
  scope(() => {
    const cond = tensor(Uint8Array.from([1, 0, 1, 0]), [4], { dtype: 'bool' });
    const grads = [true, false].map((useMethods) => {
      const x = tensor(Float32Array.from([0.3, -1.2, 2, 0.7]), [4], { requiresGrad: true });
      const y = tensor(Float32Array.from([1, 0.5, -0.25, 2]), [4], { requiresGrad: true });
      const out = useMethods ? x.where(cond, y).gelu().clamp(-1, 1.5).silu().sum() : ops.sum(ops.silu(ops.clamp(ops.gelu(ops.where(cond, x, y)), -1, 1.5)));
      out.backward();
      return [arr(x.grad!), arr(y.grad!)];
    });
    t.deepEqual(grads[0], grads[1]);
    t.true((grads[0]![0] as number[]).some((v) => v !== 0) && (grads[0]![1] as number[]).some((v) => v !== 0));
  });
});
