/**
 * Hugging Face Hub downloads into huggingface_hub's cache layout, so Python and Node share one cache:
 *   $HF_HUB_CACHE (default $HF_HOME/hub, $HF_HOME default ~/.cache/huggingface)
 *     models--<org>--<name>/blobs/<etag>                  file contents, named by their etag (LFS: sha256)
 *     models--<org>--<name>/snapshots/<commit>/<path>     relative symlinks to the blobs
 *     models--<org>--<name>/refs/<revision>               the commit a branch/tag resolved to
 * Through the Hub's documented HTTP endpoints ($HF_ENDPOINT, default https://huggingface.co):
 *   GET /api/models/<repo>/revision/<rev>                 commit sha + file list (siblings)
 *   GET /<repo>/resolve/<rev>/<path>                      the file (LFS files redirect; X-Linked-Etag = sha256)
 * Token from opts.token or $HF_TOKEN; $HF_HUB_OFFLINE=1 uses the cache only. Downloads resume from a
 * `<blob>.incomplete` file with an HTTP Range request, and every blob is checked against its etag (sha256 for
 * LFS files, the git blob sha1 otherwise) before it is moved into place — a corrupt or truncated download never
 * becomes a blob. (@huggingface/hub's downloadFileToCacheDir writes the same layout but neither resumes nor
 * verifies, which is why this client speaks the HTTP API itself.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { IOError, ValueError } from '../errors.ts';

export interface HubOptions {
  revision?: string;
  token?: string;
  cacheDir?: string;
  endpoint?: string;
  /** Only the cache (also when $HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Progress lines on stderr (default: when stderr is a tty). */
  progress?: boolean;
  /** File patterns to fetch (globs with * and ?); default: every file of the repo. */
  allow?: string[];
}

export class HubError extends IOError {}

const COMMIT = /^[0-9a-f]{40}$/;

export function hubCacheDir(opts: HubOptions = {}): string {
  if (opts.cacheDir) return opts.cacheDir;
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  const home = process.env.HF_HOME ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** True for strings that name a Hub repo ('org/name' or 'name') rather than an existing local path. */
export function isHubId(s: string): boolean {
  return !fs.existsSync(s) && /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/.test(s) && !s.includes('..');
}

function repoFolder(cache: string, repo: string): string {
  return path.join(cache, `models--${repo.replace(/\//g, '--')}`);
}

const glob = (p: string) => new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);

/** The snapshot folder of a cached revision, or null. */
export function cachedSnapshot(repo: string, opts: HubOptions = {}): string | null {
  const folder = repoFolder(hubCacheDir(opts), repo);
  const rev = opts.revision ?? 'main';
  let commit = COMMIT.test(rev) ? rev : null;
  const ref = path.join(folder, 'refs', rev);
  if (!commit && fs.existsSync(ref)) commit = fs.readFileSync(ref, 'utf8').trim();
  if (!commit) return null;
  const snap = path.join(folder, 'snapshots', commit);
  return fs.existsSync(snap) ? snap : null;
}

/**
 * Makes `repo` at `revision` available locally and returns its snapshot folder: from the cache when the
 * revision's files are there (always, offline), else downloading the missing files.
 */
