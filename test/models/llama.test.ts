// The LLaMA family (lib/models/llama.ts: llama, mistral, qwen2) through AutoAdapterModel: the forward pass
// against the Python library's reference outputs (/work/shared/reference/{llama,mistral}, README §4,
// right-padded [2, 7] batch; mistral's sliding window 3 leaves padded query 6 with no visible key, which HF
// and we both resolve to uniform attention over all keys), HF names and hook sites, the key/value cache,
// RoPE frequency scaling ('linear', 'llama3' vs values from a numpy transcription of HF's code), Qwen2's
// per-layer windows and biases, and the real pretrained stories260K model (/work/shared/data).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { noGrad, ops, ValueError, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { Linear } from '../../lib/nn/layers.ts';
import { loadSafetensors, readSafetensorsHeader } from '../../lib/io/safetensors.ts';
import { parseLlamaConfig, ropeInvFreq } from '../../lib/models/llama.ts';
import type { HFConfig, KVCache, ModelOutput } from '../../lib/models/common.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHARED = path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared');
const REF = path.join(SHARED, 'reference');
const HAVE_REF = fs.existsSync(path.join(REF, 'models', 'llama', 'model.safetensors')) && fs.existsSync(path.join(REF, 'mistral', 'base.safetensors'));
const refTest = HAVE_REF ? test : test.skip;
if (!HAVE_REF) test('reference data', (t) => t.log(`skipped: ${REF} not found (set ADAPTERS_SHARED)`) || t.pass());
const STORIES = path.join(SHARED, 'data', 'stories260K-hf');
const STORIES_REF = path.join(SHARED, 'data', 'stories260K', 'reference_outputs.json');
const HAVE_STORIES = fs.existsSync(path.join(STORIES, 'model.safetensors')) && fs.existsSync(STORIES_REF);
const storiesTest = HAVE_STORIES ? test : test.skip;
if (!HAVE_STORIES) test('stories260K data', (t) => t.log(`skipped: ${STORIES} not found (set ADAPTERS_SHARED)`) || t.pass());

const ATOL = 1e-4;

const TINY: HFConfig = {
  model_type: 'llama', vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
  intermediate_size: 48, rms_norm_eps: 1e-6, rope_theta: 10000, max_position_embeddings: 64, hidden_act: 'silu',
};

function maxAbsDiff(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) return Infinity;
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  return d;
}
function disposeOut(o: ModelOutput): void {
  const seen = new Set<Tensor>([o.lastHiddenState, ...(o.hiddenStates ?? [])]);
  if (o.logits) seen.add(o.logits);
  for (const l of o.pastKeyValues?.layers ?? []) seen.add(l.k).add(l.v);
  for (const t of seen) t.dispose();
}
function disposeCache(c: KVCache | undefined): void {
  for (const l of c?.layers ?? []) { l.k.dispose(); l.v.dispose(); }
}
function loadRef(arch: string): { model: AdapterModel; ref: Map<string, Tensor> } {
  return { model: AutoAdapterModel.fromPretrained(path.join(REF, 'models', arch)), ref: loadSafetensors(path.join(REF, arch, 'base.safetensors')) };
}

