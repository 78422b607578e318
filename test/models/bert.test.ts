// BERT (lib/models/bert.ts) through AutoAdapterModel: the forward pass against the Python library's
// reference output (/work/shared/reference/bert, see its README §1), HF parameter names under the
// flex-head prefix `bert.`, HF-style random init, prefixed checkpoints, train/eval dropout, loadStateDict
// strictness and hidden-state outputs.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ops, tensor, ShapeError, ValueError, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../../lib/io/safetensors.ts';
import type { HFConfig } from '../../lib/models/common.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHARED = path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared');
const REF = path.join(SHARED, 'reference');
const MODEL_DIR = path.join(REF, 'models', 'bert');
const HAVE_REF = fs.existsSync(path.join(MODEL_DIR, 'model.safetensors')) && fs.existsSync(path.join(REF, 'bert', 'base.safetensors'));
const refTest = HAVE_REF ? test : test.skip;
if (!HAVE_REF)
  test('reference data', (t) => {
    t.log(`skipped: ${REF} not found (set ADAPTERS_SHARED)`);
    t.pass();
  });

const ATOL = 1e-4;

function maxAbsDiff(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) return Infinity;
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  return d;
}
function disposeAll(m: Map<string, Tensor>): void {
  for (const v of m.values()) v.dispose();
}
function disposeOut(o: { lastHiddenState: Tensor; hiddenStates?: Tensor[]; pooledOutput?: Tensor }): void {
  o.lastHiddenState.dispose();
  o.pooledOutput?.dispose();
  for (const h of o.hiddenStates ?? []) if (h !== o.lastHiddenState) h.dispose();
}

/** A small BERT config for tests that need no reference data (vocab large enough for init statistics). */
function smallConfig(extra: HFConfig = {}): HFConfig {
  return {
    model_type: 'bert', vocab_size: 500, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
    intermediate_size: 128, max_position_embeddings: 32, type_vocab_size: 2, pad_token_id: 0,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, initializer_range: 0.05, ...extra,
  };
}
const IDS = [[5, 17, 42, 7, 99, 3, 8, 11], [6, 23, 9, 77, 4, 0, 0, 0]];
const MASK = [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]];

refTest('BertModel matches the reference last_hidden_state (1e-4)', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  const ref = loadSafetensors(path.join(REF, 'bert', 'base.safetensors'));
  const out = model.forward({ inputIds: ref.get('input_ids'), attentionMask: ref.get('attention_mask') });
  const d = maxAbsDiff(out.lastHiddenState, ref.get('last_hidden_state')!);
  t.log(`bert last_hidden_state max abs diff ${d.toExponential(2)}`);
  t.true(d <= ATOL, `max abs diff ${d}`);
  t.deepEqual(out.pooledOutput?.shape, [2, 32]);
  disposeOut(out);
  disposeAll(ref);
  model.dispose();
});

refTest('parameter names are the HF state-dict keys under the bert. prefix', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  const h = readSafetensorsHeader(path.join(MODEL_DIR, 'model.safetensors'));
  const want = new Map([...h.entries.values()].map((e) => [`bert.${e.name}`, e.shape.join()]));
  const got = new Map(model.namedParameters().map(([n, p]) => [n, p.shape.join()]));
  t.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [n, s] of want) t.is(got.get(n), s, n);
  t.is(model.modelType, 'bert');
  model.dispose();
});

