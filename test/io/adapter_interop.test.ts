// Save/load in the Python library's formats: every reference adapter folder loads from its .bin alone too;
// saveAdapter(format 'bin') writes the same keys (prefix-tuning aliases included) and values as the Python
// library's pytorch_adapter.bin, loads back to the same output, and saves byte-identically twice; torch.load
// (weights_only=True) reads what we write when python3-torch is present; loadAs, leaveOut, heads and fusions.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, Fuse, loadSafetensors, scope, ops, randn, noGrad, type Tensor } from '../../lib/index.ts';
import { loadTorchBin } from '../../lib/io/torch_bin.ts';
import { saveTorchBin } from '../../lib/io/torch_save.ts';
import { maxDiff } from '../helpers/tensor_diff.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ref = path.join(path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const have = fs.existsSync(path.join(ref, 'manifest.json'));
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'interop-'));
const torchPy = (() => {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' });
  return r.status === 0 ? '/usr/bin/python3' : null;
})();

test('torch.save writer: our reader and (when present) torch.load(weights_only=True) read every dtype and shared storages', (t) => {
  const dir = tmp();
  const a = randn([3, 4], { seed: 1 });
  const ts = new Map<string, Tensor>([['w', a], ['alias', a], ['h', randn([2, 5], { seed: 2 }).to('bf16')], ['s', randn([], { seed: 3 })]]);
  const f = path.join(dir, 'x.bin');
  saveTorchBin(f, ts);
  const back = loadTorchBin(f);
  t.deepEqual([...back.keys()], ['w', 'alias', 'h', 's']);
  for (const [k, v] of ts) t.is(maxDiff(back.get(k)!, v), 0, k);
  if (torchPy) {
    const r = spawnSync(torchPy, ['-c', `import torch,json; d=torch.load(${JSON.stringify(f)}, weights_only=True); print(json.dumps({k: [str(v.dtype), list(v.shape), v.float().flatten().tolist()[:3]] for k, v in d.items()}), d['w'].data_ptr() == d['alias'].data_ptr())`], { encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    const [js, shared] = r.stdout.trim().split('\n').at(-1)!.split('} ');
    const d = JSON.parse(js + '}');
    t.deepEqual(d.h.slice(0, 2), ['torch.bfloat16', [2, 5]]);
    t.is(shared, 'True');
  } else t.log('python3-torch not present: torch.load check skipped');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('test/reference/check_python_load.py accepts what saveAdapter writes (both formats, with a head) when python3-torch is present', (t) => {
  if (!torchPy) { t.log('python3-torch not present: check skipped'); t.pass(); return; }
  const dir = tmp();
  const m = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32 }, { seed: 1 });
  m.addAdapter('a', 'lora');
  m.addClassificationHead('a', { num_labels: 2 });
  for (const format of ['safetensors', 'bin'] as const) {
    m.saveAdapter(path.join(dir, format), 'a', { format });
    const r = spawnSync(torchPy, [path.join(root, 'test', 'reference', 'check_python_load.py'), path.join(dir, format)], { encoding: 'utf8' });
    t.is(r.status, 0, r.stdout + r.stderr);
    t.regex(r.stdout, format === 'bin' ? /pytorch_adapter\.bin: torch\.load\(weights_only=True\) read \d+ tensors/ : /adapter\.safetensors: valid safetensors/);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

if (!have) test('reference interop cases skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  const manifest = JSON.parse(fs.readFileSync(path.join(ref, 'manifest.json'), 'utf8')) as { cases: Record<string, any>[] };
  const inputs = new Map<string, Map<string, Tensor>>();
  const inp = (arch: string) => inputs.get(arch) ?? inputs.set(arch, loadSafetensors(path.join(ref, arch, 'base.safetensors'))).get(arch)!;
  const cases = manifest.cases.filter((c) => c.kind === 'method' && ['bert', 'gpt2'].includes(c.arch) && fs.existsSync(path.join(ref, c.adapter_dirs.a, 'pytorch_adapter.bin')));
  for (const c of cases) {
    const method = (c.id as string).split('/')[1]!;
    test(`${c.id}: loads from pytorch_adapter.bin alone; our .bin has the Python keys and values, reloads, and saves identically`, (t) => {
      const dir = tmp();
      // the reference folder with its .bin only
      const only = path.join(dir, 'ref_bin');
      fs.mkdirSync(only);
      fs.copyFileSync(path.join(ref, c.adapter_dirs.a, 'adapter_config.json'), path.join(only, 'adapter_config.json'));
      fs.copyFileSync(path.join(ref, c.adapter_dirs.a, 'pytorch_adapter.bin'), path.join(only, 'pytorch_adapter.bin'));
      const cfg = method === 'direft' ? 'direft' : undefined;
      const feed = { inputIds: inp(c.arch).get('input_ids')!, attentionMask: inp(c.arch).get('attention_mask')! };
      const exp = loadSafetensors(path.join(ref, c.expected_file)).get('last_hidden_state')!;
      const m = AutoAdapterModel.fromPretrained(path.join(ref, c.base_model_dir));
      const shared = loadSafetensors(path.join(ref, c.expected_file));
      const prefix = c.arch === 'bert' ? 'bert.' : 'transformer.';
      const fixShared = (mm: typeof m) => noGrad(() => { for (const [k, v] of shared) if (k.startsWith('shared/')) mm.stateDict().get(prefix + k.slice(7))!.copy_(v); });
      m.loadAdapter(only, { setActive: true, config: cfg });
      fixShared(m);
      const out = scope(() => m.forward(feed).lastHiddenState.clone());
      t.true(maxDiff(out, exp) < 1e-4, 'output from the .bin');
      // our .bin: same keys (modulo the flex-head prefix) and values as the Python library's
      m.saveAdapter(path.join(dir, 'ours'), 'a', { format: 'bin' });
      const mine = loadTorchBin(path.join(dir, 'ours', 'pytorch_adapter.bin'));
      const theirs = loadTorchBin(path.join(ref, c.adapter_dirs.a, 'pytorch_adapter.bin'));
      const strip = (k: string) => (k.startsWith(prefix) ? k.slice(prefix.length) : k);
      t.deepEqual([...mine.keys()].map(strip).sort(), [...theirs.keys()].map(strip).sort());
      const theirsByKey = new Map([...theirs].map(([k, v]) => [strip(k), v]));
      for (const [k, v] of mine) if (!k.includes('shared_parameters')) t.is(maxDiff(v, theirsByKey.get(strip(k))!), 0, k);
      // reload ours; a second save is byte-identical (both formats)
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, c.base_model_dir));
      m2.loadAdapter(path.join(dir, 'ours'), { setActive: true, config: cfg });
      fixShared(m2);
      t.is(scope(() => maxDiff(m2.forward(feed).lastHiddenState, out)), 0);
      m2.saveAdapter(path.join(dir, 'again'), 'a', { format: 'bin' });
      t.true(fs.readFileSync(path.join(dir, 'ours', 'pytorch_adapter.bin')).equals(fs.readFileSync(path.join(dir, 'again', 'pytorch_adapter.bin'))));
      if (!['prefix_tuning', 'prefix_tuning_flat', 'prefix_tuning_default', 'mam', 'unipelt'].includes(method)) {
        m.saveAdapter(path.join(dir, 's1'), 'a');
        m2.saveAdapter(path.join(dir, 's2'), 'a');
        t.true(fs.readFileSync(path.join(dir, 's1', 'adapter.safetensors')).equals(fs.readFileSync(path.join(dir, 's2', 'adapter.safetensors'))));
        t.is(fs.readFileSync(path.join(dir, 's1', 'adapter_config.json'), 'utf8'), fs.readFileSync(path.join(dir, 's2', 'adapter_config.json'), 'utf8'));
      }
      if (torchPy) {
        const r = spawnSync(torchPy, ['-c', `import torch; d=torch.load(${JSON.stringify(path.join(dir, 'ours', 'pytorch_adapter.bin'))}, weights_only=True); print(len(d))`], { encoding: 'utf8' });
        t.is(r.status, 0, r.stderr);
        t.is(Number(r.stdout.trim()), mine.size);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }

  test('loadAs renames, leaveOut skips layers, heads and fusions save/load in both formats', (t) => {
    const dir = tmp();
    const base = path.join(ref, 'models', 'bert');
    const m = AutoAdapterModel.fromPretrained(base);
    const n = m.loadAdapter(path.join(ref, 'bert', 'seq_bn', 'a'), { loadAs: 'renamed', leaveOut: [1], setActive: true });
    t.is(n, 'renamed');
    const names = m.namedParameters().map(([k]) => k).filter((k) => k.includes('.renamed.'));
    t.true(names.length > 0 && names.every((k) => !k.includes('layer.1.')), names.join());
    t.is(JSON.stringify(JSON.parse(fs.readFileSync(path.join(ref, 'bert', 'seq_bn', 'a', 'adapter_config.json'), 'utf8')).config.leave_out), '[]');
    // heads + fusion in .bin form
    m.loadAdapter(path.join(ref, 'bert', 'seq_bn', 'a'), { loadAs: 'y' });
    m.addAdapter('x', 'seq_bn');
    const fname = m.addAdapterFusion(['y', 'x']);
    m.addClassificationHead('y', { num_labels: 3 });
    m.saveAllAdapters(path.join(dir, 'all'), { format: 'bin' });
    m.saveAllAdapterFusions(path.join(dir, 'fus'), { format: 'bin' });
    t.true(fs.existsSync(path.join(dir, 'all', 'y', 'pytorch_model_head.bin')));
    t.true(fs.existsSync(path.join(dir, 'all', 'x', 'pytorch_adapter.bin')));
    t.true(fs.existsSync(path.join(dir, 'fus', fname, 'pytorch_model_adapter_fusion.bin')));
    const m2 = AutoAdapterModel.fromPretrained(base);
    m2.loadAdapter(path.join(dir, 'all', 'y'));
    m2.loadAdapter(path.join(dir, 'all', 'x'));
    m2.loadAdapterFusion(path.join(dir, 'fus', fname));
    for (const mm of [m, m2]) { mm.setActiveAdapters(new Fuse('y', 'x')); mm.activeHead = 'y'; }
    const feed = { inputIds: [[5, 6, 7, 8]] };
    t.is(scope(() => maxDiff(m.forward(feed).logits!, m2.forward(feed).logits!)), 0);
    fs.rmSync(dir, { recursive: true, force: true });
    void ops;
  });
}
