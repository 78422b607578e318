// AdapterTrainer: learning on a tiny task, exact checkpoint/resume, gradient accumulation = one big batch,
// and bad input (empty data, labels out of range, NaN loss keeps the last good checkpoint). Metrics against
// hand-computed values (scikit-learn / scipy definitions).
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AutoAdapterModel, AdapterTrainer, accuracy, f1, matthewsCorrcoef, pearson, spearman, perplexity, noGrad, ops, scope, type Example } from '../../lib/index.ts';

const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
  hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0, pad_token_id: 0 };
// label = whether token 7 occurs: learnable by a small adapter + head
const data: Example[] = Array.from({ length: 48 }, (_, i) => {
  const ids = Array.from({ length: 4 + (i % 5) }, (_, t) => 1 + ((i * 13 + t * 7) % 37));
  return { inputIds: ids, labels: ids.includes(7) ? 1 : 0 };
});
// tests run serially: dropout draws from the global generator, which concurrent runs would share
const model = (method = 'lora[r=4, alpha=8]', dropout = 0.1) => {
  const m = AutoAdapterModel.fromConfig({ ...cfg, hidden_dropout_prob: dropout }, { seed: 11 });
  m.addAdapter('a', method);
  m.addClassificationHead('a', { num_labels: 2 });
  m.trainAdapter('a');
  return m;
};
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'trainer-'));
const params = (m: ReturnType<typeof model>) => m.namedParameters().filter(([, p]) => p.requiresGrad).map(([k, p]) => [k, Array.from(p.toArray() as Float32Array)] as const);

test.serial('training lowers the loss and the eval metrics are reported', async (t) => {
  const m = model();
  const tr = new AdapterTrainer(m, { learningRate: 5e-3, maxSteps: 30, batchSize: 8, evalSteps: 15, loggingSteps: 5, progress: false },
    { train: data, eval: data.slice(0, 16), computeMetrics: ({ logits, labels }) => ({ accuracy: accuracy(logits.map((l) => (l[1]! > l[0]! ? 1 : 0)), labels as number[]) }) });
  const before = tr.evaluate().eval_loss!;
  const r = await tr.train();
  t.is(r.globalStep, 30);
  const after = tr.evaluate().eval_loss!;
  t.true(after < before * 0.9, `eval loss ${before} → ${after}`);
  const evals = r.history.filter((h) => 'eval_loss' in h);
  t.is(evals.length, 2);
  t.true(evals.every((e) => e.eval_accuracy! >= 0 && e.eval_accuracy! <= 1));
  t.true(r.history.filter((h) => 'loss' in h).every((h) => h.tokens_per_second! > 0 && h.grad_norm! >= 0));
});

test.serial('checkpoint at step 10, resume in a fresh model, continue to 20: identical losses and parameters (dropout on)', async (t) => {
  const dir = tmp();
  const args = { learningRate: 3e-3, maxSteps: 20, batchSize: 6, loggingSteps: 1, warmupSteps: 3, weightDecay: 0.01, progress: false, outputDir: dir, saveSteps: 10 };
  const a = model('seq_bn[reduction_factor=4, dropout=0.1]');
  const full = await new AdapterTrainer(a, args, { train: data }).train();
  const b = model('seq_bn[reduction_factor=4, dropout=0.1]');
  // a fresh model and trainer that resume from the step-10 checkpoint
  noGrad(() => { for (const [, p] of b.namedParameters()) if (p.requiresGrad) p.copy_(ops.zerosLike(p)); });
  const resumed = await new AdapterTrainer(b, args, { train: data }).train({ resumeFrom: path.join(dir, 'checkpoint-10') });
  const losses = (h: typeof full.history) => h.filter((x) => 'loss' in x).map((x) => [x.step, x.loss]);
  t.deepEqual(losses(resumed.history), losses(full.history));
  t.deepEqual(params(b), params(a));
  // the checkpoint also holds the adapter and head in the Python library's folder format
  for (const f of ['trainable.safetensors', 'optimizer.safetensors', 'trainer_state.json', 'a/adapter_config.json', 'a/adapter.safetensors', 'a/head_config.json', 'a/model_head.safetensors'])
    t.true(fs.existsSync(path.join(dir, 'checkpoint-10', f)), f);
  fs.rmSync(dir, { recursive: true, force: true });
});

