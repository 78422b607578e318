/**
 * Fused adapter ops (native forward kernels in native/kernels/adapters.cpp) with their derivatives composed
 * from native matmuls (on the CPU, loraLinear's rank-r half has its own kernel, lora_linear_bwd). Each is tested
 * against the same computation written with separate ops.
 *   loraLinear:  y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ         (ΔW never formed; the rank-r term accumulates into y)
 *   ia3Linear:   y = (x·Wᵀ + b) ∘ (s·v)
 *   bottleneckFused: y = s·(act(h·Wdᵀ + bd)·Wuᵀ + bu) + residual
 *   loraSgmv:    d[rows of segment i] = s_i·(x·A_iᵀ)·B_iᵀ   (n adapters in one op, forward and backward native)
 *   bottleneckSgmv: y[rows of segment i] = residual + s_i·(act(h·Wd_iᵀ + bd_i)·Wu_iᵀ + bu_i)   (likewise)
 * `mixed` (CPU autocast): loraLinear's and ia3Linear's products with W, and bottleneckFused's two projections, run
 * as bf16 GEMMs, forward and backward, as ops.linear's do under autocast (lib/autocast.ts); everything else stays f32.
 */
import { Tensor, callOp, tensor, withGrad } from '../tensor.ts';
import { isGradEnabled } from '../autograd/tape.ts';
import { ValueError } from '../errors.ts';
import * as ops from '../ops/index.ts';

let fusedEnabled = true;
/** Turns the fused adapter kernels on or off (off = the composed-op path; for tests and benchmarks). */
export function setFusedAdapterKernels(on: boolean): void {
  fusedEnabled = on;
}
export function fusedAdapterKernels(): boolean {
  return fusedEnabled;
}

function flat(t: Tensor): Tensor {
  return ops.reshape(t, [-1, t.shape[t.ndim - 1]!]);
}

/** g·W, or g·W as a bf16 GEMM (f32 result) when mixed. */
function timesW(g: Tensor, W: Tensor, mixed: boolean): Tensor {
  return mixed ? callOp('matmul', [g, W], { mixed: 1 })[0]! : ops.matmul(g, W);
}

export function loraLinear(x: Tensor, W: Tensor, b: Tensor | null, A: Tensor, B: Tensor, scale: number, mixed = false): Tensor {
  const [y, t] = callOp('lora_linear', [x, W, b, A, B], { scale, mixed: mixed ? 1 : 0 });
  const xs = x.shape;
  withGrad([y!], 'loraLinear', [x, W, b, A, B], ([g]) => {
    const g2 = flat(g!), x2 = flat(x), t2 = flat(t!);
    const gW = W.requiresGrad ? timesW(ops.transpose(g2, 0, 1), x2, mixed) : null;
    const gb = b && b.requiresGrad ? ops.sum(g2, 0) : null;
    if (g2.device === 'cpu') {
      // the rank-r half in one native pass over the rows, adding s·(g·B)·A into the base gradient g·W in place
      const gx = x.requiresGrad ? timesW(g2, W, mixed) : null;
      const [dA, dB] = callOp('lora_linear_bwd', [g2, x2, t2, A, B, gx], { scale, need_dA: A.requiresGrad ? 1 : 0, need_dB: B.requiresGrad ? 1 : 0 });
      if (!A.requiresGrad) dA!.dispose();
      if (!B.requiresGrad) dB!.dispose();
      return [gx ? ops.reshape(gx, xs) : null, gW, gb, A.requiresGrad ? dA! : null, B.requiresGrad ? dB! : null];
    }
    const gB = ops.matmul(g2, B);                                           // (N, r)
    let gx: Tensor | null = null;
    if (x.requiresGrad) gx = ops.reshape(ops.add(timesW(g2, W, mixed), ops.mul(ops.matmul(gB, A), scale)), xs);
    const dB = B.requiresGrad ? ops.mul(ops.matmul(ops.transpose(g2, 0, 1), t2), scale) : null;
    const dA = A.requiresGrad ? ops.mul(ops.matmul(ops.transpose(gB, 0, 1), x2), scale) : null;
    return [gx, gW, gb, dA, dB];
  }, [t!], [x, W, A, B]);
  return y!;
}