export async function snapshotDownload(repo: string, opts: HubOptions = {}): Promise<string> {
  const offline = opts.offline ?? (process.env.HF_HUB_OFFLINE === '1' || process.env.HF_HUB_OFFLINE === 'true');
  const rev = opts.revision ?? 'main';
  if (rev.split('/').some((p) => p === '..' || p === '' || p === '.')) throw new HubError(`${repo}: invalid revision '${rev}'`);
  if (offline) {
    const snap = cachedSnapshot(repo, opts);
    if (!snap) throw new HubError(`${repo}@${rev} is not in the cache (${hubCacheDir(opts)}) and HF_HUB_OFFLINE is set`);
    return snap;
  }
  const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/$/, '');
  const token = opts.token ?? process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN;
  // identity encoding: sizes and hashes are of the file's bytes, not of a gzip stream (huggingface_hub does the same)
  const headers: Record<string, string> = { 'accept-encoding': 'identity', ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const info = await request(`${endpoint}/api/models/${repo}/revision/${encodeURIComponent(rev)}`, headers, repo);
  const meta = (await info.json()) as { sha?: string; siblings?: { rfilename: string }[] };
  if (!meta.sha || !COMMIT.test(meta.sha) || !Array.isArray(meta.siblings)) throw new HubError(`${repo}@${rev}: unexpected repo info from ${endpoint}`);
  const commit = meta.sha;
  const folder = repoFolder(hubCacheDir(opts), repo);
  const snap = path.join(folder, 'snapshots', commit);
  const pats = (opts.allow ?? ['*']).map(glob);
  let files = meta.siblings.map((s) => s.rfilename).filter((f) => pats.some((p) => p.test(f)));
  // like from_pretrained: safetensors weights make the .bin copies unnecessary
  if (files.some((f) => /^model.*\.safetensors$/.test(f))) files = files.filter((f) => !/^pytorch_model.*\.bin(\.index\.json)?$/.test(f));
  for (const f of files) {
    if (f.split('/').some((p) => p === '..' || p === '') || path.isAbsolute(f)) throw new HubError(`${repo}: refusing unsafe file name '${f}'`);
    const pointer = path.join(snap, f);
    if (fs.existsSync(pointer)) continue;
    await downloadFile(`${endpoint}/${repo}/resolve/${commit}/${f.split('/').map(encodeURIComponent).join('/')}`, headers, folder, pointer, `${repo}/${f}`, opts);
  }
  fs.mkdirSync(snap, { recursive: true });
  if (!COMMIT.test(rev)) {
    const ref = path.join(folder, 'refs', rev);  // a revision like refs/pr/1 nests
    fs.mkdirSync(path.dirname(ref), { recursive: true });
    fs.writeFileSync(`${ref}.tmp`, commit);
    fs.renameSync(`${ref}.tmp`, ref);
  }
  return snap;
}

async function request(url: string, headers: Record<string, string>, what: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, headers: { ...headers, ...(init.headers as Record<string, string> | undefined) } });
  } catch (e) {
    throw new HubError(`${what}: cannot reach ${new URL(url).origin} (${(e as Error).message}); set HF_HUB_OFFLINE=1 to use the cache only`);
  }
  if (res.status === 401 || res.status === 403) throw new HubError(`${what}: access denied (HTTP ${res.status}); set HF_TOKEN for gated or private repos`);
  if (res.status === 404) throw new HubError(`${what}: not found on the Hub (HTTP 404)`);
  if (res.status === 416) throw new HubError(`${what}: the server refused the resume range (HTTP 416); delete the .incomplete file in the cache and run again`);
  if (!res.ok && res.status !== 206 && !(res.status >= 300 && res.status < 400)) throw new HubError(`${what}: HTTP ${res.status} from ${url}`);
  return res;
}

