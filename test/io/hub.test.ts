// Hub downloads against a local HTTP server that answers like the Hub's endpoints (repo info, resolve with
// ETag / LFS redirect + X-Linked-Etag, ranged LFS content): the huggingface_hub cache layout, refs and
// relative symlinks, revisions, HF_TOKEN, offline mode, resuming an interrupted download, and the integrity check.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { serve as serveRepos, COMMITS } from '../helpers/hub_server.mjs';
import { AutoAdapterModel, saveSafetensors, scope, type Tensor } from '../../lib/index.ts';
import { snapshotDownload, HubError } from '../../lib/io/hub.ts';
import { maxDiff } from '../helpers/tensor_diff.ts';

const cfg = { model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, max_position_embeddings: 32, type_vocab_size: 2 };
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hub-'));
// a model repo and an adapter repo, as files
const src = AutoAdapterModel.fromConfig(cfg, { seed: 1 }).eval();
fs.mkdirSync(path.join(work, 'repo'));
fs.writeFileSync(path.join(work, 'repo', 'config.json'), JSON.stringify(cfg));
saveSafetensors(path.join(work, 'repo', 'model.safetensors'), new Map(src.namedParameters()) as Map<string, Tensor>);
fs.writeFileSync(path.join(work, 'repo', 'pytorch_model.bin'), 'a .bin copy that must not be fetched when safetensors exist');
src.addAdapter('a', 'lora[r=4]');
src.saveAdapter(path.join(work, 'adapter'), 'a');
const repos = { 'org/tiny': path.join(work, 'repo'), 'org/tiny-adapter': path.join(work, 'adapter') };
const serve = (opts: { failFirstLfs?: boolean; corrupt?: boolean; token?: string }) => serveRepos(repos, opts);

test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));

test.serial('fromPretrainedAsync / loadAdapterAsync download into the huggingface_hub cache layout; the model equals the source', async (t) => {
  const s = await serve({});
  const cacheDir = path.join(work, 'cache1');
  try {
    const m = await AutoAdapterModel.fromPretrainedAsync('org/tiny', { endpoint: s.url, cacheDir, progress: false });
    const name = await m.loadAdapterAsync('org/tiny-adapter', { endpoint: s.url, cacheDir, progress: false, setActive: true });
    t.is(name, 'a');
    src.setActiveAdapters('a');
    const ids = { inputIds: [[3, 4, 5, 6]] };
    t.is(scope(() => maxDiff(m.forward(ids).lastHiddenState, src.forward(ids).lastHiddenState)), 0);
    const folder = path.join(cacheDir, 'models--org--tiny');
    t.is(fs.readFileSync(path.join(folder, 'refs', 'main'), 'utf8'), COMMITS.main);
    const link = path.join(folder, 'snapshots', COMMITS.main, 'model.safetensors');
    t.true(fs.lstatSync(link).isSymbolicLink());
    t.regex(fs.readlinkSync(link), /^\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/);
    t.false(fs.existsSync(path.join(folder, 'snapshots', COMMITS.main, 'pytorch_model.bin')), 'the .bin is skipped when safetensors exist');
    // a second call makes no download; the sync fromPretrained finds the cached snapshot
    const before = s.log.paths.filter((p) => p.includes('/resolve/')).length;
    await snapshotDownload('org/tiny', { endpoint: s.url, cacheDir, allow: ['config.json', '*.safetensors'] });
    t.is(s.log.paths.filter((p) => p.includes('/resolve/')).length, before);
    t.notThrows(() => AutoAdapterModel.fromPretrained('org/tiny', { cacheDir }));
    // revisions: a tag resolves to its own commit
    const snap = await snapshotDownload('org/tiny', { endpoint: s.url, cacheDir, revision: 'v1', allow: ['config.json'] });
    t.true(snap.endsWith(COMMITS.v1));
    t.is(fs.readFileSync(path.join(folder, 'refs', 'v1'), 'utf8'), COMMITS.v1);
  } finally {
    await s.close();
  }
});

