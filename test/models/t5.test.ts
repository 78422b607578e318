// T5 (lib/models/t5.ts) through AutoAdapterModel: both reference models (v1.0 ReLU with tied embeddings,
// v1.1 gated-GELU untied; /work/shared/reference/{t5,t5_gated}, README §4) against the Python library's
// decoder and encoder outputs, HF parameter names under `transformer.`, hook sites, HF's relative-position
// buckets, the unfused attention path that trains the position bias, the encoder–decoder key/value cache
// (incremental decoding = full decoding) and generateSeq2seq (cached = uncached, token for token, with no
// native memory growth across steps).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { memoryStats, noGrad, ops, tensor, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { Linear } from '../../lib/nn/layers.ts';
import { loadSafetensors, readSafetensorsHeader } from '../../lib/io/safetensors.ts';
import type { HFConfig, ModelOutput } from '../../lib/models/common.ts';
import { T5Model, relativePositionBucket } from '../../lib/models/t5.ts';
import { type Seq2SeqCache, disposeSeq2SeqCache, generateSeq2seq, isSeq2SeqCache } from '../../lib/models/seq2seq_generate.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REF = path.join(path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const HAVE_REF = ['t5', 't5_gated'].every((a) => fs.existsSync(path.join(REF, 'models', a, 'model.safetensors')) && fs.existsSync(path.join(REF, a, 'base.safetensors')));
const refTest = HAVE_REF ? test : test.skip;
if (!HAVE_REF)
  test('reference data', (t) => {
    t.log(`skipped: ${REF} not found (set ADAPTERS_SHARED)`);
    t.pass();
  });

const ATOL = 1e-4;

// a small T5 v1.0 and a gated v1.1 for the tests that need no reference data; a wide init so that
// greedy decoding has clear winners
const TINY: HFConfig = {
  model_type: 't5', vocab_size: 50, d_model: 16, d_kv: 4, d_ff: 32, num_layers: 2, num_decoder_layers: 3, num_heads: 4,
  relative_attention_num_buckets: 8, relative_attention_max_distance: 16, dropout_rate: 0, layer_norm_epsilon: 1e-6,
  feed_forward_proj: 'relu', tie_word_embeddings: true, pad_token_id: 0, eos_token_id: 1, decoder_start_token_id: 0,
  initializer_range: 0.5,
};
const TINY_GATED: HFConfig = { ...TINY, feed_forward_proj: 'gated-gelu', tie_word_embeddings: false };
const IDS = [[5, 17, 42, 7, 9, 3, 8], [6, 23, 9, 17, 0, 0, 0]];
const MASK = [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]];
const DEC = [[0, 12, 4, 33, 8, 21], [0, 7, 7, 40, 2, 11]];

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

for (const arch of ['t5', 't5_gated']) {
  refTest(`${arch}: last_hidden_state and encoder_last_hidden_state match the Python library (1e-4)`, (t) => {
    const model = AutoAdapterModel.fromPretrained(path.join(REF, 'models', arch));
    const ref = loadSafetensors(path.join(REF, arch, 'base.safetensors'));
    const out = noGrad(() => model.forward({ inputIds: ref.get('input_ids')!, attentionMask: ref.get('attention_mask')!, decoderInputIds: ref.get('decoder_input_ids')! }));
    for (const [name, got] of [['last_hidden_state', out.lastHiddenState], ['encoder_last_hidden_state', out.encoderLastHiddenState!]] as const) {
      const d = maxAbsDiff(got, ref.get(name)!);
      t.log(`${arch} ${name} [${ref.get(name)!.shape}] max abs diff ${d.toExponential(2)}`);
      t.true(d <= ATOL, `${name}: max abs diff ${d}`);
    }
    disposeOut(out);
    for (const v of ref.values()) v.dispose();
    model.dispose();
  });

  refTest(`${arch}: parameter names are the checkpoint keys under transformer., embeddings shared`, (t) => {
    const dir = path.join(REF, 'models', arch);
    const model = AutoAdapterModel.fromPretrained(dir);
    const h = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    const want = new Map([...h.entries.values()].map((e) => [`transformer.${e.name}`, e.shape.join()]));
    if (arch === 't5_gated') want.set('lm_head.weight', '80,40');  // untied head (from the embeddings: none stored)
    const got = new Map(model.namedParameters().map(([n, p]) => [n, p.shape.join()]));
    t.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [n, s] of want) t.is(got.get(n), s, n);
    const base = model.base as T5Model;
    t.is(base.encoder.embed, base.shared);
    t.is(base.decoder.embed, base.shared);
    t.is(model.lmHeadKind, arch === 't5' ? 'tied' : 'untied');
    t.is(base.lmScale, arch === 't5' ? 40 ** -0.5 : 1);
    model.dispose();
  });
}

