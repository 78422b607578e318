// Composition blocks against the Python Adapters library's reference outputs (../shared/reference): Stack,
// BatchSplit, Split and Average over bottleneck, LoRA and prefix-tuning adapters, adapter_setup.json, the
// library's refusals, and the nesting/depth validation. (Parallel and Fuse belong to the composition issue.)
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { AutoAdapterModel, loadSafetensors, ops, scope, noGrad, tensor, ValueError, type Tensor } from '../../lib/index.ts';
import { Average, BatchSplit, Fuse, Parallel, Split, Stack, compositionFromDict, validateComposition } from '../../lib/adapters/composition.ts';
import { maxDiff } from '../helpers/tensor_diff.ts';
import { PeftPrefixTuningConfig } from '../../lib/adapters/config.ts';
import * as compositionModule from '../../lib/adapters/composition.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ref = path.join(path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared'), 'reference');
const have = fs.existsSync(path.join(ref, 'manifest.json'));


const SUPPORTED = ['Stack', 'BatchSplit', 'Split', 'Average', 'Parallel', 'Fuse'];

if (!have) test('composition reference cases skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  const manifest = JSON.parse(fs.readFileSync(path.join(ref, 'manifest.json'), 'utf8')) as { cases: Record<string, any>[]; failures: { id: string; error: string }[] };
  for (const c of manifest.cases) {
    if (c.kind !== 'composition' && c.kind !== 'adapter_setup') continue;
    const setupDict = c.kind === 'adapter_setup'
      ? JSON.parse(fs.readFileSync(path.join(ref, c.arch, 'setup_stack', 'setup', 'adapter_setup.json'), 'utf8')).adapter_setup
      : c.active_setup;
    if (!SUPPORTED.includes(setupDict.type)) continue;
    test(`${c.id}: ${setupDict.type} matches the Python library`, (t) => {
      const m = AutoAdapterModel.fromPretrained(path.join(ref, c.base_model_dir));
      const dirs: Record<string, string> = c.kind === 'adapter_setup'
        ? { a: path.join(c.arch, 'setup_stack', 'setup', 'a'), b: path.join(c.arch, 'setup_stack', 'setup', 'b') }
        : c.adapter_dirs;
      for (const [name, dir] of Object.entries(dirs)) m.loadAdapter(path.join(ref, dir), { loadAs: name });
      if (setupDict.type === 'Fuse') t.is(m.loadAdapterFusion(path.join(ref, c.arch, (c.id as string).split('/')[1]!, 'fusion')), 'a,b');
      m.setActiveAdapters(compositionFromDict(setupDict));
      const inp = loadSafetensors(path.join(ref, c.arch, 'base.safetensors'));
      const exp = loadSafetensors(path.join(ref, c.expected_file));
      const d = scope(() => maxDiff(noGrad(() => m.forward({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')! })).lastHiddenState, exp.get('last_hidden_state')!));
      t.true(d < 1e-4, `max abs diff ${d}`);
      // Parallel: each branch equals running that adapter alone (single/a, single/b)
      for (const [k, v] of exp)
        if (k.startsWith('single/')) {
          m.setActiveAdapters(k.slice('single/'.length));
          const ds = scope(() => maxDiff(noGrad(() => m.forward({ inputIds: inp.get('input_ids')!, attentionMask: inp.get('attention_mask')! })).lastHiddenState, v));
          t.true(ds < 1e-4, `${k}: max abs diff ${ds}`);
        }
      m.dispose();
    });
  }
  for (const f of manifest.failures.filter((x) => /stack_lora|batchsplit_lora|average_lora|parallel_lora/.test(x.id)))
    test(`${f.id}: refused as in the Python library (${f.error.slice(0, 60)})`, (t) => {
      const [arch, kind] = f.id.split('/') as [string, string];
      const m = AutoAdapterModel.fromPretrained(path.join(ref, 'models', arch));
      m.addAdapter('a', 'lora');
      m.addAdapter('b', 'lora');
      const block = kind.startsWith('stack') ? new Stack('a', 'b') : kind.startsWith('batchsplit') ? new BatchSplit(['a', 'b'], [1, 1])
        : kind.startsWith('average') ? new Average(['a', 'b']) : new Parallel('a', 'b');
      t.throws(() => m.setActiveAdapters(block), { instanceOf: ValueError, message: /Cannot use .* with LoRA/ });
      m.dispose();
    });
}

test('nesting and depth follow the Python library (ALLOWED_NESTINGS, validate_composition)', (t) => {
  t.notThrows(() => validateComposition(new Stack('a', new Parallel('b', 'c'))));
  t.notThrows(() => validateComposition(new Stack(new Fuse('a', 'b'), 'c')));
  t.notThrows(() => validateComposition(new BatchSplit([new Stack('a', 'b'), new Stack('c', 'd')], [1, 1])));
  t.throws(() => validateComposition(new Fuse('a', new Parallel('b', 'c'))), { instanceOf: ValueError, message: /Cannot nest/ });
  t.throws(() => validateComposition(new Average([new Parallel('a', 'b'), 'c'])), { instanceOf: ValueError, message: /Cannot nest/ });
  t.throws(() => validateComposition(new Stack(new Split([new Split(['a', 'b'], [1, 1]), 'c'], [2, 1]))), { instanceOf: ValueError, message: /too deep/ });
  t.throws(() => new Split(['a', 'b'], [1]), { instanceOf: ValueError });
  t.deepEqual(new Average(['a', 'b'], { weights: [1, 3] }).weights, [0.25, 0.75]);
});

test('composition rules per method; unknown names refused', (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 1 });
  m.addAdapter('p', 'prefix_tuning[bottleneck_size=8, prefix_length=2]');
  m.addAdapter('q', 'prefix_tuning[bottleneck_size=8, prefix_length=2]');
  m.addAdapter('l', 'lora');
  t.throws(() => m.setActiveAdapters(new Split(['p', 'q'], [2, 2])), { instanceOf: ValueError, message: /prefix_tuning/ });
  t.throws(() => m.setActiveAdapters(new Fuse('p', 'q')), { instanceOf: ValueError, message: /prefix_tuning/ });
  t.throws(() => m.addAdapterFusion(['p', 'q']), { instanceOf: ValueError, message: /bottleneck/ });
  t.throws(() => m.setActiveAdapters(new Split(['l', 'p'], [2, 2])), { instanceOf: ValueError });
  t.throws(() => m.setActiveAdapters(new Stack('p', 'zz')), { instanceOf: ValueError, message: /zz/ });
  t.notThrows(() => m.setActiveAdapters(new BatchSplit(['p', 'q'], [1, 1])));
  t.notThrows(() => scope(() => { m.forward({ inputIds: [[1, 2, 3], [4, 5, 6]] }); }));
  t.throws(() => scope(() => { m.forward({ inputIds: [[1, 2, 3]] }); }), { message: /batch size/ });
  m.dispose();
});

test('AdapterFusion: trainAdapterFusion trains only the fusion layer; save/load round trip; gradients flow through Fuse', (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 2 });
  m.addAdapter('a', 'seq_bn');
  m.addAdapter('b', 'seq_bn');
  const name = m.addAdapterFusion(['a', 'b'], 'dynamic');
  t.is(name, 'a,b');
  m.trainAdapterFusion(['a', 'b']);
  scope(() => { const h = m.forward({ inputIds: [[1, 2, 3]] }).lastHiddenState; ops.sum(ops.mul(h, h)).backward(); });
  for (const [k, p] of m.namedParameters()) {
    if (k.includes('.adapter_fusion_layer.a,b.')) t.truthy(p.grad, k);
    else t.is(p.grad, null, k);
  }
  m.trainAdapterFusion(['a', 'b'], { unfreezeAdapters: true });
  t.true(m.namedParameters().filter(([k]) => k.includes('.adapters.a.')).every(([, p]) => p.requiresGrad));
  m.eval();
  const out = () => scope(() => Array.from(noGrad(() => m.forward({ inputIds: [[1, 2, 3]] }).lastHiddenState).toArray() as Float32Array));
  const before = out();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusion-'));
  try {
    m.saveAdapterFusion(path.join(dir, 'f'), 'a,b');
    m.deleteAdapterFusion('a,b');
    t.throws(() => scope(() => { m.forward({ inputIds: [[1, 2, 3]] }); }), { instanceOf: ValueError, message: /AdapterFusion/ });
    m.loadAdapterFusion(path.join(dir, 'f'), { setActive: true });
    t.deepEqual(out(), before);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  m.dispose();
});

test('saveAdapterSetup / loadAdapterSetup round trip; fusion regularisation loss', (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 3 }).eval();
  m.addAdapter('a', 'seq_bn');
  m.addAdapter('b', 'lora[init_weights="bert"]');
  m.setActiveAdapters(new Stack('a', 'b'));
  const out = (x: typeof m) => scope(() => Array.from(noGrad(() => x.forward({ inputIds: [[1, 2, 3]] }).lastHiddenState).toArray() as Float32Array));
  const before = out(m);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'setup-'));
  try {
    m.saveAdapterSetup(path.join(dir, 's'), new Stack('a', 'b'));
    t.true(fs.existsSync(path.join(dir, 's', 'a', 'adapter_config.json')) && fs.existsSync(path.join(dir, 's', 'adapter_setup.json')));
    const m2 = AutoAdapterModel.fromConfig(cfg, { seed: 3 }).eval();
    const setup = m2.loadAdapterSetup(path.join(dir, 's'), { setActive: true });
    t.is(String(setup), 'Stack[a, b]');
    t.deepEqual(out(m2), before);
    m2.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  t.is(m.getFusionRegularizationLoss(), null);
  m.addAdapter('c', 'seq_bn');
  m.addAdapterFusion(['a', 'c'], 'dynamic');
  const reg = m.getFusionRegularizationLoss()!;
  // value starts as I + 1e-6 off-diagonal: 0.01 · Σ (1e-6)² over 2 layers × 16·15 entries
  t.true(Math.abs(reg.item() - 0.01 * 2 * 16 * 15 * 1e-12) < 1e-12);
  m.dispose();
});

