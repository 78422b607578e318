// BART (lib/models/bart.ts) through AutoAdapterModel: the reference model (/work/shared/reference/bart,
// README §4) against the Python library's decoder and encoder outputs, HF parameter names under `model.`,
// hook sites, decoder inputs derived by shifting inputIds right, scale_embedding, the encoder–decoder
// key/value cache (incremental decoding = full decoding) and generateSeq2seq (cached = uncached, token for
// token, with no native memory growth across steps).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { memoryStats, noGrad, ops, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { Linear } from '../../lib/nn/layers.ts';
import { loadSafetensors, readSafetensorsHeader } from '../../lib/io/safetensors.ts';
import type { HFConfig, ModelOutput } from '../../lib/models/common.ts';
import { BartModel, shiftTokensRight } from '../../lib/models/bart.ts';
import { type Seq2SeqCache, disposeSeq2SeqCache, generateSeq2seq, isSeq2SeqCache } from '../../lib/models/seq2seq_generate.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REF = path.join(path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const MODEL_DIR = path.join(REF, 'models', 'bart');
const HAVE_REF = fs.existsSync(path.join(MODEL_DIR, 'model.safetensors')) && fs.existsSync(path.join(REF, 'bart', 'base.safetensors'));
const refTest = HAVE_REF ? test : test.skip;
if (!HAVE_REF)
  test('reference data', (t) => {
    t.log(`skipped: ${REF} not found (set ADAPTERS_SHARED)`);
    t.pass();
  });

const ATOL = 1e-4;

// a small BART for the tests that need no reference data; a wide init so that greedy decoding has clear winners
const TINY: HFConfig = {
  model_type: 'bart', vocab_size: 50, d_model: 16, encoder_layers: 2, decoder_layers: 3, encoder_attention_heads: 4,
  decoder_attention_heads: 2, encoder_ffn_dim: 32, decoder_ffn_dim: 24, max_position_embeddings: 32, activation_function: 'gelu',
  dropout: 0, attention_dropout: 0, activation_dropout: 0, scale_embedding: false, pad_token_id: 1, bos_token_id: 0,
  eos_token_id: 2, decoder_start_token_id: 2, init_std: 0.3,
};
const IDS = [[0, 17, 42, 7, 9, 3, 2], [0, 23, 9, 2, 1, 1, 1]];
const MASK = [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]];
const DEC = [[2, 12, 4, 33, 8, 21], [2, 7, 7, 40, 5, 11]];

function maxAbsDiff(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) return Infinity;
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  return d;
}
function disposeOut(o: ModelOutput & { encoderHiddenStates?: Tensor[] }): void {
  const all = new Set<Tensor>([o.lastHiddenState, ...(o.hiddenStates ?? []), ...(o.encoderHiddenStates ?? [])]);
  if (o.logits) all.add(o.logits);
  if (o.encoderLastHiddenState) all.add(o.encoderLastHiddenState);
  for (const x of all) x.dispose();
}

refTest('last_hidden_state and encoder_last_hidden_state match the Python library (1e-4)', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  const ref = loadSafetensors(path.join(REF, 'bart', 'base.safetensors'));
  const out = noGrad(() => model.forward({ inputIds: ref.get('input_ids')!, attentionMask: ref.get('attention_mask')!, decoderInputIds: ref.get('decoder_input_ids')! }));
  for (const [name, got] of [['last_hidden_state', out.lastHiddenState], ['encoder_last_hidden_state', out.encoderLastHiddenState!]] as const) {
    const d = maxAbsDiff(got, ref.get(name)!);
    t.log(`bart ${name} [${ref.get(name)!.shape}] max abs diff ${d.toExponential(2)}`);
    t.true(d <= ATOL, `${name}: max abs diff ${d}`);
  }
  // tied LM head: logits = h · sharedᵀ
  t.deepEqual(out.logits!.shape, [2, 5, 80]);
  const manual = ops.linear(out.lastHiddenState, model.stateDict().get('model.shared.weight')!);
  t.true(maxAbsDiff(out.logits!, manual) < 1e-6);
  manual.dispose();
  disposeOut(out);
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

refTest('parameter names are the checkpoint keys under model., embeddings shared', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  const h = readSafetensorsHeader(path.join(MODEL_DIR, 'model.safetensors'));
  const want = new Map([...h.entries.values()].map((e) => [`model.${e.name}`, e.shape.join()]));
  const got = new Map(model.namedParameters().map(([n, p]) => [n, p.shape.join()]));
  t.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [n, s] of want) t.is(got.get(n), s, n);
  const base = model.base as BartModel;
  t.is(base.encoder.embed, base.shared);
  t.is(base.decoder.embed, base.shared);
  t.is(model.lmHeadKind, 'tied');
  model.dispose();
});