async function downloadFile(url: string, headers: Record<string, string>, folder: string, pointer: string, what: string, opts: HubOptions): Promise<void> {
  // the first response names the blob: X-Linked-Etag (LFS sha256) on a redirect, else ETag (git sha1)
  let res = await request(url, headers, what, { redirect: 'manual' });
  const etagOf = (r: Response) => (r.headers.get('x-linked-etag') ?? r.headers.get('etag') ?? '').replace(/^W\//, '').replace(/"/g, '');
  const etag = etagOf(res);
  const size = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length') ?? NaN);
  if (!/^[0-9a-f]{40}$|^[0-9a-f]{64}$/.test(etag)) throw new HubError(`${what}: the Hub sent no usable ETag ('${etag}')`);
  let location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
  if (location) location = new URL(location, url).toString();
  const blob = path.join(folder, 'blobs', etag);
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  if (!fs.existsSync(blob)) {
    const part = `${blob}.incomplete`;
    const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
    const total = Number.isFinite(size) ? size : 0;
    await res.body?.cancel();
    // a complete .incomplete (the process stopped before the rename) only needs its check
    if (!(total && have === total)) {
      const src = location ?? url;
      // LFS content lives behind the redirect (no auth header there, as the Hub's signed URLs need none)
      const h: Record<string, string> = location ? { 'accept-encoding': 'identity' } : headers;
      res = await request(src, h, what, { headers: have ? { range: `bytes=${have}-` } : {} });
      const append = have > 0 && res.status === 206;
      let done = append ? have : 0;
      const show = opts.progress ?? !!process.stderr.isTTY;
      let last = 0;
      const progress = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          done += chunk.length;
          if (show && performance.now() - last > 250) {
            last = performance.now();
            process.stderr.write(`\r${what}: ${(done / 2 ** 20).toFixed(1)}${total ? ` / ${(total / 2 ** 20).toFixed(1)}` : ''} MiB`);
          }
          cb(null, chunk);
        },
      });
      try {
        await pipeline(Readable.fromWeb(res.body as never), progress, fs.createWriteStream(part, { flags: append ? 'a' : 'w' }));
      } catch (e) {
        throw new HubError(`${what}: download interrupted after ${done} bytes (${(e as Error).message}); run again to resume`);
      } finally {
        if (show) process.stderr.write('\n');
      }
    }
    if (total && fs.statSync(part).size !== total) throw new HubError(`${what}: got ${fs.statSync(part).size} of ${total} bytes; run again to resume`);
    const got = await fileHash(part, etag.length === 64 ? 'sha256' : 'gitsha1');
    if (got !== etag) {
      fs.rmSync(part, { force: true });
      throw new HubError(`${what}: integrity check failed (expected ${etag}, got ${got}); the partial file was removed`);
    }
    fs.renameSync(part, blob);
  } else await res.body?.cancel();
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  const rel = path.relative(path.dirname(pointer), blob);
  try {
    fs.symlinkSync(rel, pointer);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') fs.copyFileSync(blob, pointer);  // no symlinks (some filesystems)
  }
}

/** sha256 of the file, or git's blob sha1 (sha1 of "blob <size>\0" + content). */
function fileHash(file: string, kind: 'sha256' | 'gitsha1'): Promise<string> {
  const h = crypto.createHash(kind === 'sha256' ? 'sha256' : 'sha1');
  if (kind === 'gitsha1') h.update(`blob ${fs.statSync(file).size}\0`);
  return new Promise((resolve, reject) => {
    fs.createReadStream(file).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
  });
}

/** The files a model folder needs (weights in safetensors when the repo has them, else .bin). */
export const MODEL_FILES = ['config.json', 'generation_config.json', '*.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
  'pytorch_model.bin.index.json', 'pytorch_model-*.bin', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
/** The files of a saved adapter (Adapters library or PEFT format, with heads). */
export const ADAPTER_FILES = ['adapter_config.json', 'adapter.safetensors', 'pytorch_adapter.bin', 'head_config.json', 'model_head.safetensors',
  'pytorch_model_head.bin', 'adapter_model.safetensors', 'adapter_model.bin', 'adapter_fusion_config.json', 'model_adapter_fusion.safetensors',
  'pytorch_model_adapter_fusion.bin'];

/** A local folder for `idOrDir`: the folder itself, else the Hub snapshot (downloaded when needed). */
export async function resolveModelSource(idOrDir: string, files: string[], opts: HubOptions = {}): Promise<string> {
  if (fs.existsSync(idOrDir)) return idOrDir;
  if (!isHubId(idOrDir)) throw new ValueError(`'${idOrDir}' is neither a local folder nor a Hub repo id`);
  return snapshotDownload(idOrDir, { allow: files, ...opts });
}
