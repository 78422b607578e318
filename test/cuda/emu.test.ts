// The CUDA attention kernels — register-tiled (cuda/attention_tiles.cuh, heads <= 64) and warp-cooperative
// (cuda/attention_warp.cuh, heads <= 128) — run on the CPU under a thread-per-CUDA-thread emulation
// (test/cuda/emu/attention_tiles_emu.cpp) against the per-row reference code of cuda/attention_math.h: their tile
// indexing, staging, barriers and shuffles are checked on every machine, not only where a GPU is lent.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const cudaDir = path.join(here, '..', '..', 'cuda');
const src = path.join(here, 'emu', 'attention_tiles_emu.cpp');

function build(): { exe: string } | { error: string } | { broken: string } {
  const sha = crypto.createHash('sha1').update(fs.readFileSync(src));
  for (const f of fs.readdirSync(cudaDir).filter((n) => /\.(h|cuh)$/.test(n)).sort()) sha.update(f).update(fs.readFileSync(path.join(cudaDir, f)));
  const exe = path.join(os.tmpdir(), `adapters-node-attn-emu-${sha.digest('hex').slice(0, 12)}`);
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

const b = build();
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
