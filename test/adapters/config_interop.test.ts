// Configs and saved folders as the Python library reads and writes them: float fields stay floats in JSON (Python's
// Adapter refuses `"scaling": 1`), both weight formats by default (Python's load_adapter reads the .bin unless
// use_safetensors), saving into a folder keeps its other files, loading over an adapter replaces it, configs from
// other versions (unknown keys, the v1 invertible_adapter dict, unversioned activation names, pre-1.1 LoRA/(IA)³
// alpha) load as there, the default config is seq_bn, leave_out reaches ReFT, and class-level settings survive replace().
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AutoAdapterModel, AdapterConfig, ValueError, noGrad, ops, scope } from '../../lib/index.ts';
import { AdapterPlusConfig, DiReftConfig, ReftConfig } from '../../lib/adapters/config.ts';
import { Fuse } from '../../lib/adapters/composition.ts';
import { adapterConfigHash, pythonJson } from '../../lib/adapters/model.ts';

const cfg = { model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-interop-'));

test('saved configs keep float fields as floats; both weight formats; other files in the folder stay', (t) => {
  t.is(pythonJson({ config: { scaling: 1, dropout: 0, reduction_factor: 16, r: 8, stochastic_depth: 0.1 } }),
    '{\n  "config": {\n    "dropout": 0.0,\n    "r": 8,\n    "reduction_factor": 16,\n    "scaling": 1.0,\n    "stochastic_depth": 0.1\n  }\n}');
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 1 });
  m.addAdapter('a', 'par_bn');
  m.addClassificationHead('a', { num_labels: 2 });
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  m.saveAdapter(dir, 'a');
  const files = fs.readdirSync(dir).sort();
  t.deepEqual(files, ['adapter.safetensors', 'adapter_config.json', 'head_config.json', 'model_head.safetensors', 'notes.txt',
    'pytorch_adapter.bin', 'pytorch_model_head.bin']);
  const text = fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8');
  t.regex(text, /"scaling": 4\.0/);
  t.regex(text, /"dropout": 0\.0/);
  // one format only: the other format's stale file goes
  m.saveAdapter(dir, 'a', { format: 'safetensors' });
  t.false(fs.existsSync(path.join(dir, 'pytorch_adapter.bin')));
  t.true(fs.existsSync(path.join(dir, 'notes.txt')));
  // loading back: over the existing adapter (replaced), the head not activated unless asked
  const n = AutoAdapterModel.fromConfig(cfg, { seed: 2 });
  n.addAdapter('a', 'seq_bn');
  t.is(n.loadAdapter(dir), 'a');
  t.is(n.adapters.ctx.configs.get('a')!.get('is_parallel'), true);
  t.is(n.activeHead, null);
  n.loadAdapter(dir, { setActive: true });
  t.is(n.activeHead, 'a');
  fs.rmSync(dir, { recursive: true, force: true });
  m.dispose(); n.dispose();
});

