/**
 * AdapterFusion (Pfeiffer et al. 2021, https://arxiv.org/abs/2005.00247) as the Python library's BertFusion:
 * attention over the fused adapters' `up` outputs at each bottleneck site.
 *   q = Query(query), k_i = Key(up_i), v_i = Value(up_i) (value_before_softmax) or raw up_i
 *   p = softmax(q·k_i / T) over adapters (dropout on the scores);  ctx = Σ p_i v_i  (+ residual)
 * T = 1, or 50 decreasing by T/1000 per forward call (floor 1) with `temperature: true`. Value starts as
 * identity + 1e-6 off-diagonal (value_initialized). Parameters: `<site>.adapter_fusion_layer.<a,b>.{query,key,value}`.
 */
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/layers.ts';
import { Tensor, tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { noGrad } from '../../autograd/tape.ts';
import { ValueError } from '../../errors.ts';

export interface FusionConfigDict {
  dropout_prob: number | null;
  key: boolean;
  query: boolean;
  query_before_ln: boolean;
  regularization: boolean;
  residual_before: boolean;
  temperature: boolean;
  value: boolean;
  value_before_softmax: boolean;
  value_initialized: boolean | string;
}

/** 'dynamic' and 'static' presets (adapters' DynamicAdapterFusionConfig / StaticAdapterFusionConfig). */
export function fusionConfig(c: 'dynamic' | 'static' | Partial<FusionConfigDict>): FusionConfigDict {
  const dynamic: FusionConfigDict = { dropout_prob: null, key: true, query: true, query_before_ln: false, regularization: true,
    residual_before: false, temperature: false, value: true, value_before_softmax: true, value_initialized: true };
  if (c === 'dynamic') return dynamic;
  if (c === 'static') return { ...dynamic, value: false, value_initialized: false, regularization: false };
  if (!c || typeof c !== 'object') throw new ValueError(`invalid AdapterFusion config ${JSON.stringify(c)}`);
  for (const k of Object.keys(c)) if (!(k in dynamic)) throw new ValueError(`AdapterFusion config: unknown key '${k}'`);
  return { ...dynamic, ...c };
}

export class FusionLayer extends Module {
  T: number;
  readonly reduction: number;
  /**
   * @param defaultDropout the model's attention dropout, used when dropout_prob is null (the Python library's
   * `dropout_prob or attention_probs_dropout_prob`)
   */
  constructor(readonly cfg: FusionConfigDict, readonly hidden: number, readonly defaultDropout = 0) {
    super();
    if (cfg.query) this.registerModule('query', new Linear(hidden, hidden));
    if (cfg.key) this.registerModule('key', new Linear(hidden, hidden));
    if (cfg.value) this.registerModule('value', new Linear(hidden, hidden, { bias: false }));
    noGrad(() => {
      for (const n of ['query', 'key']) {
        const l = this.child(n) as Linear | null;
        if (l) { l.weight.copy_(ops.randn(l.weight.shape, { std: 0.02 })); l.bias!.copy_(ops.zeros([1])); }
      }
      const v = this.child('value') as Linear | null;
      if (v && cfg.value_initialized)
        v.weight.copy_(tensor(Float32Array.from({ length: hidden * hidden }, (_, i) => (Math.floor(i / hidden) === i % hidden ? 1 : 1e-6)), [hidden, hidden]));
      else if (v) v.weight.copy_(ops.randn(v.weight.shape, { std: 0.02 }));
    });
    this.T = cfg.temperature ? 50 : 1;
    this.reduction = this.T / 1000;
  }
  /**
   * query (B,T,H); ups: per adapter (B,T,H); residual (B,T,H) → (B,T,H). `onProbs` receives the attention
   * probabilities (B,T,N) (the Python library's output_adapter_fusion_attentions).
   */
  forward(query: Tensor, ups: Tensor[], residual: Tensor, onProbs?: (probs: Tensor) => void): Tensor {
    let value = ops.stack(ups, 2);                                    // (B, T, N, H)
    if (this.cfg.residual_before) value = ops.add(value, ops.unsqueeze(residual, 2));
    const q = this.cfg.query ? (this.child('query') as Linear).forward(query) : query;
    const k = this.cfg.key ? (this.child('key') as Linear).forward(value) : value;
    const vl = this.cfg.value && this.cfg.value_before_softmax ? (this.child('value') as Linear).forward(value) : value;
    let scores = ops.squeeze(ops.matmul(ops.unsqueeze(q, 2), ops.transpose(k, -2, -1)), 2);   // (B, T, N)
    const p = this.cfg.dropout_prob || this.defaultDropout;
    if (this.training && p > 0) scores = ops.dropout(scores, p);
    const probs = ops.softmax(this.T === 1 ? scores : ops.div(scores, this.T), -1);
    onProbs?.(probs);
    this.T = Math.max(this.T - this.reduction, 1.0);
    let ctx = ops.squeeze(ops.matmul(ops.unsqueeze(probs, 2), vl), 2);                       // (B, T, H)
    if (this.cfg.value && !this.cfg.value_before_softmax) ctx = (this.child('value') as Linear).forward(ctx);
    if (!this.cfg.residual_before) ctx = ops.add(ctx, residual);
    return ctx;
  }
}
