// Generation (lib/models/generate.ts) with GPT-2 and the LLaMA family: the key/value cache gives the same
// tokens as recomputing every step; a left-padded batch gives the same tokens as each row alone; EOS
// handling; seeded sampling (reproducible, per-row streams, top-k / top-p limits); no native memory growth;
// and the real pretrained stories260K model with its tokenizer reproducing its reference greedy continuation exactly.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { memoryStats, tensor, ShapeError, ValueError } from '../../lib/index.ts';
import { AutoAdapterModel, type AdapterModel } from '../../lib/models/auto.ts';
import { generate } from '../../lib/models/generate.ts';
import { AutoTokenizer } from '../../lib/tokenizers/auto.ts';
import type { HFConfig } from '../../lib/models/common.ts';
import { PeftPromptTuningConfig, PeftPrefixTuningConfig } from '../../lib/adapters/config.ts';
import * as ops from '../../lib/ops/index.ts';
import { noGrad } from '../../lib/autograd/tape.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHARED = path.resolve(ROOT, process.env.ADAPTERS_SHARED ?? '../shared');
const MODELS = path.join(SHARED, 'reference', 'models');
const HAVE_REF = ['gpt2', 'llama', 'mistral'].every((a) => fs.existsSync(path.join(MODELS, a, 'model.safetensors')));
const refTest = HAVE_REF ? test : test.skip;
if (!HAVE_REF) test('reference models', (t) => t.log(`skipped: ${MODELS} not found (set ADAPTERS_SHARED)`) || t.pass());
const STORIES = path.join(SHARED, 'data', 'stories260K-hf');
const STORIES_REF = path.join(SHARED, 'data', 'stories260K', 'reference_outputs.json');
const HAVE_STORIES = fs.existsSync(path.join(STORIES, 'model.safetensors')) && fs.existsSync(STORIES_REF);
const storiesTest = HAVE_STORIES ? test.serial : test.skip;
if (!HAVE_STORIES) test('stories260K data', (t) => t.log(`skipped: ${STORIES} not found (set ADAPTERS_SHARED)`) || t.pass());

// random models a little larger than the reference ones (GQA with 3 query heads per kv head, windows)
const RANDOM: Record<string, HFConfig> = {
  gpt2: {
    model_type: 'gpt2', vocab_size: 97, n_embd: 48, n_layer: 3, n_head: 4, n_positions: 64, resid_pdrop: 0, embd_pdrop: 0,
    attn_pdrop: 0, eos_token_id: 96, initializer_range: 0.2,
  },
  llama: {
    model_type: 'llama', vocab_size: 97, hidden_size: 48, num_hidden_layers: 3, num_attention_heads: 6, num_key_value_heads: 2,
    intermediate_size: 64, rms_norm_eps: 1e-6, eos_token_id: 2, initializer_range: 0.2,
  },
  qwen2: {
    model_type: 'qwen2', vocab_size: 97, hidden_size: 48, num_hidden_layers: 3, num_attention_heads: 6, num_key_value_heads: 2,
    intermediate_size: 64, use_sliding_window: true, sliding_window: 5, max_window_layers: 1, eos_token_id: 2, initializer_range: 0.2,
  },
};

function models(): [string, AdapterModel][] {
  const out: [string, AdapterModel][] = Object.entries(RANDOM).map(([n, c]) => [`random ${n}`, AutoAdapterModel.fromConfig(c, { seed: 11 }).eval()]);
  if (HAVE_REF) for (const a of ['gpt2', 'llama', 'mistral']) out.push([a, AutoAdapterModel.fromPretrained(path.join(MODELS, a))]);
  return out;
}

const PROMPTS = [[5, 17, 33, 8, 21, 40], [9, 9, 12, 60, 3, 27]];

test('KV cache and full recomputation generate the same tokens (greedy)', (t) => {
  for (const [name, m] of models()) {
    const a = generate(m, PROMPTS, { maxNewTokens: 20, eosTokenId: null });
    const b = generate(m, PROMPTS, { maxNewTokens: 20, eosTokenId: null, useCache: false });
    t.deepEqual(a, b, name);
    t.is(a[0]!.length, 26);
    t.deepEqual(a.map((r) => r.slice(0, 6)), PROMPTS);
    t.log(`${name}: ${a[0]!.slice(6).join(' ')}`);
    m.dispose();
  }
});

