// GPT-2 (lib/models/gpt2.ts) through AutoAdapterModel: the forward pass against the Python library's
// reference output (/work/shared/reference/gpt2/base.safetensors, README §1: right-padded [2, 8] batch),
// HF parameter names under the flex-head prefix `transformer.`, hook sites, the tied LM head, the key/value
// cache (incremental forward = full forward) and the unfused training-time attention-dropout path.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { noGrad, ops, tensor, ShapeError, ValueError, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { Linear } from '../../lib/nn/layers.ts';
import { loadSafetensors, readSafetensorsHeader } from '../../lib/io/safetensors.ts';
import type { HFConfig, KVCache, ModelOutput } from '../../lib/models/common.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REF = path.join(path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const MODEL_DIR = path.join(REF, 'models', 'gpt2');
const HAVE_REF = fs.existsSync(path.join(MODEL_DIR, 'model.safetensors')) && fs.existsSync(path.join(REF, 'gpt2', 'base.safetensors'));
const refTest = HAVE_REF ? test : test.skip;
if (!HAVE_REF) test('reference data', (t) => t.log(`skipped: ${REF} not found (set ADAPTERS_SHARED)`) || t.pass());

const ATOL = 1e-4;

const TINY: HFConfig = {
  model_type: 'gpt2', vocab_size: 50, n_embd: 24, n_layer: 2, n_head: 3, n_positions: 32, n_inner: null,
  activation_function: 'gelu_new', resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0, layer_norm_epsilon: 1e-5, eos_token_id: 49,
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

function loadRef(): { model: AdapterModel; ref: Map<string, Tensor> } {
  return { model: AutoAdapterModel.fromPretrained(MODEL_DIR), ref: loadSafetensors(path.join(REF, 'gpt2', 'base.safetensors')) };
}

refTest('last_hidden_state matches the Python library (right-padded batch, padded positions included)', (t) => {
  const { model, ref } = loadRef();
  const out = noGrad(() => model.forward({ inputIds: ref.get('input_ids')!, attentionMask: ref.get('attention_mask')! }));
  const d = maxAbsDiff(out.lastHiddenState, ref.get('last_hidden_state')!);
  t.log(`gpt2 last_hidden_state max abs diff ${d.toExponential(2)}`);
  t.true(d <= ATOL, `max abs diff ${d}`);
  // tied LM head: logits = h · wteᵀ
  t.deepEqual(out.logits!.shape, [2, 8, 100]);
  const manual = ops.linear(out.lastHiddenState, model.stateDict().get('transformer.wte.weight')!);
  t.true(maxAbsDiff(out.logits!, manual) < 1e-6);
  manual.dispose();
  disposeOut(out);
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

refTest('parameter names are the checkpoint keys under transformer., with hook sites', (t) => {
  const { model, ref } = loadRef();
  const header = readSafetensorsHeader(path.join(MODEL_DIR, 'model.safetensors'));
  const own = [...model.stateDict().keys()].sort();
  t.deepEqual(own, [...header.entries.keys()].map((k) => `transformer.${k}`).sort());
  t.is(model.lmHeadKind, 'tied');
  const sites = new Map<string, string>();
  for (const [name, m] of model.namedModules()) if (m instanceof Linear) sites.set(name, m.site);
  t.is(sites.get('transformer.h.0.attn.c_attn'), 'attn.qkv');
  t.is(sites.get('transformer.h.1.attn.c_proj'), 'attn.o');
  t.is(sites.get('transformer.h.0.mlp.c_fc'), 'ffn.up');
  t.is(sites.get('transformer.h.0.mlp.c_proj'), 'ffn.down');
  t.is((model.child('transformer')!.child('h')!.child('0')!.child('attn')!.child('c_attn') as Linear).layout, 'conv1d');
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

refTest('hidden states: embeddings, each block input, final output after ln_f', (t) => {
  const { model, ref } = loadRef();
  const out = noGrad(() => model.forward({ inputIds: ref.get('input_ids')!, attentionMask: ref.get('attention_mask')!, outputHiddenStates: true }));
  t.is(out.hiddenStates!.length, 3);
  t.is(out.hiddenStates![2], out.lastHiddenState);
  const emb = noGrad(() => ops.add(ops.embedding(ref.get('input_ids')!, model.stateDict().get('transformer.wte.weight')!),
    ops.unsqueeze(model.stateDict().get('transformer.wpe.weight')!.slice(0, 0, 8), 0)));
  t.true(maxAbsDiff(out.hiddenStates![0]!, emb) < 1e-6);
  emb.dispose();
  disposeOut(out);
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

refTest('KV cache: prefix + one-token steps reproduce the full forward (with the padding mask)', (t) => {
  const { model, ref } = loadRef();
  const ids = ref.get('input_ids')!, mask = ref.get('attention_mask')!;
  const full = noGrad(() => model.base.forward({ inputIds: ids, attentionMask: mask }));
  let cache: KVCache | undefined;
  let worst = 0;
  noGrad(() => {
    const first = model.base.forward({ inputIds: ids.slice(1, 0, 3), attentionMask: mask.slice(1, 0, 3), useCache: true });
    t.is(first.pastKeyValues!.length, 3);
    t.deepEqual(first.pastKeyValues!.layers[0]!.k.shape, [2, 4, 3, 8]);
    worst = Math.max(worst, maxAbsDiff(first.lastHiddenState, full.lastHiddenState.slice(1, 0, 3)));
    first.lastHiddenState.dispose();
    cache = first.pastKeyValues;
    for (let i = 3; i < 8; i++) {
      const step = model.base.forward({ inputIds: ids.slice(1, i, i + 1), attentionMask: mask.slice(1, 0, i + 1), pastKeyValues: cache, useCache: true });
      worst = Math.max(worst, maxAbsDiff(step.lastHiddenState, full.lastHiddenState.slice(1, i, i + 1)));
      step.lastHiddenState.dispose();
      disposeCache(cache);
      cache = step.pastKeyValues;
    }
  });
  t.is(cache!.length, 8);
  t.log(`incremental vs full max abs diff ${worst.toExponential(2)}`);
  t.true(worst < 1e-5);
  disposeCache(cache);
  disposeOut(full);
  for (const v of ref.values()) v.dispose();
  model.dispose();
});

test('attention mask must cover cached and new positions; n_positions is enforced', (t) => {
  const model = AutoAdapterModel.fromConfig(TINY).eval();
  noGrad(() => {
    const first = model.base.forward({ inputIds: [[1, 2, 3]], useCache: true });
    t.throws(() => model.base.forward({ inputIds: [[4]], attentionMask: [[1]], pastKeyValues: first.pastKeyValues }), { instanceOf: ShapeError, message: /past \+ T/ });
    disposeOut(first);
    t.throws(() => model.base.forward({ inputIds: [Array(33).fill(1)] }), { message: /n_positions/ });
  });
  model.dispose();
});

test('training with attn_pdrop > 0 takes the unfused path, equal to the fused kernel when nothing is dropped', (t) => {
  // p = 1e-9 keeps dropout switched on but (almost surely) drops nothing, scaling by 1/(1 − 1e-9)
  const model = AutoAdapterModel.fromConfig({ ...TINY, attn_pdrop: 1e-9 }, { seed: 3 });
  const ids = tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]], undefined, { dtype: 'i64' });
  const mask = tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], undefined, { dtype: 'i64' });
  const train = noGrad(() => model.train().forward({ inputIds: ids, attentionMask: mask }));
  const evalOut = noGrad(() => model.eval().forward({ inputIds: ids, attentionMask: mask }));
  const d = maxAbsDiff(train.lastHiddenState, evalOut.lastHiddenState);
  t.true(d < 1e-5, `unfused vs fused ${d}`);
  for (const o of [train, evalOut]) disposeOut(o);
  ids.dispose();
  mask.dispose();
  model.dispose();
});

// Backward through a whole model forward (run inside scope()): tensors a tape node owns for its backward
// must outlive the scope.
test('backward through the model (training path, attention dropout on) reaches every parameter', (t) => {
  const model = AutoAdapterModel.fromConfig({ ...TINY, attn_pdrop: 0.1 }, { seed: 3 }).train();
  const out = model.forward({ inputIds: [[5, 6, 7, 8], [9, 10, 0, 0]], attentionMask: [[1, 1, 1, 1], [1, 1, 0, 0]] });
  const loss = ops.sum(ops.mul(out.lastHiddenState, out.lastHiddenState));
  try {
    loss.backward();
    for (const [name, p] of model.namedParameters()) t.truthy(p.grad, name);
  } finally {
    disposeOut(out);
    loss.dispose();
    model.dispose();
  }
});

test('config: n_inner defaults to 4·n_embd; activation_function is honoured', (t) => {
  const model = AutoAdapterModel.fromConfig({ ...TINY, activation_function: 'relu' });
  t.deepEqual(model.stateDict().get('transformer.h.0.mlp.c_fc.weight')!.shape, [24, 96]);
  t.deepEqual(model.stateDict().get('transformer.h.0.attn.c_attn.weight')!.shape, [24, 72]);
  model.dispose();
  t.throws(() => AutoAdapterModel.fromConfig({ ...TINY, activation_function: 'nope' }), { instanceOf: ValueError, message: /unsupported activation/ });
  // sizes and counts must be whole numbers (a fractional layer count threw a RangeError from deep inside)
  t.throws(() => AutoAdapterModel.fromConfig({ ...TINY, n_layer: 2.5 }), { instanceOf: ValueError, message: /'n_layer' must be a non-negative integer/ });
});
