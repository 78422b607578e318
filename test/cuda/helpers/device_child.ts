// Runs the device-plumbing checks of test/cuda/device.test.ts in a process of its own (the CUDA library is chosen
// once per process: ADAPTERS_CUDA_LIB points at the mock, or at nothing on a GPU machine). Prints one JSON line:
// {"results": [{"name", "ok", "detail"}]}; it never throws, so a failing check is reported, not a crash.
import { AdamW, AdapterTrainer, AutoAdapterModel, BatchSplit, autocast, hfParamGroups, scope, cuda, hasCuda, supportsOp, ops, randn, tensor, noGrad, manualSeed, type Tensor } from '../../../lib/index.ts';
import { callOp } from '../../../lib/tensor.ts';

const results: { name: string; ok: boolean; detail: string }[] = [];
function check(name: string, fn: () => string | true) {
  try {
    const r = fn();
    results.push({ name, ok: r === true, detail: r === true ? '' : r });
  } catch (e) {
    results.push({ name, ok: false, detail: `threw ${(e as Error).name}: ${(e as Error).message}` });
  }
}
const arr = (t: Tensor) => Array.from(t.toArray() as Float32Array);
function maxRel(a: number[], b: number[]): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  a.forEach((v, i) => { m = Math.max(m, Math.abs(v - b[i]!) / Math.max(1, Math.abs(b[i]!))); });
  return m;
}
const close = (a: number[], b: number[], tol = 1e-5) => maxRel(a, b) <= tol || `max relative difference ${maxRel(a, b)}`;
function throwsLike(fn: () => unknown, name: string, re: RegExp): string | true {
  try {
    fn();
  } catch (e) {
    const err = e as Error;
    return err.name === name && re.test(err.message) ? true : `threw ${err.name}: ${err.message}`;
  }
  return 'did not throw';
}

check('a device is reported', () => (hasCuda() && cuda.isAvailable() && cuda.deviceCount() >= 1 && cuda.deviceName(0).length > 0) || `hasCuda ${hasCuda()}, error '${cuda.loadError()}'`);
check('supportsOp lists the CUDA kernels', () => (['matmul', 'linear', 'adamw_step', 'add', 'gelu', 'activation_bwd', 'cast', 'contiguous'].every((o) => supportsOp(o, 'cuda')) &&
  ['softmax', 'layer_norm', 'rms_norm_bwd', 'sum', 'embedding_bwd', 'cross_entropy'].every((o) => supportsOp(o, 'cuda')) && supportsOp('attention_bwd', 'cuda') && supportsOp('dropout', 'cuda') && supportsOp('gather', 'cuda') && supportsOp('where', 'cuda') && !supportsOp('argmax', 'cuda')) || 'wrong');

check('to(cuda) / cpu() round trip keeps values, dtype and shape; views move as contiguous copies', () => {
  const x = randn([5, 7], { seed: 1 });
  const d = x.to('cuda');
  if (d.device !== 'cuda:0') return `device ${d.device}`;
  const back = d.cpu();
  const t = x.T.cuda();  // a transposed view: copied contiguous
  const ok = back.device === 'cpu' && JSON.stringify(back.shape) === '[5,7]' && close(arr(back), arr(x), 0) === true &&
    close(arr(t), arr(x.T.contiguous()), 0) === true && close(arr(d), arr(x), 0) === true;
  for (const v of [x, d, back, t]) v.dispose();
  return ok || 'values differ';
});

check('bf16 and integer tensors move too', () => {
  const x = randn([3, 4], { seed: 2 }).to('bf16');
  const i = tensor([1, 2, 3], [3], { dtype: 'i64' });
  const xd = x.to('cuda'), id = i.to('cuda');
  const ok = xd.dtype === 'bf16' && close(arr(xd), arr(x), 0) === true && Array.from(id.toArray() as BigInt64Array).map(Number).join() === '1,2,3';
  for (const v of [x, i, xd, id]) v.dispose();
  return ok || 'differ';
});

check('matmul on cuda matches the CPU (plain, transposed view, broadcast batch, vector)', () => {
  const a = randn([4, 6], { seed: 3 }), b = randn([6, 3], { seed: 4 }), bt = randn([3, 6], { seed: 5 }), ab = randn([2, 4, 6], { seed: 6 }), v = randn([6], { seed: 7 });
  const [A, B, BT, AB, V] = [a, b, bt, ab, v].map((t) => t.cuda());
  const pairs: [Tensor, Tensor][] = [[ops.matmul(A!, B!), ops.matmul(a, b)], [ops.matmul(A!, BT!.T), ops.matmul(a, bt.T)], [ops.matmul(AB!, B!), ops.matmul(ab, b)], [ops.matmul(A!, V!), ops.matmul(a, v)]];
  for (const [g] of pairs) if (g.device !== 'cuda:0') return `result on ${g.device}`;
  const bad = pairs.map(([g, c]) => close(arr(g), arr(c))).find((r) => r !== true);
  return bad ?? true;
});

check('bf16 matmul with an f32 result (autocast) and with a bf16 result matches the CPU', () => {
  const a = randn([4, 32], { seed: 8 }).to('bf16'), b = randn([32, 5], { seed: 9 }).to('bf16');
  const [A, B] = [a.cuda(), b.cuda()];
  const g = callOp('matmul', [A, B], { f32_out: 1 })[0]!, c = callOp('matmul', [a, b], { f32_out: 1 })[0]!;
  const r = close(arr(g), arr(c), 1e-5);
  if (r !== true) return r;
  const h = ops.matmul(A, B), w = ops.matmul(a, b);
  return (h.dtype === 'bf16' && close(arr(h), arr(w), 1e-2) === true) || `bf16 result: ${h.dtype} ${close(arr(h), arr(w), 1e-2)}`;
});

