// Prediction heads: the Python library's saved head cases (../shared/reference: classification and tagging on
// BERT, causal LM and classification on GPT-2), save/load round trips, per-type losses against the same losses
// written with plain ops, Parallel heads, and bad labels.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, Parallel, loadSafetensors, saveSafetensors, ops, scope, randn, tensor, noGrad, ValueError, type Tensor } from '../../lib/index.ts';
const saveTorchBinOrSt = (f: string, w: Map<string, Tensor>) => saveSafetensors(f, w);
import { maxDiff } from '../helpers/tensor_diff.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ref = path.join(path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const have = fs.existsSync(path.join(ref, 'manifest.json'));
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'heads-'));

if (!have) test('head reference cases skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  const manifest = JSON.parse(fs.readFileSync(path.join(ref, 'manifest.json'), 'utf8')) as { cases: Record<string, any>[] };
  for (const c of manifest.cases.filter((x) => x.kind === 'head')) {
    test(`${c.id}: logits match the Python library; save → load round trip is identical`, (t) => {
      const inp = loadSafetensors(path.join(ref, c.arch, 'base.safetensors'));
      const feed = { inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')! };
      const m = AutoAdapterModel.fromPretrained(path.join(ref, c.base_model_dir));
      const name = m.loadAdapter(path.join(ref, c.adapter_dirs.a));
      m.setActiveAdapters(name);
      t.is(m.activeHead, 'a');
      const exp = loadSafetensors(path.join(ref, c.expected_file)).get('logits')!;
      const logits = m.forward(feed).logits!;
      t.deepEqual(logits.shape, c.logits_shape);
      const d = maxDiff(logits, exp);
      t.true(d < 1e-4, `max abs diff ${d}`);
      // head_config.json as the Python library wrote it (model_name is the folder it was loaded from)
      const dir = tmp();
      m.saveAdapter(path.join(dir, 'a'), 'a');
      const mine = JSON.parse(fs.readFileSync(path.join(dir, 'a', 'head_config.json'), 'utf8'));
      const theirs = JSON.parse(fs.readFileSync(path.join(ref, c.adapter_dirs.a, 'head_config.json'), 'utf8'));
      delete mine.model_name; delete theirs.model_name;
      t.deepEqual(mine, theirs);
      const names = [...loadSafetensors(path.join(dir, 'a', 'model_head.safetensors')).keys()].sort();
      t.deepEqual(names, [...loadSafetensors(path.join(ref, c.adapter_dirs.a, 'model_head.safetensors')).keys()].sort());
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, c.base_model_dir));
      m2.loadAdapter(path.join(dir, 'a'), { setActive: true });
      t.is(maxDiff(m2.forward(feed).logits!, logits), 0);
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }
}

const bertCfg = { model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
  hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, pad_token_id: 0 };
const gpt2Cfg = { model_type: 'gpt2', vocab_size: 50, n_embd: 16, n_layer: 2, n_head: 2, n_positions: 32, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0, pad_token_id: 0 };
const ids = [[5, 7, 9, 11, 2], [4, 8, 6, 0, 0]];
const mask = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]];

test('classification: CE for num_labels > 1, MSE for 1, BCE-with-logits for multilabel; first token (BERT) / last non-pad (GPT-2)', (t) => {
  scope(() => {
    const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 1 }).eval();
    m.addClassificationHead('c', { num_labels: 3 });
    const out = m.forward({ inputIds: ids, attentionMask: mask, labels: [2, 0] });
    t.deepEqual(out.logits!.shape, [2, 3]);
    t.true(Math.abs(out.loss!.item() - ops.crossEntropy(out.logits!, tensor([2, 0], [2], { dtype: 'i64' })).item()) < 1e-6);
    // the head reads token 0 of the sequence output
    const h0 = ops.squeeze(ops.slice(out.lastHiddenState, 1, 0, 1), 1);
    const head = m.headManager.get('c');
    t.true(maxDiff((head as any).seq(h0), out.logits!) < 1e-6);
    m.addClassificationHead('r', { num_labels: 1 });
    const r = m.forward({ inputIds: ids, attentionMask: mask, labels: tensor([0.5, -1], [2], { dtype: 'f32' }) });
    const want = ops.mean(ops.pow(ops.sub(ops.reshape(r.logits!, [-1]), tensor([0.5, -1], [2])), 2)).item();
    t.true(Math.abs(r.loss!.item() - want) < 1e-6);
    m.addClassificationHead('ml', { num_labels: 3, multilabel: true });
    const y = [[1, 0, 1], [0, 0, 1]];
    const ml = m.forward({ inputIds: ids, attentionMask: mask, labels: tensor(y, undefined, { dtype: 'f32' }) });
    const lg = Array.from(ml.logits!.toArray() as Float32Array);
    const bce = lg.reduce((a, x, i) => { const yy = y.flat()[i]!; const p = 1 / (1 + Math.exp(-x)); return a - (yy * Math.log(p) + (1 - yy) * Math.log(1 - p)); }, 0) / lg.length;
    t.true(Math.abs(ml.loss!.item() - bce) < 1e-5);
    const g = AutoAdapterModel.fromConfig(gpt2Cfg, { seed: 1 }).eval();
    g.addClassificationHead('c', { num_labels: 2 });
    const go = g.forward({ inputIds: ids, attentionMask: mask });
    const last = ops.indexSelect(ops.reshape(go.lastHiddenState, [10, 16]), 0, tensor([4, 7], [2], { dtype: 'i64' }));  // rows 0 @4, 1 @2
    t.true(maxDiff((g.headManager.get('c') as any).seq(last), go.logits!) < 1e-6);
  });
});

