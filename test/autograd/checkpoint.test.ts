// Gradient checkpointing: the same loss and the same gradient for every trainable parameter as the normal
// backward, with dropout on (the RNG is rewound for the recomputation), on BERT, GPT-2 and LLaMA with adapters.
import test from 'ava';
import { AutoAdapterModel, manualSeed, ops, scope, Parallel } from '../../lib/index.ts';

const cfgs: Record<string, Record<string, unknown>> = {
  bert: { model_type: 'bert', vocab_size: 40, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, hidden_dropout_prob: 0.2, attention_probs_dropout_prob: 0.1 },
  gpt2: { model_type: 'gpt2', vocab_size: 40, n_embd: 16, n_layer: 2, n_head: 2, n_positions: 16, resid_pdrop: 0.2, embd_pdrop: 0.1, attn_pdrop: 0.1 },
  llama: { model_type: 'llama', vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
};
const ids = [[1, 5, 7, 9, 3], [4, 8, 2, 6, 6]];

for (const [arch, cfg] of Object.entries(cfgs))
  // prefix tuning: every layer reads prefix states computed once per forward pass, the recomputation makes its own
  // (not on GPT-2 here: it trains with attention dropout, which prefix tuning refuses)
  for (const method of ['seq_bn[dropout=0.1]', 'lora[r=4, intermediate_lora=True]', ...(arch === 'gpt2' ? [] : ['prefix_tuning[prefix_length=4, bottleneck_size=8]'])])
    test(`${arch} + ${method}: checkpointed backward = normal backward (loss and every gradient)`, (t) => {
      const run = (ckpt: boolean) => {
        const m = AutoAdapterModel.fromConfig(cfg, { seed: 7 });
        m.addAdapter('a', method);
        m.trainAdapter('a');
        m.setGradientCheckpointing(ckpt);
        manualSeed(123);
        const loss = scope(() => {
          const h = m.forward({ inputIds: ids }).lastHiddenState;
          const l = ops.mean(ops.mul(h, h));
          l.backward();
          return l.item();
        });
        const grads = m.namedParameters().filter(([, p]) => p.grad).map(([k, p]) => [k, Array.from(p.grad!.toArray() as Float32Array)] as const);
        m.dispose();
        return { loss, grads };
      };
      const a = run(false), b = run(true);
      t.true(Math.abs(a.loss - b.loss) < 1e-6, `${a.loss} vs ${b.loss}`);
      t.deepEqual(b.grads.map(([k]) => k), a.grads.map(([k]) => k));
      t.true(a.grads.length > 0);
      a.grads.forEach(([k, g], i) => t.true(g.every((v, j) => Math.abs(v - b.grads[i]![1][j]!) <= 1e-5 * Math.max(1, Math.abs(v))), k));
    });

test('gradient checkpointing refuses Parallel setups and unsupported architectures clearly', (t) => {
  const m = AutoAdapterModel.fromConfig(cfgs.bert!, { seed: 1 });
  m.addAdapter('a', 'seq_bn');
  m.addAdapter('b', 'seq_bn');
  m.trainAdapter(new Parallel('a', 'b'));
  m.setGradientCheckpointing(true);
  t.throws(() => m.forward({ inputIds: ids }), { message: /cannot recompute a Parallel block/ });
  const v = AutoAdapterModel.fromConfig({ model_type: 'vit', hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, image_size: 8, patch_size: 4 }, { seed: 1 });
  t.throws(() => v.setGradientCheckpointing(true), { message: /not implemented for this architecture/ });
});
