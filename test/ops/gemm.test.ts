// GEMM kernels (every ISA the CPU has: AVX-512, AVX2, scalar; bf16 via AMX, AVX512-BF16, f32) against a
// float64 JS reference, over edge-tile shapes, all transpose combinations (as transposed views) and
// broadcast batches.
import test from 'ava';
import { ops, randn, noGrad, cpuInfo, tensor, Tensor } from '../../lib/index.ts';
import { native } from '../../lib/binding.ts';
import * as tensorModule from '../../lib/tensor.ts';

function ref(a: Float32Array, b: Float32Array, batch: number, m: number, k: number, n: number, bBroadcast: boolean) {
  const c = new Float64Array(batch * m * n);
  const absSum = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++)
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0, sa = 0;
        for (let p = 0; p < k; p++) {
          const v = a[(z * m + i) * k + p]! * b[((bBroadcast ? 0 : z) * k + p) * n + j]!;
          s += v;
          sa += Math.abs(v);
        }
        c[(z * m + i) * n + j] = s;
        absSum[(z * m + i) * n + j] = sa;
      }
  return { c, absSum };
}

const shapes: [number, number, number][] = [
  [1, 1, 1], [1, 7, 1], [3, 5, 7], [13, 17, 19], [31, 33, 29], [64, 64, 64], [65, 97, 33], [127, 16, 129], [200, 1, 300],
];

const cpu = cpuInfo();
// only kernels this CPU can run (forcing is for going down, never up)
const f32Isas = ['auto', ...(cpu.avx2 && cpu.fma ? ['avx2'] : []), 'scalar'];
const bf16Isas = ['auto', ...(cpu.avx512bf16 ? ['avx512bf16'] : []), 'f32'];

function run(t: import('ava').ExecutionContext, dtype: 'f32' | 'bf16', isa: string) {
  if (dtype === 'f32') native.gemmForceIsa(isa, 'auto');
  else native.gemmForceIsa('auto', isa);
  try {
    for (const [m, k, n] of shapes)
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const)
        for (const batch of [1, 3]) {
          const bB = batch > 1 && m % 2 === 1;  // sometimes broadcast b over the batch
          noGrad(() => {
            const a0 = randn(ta ? [batch, k, m] : [batch, m, k], { seed: m * 7 + k });
            const b0 = randn(tb ? [bB ? 1 : batch, n, k] : [bB ? 1 : batch, k, n], { seed: n * 13 + k });
            const cvt = (x: Tensor) => (dtype === 'f32' ? x : x.to(dtype));
            const a = cvt(a0), b = cvt(b0);
            const av = ta ? a.transpose(-2, -1) : a, bv = tb ? b.transpose(-2, -1) : b;
            const c = ops.matmul(av, bv);
            const A = av.contiguous().toArray() as Float32Array, B = bv.contiguous().toArray() as Float32Array;
            const { c: R, absSum } = ref(A, B, batch, m, k, n, bB);
            const C = c.toArray() as Float32Array;
            let worst = 0;
            for (let i = 0; i < R.length; i++) worst = Math.max(worst, Math.abs(C[i]! - R[i]!) / (absSum[i]! + 1e-30));
            const tol = dtype === 'f32' ? 2e-6 : 8e-3;  // bf16: the f32 result is rounded to bf16
            if (!(worst <= tol)) t.fail(`${dtype}/${isa} ${batch}×[${m}×${k}]·[${k}×${n}] ta=${ta} tb=${tb}: error ${worst}`);
            for (const x of [a0, b0, a, b, av, bv, c]) x.dispose();
          });
        }
  } finally {
    native.gemmForceIsa('auto', 'auto');
  }
  t.pass();
}

for (const isa of f32Isas) test.serial(`sgemm ${isa} matches float64 reference`, (t) => run(t, 'f32', isa));
for (const isa of bf16Isas) test.serial(`bgemm ${isa} matches float64 reference`, (t) => run(t, 'bf16', isa));

