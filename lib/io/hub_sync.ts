/**
 * Synchronous Hub download for the synchronous API (fromPretrained('org/name'), loadAdapter('org/name')): the
 * async client (lib/io/hub.ts) runs in a child process (lib/io/hub_worker) while this thread waits, so a sync
 * call can fill the cache the same way fromPretrainedAsync does. Progress lines pass through on stderr.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import { HubError, type HubOptions } from './hub.ts';

export function snapshotDownloadSync(repo: string, opts: HubOptions = {}): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // running from the TypeScript sources (tests, `npm run cli`) or from the compiled dist/
  const ts = path.join(here, 'hub_worker.ts'), js = path.join(here, 'hub_worker.js');
  const args = fs.existsSync(js) ? [js] : ['--import', 'tsx', ts];
  const r = spawnSync(process.execPath, args, { input: JSON.stringify({ repo, opts }), encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'],
    maxBuffer: 1 << 20 });
  const last = (r.stdout ?? '').trim().split('\n').at(-1) ?? '';
  let res: { dir?: string; error?: string } = {};
  try {
    res = JSON.parse(last);
  } catch {
    throw new HubError(`${repo}: the download process failed (${r.error?.message ?? `exit ${r.status}`})`);
  }
  if (res.error || !res.dir) throw new HubError(res.error ?? `${repo}: download failed`);
  return res.dir;
}
