/**
 * attention_explicit.ts — scaled dot-product attention with probability dropout composed from differentiable ops, for
 * devices whose fused attention kernels have no dropout (CUDA). Not part of the public `ops` namespace.
 */
import { Tensor, tensor as tensorOf } from '../tensor.ts';
import { ShapeError } from '../errors.ts';
import { concat, expand, reshape, toDevice, transpose, unsqueeze } from './shape.ts';
import { add, mul, maskedFill, logicalNot, logicalOr, ne } from './elementwise.ts';
import { dropout, matmul, softmax } from './nn.ts';

/**
 * softmax(q·kᵀ·scale + mask) with dropout on the probabilities, then ·v, from differentiable ops (what attention dropout
 * runs on a GPU, whose fused kernels have none; the CPU kernel drops the same entries itself): the same masking rules as the kernel (prefix keys first and always visible to the causal rule, masked
 * scores at the lowest finite float), grouped-query heads repeated as HF's repeat_kv.
 */
export function attentionExplicit(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, keyPadding: Tensor | null, pk: Tensor | null, pv: Tensor | null,
  causal: boolean, scale: number | undefined, p: number): Tensor {
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  if (pk && pv) { k = concat([pk, k], 2); v = concat([pv, v], 2); }
  const Hkv = k.shape[1]!, Tk = k.shape[2]!, P = pk ? pk.shape[2]! : 0;
  if (Hkv !== H) {
    if (H % Hkv) throw new ShapeError(`scaledDotProductAttention: ${H} query heads are not a multiple of ${Hkv} key/value heads`);
    const rep = (x: Tensor) => reshape(expand(unsqueeze(x, 2), [B, Hkv, H / Hkv, Tk, x.shape[3]!]), [B, H, Tk, x.shape[3]!]);
    k = rep(k); v = rep(v);
  }
  let s = mul(matmul(q, transpose(k, -2, -1)), scale ?? 1 / Math.sqrt(D));
  if (mask) s = add(s, mask);
  // hidden positions: causal (real keys only; key j of Tk − P real ones visible to query i iff j ≤ i + (Tk − P − Tq)) and padding
  let hide: Tensor | null = null;
  if (causal) {
    const real = Tk - P, hideHost = new Uint8Array(Tq * Tk);
    for (let i = 0; i < Tq; i++) for (let j = 0; j < real; j++) if (j > i + (real - Tq)) hideHost[i * Tk + P + j] = 1;
    hide = toDevice(tensorOf(hideHost, [1, 1, Tq, Tk], { dtype: 'bool' }), q.device);
  }
  if (keyPadding) {
    if (keyPadding.shape.length !== 2 || keyPadding.shape[1] !== Tk)
      throw new ShapeError(`scaledDotProductAttention: keyPaddingMask must be (B, ${Tk}), got [${keyPadding.shape}]`);
    const pad = reshape(logicalNot(keyPadding.dtype === 'bool' ? keyPadding : ne(keyPadding, 0)), [keyPadding.shape[0]!, 1, 1, Tk]);
    hide = hide ? logicalOr(hide, pad) : pad;
  }
  if (hide) s = maskedFill(s, hide, -3.4028234663852886e38);
  return matmul(dropout(softmax(s, -1), p), v);
}