test.serial('cpuInfo reports the chosen kernels', (t) => {
  const info = cpuInfo();
  t.true(['avx512', 'avx2', 'scalar'].includes(info.sgemm), info.sgemm);
  t.true(['amx', 'avx512bf16', 'f32'].includes(info.bgemm), info.bgemm);
  if (info.avx512f) t.is(info.sgemm, 'avx512');
});

test.serial('matmul and linear read views with a storage offset correctly', (t) => {
  noGrad(() => {
    const big = randn([64, 8], { seed: 11 });
    const lower = ops.slice(big, 0, 32, 64);          // rows 32..63: offset 256 elements
    const x = randn([5, 32], { seed: 12 });
    const y = ops.matmul(x, lower);
    const yRef = ops.matmul(x, lower.contiguous());
    t.deepEqual(Array.from(y.toArray() as Float32Array), Array.from(yRef.toArray() as Float32Array));
    const w = ops.slice(randn([40, 16], { seed: 13 }), 0, 20, 40);  // (out=20, in=16) view with offset
    const z = ops.linear(randn([3, 16], { seed: 14 }), w);
    const zRef = ops.linear(randn([3, 16], { seed: 14 }), w.contiguous());
    t.deepEqual(Array.from(z.toArray() as Float32Array), Array.from(zRef.toArray() as Float32Array));
    const bat = ops.slice(randn([4, 6, 7], { seed: 15 }), 0, 1, 3);  // batched view with offset
    const bb = ops.matmul(bat, ops.transpose(bat, 1, 2));
    const bbRef = ops.matmul(bat.contiguous(), ops.transpose(bat, 1, 2).contiguous());
    t.deepEqual(Array.from(bb.toArray() as Float32Array), Array.from(bbRef.toArray() as Float32Array));
  });
});

// CPU autocast ({mixed: 1}): the GEMM rounds f32 operands to bf16 while packing. The result must be the one of
// casting first and multiplying in bf16, bit for bit, on every bf16 kernel, for any mix of f32 / bf16 operands,
// transposed views, batches, biases and NaNs.
function callMixed(name: string, inputs: (Tensor | null)[], attrs: Record<string, string | number>): Float32Array {
  const [h] = native.runOp(name, inputs.map((x) => (x ? x.handle : null)), attrs);
  const out = new Tensor(h!);
  const arr = out.toArray() as Float32Array;
  out.dispose();
  return arr;
}
function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}
for (const isa of bf16Isas)
  test.serial(`mixed-precision matmul / linear (${isa}) equal cast-then-bf16 bit for bit`, (t) => {
    native.gemmForceIsa('auto', isa);
    let checked = 0;
    try {
      noGrad(() => {
        // [96, 300, 600] threaded; K = 2101 in two chunks on AVX512-BF16
        for (const [m, k, n] of [...shapes, [96, 64, 160], [33, 256 + 64, 70], [96, 300, 600], [20, 2101, 40]] as [number, number, number][])
          for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const)
            for (const [aDt, bDt] of [['f32', 'f32'], ['bf16', 'f32'], ['f32', 'bf16']] as const) {
              const batch = m % 2 ? 2 : 1;
              const a0 = randn(ta ? [batch, k, m] : [batch, m, k], { seed: m + 3 * k }), b0 = randn(tb ? [n, k] : [k, n], { seed: n + 5 * k });
              const a = aDt === 'f32' ? a0 : a0.to('bf16'), b = bDt === 'f32' ? b0 : b0.to('bf16');
              const av = ta ? a.transpose(-2, -1) : a, bv = tb ? b.transpose(-2, -1) : b;
              // the same views of bf16 copies: the same GEMM path (a batch folded or not, small or packed)
              const a16b = a.to('bf16'), b16b = b.to('bf16');
              const a16 = ta ? a16b.transpose(-2, -1) : a16b, b16 = tb ? b16b.transpose(-2, -1) : b16b;
              const got = callMixed('matmul', [av, bv], { mixed: 1 });
              const want = callMixed('matmul', [a16, b16], { f32_out: 1 });
              if (JSON.stringify(bits(got)) !== JSON.stringify(bits(want))) t.fail(`matmul ${aDt}·${bDt} ${batch}×[${m}×${k}]·[${k}×${n}] ta=${ta} tb=${tb}`);
              checked++;
              for (const x of [a0, b0, a, b, av, bv, a16, b16, a16b, b16b]) if (!x.disposed) x.dispose();
            }
        for (const [rows, inF, outF] of [[1, 8, 8], [37, 64, 96], [130, 96, 33], [64, 288, 64], [30, 2100, 40]] as [number, number, number][])
          for (const layout of ['linear', 'conv1d']) {
            const x = randn([rows, inF], { seed: rows }), w = randn(layout === 'linear' ? [outF, inF] : [inF, outF], { seed: outF });
            const bias = randn([outF], { seed: 7 });
            const X = x.toArray() as Float32Array;
            X[0] = NaN;  // a NaN input row stays NaN (quiet), as the cast keeps it
            const xn = tensor(X, [rows, inF]);
            const plain = callMixed('linear', [xn, w, null], { layout, mixed: 1 }), B = bias.toArray() as Float32Array;
            for (const bb of [bias, null]) {
              const got = callMixed('linear', [xn, w, bb], { layout, mixed: 1 });
              const want = callMixed('linear', [xn.to('bf16'), w.to('bf16'), bb], { layout, f32_out: 1 });
              if (JSON.stringify(bits(got)) !== JSON.stringify(bits(want))) t.fail(`linear ${layout} [${rows}×${inF}]→${outF} bias=${!!bb}`);
              // the bias joins once (also when K runs in several chunks; where it joins, the rounding may differ)
              if (bb && got.some((v, i) => !(Math.abs(v - (plain[i]! + B[i % outF]!)) <= 1e-5 * (Math.abs(plain[i]!) + Math.abs(B[i % outF]!) + 1)) &&
                  !(Number.isNaN(v) && Number.isNaN(plain[i]!))))
                t.fail(`linear ${layout} [${rows}×${inF}]→${outF}: result with bias ≠ result without it + bias`);
              checked++;
            }
            t.true(Number.isNaN(callMixed('linear', [xn, w, bias], { layout, mixed: 1 })[0]));
          }
      });
    } finally {
      native.gemmForceIsa('auto', 'auto');
    }
    t.is(checked, (shapes.length + 4) * 4 * 3 + 5 * 2 * 2);
  });