test('tagging ignores masked positions; QA averages start/end CE; multiple choice flattens choices', (t) => {
  scope(() => {
    const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 2 }).eval();
    m.addTaggingHead('t', { num_labels: 4 });
    const labels = [[1, 2, 3, 0, 1], [3, 3, 2, 1, 1]];
    const o = m.forward({ inputIds: ids, attentionMask: mask, labels });
    t.deepEqual(o.logits!.shape, [2, 5, 4]);
    const lb = tensor(labels.flat().map((v, i) => (mask.flat()[i] ? v : -100)), [10], { dtype: 'i64' });
    t.true(Math.abs(o.loss!.item() - ops.crossEntropy(ops.reshape(o.logits!, [10, 4]), lb).item()) < 1e-6);
    m.addQAHead('qa');
    const q = m.forward({ inputIds: ids, attentionMask: mask, startPositions: [1, 9], endPositions: [3, 2] });
    t.deepEqual(q.startLogits!.shape, [2, 5]);
    // position 9 is outside the 5 tokens: clamped to 5 and ignored
    const ls = ops.crossEntropy(q.startLogits!, tensor([1, 5], [2], { dtype: 'i64' }), { ignoreIndex: 5 }).item();
    const le = ops.crossEntropy(q.endLogits!, tensor([3, 2], [2], { dtype: 'i64' })).item();
    t.true(Math.abs(q.loss!.item() - (ls + le) / 2) < 1e-6);
    m.addMultipleChoiceHead('mc', { num_choices: 2 });
    const mc = m.forward({ inputIds: tensor(ids, undefined, { dtype: 'i64' }), attentionMask: tensor(mask, undefined, { dtype: 'i64' }), labels: [1] });
    t.deepEqual(mc.logits!.shape, [1, 2]);
    t.true(Math.abs(mc.loss!.item() - ops.crossEntropy(mc.logits!, tensor([1], [1], { dtype: 'i64' })).item()) < 1e-6);
  });
});

test('causal LM: a flex head (tied to the embeddings) and the built-in LM head shift labels; -100 is ignored', (t) => {
  scope(() => {
    const g = AutoAdapterModel.fromConfig(gpt2Cfg, { seed: 3 }).eval();
    const base = g.forward({ inputIds: ids, labels: [[5, 7, 9, 11, 2], [4, 8, 6, -100, -100]] });
    const lg = base.logits!;
    const want = ops.crossEntropy(ops.reshape(ops.slice(lg, 1, 0, 4).contiguous(), [8, 50]), tensor([7, 9, 11, 2, 8, 6, -100, -100], [8], { dtype: 'i64' })).item();
    t.true(Math.abs(base.loss!.item() - want) < 1e-6);
    g.addCausalLmHead('lm');
    const names = g.namedParameters().map(([k]) => k).filter((k) => k.startsWith('heads.'));
    t.deepEqual(names, ['heads.lm.0.weight', 'heads.lm.0.bias', 'heads.lm.2.weight', 'heads.lm.2.bias', 'heads.lm.3.bias']);  // 3.weight = wte
    const o = g.forward({ inputIds: ids, labels: ids });
    t.deepEqual(o.logits!.shape, [2, 5, 50]);
    const w2 = ops.crossEntropy(ops.reshape(ops.slice(o.logits!, 1, 0, 4).contiguous(), [8, 50]), tensor([7, 9, 11, 2, 8, 6, 0, 0], [8], { dtype: 'i64' })).item();
    t.true(Math.abs(o.loss!.item() - w2) < 1e-6);
  });
});