test('hook sites: attn.q/k/v/o on self- and cross-attention, ffn.up/down (relu) and ffn.gate/up/down (gated)', (t) => {
  for (const [cfg, ffn] of [[TINY, { wi: 'ffn.up', wo: 'ffn.down' }], [TINY_GATED, { wi_0: 'ffn.gate', wi_1: 'ffn.up', wo: 'ffn.down' }]] as const) {
    const model = AutoAdapterModel.fromConfig(cfg);
    const sites = new Map<string, string>();
    for (const [n, m] of model.namedModules()) if (m instanceof Linear) sites.set(n, m.site);
    const p = 'transformer.decoder.block.1.layer';
    for (const x of ['q', 'k', 'v', 'o']) {
      t.is(sites.get(`transformer.encoder.block.0.layer.0.SelfAttention.${x}`), `attn.${x}`);
      t.is(sites.get(`${p}.0.SelfAttention.${x}`), `attn.${x}`);
      t.is(sites.get(`${p}.1.EncDecAttention.${x}`), `attn.${x}`);
    }
    for (const [n, s] of Object.entries(ffn)) {
      t.is(sites.get(`transformer.encoder.block.1.layer.1.DenseReluDense.${n}`), s);
      t.is(sites.get(`${p}.2.DenseReluDense.${n}`), s);
    }
    t.true([...sites.entries()].every(([n, s]) => s !== '' || n === 'lm_head'), 'every base Linear has a site');
    model.dispose();
  }
});

test('relative position buckets follow HF _relative_position_bucket', (t) => {
  // HF defaults (32 buckets, max distance 128), values worked out from the formula
  const bi = (r: number) => relativePositionBucket(r, true, 32, 128);
  const uni = (r: number) => relativePositionBucket(r, false, 32, 128);
  t.deepEqual([0, -1, 1, -7, -8, -20, -200, 200].map(bi), [0, 1, 17, 7, 8, 10, 15, 31]);
  t.deepEqual([5, 0, -5, -15, -16, -100, -1000].map(uni), [0, 0, 5, 15, 16, 30, 31]);
  // the reference config (6 buckets, max distance 10; README §4): encoder distances 1–3 share a bucket,
  // 4–6 another; decoder distances 3 and 4 share one
  t.deepEqual([-1, -2, -3, -4, -5, -6, 1, 3, 4].map((r) => relativePositionBucket(r, true, 6, 10)), [1, 1, 1, 2, 2, 2, 4, 4, 5]);
  t.deepEqual([0, -1, -2, -3, -4, -5, 2].map((r) => relativePositionBucket(r, false, 6, 10)), [0, 1, 2, 3, 3, 4, 0]);
});

test('the unfused path (taken while the position bias needs a gradient) equals the fused one', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 3 }).eval();
  // a decoder padding hole, so that the unfused path combines padding and causal masks
  const input = { inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC, decoderAttentionMask: [[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]] };
  const fused = noGrad(() => model.forward(input));
  const out = model.forward(input);
  t.true(out.lastHiddenState.requiresGrad);
  t.true(maxAbsDiff(out.lastHiddenState, fused.lastHiddenState) < 1e-5);
  t.true(maxAbsDiff(out.encoderLastHiddenState!, fused.encoderLastHiddenState!) < 1e-5);
  disposeOut(out);
  disposeOut(fused);
  model.dispose();
});

test('the position bias is trained: relative_attention_bias gradients match finite differences', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 3 }).eval();
  const input = { inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC };
  const lossOf = (): Tensor => {
    const o = model.forward(input);
    const l = ops.add(ops.sum(ops.mul(o.lastHiddenState, o.lastHiddenState)), ops.sum(o.encoderLastHiddenState!));
    disposeOut(o);
    return l;
  };
  const loss = lossOf();
  loss.backward();
  loss.dispose();
  const sd = model.stateDict();
  for (const stack of ['encoder', 'decoder']) {
    const W = sd.get(`transformer.${stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight`)!;
    t.truthy(W.grad, `${stack} relative_attention_bias has a gradient`);
    const g = W.grad!.toArray() as Float32Array, w = W.toArray() as Float32Array;
    for (const idx of [4, 13, 22]) {
      // central difference in float32 (eps 1e-2); the loss is O(100), so agreement to ~1% is expected
      const at = (delta: number): number => noGrad(() => {
        const c = Float32Array.from(w);
        c[idx] = c[idx]! + delta;
        W.copy_(tensor(c, W.shape));
        const l = lossOf();
        const v = l.item();
        l.dispose();
        return v;
      });
      const fd = (at(1e-2) - at(-1e-2)) / 2e-2;
      noGrad(() => W.copy_(tensor(w, W.shape)));
      t.true(Math.abs(fd - g[idx]!) <= 1e-2 * Math.max(1, Math.abs(fd)), `${stack}[${idx}]: autograd ${g[idx]} vs finite difference ${fd}`);
    }
  }
  model.dispose();
});

