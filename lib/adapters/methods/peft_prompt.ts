/**
 * PEFT's prompt tuning (peft_type PROMPT_TUNING): P learned embeddings are prepended to the *word* embeddings, so
 * they pass through the position / token-type embeddings (BERT, GPT-2) or rotary positions (LLaMA) like real
 * tokens at positions 0 … P−1, and every real token moves P positions on. Implemented as P virtual token ids
 * (vocab_size … vocab_size + P − 1) that the word Embedding resolves to the prompt rows (Embedding.virtual), with
 * the attention mask, token types and token labels extended to match; outputs keep the P prompt positions, as
 * PEFT's do. Parameters: `peft_prompt_tuning.prompt_tunings.<name>.weight` (P, H).
 */
import { Module } from '../../nn/module.ts';
import { Tensor, tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { ValueError } from '../../errors.ts';
import type { ForwardInput } from '../../models/common.ts';

export class PeftPromptPool extends Module {
  readonly prompts = new Module();
  constructor() {
    super();
    this.registerModule('prompt_tunings', this.prompts);
  }
  add(name: string, n: number, hidden: number): void {
    const m = new Module();
    // PEFT's RANDOM init: nn.Embedding's N(0, 1)
    m.registerParameter('weight', ops.randn([n, hidden]));
    this.prompts.registerModule(name, m);
  }
  remove(name: string): void {
    this.prompts.child(name)?.dispose();
    this.prompts.registerModule(name, null);
  }
  get(name: string): Tensor | null {
    return this.prompts.child(name)?.param('weight') ?? null;
  }
}

/** The input with P virtual ids (from `vocab` on) before each row, and its mask / types / token labels extended. */
export function withVirtualTokens(input: ForwardInput, vocab: number, P: number): ForwardInput {
  if (input.positionIds || input.pastKeyValues || input.useCache)
    throw new ValueError('PEFT prompt tuning: positionIds, pastKeyValues and useCache are not supported (positions follow the virtual tokens)');
  if (input.decoderInputIds) throw new ValueError('PEFT prompt tuning is implemented for encoder-only and decoder-only models');
  const asT = (v: unknown) => (v instanceof Tensor ? v : tensor(v as number[][], undefined, { dtype: 'i64' }));
  const ids = asT(input.inputIds);
  const [B, T] = ids.shape as [number, number];
  const pre = (fill: (j: number) => number, like: Tensor) =>
    ops.concat([ops.cast(tensor(Array.from({ length: B * P }, (_, k) => fill(k % P)), [B, P], { dtype: 'i64' }), like.dtype), like], 1);
  const out: ForwardInput = { ...input, inputIds: pre((j) => vocab + j, ids) };
  out.attentionMask = pre(() => 1, input.attentionMask ? asT(input.attentionMask) : ops.ones([B, T], { dtype: 'i64' }));
  if (input.tokenTypeIds) out.tokenTypeIds = pre(() => 0, asT(input.tokenTypeIds));
  // token-level labels (B, T) get −100 on the prompt positions; per-example labels stay as they are
  if (input.labels) {
    const l = asT(input.labels);
    if (l.ndim === 2 && l.shape[1] === T) out.labels = pre(() => -100, l);
  }
  return out;
}