test('heads follow adapters: Parallel gives one head output per branch, each equal to its adapter + head alone; trainAdapter keeps heads trainable', (t) => {
  scope(() => {
    const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 4 }).eval();
    m.addAdapter('a', 'seq_bn');
    m.addAdapter('b', 'lora');
    noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('.a.') || k.includes('.b.')) p.copy_(ops.add(p, randn(p.shape, { std: 0.1, seed: k.length }))); });
    m.addClassificationHead('a', { num_labels: 2 });
    m.addClassificationHead('b', { num_labels: 3 });
    m.setActiveAdapters(new Parallel('a', 'b'));
    t.deepEqual(m.activeHead, ['a', 'b']);
    const par = m.forward({ inputIds: ids, attentionMask: mask, labels: [1, 0] });
    t.is(par.headOutputs!.length, 2);
    for (const [i, n] of ['a', 'b'].entries()) {
      m.setActiveAdapters(n);
      t.is(m.activeHead, n);
      const alone = m.forward({ inputIds: ids, attentionMask: mask, labels: [1, 0] });
      t.true(maxDiff(par.headOutputs![i]!.logits, alone.logits!) < 1e-5, `branch ${n}`);
      t.true(Math.abs(par.headOutputs![i]!.loss!.item() - alone.loss!.item()) < 1e-5);
    }
    t.true(Math.abs(par.loss!.item() - par.headOutputs!.reduce((a, o) => a + o.loss!.item(), 0)) < 1e-5);
    m.trainAdapter('a');
    const trainable = m.namedParameters().filter(([, p]) => p.requiresGrad).map(([k]) => k);
    t.true(trainable.some((k) => k.startsWith('heads.a.')) && trainable.some((k) => k.startsWith('heads.b.')));
    t.false(trainable.some((k) => k.startsWith('bert.') && !k.includes('.adapters.a.')));
    m.deleteHead('b');
    t.deepEqual(m.heads, ['a']);
  });
});

test('bad labels and head configs give clear errors', (t) => {
  const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 5 }).eval();
  m.addClassificationHead('c', { num_labels: 3 });
  t.throws(() => m.forward({ inputIds: ids, labels: [3, 0] }), { instanceOf: ValueError, message: /label 3 at position 0 is out of range \[0, 3\)/ });
  t.throws(() => m.addClassificationHead('c'), { message: /already contains a head/ });
  t.throws(() => m.addClassificationHead('z', { num_labels: 0 }), { message: /num_labels must be >= 1/ });
  t.throws(() => { m.activeHead = 'nope'; }, { message: /No prediction head 'nope'/ });
  const b = AutoAdapterModel.fromConfig(bertCfg, { seed: 5 });
  t.throws(() => b.forward({ inputIds: ids, labels: [1, 0] }), { message: /labels need a prediction head/ });
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'head_config.json'), '{"config": ');
  t.throws(() => m.loadHead(dir), { message: /invalid JSON/ });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('review fixes: heads follow the model mode (dropout off in eval); a bad head file changes nothing; left padding picks the last real token', (t) => {
  const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 6 }).eval();
  m.addClassificationHead('c', { num_labels: 2, dropout_prob: 0.5 });
  const a = scope(() => Array.from(m.forward({ inputIds: ids }).logits!.toArray() as Float32Array));
  const b = scope(() => Array.from(m.forward({ inputIds: ids }).logits!.toArray() as Float32Array));
  t.deepEqual(a, b);
  const dir = tmp();
  m.saveHead(dir, 'c');
  // a file with a wrongly shaped weight: the existing head stays as it was
  const bad = loadSafetensors(path.join(dir, 'model_head.safetensors'));
  const w = new Map(bad);
  w.set('heads.c.4.weight', randn([3, 16]));
  fs.rmSync(path.join(dir, 'model_head.safetensors'));
  saveTorchBinOrSt(path.join(dir, 'model_head.safetensors'), w);
  t.throws(() => m.loadHead(dir), { message: /has shape \[3,16\]/ });
  t.deepEqual(scope(() => Array.from(m.forward({ inputIds: ids }).logits!.toArray() as Float32Array)), a);
  fs.rmSync(dir, { recursive: true, force: true });
  const g = AutoAdapterModel.fromConfig(gpt2Cfg, { seed: 1 }).eval();
  g.addClassificationHead('c', { num_labels: 2 });
  // GPT2AdapterModel's rule: position (number of non-pad ids) − 1, the mask unused — in a left-padded row that is not the
  // last token (as in the Python library); without a pad id, the last position
  const leftIds = [[0, 0, 5, 7, 9], [4, 8, 6, 3, 2]], leftMask = [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]];
  const o = g.forward({ inputIds: leftIds, attentionMask: leftMask });
  const pick = ops.indexSelect(ops.reshape(o.lastHiddenState, [10, 16]), 0, tensor([2, 9], [2], { dtype: 'i64' }));
  t.true(maxDiff((g.headManager.get('c') as any).seq(pick), o.logits!) < 1e-6);
  const g2 = AutoAdapterModel.fromConfig({ ...gpt2Cfg, pad_token_id: null }, { seed: 1 }).eval();
  g2.addClassificationHead('c', { num_labels: 2 });
  const o2 = g2.forward({ inputIds: leftIds });
  const lastPos = ops.indexSelect(ops.reshape(o2.lastHiddenState, [10, 16]), 0, tensor([4, 9], [2], { dtype: 'i64' }));
  t.true(maxDiff((g2.headManager.get('c') as any).seq(lastPos), o2.logits!) < 1e-6);
});

