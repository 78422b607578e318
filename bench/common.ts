/** Bench helpers: best-of timing, PyTorch availability, long-lived peer processes (paired timing), formatted tables. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpuInfo } from '../lib/index.ts';
import { createInterface } from 'node:readline';

/** The CPU's model name (Linux /proc/cpuinfo) and the GEMM kernels picked on it, so results from different machines stay
 * attributable: "AMD EPYC (sgemm avx512, bgemm avx512bf16)". */
export function machineLine(): string {
  let model = 'unknown CPU';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    // not Linux: the kernels still say which ISA ran
  }
  const info = cpuInfo();
  return `${model} (sgemm ${info.sgemm}, bgemm ${info.bgemm})`;
}

/** Best seconds per call of fn over `reps` rounds of at least `minTime` seconds each. */
export function bestTime(fn: () => void, reps = 5, minTime = 0.3): number {
  fn();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    let iters = 0;
    const t0 = performance.now();
    let el = 0;
    do {
      fn();
      iters++;
      el = (performance.now() - t0) / 1000;
    } while (el < minTime);
    best = Math.min(best, el / iters);
  }
  return best;
}

/** The Python interpreter that has torch (Debian's python3-torch lives under /usr/bin/python3). */
export function torchPython(): string | null {
  for (const py of [process.env.TORCH_PYTHON, '/usr/bin/python3', 'python3'].filter(Boolean) as string[]) {
    if (py.startsWith('/') && !existsSync(py)) continue;
    const r = spawnSync(py, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
}

/** Runs a Python script with JSON on stdin, returns its parsed last stdout line (or null on failure). */
export function runPythonJson<T>(py: string, script: string, input: unknown, timeoutMs = 600_000): T | null {
  // OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are pinned on some of these machines for old OpenBLAS builds and
  // slow a current one down; the baseline runs without both (they are only ever unset together).
  const r = spawnSync(py, [script], { input: JSON.stringify(input), encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20, env: torchEnv() });
  if (r.status !== 0) {
    console.error(`python failed: ${r.stderr?.slice(-2000)}`);
    return null;
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}

export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(2)) : c)));
  const w = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => c.padStart(w[i]!)).join('  ')).join('\n');
}

export const median = (xs: number[]): number => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
};

/**
 * A long-lived child that answers each request line with a JSON line (bench/train's and bench/gemm's paired timing:
 * ours and PyTorch take turns, so both sides of a ratio see the same moment of a machine whose speed swings).
 */
export class Peer {
  private readonly proc: ChildProcess;
  private readonly lines: AsyncIterator<string>;
  private stderr = '';
  constructor(readonly what: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, firstLine?: string) {
    this.proc = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000); });
    this.lines = createInterface({ input: this.proc.stdout! })[Symbol.asyncIterator]();
    if (firstLine !== undefined) this.proc.stdin!.write(firstLine + '\n');
  }
  /** The next JSON line (other output is skipped). */
  async next(): Promise<Record<string, number>> {
    for (;;) {
      const r = await this.lines.next();
      if (r.done) throw new Error(`${this.what} ended early: ${this.stderr}`);
      if (r.value.startsWith('{')) return JSON.parse(r.value) as Record<string, number>;
    }
  }
  /** Sends one request line and returns the answer. */
  async ask(line: string): Promise<Record<string, number>> {
    this.proc.stdin!.write(line + '\n');
    return this.next();
  }
  async step(): Promise<number> {
    return (await this.ask('step')).s!;
  }
  /** Ends the child ("quit"); returns its last answer (bench/train's children report their peak RSS there). */
  async quit(): Promise<Record<string, number>> {
    const r = await this.ask('quit');
    this.proc.stdin!.end();
    return r;
  }
}

/** runPythonJson's environment for a PyTorch child (see there). */
export function torchEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  return env;
}