test('KV cache and full recomputation sample the same tokens (same seed)', (t) => {
  for (const [name, m] of models()) {
    const opts = { maxNewTokens: 15, eosTokenId: null, temperature: 1.3, topK: 30, topP: 0.95, seed: 42 };
    t.deepEqual(generate(m, PROMPTS, opts), generate(m, PROMPTS, { ...opts, useCache: false }), name);
    m.dispose();
  }
});

test('a left-padded batch generates what each row generates alone (positions from the mask)', (t) => {
  for (const [name, m] of models()) {
    if (name === 'mistral' || name === 'random qwen2') continue;  // HF's windows count padding too: not per-row invariant
    const rows = [[5, 17, 33, 8, 21, 40], [9, 12, 60]];
    const alone = rows.map((r) => generate(m, [r], { maxNewTokens: 12, eosTokenId: null })[0]!.slice(r.length));
    const padded = [rows[0]!, [0, 0, 0, ...rows[1]!]];
    const mask = [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]];
    for (const useCache of [true, false]) {
      const batch = generate(m, padded, { maxNewTokens: 12, eosTokenId: null, attentionMask: mask, useCache });
      t.deepEqual(batch.map((r) => r.slice(6)), alone, `${name} useCache=${useCache}`);
    }
    m.dispose();
  }
});

// PEFT prompt tuning (virtual tokens in the sequence and the cache) and PEFT prefix tuning (prefix keys/values, the
// real tokens' positions shifted by the prefix length) in generation: the first new token is the argmax of the
// model's own forward (which applies the method as PEFT does, checked against PEFT elsewhere), the cache and full
// recomputation agree, a left-padded batch equals each row alone, and the adapter changes the continuation.
for (const method of ['prompt', 'prefix'] as const)
  test(`PEFT ${method} tuning: generate follows the model's forward, with and without the cache, padded or alone`, (t) => {
    for (const arch of ['gpt2', 'llama'] as const) {
      const m = AutoAdapterModel.fromConfig(RANDOM[arch]!, { seed: 11 }).eval();
      const plain = generate(m, PROMPTS, { maxNewTokens: 10, eosTokenId: null });
      m.addAdapter('p', method === 'prompt' ? new PeftPromptTuningConfig({ num_virtual_tokens: 4 }) : new PeftPrefixTuningConfig({ prefix_length: 5, flat: true }));
      m.setActiveAdapters('p');
      // give the adapter's parameters weight, so that it visibly steers the continuation
      noGrad(() => { for (const [n, p] of m.namedParameters()) if (n.includes('.p.') || n.endsWith('.p.weight')) p.copy_(ops.mul(ops.randn(p.shape, { seed: 5 }), 2)); });
      const a = generate(m, PROMPTS, { maxNewTokens: 10, eosTokenId: null });
      const b = generate(m, PROMPTS, { maxNewTokens: 10, eosTokenId: null, useCache: false });
      t.deepEqual(a, b, `${arch}: cache vs recomputation`);
      t.notDeepEqual(a, plain, `${arch}: the adapter changes nothing`);
      // the first new token of each row is the argmax of the model's forward over the prompt
      const logits = noGrad(() => m.forward({ inputIds: tensor(PROMPTS, undefined, { dtype: 'i64' }) }).logits!);
      const [, T, V] = logits.shape as [number, number, number];
      const L = logits.toArray() as Float32Array;
      PROMPTS.forEach((_, r) => {
        let best = 0;
        for (let v = 1; v < V; v++) if (L[(r * T + T - 1) * V + v]! > L[(r * T + T - 1) * V + best]!) best = v;
        t.is(a[r]![PROMPTS[0]!.length], best, `${arch} row ${r}: first token`);
      });
      logits.dispose();
      // left padding: each row as if alone
      const rows = [[5, 17, 33, 8, 21, 40], [9, 12, 60]];
      const alone = rows.map((r) => generate(m, [r], { maxNewTokens: 8, eosTokenId: null })[0]!.slice(r.length));
      for (const useCache of [true, false]) {
        const batch = generate(m, [rows[0]!, [0, 0, 0, ...rows[1]!]], { maxNewTokens: 8, eosTokenId: null, useCache, attentionMask: [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]] });
        t.deepEqual(batch.map((r) => r.slice(6)), alone, `${arch} padded, useCache=${useCache}`);
      }
      m.dispose();
    }
  });

