// Typed errors: every bad input surfaces as the right AdaptersError subclass, with a message that names the
// op and the offending shapes / dtypes / indices, leaks no native memory, and leaves the library usable.
// Also: malformed arguments passed straight to the native addon throw instead of crashing the process.
import test, { type ExecutionContext } from 'ava';
import {
  tensor, ops, randn, zeros, memoryStats, type Tensor,
  AdaptersError, ShapeError, DTypeError, IndexError, DisposedError, ValueError, AutogradError,
} from '../../lib/index.ts';
import { native } from '../../lib/binding.ts';

type ErrorClass = new (m: string) => AdaptersError;
const f32 = (shape: number[]) => randn(shape, { seed: 11 });
const i64 = (data: number[], shape = [data.length]) => tensor(BigInt64Array.from(data.map(BigInt)), shape, { dtype: 'i64' });

/** Shapes are printed as "[2, 3]" by the addon and "[2,3]" by the TS layer: compare without blanks. */
const squash = (s: string) => s.replace(/\s+/g, '');

/** A small op that must still work after an error. */
function assertUsable(t: ExecutionContext): void {
  const a = tensor(Float32Array.from([1, 2, 3]), [3]);
  const b = tensor(Float32Array.from([10, 20, 30]), [3]);
  const c = ops.add(a, b);
  t.deepEqual(Array.from(c.toArray() as Float32Array), [11, 22, 33], 'library unusable after the error');
  for (const x of [a, b, c]) x.dispose();
}

/**
 * Asserts fn throws `cls` (an AdaptersError), that the message contains every part (strings compared
 * without whitespace; RegExps tested as is), that native memory did not grow, and that ops still work.
 * The inputs are built by `setup` before measuring memory and disposed afterwards.
 */
function expectError<S extends unknown[]>(
  t: ExecutionContext,
  setup: () => S,
  fn: (...s: S) => unknown,
  cls: ErrorClass,
  parts: (string | RegExp)[],
): void {
  const inputs = setup();
  const before = memoryStats();
  const err = t.throws(() => fn(...inputs), { instanceOf: cls });
  if (err) {
    t.true(err instanceof AdaptersError, 'not an AdaptersError');
    t.is((err as AdaptersError).code, cls.name, 'error code');
    for (const p of parts) {
      if (typeof p === 'string') t.true(squash(err.message).includes(squash(p)), `message ${JSON.stringify(err.message)} does not mention ${JSON.stringify(p)}`);
      else t.regex(err.message, p);
    }
  }
  const after = memoryStats();
  t.is(after.liveStorages, before.liveStorages, 'native storages leaked by the failing call');
  t.is(after.liveBytes, before.liveBytes, 'native bytes leaked by the failing call');
  for (const x of (inputs as unknown[]).flat(2)) if (x && typeof x === 'object' && 'dispose' in x) (x as Tensor).dispose();
  assertUsable(t);
}

interface ErrCase {
  name: string;
  cls: ErrorClass;
  setup: () => unknown[];
  fn: (...s: any[]) => unknown;
  parts: (string | RegExp)[];
}

