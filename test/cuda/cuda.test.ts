// CUDA backend tests. They run only where a GPU is usable (hasCuda()); elsewhere they skip with a message.
// Device plumbing is also tested without a GPU against a mock library (device.test.ts).
import test from 'ava';
import { cuda, hasCuda, randn, supportsOp, DeviceError, ValueError } from '../../lib/index.ts';

const gpu = hasCuda();

test('without a usable GPU, moving to CUDA and the CUDA memory API give clear DeviceErrors', (t) => {
  if (gpu) return t.pass();
  const x = randn([2, 2]);
  t.throws(() => x.to('cuda'), { instanceOf: DeviceError, message: /to\(cuda\): CUDA is not available \(.+\)/ });
  t.throws(() => x.cuda(), { instanceOf: DeviceError });
  t.throws(() => cuda.memoryStats(), { instanceOf: DeviceError, message: /CUDA is not available/ });
  t.false(cuda.isAvailable());
  t.false(supportsOp('matmul', 'cuda'));
  t.is(x.to('cpu').device, 'cpu');
  x.dispose();
});

test('setFloat32MatmulPrecision checks its mode before the device: a bad mode is a ValueError on every machine', (t) => {
  t.throws(() => cuda.setFloat32MatmulPrecision('medium' as 'high'), { instanceOf: ValueError, message: /expected 'highest' or 'high', got 'medium'/ });
  t.throws(() => cuda.setFloat32MatmulPrecision(3 as unknown as 'high'), { instanceOf: ValueError, message: /got a non-string value/ });
  if (!gpu) t.throws(() => cuda.setFloat32MatmulPrecision('high'), { instanceOf: DeviceError, message: /setFloat32MatmulPrecision/ });
});
const gpuTest = gpu ? test.serial : test.skip;
if (!gpu) test('CUDA tests skipped: no usable CUDA device (hasCuda() is false)', (t) => t.pass());

gpuTest('the CUDA library reports a device', (t) => {
  t.true(hasCuda());
  t.is(typeof supportsOp('matmul', 'cuda'), 'boolean');
});