// An active flex head decides the logits, as in the Python library (its generate goes through forward): a causal LM
// head with its own layers changes the continuation, which then follows the model's forward; other head types are
// refused; with no active head the model's own LM head generates.
test('generate uses the active causal LM head; other active heads are refused', (t) => {
  for (const arch of ['gpt2', 'llama'] as const) {
    const m = AutoAdapterModel.fromConfig(RANDOM[arch]!, { seed: 11 }).eval();
    const own = generate(m, PROMPTS, { maxNewTokens: 8, eosTokenId: null });
    m.addCausalLmHead('lm', { layers: 2 });
    m.activeHead = 'lm';
    const a = generate(m, PROMPTS, { maxNewTokens: 8, eosTokenId: null });
    t.deepEqual(a, generate(m, PROMPTS, { maxNewTokens: 8, eosTokenId: null, useCache: false }), `${arch}: cache vs recomputation`);
    t.notDeepEqual(a, own, `${arch}: the head's own layers change nothing`);
    const logits = noGrad(() => m.forward({ inputIds: tensor(PROMPTS, undefined, { dtype: 'i64' }) }).logits!);
    const [, T, V] = logits.shape as [number, number, number];
    const L = logits.toArray() as Float32Array;
    PROMPTS.forEach((_, r) => {
      let best = 0;
      for (let v = 1; v < V; v++) if (L[(r * T + T - 1) * V + v]! > L[(r * T + T - 1) * V + best]!) best = v;
      t.is(a[r]![PROMPTS[0]!.length], best, `${arch} row ${r}: first token from the active head`);
    });
    logits.dispose();
    m.addClassificationHead('cls', { num_labels: 3 });
    m.activeHead = 'cls';
    t.throws(() => generate(m, PROMPTS, { maxNewTokens: 2 }), { instanceOf: ValueError, message: /'cls' is a classification head/ });
    m.activeHead = null;
    t.deepEqual(generate(m, PROMPTS, { maxNewTokens: 8, eosTokenId: null }), own, `${arch}: no active head, the model's own LM head`);
    m.dispose();
  }
});

test('EOS: a finished row is padded, generation stops when every row has finished', (t) => {
  const m = AutoAdapterModel.fromConfig(RANDOM.llama!, { seed: 11 }).eval();
  const free = generate(m, PROMPTS, { maxNewTokens: 10, eosTokenId: null });
  // make row 0's third new token the EOS id: row 0 stops there, row 1 goes on (unless it emits it too)
  const eos = free[0]![8]!;
  const r1Hit = free[1]!.slice(6).indexOf(eos);
  const stopped = generate(m, PROMPTS, { maxNewTokens: 10, eosTokenId: eos, padTokenId: 0 });
  const end0 = free[0]!.slice(6).indexOf(eos);  // first occurrence in row 0 (≤ 2)
  t.deepEqual(stopped[0]!.slice(0, 7 + end0), free[0]!.slice(0, 7 + end0));
  t.true(stopped[0]!.slice(7 + end0).every((x) => x === 0));
  if (r1Hit < 0) {
    t.deepEqual(stopped[1], free[1]);
  } else {
    const last = Math.max(end0, r1Hit);
    t.is(stopped[0]!.length, 7 + last);  // both rows ended: stopped early
  }
  // every row ends at once: the result is as short as possible
  const first = free.map((r) => r[6]!);
  const both = generate(m, PROMPTS, { maxNewTokens: 10, eosTokenId: first });
  t.deepEqual(both.map((r) => r.length), [7, 7]);
  // default: config.eos_token_id (2), padding with it when there is no pad_token_id
  t.deepEqual(generate(m, PROMPTS, { maxNewTokens: 30 }), generate(m, PROMPTS, { maxNewTokens: 30, eosTokenId: 2, padTokenId: 2 }));
  m.dispose();
});