const CASES: ErrCase[] = [
  // ---- ShapeError ----
  { name: 'add: non-broadcastable shapes', cls: ShapeError, setup: () => [f32([2, 3]), f32([4, 3])], fn: (a, b) => ops.add(a, b), parts: ['add', '[2, 3]', '[4, 3]'] },
  { name: 'mul (method): non-broadcastable shapes', cls: ShapeError, setup: () => [f32([2, 3, 4]), f32([3, 5])], fn: (a, b) => a.mul(b), parts: ['mul', '[2, 3, 4]', '[3, 5]'] },
  { name: 'matmul: inner-dim mismatch', cls: ShapeError, setup: () => [f32([2, 3]), f32([4, 5])], fn: (a, b) => ops.matmul(a, b), parts: ['matmul', '[2, 3]', '[4, 5]'] },
  { name: 'matmul: batched inner-dim mismatch', cls: ShapeError, setup: () => [f32([2, 2, 3]), f32([2, 4, 5])], fn: (a, b) => ops.matmul(a, b), parts: ['matmul', '[2, 2, 3]', '[2, 4, 5]'] },
  // (the message names the batch shapes that fail to broadcast)
  { name: 'matmul: non-broadcastable batch dims', cls: ShapeError, setup: () => [f32([2, 2, 3]), f32([3, 3, 5])], fn: (a, b) => ops.matmul(a, b), parts: ['matmul', '[2]', '[3]', 'broadcast'] },
  { name: 'matmul: 1-D inner mismatch', cls: ShapeError, setup: () => [f32([3]), f32([4])], fn: (a, b) => ops.matmul(a, b), parts: ['matmul'] },
  { name: 'matmul: 0-d operand', cls: ShapeError, setup: () => [f32([]), f32([4])], fn: (a, b) => ops.matmul(a, b), parts: ['matmul', '[]', '[4]'] },
  { name: 'reshape: wrong element count', cls: ShapeError, setup: () => [f32([2, 3])], fn: (a) => ops.reshape(a, [4, 2]), parts: ['reshape', '[4, 2]', '[2, 3]'] },
  { name: 'reshape: -1 cannot be inferred', cls: ShapeError, setup: () => [f32([2, 3])], fn: (a) => a.reshape(-1, 4), parts: ['reshape', '[-1, 4]', '[2, 3]'] },
  { name: 'reshape: two -1', cls: ShapeError, setup: () => [f32([2, 3])], fn: (a) => ops.reshape(a, [-1, -1]), parts: ['reshape', '[-1, -1]'] },
  { name: 'view: non-contiguous input', cls: ShapeError, setup: () => [f32([2, 3])], fn: (a) => ops.transpose(a, 0, 1).view(6), parts: ['view', '[3, 2]'] },
  { name: 'expand: incompatible target', cls: ShapeError, setup: () => [f32([2, 3])], fn: (a) => ops.expand(a, [4, 3]), parts: ['expand', '[2, 3]', '[4, 3]'] },
  { name: 'permute: wrong number of dims', cls: ShapeError, setup: () => [f32([2, 3])], fn: (a) => ops.permute(a, [0]), parts: ['permute', '1', '2-d'] },
  { name: 'split: sizes do not sum to the dim', cls: ShapeError, setup: () => [f32([5])], fn: (a) => ops.split(a, [2, 2]), parts: ['split', '[2, 2]', '5'] },
  { name: 'tensor(): typed array with wrong element count', cls: ShapeError, setup: () => [], fn: () => tensor(new Float32Array(5), [2, 3]), parts: ['tensor', '5', '[2, 3]'] },
  { name: 'tensor(): nested array with wrong element count', cls: ShapeError, setup: () => [], fn: () => tensor([[1, 2], [3, 4]], [3]), parts: ['tensor', '4', '[3]'] },
  { name: 'tensor(): ragged nested array (short row)', cls: ShapeError, setup: () => [], fn: () => tensor([[1, 2], [3]]), parts: ['tensor', 'ragged', 'data[1]', '2', '1'] },
  { name: 'tensor(): ragged nested array (number vs row)', cls: ShapeError, setup: () => [], fn: () => tensor([[1, 2], 3] as never), parts: ['tensor', 'ragged', 'data[1]'] },
  { name: 'tensor(): negative dimension', cls: ShapeError, setup: () => [], fn: () => tensor(new Float32Array(6), [2, -3]), parts: ['tensor', '-3'] },
  { name: 'layerNorm: weight shape', cls: ShapeError, setup: () => [f32([2, 4]), f32([3]), f32([4])], fn: (x, w, b) => ops.layerNorm(x, w, b), parts: [/layer_?norm/i, 'weight', '[4]', '[3]'] },
  { name: 'layerNorm: bias shape', cls: ShapeError, setup: () => [f32([2, 4]), f32([4]), f32([5])], fn: (x, w, b) => ops.layerNorm(x, w, b), parts: [/layer_?norm/i, 'bias', '[4]', '[5]'] },
  { name: 'rmsNorm: weight shape', cls: ShapeError, setup: () => [f32([2, 4]), f32([3])], fn: (x, w) => ops.rmsNorm(x, w), parts: [/rms_?norm/i, 'weight', '[4]', '[3]'] },
  { name: 'linear: input/weight mismatch', cls: ShapeError, setup: () => [f32([2, 4]), f32([5, 3])], fn: (x, w) => ops.linear(x, w), parts: ['linear', '[2, 4]', '[5, 3]'] },
  { name: 'linear: conv1d layout mismatch', cls: ShapeError, setup: () => [f32([2, 4]), f32([5, 4])], fn: (x, w) => ops.linear(x, w, null, { layout: 'conv1d' }), parts: ['linear', '[2, 4]', '[5, 4]', 'conv1d'] },
  { name: 'linear: bias shape', cls: ShapeError, setup: () => [f32([2, 4]), f32([5, 4]), f32([3])], fn: (x, w, b) => ops.linear(x, w, b), parts: ['linear', 'bias', '[5]', '[3]'] },
  { name: 'concat: mismatched non-concat dim', cls: ShapeError, setup: () => [f32([2, 3]), f32([3, 4])], fn: (a, b) => ops.concat([a, b], 0), parts: [/cat/, '[3, 4]', '[2, 3]'] },
  { name: 'concat: different ranks', cls: ShapeError, setup: () => [f32([2, 3]), f32([3])], fn: (a, b) => ops.concat([a, b], 0), parts: [/cat/, '[3]', '[2, 3]'] },
  { name: 'crossEntropy: targets shape', cls: ShapeError, setup: () => [f32([3, 5]), i64([0, 1, 2, 3])], fn: (x, y) => ops.crossEntropy(x, y), parts: ['crossEntropy', '[4]', '[3]', '[3, 5]'] },
  { name: 'crossEntropy: 1-D logits', cls: ShapeError, setup: () => [f32([3]), i64([0, 1, 2])], fn: (x, y) => ops.crossEntropy(x, y), parts: ['crossEntropy', '[3]'] },
  { name: 'attention: q/k head dim mismatch', cls: ShapeError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 5, 8]), f32([1, 2, 5, 8])], fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v), parts: ['attention', '[1, 2, 3, 4]', '[1, 2, 5, 8]'] },
  { name: 'attention: k/v length mismatch', cls: ShapeError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 5, 4]), f32([1, 2, 6, 4])], fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v), parts: ['attention', '[1, 2, 5, 4]', '[1, 2, 6, 4]'] },
  { name: 'attention: heads not a multiple of kv heads', cls: ShapeError, setup: () => [f32([1, 3, 3, 4]), f32([1, 2, 5, 4]), f32([1, 2, 5, 4])], fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v), parts: ['attention', '3', '2'] },
  { name: 'attention: 3-D inputs', cls: ShapeError, setup: () => [f32([2, 3, 4]), f32([2, 5, 4]), f32([2, 5, 4])], fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v), parts: ['attention', '4-D', '[2, 3, 4]'] },
  { name: 'attention: mask not broadcastable', cls: ShapeError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 5, 4]), f32([1, 2, 5, 4]), f32([1, 1, 3, 4])], fn: (q, k, v, m) => ops.scaledDotProductAttention(q, k, v, { mask: m }), parts: ['attention', '[1, 1, 3, 4]'] },
  { name: 'attention: key padding mask shape', cls: ShapeError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 5, 4]), f32([1, 2, 5, 4]), tensor([[true, true, false]])], fn: (q, k, v, m) => ops.scaledDotProductAttention(q, k, v, { keyPaddingMask: m }), parts: ['attention', '[1, 3]', '[1, 5]'] },
  { name: 'rope: table shape', cls: ShapeError, setup: () => [f32([2, 3, 4]), f32([2, 4]), f32([2, 4])], fn: (x, c, s) => ops.rope(x, c, s), parts: ['rope', '[2, 4]', '[2, 3, 4]'] },
  { name: 'where: non-broadcastable', cls: ShapeError, setup: () => [tensor([true, false, true]), f32([2]), f32([2])], fn: (c, a, b) => ops.where(c, a, b), parts: ['where', '[3]', '[2]'] },
  { name: 'gather: index rank', cls: ShapeError, setup: () => [f32([2, 2]), i64([0, 1, 0])], fn: (x, i) => ops.gather(x, 1, i), parts: ['gather', '[3]', '[2, 2]'] },
  { name: 'indexSelect: 2-D index', cls: ShapeError, setup: () => [f32([2, 2]), i64([0, 1, 0, 1], [2, 2])], fn: (x, i) => ops.indexSelect(x, 0, i), parts: [/index_?select/i, '[2, 2]'] },
  { name: 'embedding: 1-D weight', cls: ShapeError, setup: () => [i64([0, 1]), f32([4])], fn: (i, w) => ops.embedding(i, w), parts: ['embedding', '[4]'] },
  { name: 'item(): more than one element', cls: ShapeError, setup: () => [f32([2])], fn: (x) => x.item(), parts: ['item', '[2]'] },
  // ---- DTypeError ----
  { name: 'matmul: f32 @ bf16', cls: DTypeError, setup: () => [f32([2, 3]), f32([3, 4]).to('bf16')], fn: (a, b) => ops.matmul(a, b), parts: ['matmul', 'f32', 'bf16'] },
  { name: 'embedding: float ids', cls: DTypeError, setup: () => [f32([3]), f32([5, 4])], fn: (i, w) => ops.embedding(i, w), parts: ['embedding', 'ids', 'f32'] },
  { name: 'crossEntropy: float targets', cls: DTypeError, setup: () => [f32([3, 5]), f32([3])], fn: (x, y) => ops.crossEntropy(x, y), parts: [/cross_?entropy/i, 'targets', 'f32'] },
  { name: 'gather: float index', cls: DTypeError, setup: () => [f32([2, 2]), f32([2, 2])], fn: (x, i) => ops.gather(x, 1, i), parts: ['gather', 'index', 'f32'] },
  { name: 'where: float condition', cls: DTypeError, setup: () => [f32([2]), f32([2]), f32([2])], fn: (c, a, b) => ops.where(c, a, b), parts: ['where', 'condition', 'f32'] },
  { name: 'maskedFill: float mask', cls: DTypeError, setup: () => [f32([2]), f32([2])], fn: (x, m) => ops.maskedFill(x, m, 0), parts: [/masked_?fill/i, 'mask', 'f32'] },
  { name: 'softmax: integer input', cls: DTypeError, setup: () => [tensor(new Int32Array([1, 2]), [2])], fn: (x) => ops.softmax(x, 0), parts: ['softmax', 'i32'] },
  { name: 'layerNorm: integer input', cls: DTypeError, setup: () => [tensor(new Int32Array(4), [2, 2])], fn: (x) => ops.layerNorm(x), parts: ['layerNorm', 'i32'] },
  { name: 'tensor(): unknown dtype name', cls: DTypeError, setup: () => [], fn: () => tensor([1, 2], undefined, { dtype: 'f64' as never }), parts: ['tensor', "'f64'"] },
  { name: 'Tensor.to(): unknown dtype name', cls: DTypeError, setup: () => [f32([2])], fn: (x) => x.to('float64' as never), parts: [/to|cast/, "'float64'"] },
  { name: 'zeros(): unknown dtype name', cls: DTypeError, setup: () => [], fn: () => zeros([2], { dtype: 'f64' as never }), parts: [/zeros|full/, "'f64'"] },
  { name: 'requiresGrad on an integer tensor', cls: DTypeError, setup: () => [], fn: () => tensor(new Int32Array([1]), [1], { requiresGrad: true }), parts: [/grad/i, 'i32'] },
  // ---- IndexError ----
  { name: 'embedding: id out of range', cls: IndexError, setup: () => [i64([0, 5]), f32([5, 4])], fn: (i, w) => ops.embedding(i, w), parts: ['embedding', '5', '[0, 5)'] },
  { name: 'embedding: negative id', cls: IndexError, setup: () => [i64([-1]), f32([5, 4])], fn: (i, w) => ops.embedding(i, w), parts: ['embedding', '-1', '[0, 5)'] },
  { name: 'embedding: i32 id out of range', cls: IndexError, setup: () => [tensor(new Int32Array([7]), [1]), f32([5, 4])], fn: (i, w) => ops.embedding(i, w), parts: ['embedding', '7', '[0, 5)'] },
  { name: 'gather: index out of range', cls: IndexError, setup: () => [f32([2, 3]), i64([0, 3, 1, 1], [2, 2])], fn: (x, i) => ops.gather(x, 1, i), parts: ['gather', '3', '[0, 3)'] },
  { name: 'gather: negative index', cls: IndexError, setup: () => [f32([2, 3]), i64([-1, 0], [2, 1])], fn: (x, i) => ops.gather(x, 1, i), parts: ['gather', '-1', '[0, 3)'] },
  { name: 'indexSelect: index out of range', cls: IndexError, setup: () => [f32([4, 3]), i64([0, 4])], fn: (x, i) => ops.indexSelect(x, 0, i), parts: [/index_?select/i, '4', '[0, 4)'] },
  { name: 'indexSelect: negative index', cls: IndexError, setup: () => [f32([4, 3]), i64([-1])], fn: (x, i) => ops.indexSelect(x, 0, i), parts: [/index_?select/i, '-1'] },
  { name: 'crossEntropy: target out of range', cls: IndexError, setup: () => [f32([3, 5]), i64([0, 5, 1])], fn: (x, y) => ops.crossEntropy(x, y), parts: [/cross_?entropy/i, 'target 5', '[0, 5)'] },
  { name: 'crossEntropy: negative target (not ignoreIndex)', cls: IndexError, setup: () => [f32([3, 5]), i64([0, -3, 1])], fn: (x, y) => ops.crossEntropy(x, y), parts: [/cross_?entropy/i, '-3'] },
  { name: 'sum: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.sum(x, 2), parts: ['sum', 'dimension 2', '2-d'] },
  { name: 'mean: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.mean(x, -3), parts: ['mean', 'dimension -3', '2-d'] },
  { name: 'softmax: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.softmax(x, -3), parts: ['softmax', 'dimension -3', '2-d'] },
  { name: 'transpose: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.transpose(x, 0, 5), parts: ['transpose', 'dimension 5', '2-d'] },
  { name: 'unsqueeze: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.unsqueeze(x, 4), parts: ['unsqueeze', 'dimension 4'] },
  { name: 'max: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.max(x, 2), parts: ['max', 'dimension 2'] },
  { name: 'concat: dim out of range', cls: IndexError, setup: () => [f32([2, 3])], fn: (x) => ops.concat([x, x], 2), parts: ['concat', 'dimension 2'] },
  { name: 'gather: dim out of range', cls: IndexError, setup: () => [f32([2, 3]), i64([0, 1], [2, 1])], fn: (x, i) => ops.gather(x, 3, i), parts: ['gather', 'dimension 3'] },
  // ---- ValueError ----
  { name: 'dropout: p > 1', cls: ValueError, setup: () => [f32([2])], fn: (x) => ops.dropout(x, 1.5), parts: ['dropout', '1.5'] },
  { name: 'dropout: p < 0', cls: ValueError, setup: () => [f32([2])], fn: (x) => ops.dropout(x, -0.1), parts: ['dropout', '-0.1'] },
  { name: 'dropout: p NaN', cls: ValueError, setup: () => [f32([2])], fn: (x) => ops.dropout(x, NaN), parts: ['dropout', 'NaN'] },
  { name: 'crossEntropy: bad reduction', cls: ValueError, setup: () => [f32([3, 5]), i64([0, 1, 1])], fn: (x, y) => ops.crossEntropy(x, y, { reduction: 'avg' as never }), parts: ['crossEntropy', "'avg'"] },
  { name: 'crossEntropy: labelSmoothing > 1', cls: ValueError, setup: () => [f32([3, 5]), i64([0, 1, 1])], fn: (x, y) => ops.crossEntropy(x, y, { labelSmoothing: 2 }), parts: [/cross_?entropy/i, /smoothing/i] },
  { name: 'mseLoss: bad reduction', cls: ValueError, setup: () => [f32([3]), f32([3])], fn: (a, b) => ops.mseLoss(a, b, { reduction: 'avg' as never }), parts: ['mseLoss', "'avg'"] },
  { name: "gelu: approximate 'foo'", cls: ValueError, setup: () => [f32([3])], fn: (x) => ops.gelu(x, { approximate: 'foo' as never }), parts: ['gelu', "'foo'"] },
  { name: 'slice: step 0', cls: ValueError, setup: () => [f32([4])], fn: (x) => ops.slice(x, 0, 0, 4, 0), parts: ['slice', 'step', '0'] },
  { name: 'split: size 0', cls: ValueError, setup: () => [f32([4])], fn: (x) => ops.split(x, 0), parts: ['split', '0'] },
  { name: 'permute: repeated dim', cls: ValueError, setup: () => [f32([2, 3])], fn: (x) => ops.permute(x, [1, 1]), parts: ['permute', '[1, 1]'] },
  { name: 'concat: empty list', cls: ValueError, setup: () => [], fn: () => ops.concat([]), parts: ['concat'] },
  { name: 'manualSeed: negative seed', cls: ValueError, setup: () => [], fn: () => ops.manualSeed(-1), parts: ['manualSeed', '-1'] },
  {
    name: 'requiresGrad_(false) on a non-leaf',
    cls: ValueError,
    setup: () => {
      const x = tensor(Float32Array.from([1, 2]), [2], { requiresGrad: true });
      return [x, ops.mul(x, 2)];
    },
    fn: (_x, y) => y.requiresGrad_(false),
    parts: ['requiresGrad_', 'non-leaf'],
  },
  // ---- more of each class, per op family ----
  { name: 'maskedFill: mask not broadcastable', cls: ShapeError, setup: () => [f32([2, 2]), tensor([true, false, true])], fn: (x, m) => ops.maskedFill(x, m, 0), parts: [/masked_?fill/i, '[2, 2]', '[3]'] },
  { name: 'mseLoss: shapes not broadcastable', cls: ShapeError, setup: () => [f32([2, 3]), f32([4])], fn: (a, b) => ops.mseLoss(a, b), parts: ['mseLoss', '[2, 3]', '[4]'] },
  { name: 'rope: odd head dim', cls: ShapeError, setup: () => [f32([2, 3, 5]), f32([3, 5]), f32([3, 5])], fn: (x, c, s) => ops.rope(x, c, s), parts: ['rope', 'even', '5'] },
  { name: 'attention: prefixK head dim', cls: ShapeError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 5, 4]), f32([1, 2, 5, 4]), f32([1, 2, 2, 8]), f32([1, 2, 2, 4])], fn: (q, k, v, pk, pv) => ops.scaledDotProductAttention(q, k, v, { prefixK: pk, prefixV: pv }), parts: ['attention', '[1, 2, 2, 8]', '[1, 2, 5, 4]'] },
  { name: 'attention: prefixK / prefixV lengths differ', cls: ShapeError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 5, 4]), f32([1, 2, 5, 4]), f32([1, 2, 2, 4]), f32([1, 2, 3, 4])], fn: (q, k, v, pk, pv) => ops.scaledDotProductAttention(q, k, v, { prefixK: pk, prefixV: pv }), parts: ['attention', '[1, 2, 2, 4]', '[1, 2, 3, 4]'] },
  { name: 'linear: f32 input, bf16 weight', cls: DTypeError, setup: () => [f32([2, 4]), f32([3, 4]).to('bf16')], fn: (x, w) => ops.linear(x, w), parts: ['linear', 'f32', 'bf16'] },
  { name: 'attention: q f32, k bf16', cls: DTypeError, setup: () => [f32([1, 1, 2, 4]), f32([1, 1, 2, 4]).to('bf16'), f32([1, 1, 2, 4])], fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v), parts: ['scaledDotProductAttention', 'q f32', 'k bf16'] },
  { name: 'attention: float key padding mask', cls: DTypeError, setup: () => [f32([1, 1, 2, 4]), f32([1, 2])], fn: (q, m) => ops.scaledDotProductAttention(q, q, q, { keyPaddingMask: m }), parts: ['attention', 'bool', 'f32'] },
  { name: 'attention: integer mask', cls: DTypeError, setup: () => [f32([1, 1, 2, 4]), i64([0, 1, 1, 0], [2, 2])], fn: (q, m) => ops.scaledDotProductAttention(q, q, q, { mask: m }), parts: ['scaledDotProductAttention', 'mask', 'i64'] },
  { name: 'attention: integer q', cls: DTypeError, setup: () => [i64([1, 2, 3, 4], [1, 1, 1, 4])], fn: (q) => ops.scaledDotProductAttention(q, q, q), parts: ['scaledDotProductAttention', 'i64'] },
  { name: 'indexSelect: dim out of range', cls: IndexError, setup: () => [f32([2, 2]), i64([0])], fn: (x, i) => ops.indexSelect(x, 5, i), parts: ['indexSelect', 'dimension 5', '2-d'] },
  { name: 'split: dim out of range', cls: IndexError, setup: () => [f32([2, 2])], fn: (x) => ops.split(x, 1, 3), parts: ['split', 'dimension 3'] },
  { name: 'permute: dim out of range', cls: IndexError, setup: () => [f32([2, 2])], fn: (x) => ops.permute(x, [0, 2]), parts: ['permute', 'dimension 2'] },
  { name: 'slice: dim out of range', cls: IndexError, setup: () => [f32([2, 2])], fn: (x) => ops.slice(x, 2, 0, 1), parts: ['slice', 'dimension 2'] },
  { name: 'attention: prefixK without prefixV', cls: ValueError, setup: () => [f32([1, 2, 3, 4]), f32([1, 2, 2, 4])], fn: (q, pk) => ops.scaledDotProductAttention(q, q, q, { prefixK: pk }), parts: ['attention', 'prefix_k', 'prefix_v'] },
  // wrong-typed numbers (a string where a dim / size / value goes) are ValueErrors that show the value quoted
  { name: 'sum: string dim', cls: ValueError, setup: () => [f32([2, 2])], fn: (x) => ops.sum(x, 'a' as never), parts: ['sum', 'integer', '"a"'] },
  { name: "softmax: dim '1' (a string)", cls: ValueError, setup: () => [f32([2, 2])], fn: (x) => ops.softmax(x, '1' as never), parts: ['softmax', 'integer', '"1"'] },
  { name: 'transpose: fractional dim', cls: ValueError, setup: () => [f32([2, 2])], fn: (x) => ops.transpose(x, 0, 0.5), parts: ['transpose', 'integer', '0.5'] },
  { name: 'slice: string start', cls: ValueError, setup: () => [f32([2, 2])], fn: (x) => ops.slice(x, 0, 'a' as never), parts: ['slice', 'start', '"a"'] },
  { name: 'slice: fractional end', cls: ValueError, setup: () => [f32([4])], fn: (x) => ops.slice(x, 0, 0, 2.5), parts: ['slice', 'end', '2.5'] },
  { name: 'narrow: start + length past the end', cls: IndexError, setup: () => [f32([4])], fn: (x) => ops.narrow(x, 0, 3, 2), parts: ['narrow', '3', '2', '4'] },
  { name: 'narrow: start before the beginning', cls: IndexError, setup: () => [f32([4])], fn: (x) => ops.narrow(x, 0, -5, 1), parts: ['narrow', '-5', '4'] },
  { name: 'expand: -1 for a new leading dim', cls: ValueError, setup: () => [f32([3, 1])], fn: (x) => ops.expand(x, [-1, 3, 4]), parts: ['expand', '-1'] },
  { name: 'sum: a dim given twice', cls: ValueError, setup: () => [f32([2, 3])], fn: (x) => ops.sum(x, [1, -1]), parts: ['sum', 'dim 1', 'more than once'] },
  { name: 'chunk: 0 chunks', cls: ValueError, setup: () => [f32([4])], fn: (x) => ops.chunk(x, 0), parts: ['chunk', 'chunks', '0'] },
  { name: 'split: a negative size', cls: ValueError, setup: () => [f32([4])], fn: (x) => ops.split(x, [5, -1]), parts: ['split', 'non-negative', '[5, -1]'] },
  { name: 'narrow: negative length', cls: ValueError, setup: () => [f32([4])], fn: (x) => ops.narrow(x, 0, 1, -1), parts: ['narrow', 'length', '-1'] },
  { name: 'expand: string size', cls: ValueError, setup: () => [f32([2, 1])], fn: (x) => ops.expand(x, ['2', 2] as never), parts: ['expand', '"2"'] },
  { name: 'reshape: shape not an array', cls: ValueError, setup: () => [f32([2, 2])], fn: (x) => ops.reshape(x, 4 as never), parts: ['reshape', 'array'] },
  { name: 'pow: string exponent', cls: ValueError, setup: () => [f32([2])], fn: (x) => ops.pow(x, '2' as never), parts: ['pow', 'exponent', 'number'] },
  { name: 'clamp: string bound', cls: ValueError, setup: () => [f32([2])], fn: (x) => ops.clamp(x, '0' as never, 1), parts: ['clamp', 'min', 'number'] },
  { name: 'maskedFill: string value', cls: ValueError, setup: () => [f32([2]), tensor([true, false])], fn: (x, m) => ops.maskedFill(x, m, 'v' as never), parts: [/masked_?fill/i, 'value', 'number'] },
  { name: 'layerNorm: string eps', cls: ValueError, setup: () => [f32([2, 2])], fn: (x) => ops.layerNorm(x, null, null, 'x' as never), parts: [/layer_?norm/i, 'eps', 'number'] },
  // ---- AutogradError / backward misuse ----
  {
    name: 'backward twice through a freed graph',
    cls: AutogradError,
    setup: () => {
      const x = tensor(Float32Array.from([1, 2]), [2], { requiresGrad: true });
      const y = ops.sum(ops.mul(x, x));
      y.backward();
      return [x, y];
    },
    fn: (_x, y) => y.backward(),
    parts: ['backward', 'freed', 'retainGraph'],
  },
  { name: 'backward on a tensor that does not require grad', cls: AutogradError, setup: () => [f32([])], fn: (x) => x.backward(), parts: ['backward', /grad/] },
  {
    name: 'backward on a non-scalar without a gradient -> ShapeError',
    cls: ShapeError,
    setup: () => {
      const x = tensor(Float32Array.from([1, 2]), [2], { requiresGrad: true });
      return [x, ops.mul(x, x)];
    },
    fn: (_x, y) => y.backward(),
    parts: ['backward', 'scalar', '[2]'],
  },
  {
    name: 'backward with a gradient of the wrong shape -> ShapeError',
    cls: ShapeError,
    setup: () => {
      const x = tensor(Float32Array.from([1, 2]), [2], { requiresGrad: true });
      return [x, ops.mul(x, x), f32([3])];
    },
    fn: (_x, y, g) => y.backward(g),
    parts: ['backward', '[3]', '[2]'],
  },
  // ---- DisposedError ----
  ...(
    [
      ['toArray', (d: Tensor) => d.toArray()],
      ['tolist', (d: Tensor) => d.tolist()],
      ['item', (d: Tensor) => d.item()],
      ['shape', (d: Tensor) => d.shape],
      ['dtype', (d: Tensor) => d.dtype],
      ['detach', (d: Tensor) => d.detach()],
      ['exp (method)', (d: Tensor) => d.exp()],
      ['reshape (method)', (d: Tensor) => d.reshape(2)],
      ['ops.add (first input)', (d: Tensor, ok: Tensor) => ops.add(d, ok)],
      ['ops.add (second input)', (d: Tensor, ok: Tensor) => ops.add(ok, d)],
      ['ops.add (tensor + number)', (d: Tensor) => ops.add(d, 1)],
      ['ops.matmul', (d: Tensor) => ops.matmul(d, d)],
      ['ops.concat', (d: Tensor) => ops.concat([d, d])],
      ['backward', (d: Tensor) => d.backward()],
    ] as const
  ).map(([what, fn]): ErrCase => ({
    name: `disposed tensor: ${what}`,
    cls: DisposedError,
    setup: () => {
      const d = tensor(Float32Array.from([1, 2]), [2]);
      d.dispose();
      return [d, tensor(Float32Array.from([1, 2]), [2])];
    },
    fn,
    parts: [/disposed/],
  })),
];