for (const [name, cfg] of [['t5', TINY], ['t5 gated', TINY_GATED]] as const) {
  test(`${name}: decoding one position at a time with the cache equals the full decoder pass`, (t) => {
    const model = AutoAdapterModel.fromConfig(cfg, { seed: 4 }).eval();
    noGrad(() => {
      const full = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC });
      // first call: encoder + the first two positions, creating the cache
      let out = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC.map((r) => r.slice(0, 2)), useCache: true });
      const cache = out.pastKeyValues as Seq2SeqCache;
      t.true(isSeq2SeqCache(cache));
      t.is(cache.length, 2);
      t.is(cache.layers.length, 3);
      t.is(cache.cross.length, 3);
      t.deepEqual(cache.layers[0]!.k.shape, [2, 4, 2, 4]);
      t.deepEqual(cache.cross[0]!.k.shape, [2, 4, 7, 4]);
      const parts = [out.lastHiddenState];
      t.true(maxAbsDiff(out.encoderLastHiddenState!, full.encoderLastHiddenState!) === 0);
      out.encoderLastHiddenState!.dispose();
      for (let p = 2; p < DEC[0]!.length; p++) {
        out = model.forward({ decoderInputIds: DEC.map((r) => [r[p]!]), pastKeyValues: cache });
        t.is(out.pastKeyValues, cache, 'the cache is updated in place');
        t.is(out.encoderLastHiddenState!.shape[1], 7, 'cached calls still report the encoder output');
        out.encoderLastHiddenState!.dispose();
        parts.push(out.lastHiddenState);
      }
      t.is(cache.length, 6);
      t.deepEqual(cache.layers[2]!.v.shape, [2, 4, 6, 4]);
      const inc = ops.concat(parts, 1);
      const d = maxAbsDiff(inc, full.lastHiddenState);
      t.log(`${name}: incremental vs full max abs diff ${d.toExponential(2)}`);
      t.true(d < 1e-5);
      // useCache: false with a cache reads it without changing it
      const peek = model.forward({ decoderInputIds: [[3], [4]], pastKeyValues: cache, useCache: false });
      t.is(cache.length, 6);
      t.is(peek.pastKeyValues, undefined);
      disposeOut(peek);
      disposeSeq2SeqCache(cache);
      t.is(cache.layers.length, 0);
      for (const x of [inc, ...parts]) x.dispose();
      disposeOut(full);
    });
    model.dispose();
  });
}

test('decoderAttentionMask: all ones = no mask; a masked decoder position is hidden from later queries only', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 7 }).eval();
  noGrad(() => {
    const base = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC });
    const ones = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC, decoderAttentionMask: DEC.map((r) => r.map(() => 1)) });
    t.is(maxAbsDiff(ones.lastHiddenState, base.lastHiddenState), 0);
    const hole = model.forward({ inputIds: IDS, attentionMask: MASK, decoderInputIds: DEC, decoderAttentionMask: DEC.map((r) => r.map((_, i) => (i === 2 ? 0 : 1))) });
    const first = (o: ModelOutput, a: number, b: number) => ops.slice(o.lastHiddenState, 1, a, b).contiguous();
    const [x0, y0, x3, y3] = [first(base, 0, 2), first(hole, 0, 2), first(base, 3, 6), first(hole, 3, 6)];
    t.is(maxAbsDiff(x0, y0), 0, 'positions before the hole are unchanged');
    t.true(maxAbsDiff(x3, y3) > 1e-4, 'positions after it see the mask');
    for (const x of [x0, y0, x3, y3]) x.dispose();
    for (const o of [base, ones, hole]) disposeOut(o);
  });
  model.dispose();
});

test('forward errors: T5 needs decoderInputIds, and inputIds unless a cache is given', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY).eval();
  // (the AdapterModel derives missing decoder inputs as T5AdapterModel does; the base T5 model needs them)
  t.throws(() => model.base.forward({ inputIds: IDS }), { message: /decoderInputIds/ });
  t.throws(() => model.forward({ decoderInputIds: DEC }), { message: /inputIds/ });
  t.throws(() => model.forward({ decoderInputIds: DEC, pastKeyValues: { layers: [], length: 0 } }), { message: /Seq2SeqCache/ });
  model.dispose();
});