check('linear (bias, Conv1D layout) on cuda matches the CPU', () => {
  const x = randn([2, 3, 8], { seed: 10 }), w = randn([5, 8], { seed: 11 }), b = randn([5], { seed: 12 }), wc = randn([8, 5], { seed: 13 });
  const [X, W, Bi, WC] = [x, w, b, wc].map((t) => t.cuda());
  const r1 = close(arr(ops.linear(X!, W!, Bi!)), arr(ops.linear(x, w, b)));
  const r2 = close(arr(ops.linear(X!, WC!, Bi!, { layout: 'conv1d' })), arr(ops.linear(x, wc, b, { layout: 'conv1d' })));
  const r3 = close(arr(ops.linear(X!, W!)), arr(ops.linear(x, w)));
  return [r1, r2, r3].find((r) => r !== true) ?? true;
});

check('gradients flow through to(cuda), a CUDA matmul and back to the CPU', () => {
  const run = (dev: boolean) => {
    const x = randn([4, 6], { seed: 14, requiresGrad: true }), w = randn([6, 3], { seed: 15 });
    const y = dev ? ops.matmul(x.to('cuda'), w.to('cuda')).to('cpu') : ops.matmul(x, w);
    ops.sum(ops.mul(y, y)).backward();
    return [arr(y), arr(x.grad!)];
  };
  const [yd, gd] = run(true), [yc, gc] = run(false);
  return [close(yd!, yc!), close(gd!, gc!)].find((r) => r !== true) ?? true;
});

check('a CUDA leaf gets its gradient on the device (backward with a given gradient)', () => {
  const a = randn([3, 4], { seed: 16 }).cuda().requiresGrad_(true), b = randn([4, 2], { seed: 17 }).cuda();
  const y = ops.matmul(a, b);
  const g = randn([3, 2], { seed: 18 });
  y.backward(g.cuda());
  if (a.grad!.device !== 'cuda:0') return `grad on ${a.grad!.device}`;
  return close(arr(a.grad!), arr(ops.matmul(g, b.cpu().T)));
});

check('AdamW updates CUDA parameters in one native call, matching the CPU run', () => {
  const run = (dev: boolean) => {
    const p0 = randn([10, 3], { seed: 19 }), q0 = randn([7], { seed: 20 });
    const ps = [p0, q0].map((t) => (dev ? t.cuda() : t.clone()).requiresGrad_(true));
    const opt = new AdamW(ps, { lr: 0.05, weightDecay: 0.1 });
    for (let s = 0; s < 3; s++) {
      ps.forEach((p, i) => { const g = randn(p.shape, { seed: 100 + 10 * s + i }); p.grad = dev ? g.cuda() : g; });
      opt.step();
    }
    return ps.map((p) => arr(p));
  };
  const d = run(true), c = run(false);
  return [close(d[0]!, c[0]!, 1e-6), close(d[1]!, c[1]!, 1e-6)].find((r) => r !== true) ?? true;
});