test.serial('gradient accumulation: 2 × batch 4 gives the same step as 1 × batch 8 (equal-length rows)', async (t) => {
  const even = data.map((e) => ({ ...e, inputIds: e.inputIds.slice(0, 4) }));
  const run = async (bs: number, acc: number) => {
    const m = model('lora[r=4, alpha=8]', 0);
    await new AdapterTrainer(m, { learningRate: 1e-2, maxSteps: 3, batchSize: bs, gradientAccumulationSteps: acc, progress: false, seed: 3 }, { train: even.slice(0, 24) }).train();
    return params(m);
  };
  const x = await run(8, 1), y = await run(4, 2);
  x.forEach(([k, v], i) => t.true(v.every((e, j) => Math.abs(e - y[i]![1][j]!) < 1e-5), k));
});

test.serial('bad input: empty data, labels out of range, NaN loss stops and keeps the last good checkpoint', async (t) => {
  t.throws(() => new AdapterTrainer(model(), {}, { train: [] }), { message: /training set is empty/ });
  t.throws(() => new AdapterTrainer(model(), {}, { train: data, eval: [] }), { message: /evaluation set is empty/ });
  const bad = data.map((e, i) => ({ ...e, labels: i === 3 ? 5 : e.labels }));
  await t.throwsAsync(new AdapterTrainer(model(), { maxSteps: 20, batchSize: 48, progress: false }, { train: bad }).train(), { message: /label 5 .* out of range \[0, 2\)/ });
  const dir = tmp();
  const m = model();
  const tr = new AdapterTrainer(m, { maxSteps: 10, batchSize: 8, saveSteps: 2, outputDir: dir, progress: false }, { train: data });
  tr.on('step', ({ step }: { step: number }) => {
    if (step === 3) noGrad(() => { const p = m.namedParameters().find(([k]) => k.startsWith('heads.a.4.bias'))![1]; p.copy_(ops.full(p.shape, NaN)); });
  });
  await t.throwsAsync(tr.train(), { message: /loss is NaN at step 4; training stopped \(last good checkpoint: .*checkpoint-2\)/ });
  t.true(fs.existsSync(path.join(dir, 'checkpoint-2', 'trainer_state.json')));
  t.false(fs.existsSync(path.join(dir, 'checkpoint-4')));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('metrics match scikit-learn / scipy definitions', (t) => {
  t.is(accuracy([1, 0, 1, 1], [1, 1, 1, 0]), 0.5);
  t.true(Math.abs(f1([1, 1, 0, 0], [1, 0, 0, 1]) - 0.5) < 1e-12);
  t.true(Math.abs(matthewsCorrcoef([1, 1, 0, 0], [1, 0, 0, 0]) - 2 / Math.sqrt(12)) < 1e-12);
  t.is(matthewsCorrcoef([1, 1, 1], [1, 1, 1]), 0);
  t.true(Math.abs(pearson([1, 2, 3, 4], [2, 4, 5, 9]) - 0.9647638212377321) < 1e-12);
  t.true(Math.abs(spearman([1, 2, 2, 3], [1, 3, 2, 4]) - 0.9486832980505139) < 1e-12);  // ties share the mean rank
  t.true(Math.abs(perplexity(Math.log(20)) - 20) < 1e-9);
  t.throws(() => accuracy([1], [1, 0]), { message: /1 predictions for 2 labels/ });
});

test.serial('gradient checkpointing gives the same training run; AdapterDrop skips the lowest n layers, reproducibly', async (t) => {
  const args = { learningRate: 3e-3, maxSteps: 6, batchSize: 8, loggingSteps: 1, progress: false };
  const losses = async (extra: object) => {
    const m = model('seq_bn[reduction_factor=4, dropout=0.1]');
    const r = await new AdapterTrainer(m, { ...args, ...extra }, { train: data }).train();
    return r.history.filter((h) => 'loss' in h).map((h) => h.loss!);
  };
  const plain = await losses({});
  const ckpt = await losses({ gradientCheckpointing: true });
  plain.forEach((l, i) => t.true(Math.abs(l - ckpt[i]!) < 1e-5, `step ${i + 1}: ${l} vs ${ckpt[i]}`));
  const drop1 = await losses({ adapterDrop: true }), drop2 = await losses({ adapterDrop: true });
  t.deepEqual(drop1, drop2);
  t.notDeepEqual(drop1, plain);
  const tr = new AdapterTrainer(model(), { ...args, adapterDrop: true }, { train: data });
  const ns = Array.from({ length: 200 }, (_, s) => tr.adapterDropLayers(s, 0).length);
  t.deepEqual([...new Set(ns)].sort(), [0, 1]);  // 2 layers: skip none or layer 0, never all
  t.true(ns.filter((n) => n === 1).length > 60 && ns.filter((n) => n === 1).length < 140);
});

test.serial('length bucketing groups similar lengths per batch; AdapterFusion trains through the trainer (fusion layer only)', async (t) => {
  const varied: Example[] = Array.from({ length: 64 }, (_, i) => ({ inputIds: Array.from({ length: 2 + ((i * 7) % 15) }, (_, k) => 1 + ((i + k) % 37)), labels: i % 2 }));
  const m = model();
  const tr = new AdapterTrainer(m, { batchSize: 8, groupByLength: true, progress: false }, { train: varied });
  const order = tr.epochOrder(0);
  t.deepEqual([...order].sort((a, b) => a - b), varied.map((_, i) => i));  // a permutation
  const pad = (o: number[]) => { let s = 0; for (let b = 0; b < o.length; b += 8) { const ls = o.slice(b, b + 8).map((i) => varied[i]!.inputIds.length); s += ls.length * Math.max(...ls) - ls.reduce((x, y) => x + y, 0); } return s; };
  const plain = new AdapterTrainer(model(), { batchSize: 8, progress: false }, { train: varied }).epochOrder(0);
  t.true(pad(order) < pad(plain) / 2, `padding ${pad(order)} vs ${pad(plain)}`);
  // fusion: two adapters, a Fuse layer trained by the trainer, adapters frozen
  const f = AutoAdapterModel.fromConfig({ ...cfg, hidden_dropout_prob: 0 }, { seed: 2 });
  f.addAdapter('x', 'seq_bn');
  f.addAdapter('y', 'seq_bn');
  const name = f.addAdapterFusion(['x', 'y']);
  f.addClassificationHead('x,y', { num_labels: 2 });
  f.trainAdapterFusion(['x', 'y']);
  const before = new Map(f.namedParameters().map(([k, p]) => [k, Array.from(p.toArray() as Float32Array)]));
  await new AdapterTrainer(f, { learningRate: 1e-2, maxSteps: 3, batchSize: 8, progress: false }, { train: data }).train();
  const changed = f.namedParameters().filter(([k, p]) => (p.toArray() as Float32Array).some((v, i) => v !== before.get(k)![i])).map(([k]) => k);
  t.true(changed.some((k) => k.includes(`adapter_fusion_layer.${name}.`)));
  t.false(changed.some((k) => k.includes('.adapters.x.') || k.includes('.adapters.y.') || k.startsWith('bert.embeddings')));
});

test.serial('review fixes: regression labels mixing whole and fractional numbers; an infinite gradient norm stops training; checkpoints refuse other flags', async (t) => {
  // STS-B-like targets: the first row's label is a whole number
  const m = AutoAdapterModel.fromConfig({ ...cfg, hidden_dropout_prob: 0 }, { seed: 5 });
  m.addAdapter('a', 'lora');
  m.addClassificationHead('a', { num_labels: 1 });
  m.trainAdapter('a');
  const reg = data.map((e, i) => ({ inputIds: e.inputIds, labels: i % 3 === 0 ? 5 : 3.8 }));
  const tr = new AdapterTrainer(m, { maxSteps: 2, batchSize: 8, progress: false, shuffle: false }, { train: reg });
  const batch = tr.collate(reg.slice(0, 3));
  t.is((batch.labels as import('../../lib/index.ts').Tensor).dtype, 'f32');
  await t.notThrowsAsync(tr.train());
  // a gradient that overflows while the loss stays finite
  const m2 = model();
  const tr2 = new AdapterTrainer(m2, { maxSteps: 5, batchSize: 8, progress: false }, { train: data });
  tr2.on('step', ({ step }: { step: number }) => {
    if (step === 1) noGrad(() => { const p = m2.namedParameters().find(([k]) => k.startsWith('heads.a.1.weight'))![1]; p.copy_(ops.full(p.shape, 3e38)); });
  });
  await t.throwsAsync(tr2.train(), { message: /gradient norm is (Infinity|NaN)|loss is (Infinity|NaN)/ });
  // resume with another batch size is refused
  const dir = tmp();
  await new AdapterTrainer(model(), { maxSteps: 2, batchSize: 8, saveSteps: 2, outputDir: dir, progress: false }, { train: data }).train();
  await t.throwsAsync(new AdapterTrainer(model(), { maxSteps: 2, batchSize: 4, progress: false }, { train: data }).train({ resumeFrom: path.join(dir, 'checkpoint-2') }),
    { message: /batch_size = 8, this trainer has 4|total_steps/ });
  fs.rmSync(dir, { recursive: true, force: true });
});

test.serial("TrainingArguments' transformers names work too (learning_rate, per_device_train_batch_size, max_steps, …)", async (t) => {
  const run = async (args: Record<string, unknown>) => {
    const r = await new AdapterTrainer(model('lora', 0), { progress: false, loggingSteps: 1, ...args }, { train: data }).train();
    return r.history.filter((h) => 'loss' in h).map((h) => h.loss!);
  };
  const ours = await run({ learningRate: 1e-2, batchSize: 8, maxSteps: 3, warmupSteps: 1 });
  const hf = await run({ learning_rate: 1e-2, per_device_train_batch_size: 8, max_steps: 3, warmup_steps: 1 });
  t.deepEqual(hf, ours);
  t.is(ours.length, 3);
});

test.serial("optim: 'adafactor' trains and resumes exactly (factored state in the checkpoint); 'sgd' trains; unknown names fail", async (t) => {
  const dir = tmp();
  const args = { learningRate: 1e-2, maxSteps: 12, batchSize: 6, loggingSteps: 1, progress: false, outputDir: dir, saveSteps: 6, optim: 'adafactor' as const, weightDecay: 0.01 };
  const a = model('lora[r=4, alpha=8]', 0);
  const trA = new AdapterTrainer(a, args, { train: data, eval: data.slice(0, 16) });
  t.is(trA.optimizer.constructor.name, 'Adafactor');
  const before = trA.evaluate().eval_loss!;
  const full = await trA.train();
  t.true(trA.evaluate().eval_loss! < before, 'Adafactor lowers the eval loss');
  const b = model('lora[r=4, alpha=8]', 0);
  const resumed = await new AdapterTrainer(b, args, { train: data }).train({ resumeFrom: path.join(dir, 'checkpoint-6') });
  const losses = (h: typeof full.history) => h.filter((x) => 'loss' in x).map((x) => [x.step, x.loss]);
  t.deepEqual(losses(resumed.history), losses(full.history));
  t.deepEqual(params(b), params(a));
  // a checkpoint of one optimiser does not resume under another
  const c = model('lora[r=4, alpha=8]', 0);
  await t.throwsAsync(new AdapterTrainer(c, { ...args, optim: 'adamw_torch' }, { train: data }).train({ resumeFrom: path.join(dir, 'checkpoint-6') }), { message: /optim/ });
  const s = await new AdapterTrainer(model('lora', 0), { learningRate: 0.05, maxSteps: 3, batchSize: 8, loggingSteps: 1, progress: false, optim: 'sgd' }, { train: data }).train();
  t.is(s.history.filter((h) => 'loss' in h).length, 3);
  t.throws(() => new AdapterTrainer(model('lora', 0), { optim: 'lamb' as never, progress: false }, { train: data }), { message: /unknown optim 'lamb'/ });
  fs.rmSync(dir, { recursive: true, force: true });
});

// As the Python library's AdapterTrainer: training refuses unfrozen base weights (unless asked for full fine-tuning);
// transformers' warmup_ratio sets the warm-up; unknown arguments are refused rather than ignored.
test.serial('an unfrozen base model is refused unless fullFineTuning; warmup_ratio; unknown arguments are errors', async (t) => {
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 11 });
  m.addAdapter('a', 'lora');
  m.addClassificationHead('a', { num_labels: 2 });  // trainAdapter never called: every weight trains
  const tr = new AdapterTrainer(m, { maxSteps: 2, batchSize: 8, progress: false }, { train: data });
  t.notThrows(() => new AdapterTrainer(m, { maxSteps: 2, batchSize: 8, progress: false }, { train: data, eval: data }).evaluate());  // evaluating is fine
  await t.throwsAsync(tr.train(), { message: /pre-trained model weights are not frozen/ });
  const full = await new AdapterTrainer(m, { maxSteps: 2, batchSize: 8, progress: false, fullFineTuning: true }, { train: data }).train();
  t.is(full.globalStep, 2);
  // warmup_ratio 0.5 of 10 steps: 5 warm-up steps, the first at lr 0 (linear schedule), as transformers
  const w = new AdapterTrainer(model(), { learning_rate: 1e-3, max_steps: 10, warmup_ratio: 0.5, batchSize: 8, progress: false } as never, { train: data });
  t.is(w.scheduler.opts.warmup, 5);
  t.is(w.scheduler.lrs[0], 0);
  w.scheduler.setStep(5);
  t.true(Math.abs(w.scheduler.lrs[0]! - 1e-3) < 1e-12);
  t.throws(() => new AdapterTrainer(model(), { maxSteps: 2, warmup_ration: 0.1 } as never, { train: data }), { message: /unknown training argument 'warmup_ration'/ });
  t.notThrows(() => new AdapterTrainer(model(), { maxSteps: 2, report_to: 'none', logging_dir: '/tmp/x' } as never, { train: data }));
  m.dispose();
});

