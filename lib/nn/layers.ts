/**
 * Shared building blocks. Every projection of every model is an `nn.Linear`, the single place where
 * adapter methods (LoRA, (IA)³, ...) attach later; each carries a hook-site name such as `attn.q`.
 */
import { ValueError } from '../errors.ts';
import { Module } from './module.ts';
import { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';

export class Linear extends Module {
  /** 'linear': weight (out, in) like nn.Linear; 'conv1d': weight (in, out) like GPT-2's Conv1D. */
  readonly layout: 'linear' | 'conv1d';
  /** Hook site name, e.g. 'attn.q', 'ffn.up' (set by the model). */
  site = '';
  /** LoRA / (IA)³ attached to this projection (lib/adapters/methods/lora.ts), applied after the base GEMM. */
  loraHost: { apply(x: Tensor, y: Tensor): Tensor; fused?(x: Tensor): Tensor | null } | null = null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean; layout?: 'linear' | 'conv1d' } = {}) {
    super();
    this.layout = opts.layout ?? 'linear';
    const shape = this.layout === 'conv1d' ? [inFeatures, outFeatures] : [outFeatures, inFeatures];
    this.registerParameter('weight', ops.zeros(shape));
    this.registerParameter('bias', opts.bias === false ? null : ops.zeros([outFeatures]));
  }
  get weight(): Tensor {
    return this.param('weight')!;
  }
  get bias(): Tensor | null {
    return this.param('bias');
  }
  forward(x: Tensor): Tensor {
    const fused = this.loraHost?.fused?.(x);
    if (fused) return fused;
    const y = ops.linear(x, this.weight, this.bias, { layout: this.layout });
    return this.loraHost ? this.loraHost.apply(x, y) : y;
  }
}

export class Embedding extends Module {
  constructor(readonly num: number, readonly dim: number) {
    super();
    this.registerParameter('weight', ops.zeros([num, dim]));
  }
  get weight(): Tensor {
    return this.param('weight')!;
  }
  /**
   * Extra rows addressed by ids num … num + rows − 1 (PEFT prompt tuning's virtual tokens, see
   * lib/adapters/methods/peft_prompt.ts); null when none.
   */
  virtual: Tensor | null = null;
  forward(ids: Tensor): Tensor {
    const v = this.virtual;
    if (!v) return ops.embedding(ids, this.weight);
    const isV = ops.ge(ids, this.num);
    const base = ops.embedding(ops.where(isV, 0, ids), this.weight);
    const virt = ops.embedding(ops.where(isV, ops.sub(ids, this.num), 0), v);
    return ops.where(ops.unsqueeze(isV, -1), virt, base);
  }
}

export class LayerNorm extends Module {
  constructor(readonly dim: number, readonly eps = 1e-5, opts: { bias?: boolean } = {}) {
    super();
    this.registerParameter('weight', ops.ones([dim]));
    this.registerParameter('bias', opts.bias === false ? null : ops.zeros([dim]));
  }
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.param('weight'), this.param('bias'), this.eps);
  }
}

/** RMSNorm (LLaMA, T5: T5 calls it T5LayerNorm and uses no mean subtraction either). */
export class RMSNorm extends Module {
  constructor(readonly dim: number, readonly eps = 1e-6) {
    super();
    this.registerParameter('weight', ops.ones([dim]));
  }
  forward(x: Tensor): Tensor {
    return ops.rmsNorm(x, this.param('weight'), this.eps);
  }
}

export class Dropout extends Module {
  constructor(readonly p: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return this.training && this.p > 0 ? ops.dropout(x, this.p) : x;
  }
}

/** HF activation names → functions. */
/** An activation function; gemmKind names its kernel for ops.activationForGemm (see feedForward). */
export type Activation = ((x: Tensor) => Tensor) & { gemmKind?: string };
export function activation(name: string): Activation {
  const kind = (k: string, f: (x: Tensor) => Tensor): Activation => Object.assign(f, { gemmKind: k });
  switch (name) {
    case 'gelu':
      return kind('gelu', (x) => ops.gelu(x));
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return kind('gelu_tanh', (x) => ops.gelu(x, { approximate: 'tanh' }));
    case 'quick_gelu':
      return kind('quick_gelu', (x) => ops.quickGelu(x));
    case 'relu':
      return kind('relu', (x) => ops.relu(x));
    case 'silu':
    case 'swish':
      return kind('silu', (x) => ops.silu(x));
    case 'tanh':
      return (x) => ops.tanh(x);
    case 'sigmoid':
      return (x) => ops.sigmoid(x);
    default:
      throw new ValueError(`unsupported activation '${name}'`);
  }
}

/**
 * The Python Adapters library's Activation_Function_Class (heads and adapter non-linearities): the name lowercased,
 * `leakyrelu` as nn.LeakyReLU (slope 0.01), everything else transformers' get_activation (ACT2FN) names.
 */
export function adapterActivation(name: string): (x: Tensor) => Tensor {
  const n = String(name).toLowerCase();
  switch (n) {
    case 'leakyrelu':
    case 'leaky_relu':
      return (x) => ops.sub(ops.relu(x), ops.mul(ops.relu(ops.neg(x)), 0.01));
    case 'linear':
      return (x) => x;
    case 'relu6':
      return (x) => ops.clamp(x, 0, 6);
    case 'relu2':
      return (x) => { const r = ops.relu(x); return ops.mul(r, r); };
    case 'mish':
      // x · tanh(softplus(x)), softplus(x) = relu(x) + log(1 + e^{−|x|})
      return (x) => ops.mul(x, ops.tanh(ops.add(ops.relu(x), ops.log(ops.add(ops.exp(ops.neg(ops.abs(x))), 1)))));
    case 'gelu_python':
      return (x) => ops.gelu(x);
    case 'gelu_accurate':
      return (x) => ops.gelu(x, { approximate: 'tanh' });
    case 'gelu_10':
      return (x) => ops.clamp(ops.gelu(x), -10, 10);
    default:
      return activation(n);
  }
}
