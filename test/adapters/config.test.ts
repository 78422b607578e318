// Adapter configs: every config string / dict used by the Python library's reference cases serialises to
// exactly the `config` object it saved in adapter_config.json; dicts round-trip; invalid configs are
// refused with the Python library's conditions.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AdapterConfig, ConfigUnion, LoRAConfig, IA3Config, SeqBnConfig, ParBnConfig, PrefixTuningConfig, MAMConfig, UniPELTConfig,
  parseConfigString, parseLiteral, ADAPTER_CONFIG_MAP, type ConfigDict,
} from '../../lib/adapters/config.ts';
import { ValueError } from '../../lib/errors.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const shared = path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared');
const ref = path.join(shared, 'reference');
const haveShared = fs.existsSync(path.join(ref, 'manifest.json'));

function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortDeep((v as Record<string, unknown>)[k])]));
  return v;
}

if (!haveShared) test('reference config cases skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  const manifest = JSON.parse(fs.readFileSync(path.join(ref, 'manifest.json'), 'utf8')) as { cases: Record<string, unknown>[] };
  const seen = new Set<string>();
  for (const c of manifest.cases) {
    if (c.kind !== 'method' || !c.adapter_dirs) continue;
    const arg = c.config_arg as string | ConfigDict;
    const key = `${c.arch}:${JSON.stringify(arg)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    test(`config ${c.id}: ${typeof arg === 'string' ? arg : 'dict'} serialises like the Python library`, (t) => {
      const dir = path.join(ref, (c.adapter_dirs as Record<string, string>).a!);
      const saved = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
      const cfg = AdapterConfig.load(arg);
      t.deepEqual(sortDeep(cfg.toDict()), sortDeep(saved.config));
      // and the saved dict reads back to the same config
      t.deepEqual(sortDeep(AdapterConfig.fromDict(saved.config).toDict()), sortDeep(saved.config));
    });
  }
}

test('every string id builds', (t) => {
  for (const id of Object.keys(ADAPTER_CONFIG_MAP)) t.truthy(parseConfigString(id).toDict(), id);
  t.true(parseConfigString('ia3') instanceof IA3Config);
  t.true(parseConfigString('pfeiffer') instanceof SeqBnConfig);
  t.is(parseConfigString('houlsby').get('non_linearity'), 'swish');
  t.is(parseConfigString('scaled_parallel').get('scaling'), 'learned');
  t.is(parseConfigString('prefix_tuning_flat').get('flat'), true);
});

test('defaults match the Python library', (t) => {
  const par = new ParBnConfig();
  t.is(par.get('reduction_factor'), 2);
  t.is(par.get('scaling'), 4.0);
  const ia3 = new IA3Config();
  t.deepEqual(ia3.get('attn_matrices'), ['k', 'v']);
  t.is(ia3.get('intermediate_lora'), true);
  t.is(new LoRAConfig().get('alpha'), 8);
  const mam = new MAMConfig();
  t.is((mam.configs[0] as PrefixTuningConfig).get('bottleneck_size'), 800);
  const uni = new UniPELTConfig();
  t.true(uni.configs.every((c) => c.get('use_gating') === true));
  t.is(uni.configs[2]!.get('alpha'), 2);
  t.is(uni.configs[0]!.get('prefix_length'), 10);
});

test('config strings: key/value overrides with Python literals and unions', (t) => {
  const c = parseConfigString("lora[r=4, alpha=16, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]");
  t.is(c.get('r'), 4);
  t.is(c.get('alpha'), 16);
  t.deepEqual(c.get('attn_matrices'), ['q', 'k', 'v']);
  const bn = parseConfigString("seq_bn[reduction_factor={'1': 4, 'default': 8}, leave_out=[0], non_linearity='gelu']") as SeqBnConfig;
  t.is(bn.bottleneckSize(32, 1), 8);
  t.is(bn.bottleneckSize(32, 0), 4);
  const u = parseConfigString('lora|par_bn');
  t.true(u instanceof ConfigUnion);
  t.is((u as ConfigUnion).configs.length, 2);
  t.deepEqual(parseLiteral("{'a': [1, 2.5, None, True], 'b': \"x\"}"), { a: [1, 2.5, null, true], b: 'x' });
});

test('invalid configs are refused with clear messages', (t) => {
  t.throws(() => parseConfigString('nope'), { instanceOf: ValueError, message: /Unknown adapter config 'nope'/ });
  t.throws(() => parseConfigString('lora[r=]'), { instanceOf: ValueError });
  t.throws(() => parseConfigString('lora[bogus=1]'), { instanceOf: ValueError, message: /unknown config key 'bogus'/ });
  t.throws(() => new LoRAConfig({ composition_mode: 'mul' }), { instanceOf: ValueError, message: /composition_mode/ });
  t.throws(() => new LoRAConfig({ composition_mode: 'scale', r: 4 }), { instanceOf: ValueError, message: /r=1/ });
  t.throws(() => new LoRAConfig({ attn_matrices: ['q', 'x'] }), { instanceOf: ValueError });
  t.throws(() => new SeqBnConfig({ scaling: 'huge' }), { instanceOf: ValueError });
  t.throws(() => new SeqBnConfig({ init_weights: 'zeros' }), { instanceOf: ValueError, message: /init_weights/ });
  // a reduction_factor map without 'default' is checked per layer when added (the Python library's lookup)
  t.is(new SeqBnConfig({ reduction_factor: { '1': 4 } }).bottleneckSize(16, 1), 4);
  t.throws(() => new SeqBnConfig({ reduction_factor: { '1': 4 } }).bottleneckSize(16, 0), { instanceOf: ValueError, message: /no entry for layer 0/ });
  t.throws(() => new SeqBnConfig({ hypercomplex_nonlinearity: 'bogus' }), { instanceOf: ValueError, message: /hypercomplex_nonlinearity/ });
  t.throws(() => new SeqBnConfig({ phm_c_init: 'bogus' }), { instanceOf: ValueError, message: /phm_c_init/ });
  // ConfigUnion.validate: two LoRAs, two output bottlenecks, nested unions
  t.throws(() => parseConfigString('lora|ia3'), { instanceOf: ValueError, message: /same adapter architecture/ });
  t.throws(() => parseConfigString('seq_bn|par_bn'), { instanceOf: ValueError, message: /cannot be combined/ });
  t.notThrows(() => new ConfigUnion(new SeqBnConfig({ mh_adapter: true, output_adapter: false }), new SeqBnConfig()));
  t.throws(() => new ConfigUnion(new ConfigUnion(new LoRAConfig()), new SeqBnConfig()), { instanceOf: ValueError });
});