export function ia3Linear(x: Tensor, W: Tensor, b: Tensor | null, v: Tensor, scale: number, mixed = false): Tensor {
  const xs = x.shape, vs = v.shape;
  if (x.device === 'cpu') {
    // the unscaled output is kept only for the scale's gradient; under CPU autocast as bf16 (half the bytes, as
    // torch.autocast's bf16 activations), written by the kernel's scaling pass; ia3_bwd does the elementwise
    // backward (g ∘ s·v and the scale's column sums) in one pass
    const keepBase = v.requiresGrad && isGradEnabled();
    const [y, base] = callOp('ia3_linear', [x, W, b, v], { scale, mixed: mixed ? 1 : 0, save_bf16: mixed && keepBase ? 1 : 0 });
    if (!keepBase) base!.dispose();
    withGrad([y!], 'ia3Linear', [x, W, b, v], ([g]) => {
      const g2 = flat(g!);
      const [gbase, gv] = callOp('ia3_bwd', [g2, v, keepBase ? flat(base!) : null], { scale });
      const gx = x.requiresGrad ? ops.reshape(timesW(gbase!, W, mixed), xs) : null;
      const gW = W.requiresGrad ? timesW(ops.transpose(gbase!, 0, 1), flat(x), mixed) : null;
      const gb = b && b.requiresGrad ? ops.sum(gbase!, 0) : null;
      if (!v.requiresGrad) gv!.dispose();
      return [gx, gW, gb, v.requiresGrad ? ops.reshape(gv!, vs) : null];
    }, keepBase ? [base!] : [], W.requiresGrad ? [x, W, v] : [W, v]);  // x only for W's gradient
    return y!;
  }
  const [y, base0] = callOp('ia3_linear', [x, W, b, v], { scale, mixed: mixed ? 1 : 0 });
  // the unscaled output is kept only for the scale's gradient; under autocast as bf16 (half the bytes)
  let base = base0!;
  if (mixed && v.requiresGrad && isGradEnabled()) {
    base = callOp('cast', [base0!], { dtype: 'bf16' })[0]!;
    base0!.dispose();
  }
  withGrad([y!], 'ia3Linear', [x, W, b, v], ([g]) => {
    const g2 = flat(g!), base2 = flat(base);
    const sv = ops.mul(ops.reshape(v, [-1]), scale);
    const gbase = ops.mul(g2, sv);
    const gx = x.requiresGrad ? ops.reshape(timesW(gbase, W, mixed), xs) : null;
    const gW = W.requiresGrad ? timesW(ops.transpose(gbase, 0, 1), flat(x), mixed) : null;
    const gb = b && b.requiresGrad ? ops.sum(gbase, 0) : null;
    const gv = v.requiresGrad ? ops.reshape(ops.mul(ops.sum(ops.mul(g2, base2), 0), scale), vs) : null;
    return [gx, gW, gb, gv];
  }, [base], W.requiresGrad ? [x, W, v] : [W, v]);  // x only for W's gradient
  return y!;
}

const ACT_BWD: Record<string, string | null> = { relu: 'relu', swish: 'silu', silu: 'silu', gelu: 'gelu', tanh: 'tanh', gelu_new: 'gelu_tanh', linear: null };

/** True when the fused bottleneck kernel implements this non-linearity. */
export function bottleneckActSupported(act: string): boolean {
  return act.toLowerCase() in ACT_BWD;
}

