/**
 * Prompt tuning (Lester et al. 2021, https://arxiv.org/abs/2104.08691) as in the Python Adapters library:
 * `prompt_length` trainable vectors are prepended to the embedding output (after LayerNorm/dropout, no
 * position embeddings for them); the attention mask gets as many leading "attend" entries, and the output
 * has prompt_length extra leading positions. `combine: 'prefix_after_bos'` inserts them after the first token.
 * Parameters: `prompt_tuning.prompt_tunings.<name>.prompt_embedding.weight` (P, H), init U(−0.5, 0.5).
 */
import { Module } from '../../nn/module.ts';
import { Embedding } from '../../nn/layers.ts';
import { Tensor, tensor } from '../../tensor.ts';
import * as ops from '../../ops/index.ts';
import { noGrad } from '../../autograd/tape.ts';
import { ValueError } from '../../errors.ts';
import type { PromptTuningConfig } from '../config.ts';
import type { AdapterContext } from '../context.ts';

export class PromptTuningPool extends Module {
  readonly groups = new Module();
  ctx: AdapterContext | null = null;
  constructor() {
    super();
    this.registerModule('prompt_tunings', this.groups);
  }
  /**
   * @param init for prompt_init 'from_string': the word embeddings (V, H) and the ids of prompt_init_text
   *   (without special tokens), repeated or cut to prompt_length — the prompt starts as those embeddings.
   */
  add(name: string, cfg: PromptTuningConfig, hidden: number, init?: { embeddings: Tensor; ids: number[] }): void {
    const P = cfg.get('prompt_length') as number;
    const g = new Module();
    const emb = g.registerModule('prompt_embedding', new Embedding(P, hidden));
    if (cfg.get('prompt_init') === 'from_string') {
      if (!init || !init.ids.length) throw new ValueError("prompt_init 'from_string' needs the model's tokenizer (pass {tokenizer} to addAdapter)");
      const ids = Array.from({ length: P }, (_, i) => init.ids[i % init.ids.length]!);
      noGrad(() => {
        const rows = ops.embedding(tensor(ids, [P], { dtype: 'i64' }), init.embeddings);
        emb.weight.copy_(rows);
        rows.dispose();
      });
    } else {
      const s = cfg.randomUniformScale;
      noGrad(() => emb.weight.copy_(ops.sub(ops.mul(ops.rand([P, hidden]), 2 * s), s)));
    }
    (g as Module & { cfg?: PromptTuningConfig }).cfg = cfg;
    this.groups.registerModule(name, g);
  }
  remove(name: string): void {
    this.groups.child(name)?.dispose();
    this.groups.registerModule(name, null);
  }
  has(name: string): boolean {
    return !!this.groups.child(name);
  }
  /** Prepends the active prompts to `h` (B, T, H); returns the new states and the extended keep-mask. */
  apply(h: Tensor, keep: Tensor | null): { h: Tensor; keep: Tensor | null; added: number } {
    // only the first adapter of the active setup, when it is a prompt-tuning adapter (the Python PromptTuningLayer)
    const first = (this.ctx?.active ?? [])[0];
    const names = first !== undefined && this.groups.child(first) ? [first] : [];
    if (!names.length) return { h, keep, added: 0 };
    const [B, , H] = h.shape as [number, number, number];
    let out = h, k = keep, added = 0;
    for (const n of names) {
      const g = this.groups.child(n)! as Module & { cfg?: PromptTuningConfig };
      const W = (g.child('prompt_embedding') as Embedding).weight;
      const P = W.shape[0]!;
      const prompt = ops.expand(ops.unsqueeze(W, 0), [B, P, H]);
      const afterBos = g.cfg?.get('combine') === 'prefix_after_bos';
      out = afterBos
        ? ops.concat([ops.slice(out, 1, 0, 1), prompt, ops.slice(out, 1, 1)], 1)
        : ops.concat([prompt, out], 1);
      if (k) {
        const ones = ops.full([B, P], 1, { dtype: 'bool' });
        k = afterBos ? ops.concat([ops.slice(k, 1, 0, 1), ones, ops.slice(k, 1, 1)], 1) : ops.concat([ones, k], 1);
      }
      added += P;
    }
    return { h: out, keep: k, added };
  }
}