test.serial('mixed-precision matmul / linear refuse other dtypes with a typed error', (t) => {
  noGrad(() => {
    const a = randn([4, 4]), i = tensor([[1, 2], [3, 4]], undefined, { dtype: 'i64' });
    t.throws(() => native.runOp('matmul', [i.handle, a.handle], { mixed: 1 }), { message: /mixed-precision matmul needs f32 or bf16/ });
    t.throws(() => native.runOp('linear', [a.handle, a.to('f16').handle, null], { mixed: 1 }), { message: /mixed-precision linear needs f32 or bf16/ });
  });
});

for (const isa of bf16Isas)
test.serial(`bf16 matmul (${isa}) writes bf16 from the GEMM: bit for bit the f32 result rounded by the cast (rounding, NaN, ±inf, every path)`, (t) => {
  native.gemmForceIsa('auto', isa);
  t.teardown(() => native.gemmForceIsa('auto', 'auto'));
  const { callOp } = tensorModule;
  // batch, m, k, n: small (fallback), edges, threaded, by batch, rows 4 KiB apart (AVX512-BF16 packs A then), a last
  // tile of 18 columns (one masked 32-lane store per row), K past
  // the one-chunk epilogue of AVX512-BF16 (8192)
  const cases: [number, number, number, number][] = [
    [1, 5, 7, 3], [1, 65, 97, 33], [1, 200, 300, 1], [1, 256, 300, 256], [3, 127, 64, 129], [8, 128, 64, 128], [1, 100, 2048, 70], [2, 64, 96, 50],
    [1, 20, 8195, 36]];
  for (const [batch, m, k, n] of cases)
    noGrad(() => {
      const a = randn([batch, m, k], { seed: m + k }).to('bf16'), b = randn([k, n], { seed: n + k }).to('bf16');
      const c16 = ops.matmul(a, b);
      const c32 = callOp('matmul', [a, b], { f32_out: 1 })[0]!;
      t.is(c16.dtype, 'bf16');
      const want = c32.to('bf16');
      const got = c16.toArray() as Float32Array, W = want.toArray() as Float32Array;
      let bad = 0;
      for (let i = 0; i < got.length; i++) if (!Object.is(got[i], W[i])) bad++;
      t.is(bad, 0, `${batch}×[${m}×${k}]·[${k}×${n}]: ${bad} elements differ`);
      for (const x of [a, b, c16, c32, want]) x.dispose();
    });
  // rows of A pick single entries of B (one-hot), so each result is one product (1 + 2^-7)^2 · ±2^e that bf16 must
  // round, at many exponents; B's ±inf and NaN reach C as non-finite values
  noGrad(() => {
    const m = 64, k = 64, n = 64;
    const A = new Float32Array(m * k), B = new Float32Array(k * n);
    for (let i = 0; i < m; i++) A[i * k + (i % k)] = 1 + 2 ** -7;
    for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) B[p * n + j] = (1 + 2 ** -7) * (j % 3 === 0 ? 1 : -1) * 2 ** ((p + j) % 9 - 4);
    B[5 * n + 7] = Infinity;
    B[9 * n + 3] = NaN;
    B[11 * n + 2] = -Infinity;
    const a = tensor(A, [m, k]).to('bf16'), b = tensor(B, [k, n]).to('bf16');
    const c16 = ops.matmul(a, b), want = callOp('matmul', [a, b], { f32_out: 1 })[0]!.to('bf16');
    const got = c16.toArray() as Float32Array, W = want.toArray() as Float32Array;
    let bad = 0, nonFinite = 0;
    for (let i = 0; i < got.length; i++) {
      if (!Object.is(got[i], W[i])) bad++;
      if (!Number.isFinite(got[i]!)) nonFinite++;
    }
    t.is(bad, 0);
    t.true(nonFinite >= 3, 'inf and NaN reach the output');
    for (const x of [a, b, c16, want]) x.dispose();
  });
});