check('ops without a CUDA kernel and mixed devices give DeviceErrors naming the op', () => {
  const x = randn([2, 2], { seed: 21 }), xd = x.cuda();
  return [
    throwsLike(() => ops.argmax(xd, 1), 'DeviceError', /no CUDA implementation for argmax/),
    throwsLike(() => { const i = tensor([1, 2], [2], { dtype: 'i64' }).cuda(); return ops.add(i, i); }, 'DeviceError', /add: i64 tensors have no CUDA elementwise kernels yet/),
    throwsLike(() => ops.matmul(xd, x), 'DeviceError', /matmul: expected all tensors on one device, but input #1 is on cpu/),
    throwsLike(() => x.to('cuda:7'), 'DeviceError', /to\(cuda:7\): only \d+ CUDA device/),
    throwsLike(() => x.to('gpu' as never), 'DTypeError', /unknown dtype 'gpu'/),
    throwsLike(() => ops.add(xd, randn([3, 2])), 'DeviceError', /add: expected all tensors on one device/),
  ].find((r) => r !== true) ?? true;
});

check('device out of memory is a MemoryError naming the allocation; nothing leaks', () => {
  const before = cuda.memoryStats().liveBytes;
  const big = randn([600, 600], { seed: 22 });  // 1.44 MB; MOCK_CUDA_MAX_BYTES is 1 MB (a real GPU: no limit)
  const r = process.env.MOCK_CUDA_MAX_BYTES ? throwsLike(() => big.cuda(), 'MemoryError', /allocate 1440000 bytes on cuda:0/) : true;
  big.dispose();
  return r === true ? (cuda.memoryStats().liveBytes === before || `live bytes ${before} -> ${cuda.memoryStats().liveBytes}`) : r;
});

check('memoryStats("cuda") tracks live and peak bytes; disposing frees device memory', () => {
  cuda.synchronize();
  const s0 = cuda.memoryStats();
  cuda.resetPeakMemory();
  const t = noGrad(() => randn([100, 100], { seed: 23 }).cuda());
  const s1 = cuda.memoryStats();
  for (let i = 0; i < 50; i++) t.cpu().dispose();
  t.dispose();
  cuda.emptyCache();
  const s2 = cuda.memoryStats();
  return (s1.liveBytes - s0.liveBytes >= 40000 && s1.peakBytes >= s1.liveBytes && s2.liveBytes === s0.liveBytes) ||
    `live ${s0.liveBytes} -> ${s1.liveBytes} -> ${s2.liveBytes}, peak ${s1.peakBytes}`;
});

check('elementwise binary ops with broadcasting and strided / bf16 operands match the CPU exactly', () => {
  const a = randn([3, 4, 5], { seed: 30 }), b = randn([4, 1], { seed: 31 }), c = randn([5, 4], { seed: 32 });
  const [A, B, C] = [a, b, c].map((t) => t.cuda());
  const pairs: [Tensor, Tensor][] = [
    [ops.add(A!, B!), ops.add(a, b)], [ops.sub(A!, C!.T), ops.sub(a, c.T)], [ops.mul(A!, 3), ops.mul(a, 3)], [ops.div(B!, A!), ops.div(b, a)],
    [ops.maximum(A!, B!), ops.maximum(a, b)], [ops.minimum(A!, C!.T), ops.minimum(a, c.T)], [ops.add(2, ops.neg(A!)), ops.add(2, ops.neg(a))],
  ];
  const ab = a.to('bf16'), bb = b.to('bf16');
  const low = ops.mul(ab.cuda(), bb.cuda()), lowCpu = ops.mul(ab, bb);
  if (low.dtype !== 'bf16') return `bf16 × bf16 gave ${low.dtype}`;
  pairs.push([low, lowCpu]);
  return pairs.map(([g, w]) => close(arr(g), arr(w), 0)).find((r) => r !== true) ?? true;
});

check('unary maths and activations match the CPU (f32 and bf16)', () => {
  const x = ops.mul(randn([257], { seed: 33 }), 3), pos = ops.add(ops.abs(x), 0.1);
  const X = x.cuda(), P = pos.cuda();
  const names = ['neg', 'exp', 'sin', 'cos', 'relu', 'gelu', 'silu', 'tanh', 'sigmoid', 'atan', 'abs', 'sign'] as const;
  for (const n of names) {
    const r = close(arr((ops as any)[n](X)), arr((ops as any)[n](x)), 2e-6);
    if (r !== true) return `${n}: ${r}`;
  }
  for (const [n, f] of [['log', ops.log], ['sqrt', ops.sqrt], ['rsqrt', ops.rsqrt]] as const) {
    const r = close(arr(f(P)), arr(f(pos)), 2e-6);
    if (r !== true) return `${n}: ${r}`;
  }
  const gt = close(arr(ops.gelu(X, { approximate: 'tanh' })), arr(ops.gelu(x, { approximate: 'tanh' })), 2e-6);
  if (gt !== true) return `gelu tanh: ${gt}`;
  const pw = close(arr(ops.pow(P, 1.5)), arr(ops.pow(pos, 1.5)), 2e-6);
  if (pw !== true) return `pow: ${pw}`;
  const xb = x.to('bf16');
  const gb = ops.gelu(xb.cuda());
  return (gb.dtype === 'bf16' && close(arr(gb), arr(ops.gelu(xb)), 0) === true) || `bf16 gelu ${gb.dtype} ${close(arr(gb), arr(ops.gelu(xb)), 0)}`;
});

check('casts and strided copies on the device match the CPU bit for bit', () => {
  const x = randn([6, 10], { seed: 34 });
  const X = x.cuda();
  const b = X.to('bf16');
  if (b.device !== 'cuda:0' || b.dtype !== 'bf16') return `${b.device} ${b.dtype}`;
  const r1 = close(arr(b), arr(x.to('bf16')), 0), r2 = close(arr(b.to('f32')), arr(x.to('bf16').to('f32')), 0);
  const r3 = close(arr(X.T.contiguous()), arr(x.T.contiguous()), 0), r4 = close(arr(X.slice(1, 2, 9, 3).contiguous()), arr(x.slice(1, 2, 9, 3).contiguous()), 0);
  const r5 = close(arr(X.T), arr(x.T.contiguous()), 0);  // a strided device view read back directly
  return [r1, r2, r3, r4, r5].find((r) => r !== true) ?? true;
});

check('an MLP (linear, gelu, linear; bias-free) trains on the device exactly like on the CPU: 3 AdamW steps', () => {
  const run = (dev: boolean) => {
    const mv = (t: Tensor) => (dev ? t.cuda() : t);
    const w1 = mv(randn([16, 8], { seed: 40, std: 0.3 })).requiresGrad_(true), w2 = mv(randn([4, 16], { seed: 41, std: 0.3 })).requiresGrad_(true);
    const opt = new AdamW([w1, w2], { lr: 0.01, weightDecay: 0.01 });
    for (let s = 0; s < 3; s++) {
      const x = mv(randn([5, 8], { seed: 50 + s })), g = mv(randn([5, 4], { seed: 60 + s }));
      const y = ops.linear(ops.gelu(ops.linear(x, w1)), w2);
      y.backward(g);
      opt.step();
      opt.zeroGrad();
    }
    return [arr(w1), arr(w2)];
  };
  const d = run(true), c = run(false);
  return [close(d[0]!, c[0]!, 1e-5), close(d[1]!, c[1]!, 1e-5)].find((r) => r !== true) ?? true;
});

// runs fn on the CPU and on the device with the same seeds; returns [device outputs, cpu outputs] as arrays
function both(fn: (mv: (t: Tensor) => Tensor) => Tensor[]): [number[][], number[][]] {
  return [fn((t) => t.cuda()).map(arr), fn((t) => t).map(arr)];
}
function allClose(d: number[][], c: number[][], tol = 1e-5): string | true {
  for (let i = 0; i < c.length; i++) {
    const r = close(d[i]!, c[i]!, tol);
    if (r !== true) return `output ${i}: ${r}`;
  }
  return true;
}

check('softmax / log-softmax (any axis) and their gradients match the CPU', () => allClose(...both((mv) => {
  const x = mv(randn([3, 5, 7], { seed: 70 })).requiresGrad_(true);
  const g = mv(randn([3, 5, 7], { seed: 71 }));
  const y = ops.add(ops.softmax(x, 1), ops.logSoftmax(x, -1));
  y.backward(g);
  return [y, x.grad!];
})));

check('layer norm and RMS norm with weight and bias gradients match the CPU', () => allClose(...both((mv) => {
  const x = mv(randn([6, 16], { seed: 72 })).requiresGrad_(true);
  const w = mv(randn([16], { seed: 73 })).requiresGrad_(true), b = mv(randn([16], { seed: 74 })).requiresGrad_(true);
  const w2 = mv(randn([16], { seed: 75 })).requiresGrad_(true);
  const y = ops.add(ops.layerNorm(x, w, b, 1e-5), ops.rmsNorm(x, w2, 1e-6));
  y.backward(mv(randn([6, 16], { seed: 76 })));
  return [y, x.grad!, w.grad!, b.grad!, w2.grad!];
})));

check('sums over adjacent and non-adjacent axes (keepdim) and their gradients match the CPU', () => allClose(...both((mv) => {
  const x = mv(randn([4, 3, 5], { seed: 77 })).requiresGrad_(true);
  const a = ops.sum(x, [0, 2], { keepdim: true }), b = ops.sum(x, 1), c = ops.sum(x), m = ops.mean(x, -1);
  ops.sum(ops.mul(ops.add(ops.mul(a, 2), ops.sum(b)), ops.add(c, ops.sum(m)))).backward();
  return [a, b, c, m, x.grad!];
})));

check('embedding (with its scatter-add gradient) and cross-entropy (mean / sum / none, ignore_index, label smoothing) match the CPU', () => allClose(...both((mv) => {
  const w = mv(randn([10, 6], { seed: 78 })).requiresGrad_(true);
  const ids = mv(tensor([1, 3, 3, 9, 0, 3], [6], { dtype: 'i64' }));
  const e = ops.embedding(ids, w);
  const t = mv(tensor([2, -100, 5, 1, 0, 5], [6], { dtype: 'i64' }));
  const l1 = ops.crossEntropy(e, t), l2 = ops.crossEntropy(e, t, { reduction: 'sum', labelSmoothing: 0.1 }), l3 = ops.crossEntropy(e, t, { reduction: 'none' });
  ops.add(ops.add(l1, ops.mul(l2, 0.5)), ops.sum(ops.mul(l3, 0.25))).backward();
  return [e, l1, l2, l3, w.grad!];
})));

check('bad ids and targets on the device are IndexErrors naming them', () => {
  const w = randn([4, 3]).cuda(), bad = tensor([1, 4], [2], { dtype: 'i64' }).cuda();
  return [
    throwsLike(() => ops.embedding(bad, w), 'IndexError', /embedding: id 4 is out of range \[0, 4\)/),
    throwsLike(() => ops.crossEntropy(randn([2, 4]).cuda(), bad), 'IndexError', /target 4 at row 1 is out of range \[0, 4\)/),
  ].find((r) => r !== true) ?? true;
});

check('a transformer-style block (embedding, layer norm, MLP with residual, RMS norm, cross-entropy) trains on the device like on the CPU', () => {
  const run = (dev: boolean) => {
    const mv = (t: Tensor) => (dev ? t.cuda() : t);
    const emb = mv(randn([12, 8], { seed: 80, std: 0.5 })).requiresGrad_(true), w1 = mv(randn([16, 8], { seed: 81, std: 0.3 })).requiresGrad_(true);
    const b1 = mv(randn([16], { seed: 82, std: 0.1 })).requiresGrad_(true), w2 = mv(randn([8, 16], { seed: 83, std: 0.3 })).requiresGrad_(true);
    const g = mv(randn([8], { seed: 84 })).requiresGrad_(true), head = mv(randn([12, 8], { seed: 85, std: 0.3 })).requiresGrad_(true);
    const params = [emb, w1, b1, w2, g, head];
    const opt = new AdamW(params, { lr: 0.02, weightDecay: 0.01 });
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      const ids = mv(tensor(Array.from({ length: 10 }, (_, i) => (i * 5 + s) % 12), [10], { dtype: 'i64' }));
      const tgt = mv(tensor(Array.from({ length: 10 }, (_, i) => (i * 7 + 3 * s) % 12), [10], { dtype: 'i64' }));
      const h = ops.layerNorm(ops.embedding(ids, emb), null, null, 1e-5);
      const f = ops.add(h, ops.linear(ops.gelu(ops.linear(h, w1, b1)), w2));
      const loss = ops.crossEntropy(ops.linear(ops.rmsNorm(f, g, 1e-6), head), tgt);
      loss.backward();
      losses.push(loss.item());
      opt.step();
      opt.zeroGrad();
    }
    return [losses, ...params.map((p) => arr(p))];
  };
  return allClose(run(true), run(false), 2e-5);
});