for (const c of CASES) test(`${c.cls.name}: ${c.name}`, (t) => expectError(t, c.setup, c.fn, c.cls, c.parts));

// The message of a DisposedError raised inside an op should say which op (errors.ts: "every failure ...
// names the op (or API)").
test('DisposedError raised by an op names the op', (t) => {
  const d = tensor(Float32Array.from([1, 2]), [2]);
  d.dispose();
  const ok = tensor(Float32Array.from([1, 2]), [2]);
  for (const [op, fn] of [
    ['add', () => ops.add(ok, d)],
    ['matmul', () => ops.matmul(d, ok)],
    ['exp', () => ops.exp(d)],
  ] as const) {
    const err = t.throws(fn, { instanceOf: DisposedError });
    if (err) t.true(err.message.includes(op), `DisposedError from ${op} says only ${JSON.stringify(err.message)}`);
  }
  ok.dispose();
  assertUsable(t);
});

// ---- non-tensor arguments: ValueError naming the op, never a raw TypeError or a silent success ----

const NONTENSORS: [string, unknown][] = [
  ['a plain object', {}],
  ['an object with a fake handle', { handle: {}, shape: [2], dtype: 'f32' }],
  ['an array', [1, 2]],
  ['a string', 'x'],
  ['null', null],
];