test('fromConfig initialises like HF: normal(0, initializer_range), zero biases, unit LayerNorm, zero padding row', (t) => {
  const model = AutoAdapterModel.fromConfig(smallConfig(), { seed: 3 });
  const std = (x: Float32Array) => {
    const m = x.reduce((a, b) => a + b, 0) / x.length;
    return { mean: m, std: Math.sqrt(x.reduce((a, b) => a + (b - m) ** 2, 0) / x.length) };
  };
  for (const [name, p] of model.namedParameters()) {
    const x = p.toArray() as Float32Array;
    if (name.endsWith('LayerNorm.weight')) t.true(x.every((v) => v === 1), name);
    else if (name.endsWith('.bias')) t.true(x.every((v) => v === 0), name);
    else if (name === 'bert.embeddings.word_embeddings.weight') {
      const C = p.shape[1]!;
      t.true(x.subarray(0, C).every((v) => v === 0), 'padding row (pad_token_id 0) is zero');
      const s = std(x.subarray(C));
      t.true(Math.abs(s.std - 0.05) < 0.005 && Math.abs(s.mean) < 0.005, `${name}: mean ${s.mean} std ${s.std}`);
    } else if (p.numel >= 1000) {
      const s = std(x);
      t.true(Math.abs(s.std - 0.05) < 0.01 && Math.abs(s.mean) < 0.01, `${name}: mean ${s.mean} std ${s.std}`);
    }
  }
  // seeded: the same seed gives the same weights, another seed different ones
  const again = AutoAdapterModel.fromConfig(smallConfig(), { seed: 3 });
  const other = AutoAdapterModel.fromConfig(smallConfig(), { seed: 4 });
  const w = (m: AdapterModel) => m.stateDict().get('bert.encoder.layer.1.attention.self.query.weight')!;
  t.is(maxAbsDiff(w(model), w(again)), 0);
  t.true(maxAbsDiff(w(model), w(other)) > 0);
  for (const m of [model, again, other]) m.dispose();
});

refTest('a checkpoint whose keys already carry the bert. prefix loads the same weights', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bert-prefixed-'));
  try {
    fs.copyFileSync(path.join(MODEL_DIR, 'config.json'), path.join(dir, 'config.json'));
    const sd = model.stateDict();
    t.true([...sd.keys()].every((k) => k.startsWith('bert.')));
    saveSafetensors(path.join(dir, 'model.safetensors'), sd);
    const again = AutoAdapterModel.fromPretrained(dir);
    const sd2 = again.stateDict();
    for (const [k, v] of sd) t.is(maxAbsDiff(v, sd2.get(k)!), 0, k);
    const a = model.forward({ inputIds: IDS, attentionMask: MASK }), b = again.forward({ inputIds: IDS, attentionMask: MASK });
    t.is(maxAbsDiff(a.lastHiddenState, b.lastHiddenState), 0);
    disposeOut(a);
    disposeOut(b);
    again.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    model.dispose();
  }
});

test('train() enables dropout: train-mode forwards differ from eval and from each other', (t) => {
  const model = AutoAdapterModel.fromConfig(smallConfig({ hidden_dropout_prob: 0.3 }), { seed: 1 });
  model.train();
  t.true([...model.namedModules()].every(([, m]) => m.training));
  const r1 = model.forward({ inputIds: IDS, attentionMask: MASK }), r2 = model.forward({ inputIds: IDS, attentionMask: MASK });
  model.eval();
  t.true([...model.namedModules()].every(([, m]) => !m.training));
  const e1 = model.forward({ inputIds: IDS, attentionMask: MASK });
  t.true(maxAbsDiff(r1.lastHiddenState, e1.lastHiddenState) > 1e-3, 'dropout changes the output in train mode');
  t.true(maxAbsDiff(r1.lastHiddenState, r2.lastHiddenState) > 1e-3, 'each train-mode forward draws a new mask');
  for (const o of [r1, r2, e1]) disposeOut(o);
  model.dispose();
});

// Dropout modules must be registered so that eval() reaches them.
test('eval() makes the forward deterministic even with dropout > 0', (t) => {
  const model = AutoAdapterModel.fromConfig(smallConfig({ hidden_dropout_prob: 0.3 }), { seed: 1 });
  model.train();
  model.eval();
  const e1 = model.forward({ inputIds: IDS, attentionMask: MASK }), e2 = model.forward({ inputIds: IDS, attentionMask: MASK });
  const d = maxAbsDiff(e1.lastHiddenState, e2.lastHiddenState);
  disposeOut(e1);
  disposeOut(e2);
  model.dispose();
  t.is(d, 0, 'two eval-mode forwards are identical');
});

