// Invertible adapters (seq_bn_inv / double_seq_bn_inv) and language-model outputs: the Python library undoes the active
// invertible adapter just before the output embeddings — its LM flex heads apply `invertible_adapter(x, rev=True)`
// before their last Linear, and the model's own LM head gets the same through a hook on the output embeddings. So the
// logits here must equal the output layer applied to the reversed hidden states, for every LM path (forward's own LM
// head, a causal LM flex head, seq2seq models, generate), while other heads see the hidden states unchanged.
import test from 'ava';
import { tensor, ops, noGrad, scope, type Tensor } from '../../lib/index.ts';
import { AutoAdapterModel } from '../../lib/models/auto.ts';
import { generate } from '../../lib/models/generate.ts';

const GPT2 = { model_type: 'gpt2', vocab_size: 61, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 32, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0, initializer_range: 0.2 };
const ids = [[5, 17, 33, 8, 21, 40], [9, 9, 12, 60, 3, 27]];
const maxDiff = (a: Tensor, b: Tensor) => {
  const x = a.toArray() as Float32Array, y = b.toArray() as Float32Array;
  return x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
};

function invModel(method: string) {
  const m = AutoAdapterModel.fromConfig(GPT2, { seed: 3 }).eval();
  m.addAdapter('a', method, { setActive: true });
  // non-zero invertible weights (they start near the identity): the reverse must visibly matter
  noGrad(() => { for (const [n, p] of m.namedParameters()) if (n.includes('invertible_adapters.a.')) p.copy_(ops.mul(ops.randn(p.shape, { seed: n.length }), 0.5)); });
  return m;
}

for (const method of ['seq_bn_inv', 'double_seq_bn_inv'])
  test(`${method}: the model's own LM head and a causal LM flex head see the reversed hidden states`, (t) => {
    const m = invModel(method);
    const inv = m.base.invertibleAdapters!();
    scope(() => noGrad(() => {
      const x = tensor(ids, undefined, { dtype: 'i64' });
      const out = m.forward({ inputIds: x });
      const h = out.lastHiddenState;
      // the reverse really is the inverse of the forward block
      t.true(maxDiff(inv.apply(inv.apply(h), true), h) < 1e-4);
      const want = ops.linear(inv.apply(h, true), m.base.inputEmbeddings!());  // GPT-2's tied head
      t.true(maxDiff(out.logits!, want) < 1e-4, `own LM head: ${maxDiff(out.logits!, want)}`);
      t.true(maxDiff(out.logits!, ops.linear(h, m.base.inputEmbeddings!())) > 1e-2, 'the reverse changes nothing');
      // a causal LM flex head: transform layers, reverse, output layer
      m.addCausalLmHead('lm', { layers: 2 });
      m.activeHead = 'lm';
      const flex = m.forward({ inputIds: x }).logits!;
      const head = m.headManager.get('lm') as unknown as { child(n: string): { forward(t: Tensor): Tensor } };
      const z = head.child('2').forward(head.child('1').forward(head.child('0').forward(h)));
      t.true(maxDiff(flex, head.child('3').forward(inv.apply(z, true))) < 1e-4);
      // generate picks from the same logits: its first token is forward's argmax
      const g = generate(m, ids, { maxNewTokens: 3, eosTokenId: null });
      const L = flex.toArray() as Float32Array, [, T, V] = flex.shape as [number, number, number];
      ids.forEach((_, r) => {
        let best = 0;
        for (let v = 1; v < V; v++) if (L[(r * T + T - 1) * V + v]! > L[(r * T + T - 1) * V + best]!) best = v;
        t.is(g[r]![6], best);
      });
      // a classification head is not an LM head: it reads the hidden states as they are
      m.addClassificationHead('cls', { num_labels: 3 });
      m.activeHead = 'cls';
      const c = m.forward({ inputIds: x }).logits!;
      t.is(c.shape[1], 3);
    }));
    m.dispose();
  });

test('with no invertible adapter active (or another adapter first), the LM logits are the plain head', (t) => {
  const m = invModel('seq_bn_inv');
  m.addAdapter('b', 'seq_bn');
  m.setActiveAdapters('b');  // 'a' (with the invertible block) inactive
  scope(() => noGrad(() => {
    const out = m.forward({ inputIds: tensor(ids, undefined, { dtype: 'i64' }) });
    t.true(maxDiff(out.logits!, ops.linear(out.lastHiddenState, m.base.inputEmbeddings!())) < 1e-5);
  }));
  m.dispose();
});