check('attention (causal, additive mask, key padding with an all-masked row, prefix keys/values, grouped-query heads) and its gradients match the CPU', () => {
  const [B, H, Hkv, Tq, Tk, P, D] = [2, 4, 2, 5, 6, 3, 8];
  const cases = [
    { causal: true, mask: false, keep: false, prefix: false },
    { causal: false, mask: true, keep: true, prefix: true },
    { causal: true, mask: true, keep: true, prefix: true },
  ];
  for (const cs of cases) {
    const r = allClose(...both((mv) => {
      const q = mv(randn([B, H, Tq, D], { seed: 90 })).requiresGrad_(true), k = mv(randn([B, Hkv, Tk, D], { seed: 91 })).requiresGrad_(true);
      const v = mv(randn([B, Hkv, Tk, D], { seed: 92 })).requiresGrad_(true);
      const pk = cs.prefix ? mv(randn([B, Hkv, P, D], { seed: 93 })).requiresGrad_(true) : null;
      const pv = cs.prefix ? mv(randn([B, Hkv, P, D], { seed: 94 })).requiresGrad_(true) : null;
      const S = (cs.prefix ? P : 0) + Tk;
      const mask = cs.mask ? mv(ops.mul(randn([B, 1, 1, S], { seed: 95 }), 2)) : null;
      // batch 1 keeps nothing: its rows attend uniformly, as transformers does
      const keep = cs.keep ? mv(tensor(Array.from({ length: B * S }, (_, i) => (i < S ? i % 3 !== 1 : false)), [B, S], { dtype: 'bool' })) : null;
      const o = ops.scaledDotProductAttention(q, k, v, { isCausal: cs.causal, mask, keyPaddingMask: keep, prefixK: pk, prefixV: pv });
      o.backward(mv(randn([B, H, Tq, D], { seed: 96 })));
      return [o, q.grad!, k.grad!, v.grad!, ...(pk ? [pk.grad!, pv!.grad!] : [])];
    }), 2e-5);
    if (r !== true) return `${JSON.stringify(cs)}: ${r}`;
  }
  return true;
});