refTest('fromPretrained returns an eval-mode model', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  t.true([...model.namedModules()].every(([, m]) => !m.training));
  model.dispose();
});

test('loadStateDict: strict rejects missing and unexpected keys, non-strict reports them, shapes always checked', (t) => {
  const src = AutoAdapterModel.fromConfig(smallConfig(), { seed: 5 });
  const dst = AutoAdapterModel.fromConfig(smallConfig(), { seed: 6 });
  const full = src.stateDict();
  const qKey = 'bert.encoder.layer.0.attention.self.query.weight';
  const lnKey = 'bert.embeddings.LayerNorm.bias';

  // strict: every key present → loads all
  t.deepEqual(dst.loadStateDict(full), { missingKeys: [], unexpectedKeys: [] });
  t.is(maxAbsDiff(dst.stateDict().get(qKey)!, full.get(qKey)!), 0);

  const fresh = AutoAdapterModel.fromConfig(smallConfig(), { seed: 7 });
  const before = fresh.stateDict().get(qKey)!.toArray();
  const partial = new Map(full);
  partial.delete(lnKey);
  const err = t.throws(() => fresh.loadStateDict(partial), { instanceOf: ValueError });
  t.regex(err!.message, /missing keys: .*embeddings\.LayerNorm\.bias/);
  t.deepEqual(fresh.stateDict().get(qKey)!.toArray(), before, 'a refused load changes nothing');

  const extra = tensor([1, 2, 3], [3]);
  const withExtra = new Map(full).set('cls.predictions.bias', extra);
  t.throws(() => fresh.loadStateDict(withExtra), { instanceOf: ValueError, message: /unexpected keys: cls\.predictions\.bias/ });

  // non-strict: loads what matches and reports the rest
  partial.set('cls.predictions.bias', extra);
  const r = fresh.loadStateDict(partial, { strict: false });
  t.deepEqual(r, { missingKeys: [lnKey], unexpectedKeys: ['cls.predictions.bias'] });
  t.is(maxAbsDiff(fresh.stateDict().get(qKey)!, full.get(qKey)!), 0);

  // wrong shape: an error even when not strict
  const bad = tensor(new Float32Array(64 * 63), [64, 63]);
  t.throws(() => fresh.loadStateDict(new Map([[qKey, bad]]), { strict: false }), { instanceOf: ShapeError });
  for (const x of [extra, bad]) x.dispose();
  for (const m of [src, dst, fresh]) m.dispose();
});

test('outputHiddenStates gives numLayers + 1 states: embeddings, then each layer (the last is lastHiddenState)', (t) => {
  const model = AutoAdapterModel.fromConfig(smallConfig({ num_hidden_layers: 3 }), { seed: 2 }).eval();
  const out = model.forward({ inputIds: IDS, attentionMask: MASK, outputHiddenStates: true });
  t.is(out.hiddenStates!.length, 4);
  for (const h of out.hiddenStates!) t.deepEqual(h.shape, [2, 8, 64]);
  t.is(maxAbsDiff(out.hiddenStates![3]!, out.lastHiddenState), 0);
  const plain = model.forward({ inputIds: IDS, attentionMask: MASK });
  t.is(plain.hiddenStates, undefined);
  t.is(maxAbsDiff(plain.lastHiddenState, out.lastHiddenState), 0);
  disposeOut(out);
  disposeOut(plain);
  model.dispose();
});

test('padding is masked: a padded row equals the same tokens run without padding', (t) => {
  const model = AutoAdapterModel.fromConfig(smallConfig(), { seed: 9 }).eval();
  const padded = model.forward({ inputIds: IDS, attentionMask: MASK });
  const short = model.forward({ inputIds: [IDS[1]!.slice(0, 5)] });
  const row = ops.slice(ops.slice(padded.lastHiddenState, 0, 1, 2), 1, 0, 5).contiguous();
  t.true(maxAbsDiff(row, short.lastHiddenState) < 1e-5);
  row.dispose();
  disposeOut(padded);
  disposeOut(short);
  model.dispose();
});
