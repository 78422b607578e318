// PEFT's format: LoRA (incl. rsLoRA, layers_to_transform, GPT-2's fused c_attn with fan_in_fan_out) and IA3
// folders written with PEFT's math by test/reference/gen_peft.py load here with the same output; saving back
// in PEFT's format and reloading gives the same output; Adapters-format ⇄ PEFT conversion keeps the math;
// what has no equivalent (IA3 on feed-forward modules, LoRA on attention.output.dense) is refused clearly.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, loadSafetensors, scope, ops, randn, noGrad, ValueError, type Tensor } from '../../lib/index.ts';
import { maxDiff } from '../helpers/tensor_diff.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = path.resolve(here, '../fixtures/peft');
const ref = path.join(path.resolve(here, '../..', process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const have = fs.existsSync(path.join(ref, 'models', 'bert', 'config.json'));
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'peft-'));

const run = (m: ReturnType<typeof AutoAdapterModel.fromPretrained>, exp: Map<string, Tensor>) => scope(() =>
  m.forward({ inputIds: ops.cast(exp.get('input_ids')!, 'i64'), attentionMask: ops.cast(exp.get('attention_mask')!, 'i64') }).lastHiddenState.clone());

if (!have) test('PEFT cases skipped: ../shared (the tiny base models) not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  for (const c of ['bert_lora', 'bert_lora_rslora', 'bert_ia3', 'gpt2_lora', 'gpt2_ia3'])
    test(`PEFT ${c}: loads with PEFT's output; saved back in PEFT format it reloads to the same output`, (t) => {
      const arch = c.split('_')[0]!;
      const exp = loadSafetensors(path.join(fx, c, 'expected.safetensors'));
      const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      const name = m.loadAdapter(path.join(fx, c), { loadAs: 'p', setActive: true });
      t.is(name, 'p');
      const h = run(m, exp);
      const d = maxDiff(h, exp.get('last_hidden_state')!);
      t.true(d < 1e-4, `max abs diff ${d}`);
      const dir = tmp();
      m.saveAdapter(path.join(dir, 'peft'), 'p', { format: 'peft' });
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'peft', 'adapter_config.json'), 'utf8'));
      t.is(cfg.peft_type, c.includes('ia3') ? 'IA3' : 'LORA');
      t.true([...loadSafetensors(path.join(dir, 'peft', 'adapter_model.safetensors')).keys()].every((k) => k.startsWith('base_model.model.')));
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m2.loadAdapter(path.join(dir, 'peft'), { loadAs: 'q', setActive: true });
      t.true(maxDiff(run(m2, exp), h) < 1e-6);
      // and through the Adapters-library format
      m.convertAdapter(path.join(fx, c), path.join(dir, 'native'), { to: 'adapters' });
      const m3 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m3.loadAdapter(path.join(dir, 'native'), { setActive: true });
      t.true(maxDiff(run(m3, exp), h) < 1e-6);
      fs.rmSync(dir, { recursive: true, force: true });
    });

  test('Adapters-library LoRA on GPT-2 c_attn (q, v only) → PEFT (block-diagonal rank 2r) → back: same output; IA3 likewise', (t) => {
    const exp = loadSafetensors(path.join(fx, 'gpt2_lora', 'expected.safetensors'));
    for (const cfg of ['lora[r=4, alpha=8]', 'ia3']) {
      const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', 'gpt2'));
      m.addAdapter('a', cfg, { setActive: true });
      noGrad(() => { for (const [k, p] of m.namedParameters()) if (k.includes('.loras.a.')) p.copy_(ops.add(p, randn(p.shape, { std: 0.2, seed: k.length }))); });
      const h = run(m, exp);
      const dir = tmp();
      m.saveAdapter(dir, 'a', { format: 'peft' });
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', 'gpt2'));
      m2.loadAdapter(dir, { setActive: true });
      t.true(maxDiff(run(m2, exp), h) < 1e-5, cfg);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('PEFT adapters without an Adapters-library equivalent are refused, naming the module; nothing is left behind', (t) => {
    const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', 'bert'));
    t.throws(() => m.loadAdapter(path.join(fx, 'bert_ia3_feedforward')), { instanceOf: ValueError, message: /output\.dense.*(input|equivalent)/ });
    t.throws(() => m.loadAdapter(path.join(fx, 'bert_lora_attn_output')), { instanceOf: ValueError, message: /attention\.output\.dense.*no Adapters-library equivalent/ });
    t.deepEqual(m.adapterSummary().filter((r) => r.name !== 'Full model'), []);
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LOHA', r: 4 }));
    t.throws(() => m.loadAdapter(dir), { message: /LOHA adapters have no equivalent here yet/ });
    // options a PEFT folder would ignore are refused, not dropped
    t.throws(() => m.loadAdapter(path.join(fx, 'bert_lora'), { leaveOut: [0] }), { instanceOf: ValueError, message: /leaveOut does not apply to a PEFT folder/ });
    t.throws(() => m.loadAdapter(path.join(fx, 'bert_lora'), { config: 'lora' }), { instanceOf: ValueError, message: /config does not apply/ });
    m.addAdapter('pt', 'prefix_tuning');
    t.throws(() => m.saveAdapter(dir, 'pt', { format: 'peft' }), { message: /shifts the real tokens' positions/ });
    m.addAdapter('bn', 'seq_bn');
    t.throws(() => m.saveAdapter(dir, 'bn', { format: 'peft' }), { message: /only LoRA, \(IA\)³ and PEFT prompt tuning have a PEFT equivalent/ });
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

if (have)
  for (const c of ['bert_prompt', 'gpt2_prompt'])
    test(`PEFT ${c}: virtual tokens before the position embeddings give PEFT's output (P + T positions); trains; round trip; no Adapters-format save`, (t) => {
      const arch = c.split('_')[0]!;
      const exp = loadSafetensors(path.join(fx, c, 'expected.safetensors'));
      const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m.loadAdapter(path.join(fx, c), { loadAs: 'p', setActive: true });
      const h = run(m, exp);
      t.deepEqual(h.shape, exp.get('last_hidden_state')!.shape);
      const d = maxDiff(h, exp.get('last_hidden_state')!);
      t.true(d < 1e-4, `max abs diff ${d}`);
      // the prompt is trainable; the base is not touched by its gradient
      m.trainAdapter('p');
      const trainable = m.namedParameters().filter(([, p]) => p.requiresGrad).map(([k]) => k);
      t.deepEqual(trainable, ['peft_prompt_tuning.prompt_tunings.p.weight']);
      scope(() => { const o = m.forward({ inputIds: ops.cast(exp.get('input_ids')!, 'i64') }); ops.sum(ops.mul(o.lastHiddenState, o.lastHiddenState)).backward(); });
      const g = m.namedParameters().find(([k]) => k.startsWith('peft_prompt'))![1].grad!;
      t.true((g.toArray() as Float32Array).some((v) => v !== 0));
      const dir = tmp();
      m.saveAdapter(dir, 'p', { format: 'peft' });
      t.is(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')).peft_type, 'PROMPT_TUNING');
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m2.loadAdapter(dir, { setActive: true });
      m.eval();
      t.true(maxDiff(run(m2, exp), run(m, exp)) < 1e-6);
      t.throws(() => m.saveAdapter(path.join(dir, 'x'), 'p'), { message: /cannot express: save it with \{format: 'peft'\}/ });
      fs.rmSync(dir, { recursive: true, force: true });
    });

if (have)
  for (const c of ['bert_prefix', 'bert_prefix_proj', 'gpt2_prefix'])
    test(`PEFT ${c}: the prefix pool plus PEFT's position shift gives PEFT's output; round trip; refused in the Adapters format`, (t) => {
      const arch = c.split('_')[0]!;
      const exp = loadSafetensors(path.join(fx, c, 'expected.safetensors'));
      const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m.loadAdapter(path.join(fx, c), { loadAs: 'p', setActive: true });
      const h = run(m, exp);
      const d = maxDiff(h, exp.get('last_hidden_state')!);
      t.true(d < 1e-4, `max abs diff ${d}`);
      const dir = tmp();
      m.saveAdapter(dir, 'p', { format: 'peft' });
      const saved = loadSafetensors(path.join(dir, 'adapter_model.safetensors'));
      // PEFT's layout: one tensor, prompt_embeddings [P, L·2·H] (after the projection), equal to the file it came from
      t.deepEqual([...saved.keys()], ['prompt_embeddings']);
      t.true(maxDiff(saved.get('prompt_embeddings')!, loadSafetensors(path.join(fx, c, 'adapter_model.safetensors')).get('prompt_embeddings')!) < 1e-6);
      const conf = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
      t.deepEqual([conf.task_type, conf.inference_mode], [arch === 'bert' ? 'FEATURE_EXTRACTION' : 'CAUSAL_LM', true]);
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m2.loadAdapter(dir, { setActive: true });
      t.true(maxDiff(run(m2, exp), h) < 1e-6);
      t.throws(() => m.saveAdapter(path.join(dir, 'x'), 'p'), { message: /PEFT prefix tuning.*format: 'peft'/ });
      fs.rmSync(dir, { recursive: true, force: true });
    });

if (have)
  for (const c of ['bert_lora_cls', 'gpt2_lora_cls'])
    test(`PEFT ${c} (task SEQ_CLS, modules_to_save): LoRA + the classifier as a flex head give the PyTorch logits; round trip`, (t) => {
      const arch = c.split('_')[0]!;
      const exp = loadSafetensors(path.join(fx, c, 'expected.safetensors'));
      const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m.loadAdapter(path.join(fx, c), { loadAs: 'p', setActive: true });
      t.is(m.activeHead, 'p');
      const feed = { inputIds: ops.cast(exp.get('input_ids')!, 'i64'), attentionMask: ops.cast(exp.get('attention_mask')!, 'i64') };
      const logits = scope(() => m.forward(feed).logits!.clone());
      const d = maxDiff(logits, exp.get('logits')!);
      t.true(d < 1e-4, `max abs diff ${d}`);
      const dir = tmp();
      m.saveAdapter(dir, 'p', { format: 'peft' });
      const conf = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
      t.deepEqual([conf.task_type, conf.modules_to_save], ['SEQ_CLS', [arch === 'bert' ? 'classifier' : 'score']]);
      const m2 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m2.loadAdapter(dir, { setActive: true });
      t.true(scope(() => maxDiff(m2.forward(feed).logits!, logits)) < 1e-6);
      m.addClassificationHead('p', { num_labels: 3, overwriteOk: true });  // two layers: no PEFT equivalent
      t.throws(() => m.saveAdapter(path.join(dir, 'x'), 'p', { format: 'peft' }), { message: /no PEFT modules_to_save equivalent/ });
      t.notThrows(() => m.saveAdapter(path.join(dir, 'y'), 'p', { format: 'peft', withHead: false }));
      const m3 = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m3.loadAdapter(path.join(fx, c), { loadAs: 'q', withHead: false });
      t.deepEqual(m3.heads, []);
      fs.rmSync(dir, { recursive: true, force: true });
    });