test('hook sites: attn.q/k/v/o on self- and cross-attention, ffn.up/down', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY);
  const sites = new Map<string, string>();
  for (const [n, m] of model.namedModules()) if (m instanceof Linear) sites.set(n, m.site);
  for (const [a, b] of [['q_proj', 'attn.q'], ['k_proj', 'attn.k'], ['v_proj', 'attn.v'], ['out_proj', 'attn.o']]) {
    t.is(sites.get(`model.encoder.layers.1.self_attn.${a}`), b);
    t.is(sites.get(`model.decoder.layers.2.self_attn.${a}`), b);
    t.is(sites.get(`model.decoder.layers.2.encoder_attn.${a}`), b);
  }
  for (const s of ['encoder', 'decoder']) {
    t.is(sites.get(`model.${s}.layers.0.fc1`), 'ffn.up');
    t.is(sites.get(`model.${s}.layers.0.fc2`), 'ffn.down');
  }
  t.true([...sites.values()].every((s) => s !== ''));
  model.dispose();
});

test('without decoderInputIds the decoder reads inputIds shifted right (HF shift_tokens_right)', (t) => {
  const shifted = shiftTokensRight(ops.cast(ops.arange(0, 6), 'i64').reshape(2, 3), 1, 2);
  t.deepEqual(shifted.tolist(), [[2, 0, 1], [2, 3, 4]]);
  const labels = shiftTokensRight(ops.sub(ops.zeros([1, 3], { dtype: 'i64' }), 100), 1, 2);
  t.deepEqual(labels.tolist(), [[2, 1, 1]], '-100 becomes the pad id');
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 1 }).eval();
  noGrad(() => {
    const a = model.forward({ inputIds: IDS, attentionMask: MASK });
    const b = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: IDS.map((r) => [2, ...r.slice(0, -1)]) });
    t.is(maxAbsDiff(a.lastHiddenState, b.lastHiddenState), 0);
    disposeOut(a);
    disposeOut(b);
  });
  for (const x of [shifted, labels]) x.dispose();
  model.dispose();
});

test('scale_embedding multiplies the word embeddings by √d_model', (t) => {
  // scaling the embeddings equals scaling the shared weight of an unscaled model
  const scaled = AutoAdapterModel.fromConfig({ ...TINY, scale_embedding: true }, { seed: 2 }).eval();
  const plain = AutoAdapterModel.fromConfig(TINY, { seed: 2 }).eval();
  noGrad(() => {
    const w = plain.stateDict().get('model.shared.weight')!;
    const w4 = ops.mul(w, 4);
    w.copy_(w4);
    const a = scaled.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC });
    const b = plain.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC });
    t.true(maxAbsDiff(a.lastHiddenState, b.lastHiddenState) < 1e-5);
    t.true(maxAbsDiff(a.encoderLastHiddenState!, b.encoderLastHiddenState!) < 1e-5);
    for (const x of [w4]) x.dispose();
    disposeOut(a);
    disposeOut(b);
  });
  scaled.dispose();
  plain.dispose();
});

test('decoding one position at a time with the cache equals the full decoder pass', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 4 }).eval();
  noGrad(() => {
    const full = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC, outputHiddenStates: true });
    t.is(full.hiddenStates!.length, 4);
    t.is((full as { encoderHiddenStates?: Tensor[] }).encoderHiddenStates!.length, 3);
    let out = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC.map((r) => r.slice(0, 3)), useCache: true });
    const cache = out.pastKeyValues as Seq2SeqCache;
    t.true(isSeq2SeqCache(cache));
    t.is(cache.length, 3);
    t.deepEqual(cache.layers[0]!.k.shape, [2, 2, 3, 8]);
    t.deepEqual(cache.cross[2]!.v.shape, [2, 2, 7, 8]);
    const parts = [out.lastHiddenState];
    out.encoderLastHiddenState!.dispose();
    for (let p = 3; p < DEC[0]!.length; p++) {
      out = model.forward({ decoderInputIds: DEC.map((r) => [r[p]!]), pastKeyValues: cache });
      t.is(out.pastKeyValues, cache);
      out.encoderLastHiddenState!.dispose();
      parts.push(out.lastHiddenState);
    }
    t.is(cache.length, 6);
    const inc = ops.concat(parts, 1);
    const d = maxAbsDiff(inc, full.lastHiddenState);
    t.log(`bart: incremental vs full max abs diff ${d.toExponential(2)}`);
    t.true(d < 1e-5);
    disposeSeq2SeqCache(cache);
    for (const x of [inc, ...parts]) x.dispose();
    disposeOut(full);
  });
  t.throws(() => model.forward({ decoderInputIds: DEC.map((r) => [...r, ...r, ...r, ...r, ...r, ...r]), inputIds: IDS }), { message: /max_position_embeddings/ });
  model.dispose();
});