// ---- nested compositions vs the pieces run by hand, and finite-difference gradients through Fuse/Stack ----
function tinyBert(seed: number) {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const m = AutoAdapterModel.fromConfig(cfg, { seed }).eval();
  for (const n of ['a', 'b', 'c']) m.addAdapter(n, 'seq_bn');
  noGrad(() => { for (const [k, p] of m.namedParameters()) if (/\.adapters\.[abc]\./.test(k)) p.copy_(ops.add(p, ops.randn(p.shape, { std: 0.2, seed: k.length }))); });
  return m;
}
const ids2 = [[1, 2, 3, 4], [5, 6, 7, 8]];
function run(m: ReturnType<typeof tinyBert>, setup: Parameters<typeof m.setActiveAdapters>[0]): number[] {
  m.setActiveAdapters(setup);
  return scope(() => Array.from(noGrad(() => m.forward({ inputIds: ids2 }).lastHiddenState).toArray() as Float32Array));
}
const near = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]!) < 1e-5);

test('nested: Stack(a, Parallel(b, c)) = [Stack(a, b); Stack(a, c)]', (t) => {
  const m = tinyBert(4);
  const nested = run(m, new Stack('a', new Parallel('b', 'c')));
  t.true(near(nested, [...run(m, new Stack('a', 'b')), ...run(m, new Stack('a', 'c'))]));
  m.dispose();
});