test('configs of other versions load as in Python; default config; leave_out on ReFT; replace keeps DiReFT', (t) => {
  // unknown keys are kept aside (not serialized); the v1 invertible_adapter dict maps to inv_adapter
  const c = AdapterConfig.fromDict({ architecture: 'lora', r: 4, alpha: 4, some_new_key: 1 });
  t.deepEqual(c.extras, { some_new_key: 1 });
  t.false('some_new_key' in c.toDict());
  const inv = AdapterConfig.fromDict({ mh_adapter: false, output_adapter: true, reduction_factor: 16, non_linearity: 'relu',
    invertible_adapter: { block_type: 'nice', reduction_factor: 2 } });
  t.is(inv.get('inv_adapter'), 'nice');
  t.is(inv.get('inv_adapter_reduction_factor'), 2);
  // direct constructors and replace() stay strict, as Python's dataclasses
  t.throws(() => c.replace({ bogus: 1 }), { instanceOf: ValueError, message: /unknown config key 'bogus'/ });
  // replace keeps a subclass's class-level settings
  const d = new DiReftConfig().replace({ r: 2 });
  t.true(d instanceof DiReftConfig);
  t.false((d as ReftConfig).subtractProjection);
  t.false((AdapterConfig.load('direft', { r: 2 }) as ReftConfig).subtractProjection);
  // AdapterPlus defaults (adapters 1.1.0)
  const ap = new AdapterPlusConfig();
  t.deepEqual([ap.get('original_ln_before'), ap.get('original_ln_after'), ap.get('residual_before_ln')], [true, false, false]);
  // no config: seq_bn; dtype is refused rather than ignored
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 1 });
  m.addAdapter('x');
  m.addAdapter('y', {});
  t.deepEqual(m.adapters.ctx.configs.get('x')!.toDict(), AdapterConfig.load('seq_bn').toDict());
  t.deepEqual(m.adapters.ctx.configs.get('y')!.toDict(), AdapterConfig.load('seq_bn').toDict());
  t.throws(() => m.addAdapter('z', 'lora[dtype="bfloat16"]'), { instanceOf: ValueError, message: /dtype/ });
  // files from older versions: unversioned "gelu" is gelu_new; adapters < 1.1 LoRA and (IA)³ get alpha := r
  const dir = tmp();
  m.addAdapter('g', 'seq_bn[non_linearity="gelu"]');
  m.saveAdapter(path.join(dir, 'g'), 'g');
  const f = path.join(dir, 'g', 'adapter_config.json');
  const j = JSON.parse(fs.readFileSync(f, 'utf8'));
  delete j.version;
  fs.writeFileSync(f, JSON.stringify(j));
  t.is(m.loadAdapter(path.join(dir, 'g'), { loadAs: 'g2' }), 'g2');
  t.is(m.adapters.ctx.configs.get('g2')!.get('non_linearity'), 'gelu_new');
  m.addAdapter('i', 'ia3');
  m.saveAdapter(path.join(dir, 'i'), 'i');
  const fi = path.join(dir, 'i', 'adapter_config.json');
  const ji = JSON.parse(fs.readFileSync(fi, 'utf8'));
  ji.version = 'adapters.1.0.0';
  ji.config.alpha = 4;
  fs.writeFileSync(fi, JSON.stringify(ji));
  m.loadAdapter(path.join(dir, 'i'), { loadAs: 'i2' });
  t.is(m.adapters.ctx.configs.get('i2')!.get('alpha'), 1);
  // leave_out on load reaches ReFT (an attribute there): no module in that layer, its saved weights skipped
  m.addAdapter('r', 'loreft');
  noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('.r.')) p.copy_(ops.add(p, 0.1)); });
  m.saveAdapter(path.join(dir, 'r'), 'r');
  m.loadAdapter(path.join(dir, 'r'), { loadAs: 'r2', leaveOut: [0] });
  t.deepEqual(m.adapters.ctx.configs.get('r2')!.leaveOut, [0]);
  const keys = m.namedParameters().map(([k]) => k).filter((k) => k.includes('.r2.'));
  t.true(keys.length > 0 && keys.every((k) => !/layer\.0\./.test(k)), keys.join(' '));
  // a failed load leaves nothing half-loaded behind
  fs.rmSync(path.join(dir, 'i', 'adapter.safetensors'));
  fs.rmSync(path.join(dir, 'i', 'pytorch_adapter.bin'));
  t.throws(() => m.loadAdapter(path.join(dir, 'i'), { loadAs: 'i3' }));
  t.false(m.hasAdapter('i3'));
  fs.rmSync(dir, { recursive: true, force: true });
  m.dispose();
  void scope;
});

test('stochastic depth skips parallel adapters; fusion dropout defaults to the model attention dropout', (t) => {
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 1 });
  m.addAdapter('p', 'par_bn[stochastic_depth=0.9]');
  noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('.p.')) p.copy_(ops.add(p, ops.randn(p.shape, { std: 0.2, seed: k.length }))); });
  m.setActiveAdapters('p');
  m.train();
  const run = () => scope(() => Array.from(m.forward({ inputIds: [[1, 2, 3, 4], [5, 6, 7, 8]] }).lastHiddenState.toArray() as Float32Array));
  t.deepEqual(run(), run());
  m.dispose();
  const f = AutoAdapterModel.fromConfig({ ...cfg, attention_probs_dropout_prob: 0.5 }, { seed: 1 });
  f.addAdapter('a', 'seq_bn');
  f.addAdapter('b', 'seq_bn');
  f.addAdapterFusion(['a', 'b']);
  const layer = [...f.namedModules()].find(([k]) => k.endsWith('adapter_fusion_layer.a,b'))![1] as unknown as { defaultDropout: number };
  t.is(layer.defaultDropout, 0.5);
  f.dispose();
});

