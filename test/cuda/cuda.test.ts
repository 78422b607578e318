// CUDA backend tests. They run only where a GPU is usable (hasCuda()); elsewhere they skip with a message.
// The CUDA kernels arrive with the CUDA-backend issue; for now the library is the device-discovery stub.
import test from 'ava';
import { hasCuda, supportsOp } from '../../lib/index.ts';

const gpu = hasCuda();
const gpuTest = gpu ? test.serial : test.skip;
if (!gpu) test('CUDA tests skipped: no usable CUDA device (hasCuda() is false)', (t) => t.pass());

gpuTest('the CUDA library reports a device', (t) => {
  t.true(hasCuda());
  t.is(typeof supportsOp('matmul', 'cuda'), 'boolean');
});