const x2 = () => tensor(Float32Array.from([1, -2, 3, 0.5]), [2, 2]);
const NONTENSOR_OPS: [string, (bad: any, x: Tensor) => unknown][] = [
  ['add', (b, x) => ops.add(x, b)],
  ['mul', (b, x) => ops.mul(b, x)],
  ['maximum', (b, x) => ops.maximum(x, b)],
  ['exp', (b) => ops.exp(b)],
  ['relu', (b) => ops.relu(b)],
  ['gelu', (b) => ops.gelu(b)],
  ['pow', (b) => ops.pow(b, 2)],
  ['clamp', (b) => ops.clamp(b, 0, 1)],
  ['sum', (b) => ops.sum(b)],
  ['mean', (b) => ops.mean(b)],
  ['max', (b) => ops.max(b)],
  ['softmax', (b) => ops.softmax(b, -1)],
  ['matmul', (b, x) => ops.matmul(x, b)],
  ['linear', (b, x) => ops.linear(b, x)],
  ['reshape', (b) => ops.reshape(b, [4])],
  ['transpose', (b) => ops.transpose(b, 0, 1)],
  ['unsqueeze', (b) => ops.unsqueeze(b, 0)],
  ['squeeze', (b) => ops.squeeze(b)],
  ['expand', (b) => ops.expand(b, [2, 2])],
  ['split', (b) => ops.split(b, 1)],
  ['concat', (b, x) => ops.concat([x, b])],
  ['where', (b, x) => ops.where(b, x, x)],
  ['maskedFill', (b) => ops.maskedFill(b, tensor([true, false]), 0)],
  ['layerNorm', (b) => ops.layerNorm(b)],
  ['embedding', (b, x) => ops.embedding(b, x)],
  ['crossEntropy', (b) => ops.crossEntropy(b, tensor(BigInt64Array.from([0n, 1n]), [2], { dtype: 'i64' }))],
  ['dropout', (b) => ops.dropout(b, 0.5)],
  ['scaledDotProductAttention', (b) => ops.scaledDotProductAttention(b, b, b)],
  ['sub', (b, x) => ops.sub(x, b)],
  ['div', (b, x) => ops.div(b, x)],
  ['neg', (b) => ops.neg(b)],
  ['log', (b) => ops.log(b)],
  ['sqrt', (b) => ops.sqrt(b)],
  ['rsqrt', (b) => ops.rsqrt(b)],
  ['abs', (b) => ops.abs(b)],
  ['tanh', (b) => ops.tanh(b)],
  ['sigmoid', (b) => ops.sigmoid(b)],
  ['silu', (b) => ops.silu(b)],
  ['quickGelu', (b) => ops.quickGelu(b)],
  ['logSoftmax', (b) => ops.logSoftmax(b, -1)],
  ['rmsNorm', (b) => ops.rmsNorm(b)],
  ['mseLoss', (b, x) => ops.mseLoss(x, b)],
  ['slice', (b) => ops.slice(b, 0, 0, 1)],
  ['indexSelect', (b) => ops.indexSelect(b, 0, tensor(BigInt64Array.from([0n]), [1], { dtype: 'i64' }))],
  ['gather', (b) => ops.gather(b, 0, tensor(BigInt64Array.from([0n, 0n]), [1, 2], { dtype: 'i64' }))],
  ['permute', (b) => ops.permute(b, [1, 0])],
  ['contiguous', (b) => ops.contiguous(b)],
  ['rope', (b, x) => ops.rope(x, b, b)],
  // optional tensor arguments: a non-tensor must not be silently ignored
  ['layerNorm (weight)', (b, x) => ops.layerNorm(x, b)],
  ['rmsNorm (weight)', (b, x) => ops.rmsNorm(x, b)],
  ['linear (bias)', (b, x) => ops.linear(x, x, b)],
  ['scaledDotProductAttention (mask)', (b) => {
    const q = randn([1, 1, 2, 4], { seed: 3 });
    return ops.scaledDotProductAttention(q, q, q, { mask: b });
  }],
];