// The Python library runs a BatchSplit's first adapter's pre-step (pre_block) once on the whole state, and a nested
// Stack runs each of its adapters' pre-steps again. For Houlsby adapters that pre-step is the identity (no LayerNorm
// before), so each row equals its Stack alone; for Pfeiffer ones (LayerNorm of h + input before) the nested rows see
// that LayerNorm twice, as in the Python library, and differ from the Stacks alone.
test('nested: BatchSplit(Stack(a, b), Stack(b, c)) as the Python library composes it', (t) => {
  const h = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
    intermediate_size: 32, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 5 }).eval();
  for (const n of ['a', 'b', 'c']) h.addAdapter(n, 'double_seq_bn');
  noGrad(() => { for (const [k, p] of h.namedParameters()) if (/\.adapters\.[abc]\./.test(k)) p.copy_(ops.add(p, ops.randn(p.shape, { std: 0.2, seed: k.length }))); });
  const nested = run(h, new BatchSplit([new Stack('a', 'b'), new Stack('b', 'c')], [1, 1]));
  const half = nested.length / 2;
  t.true(near(nested.slice(0, half), run(h, new Stack('a', 'b')).slice(0, half)));
  t.true(near(nested.slice(half), run(h, new Stack('b', 'c')).slice(half)));
  h.dispose();
  const m = tinyBert(5);  // seq_bn (Pfeiffer)
  const pn = run(m, new BatchSplit([new Stack('a', 'b'), new Stack('b', 'c')], [1, 1]));
  t.false(near(pn.slice(0, pn.length / 2), run(m, new Stack('a', 'b')).slice(0, pn.length / 2)), 'the LayerNorm before runs twice');
  m.dispose();
});