for (const isa of bf16Isas)
test.serial(`bf16 linear (${isa}) writes bf16 from the GEMM (bias in the epilogue): bit for bit the f32 result rounded by the cast`, (t) => {
  native.gemmForceIsa('auto', isa);
  t.teardown(() => native.gemmForceIsa('auto', 'auto'));
  const { callOp } = tensorModule;
  const cases: [number[], number, number, boolean, 'linear' | 'conv1d'][] = [  // x shape, in, out, bias, layout
    [[3, 5], 5, 7, true, 'linear'], [[2, 65, 97], 97, 33, true, 'linear'], [[256, 300], 300, 256, false, 'linear'],
    [[4, 128, 96], 96, 200, true, 'conv1d'], [[7, 0], 0, 5, true, 'linear']];
  for (const [xs, inF, outF, hasBias, layout] of cases)
    noGrad(() => {
      const x = randn(xs, { seed: inF + outF }).to('bf16');
      const w = randn(layout === 'linear' ? [outF, inF] : [inF, outF], { seed: outF }).to('bf16');
      const b = hasBias ? randn([outF], { seed: 3 }).to('bf16') : null;
      const y16 = callOp('linear', [x, w, b], { layout })[0]!;
      const y32 = callOp('linear', [x, w, b], { layout, f32_out: 1 })[0]!;
      t.is(y16.dtype, 'bf16');
      const want = y32.to('bf16');
      const got = y16.toArray() as Float32Array, W = want.toArray() as Float32Array;
      let bad = 0;
      for (let i = 0; i < got.length; i++) if (!Object.is(got[i], W[i])) bad++;
      t.is(bad, 0, `[${xs}] ${inF}->${outF} ${layout} bias=${hasBias}: ${bad} elements differ`);
      for (const z of [x, w, b, y16, y32, want]) z?.dispose();
    });
});