// saveAllAdapters' config_id: the Python library's get_adapter_config_hash, checked against hashes computed by Python's
// json / hashlib (test/reference/gen_config_hash.py) for every adapter_config.json the Python library wrote in ../shared
test('config_id (get_adapter_config_hash) equals Python\'s for every reference config; saveAllAdapters writes it', (t) => {
  const fx = JSON.parse(fs.readFileSync(new URL('../fixtures/config_hash.json', import.meta.url), 'utf8')) as Record<string, { config: Record<string, unknown>; hash: string }>;
  const cases = Object.entries(fx);
  t.true(cases.length > 100);
  for (const [name, c] of cases) t.is(adapterConfigHash(AdapterConfig.fromDict(c.config as never).toDict()), c.hash, name);
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 1 });
  m.addAdapter('a', 'seq_bn');
  const dir = tmp();
  m.saveAllAdapters(dir);
  const j = JSON.parse(fs.readFileSync(path.join(dir, 'a', 'adapter_config.json'), 'utf8'));
  t.is(j.config_id, adapterConfigHash(AdapterConfig.load('seq_bn').toDict()));
  fs.rmSync(dir, { recursive: true, force: true });
  m.dispose();
});

test('adapter setups hold their fusions and heads (head_setup); a fusion folder without weights adds nothing', (t) => {
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 3 }).eval();
  m.addAdapter('a', 'seq_bn');
  m.addAdapter('b', 'seq_bn');
  m.addAdapterFusion(['a', 'b']);
  m.addClassificationHead('a,b', { num_labels: 3 });
  noGrad(() => { for (const [k, p] of m.namedParameters()) if (/\.(a|b)\.|fusion/.test(k)) p.copy_(ops.add(p, ops.randn(p.shape, { std: 0.1, seed: k.length }))); });
  const fuse = new Fuse('a', 'b');
  m.setActiveAdapters(fuse);
  m.activeHead = 'a,b';
  const want = scope(() => Array.from(m.forward({ inputIds: [[1, 2, 3, 4]] }).logits!.toArray() as Float32Array));
  const dir = tmp();
  m.saveAdapterSetup(dir, fuse, { headSetup: 'a,b' });
  t.deepEqual(fs.readdirSync(dir).sort(), ['a', 'a,b', 'adapter_setup.json', 'b']);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_setup.json'), 'utf8')).head_setup, 'a,b');
  const n = AutoAdapterModel.fromConfig(cfg, { seed: 3 }).eval();  // the same base model
  n.loadAdapterSetup(dir, { setActive: true });
  t.deepEqual(n.adapters.fusionNames(), ['a,b']);
  t.is(n.activeHead, 'a,b');
  const got = scope(() => Array.from(n.forward({ inputIds: [[1, 2, 3, 4]] }).logits!.toArray() as Float32Array));
  t.true(got.every((v, i) => Math.abs(v - want[i]!) < 1e-6));
  // a fusion folder whose weights are missing: an error, and no fusion left behind
  const fdir = path.join(dir, 'a,b');
  for (const f of ['model_adapter_fusion.safetensors', 'pytorch_model_adapter_fusion.bin']) fs.rmSync(path.join(fdir, f), { force: true });
  const k = AutoAdapterModel.fromConfig(cfg, { seed: 5 });
  k.addAdapter('a', 'seq_bn');
  k.addAdapter('b', 'seq_bn');
  t.throws(() => k.loadAdapterFusion(fdir));
  t.deepEqual(k.adapters.fusionNames(), []);
  fs.rmSync(dir, { recursive: true, force: true });
  m.dispose(); n.dispose(); k.dispose();
});