// head_config.json keys follow each Python head class's constructor: the masked LM head (BertStyleMaskedLMHead) takes no
// dropout_prob, so writing one would make the Python library fail to load the head; the causal LM head takes it.
test('LM head configs carry the keys of their Python head classes (no dropout_prob for masked LM)', (t) => {
  const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 1 });
  m.addMaskedLmHead('mlm');
  m.addCausalLmHead('clm');
  const dir = tmp();
  for (const h of ['mlm', 'clm']) m.saveHead(path.join(dir, h), h);
  const cfg = (h: string) => JSON.parse(fs.readFileSync(path.join(dir, h, 'head_config.json'), 'utf8')).config as Record<string, unknown>;
  t.false('dropout_prob' in cfg('mlm'));
  t.deepEqual(Object.keys(cfg('mlm')).sort(), ['activation_function', 'bias', 'embedding_size', 'head_type', 'label2id', 'layer_norm', 'layers', 'shift_labels', 'vocab_size']);
  t.true('dropout_prob' in cfg('clm'));
  fs.rmSync(dir, { recursive: true, force: true });
  m.dispose();
});

// The Python library's PredictionHead.build: the head's dropout_prob, else the model's classifier_dropout, else its
// hidden dropout; saved configs carry the name or path the model was loaded from (transformers' _name_or_path).
test('head dropout prefers classifier_dropout; model_name is the path fromPretrained was given', (t) => {
  const drop = (c: Record<string, unknown>) => {
    const m = AutoAdapterModel.fromConfig({ ...bertCfg, ...c } as never, { seed: 1 });
    m.addClassificationHead('h', { num_labels: 2 });
    const p = (m.headManager.get('h') as unknown as { child(n: string): { p: number } }).child('0').p;
    m.dispose();
    return p;
  };
  t.is(drop({ hidden_dropout_prob: 0.1, classifier_dropout: 0.3 }), 0.3);
  t.is(drop({ hidden_dropout_prob: 0.1, classifier_dropout: null }), 0.1);
  if (fs.existsSync(path.join(ref, 'models', 'bert'))) {
    const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', 'bert'));
    m.addAdapter('a', 'seq_bn');
    const dir = tmp();
    m.saveAdapter(path.join(dir, 'a'), 'a');
    t.is(JSON.parse(fs.readFileSync(path.join(dir, 'a', 'adapter_config.json'), 'utf8')).model_name, path.join(ref, 'models', 'bert'));
    fs.rmSync(dir, { recursive: true, force: true });
    m.dispose();
  }
});

test('head options take the Python keyword names or camelCase (numLabels, activationFunction, usePooler, numChoices)', (t) => {
  const m = AutoAdapterModel.fromConfig(bertCfg, { seed: 7 }).eval();
  m.addClassificationHead('a', { numLabels: 4, activationFunction: 'relu', usePooler: true });
  const c = m.headManager.get('a').config;
  t.deepEqual([c.num_labels, c.activation_function, c.use_pooler], [4, 'relu', true]);
  m.addMultipleChoiceHead('b', { numChoices: 3 });
  t.is(m.headManager.get('b').config.num_choices, 3);
  t.throws(() => m.addClassificationHead('a', { numLabels: 2 }), { message: /already contains a head/ });
  t.notThrows(() => m.addClassificationHead('a', { numLabels: 2, overwriteOk: true }));
});