for (const arch of ['llama', 'mistral']) {
  refTest(`${arch}: last_hidden_state matches the Python library (padded positions included)`, (t) => {
    const { model, ref } = loadRef(arch);
    const out = noGrad(() => model.forward({ inputIds: ref.get('input_ids')!, attentionMask: ref.get('attention_mask')! }));
    const d = maxAbsDiff(out.lastHiddenState, ref.get('last_hidden_state')!);
    t.log(`${arch} last_hidden_state max abs diff ${d.toExponential(2)}`);
    t.true(d <= ATOL, `max abs diff ${d}`);
    t.deepEqual(out.logits!.shape, [2, 7, 80]);
    disposeOut(out);
    for (const v of ref.values()) v.dispose();
    model.dispose();
  });

  refTest(`${arch}: KV cache, prefix + one-token steps reproduce the full forward`, (t) => {
    const { model, ref } = loadRef(arch);
    const ids = ref.get('input_ids')!, mask = ref.get('attention_mask')!;
    const full = noGrad(() => model.base.forward({ inputIds: ids, attentionMask: mask }));
    let cache: KVCache | undefined;
    let worst = 0;
    noGrad(() => {
      const first = model.base.forward({ inputIds: ids.slice(1, 0, 2), attentionMask: mask.slice(1, 0, 2), useCache: true });
      t.deepEqual(first.pastKeyValues!.layers[1]!.k.shape, [2, 2, 2, 10]);  // (B, Hkv, T, D)
      worst = Math.max(worst, maxAbsDiff(first.lastHiddenState, full.lastHiddenState.slice(1, 0, 2)));
      first.lastHiddenState.dispose();
      cache = first.pastKeyValues;
      for (let i = 2; i < 7; i++) {
        const step = model.base.forward({ inputIds: ids.slice(1, i, i + 1), attentionMask: mask.slice(1, 0, i + 1), pastKeyValues: cache, useCache: true });
        worst = Math.max(worst, maxAbsDiff(step.lastHiddenState, full.lastHiddenState.slice(1, i, i + 1)));
        step.lastHiddenState.dispose();
        disposeCache(cache);
        cache = step.pastKeyValues;
      }
    });
    t.log(`${arch} incremental vs full max abs diff ${worst.toExponential(2)}`);
    t.true(worst < 1e-5);
    disposeCache(cache);
    disposeOut(full);
    for (const v of ref.values()) v.dispose();
    model.dispose();
  });
}

refTest('names: checkpoint keys under model., an untied lm_head; hook sites', (t) => {
  const { model, ref } = loadRef('llama');
  const header = readSafetensorsHeader(path.join(REF, 'models', 'llama', 'model.safetensors'));
  t.deepEqual([...model.stateDict().keys()].sort(), [...[...header.entries.keys()].map((k) => `model.${k}`), 'lm_head.weight'].sort());
  t.is(model.lmHeadKind, 'untied');
  const sites = new Map<string, string>();
  for (const [name, m] of model.namedModules()) if (m instanceof Linear) sites.set(name, m.site);
  const L = 'model.layers.0.';
  t.deepEqual(['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'].map((n) => sites.get(L + n)),
    ['attn.q', 'attn.k', 'attn.v', 'attn.o', 'ffn.gate', 'ffn.up', 'ffn.down']);
  // no lm_head in the checkpoint: it falls back to the input embeddings, as HF's tying would
  t.is(maxAbsDiff(model.stateDict().get('lm_head.weight')!, model.stateDict().get('model.embed_tokens.weight')!), 0);
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

test('hidden states: embeddings, each layer input, final output after the norm', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY, { seed: 1 });
  const out = noGrad(() => model.forward({ inputIds: [[3, 4, 5]], outputHiddenStates: true }));
  t.is(out.hiddenStates!.length, 3);
  t.is(out.hiddenStates![2], out.lastHiddenState);
  disposeOut(out);
  model.dispose();
});

