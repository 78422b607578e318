// CUDA kernels run on the CPU under a thread-per-CUDA-thread emulation, so that their indexing, staging, barriers,
// shuffles and mma fragments are checked on every machine, not only where a GPU is lent:
// - the attention kernels, register-tiled (cuda/attention_tiles.cuh, heads <= 64) and warp-cooperative
//   (cuda/attention_warp.cuh, heads <= 128), against the per-row reference code of cuda/attention_math.h
//   (test/cuda/emu/attention_tiles_emu.cpp);
// - the f32 GEMM kernels (cuda/gemm_f32.cuh: FFMA tiles and 3xTF32 tensor-core tiles with an emulated
//   mma.sync.m16n8k8.tf32) against a double-precision product (test/cuda/emu/gemm_emu.cpp).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const cudaDir = path.join(here, '..', '..', 'cuda');
function build(name: string): { exe: string } | { error: string } | { broken: string } {
  const src = path.join(here, 'emu', `${name}.cpp`);
  const sha = crypto.createHash('sha1').update(fs.readFileSync(src));
  for (const f of fs.readdirSync(cudaDir).filter((n) => /\.(h|cuh)$/.test(n)).sort()) sha.update(f).update(fs.readFileSync(path.join(cudaDir, f)));
  const exe = path.join(os.tmpdir(), `adapters-node-${name}-${sha.digest('hex').slice(0, 12)}`);
  if (fs.existsSync(exe)) return { exe };
  const cxx = process.env.CXX || 'c++';
  const tmp = `${exe}.${process.pid}.tmp`;
  const r = spawnSync(cxx, ['-O1', '-std=c++20', '-pthread', `-I${cudaDir}`, src, '-o', tmp], { encoding: 'utf8' });
  if (r.error) return { error: `no C++ compiler (${cxx}: ${String(r.error).slice(0, 200)})` };
  // a compiler without C++20's <barrier> cannot build the emulator: a skip, not a failure of ours
  if (r.status !== 0 && /barrier/.test(r.stderr) && /No such file|not a member|was not declared/.test(r.stderr))
    return { error: `${cxx} lacks C++20 std::barrier` };
  if (r.status !== 0) return { broken: `${cxx} could not build the emulator: ${r.stderr.slice(0, 1500)}` };
  fs.renameSync(tmp, exe);
  return { exe };
}

const b = build('attention_tiles_emu');
if ('error' in b) test(`attention tile emulation skipped: ${b.error}`, (t) => t.pass());
else if ('broken' in b) test('the attention tile emulator builds', (t) => t.fail(b.broken));
else {
  test('CUDA attention kernels (tiles and warp kernels; forward, dq, dk/dv) match the per-row code under CPU emulation', (t) => {
    const r = spawnSync(b.exe, [], { encoding: 'utf8', timeout: 240_000 });
    const lines = r.stdout.trim().split('\n').filter((l) => l.startsWith('{'));
    const cases = lines.slice(0, -1).map((l) => JSON.parse(l) as { case: number[]; kernels: number; ok: boolean; why: string });
    t.is(cases.length, 10, r.stderr.slice(-1000));
    // heads <= 64 run both families, larger ones the warp kernels alone
    for (const c of cases) t.is(c.kernels, c.case[6]! <= 64 && c.case[7]! <= 64 ? 2 : 1, `kernels run for ${JSON.stringify(c.case)}`);
    for (const c of cases) t.true(c.ok, `case [B,H,Hkv,Tq,Tk,P,D,Dv,causal,mask,keep] = ${JSON.stringify(c.case)}: ${c.why}`);
    t.is(r.status, 0);
  });
}

const g = build('gemm_emu');
if ('error' in g) test(`f32 GEMM kernel emulation skipped: ${g.error}`, (t) => t.pass());
else if ('broken' in g) test('the f32 GEMM kernel emulator builds', (t) => t.fail(g.broken));
else {
  type GemmCase = { kernel: number; case: number[]; ok: boolean; why: string };
  const runGemm = (args: string[]) => {
    const r = spawnSync(g.exe, args, { encoding: 'utf8', timeout: 240_000 });
    const lines = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    return { r, cases: lines.slice(0, -1) as GemmCase[], summary: lines.at(-1) as { cases: number; failed: number } | undefined };
  };
  test('CUDA f32 GEMM kernels (3xTF32, 1xTF32 and FFMA tiles, the cp.async-pipelined 3xTF32 kernel; four layouts, edges, scalar loads, split-K, batched, beta, bf16 output) match a double-precision product under CPU emulation', (t) => {
    const { r, cases } = runGemm([]);
    t.is(cases.length, 169, r.stderr.slice(-1000));
    for (const k of [5, 3, 2, 1, 9]) t.true(cases.some((c) => c.kernel === k), `kernel ${k} ran`);
    for (const c of cases) t.true(c.ok, `kernel ${c.kernel}, case [M,N,K,ta,tb,extra_ld,splits,beta,bf16_out,batch] = ${JSON.stringify(c.case)}: ${c.why}`);
    t.is(r.status, 0);
  });
  test('the f32 GEMM emulation check tells 3xTF32 from plain TF32: dropping the small-term products fails every case', (t) => {
    const { r, cases, summary } = runGemm(['--plain-tf32']);
    t.is(cases.length, 40, r.stderr.slice(-1000));
    t.is(summary?.failed, 40);
    t.is(r.status, 1);
  });
}
