// bf16 mixed precision: Linear in autocast() runs bf16 GEMMs with f32 accumulation and returns f32; outputs and
// gradients stay within bf16 rounding of f32; the region's bf16 weight copies are freed; training converges.
import test from 'ava';
import { autocast, randn, ops, scope, AutoAdapterModel, AdapterTrainer, type Example } from '../../lib/index.ts';
import { liveTensorCount } from '../../lib/tensor.ts';

const rel = (a: Float32Array, b: Float32Array) => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / den);
};

test('linear under autocast: f32 output within bf16 rounding; x, W and b gradients too; both layouts', (t) => {
  for (const layout of ['linear', 'conv1d'] as const) {
    const run = (bf: boolean) => {
      const x = randn([4, 6, 64], { seed: 1, requiresGrad: true });
      const W = randn(layout === 'linear' ? [72, 64] : [64, 72], { seed: 2, requiresGrad: true, std: 0.1 });
      const b = randn([72], { seed: 3, requiresGrad: true });
      const y = autocast(() => {
        const y = ops.linear(x, W, b, { layout });
        ops.sum(ops.mul(y, randn(y.shape, { seed: 4 }))).backward();
        return y;
      }, { enabled: bf });
      return [y, x.grad!, W.grad!, b.grad!].map((v) => v.toArray() as Float32Array);
    };
    const f = run(false), h = run(true);
    t.is(h.length, 4);
    h.forEach((v, i) => t.true(rel(v, f[i]!) < 1e-2, `${layout} tensor ${i}: rel ${rel(v, f[i]!)}`));
    t.true(rel(h[0]!, f[0]!) > 0, 'bf16 rounding is visible (the bf16 path ran)');
  }
});

test('autocast frees its bf16 weight copies; no tensor is left behind', (t) => {
  const W = randn([32, 32], { seed: 5, requiresGrad: true });
  const before = liveTensorCount();
  scope(() => autocast(() => {
    const x = randn([8, 32], { seed: 6 });
    ops.sum(ops.linear(ops.linear(x, W), W)).backward();
  }));
  W.grad!.dispose();
  W.grad = null;
  t.is(liveTensorCount(), before);
});

test.serial('AdapterTrainer with bf16: losses track the f32 run and fall', async (t) => {
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, pad_token_id: 0 };
  const data: Example[] = Array.from({ length: 32 }, (_, i) => {
    const ids = Array.from({ length: 6 }, (_, k) => 1 + ((i * 11 + k * 5) % 37));
    return { inputIds: ids, labels: ids.includes(7) ? 1 : 0 };
  });
  const run = async (bf16: boolean) => {
    const m = AutoAdapterModel.fromConfig(cfg, { seed: 3 });
    m.addAdapter('a', 'lora[r=4, alpha=8]');
    m.addClassificationHead('a', { num_labels: 2 });
    m.trainAdapter('a');
    const r = await new AdapterTrainer(m, { learningRate: 5e-3, maxSteps: 20, batchSize: 8, loggingSteps: 1, progress: false, bf16 }, { train: data }).train();
    return r.history.filter((h) => 'loss' in h).map((h) => h.loss!);
  };
  const f = await run(false), h = await run(true);
  h.forEach((l, i) => t.true(Math.abs(l - f[i]!) < 0.02 * Math.max(1, f[i]!), `step ${i + 1}: bf16 ${l} vs f32 ${f[i]}`));
  t.true(h.at(-1)! < h[0]!);
});

test('autocast({enabled: false}) inside an autocast region runs its body in f32, as torch does', (t) => {
  const x = randn([4, 64], { seed: 1 }), W = randn([64, 64], { seed: 2 });
  const exact = ops.linear(x, W).toArray() as Float32Array;
  const [inner, outer] = autocast(() => [autocast(() => ops.linear(x, W), { enabled: false }).toArray() as Float32Array, ops.linear(x, W).toArray() as Float32Array]);
  t.deepEqual(Array.from(inner), Array.from(exact));
  t.notDeepEqual(Array.from(outer), Array.from(exact));
});

