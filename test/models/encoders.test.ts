// Encoders beyond BERT, through AutoAdapterModel: RoBERTa, XLM-RoBERTa, DistilBERT and ViT against the
// Python library's reference outputs (/work/shared/reference/<arch>/base.safetensors, README §4), their
// HF parameter names under each flex-head prefix, and fromConfig sanity checks (including ELECTRA, which
// has no reference data: it is checked against BERT, whose layers it shares).
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ops, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { loadSafetensors, readSafetensorsHeader } from '../../lib/io/safetensors.ts';
import type { HFConfig, ModelOutput } from '../../lib/models/common.ts';
import { ViTModel } from '../../lib/models/vit.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REF = path.join(path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const HAVE_REF = fs.existsSync(path.join(REF, 'manifest.json'));
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
function disposeOut(o: ModelOutput): void {
  o.lastHiddenState.dispose();
  o.pooledOutput?.dispose();
  for (const h of o.hiddenStates ?? []) if (h !== o.lastHiddenState) h.dispose();
}
const allFinite = (t: Tensor) => (t.toArray() as Float32Array).every(Number.isFinite);

// reference folder, flex-head prefix, model_type, and output name → ModelOutput field
const CASES = [
  { arch: 'roberta', prefix: 'roberta', modelType: 'roberta' },
  { arch: 'xlm_roberta', prefix: 'roberta', modelType: 'xlm-roberta' },
  { arch: 'distilbert', prefix: 'distilbert', modelType: 'distilbert' },
  { arch: 'vit', prefix: 'vit', modelType: 'vit' },
] as const;
const FIELD: Record<string, keyof ModelOutput> = { last_hidden_state: 'lastHiddenState', pooler_output: 'pooledOutput' };
// manifest input name → ForwardInput field
const INPUT: Record<string, string> = { input_ids: 'inputIds', attention_mask: 'attentionMask', pixel_values: 'pixelValues' };

for (const c of CASES) {
  refTest(`${c.arch}: every reference output matches (1e-4)`, (t) => {
    const arch = JSON.parse(fs.readFileSync(path.join(REF, 'manifest.json'), 'utf8')).archs[c.arch] as { inputs: string[]; outputs: string[] };
    const model = AutoAdapterModel.fromPretrained(path.join(REF, 'models', c.arch));
    t.is(model.modelType, c.modelType);
    const ref = loadSafetensors(path.join(REF, c.arch, 'base.safetensors'));
    const input: Record<string, Tensor> = {};
    for (const name of arch.inputs) input[INPUT[name]!] = ref.get(name)!;
    const out = model.forward(input);
    t.true(arch.outputs.length > 0);
    for (const name of arch.outputs) {
      const got = out[FIELD[name]!] as Tensor | undefined;
      t.truthy(got, `${name} is produced`);
      const d = got ? maxAbsDiff(got, ref.get(name)!) : Infinity;
      t.log(`${c.arch} ${name} [${ref.get(name)!.shape}] max abs diff ${d.toExponential(2)}`);
      t.true(d <= ATOL, `${name}: max abs diff ${d}`);
    }
    disposeOut(out);
    for (const v of ref.values()) v.dispose();
    model.dispose();
  });

  refTest(`${c.arch}: parameter names are the HF keys under the ${c.prefix}. prefix`, (t) => {
    const dir = path.join(REF, 'models', c.arch);
    const model = AutoAdapterModel.fromPretrained(dir);
    const h = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    const want = new Map([...h.entries.values()].map((e) => [`${c.prefix}.${e.name}`, e.shape.join()]));
    const got = new Map(model.namedParameters().map(([n, p]) => [n, p.shape.join()]));
    t.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [n, s] of want) t.is(got.get(n), s, n);
    model.dispose();
  });
}

const TEXT = { inputIds: [[5, 17, 42, 7, 9, 3, 8], [6, 23, 9, 17, 0, 0, 0]], attentionMask: [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]] };

/** Runs the model on TEXT (padding token 0 → pad id) and checks shape, finiteness and masking. */
function textSanity(t: ExecutionContext, model: AdapterModel, C: number, pad: number): ModelOutput {
  const ids = TEXT.inputIds.map((r, i) => r.map((v, j) => (TEXT.attentionMask[i]![j] ? v : pad)));
  const out = model.forward({ inputIds: ids, attentionMask: TEXT.attentionMask, outputHiddenStates: true });
  t.deepEqual(out.lastHiddenState.shape, [2, 7, C]);
  t.true(allFinite(out.lastHiddenState));
  // the padded row equals its 4 real tokens alone
  const short = model.forward({ inputIds: [ids[1]!.slice(0, 4)] });
  const row = ops.slice(ops.slice(out.lastHiddenState, 0, 1, 2), 1, 0, 4).contiguous();
  t.true(maxAbsDiff(row, short.lastHiddenState) < 1e-5, 'padding is masked');
  row.dispose();
  disposeOut(short);
  return out;
}

const SMALL = { vocab_size: 60, max_position_embeddings: 20, initializer_range: 0.02, pad_token_id: 0 };