for (const [op, call] of NONTENSOR_OPS) {
  test(`ValueError: non-tensor argument to ${op}`, (t) => {
    const opName = op.split(' ')[0]!;
    for (const [what, bad] of NONTENSORS) {
      // null is a legitimate "absent" value for optional arguments
      if (bad === null && op.includes('(')) continue;
      const x = x2();
      let err: unknown;
      try {
        const r = call(bad, x);
        err = undefined;
        t.fail(`${op} accepted ${what} and returned ${String(r)}`);
      } catch (e) {
        err = e;
      }
      if (err !== undefined) {
        t.true(err instanceof ValueError, `${op} with ${what}: ${(err as Error)?.constructor?.name} ${JSON.stringify((err as Error)?.message)} (expected ValueError)`);
        t.true(String((err as Error).message).includes(opName), `${op} with ${what}: message ${JSON.stringify((err as Error)?.message)} does not name the op`);
      }
      x.dispose();
    }
    assertUsable(t);
  });
}

// ---- the native addon itself never crashes on malformed arguments ----

test('native: plain objects and other junk instead of handles throw, never crash', (t) => {
  const good = randn([2, 2], { seed: 5 });
  const h = good.handle;
  const junk: unknown[] = [{}, { shape: [2] }, [1, 2], 'x', 42, true, Symbol('s'), () => 0, new Float32Array(4), good, undefined];
  const calls: [string, (j: any) => unknown][] = [
    ['runOp add (first)', (j) => native.runOp('add', [j, h], {})],
    ['runOp add (second)', (j) => native.runOp('add', [h, j], {})],
    ['runOp exp', (j) => native.runOp('exp', [j], {})],
    ['runOp matmul', (j) => native.runOp('matmul', [j, j], {})],
    ['runOp layer_norm', (j) => native.runOp('layer_norm', [h, j, j], { eps: 1e-5 })],
    ['runOp attention', (j) => native.runOp('attention', [j, j, j, null, null, null, null], {})],
    ['runOp inputs', (j) => native.runOp('exp', j, {})],
    ['runOp name', (j) => native.runOp(j, [h], {})],
    ['runOp sum dims attr', (j) => native.runOp('sum', [h], { dims: j, keepdim: false })],
    ['asStrided handle', (j) => native.asStrided(j, [2], [1], 0)],
    ['asStrided shape', (j) => native.asStrided(h, j, [1, 1], 0)],
    ['fromBuffer data', (j) => native.fromBuffer(j, 'f32', [1])],
    ['fromBuffer dtype', (j) => native.fromBuffer(new Float32Array(1), j, [1])],
    ['fromBuffer shape', (j) => native.fromBuffer(new Float32Array(1), 'f32', j)],
    ['sameStorage', (j) => h.sameStorage(j)],
  ];
  let threw = 0;
  for (const [name, call] of calls)
    for (const j of junk) {
      try {
        const r = call(j);
        // a few junk values are legitimately accepted (e.g. a Float32Array of the right size for
        // fromBuffer, or undefined as an optional input): results must be real handles
        for (const o of Array.isArray(r) ? r : [r]) if (o && typeof o === 'object' && 'dispose' in o) (o as { dispose(): void }).dispose();
      } catch (e) {
        threw++;
        t.true(e instanceof Error, `${name}(${String(typeof j)}) threw a non-Error`);
        t.truthy((e as Error).message, `${name}: empty error message`);
      }
    }
  t.true(threw > calls.length * 5, `only ${threw} calls threw`);
  // the process is alive and the addon still works
  const [s] = native.runOp('add', [h, h], {});
  t.deepEqual(Array.from(new Float32Array(s!.toBuffer())), Array.from(good.toArray() as Float32Array, (v) => 2 * v));
  s!.dispose();
  good.dispose();
  assertUsable(t);
});