// AdapterFusion training as the Python AdapterTrainer: the fusion regularisation applies only while a Fuse block trains
// and stays out of the logged loss; checkpoints hold the fusion layer and every head.
test.serial('fusion training: regularisation only with a Fuse active, not in the logged loss; checkpoints hold fusion and heads', async (t) => {
  const m = AutoAdapterModel.fromConfig({ ...cfg, hidden_dropout_prob: 0 }, { seed: 11 });
  m.addAdapter('a', 'seq_bn');
  m.addAdapter('b', 'seq_bn');
  m.addAdapterFusion(['a', 'b']);
  m.addClassificationHead('a,b', { num_labels: 2 });
  m.addClassificationHead('x', { num_labels: 2 });
  // training an unrelated adapter: the (existing) fusion adds nothing
  m.addAdapter('c', 'lora');
  m.addClassificationHead('c', { num_labels: 2 });
  m.trainAdapter('c');
  const plain = new AdapterTrainer(m, { maxSteps: 1, batchSize: 8, progress: false, loggingSteps: 1, shuffle: false }, { train: data });
  const lossC = (await plain.train()).history.find((h) => 'loss' in h)!.loss!;
  const direct = noGrad(() => m.forward(plain['collate'](data.slice(0, 8))).loss!.item());
  t.true(Math.abs(lossC - direct) < 2e-2, `logged ${lossC} vs the model's ${direct}: no regulariser added`);
  m.trainAdapterFusion(['a', 'b']);
  const dir = tmp();
  const tr = new AdapterTrainer(m, { maxSteps: 2, batchSize: 8, progress: false, saveSteps: 2, outputDir: dir }, { train: data });
  await tr.train();
  const ck = path.join(dir, 'checkpoint-2');
  t.true(fs.existsSync(path.join(ck, 'a,b', 'adapter_fusion_config.json')), 'the fusion layer');
  t.true(fs.existsSync(path.join(ck, 'a,b', 'head_config.json')), 'the fusion head, in the same folder');
  t.true(fs.existsSync(path.join(ck, 'x', 'head_config.json')), 'another head');
  fs.rmSync(dir, { recursive: true, force: true });
  // as the Python AdapterTrainer's on_step_end: the regularisation of the updated weights is backpropagated after the
  // step, so after training the fusion's .grad holds exactly its gradient (carried into a next step), nothing else
  const fusionParams = m.namedParameters().filter(([k]) => k.includes('adapter_fusion_layer'));
  const carried = new Map(fusionParams.filter(([, p]) => p.grad).map(([k, p]) => [k, Array.from(p.grad!.toArray() as Float32Array)]));
  t.true(carried.size > 0, 'a carried gradient');
  t.true(m.namedParameters().every(([k, p]) => !p.grad || k.includes('adapter_fusion_layer')), 'only the fusion layer has one');
  for (const [, p] of fusionParams) p.zeroGrad();
  scope(() => m.getFusionRegularizationLoss()!.backward());
  for (const [k, p] of fusionParams) {
    const want = p.grad ? Array.from(p.grad.toArray() as Float32Array) : undefined;
    t.deepEqual(carried.get(k), want, k);
  }
  m.dispose();
});