test('roberta fromConfig: positions start at pad + 1, padding masked, pooler present', (t) => {
  // dropout 0: BertLayer's dropout is not reached by eval() yet (known bug, see test/models/bert.test.ts)
  const cfg: HFConfig = {
    ...SMALL, model_type: 'xlm-roberta', hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32,
    pad_token_id: 1, type_vocab_size: 1, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
  };
  const model = AutoAdapterModel.fromConfig(cfg, { seed: 1 }).eval();
  t.is(model.spec.prefix, 'roberta');
  const out = textSanity(t, model, 16, 1);
  t.deepEqual(out.pooledOutput?.shape, [2, 16]);
  t.is(out.hiddenStates!.length, 2);
  // explicit RoBERTa position ids (pad + 1, pad + 2, ...) give the same result as the default rule
  const pos = [[2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 1, 1, 1]];
  const ids = [TEXT.inputIds[0]!, [6, 23, 9, 17, 1, 1, 1]];
  const a = model.forward({ inputIds: ids, attentionMask: TEXT.attentionMask });
  const b = model.forward({ inputIds: ids, attentionMask: TEXT.attentionMask, positionIds: pos });
  t.is(maxAbsDiff(a.lastHiddenState, b.lastHiddenState), 0);
  for (const o of [out, a, b]) disposeOut(o);
  model.dispose();
});

test('distilbert fromConfig: shapes, masking, train/eval dropout, no pooler', (t) => {
  const cfg: HFConfig = { ...SMALL, model_type: 'distilbert', dim: 16, n_layers: 2, n_heads: 2, hidden_dim: 32, activation: 'relu', dropout: 0.3 };
  const model = AutoAdapterModel.fromConfig(cfg, { seed: 2 }).eval();
  const out = textSanity(t, model, 16, 0);
  t.is(out.pooledOutput, undefined);
  t.is(out.hiddenStates!.length, 3);
  const again = model.forward(TEXT);
  t.is(maxAbsDiff(again.lastHiddenState, out.lastHiddenState), 0, 'eval is deterministic');
  model.train();
  const tr = model.forward(TEXT);
  t.true(maxAbsDiff(tr.lastHiddenState, out.lastHiddenState) > 1e-3, 'train mode applies dropout');
  for (const o of [out, again, tr]) disposeOut(o);
  model.dispose();
});

test('distilbert sinusoidal_pos_embds: fixed sin/cos table, untouched by random init, not trainable', (t) => {
  const cfg: HFConfig = { ...SMALL, model_type: 'distilbert', dim: 8, n_layers: 1, n_heads: 2, hidden_dim: 16, sinusoidal_pos_embds: true };
  const model = AutoAdapterModel.fromConfig(cfg, { seed: 3 });
  const w = model.stateDict().get('distilbert.embeddings.position_embeddings.weight')!;
  t.deepEqual(w.shape, [20, 8]);
  t.false(w.requiresGrad);
  const x = w.toArray() as Float32Array;
  // pos 3, j = 4 (even → sin), j = 5 (odd → cos), both with exponent 2·(j//2)/dim = 4/8
  t.true(Math.abs(x[3 * 8 + 4]! - Math.sin(3 / Math.pow(10000, 0.5))) < 1e-6);
  t.true(Math.abs(x[3 * 8 + 5]! - Math.cos(3 / Math.pow(10000, 0.5))) < 1e-6);
  t.is(x[0], 0);
  t.is(x[1], 1);
  model.dispose();
});