test('native: a disposed handle raises DisposedError with the op name', (t) => {
  const x = randn([2], { seed: 1 });
  const h = x.handle;
  x.dispose();
  for (const [name, call] of [
    ['exp', () => native.runOp('exp', [h], {})],
    ['asStrided', () => native.asStrided(h, [2], [1], 0)],
  ] as const) {
    const e = t.throws(call) as Error & { code?: string };
    t.is(e?.code, 'DisposedError');
    t.true(e?.message.includes(name), e?.message);
  }
  t.throws(() => h.toBuffer(), { message: /disposed/ });
  assertUsable(t);
});

test('ops with a fake tensor object (a handle-like plain object) throw a typed error', (t) => {
  const x = x2();
  const fake = { handle: { shape: [2, 2], dtype: 'f32' }, shape: [2, 2], dtype: 'f32', requiresGrad: false };
  const err = t.throws(() => ops.add(x, fake as never));
  t.true(err instanceof AdaptersError, `${err?.constructor?.name}: ${err?.message}`);
  x.dispose();
  assertUsable(t);
});

// asStrided promises "every reachable element must lie inside [the storage]"; a view of a 3-element tensor
// must not be able to reach past its 12 bytes into the rest of the (pooled, 4 KiB) allocation.
test('native.asStrided: a view past the tensor\'s elements is an IndexError', (t) => {
  const x = tensor(Float32Array.from([1, 2, 3]), [3]);
  const e = t.throws(() => {
    const v = native.asStrided(x.handle, [100], [1], 0);
    v.dispose();
  }) as Error & { code?: string };
  t.is(e?.code, 'IndexError');
  // within bounds is fine
  const v = native.asStrided(x.handle, [2], [1], 1);
  t.deepEqual(Array.from(new Float32Array(v.toBuffer())), [2, 3]);
  v.dispose();
  x.dispose();
});