test('RoPE inverse frequencies: default, linear and llama3 scaling as HF computes them', (t) => {
  const def = ropeInvFreq(128, 500000, null);
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.abs(b);
  t.is(def[0], 1);
  t.true(close(def[10]!, 0.12868738174438477));
  t.true(close(def[63]!, 2.4551407022954663e-6));
  const lin = ropeInvFreq(128, 500000, { type: 'linear', factor: 4 });
  t.true(lin.every((x, i) => close(x, def[i]! / 4)));
  // Llama 3.1 settings; expected values from numpy float32 following _compute_llama3_parameters
  const l3 = ropeInvFreq(128, 500000, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
  const want: [number, number][] = [
    [0, 1.0], [10, 0.12868738174438477], [28, 0.0032114461064338684],  // high frequencies: unchanged
    [29, 0.0021665706299245358], [31, 0.0008567514596506953], [34, 0.0001785077911335975],  // smoothed band
    [35, 9.556212899042293e-05], [50, 4.411534519022098e-06], [63, 3.068925877869333e-07],  // low: ÷ factor
  ];
  for (const [i, w] of want) t.true(close(l3[i]!, w), `llama3 inv_freq[${i}] = ${l3[i]}, want ${w}`);
  t.throws(() => parseLlamaConfig({ ...TINY, rope_scaling: { rope_type: 'yarn', factor: 2 } }), { instanceOf: ValueError, message: /yarn/ });
  t.is(parseLlamaConfig({ ...TINY, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling!.type, 'linear');
});

test("linear RoPE scaling by 2 at positions 2p equals no scaling at positions p", (t) => {
  const plain = AutoAdapterModel.fromConfig(TINY, { seed: 5 });
  const scaled = AutoAdapterModel.fromConfig({ ...TINY, rope_scaling: { type: 'linear', factor: 2 } }, { seed: 5 });
  const ids = [[7, 8, 9, 10], [11, 12, 13, 14]];
  const a = noGrad(() => plain.forward({ inputIds: ids, positionIds: [[0, 1, 2, 3], [5, 6, 7, 8]] }));
  const b = noGrad(() => scaled.forward({ inputIds: ids, positionIds: [[0, 2, 4, 6], [10, 12, 14, 16]] }));
  const c = noGrad(() => scaled.forward({ inputIds: ids }));
  t.true(maxAbsDiff(a.lastHiddenState, b.lastHiddenState) < 1e-5);
  t.true(maxAbsDiff(a.lastHiddenState, c.lastHiddenState) > 1e-4);  // positions matter
  for (const o of [a, b, c]) disposeOut(o);
  plain.dispose();
  scaled.dispose();
});

test('mistral without a window (or with one wider than the input) equals llama with the same weights', (t) => {
  const llama = AutoAdapterModel.fromConfig(TINY, { seed: 9 });
  const ids = [[3, 4, 5, 6, 7, 8]], mask = [[1, 1, 1, 1, 1, 1]];
  const ref = noGrad(() => llama.forward({ inputIds: ids, attentionMask: mask }));
  for (const sw of [null, 6, 5]) {
    const m = AutoAdapterModel.fromConfig({ ...TINY, model_type: 'mistral', sliding_window: sw }, { seed: 9 });
    const out = noGrad(() => m.forward({ inputIds: ids, attentionMask: mask }));
    const d = maxAbsDiff(out.lastHiddenState, ref.lastHiddenState);
    if (sw === 5) t.true(d > 1e-4, 'window 5 < 6 tokens must change the last position');
    else t.true(d < 1e-6, `window ${sw}: ${d}`);
    disposeOut(out);
    m.dispose();
  }
  disposeOut(ref);
  llama.dispose();
});

test('qwen2: q/k/v biases (no o bias), windows only with use_sliding_window on layers ≥ max_window_layers', (t) => {
  const base = { ...TINY, model_type: 'qwen2', sliding_window: 2, max_window_layers: 1 };
  t.deepEqual(parseLlamaConfig(base).windows, [null, null]);
  t.deepEqual(parseLlamaConfig({ ...base, use_sliding_window: true }).windows, [null, 2]);
  t.deepEqual(parseLlamaConfig({ ...TINY, model_type: 'mistral', sliding_window: 4 }).windows, [4, 4]);
  t.deepEqual(parseLlamaConfig({ ...TINY, sliding_window: 4 }).windows, [null, null]);  // llama has none
  const m = AutoAdapterModel.fromConfig({ ...base, use_sliding_window: true });
  const names = new Set(m.stateDict().keys());
  for (const p of ['q', 'k', 'v']) t.true(names.has(`model.layers.0.self_attn.${p}_proj.bias`));
  t.false(names.has('model.layers.0.self_attn.o_proj.bias'));
  t.false(names.has('model.layers.0.mlp.up_proj.bias'));
  const out = noGrad(() => m.forward({ inputIds: [[1, 2, 3, 4, 5]] }));
  t.true((out.lastHiddenState.toArray() as Float32Array).every(Number.isFinite));
  disposeOut(out);
  m.dispose();
  // llama: attention_bias covers all four projections, mlp_bias the MLP
  const lb = AutoAdapterModel.fromConfig({ ...TINY, attention_bias: true, mlp_bias: true });
  t.true(lb.stateDict().has('model.layers.1.self_attn.o_proj.bias'));
  t.true(lb.stateDict().has('model.layers.1.mlp.down_proj.bias'));
  lb.dispose();
});

test('config: head_dim from config or hidden/heads; GQA shapes; tie_word_embeddings', (t) => {
  const m = AutoAdapterModel.fromConfig({ ...TINY, head_dim: 16, tie_word_embeddings: true });
  t.deepEqual(m.stateDict().get('model.layers.0.self_attn.q_proj.weight')!.shape, [64, 32]);
  t.deepEqual(m.stateDict().get('model.layers.0.self_attn.k_proj.weight')!.shape, [32, 32]);
  t.deepEqual(m.stateDict().get('model.layers.0.self_attn.o_proj.weight')!.shape, [32, 64]);
  t.is(m.lmHeadKind, 'tied');
  t.false(m.stateDict().has('lm_head.weight'));
  const out = noGrad(() => m.forward({ inputIds: [[1, 2, 3]] }));
  t.deepEqual(out.logits!.shape, [1, 3, 64]);
  disposeOut(out);
  m.dispose();
  t.throws(() => AutoAdapterModel.fromConfig({ ...TINY, num_key_value_heads: 3 }), { message: /multiple/ });
});

storiesTest('stories260K (real pretrained LLaMA): loads; logits match the reference at every position', (t) => {
  const ref = JSON.parse(fs.readFileSync(STORIES_REF, 'utf8')) as {
    prompt_ids_with_bos: number[]; logits_last_position: number[]; top5_per_position: [number, number][][]; prompt_mean_nll: number;
  };
  const model = AutoAdapterModel.fromPretrained(STORIES);
  t.is(model.lmHeadKind, 'tied');
  t.is(model.numParameters(), 260032);
  const ids = ref.prompt_ids_with_bos, T = ids.length;
  const out = noGrad(() => model.forward({ inputIds: [ids] }));
  const logits = out.logits!.toArray() as Float32Array;
  const V = 512;
  let dLast = 0;
  for (let v = 0; v < V; v++) dLast = Math.max(dLast, Math.abs(logits[(T - 1) * V + v]! - ref.logits_last_position[v]!));
  let dTop = 0;
  ref.top5_per_position.forEach((top, p) => {
    for (const [id, val] of top) dTop = Math.max(dTop, Math.abs(logits[p * V + id]! - val));
  });
  // mean next-token NLL of the prompt
  const lsm = noGrad(() => ops.logSoftmax(out.logits!, -1));
  const lp = lsm.toArray() as Float32Array;
  let nll = 0;
  for (let p = 0; p < T - 1; p++) nll -= lp[p * V + ids[p + 1]!]!;
  nll /= T - 1;
  t.log(`last-position logits max abs diff ${dLast.toExponential(2)}; top-5 logits at all ${T} positions ${dTop.toExponential(2)}; ` +
    `mean NLL ${nll.toFixed(6)} vs ${ref.prompt_mean_nll}`);
  t.true(dLast <= ATOL, `last-position logits differ by ${dLast}`);
  t.true(dTop <= ATOL, `top-5 logits differ by ${dTop}`);
  t.true(Math.abs(nll - ref.prompt_mean_nll) < 1e-5);
  lsm.dispose();
  disposeOut(out);
  model.dispose();
});