test('vit fromConfig: (B, 1 + patches, C) output, pooler, size checks, train/eval dropout', (t) => {
  const cfg: HFConfig = {
    model_type: 'vit', hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    image_size: [8, 12], patch_size: 4, num_channels: 3, hidden_dropout_prob: 0.3, initializer_range: 0.02,
  };
  const model = AutoAdapterModel.fromConfig(cfg, { seed: 4 }).eval();
  const sd = model.stateDict();
  t.deepEqual(sd.get('vit.embeddings.patch_embeddings.projection.weight')!.shape, [16, 3, 4, 4]);
  t.deepEqual(sd.get('vit.embeddings.position_embeddings')!.shape, [1, 7, 16]);
  t.deepEqual(sd.get('vit.embeddings.cls_token')!.shape, [1, 1, 16]);
  t.true((sd.get('vit.embeddings.cls_token')!.toArray() as Float32Array).some((v) => v !== 0), 'cls_token is initialised');
  const px = ops.randn([2, 3, 8, 12], { seed: 11 });
  const out = model.forward({ pixelValues: px, outputHiddenStates: true });
  t.deepEqual(out.lastHiddenState.shape, [2, 7, 16]);
  t.deepEqual(out.pooledOutput?.shape, [2, 16]);
  t.is(out.hiddenStates!.length, 3);
  t.true(allFinite(out.lastHiddenState));
  // each image is independent of the rest of the batch
  const one = model.forward({ pixelValues: ops.slice(px, 0, 1, 2) });
  t.true(maxAbsDiff(one.lastHiddenState, ops.slice(out.lastHiddenState, 0, 1, 2).contiguous()) < 1e-5);
  const again = model.forward({ pixelValues: px });
  t.is(maxAbsDiff(again.lastHiddenState, out.lastHiddenState), 0, 'eval is deterministic');
  model.train();
  const tr = model.forward({ pixelValues: px });
  t.true(maxAbsDiff(tr.lastHiddenState, out.lastHiddenState) > 1e-3, 'train mode applies dropout');
  model.eval();
  const wrong = ops.randn([1, 3, 12, 8], { seed: 12 });
  t.throws(() => model.forward({ pixelValues: wrong }), { message: /doesn't match model/ });
  t.throws(() => model.forward({ inputIds: [[1, 2]] }), { message: /pixelValues/ });
  for (const o of [out, one, again, tr]) disposeOut(o);
  px.dispose();
  wrong.dispose();
  model.dispose();
});

test('vit patch projection equals a strided convolution computed by hand', (t) => {
  const cfg: HFConfig = { model_type: 'vit', hidden_size: 4, num_hidden_layers: 0, num_attention_heads: 1, intermediate_size: 8, image_size: 4, patch_size: 2, num_channels: 2 };
  const model = AutoAdapterModel.fromConfig(cfg, { seed: 5 }).eval();
  const sd = model.stateDict();
  const W = sd.get('vit.embeddings.patch_embeddings.projection.weight')!.toArray() as Float32Array;  // (4, 2, 2, 2)
  const b = sd.get('vit.embeddings.patch_embeddings.projection.bias')!.toArray() as Float32Array;
  const px = ops.randn([1, 2, 4, 4], { seed: 13 });
  const P = px.toArray() as Float32Array;
  const patches = (model.base as ViTModel).embeddings.proj.forward(px);
  t.deepEqual(patches.shape, [1, 4, 4]);
  const got = patches.toArray() as Float32Array;
  for (let gy = 0; gy < 2; gy++)
    for (let gx = 0; gx < 2; gx++)
      for (let o = 0; o < 4; o++) {
        let s = b[o]!;
        for (let ci = 0; ci < 2; ci++)
          for (let ky = 0; ky < 2; ky++)
            for (let kx = 0; kx < 2; kx++) s += W[((o * 2 + ci) * 2 + ky) * 2 + kx]! * P[(ci * 4 + gy * 2 + ky) * 4 + gx * 2 + kx]!;
        t.true(Math.abs(got[(gy * 2 + gx) * 4 + o]! - s) < 1e-5, `patch (${gy}, ${gx}) channel ${o}`);
      }
  patches.dispose();
  px.dispose();
  model.dispose();
});

test('electra fromConfig: embeddings_project maps embedding_size to hidden_size, no pooler', (t) => {
  const cfg: HFConfig = { ...SMALL, model_type: 'electra', embedding_size: 8, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const model = AutoAdapterModel.fromConfig(cfg, { seed: 6 }).eval();
  const sd = model.stateDict();
  t.deepEqual(sd.get('electra.embeddings.word_embeddings.weight')!.shape, [60, 8]);
  t.deepEqual(sd.get('electra.embeddings.LayerNorm.weight')!.shape, [8]);
  t.deepEqual(sd.get('electra.embeddings_project.weight')!.shape, [16, 8]);
  t.deepEqual(sd.get('electra.encoder.layer.1.output.dense.weight')!.shape, [16, 32]);
  t.false([...sd.keys()].some((k) => k.includes('pooler')));
  const out = textSanity(t, model, 16, 0);
  t.is(out.pooledOutput, undefined);
  t.is(out.hiddenStates!.length, 3);
  t.deepEqual(out.hiddenStates![0]!.shape, [2, 7, 16], 'hidden_states[0] is after embeddings_project');
  disposeOut(out);
  model.dispose();
});

refTest('electra with embedding_size = hidden_size is BERT without the pooler (reference BERT weights)', (t) => {
  const dir = path.join(REF, 'models', 'bert');
  const bertCfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as HFConfig;
  const electra = AutoAdapterModel.fromConfig({ ...bertCfg, model_type: 'electra', embedding_size: bertCfg.hidden_size });
  t.false(electra.stateDict().has('electra.embeddings_project.weight'));
  const weights = loadSafetensors(path.join(dir, 'model.safetensors'));
  const renamed = new Map([...weights].filter(([k]) => !k.startsWith('pooler.')).map(([k, v]) => [`electra.${k}`, v]));
  electra.loadStateDict(renamed);  // strict: the names line up exactly
  electra.eval();
  const ref = loadSafetensors(path.join(REF, 'bert', 'base.safetensors'));
  const out = electra.forward({ inputIds: ref.get('input_ids'), attentionMask: ref.get('attention_mask') });
  const d = maxAbsDiff(out.lastHiddenState, ref.get('last_hidden_state')!);
  t.log(`electra (BERT weights) last_hidden_state max abs diff ${d.toExponential(2)}`);
  t.true(d <= ATOL);
  disposeOut(out);
  for (const m of [weights, ref]) for (const v of m.values()) v.dispose();
  electra.dispose();
});
