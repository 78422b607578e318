// Step for step against PyTorch: 20 AdamW steps (HF no-decay groups, linear warmup schedule, norm clipping,
// dropout off, fixed batches) of tiny BERT (classification head) and GPT-2 (causal LM) with LoRA and seq_bn,
// run through AdapterTrainer, give the loss sequence and final parameters of the same loop written in PyTorch
// (test/reference/gen_train_steps.py → test/fixtures/train_steps).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, AdapterTrainer, loadSafetensors, noGrad, type Example } from '../../lib/index.ts';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/train_steps');

for (const name of ['bert_lora', 'bert_seq_bn', 'gpt2_lora', 'gpt2_seq_bn'])
  test(`${name}: 20 training steps match the PyTorch loop (losses 1e-4, parameters)`, async (t) => {
    const fx = JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8'));
    const st = loadSafetensors(path.join(dir, `${name}.safetensors`));
    const m = AutoAdapterModel.fromConfig(fx.model_config, { seed: 0 });
    m.addAdapter('a', fx.adapter);
    if (name.startsWith('bert')) m.addClassificationHead('a', { num_labels: 3 });
    m.trainAdapter('a');
    // every parameter of the model comes from the fixture, under the Python library's names
    const own = new Map(m.namedParameters());
    const init = [...st.keys()].filter((k) => k.startsWith('init/')).map((k) => k.slice(5));
    t.deepEqual([...own.keys()].sort(), init.sort());
    noGrad(() => { for (const k of init) own.get(k)!.copy_(st.get(`init/${k}`)!); });
    t.deepEqual(m.namedParameters().filter(([, p]) => p.requiresGrad).map(([k]) => k).sort(), [...fx.trainable].sort());
    const tr = new AdapterTrainer(m, { learningRate: fx.lr, weightDecay: fx.weight_decay, warmupSteps: fx.warmup_steps, maxGradNorm: fx.max_grad_norm,
      batchSize: fx.batch_size, maxSteps: fx.steps, loggingSteps: 1, shuffle: false, progress: false }, { train: fx.examples as Example[] });
    const r = await tr.train();
    const losses = r.history.filter((h) => 'loss' in h).map((h) => h.loss!);
    t.is(losses.length, 20);
    losses.forEach((l, i) => t.true(Math.abs(l - fx.losses[i]) <= 1e-4, `step ${i + 1}: ${l} vs PyTorch ${fx.losses[i]}`));
    for (const k of fx.trainable as string[]) {
      const got = own.get(k)!.toArray() as Float32Array, want = st.get(`final/${k}`)!.toArray() as Float32Array;
      let d = 0;
      for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i]! - want[i]!));
      t.true(d < 1e-4, `${k}: max abs diff ${d}`);
    }
  });