// The AMX path splits K into 512-deep chunks (partial sums kept between them; AVX512-BF16: 2048-deep, [40, 4201, 70]) and C
// over both threads: a product
// deep enough for three chunks and big enough to be threaded, every transpose combination, against float64 sums of
// the bf16-rounded inputs (f32 output, so only the f32 accumulation differs).
// [160, 1100, 100] splits C's columns between the threads, [200, 700, 150] its rows (128-row units, the last one
// partial; B small enough for each thread to pack its own copy); [256, 1000, 800] its rows with one shared packed B
// (over the private-copy limit); [96, 300, 600] packs B in 256 x 256 units over three column blocks and two k
// segments, both partial
for (const isa of bf16Isas)
test.serial(`bf16 GEMM (${isa}) over several K chunks, threaded: matches the float64 reference (all transposes)`, (t) => {
  native.gemmForceIsa('auto', isa);
  t.teardown(() => native.gemmForceIsa('auto', 'auto'));
  const { callOp } = tensorModule;
  // K chunks: AMX 512, AVX512-BF16 2048 (4200: three, the last one odd)
  for (const [m, k, n] of [[160, 1100, 100], [200, 700, 150], [256, 1000, 800], [96, 300, 600], [40, 4201, 70]] as const)
  for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const)
    noGrad(() => {
      const a = randn(ta ? [k, m] : [m, k], { seed: 5 }).to('bf16'), b = randn(tb ? [n, k] : [k, n], { seed: 6 }).to('bf16');
      const av = ta ? a.T : a, bv = tb ? b.T : b;
      const c = callOp('matmul', [av, bv], { f32_out: 1 })[0]!;
      const { c: R, absSum } = ref(av.contiguous().toArray() as Float32Array, bv.contiguous().toArray() as Float32Array, 1, m, k, n, false);
      const C = c.toArray() as Float32Array;
      let worst = 0;
      for (let i = 0; i < R.length; i++) worst = Math.max(worst, Math.abs(C[i]! - R[i]!) / (absSum[i]! + 1e-30));
      t.true(worst <= 2e-6, `${m}x${k}x${n} ta=${ta} tb=${tb}: error ${worst}`);
      for (const x of [a, b, c]) x.dispose();
    });
});

test('amxPeak: a positive rate where the CPU has AMX, 0 elsewhere; bad arguments throw', (t) => {
  const r = native.amxPeak(1, 10_000);
  if (cpuInfo().bgemm === 'amx') t.true(r > 0);
  else t.is(r, 0);
  t.throws(() => native.amxPeak(0, 10), { message: /threads/ });
  t.throws(() => native.amxPeak(1, 0), { message: /iters/ });
});