// The CUDA library runs head sizes <= 128 through warp kernels that stage 32 keys / queries per tile (several tiles,
// ragged last tiles, value heads narrower than key heads) and larger heads through per-row kernels: both against the CPU.
check('attention at real head sizes (64, 128 with 96-wide values, 160; several 32-row tiles, ragged ends, one-query decoding) and its gradients match the CPU', () => {
  const shapes = [
    { B: 2, H: 4, Hkv: 2, Tq: 70, Tk: 70, P: 3, D: 64, Dv: 64, causal: true, mask: true, keep: true },
    { B: 1, H: 2, Hkv: 1, Tq: 33, Tk: 45, P: 0, D: 128, Dv: 96, causal: false, mask: false, keep: true },
    { B: 1, H: 2, Hkv: 2, Tq: 9, Tk: 40, P: 2, D: 160, Dv: 160, causal: true, mask: false, keep: false },
    { B: 3, H: 2, Hkv: 2, Tq: 1, Tk: 37, P: 0, D: 20, Dv: 20, causal: true, mask: true, keep: false },
  ];
  for (const cs of shapes) {
    const { B, H, Hkv, Tq, Tk, P, D, Dv } = cs;
    const r = allClose(...both((mv) => {
      const q = mv(randn([B, H, Tq, D], { seed: 190 })).requiresGrad_(true), k = mv(randn([B, Hkv, Tk, D], { seed: 191 })).requiresGrad_(true);
      const v = mv(randn([B, Hkv, Tk, Dv], { seed: 192 })).requiresGrad_(true);
      const pk = P ? mv(randn([B, Hkv, P, D], { seed: 193 })).requiresGrad_(true) : null;
      const pv = P ? mv(randn([B, Hkv, P, Dv], { seed: 194 })).requiresGrad_(true) : null;
      const S = P + Tk;
      const mask = cs.mask ? mv(ops.mul(randn([B, 1, 1, S], { seed: 195 }), 2)) : null;
      const keep = cs.keep ? mv(tensor(Array.from({ length: B * S }, (_, i) => i % 5 !== 2), [B, S], { dtype: 'bool' })) : null;
      const o = ops.scaledDotProductAttention(q, k, v, { isCausal: cs.causal, mask, keyPaddingMask: keep, prefixK: pk, prefixV: pv });
      o.backward(mv(randn([B, H, Tq, Dv], { seed: 196 })));
      return [o, q.grad!, k.grad!, v.grad!, ...(pk ? [pk.grad!, pv!.grad!] : [])];
    }), 2e-5);
    if (r !== true) return `${JSON.stringify(cs)}: ${r}`;
  }
  return true;
});

// 3xTF32 errs by ~2^-22 of Σ|a·b| (about 1.3e-5 absolute here on outputs near zero, where FFMA stays below 1e-5);
// plain TF32 would be off by ~1e-2
check('cuda.setFloat32MatmulPrecision: "high" (3xTF32) still matches the CPU matmul to 5e-5; the setting reads back; bad modes are typed errors', () => {
  const a = randn([70, 96], { seed: 230 }), b = randn([96, 50], { seed: 231 });
  const before = cuda.getFloat32MatmulPrecision();
  cuda.setFloat32MatmulPrecision('high');
  try {
    if (cuda.getFloat32MatmulPrecision() !== 'high') return `reads back ${cuda.getFloat32MatmulPrecision()}`;
    const r = close(arr(ops.matmul(a.cuda(), b.cuda())), arr(ops.matmul(a, b)), 5e-5);
    if (r !== true) return r;
  } finally {
    cuda.setFloat32MatmulPrecision('highest');
  }
  if (before !== 'highest' || cuda.getFloat32MatmulPrecision() !== 'highest') return `default ${before}, after reset ${cuda.getFloat32MatmulPrecision()}`;
  return throwsLike(() => cuda.setFloat32MatmulPrecision('medium' as 'high'), 'ValueError', /highest.*high.*medium/);
});

// Attention through products needs a score workspace (rows × keys floats); where the allocator cannot give it (under the
// mock, whose MOCK_CUDA_MAX_BYTES of 1 MB refuses this one's 1.3 MB) it runs the fused path instead, with the same result.
check('attention whose score workspace the allocator refuses falls back to the fused path and matches the CPU', () => {
  return allClose(...both((mv) => {
    const q = mv(randn([1, 8, 200, 8], { seed: 240 })).requiresGrad_(true), k = mv(randn([1, 8, 200, 8], { seed: 241 })).requiresGrad_(true);
    const v = mv(randn([1, 8, 200, 8], { seed: 242 })).requiresGrad_(true);
    const o = ops.scaledDotProductAttention(q, k, v, { isCausal: true });
    o.backward(mv(randn([1, 8, 200, 8], { seed: 243 })));
    return [o, q.grad!, k.grad!, v.grad!];
  }), 2e-5);
});

// A linear layer's input gradient (B, T, out) @ (out, in) runs as one GEMM over B·T rows on the device; a bias enters by
// a broadcast copy; norms run a warp per row and their parameter gradients sum row chunks: shapes big enough for those.
check('linear with bias over (B, T, C) inputs, layer norm and bias gradients at BERT-like sizes match the CPU', () => {
  const r = allClose(...both((mv) => {
    const x = mv(randn([4, 80, 96], { seed: 200 })).requiresGrad_(true);
    const w = mv(randn([80, 96], { seed: 201 })).requiresGrad_(true), bias = mv(randn([80], { seed: 202 })).requiresGrad_(true);
    const lw = mv(randn([80], { seed: 203 })).requiresGrad_(true), lb = mv(randn([80], { seed: 204 })).requiresGrad_(true);
    const y = ops.layerNorm(ops.linear(x, w, bias), lw, lb, 1e-5);
    y.backward(mv(randn([4, 80, 80], { seed: 205 })));
    return [y, x.grad!, w.grad!, bias.grad!, lw.grad!, lb.grad!];
  }), 2e-5);
  return r;
});