test('eval() turns every dropout off, train() on', (t) => {
  const model = AutoAdapterModel.fromConfig({ ...TINY, dropout_rate: 0.3 }, { seed: 9 }).eval();
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

/** Greedy (and seeded sampling) generation, cached and uncached, on one model. */
function sameWithAndWithoutCache(t: import('ava').ExecutionContext, model: AdapterModel, label: string, ids: number[][], mask: number[][]): void {
  for (const sampling of [{}, { temperature: 0.8, topK: 10, topP: 0.9, seed: 7 }]) {
    const opts = { maxNewTokens: 12, attentionMask: mask, eosTokenId: null, ...sampling };
    const a = generateSeq2seq(model, ids, { ...opts, useCache: true });
    const b = generateSeq2seq(model, ids, { ...opts, useCache: false });
    t.log(`${label} ${'seed' in sampling ? 'sampled' : 'greedy'}: ${JSON.stringify(a)}`);
    t.deepEqual(a, b);
    t.is(a.length, ids.length);
    t.true(a.every((r) => r.length === 13 && r[0] === model.config.decoder_start_token_id));
  }
}

test('generateSeq2seq: with cache = without cache, token for token (fromConfig T5 and gated T5)', (t) => {
  for (const [label, cfg] of [['t5', TINY], ['t5 gated', TINY_GATED]] as const) {
    const model = AutoAdapterModel.fromConfig(cfg, { seed: 5 }).eval();
    sameWithAndWithoutCache(t, model, label, IDS, MASK);
    model.dispose();
  }
});

refTest('generateSeq2seq: with cache = without cache on the reference T5 models', (t) => {
  for (const arch of ['t5', 't5_gated']) {
    const model = AutoAdapterModel.fromPretrained(path.join(REF, 'models', arch));
    const ref = loadSafetensors(path.join(REF, arch, 'base.safetensors'));
    const ids = ref.get('input_ids')!.tolist() as number[][];
    const mask = ref.get('attention_mask')!.tolist() as number[][];
    sameWithAndWithoutCache(t, model, arch, ids, mask);
    for (const v of ref.values()) v.dispose();
    model.dispose();
  }
});

test('generateSeq2seq: EOS ends a row (then padded), sampling is reproducible with a seed', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 5 }).eval();
  const free = generateSeq2seq(model, IDS, { maxNewTokens: 6, attentionMask: MASK, eosTokenId: null });
  // make the last generated token of row 0 that is new there the EOS id: row 0 stops at it and is padded while row 1 goes on
  const row = free[0]!;
  let at = row.length - 1;
  while (at > 1 && row.slice(1, at).includes(row[at]!)) at--;
  const eos = row[at]!;
  t.false(row.slice(1, at).includes(eos));
  const stop = generateSeq2seq(model, IDS, { maxNewTokens: 6, attentionMask: MASK, eosTokenId: eos, padTokenId: 49 });
  t.deepEqual(stop[0], [...row.slice(0, at + 1), ...new Array(row.length - at - 1).fill(49)]);
  if (!free[1]!.slice(1).includes(eos)) t.deepEqual(stop[1], free[1]);
  const s1 = generateSeq2seq(model, IDS, { maxNewTokens: 8, attentionMask: MASK, temperature: 1.5, seed: 3, eosTokenId: null });
  const s2 = generateSeq2seq(model, IDS, { maxNewTokens: 8, attentionMask: MASK, temperature: 1.5, seed: 3, eosTokenId: null });
  t.deepEqual(s1, s2);
  t.deepEqual(generateSeq2seq(model, IDS, { maxNewTokens: 0 }), [[0], [0]]);
  t.throws(() => generateSeq2seq(model, IDS, { maxNewTokens: -1 }), { message: /maxNewTokens/ });
  t.throws(() => generateSeq2seq(model, IDS, { maxNewTokens: 2, topP: 0 }), { message: /topP/ });
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
    // the same tensors are alive after every step: the step's temporaries are freed, the cache is replaced
    t.true(perStep.every((s) => s.liveTensors === perStep[0]!.liveTensors && s.liveStorages === perStep[0]!.liveStorages), JSON.stringify(perStep.map((s) => s.liveTensors)));
    if (useCache) {
      // only the self-attention cache grows (3 layers × (k, v) × B 2 × H 4 × D 4 × 4 bytes = 384 bytes a
      // position; liveBytes counts allocator blocks, so it grows in steps)
      const bytes = perStep.map((s) => s.liveBytes);
      t.true(bytes.every((b, i) => i === 0 || (b >= bytes[i - 1]! && b - bytes[0]! <= 64 * 1024)), JSON.stringify(bytes));
    } else t.true(perStep.every((s) => s.liveBytes === perStep[0]!.liveBytes));
    t.is(after.liveTensors, before.liveTensors, `useCache ${useCache}: live tensors`);
    t.is(after.liveStorages, before.liveStorages);
    t.is(after.liveBytes, before.liveBytes);
  }
  model.dispose();
});
