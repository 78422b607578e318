// Heads as the Python library's flex-head models build and run them (from an audit against adapters' heads/*.py and
// models/*/adapter_model.py): module layout, head types per model class, the sentence token each model passes,
// multi-head outputs, T5's rescale and derived decoder inputs, default dropouts, LM shift_labels, multiple-choice
// inputs, prompt-tuning tagging labels, and what a head_config.json may hold.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AutoAdapterModel, Parallel, ValueError, ops, scope, tensor, noGrad, type Tensor } from '../../lib/index.ts';
import { maxDiff } from '../helpers/tensor_diff.ts';

const bert = { model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, pad_token_id: 0 };
const gpt2 = { model_type: 'gpt2', vocab_size: 50, n_embd: 16, n_layer: 2, n_head: 2, n_positions: 32, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
const bart = { model_type: 'bart', decoder_start_token_id: 2, eos_token_id: 2, pad_token_id: 1, vocab_size: 50, d_model: 16, encoder_layers: 1, decoder_layers: 1,
  encoder_attention_heads: 2, decoder_attention_heads: 2, encoder_ffn_dim: 32, decoder_ffn_dim: 32, max_position_embeddings: 32, dropout: 0, attention_dropout: 0, activation_dropout: 0 };
const t5 = { model_type: 't5', vocab_size: 50, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_decoder_layers: 1, num_heads: 2, relative_attention_num_buckets: 8,
  dropout_rate: 0, decoder_start_token_id: 0, eos_token_id: 1, pad_token_id: 0 };
const vit = { model_type: 'vit', hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, image_size: 8, patch_size: 4, num_channels: 3,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
const arr = (x: Tensor) => Array.from(x.toArray() as Float32Array);
const seq = (m: ReturnType<typeof AutoAdapterModel.fromConfig>, name: string, x: Tensor) => (m.headManager.get(name) as unknown as { seq(t: Tensor): Tensor }).seq(x);

test('module layout: bias=false drops only the output bias; ELECTRA LM heads project to embedding_size; seq2seq config keys', (t) => {
  const m = AutoAdapterModel.fromConfig(bert, { seed: 1 });
  m.addClassificationHead('c', { num_labels: 2, layers: 2, bias: false });
  t.deepEqual(m.namedParameters().map(([k]) => k).filter((k) => k.startsWith('heads.c.')).sort(), ['heads.c.1.bias', 'heads.c.1.weight', 'heads.c.4.weight']);
  m.dispose();
  const e = AutoAdapterModel.fromConfig({ model_type: 'electra', vocab_size: 50, embedding_size: 8, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,
    intermediate_size: 32, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 1 }).eval();
  e.addMaskedLmHead('lm');
  const shapes = Object.fromEntries(e.namedParameters().filter(([k]) => k.startsWith('heads.lm.')).map(([k, p]) => [k, p.shape]));
  t.deepEqual(shapes['heads.lm.0.weight'], [8, 16]);
  t.deepEqual(e.headManager.get('lm').out.weight.shape, [50, 8], 'the output layer reads embedding_size features (tied to the embeddings)');
  t.deepEqual(scope(() => e.forward({ inputIds: [[1, 2, 3]] }).logits!.shape), [1, 3, 50]);
  e.dispose();
  const b = AutoAdapterModel.fromConfig(bart, { seed: 1 });
  b.addSeq2seqLmHead('s');
  const cfg = b.headManager.get('s').config;
  t.is(cfg.bias, false);
  t.is(cfg.shift_labels, false);
  b.dispose();
});

test('head types per model class; unknown keys and head types refused; Python activation names', (t) => {
  const g = AutoAdapterModel.fromConfig(gpt2, { seed: 1 });
  t.throws(() => g.addMaskedLmHead('m'), { instanceOf: ValueError, message: /masked_lm head is not available/ });
  t.throws(() => g.addMultipleChoiceHead('m'), { instanceOf: ValueError, message: /multiple_choice/ });
  t.notThrows(() => g.addTaggingHead('t'));
  g.dispose();
  const v = AutoAdapterModel.fromConfig(vit, { seed: 1 });
  t.throws(() => v.addClassificationHead('c'), { instanceOf: ValueError, message: /classification head is not available/ });
  v.dispose();
  const b = AutoAdapterModel.fromConfig(bart, { seed: 1 });
  t.throws(() => b.addTaggingHead('t'), { instanceOf: ValueError, message: /tagging/ });
  b.dispose();
  const m = AutoAdapterModel.fromConfig(bert, { seed: 1 });
  t.throws(() => m.addPredictionHead('d', { head_type: 'dependency_parsing' as never, layers: 1, activation_function: null }), { instanceOf: ValueError, message: /dependency-parsing head is not implemented/ });
  t.throws(() => m.addPredictionHead('x', { head_type: 'masked_lm', vocab_size: 50, layers: 2, activation_function: 'gelu', dropout_prob: 0.1 } as never),
    { instanceOf: ValueError, message: /takes no 'dropout_prob'/ });
  for (const act of ['leakyrelu', 'linear', 'relu6', 'mish', 'gelu_accurate', 'GELU', 'Tanh']) {
    m.addClassificationHead(`h_${act}`, { num_labels: 2, activation_function: act });
    t.true(scope(() => arr(m.forward({ inputIds: [[1, 2, 3]], head: `h_${act}` }).logits!)).every(Number.isFinite), act);
  }
  m.dispose();
});

test('sentence token: GPT-2 last position without a pad id, else count − 1; BART/T5 the last <eos> of the encoder ids', (t) => {
  const g = AutoAdapterModel.fromConfig(gpt2, { seed: 2 }).eval();
  g.addClassificationHead('c', { num_labels: 2, use_pooler: true });  // (use_pooler is ignored when the model passes its token)
  const o = g.forward({ inputIds: [[5, 6, 7, 0]] });
  t.true(maxDiff(seq(g, 'c', ops.slice(o.lastHiddenState, 1, 3, 4).squeeze(1)), o.logits!) < 1e-6);
  g.dispose();
  const b = AutoAdapterModel.fromConfig(bart, { seed: 2 }).eval();
  b.addClassificationHead('c', { num_labels: 3 });
  const ids = [[5, 2, 7, 2, 1], [6, 7, 2, 8, 2]];  // eos (2) at 1, 3 and at 2, 4
  const out = b.forward({ inputIds: ids });
  const h = ops.reshape(out.lastHiddenState, [10, 16]);
  t.true(maxDiff(seq(b, 'c', ops.indexSelect(h, 0, tensor([3, 9], [2], { dtype: 'i64' }))), out.logits!) < 1e-6);
  t.throws(() => b.forward({ inputIds: [[5, 2, 7, 2, 1], [6, 7, 2, 8, 9]] }), { instanceOf: ValueError, message: /same number of <eos> tokens/ });
  b.dispose();
  // T5: decoder inputs derived (input ids shifted right); heads see the d_model^-0.5-rescaled output, the class token is not rescaled
  const m = AutoAdapterModel.fromConfig(t5, { seed: 3 }).eval();
  m.addQAHead('qa');
  const ti = [[5, 6, 1, 7], [8, 9, 1, 3]];
  const a = m.forward({ inputIds: ti });
  const withDec = m.forward({ inputIds: ti, decoderInputIds: [[0, 5, 6, 1], [0, 8, 9, 1]] });
  t.is(maxDiff(a.logits!, withDec.logits!), 0);
  t.true(maxDiff(seq(m, 'qa', ops.mul(a.lastHiddenState, 16 ** -0.5)), a.logits!) < 1e-6);
  m.addClassificationHead('c', { num_labels: 2 });
  const c = m.forward({ inputIds: ti });
  const h5 = ops.reshape(c.lastHiddenState, [8, 16]);
  t.true(maxDiff(seq(m, 'c', ops.indexSelect(h5, 0, tensor([2, 6], [2], { dtype: 'i64' }))), c.logits!) < 1e-6);
  m.dispose();
});

test('several active heads: a list runs each on the whole batch (no summed loss); Parallel splits it; logits stacked; head per call', (t) => {
  const m = AutoAdapterModel.fromConfig(bert, { seed: 4 }).eval();
  m.addClassificationHead('x', { num_labels: 2 });
  m.addClassificationHead('y', { num_labels: 2 });
  m.activeHead = ['x', 'y'];
  const feed = { inputIds: [[1, 2, 3], [4, 5, 6]], labels: [0, 1] };
  const o = m.forward(feed);
  t.deepEqual(o.logits!.shape, [4, 2]);
  t.is(o.loss, undefined);
  t.deepEqual(o.headOutputs!.map((h) => h.logits.shape), [[2, 2], [2, 2]]);
  const onlyX = m.forward({ ...feed, head: 'x' });
  t.deepEqual(arr(onlyX.logits!), arr(o.headOutputs![0]!.logits));
  t.truthy(onlyX.loss);
  m.addAdapter('x', 'seq_bn');
  m.addAdapter('y', 'seq_bn');
  m.setActiveAdapters(new Parallel('x', 'y'));
  const p = m.forward(feed);
  t.deepEqual(p.headOutputs!.map((h) => h.logits.shape), [[2, 2], [2, 2]]);
  t.deepEqual(p.logits!.shape, [4, 2]);
  t.truthy(p.loss);
  // trainAdapter does not move the active head (the Python library activates the setup on the base model only)
  m.activeHead = 'y';
  m.trainAdapter('x');
  t.is(m.activeHead, 'y');
  m.dispose();
});

test('defaults and inputs: head dropout keys per model, masked LM shift_labels, multilabel image head, multiple-choice (B, C, T), prompt-tuning tagging', (t) => {
  const d = AutoAdapterModel.fromConfig({ model_type: 'distilbert', vocab_size: 50, dim: 16, n_layers: 1, n_heads: 2, hidden_dim: 32 }, { seed: 1 });
  d.addClassificationHead('c');
  t.is((d.headManager.get('c').child('0') as unknown as { p: number }).p, 0.2, 'seq_classif_dropout');
  d.dispose();
  const b = AutoAdapterModel.fromConfig({ ...bart, dropout: 0.3 }, { seed: 1 });
  b.addClassificationHead('c');
  t.is((b.headManager.get('c').child('0') as unknown as { p: number }).p, 0, "BartConfig's classifier_dropout 0.0");
  b.dispose();
  const m = AutoAdapterModel.fromConfig(bert, { seed: 5 }).eval();
  m.addPredictionHead('mlm', { head_type: 'masked_lm', vocab_size: 50, embedding_size: 16, layers: 1, activation_function: null, shift_labels: true });
  const labels = [[3, 4, 5, 6]];
  const o = m.forward({ inputIds: [[1, 2, 3, 4]], labels });
  const lg = ops.slice(o.logits!, 1, 0, 3).reshape([3, 50]);
  t.true(Math.abs(o.loss!.item() - ops.crossEntropy(lg, tensor([4, 5, 6], [3], { dtype: 'i64' })).item()) < 1e-5, 'shifted');
  // multiple choice: (B, C, T) inputs are flattened; logits (B, C)
  m.addMultipleChoiceHead('mc', { num_choices: 3 });
  const mc = m.forward({ inputIds: [[[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[9, 8, 7], [6, 5, 4], [3, 2, 1]]], labels: [0, 2] });
  t.deepEqual(mc.logits!.shape, [2, 3]);
  t.truthy(mc.loss);
  // prompt tuning before the tokens: tagging labels get −100 for them
  m.addAdapter('p', 'prompt_tuning[prompt_length=2]');
  m.setActiveAdapters('p');
  m.addTaggingHead('tag', { num_labels: 3 });
  const tg = m.forward({ inputIds: [[1, 2, 3]], labels: [[0, 1, 2]], attentionMask: [[1, 1, 1]] });
  t.deepEqual(tg.logits!.shape, [1, 5, 3]);
  const want = ops.crossEntropy(ops.slice(tg.logits!, 1, 2).reshape([3, 3]), tensor([0, 1, 2], [3], { dtype: 'i64' }));
  t.true(Math.abs(tg.loss!.item() - want.item()) < 1e-5);
  m.dispose();
  const v = AutoAdapterModel.fromConfig(vit, { seed: 1 }).eval();
  v.addImageClassificationHead('i', { num_labels: 3, multilabel: true });
  const px = ops.randn([2, 3, 8, 8], { seed: 1 });
  const io = v.forward({ pixelValues: px, labels: tensor([[1, 0, 1], [0, 1, 0]]) });
  t.true(Number.isFinite(io.loss!.item()));
  v.dispose();
});

test('head folders: another model class or a static head is a clear error', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'head-class-'));
  const g = AutoAdapterModel.fromConfig({ ...gpt2, n_embd: 16 }, { seed: 1 });
  g.addClassificationHead('h', { num_labels: 2 });
  g.saveHead(dir, 'h');
  const r = AutoAdapterModel.fromConfig(bert, { seed: 1 });
  t.throws(() => r.loadHead(dir), { instanceOf: ValueError, message: /GPT2AdapterModel cannot be loaded into BertAdapterModel/ });
  const f = path.join(dir, 'head_config.json');
  const j = JSON.parse(fs.readFileSync(f, 'utf8'));
  fs.writeFileSync(f, JSON.stringify({ ...j, config: null, model_class: 'BertForSequenceClassification' }));
  t.throws(() => r.loadHead(dir), { instanceOf: ValueError, message: /static head/ });
  fs.rmSync(dir, { recursive: true, force: true });
  g.dispose(); r.dispose();
  void noGrad;
});