test('nested: Stack(Fuse(a, b), c) runs; Average of Stacks = Σ w·state / N of the pieces (one layer site)', (t) => {
  const m = tinyBert(6);
  m.addAdapterFusion(['a', 'b'], 'dynamic');
  t.notThrows(() => run(m, new Stack(new Fuse('a', 'b'), 'c')));
  t.notThrows(() => run(m, new Average([new Stack('a', 'b'), 'c'], { weights: [0.5, 0.5] })));
  m.dispose();
});

for (const [label, setup] of [['Stack(a, b)', () => new Stack('a', 'b')], ['Fuse(a, b)', () => new Fuse('a', 'b')]] as const)
  test(`gradients through ${label} match finite differences`, (t) => {
    const m = tinyBert(7);
    if (label.startsWith('Fuse')) m.addAdapterFusion(['a', 'b'], 'dynamic');
    const s = setup();
    m.trainAdapter(label.startsWith('Fuse') ? s : s);
    if (label.startsWith('Fuse')) m.trainAdapterFusion(['a', 'b'], { unfreezeAdapters: true });
    m.eval();  // dropout is 0 anyway; eval keeps the forward deterministic
    const loss = () => scope(() => {
      const h = m.forward({ inputIds: ids2 }).lastHiddenState;
      return ops.sum(ops.mul(h, h)).item();
    });
    scope(() => {
      const h = m.forward({ inputIds: ids2 }).lastHiddenState;
      ops.sum(ops.mul(h, h)).backward();
    });
    const params = m.namedParameters().filter(([, p]) => p.requiresGrad && p.grad);
    t.true(params.length > 0);
    let checked = 0;
    for (const [k, p] of params.filter((_, i) => i % 3 === 0).slice(0, 6)) {
      const g = p.grad!.toArray() as Float32Array;
      const base = Float32Array.from(p.toArray() as Float32Array);
      const i = (k.length * 7) % base.length;
      const eps = 1e-2;
      const at = (delta: number) => {
        const arr = Float32Array.from(base);
        arr[i] = base[i]! + delta;
        noGrad(() => p.copy_(tensor(arr, p.shape)));
        return loss();
      };
      const num = (at(eps) - at(-eps)) / (2 * eps);
      at(0);
      t.true(Math.abs(num - g[i]!) <= 2e-2 * Math.max(1, Math.abs(num)), `${k}[${i}]: analytic ${g[i]} vs numeric ${num}`);
      checked++;
    }
    t.true(checked > 0);
    m.dispose();
  });