test.serial('offline mode uses the cache only; an interrupted download resumes with a Range request; HF_TOKEN is sent', async (t) => {
  const cacheDir = path.join(work, 'cache2');
  const s = await serve({ failFirstLfs: true, token: 'sekret' });
  try {
    await t.throwsAsync(snapshotDownload('org/tiny', { endpoint: s.url, cacheDir }), { instanceOf: HubError, message: /access denied .*HF_TOKEN/ });
    process.env.HF_TOKEN = 'sekret';
    try {
      await t.throwsAsync(snapshotDownload('org/tiny', { endpoint: s.url, cacheDir, progress: false }), { message: /interrupted|got \d+ of \d+ bytes.*resume/ });
      t.true(fs.readdirSync(path.join(cacheDir, 'models--org--tiny', 'blobs')).some((f) => f.endsWith('.incomplete')));
      const snap = await snapshotDownload('org/tiny', { endpoint: s.url, cacheDir, progress: false });
      t.true(s.log.ranges.some((r) => /^bytes=\d+-$/.test(r) && r !== 'bytes=0-'), `ranges ${s.log.ranges}`);
      t.true(fs.existsSync(path.join(snap, 'model.safetensors')));
      t.true(s.log.auth.some((a) => a === 'Bearer sekret'));
    } finally {
      delete process.env.HF_TOKEN;
    }
  } finally {
    await s.close();
  }
  // server gone: offline reads the cache, and refuses what is not there
  const m = await AutoAdapterModel.fromPretrainedAsync('org/tiny', { cacheDir, offline: true });
  t.truthy(m);
  await t.throwsAsync(AutoAdapterModel.fromPretrainedAsync('org/other', { cacheDir, offline: true }), { message: /not in the cache .*HF_HUB_OFFLINE/ });
  t.throws(() => AutoAdapterModel.fromPretrained('org/other', { cacheDir, offline: true }), { message: /not in the cache .*HF_HUB_OFFLINE/ });
});

test.serial('a corrupt download fails the integrity check and leaves no blob; a missing repo is a clear 404', async (t) => {
  const cacheDir = path.join(work, 'cache3');
  const s = await serve({ corrupt: true });
  try {
    await t.throwsAsync(snapshotDownload('org/tiny', { endpoint: s.url, cacheDir, progress: false }), { message: /integrity check failed/ });
    const blobs = fs.readdirSync(path.join(cacheDir, 'models--org--tiny', 'blobs'));
    t.false(blobs.some((f) => f.length === 64), `blobs: ${blobs}`);
    await t.throwsAsync(snapshotDownload('org/nope', { endpoint: s.url, cacheDir }), { message: /not found on the Hub/ });
  } finally {
    await s.close();
  }
});

test.serial('the synchronous fromPretrained / loadAdapter download a Hub id (in a child process) into the same cache', async (t) => {
  const cacheDir = path.join(work, 'cache4');
  // the server runs in its own process: a synchronous download blocks this one's event loop
  const child = spawn(process.execPath, [path.join(path.dirname(new URL(import.meta.url).pathname), '../helpers/hub_server.mjs'), JSON.stringify({ repos, opts: {} })]);
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(String(d).trim()));
      child.once('exit', (c) => reject(new Error(`server exited ${c}`)));
    });
    const m = AutoAdapterModel.fromPretrained('org/tiny', { endpoint: url, cacheDir, progress: false });
    t.is(m.loadAdapter('org/tiny-adapter', { endpoint: url, cacheDir, progress: false, setActive: true }), 'a');
    src.setActiveAdapters('a');
    const ids = { inputIds: [[7, 8, 9]] };
    t.is(scope(() => maxDiff(m.forward(ids).lastHiddenState, src.forward(ids).lastHiddenState)), 0);
    t.true(fs.existsSync(path.join(cacheDir, 'models--org--tiny', 'refs', 'main')));
    t.throws(() => AutoAdapterModel.fromPretrained('org/missing', { endpoint: url, cacheDir }), { message: /not found on the Hub/ });
  } finally {
    child.kill();
  }
});