// bf16 mixed precision on the device: bf16 GEMMs (wgmma / mma.sync kernels) with f32 accumulation, the rest f32
check('bf16 autocast training of BERT with each adapter method on the device follows the CPU autocast run (3 AdamW steps)', () => {
  const run = (dev: boolean, method: string) => {
    manualSeed(0);
    const model = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 300, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
      intermediate_size: 128, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 0 });
    model.addClassificationHead('x', { num_labels: 2 });
    model.addAdapter('x', method);
    model.trainAdapter('x');
    if (dev) model.to('cuda');
    const opt = new AdamW(hfParamGroups(model, 0.01), { lr: 1e-2, weightDecay: 0.01 });
    const mv = (t: Tensor) => (dev ? t.cuda() : t);
    const inputIds = mv(tensor([[1, 2, 3, 4, 9], [5, 6, 7, 8, 10]], undefined, { dtype: 'i64' })), labels = mv(tensor([0, 1], [2], { dtype: 'i64' }));
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      autocast(() => scope(() => {
        const l = model.forward({ inputIds, labels }).loss!;
        losses.push(l.item());
        l.backward();
      }));
      opt.step();
      opt.zeroGrad();
    }
    model.dispose();
    return losses;
  };
  for (const m of ['seq_bn', 'lora', 'prefix_tuning', 'ia3']) {
    const r = close(run(true, m), run(false, m), 1e-3);
    if (r !== true) return `${m}: ${r}`;
  }
  return true;
});

check('comparisons, logical ops, where, masked_fill and the index ops (index_select, gather and their index_add / scatter_add gradients) match the CPU, integer and bool tensors included', () => {
  const res = both((mv) => {
    const x = mv(randn([3, 5, 4], { seed: 210 })).requiresGrad_(true), y = mv(randn([5, 1], { seed: 211 }));
    const ids = mv(tensor([[3, 1, 4, 1, 0], [2, 2, 9, 0, 1], [5, 5, 5, 5, 5]], [3, 5], { dtype: 'i64' }));
    const flags = mv(tensor([true, false, true, true, false], [5], { dtype: 'bool' }));
    const f = (t: Tensor) => t.to('f32');
    const cmps = [ops.eq(ids, 5), ops.ne(ids, mv(tensor([1], [1], { dtype: 'i32' }))), ops.lt(x, y), ops.le(x, 0), ops.gt(ids, 2), ops.ge(x, y),
      ops.logicalAnd(flags, ops.gt(ids, 1)), ops.logicalOr(flags, ops.eq(ids, 0)), ops.logicalNot(flags), ops.logicalNot(ids)].map(f);
    const w = ops.where(ops.gt(x, 0), x, ops.mul(x, 0.1));
    const wi = f(ops.where(ops.gt(ids, 2), ids, mv(tensor([-1], [1], { dtype: 'i64' }))));
    const mf = ops.maskedFill(x, ops.lt(x, -0.5), -1e4), mfi = f(ops.maskedFill(ids, flags, 7));
    const rows = ops.indexSelect(x, 1, mv(tensor([4, 0, 4, 2], [4], { dtype: 'i64' })));
    const g = ops.gather(x, 2, mv(tensor(Array.from({ length: 3 * 5 * 3 }, (_, i) => (i * 7) % 4), [3, 5, 3], { dtype: 'i64' })));
    const gi = f(ops.gather(ids, 1, mv(tensor([[0, 0], [4, 1], [2, 3]], [3, 2], { dtype: 'i64' }))));
    const sel = f(ops.indexSelect(flags, 0, mv(tensor([4, 0, 2], [3], { dtype: 'i32' }))));
    const loss = ops.sum(ops.mul(w, mf));
    ops.add(ops.add(loss, ops.sum(ops.mul(rows, rows))), ops.sum(ops.mul(g, g))).backward();
    return [...cmps, w, wi, mf, mfi, rows, g, gi, sel, x.grad!];
  });
  return allClose(...res, 1e-6);
});

