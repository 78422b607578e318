// Prefix tuning computes its reparametrised states once per forward pass (as the Python library's prefix pool
// does), so every layer slices the same tensor: one MLP run and one dropout mask per forward, not per layer.
// (With gradient checkpointing: test/autograd/checkpoint.test.ts.)
import test from 'ava';
import { AutoAdapterModel, opProfile, tensor, noGrad } from '../../lib/index.ts';

function tiny(config: string) {
  const m = AutoAdapterModel.fromConfig({ model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 3, num_attention_heads: 2,
    intermediate_size: 32, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { seed: 1 });
  m.addAdapter('p', config);
  m.setActiveAdapters('p');
  return m;
}
const ids = tensor([[1, 2, 3, 4, 5]], undefined, { dtype: 'i64' });
// calls per op signature during one forward pass
function profileForward(m: ReturnType<typeof tiny>): Map<string, number> {
  opProfile(true, { byShape: true });
  try {
    noGrad(() => m.forward({ inputIds: ids }));
    return new Map(opProfile(false).map((r) => [r.op, r.calls]));
  } finally {
    opProfile(false);
  }
}

test.serial('the prefix MLP runs once per forward, not once per layer', (t) => {
  const calls = profileForward(tiny('prefix_tuning[prefix_length=4,bottleneck_size=8]'));
  // control_trans.2: (8 → 3 layers · 2 · 16)
  t.is(calls.get('linear f32[4,8] f32[96,8] f32[96]'), 1);
  t.is(calls.get('attention f32[1,2,5,8] f32[1,2,5,8] f32[1,2,5,8] - - f32[1,2,4,8] f32[1,2,4,8]'), 3);
});

test.serial('prefix dropout draws one mask per forward, shared by every layer', (t) => {
  const m = tiny('prefix_tuning[prefix_length=4,bottleneck_size=8,dropout=0.5]');
  m.train();
  const calls = profileForward(m);
  t.is([...calls].filter(([op]) => op.startsWith('dropout') && op.includes('[4,96]')).reduce((a, [, n]) => a + n, 0), 1);
  t.is((m as unknown as { adapters: { ctx: { prefixStates: unknown } } }).adapters.ctx.prefixStates, null, 'the cache ends with the forward pass');
});