test('sampling: seeded and reproducible, rows draw from their own streams, top-k = 1 and tiny top-p are greedy', (t) => {
  const m = AutoAdapterModel.fromConfig(RANDOM.gpt2!, { seed: 11 }).eval();
  const opts = { maxNewTokens: 25, eosTokenId: null, temperature: 1, seed: 7 };
  const a = generate(m, PROMPTS, opts);
  t.deepEqual(generate(m, PROMPTS, opts), a);
  t.notDeepEqual(generate(m, PROMPTS, { ...opts, seed: 8 }), a);
  t.deepEqual(generate(m, [PROMPTS[0]!], opts)[0], a[0]);  // row 0 alone: same draws
  const greedy = generate(m, PROMPTS, { maxNewTokens: 25, eosTokenId: null });
  t.notDeepEqual(a, greedy);
  t.deepEqual(generate(m, PROMPTS, { ...opts, topK: 1 }), greedy);
  t.deepEqual(generate(m, PROMPTS, { ...opts, topP: 1e-6 }), greedy);
  t.deepEqual(generate(m, PROMPTS, { ...opts, temperature: 1e-4 }), greedy);
  // top-k restricts the support: with k = 2 every token is one of the two most likely (checked via k = 1 / 2 overlap)
  const k2 = generate(m, PROMPTS, { ...opts, topK: 2, maxNewTokens: 1 });
  const top2 = new Set<number>();
  for (let s = 0; s < 40; s++) top2.add(generate(m, [PROMPTS[0]!], { ...opts, topK: 2, maxNewTokens: 1, seed: s })[0]![6]!);
  t.true(top2.size <= 2 && top2.has(greedy[0]![6]!));
  t.true(top2.has(k2[0]![6]!));
  m.dispose();
});

test('inputs: tensors accepted; maxNewTokens 0; argument errors', (t) => {
  const m = AutoAdapterModel.fromConfig(RANDOM.gpt2!, { seed: 11 }).eval();
  const ids = tensor(PROMPTS, undefined, { dtype: 'i64' });
  t.deepEqual(generate(m, ids, { maxNewTokens: 4 }), generate(m, PROMPTS, { maxNewTokens: 4 }));
  ids.dispose();
  t.deepEqual(generate(m, PROMPTS, { maxNewTokens: 0 }), PROMPTS);
  t.throws(() => generate(m, PROMPTS, { maxNewTokens: -1 }), { instanceOf: ValueError });
  t.throws(() => generate(m, PROMPTS, { maxNewTokens: 2, topP: 0 }), { instanceOf: ValueError });
  t.throws(() => generate(m, PROMPTS, { maxNewTokens: 2, temperature: -1 }), { instanceOf: ValueError });
  t.throws(() => generate(m, [[1, 2], [3]], { maxNewTokens: 2 }), { instanceOf: ShapeError });
  t.throws(() => generate(m, [[1, 2, 0]], { maxNewTokens: 2, attentionMask: [[1, 1, 0]] }), { message: /right-padded/ });
  m.dispose();
  const bert = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 20, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 8 });
  t.throws(() => generate(bert, [[1, 2]], { maxNewTokens: 1 }), { message: /no LM head/ });
  bert.dispose();
});

test.serial('no native memory is left behind, whatever the number of steps', (t) => {
  const m = AutoAdapterModel.fromConfig(RANDOM.llama!, { seed: 11 }).eval();
  generate(m, PROMPTS, { maxNewTokens: 2 });  // warm-up
  const before = memoryStats();
  for (const useCache of [true, false])
    for (const n of [3, 30]) {
      generate(m, PROMPTS, { maxNewTokens: n, eosTokenId: null, useCache });
      generate(m, [[0, ...PROMPTS[0]!], PROMPTS[1]!.concat(5)], { maxNewTokens: n, eosTokenId: null, useCache, attentionMask: [[0, 1, 1, 1, 1, 1, 1], Array(7).fill(1)] });
      const after = memoryStats();
      t.is(after.liveTensors, before.liveTensors, `live tensors after ${n} steps (cache ${useCache})`);
      t.is(after.liveBytes, before.liveBytes, `live bytes after ${n} steps (cache ${useCache})`);
    }
  m.dispose();
});

