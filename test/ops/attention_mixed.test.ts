// Attention under CPU autocast ({mixed: 1}): the fused kernel's tile products round q, k, v, P and dS to bf16 and run
// on the bf16 GEMM kernels (AMX tiles, or AVX512-BF16 without AMX; as torch.autocast runs attention's matmuls in bf16);
// masks and softmax stay f32. Checked on each bf16 kernel the CPU has against the f32 kernel (close, and not identical,
// so the bf16 path ran), with masks, prefix keys, grouped heads, causal rows and an all-masked row; where the bf16
// GEMMs widen to f32 (forced) the flag changes nothing, bit for bit.
import test from 'ava';
import { autocast, cpuInfo, ops, randn, scope, tensor, type Tensor } from '../../lib/index.ts';
import { native } from '../../lib/binding.ts';

const cpu = cpuInfo();
// the bf16 kernels this CPU can run (AMX when it has it, AVX512-BF16 forced below it)
const tileIsas = [...(cpu.bgemm === 'amx' ? ['amx'] : []), ...(cpu.avx512bf16 ? ['avx512bf16'] : [])];

interface Case { B: number; H: number; Hkv: number; T: number; P: number; D: number; causal: boolean; mask: boolean; keep: boolean }
const cases: Case[] = [
  { B: 2, H: 4, Hkv: 2, T: 70, P: 3, D: 64, causal: true, mask: true, keep: true },
  { B: 2, H: 2, Hkv: 2, T: 128, P: 30, D: 64, causal: false, mask: false, keep: false },
  { B: 1, H: 2, Hkv: 1, T: 37, P: 0, D: 20, causal: false, mask: true, keep: true },
];

function run(cs: Case, mixed: boolean): Float32Array[] {
  return scope(() => {
    const { B, H, Hkv, T, P, D } = cs;
    const leaf = (shape: number[], seed: number) => {
      const x = randn(shape, { seed });
      x.requiresGrad = true;
      return x;
    };
    const q = leaf([B, H, T, D], 1), k = leaf([B, Hkv, T, D], 2), v = leaf([B, Hkv, T, D], 3);
    const pk = P ? leaf([B, Hkv, P, D], 4) : null, pv = P ? leaf([B, Hkv, P, D], 5) : null;
    const S = P + T;
    const mask = cs.mask ? ops.mul(randn([B, 1, 1, S], { seed: 6 }), 2) : null;
    // batch 1 (when there is one) keeps no key at all: its rows attend uniformly
    const keep = cs.keep ? tensor(Array.from({ length: B * S }, (_, i) => i < S && i % 5 !== 2), [B, S], { dtype: 'bool' }) : null;
    const g = randn([B, H, T, D], { seed: 7 });
    const y = autocast(() => ops.scaledDotProductAttention(q, k, v, { isCausal: cs.causal, mask, keyPaddingMask: keep, prefixK: pk, prefixV: pv }),
      { enabled: mixed });
    ops.sum(ops.mul(y, g)).backward();
    return [y, q.grad!, k.grad!, v.grad!, ...(pk ? [pk.grad!, pv!.grad!] : [])].map((x: Tensor) => x.toArray() as Float32Array);
  });
}

// max |a − b| over max |b|, per tensor
function relErr(a: Float32Array, b: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

for (const isa of tileIsas)
  for (const cs of cases)
    test.serial(`attention under autocast on ${isa} (${JSON.stringify(cs)}): bf16 tile products, close to f32`, (t) => {
      native.gemmForceIsa('auto', isa);
      t.teardown(() => native.gemmForceIsa('auto', 'auto'));
      const ref = run(cs, false), got = run(cs, true);
      const names = ['out', 'dq', 'dk', 'dv', 'dpk', 'dpv'];
      for (let i = 0; i < ref.length; i++) {
        t.false(got[i]!.some((x) => !Number.isFinite(x)), `${names[i]}: non-finite values`);
        const e = relErr(got[i]!, ref[i]!);
        // bf16 operands (8 significant bits) with f32 accumulation: ~1e-2 of the largest value
        t.true(e < 3e-2, `${names[i]}: relative error ${e}`);
        t.true(e > 1e-6, `${names[i]}: identical to f32 (${e}): the bf16 path did not run`);
      }
    });

if (!tileIsas.length)
  test.skip('attention under autocast on bf16 kernels: this CPU has neither AMX nor AVX512-BF16 (the f32 path is checked below)', () => {});

test.serial('attention under autocast where the bf16 GEMMs widen to f32 equals the f32 kernel bit for bit', (t) => {
  native.gemmForceIsa('auto', 'f32');
  try {
    for (const cs of cases) {
      const ref = run(cs, false), got = run(cs, true);
      for (let i = 0; i < ref.length; i++) t.deepEqual(got[i], ref[i]);
    }
  } finally {
    native.gemmForceIsa('auto', 'auto');
  }
});
