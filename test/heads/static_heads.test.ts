// Checkpoints of transformers' task classes (config.architectures): their head becomes the active flex head 'default' with
// the checkpoint's labels and weights, as the Python library's convert_static_to_flex_head; the logits equal the task
// class's own computation (BertForSequenceClassification: classifier(pooler output); RobertaForSequenceClassification:
// out_proj(tanh(dense(h[:, 0]))); GPT2ForSequenceClassification: score at the last non-pad token; …ForTokenClassification).
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, loadSafetensors, saveSafetensors, ops, randn, scope, type Tensor } from '../../lib/index.ts';
import { maxDiff } from '../helpers/tensor_diff.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ref = path.join(path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const have = fs.existsSync(path.join(ref, 'manifest.json'));

/** The reference base model plus head tensors, as a fine-tuned checkpoint of `arch` would be saved. */
function checkpoint(model: string, arch: string, head: Record<string, Tensor>, extra: Record<string, unknown> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'static-head-'));
  const cfg = JSON.parse(fs.readFileSync(path.join(ref, 'models', model, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, architectures: [arch], ...extra }));
  const w = loadSafetensors(path.join(ref, 'models', model, 'model.safetensors'));
  for (const [k, v] of Object.entries(head)) w.set(k, v);
  saveSafetensors(path.join(dir, 'model.safetensors'), w);
  return dir;
}
const ids = [[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]];

if (!have) test('static head conversion skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  test('BertForSequenceClassification / BertForTokenClassification checkpoints: an active default head with their weights and labels', (t) => {
    const H = JSON.parse(fs.readFileSync(path.join(ref, 'models', 'bert', 'config.json'), 'utf8')).hidden_size as number;
    const W = randn([3, H], { seed: 1 }), b = randn([3], { seed: 2 });
    const dir = checkpoint('bert', 'BertForSequenceClassification', { 'classifier.weight': W, 'classifier.bias': b },
      { id2label: { 0: 'neg', 1: 'neu', 2: 'pos' }, label2id: { neg: 0, neu: 1, pos: 2 } });
    const m = AutoAdapterModel.fromPretrained(dir);
    t.deepEqual(m.heads, ['default']);
    t.is(m.activeHead, 'default');
    t.deepEqual(m.headManager.get('default').config.label2id, { neg: 0, neu: 1, pos: 2 });
    scope(() => {
      const o = m.forward({ inputIds: ids, attentionMask: [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]] });
      t.true(maxDiff(ops.add(ops.matmul(o.pooledOutput!, W.T), b), o.logits!) < 1e-5);
    });
    m.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
    const tdir = checkpoint('bert', 'BertForTokenClassification', { 'classifier.weight': W, 'classifier.bias': b }, { num_labels: 3 });
    const tm = AutoAdapterModel.fromPretrained(tdir);
    scope(() => {
      const o = tm.forward({ inputIds: ids });
      t.true(maxDiff(ops.add(ops.matmul(o.lastHiddenState, W.T), b), o.logits!) < 1e-5);
    });
    tm.dispose();
    fs.rmSync(tdir, { recursive: true, force: true });
    // a base checkpoint, or one missing the head's weights, gets no head
    const bare = AutoAdapterModel.fromPretrained(path.join(ref, 'models', 'bert'));
    t.deepEqual(bare.heads, []);
    bare.dispose();
  });

  test('RobertaForSequenceClassification and GPT2ForSequenceClassification checkpoints', (t) => {
    const H = JSON.parse(fs.readFileSync(path.join(ref, 'models', 'roberta', 'config.json'), 'utf8')).hidden_size as number;
    const D = randn([H, H], { seed: 3 }), db = randn([H], { seed: 4 }), O = randn([2, H], { seed: 5 }), ob = randn([2], { seed: 6 });
    const dir = checkpoint('roberta', 'RobertaForSequenceClassification',
      { 'classifier.dense.weight': D, 'classifier.dense.bias': db, 'classifier.out_proj.weight': O, 'classifier.out_proj.bias': ob });
    const m = AutoAdapterModel.fromPretrained(dir);
    scope(() => {
      const o = m.forward({ inputIds: [[0, 5, 6, 7, 2]] });
      const cls = ops.squeeze(ops.slice(o.lastHiddenState, 1, 0, 1), 1);
      const want = ops.add(ops.matmul(ops.tanh(ops.add(ops.matmul(cls, D.T), db)), O.T), ob);
      t.true(maxDiff(want, o.logits!) < 1e-5);
    });
    m.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
    const G = JSON.parse(fs.readFileSync(path.join(ref, 'models', 'gpt2', 'config.json'), 'utf8'));
    const S = randn([2, G.n_embd ?? G.hidden_size], { seed: 7 });
    const gdir = checkpoint('gpt2', 'GPT2ForSequenceClassification', { 'score.weight': S }, { pad_token_id: 0 });
    const g = AutoAdapterModel.fromPretrained(gdir);
    t.is(g.activeHead, 'default');
    scope(() => {
      const o = g.forward({ inputIds: ids });
      const h = ops.reshape(o.lastHiddenState, [10, -1]);
      const last = ops.indexSelect(h, 0, ops.cast(ops.arange(0, 1).add(4), 'i64').reshape([1]));
      const last2 = ops.indexSelect(h, 0, ops.cast(ops.arange(0, 1).add(7), 'i64').reshape([1]));
      const want = ops.matmul(ops.concat([last, last2], 0), S.T);
      t.true(maxDiff(want, o.logits!) < 1e-5);
    });
    g.dispose();
    fs.rmSync(gdir, { recursive: true, force: true });
  });
}