// f32 -> bf16 as PyTorch rounds it (c10::BFloat16): nearest even, NaN made quiet with its payload's top bits, and
// denormals kept. Where the CPU has AVX512-BF16 the cast and the AMX epilogue / packing use vcvtne2ps2bf16, which
// flushes denormal inputs to zero; those vectors must fall back to the integer rounding.
function bf16Bits(u: number): number {
  if ((u & 0x7fffffff) >>> 0 > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
function bf16BitsOf(t: Tensor): Uint32Array {
  const a = t.toArray() as Float32Array;  // bf16 widened: the bf16 bits are the top half
  return new Uint32Array(a.buffer, a.byteOffset, a.length).map((u) => u >>> 16);
}

test.serial('f32 -> bf16 cast: bit for bit PyTorch rounding (ties, NaN payloads, ±inf, denormals) at every vector position', (t) => {
  let seed = 12345;
  const rnd = () => {  // mulberry32 (an LCG's low bits would repeat with period 8)
    seed = (seed + 0x6d2b79f5) | 0;
    let z = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    z = (z + Math.imul(z ^ (z >>> 7), 61 | z)) ^ z;
    return (z ^ (z >>> 14)) >>> 0;
  };
  for (const n of [1, 31, 32, 33, 1000, 70001]) {
    const U = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const r = rnd(), kind = r % 8;
      const sign = (rnd() & 1) << 31;
      let u = rnd();
      if (kind === 0) u = sign | (rnd() & 0x007fffff);  // denormal
      else if (kind === 1) u = (u & 0xffff0000) | 0x8000;  // exact tie
      else if (kind === 2) u = sign | 0x7f800000 | (rnd() & 0x007fffff) | 1;  // NaN, any payload
      else if (kind === 3) u = sign | 0x7f800000;  // ±inf
      else if (kind === 4) u = sign | 0x7f7fffff;  // largest finite: rounds to inf
      else if (kind === 5 && i % 97 !== 0) u = (sign | 0x3f800000 | (rnd() & 0x7fffff)) >>> 0;  // normal, no denormal in this lane
      U[i] = u >>> 0;
    }
    // one vector of 32 with no denormal at all (the fast path) next to ones with a single denormal lane
    if (n >= 1000) for (let i = 64; i < 96; i++) U[i] = (0x40000000 | (i * 7919)) >>> 0;
    const x = tensor(new Float32Array(U.buffer), [n]);
    const got = bf16BitsOf(noGrad(() => x.to('bf16')));
    let bad = 0, first = -1;
    for (let i = 0; i < n; i++) if (got[i] !== bf16Bits(U[i]!)) { bad++; if (first < 0) first = i; }
    t.is(bad, 0, `n=${n}: ${bad} differ, first at ${first}: ${U[first]?.toString(16)} -> ${got[first]?.toString(16)}, want ${bf16Bits(U[first] ?? 0).toString(16)}`);
    x.dispose();
  }
});

test.serial('bf16 GEMM results and autocast operands in the denormal range keep their bf16 denormals', (t) => {
  const { callOp } = tensorModule;
  noGrad(() => {
    // The tile products flush denormal results to zero (AMX and AVX512-BF16 alike), so the denormals come from the
    // bias the epilogue adds: one-hot rows of x pick W[j, p] = ±(1 + 2^-6)·2^(e_j - 125), and bias[j] = -2^(e_j - 125)
    // cancels all but a denormal (with more bits than bf16 keeps) for the positive products.
    const m = 96, k = 64, n = 64;
    const X = new Float32Array(m * k), W = new Float32Array(n * k), Bi = new Float32Array(n);
    for (let i = 0; i < m; i++) X[i * k + (i % k)] = 1 + 2 ** -7;
    for (let j = 0; j < n; j++) {
      for (let p = 0; p < k; p++) W[j * k + p] = (p % 3 ? 1 : -1) * (1 + 2 ** -6) * 2 ** ((j % 4) - 125);
      Bi[j] = -(2 ** ((j % 4) - 125));
    }
    const x = tensor(X, [m, k]).to('bf16'), w = tensor(W, [n, k]).to('bf16'), bias = tensor(Bi, [n]).to('bf16');
    const y16 = callOp('linear', [x, w, bias], { layout: 'linear' })[0]!, y32 = callOp('linear', [x, w, bias], { layout: 'linear', f32_out: 1 })[0]!;
    const F = y32.toArray() as Float32Array, FU = new Uint32Array(F.buffer, F.byteOffset, F.length);
    const got = bf16BitsOf(y16);
    let bad = 0, denormals = 0;
    for (let i = 0; i < got.length; i++) {
      if (got[i] !== bf16Bits(FU[i]!)) bad++;
      if ((got[i]! & 0x7f80) === 0 && (got[i]! & 0x7f) !== 0) denormals++;
    }
    t.is(bad, 0);
    t.true(denormals > 1000, `bf16 denormal results: ${denormals}`);
    for (const z of [x, w, bias, y16, y32]) z.dispose();
    // an f32 operand with denormals, rounded to bf16 while the kernel packs it (autocast): as the cast rounds it.
    // The product flushes them, so the check is on what was packed: equal to multiplying the cast operand.
    const Xd = new Float32Array(96 * 64);
    for (let i = 0; i < Xd.length; i++) Xd[i] = i % 5 ? (i % 3 ? 1 : -1) * 2 ** (-126 - (i % 10)) * (1 + (i % 7) / 8) : 1 + i / 1000;
    const xd = tensor(Xd, [96, 64]), wd = randn([64, 64], { seed: 5 });
    const got2 = callMixed('linear', [xd, wd, null], { layout: 'linear', mixed: 1 });
    const xd16 = xd.to('bf16'), wd16 = wd.to('bf16');
    const want2 = callMixed('linear', [xd16, wd16, null], { layout: 'linear', f32_out: 1 });
    t.deepEqual(bits(got2), bits(want2));
    const xb = bf16BitsOf(xd16), XU = new Uint32Array(Xd.buffer);
    let badx = 0;
    for (let i = 0; i < Xd.length; i++) if (xb[i] !== bf16Bits(XU[i]!)) badx++;
    t.is(badx, 0, 'the cast keeps denormals');
    for (const z of [xd, wd, xd16, wd16]) z.dispose();
  });
});

test('bf16DotPeak: a positive rate where the CPU has AVX512-BF16, 0 elsewhere; bad arguments throw', (t) => {
  const r = native.bf16DotPeak(1, 100_000);
  if (cpuInfo().avx512bf16) t.true(r > 0 && Number.isFinite(r));
  else t.is(r, 0);
  t.throws(() => native.bf16DotPeak(0, 10), { message: /threads/ });
  t.throws(() => native.bf16DotPeak(1, 0), { message: /iters/ });
});

// Decode-sized products (at most 4 rows) skip packing (f32: gemv_f32) or pack B just before its use (AVX512-BF16), and
// the threads split C's columns; they must still give, row for row, the bits of the packed kernels: generation with and
// without a KV cache runs the same rows through both. f32, bf16 (bf16 result) and autocast (f32 operands, bf16 GEMM).
// (bf16 on the kernels whose small-M path this is: AVX512-BF16 and the f32 fallback; AMX runs decode rows like any other)
const smallMCases = [...f32Isas.map((i) => ['f32', i]), ...bf16Isas.filter((i) => !(i === 'auto' && cpu.bgemm === 'amx')).flatMap((i) => [['bf16', i], ['mixed', i]])] as
  ['f32' | 'bf16' | 'mixed', string][];
for (const [mode, isa] of smallMCases)
test.serial(`small-M products (decode, ${mode}, ${isa}) equal the rows of a larger product bit for bit`, (t) => {
  if (mode === 'f32') native.gemmForceIsa(isa, 'auto');
  else native.gemmForceIsa('auto', isa);
  t.teardown(() => native.gemmForceIsa('auto', 'auto'));
  const { callOp } = tensorModule;
  const run = (layout: 'linear' | 'matmul', x: Tensor, w: Tensor, b: Tensor): Tensor => {
    if (mode === 'mixed') return callOp(layout, layout === 'linear' ? [x, w, b] : [x, w], { mixed: 1 })[0]!;
    return layout === 'linear' ? ops.linear(x, w, b) : ops.matmul(x, w);
  };
  noGrad(() => {
    for (const [K, N] of [[700, 96], [257, 300], [1024, 33], [2100, 130]] as const)
      for (const layout of ['linear', 'matmul'] as const) {
        const cvt = (z: Tensor) => (mode === 'bf16' ? z.to('bf16') : z);
        const x = cvt(randn([20, K], { seed: K })), w = cvt(randn(layout === 'linear' ? [N, K] : [K, N], { seed: N }));
        const b = cvt(randn([N], { seed: 5 }));
        const full = run(layout, x, w, b);
        const F = full.toArray() as Float32Array;
        for (const m of [1, 2, 3, 4]) {
          const xm = ops.slice(x, 0, 0, m);
          const part = run(layout, xm, w, b);
          const P = part.toArray() as Float32Array;
          let bad = 0;
          for (let i = 0; i < P.length; i++) if (!Object.is(P[i], F[i])) bad++;
          t.is(bad, 0, `${layout} K=${K} N=${N} rows=${m}: ${bad} elements differ`);
          for (const z of [xm, part]) z.dispose();
        }
        for (const z of [x, w, b, full]) z.dispose();
      }
  });
});

// Small f32 products with neither operand transposed read A and B in place (no packing) when B is at most 32 Ki floats,
// K at most 256 and the columns whole 32-wide panels: row tiles of equal height, rows of A and B read with their own
// strides. Each output sums in the packed kernel's order, so the columns of a product whose B is too large for that path
// (packed) must come out bit for bit the same, from strided views of A and B too, and batched.
test.serial('small f32 products read in place equal the packed kernels bit for bit (strided views, batched)', (t) => {
  noGrad(() => {
    for (const [m, k] of [[128, 64], [50, 256], [21, 100], [1000, 32]] as const) {  // (above the direct loops of tiny products)
      const aBig = randn([m, k + 9], { seed: m + k }), bBig = randn([k, 4096], { seed: k });
      const a = ops.slice(aBig, 1, 0, k);                   // rows k + 9 apart
      // the reference: B given transposed (a transposed B is always packed, whatever the thread count), same sums
      const bT = ops.contiguous(ops.transpose(bBig, 0, 1));
      const packed = ops.matmul(a, ops.transpose(bT, 0, 1));
      const P = packed.toArray() as Float32Array;
      for (const n of [32, 128, 96]) {
        const b = ops.slice(bBig, 1, 64, 64 + n);            // rows 4096 apart, read in place
        const direct = ops.matmul(a, b);
        const D = direct.toArray() as Float32Array;
        let bad = 0;
        for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) if (!Object.is(D[i * n + j], P[i * 4096 + 64 + j])) bad++;
        t.is(bad, 0, `${m}×${k}·${k}×${n}: ${bad} elements differ from the packed product's`);
        for (const z of [b, direct]) z.dispose();
      }
      for (const z of [aBig, bBig, a, bT, packed]) z.dispose();
    }
    // batched (by batch on the pool), against the float64 reference
    const A = randn([6, 128, 64], { seed: 1 }), B = randn([6, 64, 128], { seed: 2 });
    const C = ops.matmul(A, B).toArray() as Float32Array, AA = A.toArray() as Float32Array, BB = B.toArray() as Float32Array;
    let worst = 0;
    for (let z = 0; z < 6; z++)
      for (let i = 0; i < 128; i++)
        for (let j = 0; j < 128; j++) {
          let s = 0, sa = 0;
          for (let p = 0; p < 64; p++) {
            const v = AA[(z * 128 + i) * 64 + p]! * BB[(z * 64 + p) * 128 + j]!;
            s += v;
            sa += Math.abs(v);
          }
          worst = Math.max(worst, Math.abs(C[(z * 128 + i) * 128 + j]! - s) / sa);
        }
    t.true(worst < 2e-6, `batched 6×128×64·64×128: error ${worst}`);
    A.dispose();
    B.dispose();
  });
});