interface StoriesRef { prompt: string; prompt_ids_with_bos: number[]; greedy_from_bos_ids: number[]; greedy_from_bos_text: string }

storiesTest('stories260K: greedy decoding reproduces the reference 40-token continuation exactly', (t) => {
  const ref = JSON.parse(fs.readFileSync(STORIES_REF, 'utf8')) as StoriesRef;
  const model = AutoAdapterModel.fromPretrained(STORIES);
  const fromBos = generate(model, [[1]], { maxNewTokens: 40 });
  t.deepEqual(fromBos[0], ref.greedy_from_bos_ids);
  t.deepEqual(generate(model, [[1]], { maxNewTokens: 40, useCache: false })[0], ref.greedy_from_bos_ids);
  // the greedy text starts with the prompt, so continuing the prompt gives the rest
  const P = ref.prompt_ids_with_bos.length;
  t.deepEqual(ref.greedy_from_bos_ids.slice(0, P), ref.prompt_ids_with_bos);
  t.deepEqual(generate(model, [ref.prompt_ids_with_bos], { maxNewTokens: 41 - P })[0], ref.greedy_from_bos_ids);
  model.dispose();
});

storiesTest('stories260K with its tokenizer: prompt ids, a left-padded batch = each prompt alone, decoded text', (t) => {
  const ref = JSON.parse(fs.readFileSync(STORIES_REF, 'utf8')) as StoriesRef;
  const tok = AutoTokenizer.fromPretrained(STORIES);
  t.deepEqual(tok.encode(ref.prompt), ref.prompt_ids_with_bos);
  t.is(tok.decode(ref.greedy_from_bos_ids, { skipSpecialTokens: true }), ref.greedy_from_bos_text);
  const model = AutoAdapterModel.fromPretrained(STORIES);
  const rows = ['Tom had a red', ref.prompt].map((p) => tok.encode(p));
  const T = Math.max(...rows.map((r) => r.length));
  const batch = generate(model, rows.map((r) => [...Array(T - r.length).fill(0), ...r]), {
    maxNewTokens: 20, attentionMask: rows.map((r) => [...Array(T - r.length).fill(0), ...r.map(() => 1)]),
  });
  rows.forEach((r, b) => {
    const alone = generate(model, [r], { maxNewTokens: 20 })[0]!;
    t.deepEqual(batch[b]!.slice(T), alone.slice(r.length), `row ${b}`);
    t.log(JSON.stringify(tok.decode(alone, { skipSpecialTokens: true })));
  });
  t.true(tok.decode(batch[1]!, { skipSpecialTokens: true }).startsWith(ref.prompt));
  model.dispose();
});

test('model.generate dispatches encoder–decoder models to the seq2seq loop', (t) => {
  const cfg = { model_type: 't5', vocab_size: 30, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_decoder_layers: 1, num_heads: 2,
    relative_attention_num_buckets: 8, dropout_rate: 0, decoder_start_token_id: 0, eos_token_id: 1, pad_token_id: 0 };
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 1 }).eval();
  const out = m.generate([[5, 6, 7]], { maxNewTokens: 4, eosTokenId: null } as never);
  t.is(out.length, 1);
  t.is(out[0]![0], 0, 'starts with decoder_start_token_id');
  t.is(out[0]!.length, 5);
  // the active head gives forward's logits: a classification head is refused, not sampled as if it were a vocabulary
  m.addClassificationHead('cls', { num_labels: 3 });
  m.activeHead = 'cls';
  t.throws(() => m.generate([[5, 6, 7]], { maxNewTokens: 2 } as never), { instanceOf: ValueError, message: /seq2seq LM head/ });
  m.activeHead = null;
  t.deepEqual(m.generate([[5, 6, 7]], { maxNewTokens: 4, eosTokenId: null } as never), out);
  m.dispose();
});