test('mixed-adapter batches: forward({adapterIds}) equals running each row with its own adapter alone', (t) => {
  const m = tinyBert(8);
  m.addAdapter('l', 'lora[init_weights="bert"]');
  const rows = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [2, 4, 6, 8]];
  const adapterIds = ['a', null, 'l', 'a', 'b'];
  m.setActiveAdapters('c');  // the call overrides it and restores it afterwards
  const mixed = scope(() => Array.from(noGrad(() => m.forward({ inputIds: rows, adapterIds }).lastHiddenState).toArray() as Float32Array));
  const per = rows.length ? mixed.length / rows.length : 0;
  rows.forEach((r, i) => {
    m.setActiveAdapters(adapterIds[i] ?? null);
    const alone = scope(() => Array.from(noGrad(() => m.forward({ inputIds: [r] }).lastHiddenState).toArray() as Float32Array));
    t.true(near(mixed.slice(i * per, (i + 1) * per), alone), `row ${i} (${adapterIds[i]})`);
  });
  t.deepEqual(m.activeAdapters, ['b']);  // the loop's last setActiveAdapters
  m.setActiveAdapters('c');
  scope(() => { m.forward({ inputIds: rows, adapterIds }); });
  t.deepEqual(m.activeAdapters, ['c']);
  t.throws(() => m.forward({ inputIds: rows, adapterIds: ['zz', null, null, null, null] }), { instanceOf: ValueError, message: /zz/ });
  // head outputs come back in row order (QA: start / end logits too); what cannot be recombined is refused, not dropped
  m.addQAHead('qa');
  m.activeHead = 'qa';
  const qa = scope(() => noGrad(() => {
    const o = m.forward({ inputIds: rows, adapterIds });
    return [o.logits, o.startLogits, o.endLogits].map((x) => Array.from(x!.toArray() as Float32Array));
  }));
  rows.forEach((r, i) => {
    m.setActiveAdapters(adapterIds[i] ?? null);
    const alone = scope(() => noGrad(() => {
      const o = m.forward({ inputIds: [r] });
      return [o.logits, o.startLogits, o.endLogits].map((x) => Array.from(x!.toArray() as Float32Array));
    }));
    alone.forEach((a, j) => t.true(near(qa[j]!.slice(i * a.length, (i + 1) * a.length), a), `row ${i} output ${j}`));
  });
  for (const extra of [{ labels: [[0], [1], [0], [1], [0]] }, { startPositions: [0, 1, 2, 3, 0], endPositions: [1, 2, 3, 3, 1] }, { useCache: true }, { outputHiddenStates: true }])
    t.throws(() => m.forward({ inputIds: rows, adapterIds, ...extra } as never), { instanceOf: ValueError, message: /adapterIds/ });
  m.dispose();
});