check('bad indices, masks and segment offsets on the device are typed errors naming the op (never a device fault)', () => {
  const x = randn([3, 4], { seed: 220 }).cuda();
  const i64 = (v: number[], shape: number[]) => tensor(v, shape, { dtype: 'i64' }).cuda();
  return [
    throwsLike(() => ops.gather(x, 1, i64([0, 4, 1], [3, 1])), 'IndexError', /gather: index 4 is out of range \[0, 4\)/),
    throwsLike(() => ops.indexSelect(x, 0, i64([-1], [1])), 'IndexError', /index_select: index -1 is out of range \[0, 3\)/),
    throwsLike(() => ops.where(i64([1, 0, 1, 0], [4]), x, x), 'DTypeError', /where: condition must be bool, got i64/),
    throwsLike(() => ops.maskedFill(x, ops.gt(x, 0).to('f32'), 0), 'DTypeError', /masked_fill: mask must be bool, got f32/),
    throwsLike(() => ops.gather(x, 1, i64([0, 1], [2])), 'ShapeError', /gather: index \[2\] must have the rank of input \[3, 4\]/),
    throwsLike(() => callOp('lora_sgmv', [x, tensor([1], [1]), randn([2, 4]).cuda(), randn([5, 2]).cuda()], { starts: [0, 7] }), 'IndexError', /lora_sgmv: starts\[1\] = 7 out of \[0, 3\]/),
    throwsLike(() => callOp('lora_sgmv', [x, tensor([1], [1]), randn([2, 4]), randn([5, 2]).cuda()], { starts: [0, 3] }), 'DeviceError', /lora_sgmv: expected all tensors on one device, but input #2 is on cpu/),
  ].find((r) => r !== true) ?? true;
});

// Builds a model (seeded), moves it to the device when dev, runs 2 AdamW steps on `input()`; returns the losses and the
// trained parameters (the device and CPU runs must agree).
function trainModel(dev: boolean, seed: number, build: () => InstanceType<typeof AutoAdapterModel>, input: () => Record<string, Tensor>): number[][] {
  manualSeed(seed);
  const m = build();
  if (dev) m.to('cuda');
  const trainable = m.namedParameters().filter(([, p]) => p.requiresGrad).map(([, p]) => p);
  if (dev && !trainable.every((p) => p.device === 'cuda:0')) throw new Error('a parameter stayed on the host');
  const opt = new AdamW(trainable, { lr: 0.01 });
  const losses: number[] = [];
  for (let s = 0; s < 2; s++) {
    const out = m.forward(input());
    out.loss!.backward();
    losses.push(out.loss!.item());
    opt.step();
    opt.zeroGrad();
  }
  return [losses, ...trainable.map((p) => arr(p))];
}
const ids = (rows: number[][]) => tensor(rows, undefined, { dtype: 'i64' });

check('a BERT model with an adapter and a classification head moves with to("cuda") and trains on the device like on the CPU (LoRA, seq_bn, prefix tuning, (IA)³; 2 AdamW steps)', () => {
  // hidden dropout on: the device draws the CPU's Philox masks
  const cfg = { model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0, pad_token_id: 0 };
  for (const method of ['lora[r=4, alpha=8]', 'seq_bn[reduction_factor=4]', 'prefix_tuning[prefix_length=3, bottleneck_size=8]', 'ia3']) {
    const run = (dev: boolean) => trainModel(dev, 99, () => {
      const m = AutoAdapterModel.fromConfig(cfg, { seed: 7 });
      m.addAdapter('a', method);
      m.addClassificationHead('a', { num_labels: 3 });
      m.trainAdapter('a');
      return m;
    }, () => ({ inputIds: ids([[3, 7, 9, 11, 0], [5, 5, 8, 2, 1]]), attentionMask: ids([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]), labels: tensor([2, 0], [2], { dtype: 'i64' }) }));
    const r = allClose(run(true), run(false), 2e-5);
    if (r !== true) return `${method}: ${r}`;
  }
  return true;
});

check('dropout on the device drops exactly the elements the CPU drops (same seed), forward and backward', () => allClose(...both((mv) => {
  manualSeed(5);
  const x = mv(randn([7, 33], { seed: 97 })).requiresGrad_(true);
  const y = ops.dropout(x, 0.3);
  y.backward(mv(randn([7, 33], { seed: 98 })));
  return [y, x.grad!];
}), 0));

check('concat along any dim (incl. bf16) and its gradient match the CPU', () => allClose(...both((mv) => {
  const a = mv(randn([2, 3, 4], { seed: 100 })).requiresGrad_(true), b = mv(randn([2, 5, 4], { seed: 101 })).requiresGrad_(true);
  const c = ops.concat([a, b], 1), d = ops.concat([a, a], -1), e = ops.concat([a.to('bf16'), a.to('bf16')], 0);
  ops.add(ops.sum(ops.mul(c, c)), ops.sum(d)).backward();
  return [c, d, e, a.grad!, b.grad!];
}), 0));

check('a GPT-2 model with LoRA on c_attn (fused q/k/v blocks) trains as a causal LM on the device like on the CPU (its tied LM head, padding mask, dropout)', () => {
  const cfg = { model_type: 'gpt2', vocab_size: 40, n_embd: 16, n_layer: 2, n_head: 2, n_positions: 32, resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0 };
  const run = (dev: boolean) => trainModel(dev, 3, () => {
    const m = AutoAdapterModel.fromConfig(cfg, { seed: 5 });
    m.addAdapter('a', 'lora[r=4, alpha=8, attn_matrices=["q", "v"]]');
    m.trainAdapter('a');
    return m;
  }, () => {
    const inputIds = ids([[3, 7, 9, 11, 2, 5], [5, 5, 8, 2, 1, 0]]);
    return { inputIds, attentionMask: ids([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]), labels: inputIds };
  });
  return allClose(run(true), run(false), 2e-5);
});

check('a LLaMA model (RoPE, RMS norm, SiLU MLP, grouped-query attention) with LoRA and with prefix tuning trains on the device like on the CPU', () => {
  const cfg = { model_type: 'llama', vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, max_position_embeddings: 32, rms_norm_eps: 1e-6, tie_word_embeddings: false };
  for (const method of ['lora[r=4, alpha=8]', 'prefix_tuning[prefix_length=2, bottleneck_size=8]']) {
    const run = (dev: boolean) => trainModel(dev, 4, () => {
      const m = AutoAdapterModel.fromConfig(cfg, { seed: 6 });
      m.addAdapter('a', method);
      m.trainAdapter('a');
      return m;
    }, () => {
      const inputIds = ids([[3, 7, 9, 11, 2, 5], [5, 5, 8, 2, 1, 6]]);
      return { inputIds, attentionMask: ids([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]), labels: inputIds };
    });
    const r = allClose(run(true), run(false), 2e-5);
    if (r !== true) return `${method}: ${r}`;
  }
  return true;
});

check('RoBERTa, ELECTRA, DistilBERT, ViT, Qwen2, BART and T5 with LoRA and with prefix tuning (and their heads) train on the device like on the CPU', () => {
  const cfgs: Record<string, Record<string, unknown>> = {
    roberta: { model_type: 'roberta', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
      hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, pad_token_id: 1, max_position_embeddings: 40 },
    electra: { model_type: 'electra', vocab_size: 50, embedding_size: 8, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
      intermediate_size: 32, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 },
    distilbert: { model_type: 'distilbert', vocab_size: 50, dim: 16, n_layers: 2, n_heads: 2, hidden_dim: 32, dropout: 0, attention_dropout: 0 },
    vit: { model_type: 'vit', hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, image_size: 8, patch_size: 4,
      num_channels: 3, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 },
    qwen2: { model_type: 'qwen2', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 32 },
    bart: { model_type: 'bart', decoder_start_token_id: 2, vocab_size: 50, d_model: 16, encoder_layers: 1, decoder_layers: 2, encoder_attention_heads: 2,
      decoder_attention_heads: 2, encoder_ffn_dim: 32, decoder_ffn_dim: 32, max_position_embeddings: 32, dropout: 0, attention_dropout: 0, activation_dropout: 0 },
    t5: { model_type: 't5', vocab_size: 50, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_decoder_layers: 2, num_heads: 2, relative_attention_num_buckets: 8,
      dropout_rate: 0, feed_forward_proj: 'gated-gelu', decoder_start_token_id: 0 },
  };
  for (const [name, cfg] of Object.entries(cfgs))
    for (const method of ['lora[r=4, alpha=8]', 'prefix_tuning[prefix_length=2, bottleneck_size=8]']) {
      const run = (dev: boolean) => trainModel(dev, 5, () => {
        const m = AutoAdapterModel.fromConfig(cfg, { seed: 7 });
        if (name === 'vit') m.addImageClassificationHead('x', { num_labels: 3 });
        else if (name === 'bart' || name === 't5') m.addSeq2seqLmHead('x');
        else if (name === 'qwen2') m.addClassificationHead('x', { num_labels: 3 });  // picks each row's last real token
        else m.addClassificationHead('x', { num_labels: 3 });
        m.addAdapter('x', method);
        m.trainAdapter('x');
        return m;
      }, () => {
        const inputIds = ids([[5, 7, 9, 11, 3], [4, 6, 8, 1, 1]]), attentionMask = ids([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]);
        const labels = tensor([0, 2], [2], { dtype: 'i64' });
        if (name === 'vit') return { pixelValues: randn([2, 3, 8, 8], { seed: 8 }), labels };
        if (name === 'bart') return { inputIds, attentionMask, labels: inputIds };
        if (name === 't5') return { inputIds, attentionMask, decoderInputIds: ids([[0, 5, 7, 9, 11], [0, 4, 6, 8, 1]]), labels: inputIds };
        return { inputIds, attentionMask, labels };
      });
      const r = allClose(run(true), run(false), 2e-5);
      if (r !== true) return `${name} ${method}: ${r}`;
    }
  return true;
});

// (The single-adapter fused ops, lora_linear / ia3_linear / bottleneck, run in the BERT training check above.)
check('segmented multi-adapter ops (BatchSplits of 2 and of 3 LoRA adapters of ranks 2, 4, 8 and of 2 and of 3 bottlenecks of widths 8, 4, 2, with empty segments) train on the device like on the CPU', () => {
  const cfg = { model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
  // a BatchSplit of the given adapter configs over 3 rows, trained on the device and on the CPU
  const split = (seed: number, configs: string[], sizes: number[]) => {
    const names = configs.map((_, i) => String.fromCharCode(97 + i));
    const run = (dev: boolean) => trainModel(dev, seed, () => {
      const m = AutoAdapterModel.fromConfig(cfg, { seed: seed + 1 });
      configs.forEach((c, i) => m.addAdapter(names[i]!, c));
      m.addClassificationHead('h', { num_labels: 2 });
      m.trainAdapter(new BatchSplit(names, sizes));
      m.setActiveAdapters(new BatchSplit(names, sizes));
      m.activeHead = 'h';
      return m;
    }, () => ({ inputIds: ids([[5, 7, 9, 11], [4, 6, 8, 1], [3, 3, 2, 9]]), labels: tensor([0, 1, 1], [3], { dtype: 'i64' }) }));
    return allClose(run(true), run(false), 2e-5);
  };
  // three adapters or more take the single-launch kernels, two the per-segment GEMMs
  const cases: [string, string[], number[]][] = [
    ['LoRA x3', ['lora[r=2, alpha=4]', 'lora[r=4, alpha=8]', 'lora[r=8, alpha=8]'], [2, 0, 1]],
    ['LoRA x2', ['lora[r=2, alpha=4]', 'lora[r=8, alpha=8]'], [1, 2]],
    ...['relu', 'swish'].map((act): [string, string[], number[]] =>
      [`bottleneck x3 ${act}`, [2, 4, 8].map((f) => `seq_bn[reduction_factor=${f}, non_linearity='${act}']`), [1, 2, 0]]),
    ['bottleneck x2', ['seq_bn[reduction_factor=2]', 'seq_bn[reduction_factor=8]'], [2, 1]],
  ];
  for (const [k, [label, configs, sizes]] of cases.entries()) {
    const r = split(11 + 2 * k, configs, sizes);
    if (r !== true) return `${label}: ${r}`;
  }
  return true;
});

async function checkAsync(name: string, fn: () => Promise<string | true>) {
  try {
    const r = await fn();
    results.push({ name, ok: r === true, detail: r === true ? '' : r });
  } catch (e) {
    results.push({ name, ok: false, detail: `threw ${(e as Error).name}: ${(e as Error).message}` });
  }
}

await checkAsync('AdapterTrainer with device "cuda" (grad clipping, warm-up schedule, dropout, evaluation) gives the CPU run\'s losses and eval loss', async () => {
  const data = Array.from({ length: 24 }, (_, i) => {
    const inputIds = Array.from({ length: 4 + (i % 3) }, (_, t) => 1 + ((i * 13 + t * 7) % 37));
    return { inputIds, labels: inputIds.includes(7) ? 1 : 0 };
  });
  const cfg = { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,
    hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0, pad_token_id: 0 };
  const run = async (device: string) => {
    manualSeed(21);
    const m = AutoAdapterModel.fromConfig(cfg, { seed: 11 });
    m.addAdapter('a', 'lora[r=4, alpha=8]');
    m.addClassificationHead('a', { num_labels: 2 });
    m.trainAdapter('a');
    const tr = new AdapterTrainer(m, { learningRate: 5e-3, maxSteps: 4, batchSize: 6, loggingSteps: 1, warmupSteps: 1, maxGradNorm: 0.5, progress: false, device },
      { train: data, eval: data.slice(0, 8) });
    const r = await tr.train();
    if (device !== 'cpu' && m.parameters().some((p) => p.device !== 'cuda:0')) throw new Error('the trainer left parameters on the host');
    return [r.history.filter((h) => 'loss' in h).map((h) => h.loss!), [tr.evaluate().eval_loss!]];
  };
  return allClose(await run('cuda'), await run('cpu'), 2e-5);
});

console.log(JSON.stringify({ results }));
