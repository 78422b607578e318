// config.json options that change the computation, read as transformers reads them: transformers v5's rope_parameters,
// the defaults of keys a config may leave out (RoBERTa's pad 1, ELECTRA's embedding_size 128, mT5's gated-gelu,
// Mistral's 4096 window), GPT-2 with an untied LM head, BERT as a decoder (causal); options we can't honour are errors.
import test from 'ava';
import { AutoAdapterModel, ValueError, scope, tensor } from '../../lib/index.ts';
import { parseLlamaConfig } from '../../lib/models/llama.ts';
import { parseBertConfig } from '../../lib/models/bert.ts';
import { parseT5Config } from '../../lib/models/t5.ts';

const LLAMA = { model_type: 'llama', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 32 };

test('LLaMA family: rope_parameters (transformers v5) give theta and scaling; Mistral window default; partial rotary refused', (t) => {
  const v5 = parseLlamaConfig({ ...LLAMA, rope_parameters: { rope_theta: 1e6, rope_type: 'linear', factor: 4 } });
  t.is(v5.ropeTheta, 1e6);
  t.deepEqual(v5.ropeScaling, { type: 'linear', factor: 4 });
  t.is(parseLlamaConfig({ ...LLAMA, rope_parameters: { rope_theta: 5e5, rope_type: 'default' } }).ropeScaling, null);
  t.is(parseLlamaConfig({ ...LLAMA, rope_theta: 2e4 }).ropeTheta, 2e4, 'legacy top-level rope_theta');
  t.throws(() => parseLlamaConfig({ ...LLAMA, rope_parameters: { rope_theta: 1e4, rope_type: 'yarn', factor: 2 } }), { instanceOf: ValueError, message: /yarn/ });
  t.throws(() => parseLlamaConfig({ ...LLAMA, rope_parameters: { full_attention: { rope_theta: 1e4 } } }), { instanceOf: ValueError, message: /per layer type/ });
  t.deepEqual(parseLlamaConfig({ ...LLAMA, model_type: 'mistral' }).windows, [4096, 4096]);
  t.deepEqual(parseLlamaConfig({ ...LLAMA, model_type: 'mistral', sliding_window: null }).windows, [null, null]);
  t.throws(() => parseLlamaConfig({ ...LLAMA, partial_rotary_factor: 0.5 }), { instanceOf: ValueError, message: /partial_rotary_factor/ });
  // the model follows: theta 1e6 given either way computes the same, and differs from the default
  const run = (extra: Record<string, unknown>) => {
    const m = AutoAdapterModel.fromConfig({ ...LLAMA, ...extra }, { seed: 1 }).eval();
    const r = scope(() => Array.from(m.forward({ inputIds: [[1, 2, 3, 4, 5, 6]] }).lastHiddenState.toArray() as Float32Array));
    m.dispose();
    return r;
  };
  const legacy = run({ rope_theta: 1e6 }), modern = run({ rope_parameters: { rope_theta: 1e6, rope_type: 'default' } }), dflt = run({});
  t.deepEqual(modern, legacy);
  t.true(dflt.some((v, i) => Math.abs(v - legacy[i]!) > 1e-6));
});

test('defaults of left-out keys: RoBERTa pad 1, ELECTRA embedding_size 128, mT5 gated-gelu; BERT is_decoder is causal', (t) => {
  t.is(parseBertConfig({ vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32 }, 'roberta').padTokenId, 1);
  t.is(parseBertConfig({ vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32 }).padTokenId, 0);
  const e = AutoAdapterModel.fromConfig({ model_type: 'electra', vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32 }, { seed: 1 });
  t.deepEqual(e.namedParameters().find(([k]) => k.endsWith('word_embeddings.weight'))![1].shape, [50, 128]);
  e.dispose();
  const mt5 = parseT5Config({ model_type: 'mt5', vocab_size: 50, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_heads: 2 });
  const t5 = parseT5Config({ model_type: 't5', vocab_size: 50, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_heads: 2 });
  t.not(JSON.stringify(mt5), JSON.stringify({ ...t5 }), 'mT5 defaults to a gated feed-forward');
  const m = AutoAdapterModel.fromConfig({ model_type: 'mt5', vocab_size: 50, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_heads: 2, decoder_start_token_id: 0 }, { seed: 1 });
  t.true(m.namedParameters().some(([k]) => k.includes('DenseReluDense.wi_0')));
  m.dispose();
  // BERT as a decoder: position 0 does not see later tokens
  const b = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32,
    is_decoder: true, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 1 }).eval();
  const h = (ids: number[]) => scope(() => Array.from(b.forward({ inputIds: [ids] }).lastHiddenState.toArray() as Float32Array));
  const h1 = h([1, 2, 3, 4]), h2 = h([1, 2, 3, 9]);
  t.deepEqual(h1.slice(0, 48), h2.slice(0, 48), 'earlier positions unchanged');
  t.notDeepEqual(h1.slice(48), h2.slice(48));
  b.dispose();
  t.throws(() => parseBertConfig({ vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, add_cross_attention: true }),
    { instanceOf: ValueError, message: /add_cross_attention/ });
});

test('GPT-2 with tie_word_embeddings false has its own lm_head', (t) => {
  const cfg = { model_type: 'gpt2', vocab_size: 50, n_embd: 16, n_layer: 1, n_head: 2, n_positions: 32, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
  const untied = AutoAdapterModel.fromConfig({ ...cfg, tie_word_embeddings: false }, { seed: 1 }).eval();
  const tied = AutoAdapterModel.fromConfig(cfg, { seed: 1 }).eval();
  t.true(untied.namedParameters().some(([k]) => k === 'lm_head.weight'));
  t.false(tied.namedParameters().some(([k]) => k === 'lm_head.weight'));
  scope(() => {
    const out = untied.forward({ inputIds: [[1, 2, 3]] });
    const w = untied.namedParameters().find(([k]) => k === 'lm_head.weight')![1];
    const want = out.lastHiddenState.matmul(w.T);
    const got = out.logits!;
    const a = got.toArray() as Float32Array, b = want.toArray() as Float32Array;
    t.true(a.every((v, i) => Math.abs(v - b[i]!) < 1e-5), 'logits = h · lm_headᵀ');
  });
  untied.dispose(); tied.dispose();
  void tensor;
});
