// Adapters on LLaMA, ViT, RoBERTa, DistilBERT, BART and T5 against independent float64 PyTorch implementations (test/reference/gen_{llama,vit,roberta,distilbert,bart,t5}_adapters.py,
// each first checked against transformers' own output for the base model): load the shared tiny model,
// loadAdapter the generated folder (Python layout and names), compare last_hidden_state, the loss Σ h² and the
// gradient of every adapter parameter after trainAdapter; then saveAdapter must write the same names and values back.
// (LLaMA prefix tuning covers the GQA quirk: prefixes carry all query heads, prepended after repeat_kv.)
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoAdapterModel, loadSafetensors, ops, scope, type Tensor } from '../../lib/index.ts';
import { maxDiff, maxAbs } from '../helpers/tensor_diff.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ref = path.join(path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const have = fs.existsSync(path.join(ref, 'manifest.json'));

// per architecture: the generated cases, the model input, and a base-model key that locates the flex-head prefix
const archs: Record<string, { cases: string[]; anchor: string; input: (inp: Map<string, Tensor>) => Record<string, Tensor> }> = {
  llama: {
    cases: ['double_seq_bn_swish', 'ia3', 'lora_all', 'lora_leave_out', 'prefix_tuning', 'seq_bn'],
    anchor: 'embed_tokens.weight',
    input: (inp) => ({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')! }),
  },
  vit: {
    cases: ['double_seq_bn_gelu', 'ia3_leave_out', 'lora_all'],
    anchor: 'embeddings.cls_token',
    input: (inp) => ({ pixelValues: inp.get('pixel_values')! }),
  },
  roberta: {
    cases: ['double_seq_bn_swish', 'ia3', 'lora_all'],
    anchor: 'embeddings.word_embeddings.weight',
    input: (inp) => ({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')! }),
  },
  distilbert: {
    cases: ['double_seq_bn_leave_out', 'ia3', 'lora_all'],
    anchor: 'embeddings.word_embeddings.weight',
    input: (inp) => ({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')! }),
  },
  bart: {
    cases: ['double_seq_bn_swish', 'ia3', 'lora_all', 'prefix_tuning', 'seq_bn'],
    anchor: 'encoder.layers.0.fc1.weight',
    input: (inp) => ({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')!, decoderInputIds: inp.get('decoder_input_ids')! }),
  },
  t5: {
    cases: ['double_seq_bn_swish', 'ia3', 'lora_all', 'prefix_tuning'],
    anchor: 'encoder.block.0.layer.0.SelfAttention.q.weight',
    input: (inp) => ({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')!, decoderInputIds: inp.get('decoder_input_ids')! }),
  },
};

if (!have) test('LLaMA/ViT/RoBERTa/DistilBERT/BART/T5 adapter references skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else for (const [arch, { cases, anchor, input }] of Object.entries(archs)) {
  const fixtures = path.join(root, `test/fixtures/${arch}_adapters`);
  const inp = loadSafetensors(path.join(ref, `${arch}/base.safetensors`));
  test(`${arch}: every generated case is present`, (t) => t.deepEqual(fs.readdirSync(fixtures).sort(), cases));
  for (const c of cases) {
    test(`${arch}/${c}: output and gradients match the float64 reference`, (t) => {
      const m = AutoAdapterModel.fromPretrained(path.join(ref, `models/${arch}`));
      t.is(m.loadAdapter(path.join(fixtures, c, 'a'), { setActive: true }), 'a');
      const exp = loadSafetensors(path.join(fixtures, c, 'expected.safetensors'));
      const sd = m.stateDict();
      const prefix = [...sd.keys()].find((k) => k === anchor || k.endsWith(`.${anchor}`))!.slice(0, -anchor.length);
      // after trainAdapter exactly the adapter's parameters train, under the Python names
      m.trainAdapter('a');
      const trainable = m.namedParameters().filter(([, p]) => p.requiresGrad).map(([k]) => k.slice(prefix.length)).sort();
      t.deepEqual(trainable, [...exp.keys()].filter((k) => k.startsWith('grad/')).map((k) => k.slice(5)).sort());
      scope(() => {
        const h = m.forward(input(inp)).lastHiddenState;
        const want = exp.get('last_hidden_state')!;
        const d = maxDiff(h, want);
        t.true(d < 1e-5 * Math.max(1, maxAbs(want)), `last_hidden_state max abs diff ${d}`);
        const loss = ops.sum(ops.mul(h, h));
        const wl = exp.get('loss')!.item();
        t.true(Math.abs(loss.item() - wl) < 1e-5 * Math.abs(wl), `loss ${loss.item()} vs ${wl}`);
        loss.backward();
      });
      for (const [k, p] of m.namedParameters()) {
        if (!p.requiresGrad) { t.is(p.grad, null, k); continue; }
        const g = exp.get(`grad/${k.slice(prefix.length)}`);
        if (!g) { t.fail(`no reference gradient for trainable ${k}`); continue; }
        const d = maxDiff(p.grad!, g);
        t.true(d < 1e-4 * Math.max(1, maxAbs(g)), `grad ${k}: max abs diff ${d}`);
      }
      // round trip: saveAdapter writes the Python names and values back
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llama-ad-'));
      try {
        m.saveAdapter(dir, 'a');
        const saved = loadSafetensors(path.join(dir, 'adapter.safetensors'));
        const orig = loadSafetensors(path.join(fixtures, c, 'a', 'adapter.safetensors'));
        // a flex-head model saves under its base-model prefix (`model.` like LlamaAdapterModel), which loading
        // strips; a shared prefix pool is written once, under its parameter name, where the .bin repeats it
        const names = [...saved.keys()].map((k) => k.slice(prefix.length)).sort();
        t.deepEqual(names, trainable);
        for (const k of names) t.true(maxDiff(saved.get(prefix + k)!, orig.get(k)!) === 0, k);
        const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
        const want = JSON.parse(fs.readFileSync(path.join(fixtures, c, 'a', 'adapter_config.json'), 'utf8'));
        t.is(cfg.model_type, arch);
        for (const [k, v] of Object.entries(want.config)) t.deepEqual(cfg.config[k], v, `config.${k}`);
        for (const x of [...saved.values(), ...orig.values()]) x.dispose();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      for (const x of exp.values()) x.dispose();
      m.dispose();
    });
  }
}

// Parallel: each branch of Parallel(a, b) equals that adapter alone, whose output the float64 references above pin
// down; both the bottleneck replication (at a layer's first adapter site) and the LoRA one (inside a projection:
// q/k/v, LLaMA's gate/up and the residuals are realigned) are covered, with padding and GQA on LLaMA.
const parallelPairs: [string, string, string][] = [
  ['llama', 'seq_bn', 'double_seq_bn_swish'], ['llama', 'lora_all', 'lora_leave_out'], ['llama', 'lora_leave_out', 'seq_bn'],
  ['vit', 'lora_all', 'double_seq_bn_gelu'], ['vit', 'ia3_leave_out', 'lora_all'],
  ['distilbert', 'double_seq_bn_leave_out', 'lora_all'], ['distilbert', 'lora_all', 'ia3'],
  // encoder-decoder: the decoder input follows the batch the encoder replicated; cross-attention aligns to it
  ['bart', 'seq_bn', 'lora_all'], ['bart', 'ia3', 'double_seq_bn_swish'],
  ['t5', 'double_seq_bn_swish', 'lora_all'], ['t5', 'lora_all', 'ia3'],
];
if (have)
  for (const [arch, a, b] of parallelPairs)
    test(`${arch}: Parallel(${a}, ${b}) equals each adapter alone, stacked along the batch`, async (t) => {
      const { Parallel } = await import('../../lib/adapters/composition.ts');
      const fixtures = path.join(root, `test/fixtures/${arch}_adapters`);
      const inp = loadSafetensors(path.join(ref, `${arch}/base.safetensors`));
      const m = AutoAdapterModel.fromPretrained(path.join(ref, `models/${arch}`)).eval();
      m.loadAdapter(path.join(fixtures, a, 'a'), { loadAs: 'x' });
      m.loadAdapter(path.join(fixtures, b, 'a'), { loadAs: 'y' });
      const run = () => scope(() => {
        const h = m.forward(archs[arch]!.input(inp)).lastHiddenState;
        return { shape: h.shape, v: Array.from(h.toArray() as Float32Array) };
      });
      m.setActiveAdapters('x');
      const hx = run();
      m.setActiveAdapters('y');
      const hy = run();
      m.setActiveAdapters(new Parallel('x', 'y'));
      const out = run();
      t.deepEqual(out.shape, [2 * hx.shape[0]!, ...hx.shape.slice(1)]);
      const want = [...hx.v, ...hy.v];
      const d = Math.max(...out.v.map((v, i) => Math.abs(v - want[i]!)));
      t.true(d < 1e-5, `max abs diff ${d}`);
      // the branches really differ (a check that can fail)
      t.true(Math.max(...hx.v.map((v, i) => Math.abs(v - hy.v[i]!))) > 1e-2);
      m.dispose();
    });
