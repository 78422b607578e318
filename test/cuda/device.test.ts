// Device plumbing of the CUDA backend — tensors on the GPU (to('cuda'), cpu()), the CUDA op slots (matmul, linear,
// AdamW, clone/copy_), gradients across devices, errors (missing kernels, mixed devices, out of memory) and the
// caching allocator's statistics — checked on every machine against test/cuda/mock/mock_cuda.cpp, a host-memory
// stand-in for libadapters_cuda.so whose "device" pointers crash on any host dereference; and, where a GPU is
// usable, against the real library too. The checks run in child processes (test/cuda/helpers/device_child.ts),
// because the CUDA library is chosen once per process.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCuda } from '../../lib/index.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const child = path.join(here, 'helpers', 'device_child.ts');

function buildMock(): { lib: string } | { error: string } | { broken: string } {
  const src = path.join(here, 'mock', 'mock_cuda.cpp');
  // the cache key covers the headers the mock includes (the kernels' shared per-element code), not just its own source
  const cudaDir = path.join(here, '..', '..', 'cuda');
  const sha = crypto.createHash('sha1').update(fs.readFileSync(src));
  for (const f of fs.readdirSync(cudaDir).filter((n) => n.endsWith('.h')).sort()) sha.update(f).update(fs.readFileSync(path.join(cudaDir, f)));
  const hash = sha.digest('hex').slice(0, 12);
  const lib = path.join(os.tmpdir(), `adapters-node-mock-cuda-${hash}.so`);
  if (fs.existsSync(lib)) return { lib };
  const cxx = process.env.CXX || 'c++';
  const tmp = `${lib}.${process.pid}.tmp`;
  const r = spawnSync(cxx, ['-O1', '-shared', '-fPIC', '-std=c++17', src, '-o', tmp], { encoding: 'utf8' });
  // no C++ compiler here: skip; a compiler that rejects the mock (our code) is a failure, not a skip
  if (r.error) return { error: `no C++ compiler to build the mock CUDA library (${cxx}: ${String(r.error).slice(0, 200)})` };
  if (r.status !== 0) return { broken: `${cxx} could not build the mock CUDA library: ${r.stderr.slice(0, 1500)}` };
  fs.renameSync(tmp, lib);
  return { lib };
}

function runChild(env: Record<string, string>): { results: { name: string; ok: boolean; detail: string }[] } | string {
  const r = spawnSync(process.execPath, ['--import', 'tsx', child], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.status !== 0 || !last.startsWith('{')) return `child exited with ${r.status ?? r.signal}: ${r.stderr.slice(-1500)}`;
  return JSON.parse(last);
}

function declare(label: string, run: ReturnType<typeof runChild>) {
  if (typeof run === 'string') {
    test(`${label}: the device checks ran to the end`, (t) => t.fail(run));
    return;
  }
  for (const r of run.results) test(`${label}: ${r.name}`, (t) => t.true(r.ok, r.detail));
  test(`${label}: every check reported`, (t) => t.is(run.results.length, 39));
}

const mock = buildMock();
if ('error' in mock) test(`mock-CUDA device tests skipped: ${mock.error}`, (t) => t.pass());
else if ('broken' in mock) test('the mock CUDA library builds', (t) => t.fail(mock.broken));
else declare('mock CUDA', runChild({ ADAPTERS_CUDA_LIB: mock.lib, MOCK_CUDA_MAX_BYTES: '1000000' }));

if (hasCuda()) declare('GPU', runChild({}));
else test('GPU device tests skipped: no usable CUDA device (hasCuda() is false)', (t) => t.pass());