export function bottleneckFused(h: Tensor, Wd: Tensor, bd: Tensor, Wu: Tensor, bu: Tensor, residual: Tensor, act: string, scale: number, mixed = false): Tensor {
  const a = act.toLowerCase();
  const [y, pre] = callOp('bottleneck', [h, Wd, bd, Wu, bu, residual], mixed ? { act: a, scale, mixed: 1 } : { act: a, scale });
  const hs = h.shape;
  const mm = (x: Tensor, w: Tensor) => timesW(x, w, mixed);
  withGrad([y!], 'bottleneck', [h, Wd, bd, Wu, bu, residual], ([g]) => {
    const g2 = flat(g!), h2 = flat(h), pre2 = flat(pre!);
    const kind = ACT_BWD[a];
    const actOut = kind === null ? pre2 : kind === 'gelu_tanh' ? ops.gelu(pre2, { approximate: 'tanh' }) : kind === 'gelu' ? ops.gelu(pre2) : callOp(kind!, [pre2])[0]!;
    const gu = ops.mul(g2, scale);
    const gWu = Wu.requiresGrad ? mm(ops.transpose(gu, 0, 1), actOut) : null;
    const gbu = bu.requiresGrad ? ops.sum(gu, 0) : null;
    const ga = mm(gu, Wu);
    const gpre = kind === null ? ga : callOp('activation_bwd', [pre2, ga], { kind })[0]!;
    const gWd = Wd.requiresGrad ? mm(ops.transpose(gpre, 0, 1), h2) : null;
    const gbd = bd.requiresGrad ? ops.sum(gpre, 0) : null;
    const gh = h.requiresGrad ? ops.reshape(mm(gpre, Wd), hs) : null;
    return [gh, gWd, gbd, gWu, gbu, residual.requiresGrad ? g! : null];
  }, [pre!], [h, Wd, Wu]);
  return y!;
}

/**
 * Many LoRA adapters in one op (native/kernels/multi_lora.cpp): rows [starts[i], starts[i+1]) of x (flattened to
 * (M, in)) get adapter i's delta s_i·(x·A_iᵀ)·B_iᵀ; other rows get zeros. Returns the delta (…, out). Used for
 * BatchSplit / Parallel / mixed-adapter batches instead of slicing the batch per adapter.
 */
export function loraSgmv(x: Tensor, As: Tensor[], Bs: Tensor[], starts: number[], scales: number[]): Tensor {
  const n = As.length;
  if (Bs.length !== n || scales.length !== n || starts.length !== n + 1)
    throw new ValueError(`loraSgmv: ${n} lora_A, ${Bs.length} lora_B, ${scales.length} scales and ${starts.length} starts (need n+1)`);
  const sc = tensor(scales, [n], { dtype: 'f32' });
  const [d, t] = callOp('lora_sgmv', [x, sc, ...As, ...Bs], { starts });
  withGrad([d!], 'loraSgmv', [x, ...As, ...Bs], ([g]) => {
    const outs = callOp('lora_sgmv_bwd', [g!, x, t!, sc, ...As, ...Bs], { starts });
    const gx = outs[0]!;
    return [x.requiresGrad ? gx : (gx.dispose(), null), ...outs.slice(1).map((o, i) => ((i < n ? As[i]! : Bs[i - n]!).requiresGrad ? o : (o.dispose(), null)))];
  }, [t!, sc], [x, ...As, ...Bs]);
  return d!;
}

export interface BottleneckWeights { Wd: Tensor; bd: Tensor; Wu: Tensor; bu: Tensor }
/**
 * Many sequential bottleneck adapters in one op (native/kernels/multi_bottleneck.cpp): rows of segment i get
 * residual + s_i·(act(h·Wd_iᵀ + bd_i)·Wu_iᵀ + bu_i); rows outside every segment get the residual.
 */
export function bottleneckSgmv(h: Tensor, residual: Tensor, ws: BottleneckWeights[], starts: number[], scales: number[], act: string): Tensor {
  const n = ws.length, a = act.toLowerCase();
  if (scales.length !== n || starts.length !== n + 1)
    throw new ValueError(`bottleneckSgmv: ${n} adapters, ${scales.length} scales and ${starts.length} starts (need n+1)`);
  const sc = tensor(scales, [n], { dtype: 'f32' });
  const params = [...ws.map((w) => w.Wd), ...ws.map((w) => w.bd), ...ws.map((w) => w.Wu), ...ws.map((w) => w.bu)];
  const [y, pre] = callOp('bottleneck_sgmv', [h, residual, sc, ...params], { starts, act: a });
  withGrad([y!], 'bottleneckSgmv', [h, residual, ...params], ([g]) => {
    const outs = callOp('bottleneck_sgmv_bwd', [g!, h, pre!, sc, ...params], { starts, act: a });
    const gh = outs[0]!;
    return [h.requiresGrad ? gh : (gh.dispose(), null), residual.requiresGrad ? g! : null,
      ...outs.slice(1).map((o, i) => (params[i]!.requiresGrad ? o : (o.dispose(), null)))];
  }, [pre!, sc], [h, ...params]);
  return y!;
}