// f32 linear with a bias: the GEMM writes the bias into each tile of the output just before adding the product
// (sgemm_bias, no separate pass over the output). With K in one chunk (f32: up to 256) that is, bit for bit, the product
// without the bias plus the bias; deeper, within rounding. Large (threaded, packed), small (direct loops) and 1-4-row
// (decode) products, both weight layouts.
test('f32 linear adds its bias once, into the product (every path)', (t) => {
  noGrad(() => {
    for (const [rows, inF, outF] of [[300, 200, 130], [3, 250, 700], [5, 7, 9], [64, 700, 96], [2, 900, 40]] as const)
      for (const layout of ['linear', 'conv1d'] as const) {
        const x = randn([rows, inF], { seed: rows }), w = randn(layout === 'linear' ? [outF, inF] : [inF, outF], { seed: outF });
        const b = randn([outF], { seed: 9 });
        const run = (bb: Tensor | null) => {
          const [h] = native.runOp('linear', [x.handle, w.handle, bb ? bb.handle : null], { layout });
          const y = new Tensor(h!);
          const arr = y.toArray() as Float32Array;
          y.dispose();
          return arr;
        };
        const withB = run(b), without = run(null), B = b.toArray() as Float32Array;
        let bad = 0;
        for (let i = 0; i < withB.length; i++) {
          const want = Math.fround(without[i]! + B[i % outF]!);
          const ok = inF <= 256 ? Object.is(withB[i], want) : Math.abs(withB[i]! - want) <= 1e-5 * (Math.abs(want) + 1);
          if (!ok) bad++;
        }
        t.is(bad, 0, `${layout} [${rows}×${inF}]→${outF}: ${bad} elements`);
        for (const z of [x, w, b]) z.dispose();
      }
  });
});