test('autocast keeps low-rank and tiny projections (LoRA A/B, a 2-class head) in f32; Q/K/V-style reuse of one input casts it once', (t) => {
  const x = randn([4, 128], { seed: 1 }), A = randn([8, 128], { seed: 2 }), W = randn([96, 128], { seed: 3 }), W2 = randn([96, 128], { seed: 4 });
  const exactA = ops.linear(x, A).toArray() as Float32Array, exactW = ops.linear(x, W).toArray() as Float32Array;
  const exactW2 = ops.linear(x, W2).toArray() as Float32Array;
  const before = liveTensorCount();
  const [a, w, w2] = autocast(() => [ops.linear(x, A), ops.linear(x, W), ops.linear(x, W2)].map((y) => { const v = y.toArray() as Float32Array; y.dispose(); return v; }));
  t.deepEqual(Array.from(a!), Array.from(exactA));  // rank 8: f32
  t.notDeepEqual(Array.from(w!), Array.from(exactW));  // 96 x 128: bf16
  t.true(rel(w!, exactW) < 1e-2 && rel(w2!, exactW2) < 1e-2);
  t.is(liveTensorCount(), before, 'the shared bf16 input is freed with the region');
  // an in-place change of the input between two projections is seen by the second
  const y = autocast(() => {
    const x2 = x.clone();
    const y1 = ops.linear(x2, W), first = y1.toArray() as Float32Array;
    x2.copy_(ops.mul(x2, 2));
    const y2 = ops.linear(x2, W), second = y2.toArray() as Float32Array;
    y1.dispose();
    y2.dispose();
    x2.dispose();
    return [first, second];
  });
  t.true(Math.abs(y[1]![0]! - 2 * y[0]![0]!) < 1e-3 * Math.abs(y[0]![0]!) + 1e-3);
});

test('activations under CPU autocast: the backward keeps a bf16 copy of the input (gradient exactly at the rounded input), the forward stays f32', (t) => {
  const acts: [string, (x: import('../../lib/index.ts').Tensor) => import('../../lib/index.ts').Tensor][] = [
    ['gelu', (x) => ops.gelu(x)], ['gelu tanh', (x) => ops.gelu(x, { approximate: 'tanh' })], ['silu', (x) => ops.silu(x)], ['tanh', (x) => ops.tanh(x)],
  ];
  for (const [name, f] of acts) {
    const x = randn([3, 1000], { seed: 11, requiresGrad: true });
    const g = randn([3, 1000], { seed: 12 });
    const y = autocast(() => f(x));
    y.backward(g);
    const plain = (xin: import('../../lib/index.ts').Tensor) => {
      const l = xin.detach();
      l.requiresGrad = true;
      const out = f(l);
      out.backward(g);
      return [out.toArray(), l.grad!.toArray()];
    };
    const [yRef, gF32] = plain(x);
    t.deepEqual(y.toArray(), yRef, `${name}: the forward is the f32 one`);
    const [, gRounded] = plain(x.detach().to('bf16').to('f32'));
    t.deepEqual(x.grad!.toArray(), gRounded, `${name}: gradient at the bf16-rounded input`);
    t.notDeepEqual(x.grad!.toArray(), gF32, `${name}: the bf16 copy was used`);
  }
});

// An MLP's activation that only a bf16 projection reads comes back as bf16 under CPU autocast (ops.activationForGemm,
// used by feedForward): that GEMM rounds its input to bf16 anyway, so outputs and gradients are the same bit for bit.
test('activationForGemm: bf16 under CPU autocast, f32 outside; the projection after it and every gradient unchanged', (t) => {
  const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length)).join(',');
  for (const kind of ['gelu', 'gelu_tanh', 'relu', 'silu', 'quick_gelu']) {
    const act = (x: import('../../lib/index.ts').Tensor) =>
      kind === 'gelu' ? ops.gelu(x) : kind === 'gelu_tanh' ? ops.gelu(x, { approximate: 'tanh' }) : kind === 'relu' ? ops.relu(x) : kind === 'silu' ? ops.silu(x) : ops.quickGelu(x);
    const run = (viaGemm: boolean, grad: boolean) => {
      const x = randn([3, 40, 96], { seed: 11, requiresGrad: grad });
      const W = randn([64, 96], { seed: 12, std: 0.1, requiresGrad: grad }), b = randn([64], { seed: 13 });
      let dtype = '';
      const y = autocast(() => {
        const a = viaGemm ? ops.activationForGemm(kind, x) : act(x);
        dtype = a.dtype;
        const y = ops.linear(a, W, b);
        if (grad) ops.sum(ops.mul(y, randn(y.shape, { seed: 14 }))).backward();
        return y;
      });
      return { dtype, out: [y, ...(grad ? [x.grad!, W.grad!] : [])].map((v) => bits(v.toArray() as Float32Array)) };
    };
    for (const grad of [true, false]) {
      const f = run(true, grad), c = run(false, grad);
      t.is(f.dtype, 'bf16', `${kind}: bf16 under autocast`);
      t.is(c.dtype, 'f32');
      t.deepEqual(f.out, c.out, `${kind} (grad ${grad}): same output and gradients`);
    }
  }
  t.is(ops.activationForGemm('gelu', randn([4, 4])).dtype, 'f32', 'outside autocast: the plain activation');
  t.throws(() => ops.activationForGemm('tanh', randn([4])), { message: /unsupported activation 'tanh'/ });
});