test('eval() turns every dropout off, train() on', (t) => {
  const model = AutoAdapterModel.fromConfig({ ...TINY, dropout: 0.3, activation_dropout: 0.3 }, { seed: 9 }).eval();
  noGrad(() => {
    const input = { inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC };
    const a = model.forward(input), b = model.forward(input);
    t.is(maxAbsDiff(a.lastHiddenState, b.lastHiddenState), 0, 'eval is deterministic');
    model.train();
    const c = model.forward(input);
    t.true(maxAbsDiff(c.lastHiddenState, a.lastHiddenState) > 1e-3, 'train mode applies dropout');
    for (const o of [a, b, c]) disposeOut(o);
  });
  model.dispose();
});

/** Greedy and seeded sampling generation, cached and uncached, on one model. */
function sameWithAndWithoutCache(t: import('ava').ExecutionContext, model: AdapterModel, label: string, ids: number[][], mask: number[][]): void {
  for (const sampling of [{}, { temperature: 0.8, topK: 10, topP: 0.9, seed: 7 }]) {
    const opts = { maxNewTokens: 12, attentionMask: mask, eosTokenId: null, ...sampling };
    const a = generateSeq2seq(model, ids, { ...opts, useCache: true });
    const b = generateSeq2seq(model, ids, { ...opts, useCache: false });
    t.log(`${label} ${'seed' in sampling ? 'sampled' : 'greedy'}: ${JSON.stringify(a)}`);
    t.deepEqual(a, b);
    t.true(a.every((r) => r.length === 13 && r[0] === model.config.decoder_start_token_id));
  }
}

test('generateSeq2seq: with cache = without cache, token for token (fromConfig BART)', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 8 }).eval();
  sameWithAndWithoutCache(t, model, 'bart', IDS, MASK);
  // default EOS (config eos_token_id 2): finished rows are padded with pad_token_id 1
  const out = generateSeq2seq(model, IDS, { maxNewTokens: 12, attentionMask: MASK });
  for (const row of out) {
    const e = row.indexOf(2, 1);
    if (e > 0) t.true(row.slice(e + 1).every((x) => x === 1));
  }
  model.dispose();
});

refTest('generateSeq2seq: with cache = without cache on the reference BART model', (t) => {
  const model = AutoAdapterModel.fromPretrained(MODEL_DIR);
  const ref = loadSafetensors(path.join(REF, 'bart', 'base.safetensors'));
  sameWithAndWithoutCache(t, model, 'bart ref', ref.get('input_ids')!.tolist() as number[][], ref.get('attention_mask')!.tolist() as number[][]);
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

test.serial('generateSeq2seq: no native memory growth across steps or after the call', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 6 }).eval();
  for (const useCache of [true, false]) {
    const before = memoryStats();
    const perStep: { liveTensors: number; liveStorages: number; liveBytes: number }[] = [];
    generateSeq2seq(model, IDS, { maxNewTokens: 10, attentionMask: MASK, eosTokenId: null, useCache, onStep: () => perStep.push(memoryStats()) });
    const after = memoryStats();
    t.is(perStep.length, 10);
    t.true(perStep.every((s) => s.liveTensors === perStep[0]!.liveTensors && s.liveStorages === perStep[0]!.liveStorages), JSON.stringify(perStep.map((s) => s.liveTensors)));
    const bytes = perStep.map((s) => s.liveBytes);
    if (useCache) t.true(bytes.every((b, i) => i === 0 || (b >= bytes[i - 1]! && b - bytes[0]! <= 64 * 1024)), JSON.stringify(bytes));
    else t.true(bytes.every((b) => b === bytes[0]));
    t.is(after.liveTensors, before.liveTensors, `useCache ${useCache}: live tensors`);
    t.is(after.liveStorages, before.liveStorages);
    t.is(after.liveBytes, before.liveBytes);
  }
  model.dispose();
});