test('outputAdapterFusionAttentions: probabilities per fusion, layer and location, owned by the caller scope', (t) => {
  const cfg = { model_type: 'bert', vocab_size: 30, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  const m = AutoAdapterModel.fromConfig(cfg, { seed: 5 }).eval();
  m.addAdapter('a', 'double_seq_bn');
  m.addAdapter('b', 'double_seq_bn');
  m.addAdapterFusion(['a', 'b'], 'dynamic');
  m.setActiveAdapters(new Fuse('a', 'b'));
  noGrad(() => { for (const [k, p] of m.namedParameters()) if (/\.(adapters\.(a|b)|adapter_fusion_layer\.a,b)\./.test(k)) p.copy_(ops.add(p, ops.randn(p.shape, { std: 0.3, seed: k.length }))); });
  const ids = [[1, 2, 3, 4], [5, 6, 7, 8]];
  const plain = scope(() => Array.from(m.forward({ inputIds: ids }).lastHiddenState.toArray() as Float32Array));
  let held: Tensor[] = [];
  scope(() => {
    const out = m.forward({ inputIds: ids, outputAdapterFusionAttentions: true });
    t.deepEqual(Array.from(out.lastHiddenState.toArray() as Float32Array), plain, 'collecting does not change the output');
    const fa = out.adapterFusionAttentions!;
    t.deepEqual(Object.keys(fa), ['a,b']);
    t.deepEqual(Object.keys(fa['a,b']!).sort(), ['0', '1']);
    for (const layer of [0, 1]) {
      t.deepEqual(Object.keys(fa['a,b']![layer]!).sort(), ['mh_adapter', 'output_adapter']);
      for (const p of Object.values(fa['a,b']![layer]!)) {
        t.deepEqual(p.shape, [2, 4, 2]);
        t.false(p.requiresGrad);
        const v = p.toArray() as Float32Array;
        for (let r = 0; r < v.length; r += 2) t.true(Math.abs(v[r]! + v[r + 1]! - 1) < 1e-5 && v[r]! > 0 && v[r]! < 1);
      }
    }
    // the weights depend on the input (not a constant)
    const v0 = fa['a,b']![0]!.output_adapter!.toArray() as Float32Array;
    t.true(v0.some((x) => Math.abs(x - v0[0]!) > 1e-4));
    held = Object.values(fa['a,b']!).flatMap((x) => Object.values(x));
  });
  t.true(held.length === 4 && held.every((x) => x.disposed), 'released with the caller scope');
  t.is(scope(() => m.forward({ inputIds: ids }).adapterFusionAttentions), undefined);
  m.dispose();
});

// PEFT prefix tuning moves the positions of the real tokens by the prefix length, for the whole batch: with other
// adapters in a BatchSplit / Parallel block (or an adapterIds batch grouping them so) the other rows would move too
test('PEFT prefix tuning cannot share a BatchSplit or Parallel block (its position shift is batch-wide)', (t) => {
  const m = tinyBert(8);
  m.addAdapter('p', new PeftPrefixTuningConfig({ prefix_length: 3, flat: true }));
  m.addAdapter('l', 'lora');
  const rows = [[1, 2, 3, 4], [5, 6, 7, 8]];
  m.setActiveAdapters(new BatchSplit(['p', 'l'], [1, 1]));
  t.throws(() => m.forward({ inputIds: rows }), { instanceOf: ValueError, message: /PEFT prefix tuning \('p'\) shifts/ });
  // (a Parallel block too: refused when it runs)
  t.throws(() => { m.setActiveAdapters(new Parallel('p', 'l')); m.forward({ inputIds: rows }); }, { instanceOf: ValueError });
  m.setActiveAdapters(null);
  t.throws(() => m.forward({ inputIds: rows, adapterIds: ['p', 'l'] }), { instanceOf: ValueError, message: /shifts/ });
  // alone, or with a null (base-model) row group, it runs
  t.notThrows(() => scope(() => { m.forward({ inputIds: rows, adapterIds: ['p', null] }); }));
  m.setActiveAdapters(new Stack('p', 'l'));
  t.notThrows(() => scope(() => { m.forward({ inputIds: rows }); }));
  m.dispose();
});

// The Python library's composition helpers: a v1.x nested list is Stack[Fuse[…], …]; a Fuse is named after its
// children's last adapters; below level 1 only Stack blocks (and names) are allowed.
test('parseComposition / Fuse names / validateComposition depth as the Python library', (t) => {
  const { parseComposition } = compositionModule;
  const p = parseComposition([['a', 'b'], 'c'] as never)!;
  t.is(String(p), String(new Stack(new Fuse('a', 'b'), 'c')));
  t.is(new Fuse(new Stack('a', 'b'), new Stack('c', 'd')).name, 'b,d');
  t.is(new Fuse('a', 'b').name, 'a,b');
  t.throws(() => validateComposition(new Stack(new Parallel(new BatchSplit(['a', 'b'], [1, 1]), 'c'))), { instanceOf: ValueError, message: /too deep/ });
  t.notThrows(() => validateComposition(new Parallel(new BatchSplit(['a', 'b'], [1, 1]), new Stack('c', 'd'))));
});

// adapter_summary as the Python library counts: "Full model" = the base model's parameters (its fusion layers included)
// less the adapters' own; each adapter's %param is relative to it
test('adapterSummary: the Full model row keeps the fusion layers, as the Python library counts', (t) => {
  const m = tinyBert(6);
  const before = m.adapterSummary();
  const fullBefore = before.find((r) => r.name === 'Full model')!['#param'];
  m.addAdapterFusion(['a', 'b']);
  const fusion = m.namedParameters().filter(([k]) => k.includes('.adapter_fusion_layer.')).reduce((s, [, p]) => s + p.numel, 0);
  t.true(fusion > 0);
  const rows = m.adapterSummary();
  const full = rows.find((r) => r.name === 'Full model')!['#param'];
  t.is(full, fullBefore + fusion);
  const a = rows.find((r) => r.name === 'a')!;
  t.true(Math.abs(a['%param'] - (100 * a['#param']) / full) < 1e-12);
  const allBase = m.namedParameters().filter(([k]) => !k.startsWith('heads.')).reduce((s, [, p]) => s + p.numel, 0);
  t.is(full, allBase - rows.filter((r) => r.name !== 'Full model').reduce((s, r) => s + r['#param'], 0));
  m.dispose();
});
