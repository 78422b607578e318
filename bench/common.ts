/** Bench helpers: best-of timing, PyTorch availability, formatted tables. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

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
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync(py, [script], { input: JSON.stringify(input), encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20, env });
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
